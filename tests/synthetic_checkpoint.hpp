// Helpers shared by the CLI robustness tests: hand-made checkpoints, folder
// listings, the one-line error check and snapshots of a file's bytes and
// modification time.
#pragma once

#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "test_support.hpp"

namespace rtnq::test {

// A tensor to write: name, dtype name, shape and raw little-endian bytes.
struct TensorBytes {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// Writes a safetensors file holding the tensors in the given order and
// returns its path.
inline std::string write_checkpoint(const TempDir& dir, const std::string& file_name,
                                    const std::vector<TensorBytes>& tensors) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  std::string data;
  for (const TensorBytes& tensor : tensors) {
    header[tensor.name] = {{"dtype", tensor.dtype},
                           {"shape", tensor.shape},
                           {"data_offsets", {data.size(), data.size() + tensor.bytes.size()}}};
    data += tensor.bytes;
  }
  return write_safetensors(dir, file_name, header.dump(), data);
}

// A file's bytes and modification time, to show a run left it untouched.
struct FileSnapshot {
  std::string bytes;
  int64_t mtime_seconds = 0;
  int64_t mtime_nanoseconds = 0;

  bool operator==(const FileSnapshot& other) const {
    return bytes == other.bytes && mtime_seconds == other.mtime_seconds &&
           mtime_nanoseconds == other.mtime_nanoseconds;
  }
};

inline FileSnapshot snapshot_file(const std::string& path) {
  struct stat status {};
  if (::stat(path.c_str(), &status) != 0) throw std::runtime_error("stat failed: " + path);
  return {read_file(path), int64_t(status.st_mtim.tv_sec), int64_t(status.st_mtim.tv_nsec)};
}

}  // namespace rtnq::test
