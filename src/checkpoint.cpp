#include "rtnq/checkpoint.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "rtnq/error.hpp"
#include "rtnq/json_text.hpp"

namespace rtnq {
namespace fs = std::filesystem;

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream stream(path, std::ios::binary);
  if (!stream) throw Error(path + ": cannot open");
  try {
    return nlohmann::json::parse(stream);
  } catch (const nlohmann::json::exception& error) {
    throw Error(path + ": not valid JSON: " + json_error_text(error));
  }
}

Checkpoint::Checkpoint(const std::string& path) : path_(path) {
  std::error_code error;
  const fs::file_status status = fs::status(path, error);
  if (error || !fs::exists(status)) throw Error(path + ": not found");
  if (fs::is_directory(status)) {
    is_directory_ = true;
    open_directory();
    load_config(path);
  } else {
    add_file(path);
    const fs::path parent = fs::path(path).parent_path();
    load_config(parent.empty() ? "." : parent.string());
  }
}

uint64_t Checkpoint::total_file_bytes() const {
  uint64_t total = 0;
  for (const auto& file : files_) total += file->file_bytes();
  return total;
}

void Checkpoint::add_file(const std::string& path) {
  files_.push_back(std::make_unique<SafetensorsFile>(path));
  const SafetensorsFile* file = files_.back().get();
  for (const TensorInfo& info : file->tensors()) tensors_.push_back({file, files_.size() - 1, &info});
}

void Checkpoint::load_config(const std::string& folder) {
  const fs::path config_path = fs::path(folder) / "config.json";
  if (!fs::is_regular_file(config_path)) return;
  nlohmann::json config = read_json_file(config_path.string());
  if (!config.is_object()) throw Error(config_path.string() + ": must be a JSON object");
  config_ = std::move(config);
}

void Checkpoint::open_directory() {
  const fs::path folder(path_);
  if (fs::is_regular_file(folder / "model.safetensors")) {
    add_file((folder / "model.safetensors").string());
    return;
  }
  if (fs::is_regular_file(folder / "model.safetensors.index.json")) {
    open_indexed_shards((folder / "model.safetensors.index.json").string());
    return;
  }
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(folder)) {
    if (entry.is_regular_file() && entry.path().extension() == ".safetensors") {
      names.push_back(entry.path().filename().string());
    }
  }
  if (names.empty()) throw Error(path_ + ": folder has no .safetensors file");
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) add_file((folder / name).string());

  std::map<std::string, std::string> owner;
  for (const CheckpointTensor& tensor : tensors_) {
    auto [it, inserted] = owner.emplace(tensor.info->name, tensor.file->path());
    if (!inserted) {
      throw Error(path_ + ": tensor '" + tensor.info->name + "' is in both " + it->second + " and " +
                  tensor.file->path());
    }
  }
}

void Checkpoint::open_indexed_shards(const std::string& index_path) {
  nlohmann::json index = read_json_file(index_path);
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    throw Error(index_path + ": has no \"weight_map\" object");
  }
  std::vector<std::string> shard_names;
  std::map<std::string, std::string> shard_of_tensor;
  for (const auto& item : index["weight_map"].items()) {
    if (!item.value().is_string()) throw Error(index_path + ": weight_map entry '" + item.key() + "' is not a string");
    const std::string shard = item.value().get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..") {
      throw Error(index_path + ": weight_map names the shard '" + shard + "', which is not a file name in the folder");
    }
    shard_of_tensor[item.key()] = shard;
    if (std::find(shard_names.begin(), shard_names.end(), shard) == shard_names.end()) shard_names.push_back(shard);
  }
  if (shard_names.empty()) throw Error(index_path + ": weight_map lists no tensors");
  std::sort(shard_names.begin(), shard_names.end());
  for (const std::string& shard : shard_names) {
    const fs::path shard_path = fs::path(path_) / shard;
    if (!fs::is_regular_file(shard_path)) {
      throw Error(index_path + ": shard " + shard + " is listed in the index but missing");
    }
  }
  for (const std::string& shard : shard_names) add_file((fs::path(path_) / shard).string());

  std::map<std::string, std::string> found_in;
  for (const CheckpointTensor& tensor : tensors_) {
    const std::string shard = fs::path(tensor.file->path()).filename().string();
    auto [it, inserted] = found_in.emplace(tensor.info->name, shard);
    if (!inserted) {
      throw Error(path_ + ": tensor '" + tensor.info->name + "' is in both shards " + it->second + " and " + shard);
    }
    auto listed = shard_of_tensor.find(tensor.info->name);
    if (listed == shard_of_tensor.end()) {
      throw Error(index_path + ": tensor '" + tensor.info->name + "' of shard " + shard + " is not in the weight_map");
    }
    if (listed->second != shard) {
      throw Error(index_path + ": weight_map puts tensor '" + tensor.info->name + "' in " + listed->second +
                  ", but it is in " + shard);
    }
  }
  for (const auto& [name, shard] : shard_of_tensor) {
    if (!found_in.count(name)) {
      throw Error(index_path + ": weight_map names tensor '" + name + "' but shard " + shard + " does not have it");
    }
  }
  index_ = std::move(index);
}

}  // namespace rtnq
