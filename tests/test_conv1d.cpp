// GPT-2 Conv1D weights, stored [in, out]: quantized per output column,
// checked against the scalar yardstick applied to the transposed matrix.
#include <doctest/doctest.h>

#include <filesystem>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoint_helpers.hpp"
#include "rtnq/safetensors.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using rtnq::DType;
using rtnq::SafetensorsFile;
using rtnq::TensorInfo;
using rtnq::test::read_file;
using rtnq::test::run_rtnq;
using rtnq::test::shell_quote;
using rtnq::test::TempDir;

namespace {

const fs::path kCappGpt2 = fs::path(RTNQ_MODELS_DIR) / "capp-gpt2";

rtnq::RtnParams params_of(int64_t groupsize) {
  rtnq::RtnParams params;
  params.groupsize = groupsize;
  return params;
}

// A GPT-2 shaped file with two Conv1D weights, [in, out], and tensors that are copied.
void write_gpt2_file(const fs::path& path) {
  rtnq::test::write_float_checkpoint(
      path, {
                {"transformer.wte.weight", DType::F32, {20, 16}, rtnq::test::test_values(320, 1)},
                {"transformer.h.0.ln_1.weight", DType::F32, {16}, rtnq::test::test_values(16, 2)},
                {"transformer.h.0.attn.c_attn.weight", DType::F32, {16, 48}, rtnq::test::test_values(768, 3)},
                {"transformer.h.0.attn.c_attn.bias", DType::F32, {48}, rtnq::test::test_values(48, 4)},
                {"transformer.h.0.mlp.c_proj.weight", DType::F32, {32, 16}, rtnq::test::test_values(512, 5)},
            });
}

// Checks one quantized Conv1D layer of output against the yardstick run on
// the transpose of its input weight [in, out]: codes in the [in, out]
// layout, scale and zero [out, n_groups] rounded to F16.
void check_conv1d_layer(const SafetensorsFile& input, const SafetensorsFile& output, const std::string& layer,
                        const rtnq::RtnParams& params) {
  CAPTURE(layer);
  const auto input_tensors = rtnq::test::tensors_by_name(input);
  const auto output_tensors = rtnq::test::tensors_by_name(output);
  const TensorInfo& weight = *input_tensors.at(layer + ".weight");
  const int64_t in = weight.shape[0];
  const int64_t out = weight.shape[1];
  const int64_t n_groups = params.groupsize == -1 ? 1 : in / params.groupsize;

  CHECK(output_tensors.count(layer + ".weight") == 0);
  REQUIRE(output_tensors.count(layer + ".quantized_weight") == 1);
  const TensorInfo& codes = *output_tensors.at(layer + ".quantized_weight");
  const TensorInfo& scales = *output_tensors.at(layer + ".scale");
  const TensorInfo& zeros = *output_tensors.at(layer + ".zero");
  CHECK(codes.shape == weight.shape);
  CHECK(scales.shape == std::vector<int64_t>{out, n_groups});
  CHECK(zeros.shape == std::vector<int64_t>{out, n_groups});

  const std::vector<double> linear = rtnq::test::transposed(rtnq::test::float_values(input, weight), in, out);
  const rtnq::test::ExpectedLayer expected =
      rtnq::test::expected_layer(linear, out, in, params, DType::F16, DType::F16);
  size_t code_mismatches = 0;
  for (int64_t i = 0; i < in; ++i) {
    for (int64_t o = 0; o < out; ++o) {
      const uint64_t stored = rtnq::test::code_value(output.tensor_data(codes), codes.dtype, uint64_t(i * out + o));
      if (stored != expected.computed.codes[size_t(o * in + i)]) code_mismatches += 1;
    }
  }
  CHECK(code_mismatches == 0);
  CHECK(rtnq::test::float_values(output, scales) == expected.stored_scales);
  CHECK(rtnq::test::float_values(output, zeros) == expected.stored_zeros);
}

std::vector<int64_t> output_shape(const SafetensorsFile& file, const std::string& name) {
  return rtnq::test::tensors_by_name(file).at(name)->shape;
}

}  // namespace

TEST_CASE("Conv1D default from gpt2 config") {
  // config.json beside the input file sets model_type gpt2, so c_attn and
  // c_proj are read as [in, out].
  TempDir dir;
  fs::create_directory(dir.path() / "gpt");
  const fs::path input_path = dir.path() / "gpt/model.safetensors";
  write_gpt2_file(input_path);
  rtnq::test::write_file(dir.path() / "gpt/config.json", R"({"model_type": "gpt2"})");
  const std::string output_path = dir / "q.safetensors";
  const auto result = run_rtnq("quantize " + shell_quote(input_path.string()) + " -o " + shell_quote(output_path) +
                               " --groupsize 8 --quiet");
  CAPTURE(result.err);
  REQUIRE(result.exit_status == 0);

  const SafetensorsFile input(input_path.string());
  const SafetensorsFile output(output_path);
  check_conv1d_layer(input, output, "transformer.h.0.attn.c_attn", params_of(8));
  check_conv1d_layer(input, output, "transformer.h.0.mlp.c_proj", params_of(8));
  const json config = json::parse(rtnq::test::metadata_value(output, "quantization_config"));
  CHECK(config["conv1d_layers"] == json{"transformer.h.0.attn.c_attn", "transformer.h.0.mlp.c_proj"});

  const json report = json::parse(read_file(output_path + ".report.json"));
  REQUIRE(report["layers"].size() == 2);
  for (const json& layer : report["layers"]) CHECK(layer["conv1d"] == true);

  // The dequantized weights come back [in, out], equal to the transpose of
  // the yardstick's values.
  const std::string rebuilt_path = dir / "dq.safetensors";
  const auto dequantize = run_rtnq("dequantize " + shell_quote(output_path) + " -o " + shell_quote(rebuilt_path) +
                                   " --dtype f32 --quiet");
  CAPTURE(dequantize.err);
  REQUIRE(dequantize.exit_status == 0);
  const SafetensorsFile rebuilt(rebuilt_path);
  const auto rebuilt_tensors = rtnq::test::tensors_by_name(rebuilt);
  for (const auto& [layer, in, out] : {std::tuple<std::string, int64_t, int64_t>{"transformer.h.0.attn.c_attn", 16, 48},
                                       {"transformer.h.0.mlp.c_proj", 32, 16}}) {
    CAPTURE(layer);
    const TensorInfo& weight = *rebuilt_tensors.at(layer + ".weight");
    CHECK(weight.shape == std::vector<int64_t>{in, out});
    const std::vector<double> linear = rtnq::test::transposed(
        rtnq::test::float_values(input, *rtnq::test::tensors_by_name(input).at(layer + ".weight")), in, out);
    const auto expected = rtnq::test::expected_layer(linear, out, in, params_of(8), DType::F16, DType::F16);
    CHECK(rtnq::test::float_values(rebuilt, weight) == rtnq::test::transposed(expected.dequantized, out, in));
  }
}

TEST_CASE("Conv1D needs config or keyword") {
  // Without config.json the same weights are read as [out, in]; an explicit
  // --conv1d-keyword marks only the layers it names.
  TempDir dir;
  const fs::path input_path = dir.path() / "model.safetensors";
  write_gpt2_file(input_path);

  const std::string plain = dir / "plain.safetensors";
  const auto plain_run = run_rtnq("quantize " + shell_quote(input_path.string()) + " -o " + shell_quote(plain) +
                                  " --groupsize 8 --quiet");
  CAPTURE(plain_run.err);
  REQUIRE(plain_run.exit_status == 0);
  const SafetensorsFile plain_output(plain);
  CHECK(output_shape(plain_output, "transformer.h.0.attn.c_attn.scale") == std::vector<int64_t>{16, 6});
  CHECK(output_shape(plain_output, "transformer.h.0.mlp.c_proj.scale") == std::vector<int64_t>{32, 2});

  const std::string marked = dir / "marked.safetensors";
  const auto marked_run = run_rtnq("quantize " + shell_quote(input_path.string()) + " -o " + shell_quote(marked) +
                                   " --groupsize 8 --conv1d-keyword c_attn --quiet");
  CAPTURE(marked_run.err);
  REQUIRE(marked_run.exit_status == 0);
  const SafetensorsFile input(input_path.string());
  const SafetensorsFile marked_output(marked);
  check_conv1d_layer(input, marked_output, "transformer.h.0.attn.c_attn", params_of(8));
  CHECK(output_shape(marked_output, "transformer.h.0.mlp.c_proj.scale") == std::vector<int64_t>{32, 2});
}

TEST_CASE("capp-gpt2 Conv1D layers per column") {
  const SafetensorsFile input((kCappGpt2 / "model.safetensors").string());
  std::vector<std::string> layers;
  for (const TensorInfo& tensor : input.tensors()) {
    const std::string& name = tensor.name;
    if (tensor.shape.size() == 2 && name.find(".h.") != std::string::npos) layers.push_back(name.substr(0, name.size() - 7));
  }
  REQUIRE(layers.size() == 16);

  for (const int64_t groupsize : {int64_t(-1), int64_t(32)}) {
    CAPTURE(groupsize);
    TempDir dir;
    const fs::path output = dir.path() / "q";
    const auto result = run_rtnq("quantize " + shell_quote(kCappGpt2.string()) + " -o " + shell_quote(output.string()) +
                                 " --groupsize " + std::to_string(groupsize) + " --quiet");
    CAPTURE(result.err);
    REQUIRE(result.exit_status == 0);
    const SafetensorsFile quantized((output / "model.safetensors").string());
    for (const std::string& layer : layers) check_conv1d_layer(input, quantized, layer, params_of(groupsize));

    const int64_t n_groups = groupsize == -1 ? 1 : 64 / groupsize;
    CHECK(output_shape(quantized, "transformer.h.0.attn.c_attn.quantized_weight") == std::vector<int64_t>{64, 192});
    CHECK(output_shape(quantized, "transformer.h.0.attn.c_attn.scale") == std::vector<int64_t>{192, n_groups});

    // Dequantized as a folder, c_attn is [in, out] = [64, 192] again.
    const fs::path rebuilt = dir.path() / "dq";
    const auto dequantize = run_rtnq("dequantize " + shell_quote(output.string()) + " -o " +
                                     shell_quote(rebuilt.string()) + " --dtype f32 --quiet");
    CAPTURE(dequantize.err);
    REQUIRE(dequantize.exit_status == 0);
    const SafetensorsFile rebuilt_file((rebuilt / "model.safetensors").string());
    const TensorInfo& weight = *rtnq::test::tensors_by_name(rebuilt_file).at("transformer.h.0.attn.c_attn.weight");
    CHECK(weight.shape == std::vector<int64_t>{64, 192});
    const TensorInfo& original = *rtnq::test::tensors_by_name(input).at("transformer.h.0.attn.c_attn.weight");
    const auto expected = rtnq::test::expected_layer(
        rtnq::test::transposed(rtnq::test::float_values(input, original), 64, 192), 192, 64, params_of(groupsize),
        DType::F16, DType::F16);
    CHECK(rtnq::test::float_values(rebuilt_file, weight) == rtnq::test::transposed(expected.dequantized, 192, 64));
  }
}

namespace {

// The line of text that contains key, or "" when none does.
std::string line_of(const std::string& text, const std::string& key) {
  const size_t found = text.find(key);
  if (found == std::string::npos) return "";
  const size_t start = text.rfind('\n', found) == std::string::npos ? 0 : text.rfind('\n', found) + 1;
  return text.substr(start, text.find('\n', found) - start);
}

}  // namespace

TEST_CASE("Conv1D logs show stored shape") {
  // capp-gpt2's c_fc.weight is stored [in, out] = [64, 256]; inspect and the
  // report show that shape, and so must the dry run and the progress lines.
  TempDir dir;
  const std::string output = dir / "out";
  const auto dry_run = run_rtnq("quantize " + shell_quote(kCappGpt2.string()) + " -o " + shell_quote(output) +
                                " --dry-run");
  CAPTURE(dry_run.err);
  REQUIRE(dry_run.exit_status == 0);
  CHECK(line_of(dry_run.out, "quantize transformer.h.0.mlp.c_fc ").find("[64, 256] Conv1D") != std::string::npos);
  CHECK(line_of(dry_run.out, "quantize transformer.h.0.mlp.c_proj ").find("[256, 64] Conv1D") != std::string::npos);

  const auto run = run_rtnq("quantize " + shell_quote(kCappGpt2.string()) + " -o " + shell_quote(output));
  CAPTURE(run.err);
  REQUIRE(run.exit_status == 0);
  CHECK(line_of(run.err, "transformer.h.0.mlp.c_fc ").find("[64, 256]") != std::string::npos);
  CHECK(line_of(run.err, "transformer.h.0.mlp.c_proj ").find("[256, 64]") != std::string::npos);
}
