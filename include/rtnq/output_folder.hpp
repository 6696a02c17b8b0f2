// Folder outputs: a model folder built under a temporary name and renamed
// into place when complete, and the files beside its safetensors shards.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "rtnq/safetensors.hpp"

namespace rtnq {

// Names of the folder files that rtnq rewrites instead of copying.
constexpr const char* kShardIndexName = "model.safetensors.index.json";
constexpr const char* kConfigName = "config.json";
constexpr const char* kFolderReportName = "quantization_report.json";

// The destination of the output files while they are written. A folder output is built
// in a partial folder "DIR/.NAME.rtnq-partial-PID" beside the final one. A
// file output is written to its final path, which AtomicOutputFile guards.
class OutputTarget {
 public:
  // Removes stale partial outputs of earlier runs and, for a folder, creates
  // the partial folder. Throws Error naming output if it cannot be created.
  OutputTarget(const std::string& output, bool directory, bool overwrite);
  // Removes the partial folder unless commit() succeeded.
  ~OutputTarget();
  OutputTarget(const OutputTarget&) = delete;
  OutputTarget& operator=(const OutputTarget&) = delete;

  // The path a file of the output is written to, before commit.
  std::string path_of(const std::string& file_name) const;
  // True when an output file may replace an existing one: always inside a
  // partial folder, and for a file output only with overwrite.
  bool overwrite_files() const { return directory_ || overwrite_; }
  const std::string& partial_folder() const { return partial_folder_; }

  // Renames the finished folder into place (files are committed by the
  // caller). An existing output is replaced only with overwrite; it is moved
  // aside first and put back if the rename fails.
  void commit();

 private:
  std::string output_;
  bool directory_;
  bool overwrite_;
  std::string partial_folder_;
  bool committed_ = false;
};

// Returns path without trailing '/' characters ("out/" -> "out"), so that a
// folder output named with one gets its partial folder beside it, not inside.
// The root "/" stays as it is.
std::string without_trailing_separators(std::string path);

// One safetensors file of a folder output.
struct ShardContents {
  std::string file_name;
  const SafetensorsLayout* layout = nullptr;
};

// Copies every regular file at the top level of input_folder into
// output_folder byte for byte, except the names in excluded and leftover
// partial outputs. Symbolic links are followed, as a Hugging Face cache
// snapshot consists of links. Subfolders are not copied.
void copy_other_files(const std::string& input_folder, const std::string& output_folder,
                      const std::vector<std::string>& excluded);

// The text of model.safetensors.index.json for shards: "metadata" keeps the
// entries of input_index (may be null) with total_size set to the sum of the
// tensor byte sizes, and "weight_map" names every tensor once, sorted by name.
std::string shard_index_text(const nlohmann::json* input_index, const std::vector<ShardContents>& shards);

// The text of the folder's config.json with "quantization_config" set to the
// JSON object quantization_config, or removed when it is nullopt. Other keys
// keep their order. Throws Error naming the file if it is not a JSON object.
std::string rewritten_config_text(const std::string& config_path,
                                  const std::optional<std::string>& quantization_config);

}  // namespace rtnq
