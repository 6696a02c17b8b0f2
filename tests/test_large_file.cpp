// A checkpoint over 4 GiB whose small tensors sit past the 4 GiB offset, so
// any 32-bit offset or size on the way shows up as wrong data. The file is
// sparse: the 4 GiB tensor in front is a hole that is never written, and
// rtnq copies it into the output as a hole, so the test writes a few
// kilobytes, not gigabytes.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "rtnq/safetensors.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using rtnq::test::run_rtnq;
using rtnq::test::shell_quote;
using rtnq::test::TempDir;

constexpr uint64_t kEmbeddingRows = 1048577;  // 1048577 * 1024 * 4 bytes = 4 GiB + 4 KiB
constexpr uint64_t kEmbeddingBytes = kEmbeddingRows * 1024 * 4;

// The worked example row of the RTN definition and an all-zero row. At 4 bits,
// one group per row, asymmetric, the first gives codes 0 3 4 6 8 14 2 10 with
// scale 0.0666666701 and zero 4, the second codes 7 with scale 0.13333334 and
// zero 7.
const std::vector<float> kWeight = {-0.30f, -0.05f, 0.00f, 0.12f, 0.25f, 0.70f, -0.10f, 0.40f,
                                    0.0f,   0.0f,   0.0f,  0.0f,  0.0f,  0.0f,  0.0f,  0.0f};
const std::vector<uint8_t> kExpectedCodes = {0, 3, 4, 6, 8, 14, 2, 10, 7, 7, 7, 7, 7, 7, 7, 7};
// F16 bits: 1/15 = 1.0666 * 2^-4 and 2/15 = 1.0666 * 2^-3 have mantissa
// round(0.0666 * 1024) = 68, so 0x2C44 and 0x3044. 4.0 is 0x4400 and 7.0 is 0x4700.
const std::vector<uint16_t> kExpectedScaleBits = {0x2C44, 0x3044};
const std::vector<uint16_t> kExpectedZeroBits = {0x4400, 0x4700};
const std::vector<float> kNorm = {1, 2, 3, 4, 5, 6, 7, 8};

std::string float_bytes(const std::vector<float>& values) {
  std::string bytes(values.size() * 4, '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

struct SparseCheckpoint {
  std::string path;
  uint64_t data_offset = 0;  // 8 + header length
  uint64_t file_bytes = 0;
};

// Writes the header and the two small tensors; the embedding before them is
// left as a hole by ftruncate.
SparseCheckpoint write_sparse_checkpoint(const TempDir& dir) {
  const std::string weight = float_bytes(kWeight);
  const std::string norm = float_bytes(kNorm);
  const uint64_t weight_begin = kEmbeddingBytes;
  const uint64_t norm_begin = weight_begin + weight.size();
  const uint64_t data_bytes = norm_begin + norm.size();
  nlohmann::ordered_json header = {
      {"model.embed_tokens.weight",
       {{"dtype", "F32"}, {"shape", {kEmbeddingRows, 1024}}, {"data_offsets", {0, kEmbeddingBytes}}}},
      {"model.layers.0.mlp.up_proj.weight",
       {{"dtype", "F32"}, {"shape", {2, 8}}, {"data_offsets", {weight_begin, norm_begin}}}},
      {"model.norm.weight", {{"dtype", "F32"}, {"shape", {8}}, {"data_offsets", {norm_begin, data_bytes}}}},
  };
  const std::string text = header.dump();
  const std::string prefix = rtnq::test::length_prefix(text.size()) + text;

  SparseCheckpoint checkpoint;
  checkpoint.path = dir / "large.safetensors";
  checkpoint.data_offset = prefix.size();
  checkpoint.file_bytes = prefix.size() + data_bytes;
  const int fd = ::open(checkpoint.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, off_t(checkpoint.file_bytes)) == 0);
  REQUIRE(::pwrite(fd, prefix.data(), prefix.size(), 0) == ssize_t(prefix.size()));
  REQUIRE(::pwrite(fd, weight.data(), weight.size(), off_t(checkpoint.data_offset + weight_begin)) ==
          ssize_t(weight.size()));
  REQUIRE(::pwrite(fd, norm.data(), norm.size(), off_t(checkpoint.data_offset + norm_begin)) ==
          ssize_t(norm.size()));
  REQUIRE(::close(fd) == 0);
  return checkpoint;
}

// The parts of the checkpoint that hold data (header and the tensors past the
// hole), its length and its modification time: enough to see a change to the
// input without reading 4 GiB of zeros.
struct InputState {
  std::string head;
  std::string tail;
  uint64_t length = 0;
  int64_t mtime_nanoseconds = 0;

  bool operator==(const InputState& other) const {
    return head == other.head && tail == other.tail && length == other.length &&
           mtime_nanoseconds == other.mtime_nanoseconds;
  }
};

InputState read_input_state(const SparseCheckpoint& checkpoint) {
  struct stat status {};
  REQUIRE(::stat(checkpoint.path.c_str(), &status) == 0);
  InputState state;
  state.length = uint64_t(status.st_size);
  state.mtime_nanoseconds = int64_t(status.st_mtim.tv_sec) * 1000000000 + status.st_mtim.tv_nsec;
  state.head.resize(checkpoint.data_offset);
  state.tail.resize(64 + 32);
  const int fd = ::open(checkpoint.path.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  CHECK(::pread(fd, state.head.data(), state.head.size(), 0) == ssize_t(state.head.size()));
  CHECK(::pread(fd, state.tail.data(), state.tail.size(), off_t(checkpoint.file_bytes - state.tail.size())) ==
        ssize_t(state.tail.size()));
  ::close(fd);
  return state;
}

// Bytes the file takes on disk, as opposed to its length.
uint64_t allocated_bytes(const std::string& path) {
  struct stat status {};
  REQUIRE(::stat(path.c_str(), &status) == 0);
  return uint64_t(status.st_blocks) * 512;
}

// True if the file system reports the hole at offset (SEEK_DATA skips past it).
bool reports_hole_at(const std::string& path, uint64_t offset) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  const off_t data = ::lseek(fd, off_t(offset), SEEK_DATA);
  ::close(fd);
  return data > off_t(offset);
}

std::map<std::string, const rtnq::TensorInfo*> tensors_by_name(const rtnq::SafetensorsFile& file) {
  std::map<std::string, const rtnq::TensorInfo*> tensors;
  for (const rtnq::TensorInfo& tensor : file.tensors()) tensors[tensor.name] = &tensor;
  return tensors;
}

std::string tensor_bytes(const rtnq::SafetensorsFile& file, const rtnq::TensorInfo& tensor) {
  return std::string(reinterpret_cast<const char*>(file.tensor_data(tensor)), tensor.byte_size());
}

}  // namespace

TEST_CASE("reader finds tensors past 4 GiB") {
  TempDir dir;
  const SparseCheckpoint checkpoint = write_sparse_checkpoint(dir);
  CHECK(allocated_bytes(checkpoint.path) < (64u << 20));

  const rtnq::SafetensorsFile file(checkpoint.path);
  CHECK(file.file_bytes() == checkpoint.file_bytes);
  CHECK(file.file_bytes() > (uint64_t(1) << 32));
  CHECK(file.data_offset() == checkpoint.data_offset);
  REQUIRE(file.tensors().size() == 3);
  const rtnq::TensorInfo& embedding = file.tensors()[0];
  const rtnq::TensorInfo& weight = file.tensors()[1];
  const rtnq::TensorInfo& norm = file.tensors()[2];
  CHECK(embedding.name == "model.embed_tokens.weight");
  CHECK(embedding.byte_size() == kEmbeddingBytes);
  CHECK(embedding.element_count() == kEmbeddingRows * 1024);
  CHECK(weight.name == "model.layers.0.mlp.up_proj.weight");
  CHECK(weight.begin == kEmbeddingBytes);
  CHECK(weight.end == kEmbeddingBytes + 64);
  CHECK(norm.begin == kEmbeddingBytes + 64);
  CHECK(tensor_bytes(file, weight) == float_bytes(kWeight));
  CHECK(tensor_bytes(file, norm) == float_bytes(kNorm));
  // The last byte of the hole reads as zero through the mapping.
  CHECK(std::to_integer<int>(file.tensor_data(embedding)[kEmbeddingBytes - 1]) == 0);
}

TEST_CASE("quantize copies sparse 4 GiB input") {
  TempDir dir;
  const SparseCheckpoint checkpoint = write_sparse_checkpoint(dir);
  if (!reports_hole_at(checkpoint.path, checkpoint.data_offset + 4096)) {
    // Without SEEK_DATA the 4 GiB tensor would be copied byte by byte.
    MESSAGE("skipped: the file system of " << dir.path() << " does not report holes (SEEK_DATA)");
    return;
  }
  const InputState before = read_input_state(checkpoint);
  const std::string output = dir / "out.safetensors";

  const auto result = run_rtnq("quantize " + shell_quote(checkpoint.path) + " -o " + shell_quote(output) + " --quiet");
  CAPTURE(result.err);
  REQUIRE(result.exit_status == 0);
  CHECK(allocated_bytes(output) < (64u << 20));

  const rtnq::SafetensorsFile file(output);
  CHECK(file.file_bytes() > (uint64_t(1) << 32));
  const auto tensors = tensors_by_name(file);
  REQUIRE(tensors.size() == 5);
  REQUIRE(tensors.count("model.embed_tokens.weight") == 1);
  REQUIRE(tensors.count("model.norm.weight") == 1);
  REQUIRE(tensors.count("model.layers.0.mlp.up_proj.quantized_weight") == 1);
  REQUIRE(tensors.count("model.layers.0.mlp.up_proj.scale") == 1);
  REQUIRE(tensors.count("model.layers.0.mlp.up_proj.zero") == 1);

  const rtnq::TensorInfo& embedding = *tensors.at("model.embed_tokens.weight");
  CHECK(embedding.byte_size() == kEmbeddingBytes);
  CHECK(std::to_integer<int>(file.tensor_data(embedding)[kEmbeddingBytes / 2]) == 0);
  CHECK(std::to_integer<int>(file.tensor_data(embedding)[kEmbeddingBytes - 1]) == 0);
  CHECK(tensor_bytes(file, *tensors.at("model.norm.weight")) == float_bytes(kNorm));

  // The codes come after the 4 GiB tensor in the output as well.
  const rtnq::TensorInfo& codes = *tensors.at("model.layers.0.mlp.up_proj.quantized_weight");
  CHECK(codes.begin > (uint64_t(1) << 32));
  CHECK(codes.dtype == rtnq::DType::U8);
  CHECK(codes.shape == std::vector<int64_t>{2, 8});
  CHECK(tensor_bytes(file, codes) == std::string(kExpectedCodes.begin(), kExpectedCodes.end()));

  const std::string scales = tensor_bytes(file, *tensors.at("model.layers.0.mlp.up_proj.scale"));
  const std::string zeros = tensor_bytes(file, *tensors.at("model.layers.0.mlp.up_proj.zero"));
  REQUIRE(scales.size() == 4);
  REQUIRE(zeros.size() == 4);
  for (size_t row = 0; row < 2; ++row) {
    CAPTURE(row);
    uint16_t scale_bits = 0;
    uint16_t zero_bits = 0;
    std::memcpy(&scale_bits, scales.data() + 2 * row, 2);
    std::memcpy(&zero_bits, zeros.data() + 2 * row, 2);
    CHECK(scale_bits == kExpectedScaleBits[row]);
    CHECK(zero_bits == kExpectedZeroBits[row]);
  }
  CHECK(read_input_state(checkpoint) == before);
}
