// rtnq dequantize: the rebuilt weights equal the scalar yardstick's
// (code - zero) * scale, as a file and as a folder, and checkpoints that
// rtnq did not write are rejected.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoint_helpers.hpp"
#include "rtnq/safetensors.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;
using rtnq::DType;
using rtnq::SafetensorsFile;
using rtnq::TensorInfo;
using rtnq::test::folder_entries;
using rtnq::test::is_one_error_line;
using rtnq::test::read_file;
using rtnq::test::run_rtnq;
using rtnq::test::shell_quote;
using rtnq::test::TempDir;

namespace {

const fs::path kSample = fs::path(RTNQ_SOURCE_DIR) / "testdata/sample/model.safetensors";
using rtnq::test::is_quantized_weight;
using rtnq::test::kShards;
using rtnq::test::kSharded;

// A quantize and dequantize round trip and the dtypes it stores.
struct RoundTrip {
  std::string quantize_arguments;
  rtnq::RtnParams params;
  DType scale_dtype;
  std::string output_dtype;  // --dtype of rtnq dequantize
  DType rebuilt_dtype;
};

rtnq::RtnParams params_of(int wbits, int64_t groupsize, bool sym) {
  rtnq::RtnParams params;
  params.wbits = wbits;
  params.groupsize = groupsize;
  params.sym = sym;
  return params;
}

const std::vector<RoundTrip> kRoundTrips = {
    {"", params_of(4, -1, false), DType::F16, "f32", DType::F32},
    {"--groupsize 32", params_of(4, 32, false), DType::F16, "f32", DType::F32},
    {"--wbits 3 --groupsize 16 --sym --scale-dtype bf16", params_of(3, 16, true), DType::BF16, "f32", DType::F32},
    {"--wbits 8 --groupsize 32 --scale-dtype f32", params_of(8, 32, false), DType::F32, "f32", DType::F32},
    {"--groupsize 32", params_of(4, 32, false), DType::F16, "bf16", DType::BF16},
    {"--groupsize 32", params_of(4, 32, false), DType::F16, "f16", DType::F16},
    {"--wbits 2", params_of(2, -1, false), DType::F16, "bf16", DType::BF16},
    {"--wbits 20 --groupsize 32 --scale-dtype f32", params_of(20, 32, false), DType::F32, "f32", DType::F32},
    {"--wbits 13 --scale-dtype f32", params_of(13, -1, false), DType::F32, "f16", DType::F16},
};

// The stored dtype of zero points: the smallest float that represents every level exactly.
DType zero_dtype_for(int wbits) {
  if (wbits <= 11) return DType::F16;
  if (wbits <= 24) return DType::F32;
  return DType::F64;
}

// Checks a dequantized file against its input file. The tensor names must
// be the same. Each quantized weight must be rebuilt in round.rebuilt_dtype
// with the yardstick's values rounded to that dtype, and every other tensor
// copied byte for byte. Returns how many weights were rebuilt.
size_t check_rebuilt_file(const SafetensorsFile& input, const SafetensorsFile& rebuilt, const RoundTrip& round) {
  const auto rebuilt_tensors = rtnq::test::tensors_by_name(rebuilt);
  std::set<std::string> input_names;
  for (const TensorInfo& tensor : input.tensors()) input_names.insert(tensor.name);
  std::set<std::string> rebuilt_names;
  for (const auto& item : rebuilt_tensors) rebuilt_names.insert(item.first);
  CHECK(rebuilt_names == input_names);

  size_t rebuilt_count = 0;
  for (const TensorInfo& tensor : input.tensors()) {
    CAPTURE(tensor.name);
    REQUIRE(rebuilt_tensors.count(tensor.name) == 1);
    const TensorInfo& output = *rebuilt_tensors.at(tensor.name);
    CHECK(output.shape == tensor.shape);
    if (!is_quantized_weight(tensor)) {
      CHECK(output.dtype == tensor.dtype);
      CHECK(rtnq::test::tensor_bytes(rebuilt, output) == rtnq::test::tensor_bytes(input, tensor));
      continue;
    }

    rebuilt_count += 1;
    CHECK(output.dtype == round.rebuilt_dtype);
    const int64_t out = tensor.shape[0];
    const int64_t in = tensor.shape[1];
    const rtnq::test::ExpectedLayer expected = rtnq::test::expected_layer(
        rtnq::test::float_values(input, tensor), out, in, round.params, round.scale_dtype,
        zero_dtype_for(round.params.wbits));
    const std::vector<double> actual = rtnq::test::float_values(rebuilt, output);
    REQUIRE(actual.size() == expected.dequantized.size());
    size_t mismatches = 0;
    for (size_t i = 0; i < actual.size(); ++i) {
      if (actual[i] != rtnq::test::rounded_to(expected.dequantized[i], round.rebuilt_dtype)) mismatches += 1;
    }
    CHECK(mismatches == 0);
  }
  return rebuilt_count;
}

}  // namespace

TEST_CASE("dequantize file matches yardstick") {
  const SafetensorsFile input(kSample.string());
  for (const RoundTrip& round : kRoundTrips) {
    CAPTURE(round.quantize_arguments);
    CAPTURE(round.output_dtype);
    TempDir dir;
    const std::string quantized = dir / "q.safetensors";
    const std::string rebuilt_path = dir / "dq.safetensors";
    const auto quantize = run_rtnq("quantize " + shell_quote(kSample.string()) + " -o " + shell_quote(quantized) +
                                   " " + round.quantize_arguments + " --quiet");
    CAPTURE(quantize.err);
    REQUIRE(quantize.exit_status == 0);

    const auto dequantize = run_rtnq("dequantize " + shell_quote(quantized) + " -o " + shell_quote(rebuilt_path) +
                                     " --dtype " + round.output_dtype + " --quiet");
    CAPTURE(dequantize.err);
    REQUIRE(dequantize.exit_status == 0);
    CHECK(dequantize.err.empty());

    const SafetensorsFile rebuilt(rebuilt_path);
    CHECK(check_rebuilt_file(input, rebuilt, round) == 14);

    // The metadata keeps the input's entries but no quantization_config.
    CHECK(rtnq::test::metadata_value(rebuilt, "format") == "pt");
    for (const auto& entry : rebuilt.header().metadata) CHECK(entry.first != "quantization_config");
  }
}

TEST_CASE("dequantize folder matches yardstick") {
  // The sharded fixture mixes F16 and F32 weights, and layer 1's down_proj
  // has its weight in shard 2 and its bias in shard 3.
  const std::vector<RoundTrip> rounds = {kRoundTrips[1], kRoundTrips[5]};
  for (const RoundTrip& round : rounds) {
    CAPTURE(round.output_dtype);
    TempDir dir;
    const fs::path quantized = dir.path() / "q";
    const fs::path rebuilt = dir.path() / "dq";
    const auto quantize = run_rtnq("quantize " + shell_quote(kSharded.string()) + " -o " +
                                   shell_quote(quantized.string()) + " " + round.quantize_arguments + " --quiet");
    CAPTURE(quantize.err);
    REQUIRE(quantize.exit_status == 0);
    const auto dequantize = run_rtnq("dequantize " + shell_quote(quantized.string()) + " -o " +
                                     shell_quote(rebuilt.string()) + " --dtype " + round.output_dtype + " --quiet");
    CAPTURE(dequantize.err);
    REQUIRE(dequantize.exit_status == 0);

    // The input's files come back; the quantization report is left out.
    CHECK(folder_entries(rebuilt) == folder_entries(kSharded));
    size_t rebuilt_count = 0;
    for (const std::string& shard : kShards) {
      CAPTURE(shard);
      const SafetensorsFile input((kSharded / shard).string());
      const SafetensorsFile output((rebuilt / shard).string());
      rebuilt_count += check_rebuilt_file(input, output, round);
    }
    CHECK(rebuilt_count == 14);

    // The index lists the input's tensor names in the input's shards, and
    // total_size is the sum of the rebuilt tensors' bytes.
    const json input_index = json::parse(read_file(kSharded / "model.safetensors.index.json"));
    const json index = json::parse(read_file(rebuilt / "model.safetensors.index.json"));
    CHECK(index["weight_map"] == input_index["weight_map"]);
    uint64_t tensor_bytes = 0;
    for (const std::string& shard : kShards) {
      const SafetensorsFile output((rebuilt / shard).string());
      for (const TensorInfo& tensor : output.tensors()) tensor_bytes += tensor.byte_size();
    }
    CHECK(index["metadata"]["total_size"] == tensor_bytes);

    // config.json is the input's again, without quantization_config and
    // with the rebuilt weights' torch_dtype.
    ordered_json expected_config = ordered_json::parse(read_file(kSharded / "config.json"));
    expected_config["torch_dtype"] = round.output_dtype == "f32" ? "float32" : "float16";
    CHECK(ordered_json::parse(read_file(rebuilt / "config.json")) == expected_config);
    CHECK(read_file(rebuilt / "tokenizer.json") == read_file(kSharded / "tokenizer.json"));
    CHECK(read_file(rebuilt / "README.md") == read_file(kSharded / "README.md"));
  }
}

TEST_CASE("dequantize rejects plain checkpoint") {
  TempDir dir;
  const std::string output = dir / "dq.safetensors";
  const auto result = run_rtnq("dequantize " + shell_quote(kSample.string()) + " -o " + shell_quote(output));
  CAPTURE(result.err);
  CHECK(result.exit_status == 1);
  CHECK(is_one_error_line(result.err));
  CHECK(result.err.find(kSample.string()) != std::string::npos);
  CHECK(result.err.find("quantization_config") != std::string::npos);
  CHECK(folder_entries(dir.path()).empty());
}

TEST_CASE("dequantize rejects plain folder") {
  TempDir dir;
  const auto result =
      run_rtnq("dequantize " + shell_quote(kSharded.string()) + " -o " + shell_quote(dir / "dq"));
  CAPTURE(result.err);
  CHECK(result.exit_status == 1);
  CHECK(is_one_error_line(result.err));
  CHECK(result.err.find(kShards[0]) != std::string::npos);
  CHECK(folder_entries(dir.path()).empty());
}

TEST_CASE("dequantize rejects other producers") {
  // Files whose quantization_config another tool wrote, or rtnq wrote for
  // another format, have codes rtnq cannot read.
  const std::vector<std::pair<std::string, std::string>> configs = {
      {"another method",
       R"({"quant_method": "gptq", "format": "native", "producer": "rtnq 0.1.0", "wbits": 4, "groupsize": -1})"},
      {"another producer",
       R"({"quant_method": "rtn", "format": "native", "producer": "onecomp 1.0", "wbits": 4, "groupsize": -1})"},
      {"another format",
       R"({"quant_method": "rtn", "format": "gguf", "producer": "rtnq 0.1.0", "wbits": 4, "groupsize": -1})"},
      {"not JSON", "rtn 4 bit"},
  };
  for (const auto& [reason, config] : configs) {
    CAPTURE(reason);
    TempDir dir;
    const fs::path input = dir.path() / "input.safetensors";
    rtnq::test::write_float_checkpoint(input, {{"layer.weight", DType::F32, {2, 2}, {0.5, -0.5, 0.25, 1.0}}},
                                       {{"quantization_config", config}});
    const std::string output = dir / "dq.safetensors";
    const auto result = run_rtnq("dequantize " + shell_quote(input.string()) + " -o " + shell_quote(output));
    CAPTURE(result.err);
    CHECK(result.exit_status == 1);
    CHECK(is_one_error_line(result.err));
    CHECK(result.err.find(input.string()) != std::string::npos);
    CHECK(result.err.find("[json.exception") == std::string::npos);
    CHECK(folder_entries(dir.path()) == std::set<std::string>{"input.safetensors"});
  }
}

TEST_CASE("dequantize keeps existing output") {
  TempDir dir;
  const std::string quantized = dir / "q.safetensors";
  const std::string output = dir / "dq.safetensors";
  REQUIRE(run_rtnq("quantize " + shell_quote(kSample.string()) + " -o " + shell_quote(quantized) + " --quiet")
              .exit_status == 0);
  rtnq::test::write_file(output, "keep me");
  const auto rejected = run_rtnq("dequantize " + shell_quote(quantized) + " -o " + shell_quote(output));
  CAPTURE(rejected.err);
  CHECK(rejected.exit_status == 1);
  CHECK(rejected.err.find("--force") != std::string::npos);
  CHECK(read_file(output) == "keep me");

  const auto forced = run_rtnq("dequantize " + shell_quote(quantized) + " -o " + shell_quote(output) + " --force --quiet");
  CAPTURE(forced.err);
  CHECK(forced.exit_status == 0);
  const SafetensorsFile rebuilt(output);
  CHECK(rebuilt.tensors().size() == SafetensorsFile(kSample.string()).tensors().size());
}

TEST_CASE("dequantize rejects inconsistent layer") {
  // Hand-made files with a valid quantization_config whose layer tensors
  // are missing or do not fit each other.
  const std::string config = R"({"quant_method": "rtn", "format": "native", "wbits": 4, "groupsize": -1,)"
                             R"( "sym": false, "mse": false, "norm": 2.4, "grid": 100, "scale_dtype": "f16",)"
                             R"( "producer": "rtnq 0.1.0", "conv1d_layers": []})";
  struct BadLayer {
    std::string reason;
    json tensors;  // name -> [dtype, shape]
    std::string message;
  };
  const std::vector<BadLayer> cases = {
      {"no scale", {{"l.quantized_weight", {"U8", {2, 4}}}, {"l.zero", {"F16", {2, 1}}}}, "no l.scale"},
      {"scale of wrong shape",
       {{"l.quantized_weight", {"U8", {2, 4}}}, {"l.scale", {"F16", {2, 2}}}, {"l.zero", {"F16", {2, 1}}}},
       "[2, 2]"},
      {"codes of wrong dtype",
       {{"l.quantized_weight", {"U16", {2, 4}}}, {"l.scale", {"F16", {2, 1}}}, {"l.zero", {"F16", {2, 1}}}},
       "U16"},
  };
  for (const BadLayer& bad : cases) {
    CAPTURE(bad.reason);
    TempDir dir;
    ordered_json header = ordered_json::object();
    header["__metadata__"] = {{"quantization_config", config}};
    uint64_t offset = 0;
    for (const auto& item : bad.tensors.items()) {
      const std::string dtype = item.value()[0];
      const std::vector<int64_t> shape = item.value()[1];
      const uint64_t bytes = uint64_t(shape[0] * shape[1]) * (dtype == "U8" ? 1 : 2);
      header[item.key()] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {offset, offset + bytes}}};
      offset += bytes;
    }
    const std::string input =
        rtnq::test::write_safetensors(dir, "input.safetensors", header.dump(), std::string(offset, '\0'));
    const auto result = run_rtnq("dequantize " + shell_quote(input) + " -o " + shell_quote(dir / "dq.safetensors"));
    CAPTURE(result.err);
    CHECK(result.exit_status == 1);
    CHECK(is_one_error_line(result.err));
    CHECK(result.err.find(input) != std::string::npos);
    CHECK(result.err.find(bad.message) != std::string::npos);
    CHECK(folder_entries(dir.path()) == std::set<std::string>{"input.safetensors"});
  }
}

TEST_CASE("dequantize sets config torch_dtype") {
  // The fixture's config.json has "torch_dtype": "float16" as its last key.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "bfloat16"}, {" --dtype bf16", "bfloat16"}, {" --dtype f32", "float32"}, {" --dtype f16", "float16"}};
  TempDir dir;
  const fs::path quantized = dir.path() / "q";
  const auto quantize =
      run_rtnq("quantize " + shell_quote(kSharded.string()) + " -o " + shell_quote(quantized.string()) + " --quiet");
  CAPTURE(quantize.err);
  REQUIRE(quantize.exit_status == 0);

  const ordered_json input_config = ordered_json::parse(read_file(kSharded / "config.json"));
  std::vector<std::string> input_keys;
  for (const auto& item : input_config.items()) input_keys.push_back(item.key());

  for (size_t k = 0; k < cases.size(); ++k) {
    const auto& [option, torch_dtype] = cases[k];
    CAPTURE(option);
    const fs::path rebuilt = dir.path() / ("dq" + std::to_string(k));
    const auto dequantize = run_rtnq("dequantize " + shell_quote(quantized.string()) + " -o " +
                                     shell_quote(rebuilt.string()) + option + " --quiet");
    CAPTURE(dequantize.err);
    REQUIRE(dequantize.exit_status == 0);

    const ordered_json config = ordered_json::parse(read_file(rebuilt / "config.json"));
    CHECK(config["torch_dtype"] == torch_dtype);
    std::vector<std::string> keys;
    for (const auto& item : config.items()) keys.push_back(item.key());
    CHECK(keys == input_keys);
  }
}

TEST_CASE("dequantize rejects code above wbits") {
  // quantization_config sets wbits 2, so codes may be 0 to 3, but the codes
  // of "l" reach 15. Scale 1 and zero 0 would rebuild them without complaint.
  const std::string config = R"({"quant_method": "rtn", "format": "native", "wbits": 2, "groupsize": -1,)"
                             R"( "sym": false, "mse": false, "norm": 2.4, "grid": 100, "scale_dtype": "f16",)"
                             R"( "producer": "rtnq 0.1.0", "conv1d_layers": []})";
  // Codes [3, 4] U8: row 1, column 2 is the first above 3 in row-major order.
  const std::string codes = std::string{0, 1, 2, 3} + std::string{3, 2, 15, 9} + std::string{1, 1, 1, 12};
  const std::string one_f16 = std::string{0x00, 0x3c};  // 1.0 as F16, little-endian
  const std::string zero_f16 = std::string(2, '\0');
  ordered_json header = ordered_json::object();
  header["__metadata__"] = {{"quantization_config", config}};
  header["l.quantized_weight"] = {{"dtype", "U8"}, {"shape", {3, 4}}, {"data_offsets", {0, 12}}};
  header["l.scale"] = {{"dtype", "F16"}, {"shape", {3, 1}}, {"data_offsets", {12, 18}}};
  header["l.zero"] = {{"dtype", "F16"}, {"shape", {3, 1}}, {"data_offsets", {18, 24}}};

  TempDir dir;
  const std::string input = rtnq::test::write_safetensors(
      dir, "input.safetensors", header.dump(), codes + one_f16 + one_f16 + one_f16 + zero_f16 + zero_f16 + zero_f16);
  const auto result = run_rtnq("dequantize " + shell_quote(input) + " -o " + shell_quote(dir / "dq.safetensors"));
  CAPTURE(result.err);
  CHECK(result.exit_status == 1);
  CHECK(is_one_error_line(result.err));
  CHECK(result.err.find(input) != std::string::npos);
  CHECK(result.err.find("layer l has code 15 at [1, 2] of l.quantized_weight") != std::string::npos);
  CHECK(result.err.find("above 3, the maximum for wbits 2") != std::string::npos);
  CHECK(folder_entries(dir.path()) == std::set<std::string>{"input.safetensors"});
}
