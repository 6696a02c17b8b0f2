// Non-finite weights through the CLI: a selected layer holding NaN or an
// infinity is rejected with its name, the count and the first (row, column)
// planted by the test, and nothing is written. Tensors that are not
// quantized are copied whatever they contain.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "rtnq/half.hpp"
#include "rtnq/safetensors.hpp"
#include "synthetic_checkpoint.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using rtnq::test::folder_entries;
using rtnq::test::is_one_error_line;
using rtnq::test::run_rtnq;
using rtnq::test::shell_quote;
using rtnq::test::TempDir;
using rtnq::test::TensorBytes;
using rtnq::test::write_checkpoint;

enum class Special { nan, positive_infinity, negative_infinity };

const char* special_name(Special special) {
  switch (special) {
    case Special::nan:
      return "NaN";
    case Special::positive_infinity:
      return "+Inf";
    case Special::negative_infinity:
      return "-Inf";
  }
  return "?";
}

// A float matrix of the given dtype ("F32", "BF16" or "F16") filled with
// small finite values, with a special value at each planted (row, column).
TensorBytes make_matrix(const std::string& name, const std::string& dtype, int64_t rows, int64_t columns,
                        const std::vector<std::pair<int64_t, int64_t>>& planted, Special special) {
  const size_t element_bytes = dtype == "F32" ? 4 : 2;
  std::string bytes(size_t(rows * columns) * element_bytes, '\0');
  for (int64_t row = 0; row < rows; ++row) {
    for (int64_t column = 0; column < columns; ++column) {
      const int64_t index = row * columns + column;
      float value = float((index * 7) % 13 - 6) * 0.125f;  // exact in every dtype
      const bool is_planted =
          std::find(planted.begin(), planted.end(), std::make_pair(row, column)) != planted.end();
      if (is_planted) {
        value = special == Special::nan                 ? std::numeric_limits<float>::quiet_NaN()
                : special == Special::positive_infinity ? std::numeric_limits<float>::infinity()
                                                        : -std::numeric_limits<float>::infinity();
      }
      char* target = bytes.data() + size_t(index) * element_bytes;
      if (dtype == "F32") {
        std::memcpy(target, &value, 4);
      } else {
        const uint16_t bits = dtype == "F16" ? rtnq::float_to_f16(value) : rtnq::float_to_bf16(value);
        std::memcpy(target, &bits, 2);
      }
    }
  }
  return {name, dtype, {rows, columns}, bytes};
}

std::string tensor_bytes(const rtnq::SafetensorsFile& file, const std::string& name) {
  for (const rtnq::TensorInfo& tensor : file.tensors()) {
    if (tensor.name == name) {
      return std::string(reinterpret_cast<const char*>(file.tensor_data(tensor)), tensor.byte_size());
    }
  }
  return "(missing)";
}

}  // namespace

TEST_CASE("non-finite layer rejected with index") {
  // Three planted values. In row-major order the first is (2, 5), which
  // comes after (5, 0) by column but before it by row.
  const std::vector<std::pair<int64_t, int64_t>> planted = {{5, 0}, {2, 5}, {2, 7}};
  for (const std::string dtype : {"F32", "BF16", "F16"}) {
    for (Special special : {Special::nan, Special::positive_infinity, Special::negative_infinity}) {
      CAPTURE(dtype);
      CAPTURE(special_name(special));
      TempDir dir;
      const std::string input = write_checkpoint(
          dir, "in.safetensors",
          {make_matrix("model.layers.0.mlp.up_proj.weight", dtype, 6, 8, {}, special),
           make_matrix("model.layers.1.mlp.up_proj.weight", dtype, 6, 8, planted, special)});
      const std::string output = dir / "out.safetensors";

      const auto result = run_rtnq("quantize " + shell_quote(input) + " -o " + shell_quote(output) + " --quiet");
      CAPTURE(result.err);
      CHECK(result.exit_status == 1);
      CHECK(is_one_error_line(result.err));
      CHECK(result.err.find("model.layers.1.mlp.up_proj: 3 weights are NaN or infinite") != std::string::npos);
      CHECK(result.err.find("the first at row 2, column 5 ") != std::string::npos);
      CHECK(result.err.find("model.layers.0") == std::string::npos);
      // No output, report or temporary file is left.
      CHECK(folder_entries(dir.path()) == std::set<std::string>{"in.safetensors"});
    }
  }
}

TEST_CASE("non-finite found across groups and threads") {
  // 64 rows processed by two threads, groups of 8 columns, with MSE search
  // and symmetric ranges: the scan must still see every value.
  const std::vector<std::pair<int64_t, int64_t>> planted = {{40, 3}, {17, 30}, {17, 31}, {63, 0}};
  TempDir dir;
  const std::string input = write_checkpoint(
      dir, "in.safetensors", {make_matrix("blocks.3.attn.q.weight", "BF16", 64, 32, planted, Special::nan)});
  const std::string output = dir / "out.safetensors";
  for (const std::string options : {"--threads 2 --groupsize 8", "--threads 2 --groupsize 8 --mse --sym"}) {
    CAPTURE(options);
    const auto result =
        run_rtnq("quantize " + shell_quote(input) + " -o " + shell_quote(output) + " --quiet " + options);
    CAPTURE(result.err);
    CHECK(result.exit_status == 1);
    CHECK(is_one_error_line(result.err));
    CHECK(result.err.find("blocks.3.attn.q: 4 weights are NaN or infinite, the first at row 17, column 30 ") !=
          std::string::npos);
    CHECK(folder_entries(dir.path()) == std::set<std::string>{"in.safetensors"});
  }
}

TEST_CASE("non-finite in vector tail found") {
  // 13 columns: a SIMD kernel handles the last values of each row (or group)
  // apart from the full vectors, and a NaN there must be counted too.
  for (const std::string dtype : {"F32", "BF16", "F16"}) {
    for (const std::string groupsize : {"-1", "13"}) {
      CAPTURE(dtype);
      CAPTURE(groupsize);
      TempDir dir;
      const std::string input =
          write_checkpoint(dir, "in.safetensors", {make_matrix("tail.weight", dtype, 3, 13, {{1, 12}}, Special::nan)});
      const auto result = run_rtnq("quantize " + shell_quote(input) + " -o " + shell_quote(dir / "out.safetensors") +
                                   " --quiet --groupsize " + groupsize);
      CAPTURE(result.err);
      CHECK(result.exit_status == 1);
      CHECK(result.err.find("tail: 1 weights are NaN or infinite, the first at row 1, column 12 ") !=
            std::string::npos);
      CHECK(folder_entries(dir.path()) == std::set<std::string>{"in.safetensors"});
    }
  }
}

TEST_CASE("non-finite NaN payloads detected") {
  // A signalling NaN and a NaN with a low payload bit, in F32 and F16, are
  // still NaN after decoding.
  TempDir dir;
  TensorBytes f32 = make_matrix("a.weight", "F32", 2, 4, {}, Special::nan);
  const uint32_t signalling_nan = 0x7f800001u;
  std::memcpy(f32.bytes.data() + 4 * 6, &signalling_nan, 4);  // row 1, column 2
  TensorBytes f16 = make_matrix("b.weight", "F16", 2, 4, {}, Special::nan);
  const uint16_t payload_nan = 0xfc01u;  // negative sign, payload 1
  std::memcpy(f16.bytes.data() + 2 * 3, &payload_nan, 2);  // row 0, column 3

  for (const auto& [tensor, layer, expected] :
       {std::make_tuple(f32, std::string("a"), std::string("a: 1 weights are NaN or infinite, the first at row 1, column 2 ")),
        std::make_tuple(f16, std::string("b"), std::string("b: 1 weights are NaN or infinite, the first at row 0, column 3 "))}) {
    CAPTURE(layer);
    const std::string input = write_checkpoint(dir, layer + ".safetensors", {tensor});
    const auto result = run_rtnq("quantize " + shell_quote(input) + " -o " + shell_quote(dir / "out.safetensors") +
                                 " --quiet");
    CAPTURE(result.err);
    CHECK(result.exit_status == 1);
    CHECK(result.err.find(expected) != std::string::npos);
    CHECK_FALSE(fs::exists(dir / "out.safetensors"));
  }
}

TEST_CASE("non-finite Conv1D index is stored layout") {
  // A GPT-2 Conv1D weight is stored [in, out] and quantized per output
  // column; the message gives the position in the stored tensor.
  TempDir dir;
  const std::string input = write_checkpoint(
      dir, "in.safetensors",
      {make_matrix("h.0.mlp.c_fc.weight", "F32", 8, 4, {{5, 2}}, Special::positive_infinity)});
  const auto result = run_rtnq("quantize " + shell_quote(input) + " -o " + shell_quote(dir / "out.safetensors") +
                               " --quiet --conv1d-keyword c_fc");
  CAPTURE(result.err);
  CHECK(result.exit_status == 1);
  CHECK(result.err.find("h.0.mlp.c_fc: 1 weights are NaN or infinite, the first at row 5, column 2 ") !=
        std::string::npos);
  CHECK(folder_entries(dir.path()) == std::set<std::string>{"in.safetensors"});
}

TEST_CASE("non-finite tensors not selected are copied") {
  // lm_head is excluded by default and a norm weight has rank 1, so neither is
  // quantized and both are copied byte for byte, NaN and infinities included.
  TempDir dir;
  const TensorBytes head = make_matrix("lm_head.weight", "BF16", 4, 8, {{0, 0}, {3, 7}}, Special::nan);
  TensorBytes norm{"model.norm.weight", "F32", {8}, std::string(32, '\0')};
  for (int i = 0; i < 8; ++i) {
    const float value = i % 2 == 0 ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN();
    std::memcpy(norm.bytes.data() + 4 * i, &value, 4);
  }
  const TensorBytes layer = make_matrix("model.layers.0.mlp.up_proj.weight", "BF16", 4, 8, {}, Special::nan);
  const std::string input = write_checkpoint(dir, "in.safetensors", {head, norm, layer});
  const std::string output = dir / "out.safetensors";

  const auto result = run_rtnq("quantize " + shell_quote(input) + " -o " + shell_quote(output) + " --quiet");
  CAPTURE(result.err);
  REQUIRE(result.exit_status == 0);
  const rtnq::SafetensorsFile written(output);
  CHECK(tensor_bytes(written, "lm_head.weight") == head.bytes);
  CHECK(tensor_bytes(written, "model.norm.weight") == norm.bytes);
  CHECK(tensor_bytes(written, "model.layers.0.mlp.up_proj.quantized_weight").size() == 32);

  // Naming lm_head explicitly selects it, and then its NaNs are an error.
  const auto selected = run_rtnq("quantize " + shell_quote(input) + " -o " + shell_quote(dir / "head.safetensors") +
                                 " --quiet --exclude-name ''");
  CAPTURE(selected.err);
  CHECK(selected.exit_status == 1);
  CHECK(selected.err.find("lm_head: 2 weights are NaN or infinite, the first at row 0, column 0 ") !=
        std::string::npos);
  CHECK_FALSE(fs::exists(dir / "head.safetensors"));
}
