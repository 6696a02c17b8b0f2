#include "rtnq/output_folder.hpp"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>

#include "rtnq/error.hpp"
#include "rtnq/json_text.hpp"
#include "rtnq/output_file.hpp"

namespace rtnq {
namespace fs = std::filesystem;

OutputTarget::OutputTarget(const std::string& output, bool directory, bool overwrite)
    : output_(output), directory_(directory), overwrite_(overwrite) {
  remove_stale_partials(output);
  if (!directory) return;
  partial_folder_ = partial_path_for(output);
  std::error_code error;
  if (!fs::create_directory(partial_folder_, error)) {
    throw Error(output + ": cannot create the output folder: " + error.message());
  }
}

OutputTarget::~OutputTarget() {
  if (!partial_folder_.empty() && !committed_) {
    std::error_code ignored;
    fs::remove_all(partial_folder_, ignored);
  }
}

std::string OutputTarget::path_of(const std::string& file_name) const {
  return directory_ ? (fs::path(partial_folder_) / file_name).string() : output_;
}

void OutputTarget::commit() {
  if (!directory_) return;
  std::error_code error;
  std::string replaced;
  if (fs::exists(fs::symlink_status(output_))) {
    if (!overwrite_) throw Error(output_ + ": output already exists; pass --force to replace it");
    replaced = output_ + ".rtnq-replaced-" + std::to_string(::getpid());
    fs::rename(output_, replaced, error);
    if (error) throw Error(output_ + ": cannot move the old output aside: " + error.message());
  }
  fs::rename(partial_folder_, output_, error);
  if (error) {
    if (!replaced.empty()) fs::rename(replaced, output_, error);
    throw Error(output_ + ": cannot rename the finished output into place: " + error.message());
  }
  committed_ = true;
  if (!replaced.empty()) fs::remove_all(replaced, error);
}

std::string without_trailing_separators(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

void copy_other_files(const std::string& input_folder, const std::string& output_folder,
                      const std::vector<std::string>& excluded) {
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(input_folder, error)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file()) continue;
    if (std::find(excluded.begin(), excluded.end(), name) != excluded.end()) continue;
    if (name.find(kPartialMarker) != std::string::npos) continue;
    fs::copy_file(entry.path(), fs::path(output_folder) / name, error);
    if (error) throw Error(entry.path().string() + ": cannot copy into the output: " + error.message());
  }
  if (error) throw Error(input_folder + ": cannot list the folder: " + error.message());
}

std::string shard_index_text(const nlohmann::json* input_index, const std::vector<ShardContents>& shards) {
  nlohmann::ordered_json metadata = nlohmann::ordered_json::object();
  if (input_index && input_index->contains("metadata") && (*input_index)["metadata"].is_object()) {
    metadata = nlohmann::ordered_json::parse((*input_index)["metadata"].dump());
  }

  uint64_t total_bytes = 0;
  std::map<std::string, std::string> shard_of_tensor;
  for (const ShardContents& shard : shards) {
    for (const OutputTensor& tensor : shard.layout->tensors) {
      shard_of_tensor[tensor.name] = shard.file_name;
      total_bytes += tensor.byte_size;
    }
  }
  metadata["total_size"] = total_bytes;

  nlohmann::ordered_json index = nlohmann::ordered_json::object();
  index["metadata"] = metadata;
  index["weight_map"] = nlohmann::ordered_json::object();
  for (const auto& [tensor, shard] : shard_of_tensor) index["weight_map"][tensor] = shard;
  return index.dump(2) + "\n";
}

std::string rewritten_config_text(const std::string& config_path,
                                  const std::optional<std::string>& quantization_config) {
  std::ifstream stream(config_path, std::ios::binary);
  if (!stream) throw Error(config_path + ": cannot open");
  nlohmann::ordered_json config;
  try {
    config = nlohmann::ordered_json::parse(stream);
  } catch (const nlohmann::json::exception& error) {
    throw Error(config_path + ": not valid JSON: " + json_error_text(error));
  }
  if (!config.is_object()) throw Error(config_path + ": must be a JSON object");

  if (quantization_config) {
    config["quantization_config"] = nlohmann::ordered_json::parse(*quantization_config);
  } else {
    config.erase("quantization_config");
  }
  return config.dump(2) + "\n";
}

}  // namespace rtnq
