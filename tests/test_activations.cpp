// Output error from --activations: the report's output_* fields against a
// float64 recomputation of X W^T and X W^^T with the yardstick's W^, and the
// errors for activations that do not fit a layer.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoint_helpers.hpp"
#include "rtnq/native_format.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using rtnq::DType;
using rtnq::test::folder_entries;
using rtnq::test::is_one_error_line;
using rtnq::test::FloatTensor;
using rtnq::test::read_file;
using rtnq::test::run_rtnq;
using rtnq::test::shell_quote;
using rtnq::test::TempDir;

namespace {

constexpr int64_t kOut = 6;
constexpr int64_t kIn = 8;
const char* const kQuantizeOptions = " --wbits 3 --groupsize 4 --quiet";

rtnq::RtnParams run_params() {
  rtnq::RtnParams params;
  params.wbits = 3;
  params.groupsize = 4;
  return params;
}

// The report's output error fields, recomputed in float64.
struct OutputError {
  double squared_error = 0;
  double mean_squared_error = 0;
  double relative_squared_error = 0;
};

// weight and dequantized are [out, in]; x is [rows, in]. Y = X W^T and
// Y^ = X W^^T are computed separately, then compared.
OutputError recompute(const std::vector<double>& weight, const std::vector<double>& dequantized,
                      const std::vector<double>& x, int64_t out, int64_t in) {
  const int64_t rows = int64_t(x.size()) / in;
  double squared_error = 0;
  double squared_reference = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < out; ++o) {
      double y = 0;
      double y_hat = 0;
      for (int64_t i = 0; i < in; ++i) {
        y += weight[size_t(o * in + i)] * x[size_t(r * in + i)];
        y_hat += dequantized[size_t(o * in + i)] * x[size_t(r * in + i)];
      }
      squared_error += (y - y_hat) * (y - y_hat);
      squared_reference += y * y;
    }
  }
  return {squared_error, squared_error / double(out * rows), squared_error / squared_reference};
}

// The input's float values as stored: what the quantizer and X see.
std::vector<double> stored_values(const std::vector<double>& values, DType dtype) {
  std::vector<double> result;
  for (double value : values) result.push_back(rtnq::test::rounded_to(value, dtype));
  return result;
}

void check_close(double actual, double expected) {
  CAPTURE(actual);
  CAPTURE(expected);
  CHECK(std::fabs(actual - expected) <= 1e-10 * std::fabs(expected));
}

const json& report_layer(const json& report, const std::string& name) {
  for (const json& layer : report["layers"]) {
    if (layer["name"] == name) return layer;
  }
  throw std::runtime_error("report has no layer " + name);
}

// A model of two linear layers, of which only "proj" gets activations.
std::vector<double> write_model(const fs::path& path) {
  const std::vector<double> weight = rtnq::test::test_values(size_t(kOut * kIn), 11, 0.1);
  rtnq::test::write_float_checkpoint(path, {{"proj.weight", DType::F32, {kOut, kIn}, weight},
                                            {"other.weight", DType::F32, {4, kIn}, rtnq::test::test_values(32, 12)},
                                            {"norm.weight", DType::F32, {kIn}, rtnq::test::test_values(8, 13)}});
  return stored_values(weight, DType::F32);
}

}  // namespace

TEST_CASE("output error matches float64 recomputation") {
  struct ActivationCase {
    std::string reason;
    DType dtype;
    std::vector<int64_t> shape;
  };
  const std::vector<ActivationCase> cases = {
      {"F32 [rows, in]", DType::F32, {5, kIn}},
      {"F32 [batch, seq, in]", DType::F32, {2, 3, kIn}},
      {"BF16 [rows, in]", DType::BF16, {5, kIn}},
      {"F16 [batch, seq, in]", DType::F16, {3, 1, kIn}},
  };
  for (const ActivationCase& activation : cases) {
    CAPTURE(activation.reason);
    TempDir dir;
    const fs::path model = dir.path() / "model.safetensors";
    const std::vector<double> weight = write_model(model);

    size_t count = 1;
    for (int64_t dimension : activation.shape) count *= size_t(dimension);
    const std::vector<double> x = rtnq::test::test_values(count, 21, 1.0);
    const fs::path activations = dir.path() / "activations.safetensors";
    rtnq::test::write_float_checkpoint(activations, {{"proj", activation.dtype, activation.shape, x}});

    const std::string output = dir / "out.safetensors";
    const auto result = run_rtnq("quantize " + shell_quote(model.string()) + " -o " + shell_quote(output) +
                                 " --activations " + shell_quote(activations.string()) + kQuantizeOptions);
    CAPTURE(result.err);
    REQUIRE(result.exit_status == 0);

    const json report = json::parse(read_file(output + ".report.json"));
    CHECK(report["activations"] == activations.string());
    const auto expected_layer =
        rtnq::test::expected_layer(weight, kOut, kIn, run_params(), DType::F16, DType::F16);
    const OutputError expected =
        recompute(weight, expected_layer.dequantized, stored_values(x, activation.dtype), kOut, kIn);
    CHECK(expected.relative_squared_error > 0);

    const json& proj = report_layer(report, "proj");
    check_close(proj["output_squared_error"].get<double>(), expected.squared_error);
    check_close(proj["mean_output_squared_error"].get<double>(), expected.mean_squared_error);
    check_close(proj["relative_output_squared_error"].get<double>(), expected.relative_squared_error);
    check_close(report["summary"]["mean_relative_output_squared_error"].get<double>(),
                expected.relative_squared_error);

    // A layer without activations keeps null output fields.
    const json& other = report_layer(report, "other");
    CHECK(other["output_squared_error"].is_null());
    CHECK(other["mean_output_squared_error"].is_null());
    CHECK(other["relative_output_squared_error"].is_null());
  }
}

TEST_CASE("output error of Conv1D layer") {
  // The weight is stored [in, out]; X W^T uses its transpose.
  TempDir dir;
  const std::vector<double> stored = rtnq::test::test_values(size_t(kIn * kOut), 31, 0.1);
  const fs::path model = dir.path() / "model.safetensors";
  rtnq::test::write_float_checkpoint(model, {{"h.0.attn.c_attn.weight", DType::F32, {kIn, kOut}, stored}});
  rtnq::test::write_file(dir.path() / "config.json", R"({"model_type": "gpt2"})");
  const std::vector<double> x = rtnq::test::test_values(size_t(4 * kIn), 32, 1.0);
  const fs::path activations = dir.path() / "activations.safetensors";
  rtnq::test::write_float_checkpoint(activations, {{"h.0.attn.c_attn", DType::F32, {4, kIn}, x}});

  const std::string output = dir / "out.safetensors";
  const auto result = run_rtnq("quantize " + shell_quote(model.string()) + " -o " + shell_quote(output) +
                               " --activations " + shell_quote(activations.string()) + kQuantizeOptions);
  CAPTURE(result.err);
  REQUIRE(result.exit_status == 0);

  const std::vector<double> weight = rtnq::test::transposed(stored_values(stored, DType::F32), kIn, kOut);
  const auto expected_layer = rtnq::test::expected_layer(weight, kOut, kIn, run_params(), DType::F16, DType::F16);
  const OutputError expected = recompute(weight, expected_layer.dequantized, stored_values(x, DType::F32), kOut, kIn);
  const json report = json::parse(read_file(output + ".report.json"));
  const json& layer = report_layer(report, "h.0.attn.c_attn");
  CHECK(layer["conv1d"] == true);
  check_close(layer["output_squared_error"].get<double>(), expected.squared_error);
  check_close(layer["relative_output_squared_error"].get<double>(), expected.relative_squared_error);
}

TEST_CASE("activations of wrong shape rejected") {
  struct BadCase {
    std::string reason;
    std::vector<int64_t> shape;
    std::string shape_text;
  };
  const std::vector<BadCase> cases = {
      {"last dimension differs", {5, 7}, "[5, 7]"},
      {"3-D, last dimension differs", {2, 3, 4}, "[2, 3, 4]"},
      {"rank 1", {8}, "[8]"},
      {"rank 4", {1, 2, 3, 8}, "[1, 2, 3, 8]"},
  };
  for (const BadCase& bad : cases) {
    CAPTURE(bad.reason);
    TempDir dir;
    const fs::path model = dir.path() / "model.safetensors";
    write_model(model);
    size_t count = 1;
    for (int64_t dimension : bad.shape) count *= size_t(dimension);
    const fs::path activations = dir.path() / "activations.safetensors";
    rtnq::test::write_float_checkpoint(activations,
                                       {{"proj", DType::F32, bad.shape, rtnq::test::test_values(count, 41)}});

    const auto result = run_rtnq("quantize " + shell_quote(model.string()) + " -o " + shell_quote(dir / "out") +
                                 " --activations " + shell_quote(activations.string()) + kQuantizeOptions);
    CAPTURE(result.err);
    CHECK(result.exit_status == 1);
    CHECK(is_one_error_line(result.err));
    CHECK(result.err.find(activations.string()) != std::string::npos);
    CHECK(result.err.find("proj") != std::string::npos);
    CHECK(result.err.find(bad.shape_text) != std::string::npos);
    CHECK(result.err.find("[6, 8]") != std::string::npos);
    CHECK(folder_entries(dir.path()) == std::set<std::string>{"model.safetensors", "activations.safetensors"});
  }
}

TEST_CASE("activations for no layer rejected") {
  TempDir dir;
  const fs::path model = dir.path() / "model.safetensors";
  write_model(model);
  const fs::path activations = dir.path() / "activations.safetensors";
  rtnq::test::write_float_checkpoint(activations,
                                     {{"decoder.proj", DType::F32, {2, kIn}, rtnq::test::test_values(16, 51)}});
  const auto result = run_rtnq("quantize " + shell_quote(model.string()) + " -o " + shell_quote(dir / "out") +
                               " --activations " + shell_quote(activations.string()) + kQuantizeOptions);
  CAPTURE(result.err);
  CHECK(result.exit_status == 1);
  CHECK(is_one_error_line(result.err));
  CHECK(result.err.find(activations.string()) != std::string::npos);
  CHECK(folder_entries(dir.path()) == std::set<std::string>{"model.safetensors", "activations.safetensors"});
}

TEST_CASE("activations of integer dtype rejected") {
  TempDir dir;
  const fs::path model = dir.path() / "model.safetensors";
  write_model(model);
  const std::string header = R"({"proj": {"dtype": "I32", "shape": [1, 8], "data_offsets": [0, 32]}})";
  const std::string activations =
      rtnq::test::write_safetensors(dir, "activations.safetensors", header, std::string(32, '\0'));
  const auto result = run_rtnq("quantize " + shell_quote(model.string()) + " -o " + shell_quote(dir / "out") +
                               " --activations " + shell_quote(activations) + kQuantizeOptions);
  CAPTURE(result.err);
  CHECK(result.exit_status == 1);
  CHECK(is_one_error_line(result.err));
  CHECK(result.err.find("I32") != std::string::npos);
  CHECK(folder_entries(dir.path()) == std::set<std::string>{"model.safetensors", "activations.safetensors"});
}

TEST_CASE("activations with NaN or Inf rejected") {
  struct BadCase {
    std::string reason;
    std::vector<int64_t> shape;
    std::vector<std::pair<size_t, double>> bad_values;  // flat index, value
    std::string count_text;
    std::string index_text;
  };
  const double nan = std::nan("");
  const double inf = HUGE_VAL;
  const std::vector<BadCase> cases = {
      {"one NaN, rows", {3, kIn}, {{10, nan}}, "contain 1 NaN or Inf", "index [1, 2]"},
      {"NaN and -Inf, batch", {2, 2, kIn}, {{29, -inf}, {17, nan}}, "contain 2 NaN or Inf", "index [1, 0, 1]"},
      {"Inf at first element", {1, kIn}, {{0, inf}}, "contain 1 NaN or Inf", "index [0, 0]"},
  };
  for (const BadCase& bad : cases) {
    CAPTURE(bad.reason);
    TempDir dir;
    const fs::path model = dir.path() / "model.safetensors";
    write_model(model);
    size_t count = 1;
    for (int64_t dimension : bad.shape) count *= size_t(dimension);
    std::vector<double> x = rtnq::test::test_values(count, 61, 1.0);
    for (const auto& [index, value] : bad.bad_values) x[index] = value;
    const fs::path activations = dir.path() / "activations.safetensors";
    rtnq::test::write_float_checkpoint(activations, {{"proj", DType::F32, bad.shape, x}});

    for (const std::string dry_run : {"", " --dry-run"}) {
      CAPTURE(dry_run);
      const auto result = run_rtnq("quantize " + shell_quote(model.string()) + " -o " + shell_quote(dir / "out") +
                                   " --activations " + shell_quote(activations.string()) + kQuantizeOptions +
                                   dry_run);
      CAPTURE(result.err);
      CHECK(result.exit_status == 1);
      CHECK(is_one_error_line(result.err));
      CHECK(result.err.find(activations.string()) != std::string::npos);
      CHECK(result.err.find("activations proj ") != std::string::npos);
      CHECK(result.err.find(bad.count_text) != std::string::npos);
      CHECK(result.err.find(bad.index_text) != std::string::npos);
      CHECK(folder_entries(dir.path()) == std::set<std::string>{"model.safetensors", "activations.safetensors"});
    }
  }
}

TEST_CASE("activations without rows rejected") {
  const std::vector<std::vector<int64_t>> shapes = {{0, kIn}, {2, 0, kIn}, {0, 3, kIn}};
  for (const std::vector<int64_t>& shape : shapes) {
    const std::string shape_text = rtnq::format_shape(shape);
    CAPTURE(shape_text);
    TempDir dir;
    const fs::path model = dir.path() / "model.safetensors";
    write_model(model);
    const fs::path activations = dir.path() / "activations.safetensors";
    rtnq::test::write_float_checkpoint(activations, {{"proj", DType::F32, shape, {}}});

    for (const std::string dry_run : {"", " --dry-run"}) {
      CAPTURE(dry_run);
      const auto result = run_rtnq("quantize " + shell_quote(model.string()) + " -o " + shell_quote(dir / "out") +
                                   " --activations " + shell_quote(activations.string()) + kQuantizeOptions +
                                   dry_run);
      CAPTURE(result.err);
      CHECK(result.exit_status == 1);
      CHECK(is_one_error_line(result.err));
      CHECK(result.err.find(activations.string()) != std::string::npos);
      CHECK(result.err.find("proj have shape " + shape_text) != std::string::npos);
      CHECK(result.err.find("has no rows") != std::string::npos);
      CHECK(folder_entries(dir.path()) == std::set<std::string>{"model.safetensors", "activations.safetensors"});
    }
  }
}

TEST_CASE("dry run checks activations shape") {
  TempDir dir;
  const fs::path model = dir.path() / "model.safetensors";
  write_model(model);
  const fs::path activations = dir.path() / "activations.safetensors";
  rtnq::test::write_float_checkpoint(activations, {{"proj", DType::F32, {5, 7}, rtnq::test::test_values(35, 71)}});
  const auto result = run_rtnq("quantize " + shell_quote(model.string()) + " -o " + shell_quote(dir / "out") +
                               " --activations " + shell_quote(activations.string()) + kQuantizeOptions +
                               " --dry-run");
  CAPTURE(result.err);
  CHECK(result.exit_status == 1);
  CHECK(is_one_error_line(result.err));
  CHECK(result.err.find("[5, 7]") != std::string::npos);
  CHECK(result.out.empty());
}
