// A checkpoint: one safetensors file, or a Hugging Face model folder.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "rtnq/safetensors.hpp"

namespace rtnq {

struct CheckpointTensor {
  const SafetensorsFile* file = nullptr;
  size_t file_index = 0;
  const TensorInfo* info = nullptr;
};

class Checkpoint {
 public:
  // Opens a .safetensors file, or a folder holding model.safetensors, shards
  // named by model.safetensors.index.json, or else every *.safetensors file.
  // Validates every file and the index; throws Error naming the file.
  explicit Checkpoint(const std::string& path);

  const std::string& path() const { return path_; }
  bool is_directory() const { return is_directory_; }
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  // Every tensor, file by file, each file in data order.
  const std::vector<CheckpointTensor>& tensors() const { return tensors_; }
  // config.json of the folder, or of the folder that contains the input file.
  const std::optional<nlohmann::json>& config() const { return config_; }
  // The shard index of a folder, if it has one.
  const std::optional<nlohmann::json>& index() const { return index_; }
  uint64_t total_file_bytes() const;

 private:
  void open_directory();
  void open_indexed_shards(const std::string& index_path);
  void add_file(const std::string& path);
  void load_config(const std::string& folder);

  std::string path_;
  bool is_directory_ = false;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<CheckpointTensor> tensors_;
  std::optional<nlohmann::json> config_;
  std::optional<nlohmann::json> index_;
};

// Reads a whole JSON file; throws Error naming the path.
nlohmann::json read_json_file(const std::string& path);

}  // namespace rtnq
