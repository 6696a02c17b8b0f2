// The safetensors format: a little-endian u64 header length N, N bytes of
// JSON describing each tensor (dtype, shape, data_offsets) plus an optional
// "__metadata__" string map, then the data section.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "rtnq/dtype.hpp"
#include "rtnq/mapped_file.hpp"

namespace rtnq {

// Largest header accepted, as in the reference Rust implementation.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // data_offsets, relative to the start of the data section
  uint64_t end = 0;

  uint64_t byte_size() const { return end - begin; }
  uint64_t element_count() const;
};

using Metadata = std::vector<std::pair<std::string, std::string>>;

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // sorted by data offset
  Metadata metadata;                // in header order
  bool has_metadata = false;
};

// Parses and validates the JSON header against a data section of data_bytes.
// Throws Error with a message that states what is wrong but not which file,
// so callers prefix the path.
SafetensorsHeader parse_safetensors_header(std::string_view json, uint64_t data_bytes);

// Formats a shape as "[64, 256]", as messages, inspect and the report show it.
std::string format_shape(const std::vector<int64_t>& shape);

// Validates a whole safetensors file held in file_bytes bytes: the 8-byte
// header length, the header, and that the tensors cover the data section
// exactly. Sets data_offset to 8 + header length. Throws Error like
// parse_safetensors_header; a Git LFS pointer file gets its own message.
SafetensorsHeader parse_safetensors_bytes(const std::byte* bytes, uint64_t file_bytes, uint64_t& data_offset);

// A safetensors file mapped read-only and validated.
class SafetensorsFile {
 public:
  // Opens and validates path; throws Error "PATH: what is wrong".
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return mapping_.path(); }
  const SafetensorsHeader& header() const { return header_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  uint64_t file_bytes() const { return mapping_.size(); }
  uint64_t data_offset() const { return data_offset_; }  // 8 + header length

  // First byte of the tensor's data in the mapping.
  const std::byte* tensor_data(const TensorInfo& tensor) const {
    return mapping_.data() + data_offset_ + tensor.begin;
  }
  const MappedFile& mapping() const { return mapping_; }

  // Drops the tensor's pages from resident memory (see MappedFile::release).
  void release(const TensorInfo& tensor) const {
    mapping_.release(data_offset_ + tensor.begin, tensor.byte_size());
  }

 private:
  MappedFile mapping_;
  SafetensorsHeader header_;
  uint64_t data_offset_ = 0;
};

// One tensor of a file to be written.
struct OutputTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t byte_size = 0;
};

// The layout of a file to be written, known before any data.
struct SafetensorsLayout {
  std::string header;              // the 8-byte length and the JSON, padded with spaces
  std::vector<OutputTensor> tensors;  // in data order
  std::vector<uint64_t> file_offsets; // absolute offset of each tensor's data
  uint64_t file_bytes = 0;
};

// Plans a file: tensors are ordered by element size, largest first (input
// order within a size), so each one starts at a multiple of its element size,
// and the data section starts at a multiple of 8. The format allows no gaps
// between tensors, so this is as aligned as a valid file can be.
SafetensorsLayout plan_safetensors_layout(std::vector<OutputTensor> tensors, const Metadata& metadata,
                                          bool write_metadata);

}  // namespace rtnq
