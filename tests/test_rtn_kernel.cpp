// Tests of the RTN kernel: the documented worked examples, hand-calculated
// edge cases, exact decoding of each input dtype, and identical codes, scales
// and zeros to the scalar yardstick in rtn_yardstick.hpp.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "rtn_yardstick.hpp"
#include "rtnq/rtn_kernel.hpp"

using rtnq::DType;
using rtnq::RtnParams;
using rtnq_test::decode_small_float;
using rtnq_test::kBF16Format;
using rtnq_test::kF16Format;
using rtnq_test::nearest_small_float_bits;
using rtnq_test::YardstickResult;

namespace {

int element_bytes(DType dtype) {
  switch (dtype) {
    case DType::F16:
    case DType::BF16:
      return 2;
    case DType::F32:
      return 4;
    default:
      return 8;
  }
}

// Code width from the output table: U8 up to 8 bits, U16 up to 16, U32 up to 32, else U64.
int code_bytes_for_bits(int wbits) {
  if (wbits <= 8) return 1;
  if (wbits <= 16) return 2;
  if (wbits <= 32) return 4;
  return 8;
}

// Zero-point dtype from the output table: F16 up to 11 bits, F32 up to 24, else F64.
DType zero_dtype_for(int wbits) {
  if (wbits <= 11) return DType::F16;
  if (wbits <= 24) return DType::F32;
  return DType::F64;
}

// Reads element index of a buffer of F16, BF16, F32 or F64 values, exactly.
double read_float(const std::vector<std::byte>& bytes, DType dtype, size_t index) {
  if (dtype == DType::F16 || dtype == DType::BF16) {
    uint16_t bits;
    std::memcpy(&bits, bytes.data() + index * 2, 2);
    return decode_small_float(bits, dtype == DType::F16 ? kF16Format : kBF16Format);
  }
  if (dtype == DType::F32) {
    float value;
    std::memcpy(&value, bytes.data() + index * 4, 4);
    return value;
  }
  double value;
  std::memcpy(&value, bytes.data() + index * 8, 8);
  return value;
}

// A weight matrix [rows, columns] as stored bytes, with the exact values they hold.
struct TestMatrix {
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t columns = 0;
  std::vector<std::byte> bytes;
  std::vector<double> values;  // row-major
};

// Stores each requested value in dtype (F16 and BF16 rounded to nearest, ties
// to even) and records the value that was stored.
TestMatrix make_matrix(DType dtype, int64_t rows, int64_t columns, const std::vector<double>& requested) {
  TestMatrix matrix;
  matrix.dtype = dtype;
  matrix.rows = rows;
  matrix.columns = columns;
  matrix.bytes.resize(static_cast<size_t>(rows * columns * element_bytes(dtype)));
  matrix.values.resize(static_cast<size_t>(rows * columns));
  for (size_t i = 0; i < matrix.values.size(); ++i) {
    std::byte* destination = matrix.bytes.data() + i * element_bytes(dtype);
    if (dtype == DType::F16 || dtype == DType::BF16) {
      const auto format = dtype == DType::F16 ? kF16Format : kBF16Format;
      const uint16_t bits = nearest_small_float_bits(requested[i], format);
      std::memcpy(destination, &bits, 2);
      matrix.values[i] = decode_small_float(bits, format);
    } else if (dtype == DType::F32) {
      const float value = static_cast<float>(requested[i]);
      std::memcpy(destination, &value, 4);
      matrix.values[i] = value;
    } else {
      std::memcpy(destination, &requested[i], 8);
      matrix.values[i] = requested[i];
    }
  }
  return matrix;
}

TestMatrix make_f32_row(const std::vector<float>& row) {
  return make_matrix(DType::F32, 1, static_cast<int64_t>(row.size()), std::vector<double>(row.begin(), row.end()));
}

// Everything the kernel wrote for one matrix.
struct KernelRun {
  int wbits = 4;
  DType scale_dtype = DType::F16;
  std::vector<std::byte> codes;
  std::vector<std::byte> stored_scales;
  std::vector<std::byte> stored_zeros;
  std::vector<double> scales;  // as computed, before rounding
  std::vector<double> zeros;
  rtnq::KernelResult result;

  uint64_t code(size_t index) const {
    const int width = code_bytes_for_bits(wbits);
    uint64_t value = 0;
    std::memcpy(&value, codes.data() + index * width, width);  // little-endian host
    return value;
  }
  double stored_scale(size_t index) const { return read_float(stored_scales, scale_dtype, index); }
  double stored_zero(size_t index) const { return read_float(stored_zeros, zero_dtype_for(wbits), index); }
};

struct RunOptions {
  DType scale_dtype = DType::F16;
  int threads = 0;
  // Read the matrix as a GPT-2 Conv1D weight: stored [in, out], one group row per column.
  bool conv1d = false;
};

KernelRun run_kernel(const TestMatrix& matrix, const RtnParams& params, const RunOptions& options = {}) {
  rtnq::WeightMatrix weight;
  weight.data = matrix.bytes.data();
  weight.dtype = matrix.dtype;
  weight.out_features = options.conv1d ? matrix.columns : matrix.rows;
  weight.in_features = options.conv1d ? matrix.rows : matrix.columns;
  weight.conv1d = options.conv1d;

  const int64_t group_size = params.groupsize == -1 ? weight.in_features : params.groupsize;
  const size_t parameter_count = static_cast<size_t>(weight.out_features * (weight.in_features / group_size));
  KernelRun run;
  run.wbits = params.wbits;
  run.scale_dtype = options.scale_dtype;
  run.codes.resize(matrix.values.size() * code_bytes_for_bits(params.wbits));
  run.stored_scales.resize(parameter_count * element_bytes(options.scale_dtype));
  run.stored_zeros.resize(parameter_count * element_bytes(zero_dtype_for(params.wbits)));
  run.scales.resize(parameter_count);
  run.zeros.resize(parameter_count);

  rtnq::QuantizedBuffers out;
  out.codes = run.codes.data();
  out.stored_scales = run.stored_scales.data();
  out.scale_dtype = options.scale_dtype;
  out.stored_zeros = run.stored_zeros.data();
  out.computed_scales = run.scales.data();
  out.computed_zeros = run.zeros.data();
  run.result = rtnq::quantize_matrix(weight, params, out, options.threads);
  return run;
}

std::string describe_params(const RtnParams& params) {
  std::ostringstream text;
  text << "wbits " << params.wbits << ", groupsize " << params.groupsize << ", sym " << params.sym << ", mse "
       << params.mse << ", norm " << params.norm << ", grid " << params.grid;
  return text.str();
}

// Each first_*_difference below describes the first element that disagrees
// with the yardstick, or returns "" when every element agrees.

std::string first_code_difference(const KernelRun& run, const std::vector<uint64_t>& expected) {
  for (size_t i = 0; i < expected.size(); ++i) {
    if (run.code(i) == expected[i]) continue;
    return "code " + std::to_string(i) + " is " + std::to_string(run.code(i)) + ", expected " +
           std::to_string(expected[i]);
  }
  return "";
}

std::string first_value_difference(const char* what, const std::vector<double>& found,
                                   const std::vector<double>& expected) {
  for (size_t i = 0; i < expected.size(); ++i) {
    if (found[i] == expected[i]) continue;
    std::ostringstream text;
    text.precision(17);
    text << what << " " << i << " is " << found[i] << ", expected " << expected[i];
    return text.str();
  }
  return "";
}

// Stored scales must be the computed scales rounded to nearest, ties to even.
std::string first_stored_scale_difference(const KernelRun& run, const std::vector<double>& expected_scales) {
  for (size_t i = 0; i < expected_scales.size(); ++i) {
    double expected = 0;
    if (run.scale_dtype == DType::F32) {
      expected = static_cast<float>(expected_scales[i]);
    } else {
      const auto format = run.scale_dtype == DType::F16 ? kF16Format : kBF16Format;
      expected = decode_small_float(nearest_small_float_bits(expected_scales[i], format), format);
    }
    if (run.stored_scale(i) == expected) continue;
    std::ostringstream text;
    text.precision(17);
    text << "stored scale " << i << " is " << run.stored_scale(i) << ", expected " << expected;
    return text.str();
  }
  return "";
}

// Stored zeros hold every level exactly, and a zero point of -0 is stored as +0.
std::string first_stored_zero_difference(const KernelRun& run, const std::vector<double>& expected_zeros) {
  for (size_t i = 0; i < expected_zeros.size(); ++i) {
    const double stored = run.stored_zero(i);
    if (stored == expected_zeros[i] && !std::signbit(stored)) continue;
    std::ostringstream text;
    text.precision(17);
    text << "stored zero " << i << " is " << stored << ", expected " << expected_zeros[i] << " with sign bit clear";
    return text.str();
  }
  return "";
}

// Weight error rebuilt from the stored codes, scale and zero, in the kernel's
// arithmetic type T, summed in float64.
template <class T>
rtnq::ErrorStats stored_weight_error_as(const TestMatrix& matrix, const KernelRun& run, const RtnParams& params) {
  const int64_t group_size = params.groupsize == -1 ? matrix.columns : params.groupsize;
  const int64_t n_groups = matrix.columns / group_size;
  rtnq::ErrorStats stats;
  for (int64_t row = 0; row < matrix.rows; ++row) {
    for (int64_t column = 0; column < matrix.columns; ++column) {
      const size_t index = static_cast<size_t>(row * matrix.columns + column);
      const size_t group = static_cast<size_t>(row * n_groups + column / group_size);
      const T value = static_cast<T>(matrix.values[index]);
      const T rebuilt = (static_cast<T>(run.code(index)) - static_cast<T>(run.stored_zero(group))) *
                        static_cast<T>(run.stored_scale(group));
      const double difference = static_cast<double>(value) - static_cast<double>(rebuilt);
      stats.squared_error += difference * difference;
      stats.squared_reference += static_cast<double>(value) * static_cast<double>(value);
      stats.count += 1;
    }
  }
  return stats;
}

rtnq::ErrorStats stored_weight_error(const TestMatrix& matrix, const KernelRun& run, const RtnParams& params) {
  if (params.wbits <= 16) return stored_weight_error_as<float>(matrix, run, params);
  return stored_weight_error_as<double>(matrix, run, params);
}

// Quantizes a linear weight with the kernel and the yardstick and requires
// identical codes, scales and zeros, and the weight error of the stored values.
void check_against_yardstick(const TestMatrix& matrix, const RtnParams& params,
                             DType scale_dtype = DType::F16) {
  INFO("matrix ", matrix.rows, " x ", matrix.columns, " of ", std::string(rtnq::dtype_name(matrix.dtype)),
       ", scale dtype ", std::string(rtnq::dtype_name(scale_dtype)), ", ", describe_params(params));
  RunOptions options;
  options.scale_dtype = scale_dtype;
  const KernelRun run = run_kernel(matrix, params, options);
  const YardstickResult expected = rtnq_test::yardstick_quantize(matrix.values, matrix.rows, matrix.columns, params);

  CHECK(first_code_difference(run, expected.codes) == "");
  CHECK(first_value_difference("scale", run.scales, expected.scales) == "");
  CHECK(first_value_difference("zero", run.zeros, expected.zeros) == "");
  CHECK(first_stored_scale_difference(run, expected.scales) == "");
  CHECK(first_stored_zero_difference(run, expected.zeros) == "");
  CHECK(run.result.nonfinite_count == 0);

  // The kernel may sum in another order, so the sums agree to rounding only.
  const rtnq::ErrorStats rebuilt = stored_weight_error(matrix, run, params);
  CHECK(run.result.weight_error.count == rebuilt.count);
  CHECK(run.result.weight_error.squared_error == doctest::Approx(rebuilt.squared_error).epsilon(1e-12));
  CHECK(run.result.weight_error.squared_reference == doctest::Approx(rebuilt.squared_reference).epsilon(1e-12));
}

// Normally distributed weights of the usual size of trained linear layers.
std::vector<double> normal_values(size_t count, uint32_t seed) {
  std::mt19937 engine(seed);
  std::normal_distribution<double> distribution(0.0, 0.02);
  std::vector<double> values(count);
  for (double& value : values) value = distribution(engine);
  return values;
}

// Student-t weights (3 degrees of freedom) with every 61st value an outlier
// 40 times larger, as in layers with a few outlier channels.
std::vector<double> heavy_tailed_values(size_t count, uint32_t seed) {
  std::mt19937 engine(seed);
  std::student_t_distribution<double> distribution(3.0);
  std::vector<double> values(count);
  for (size_t i = 0; i < count; ++i) {
    values[i] = 0.02 * distribution(engine);
    if (i % 61 == 7) values[i] *= 40;
  }
  return values;
}

RtnParams make_params(int wbits, int64_t groupsize, bool sym = false, bool mse = false) {
  RtnParams params;
  params.wbits = wbits;
  params.groupsize = groupsize;
  params.sym = sym;
  params.mse = mse;
  return params;
}

// One hand-calculated case: a single row, quantized as one matrix [1, n].
struct GoldenCase {
  const char* why;
  std::vector<float> row;
  RtnParams params;
  std::vector<uint64_t> codes;
  std::vector<float> scales;  // one per group, as computed in float32
  std::vector<float> zeros;
};

void check_golden_case(const GoldenCase& golden) {
  INFO(golden.why);
  const KernelRun run = run_kernel(make_f32_row(golden.row), golden.params);
  for (size_t i = 0; i < golden.codes.size(); ++i) {
    INFO("code ", i);
    CHECK(run.code(i) == golden.codes[i]);
  }
  for (size_t g = 0; g < golden.scales.size(); ++g) {
    INFO("group ", g);
    CHECK(static_cast<float>(run.scales[g]) == golden.scales[g]);
    CHECK(run.zeros[g] == golden.zeros[g]);
  }
}

const std::vector<float> kWorkedExampleRow = {-0.30f, -0.05f, 0.00f, 0.12f, 0.25f, 0.70f, -0.10f, 0.40f};

}  // namespace

TEST_CASE("worked examples match value for value") {
  RtnParams mse_params = make_params(3, -1, false, true);
  mse_params.norm = 2.4;
  mse_params.grid = 100;
  const std::vector<GoldenCase> cases = {
      {"4 bits asymmetric, one group per row", kWorkedExampleRow, make_params(4, -1),
       {0, 3, 4, 6, 8, 14, 2, 10}, {0.0666666701f}, {4}},
      {"4 bits symmetric, zero fixed at 8", kWorkedExampleRow, make_params(4, -1, true),
       {5, 7, 8, 9, 11, 15, 7, 12}, {0.0933333337f}, {8}},
      {"2 bits in two groups of 4", kWorkedExampleRow, make_params(2, 4),
       {0, 2, 2, 3, 1, 3, 0, 2}, {0.140000001f, 0.266666681f}, {2, 0}},
      {"3 bits with the MSE search, shrink level 4", kWorkedExampleRow, mse_params,
       {0, 2, 2, 3, 4, 7, 1, 5}, {0.137142867f}, {2}},
      {"all-zero row takes the range -1..1; 1 / 0.13333334 is 7.4999998 in float32",
       {0, 0, 0, 0}, make_params(4, -1), {7, 7, 7, 7}, {0.13333334f}, {7}},
  };
  for (const GoldenCase& golden : cases) check_golden_case(golden);
}

TEST_CASE("rounding ties go to even") {
  // Ranges chosen so that scale is exactly 1 and x / scale lands on halves.
  const std::vector<GoldenCase> cases = {
      {"positive halves: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2", {0, 0.5f, 1.5f, 2.5f, 3}, make_params(2, -1),
       {0, 0, 2, 2, 3}, {1}, {0}},
      {"negative halves: -2.5 -> -2, -1.5 -> -2, -0.5 -> 0, zero 3", {-3, -2.5f, -1.5f, -0.5f, 0},
       make_params(2, -1), {0, 1, 1, 3, 3}, {1}, {3}},
      {"zero point 0.5 rounds down to 0", {-0.5f, 2.5f}, make_params(2, -1), {0, 2}, {1}, {0}},
      {"zero point 1.5 rounds up to 2, so 1.5 clamps at the top", {-1.5f, 1.5f}, make_params(2, -1),
       {0, 3}, {1}, {2}},
      {"float64 arithmetic at 17 bits rounds halves the same way", {0, 0.5f, 1.5f, 2.5f, 131071},
       make_params(17, -1), {0, 0, 2, 2, 131071}, {1}, {0}},
  };
  for (const GoldenCase& golden : cases) check_golden_case(golden);
}

TEST_CASE("codes clamp at both ends") {
  const std::vector<GoldenCase> cases = {
      {"symmetric 2 bits: 1.5 + zero 2 = 4 clamps to 3", {-1.5f, 0, 1.5f}, make_params(2, -1, true),
       {0, 2, 3}, {1}, {2}},
      {"symmetric 3 bits: -3.5 -> -4 + 4 = 0, 3.5 -> 4 + 4 = 8 clamps to 7", {-3.5f, 3.5f},
       make_params(3, -1, true), {0, 7}, {1}, {4}},
      {"symmetric 1 bit: zero 1, -0.5 -> -0 + 1 = 1, 0.5 -> 0 + 1 = 1", {-0.5f, 0.5f}, make_params(1, -1, true),
       {1, 1}, {1}, {1}},
  };
  for (const GoldenCase& golden : cases) check_golden_case(golden);

  // 254 values spread over -0.5..0.5 between the outliers -1 and 1: the MSE
  // search shrinks the range to quantize the many finely, so the outliers
  // fall outside it and must clamp to 0 and to 15.
  std::vector<float> row(256);
  for (size_t i = 0; i < row.size(); ++i) row[i] = -0.5f + static_cast<float>(i) / 255.0f;
  row.front() = -1.0f;
  row.back() = 1.0f;
  const RtnParams params = make_params(4, -1, false, true);
  const KernelRun run = run_kernel(make_f32_row(row), params);
  REQUIRE(run.scales[0] < 2.0 / 15);  // a shrunken range was chosen
  CHECK(run.code(0) == 0);
  CHECK(run.code(255) == 15);
  check_against_yardstick(make_f32_row(row), params);
}

TEST_CASE("one-sided and constant groups") {
  const std::vector<GoldenCase> cases = {
      {"all positive: lo = 0, zero 0, scale 1.5 / 15", {0.5f, 1.0f, 1.5f}, make_params(4, -1),
       {5, 10, 15}, {1.5f / 15}, {0}},
      {"all negative: hi = 0, zero 15", {-0.5f, -1.0f, -1.5f}, make_params(4, -1), {10, 5, 0}, {1.5f / 15}, {15}},
      {"constant positive group: top code", {0.25f, 0.25f, 0.25f, 0.25f}, make_params(3, -1),
       {7, 7, 7, 7}, {0.25f / 7}, {0}},
      {"constant negative group: bottom code, zero 7", {-0.25f, -0.25f, -0.25f, -0.25f}, make_params(3, -1),
       {0, 0, 0, 0}, {0.25f / 7}, {7}},
      {"constant symmetric group: 0.25 / (0.5 / 7) is 3.4999998 in float32, so code 3 + 4",
       {0.25f, 0.25f}, make_params(3, -1, true), {7, 7}, {0.5f / 7}, {4}},
      {"per-value groups: each value is its own range", {0.3f, -0.3f, 0.0f}, make_params(4, 1),
       {15, 0, 7}, {0.3f / 15, 0.3f / 15, 2.0f / 15}, {0, 15, 7}},
  };
  for (const GoldenCase& golden : cases) check_golden_case(golden);
}

TEST_CASE("all-positive group stores zero as +0") {
  // -lo is -0 when lo = 0, and round(-0 / scale) is -0.
  const KernelRun run = run_kernel(make_f32_row({0.5f, 1.0f}), make_params(4, -1));
  CHECK(run.zeros[0] == 0.0);
  uint16_t bits;
  std::memcpy(&bits, run.stored_zeros.data(), 2);
  CHECK(bits == 0x0000);
}

TEST_CASE("subnormal and tiny values") {
  const float smallest_subnormal = std::numeric_limits<float>::denorm_min();
  const std::vector<GoldenCase> cases = {
      {"subnormal range: scale floor 1e-5, every code 0", {1e-40f, -1e-41f, 0.0f}, make_params(4, -1),
       {0, 0, 0}, {1e-5f}, {0}},
      {"smallest subnormals both signs, symmetric", {smallest_subnormal, -smallest_subnormal},
       make_params(4, -1, true), {8, 8}, {1e-5f}, {8}},
      {"range below the floor: 1e-5 / 1e-5 = code 1", {0.0f, 1e-5f}, make_params(8, -1), {0, 1}, {1e-5f}, {0}},
  };
  for (const GoldenCase& golden : cases) check_golden_case(golden);

  // Subnormals mixed with normal values, at every bit width the tests use.
  const std::vector<double> row = {1e-40, -3e-39, 0.5, -2e-45, 1.17549435e-38, -0.25, 7e-42, 0.125};
  for (int wbits : {1, 2, 3, 4, 8, 16, 17, 32}) {
    for (bool sym : {false, true}) {
      check_against_yardstick(make_matrix(DType::F32, 1, 8, row), make_params(wbits, -1, sym));
    }
  }
}

TEST_CASE("very large values") {
  // hi - lo = 2e38 still fits float32; -lo / scale is exactly 0.5, which rounds to 0.
  const TestMatrix large = make_f32_row({-1e38f, 1e38f});
  const KernelRun run = run_kernel(large, make_params(1, -1));
  CHECK(run.code(0) == 0);
  CHECK(run.code(1) == 0);
  CHECK(static_cast<float>(run.scales[0]) == 2 * 1e38f);
  CHECK(run.zeros[0] == 0.0);
  CHECK(run.result.overflowed_scale_count == 1);  // 2e38 overflows F16

  RunOptions f32_scales;
  f32_scales.scale_dtype = DType::F32;
  CHECK(run_kernel(large, make_params(1, -1), f32_scales).result.overflowed_scale_count == 0);

  // hi - lo overflows float32 itself, so the scale is infinite in any dtype.
  const KernelRun overflowed = run_kernel(make_f32_row({-1e38f, 0.0f, 3e38f}), make_params(4, -1), f32_scales);
  CHECK(std::isinf(overflowed.scales[0]));
  CHECK(overflowed.result.overflowed_scale_count == 1);

  // Near the top of the float32 and BF16 ranges, with a finite hi - lo.
  const std::vector<double> row = {1e38, -5e37, 3e37, 1.5e38, -1e37, 0, 1.6e38, 2e36};
  for (DType dtype : {DType::F32, DType::BF16}) {
    for (int wbits : {2, 4, 8, 16, 17, 32}) {
      for (bool sym : {false, true}) {
        check_against_yardstick(make_matrix(dtype, 1, 8, row), make_params(wbits, -1, sym), DType::F32);
      }
    }
  }
}

TEST_CASE("kernel matches yardstick across parameters") {
  // in = 256, so groupsize 32, 128 and 256 all divide it, and 256 equals in.
  const int64_t rows = 4;
  const int64_t columns = 256;
  const size_t count = static_cast<size_t>(rows * columns);
  const std::vector<std::vector<double>> sources = {normal_values(count, 11), heavy_tailed_values(count, 12)};
  for (size_t source = 0; source < sources.size(); ++source) {
    for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
      const TestMatrix matrix = make_matrix(dtype, rows, columns, sources[source]);
      for (int wbits : {1, 2, 3, 4, 8, 16, 17, 32}) {
        for (int64_t groupsize : {int64_t(-1), int64_t(1), int64_t(32), int64_t(128), columns}) {
          for (bool sym : {false, true}) {
            for (bool mse : {false, true}) {
              INFO((source == 0 ? "normal" : "heavy-tailed"), " weights");
              RtnParams params = make_params(wbits, groupsize, sym, mse);
              params.grid = 20;  // 16 shrink levels keep this sweep fast; grid 100 is tested below
              check_against_yardstick(matrix, params);
            }
          }
        }
      }
    }
  }
}

TEST_CASE("kernel matches yardstick on odd shapes") {
  // Widths around one and two SIMD vectors of float (wbits <= 16) and of double (above).
  const int64_t float_lanes = static_cast<int64_t>(xsimd::batch<float>::size);
  const int64_t double_lanes = static_cast<int64_t>(xsimd::batch<double>::size);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {1, 1},
      {3, 7},
      {2, float_lanes - 1},
      {2, float_lanes},
      {2, float_lanes + 1},
      {3, 2 * float_lanes + 1},
      {2, double_lanes + 1},
      {2, 2 * double_lanes - 1},
      {5, 33},
  };
  uint32_t seed = 100;
  for (const auto& [rows, columns] : shapes) {
    for (DType dtype : {DType::F32, DType::BF16}) {
      const TestMatrix matrix =
          make_matrix(dtype, rows, columns, heavy_tailed_values(static_cast<size_t>(rows * columns), seed++));
      for (int wbits : {1, 2, 3, 4, 8, 16, 17, 32}) {
        for (int64_t groupsize : {int64_t(-1), int64_t(1), columns}) {
          for (bool sym : {false, true}) {
            for (bool mse : {false, true}) check_against_yardstick(matrix, make_params(wbits, groupsize, sym, mse));
          }
        }
      }
    }
  }
}

TEST_CASE("every wbits from 1 to 64") {
  const TestMatrix matrix = make_matrix(DType::F32, 3, 40, normal_values(120, 21));
  for (int wbits = 1; wbits <= 64; ++wbits) {
    for (int64_t groupsize : {int64_t(-1), int64_t(8)}) {
      for (bool sym : {false, true}) {
        for (bool mse : {false, true}) check_against_yardstick(matrix, make_params(wbits, groupsize, sym, mse));
      }
    }
  }
}

TEST_CASE("64-bit codes saturate below 2^64") {
  // The largest level float64 represents is 2^64 - 2^11. For x = +-2^62, scale =
  // 2^63 / that rounds to 2^-1 (1 + 2^-52), so 2^62 / scale = 2^63 - 2^11
  // exactly, and with the zero point 2^63 the codes are 2^11, 2^63 and 2^64 - 2^11.
  const float x = std::ldexp(1.0f, 62);
  const KernelRun run = run_kernel(make_f32_row({-x, 0, x}), make_params(64, -1, true));
  CHECK(run.scales[0] == 0.5 + std::ldexp(1.0, -53));
  CHECK(run.code(0) == 2048);
  CHECK(run.code(1) == (uint64_t(1) << 63));
  CHECK(run.code(2) == UINT64_MAX - 2047);
  CHECK(run.zeros[0] == std::ldexp(1.0, 63));
  CHECK(run.stored_zero(0) == std::ldexp(1.0, 63));
}

TEST_CASE("MSE search with other norm and grid") {
  const TestMatrix matrix = make_matrix(DType::F32, 4, 64, heavy_tailed_values(256, 31));
  for (double norm : {1.0, 2.0, 2.4, 3.5}) {
    for (int64_t grid : {int64_t(1), int64_t(2), int64_t(7), int64_t(100), int64_t(250)}) {
      for (int wbits : {2, 4, 17}) {
        for (bool sym : {false, true}) {
          RtnParams params = make_params(wbits, 16, sym, true);
          params.norm = norm;
          params.grid = grid;
          check_against_yardstick(matrix, params);
        }
      }
    }
  }
}

TEST_CASE("MSE with grid 1 tries no shrink") {
  // floor(0.8 * 1) = 0 shrink levels, so the min/max range is kept.
  const TestMatrix matrix = make_matrix(DType::F32, 3, 32, heavy_tailed_values(96, 41));
  RtnParams searched = make_params(3, 8, false, true);
  searched.grid = 1;
  const KernelRun with_search = run_kernel(matrix, searched);
  const KernelRun without_search = run_kernel(matrix, make_params(3, 8));
  CHECK(with_search.codes == without_search.codes);
  CHECK(with_search.scales == without_search.scales);
  CHECK(with_search.zeros == without_search.zeros);
}

TEST_CASE("stored scales in each dtype") {
  // Groups of 1 give scales from 1e-5 (an F16 subnormal) up to large outliers.
  const TestMatrix matrix = make_matrix(DType::F32, 4, 64, heavy_tailed_values(256, 51));
  for (DType scale_dtype : {DType::F16, DType::BF16, DType::F32}) {
    for (int wbits : {1, 4, 17}) {
      for (int64_t groupsize : {int64_t(1), int64_t(16)}) {
        check_against_yardstick(matrix, make_params(wbits, groupsize), scale_dtype);
      }
    }
  }
}

TEST_CASE("F16 inputs decode exactly") {
  // Every finite pattern as a 1 x 1 matrix at 1 bit: the weight error's sum
  // of squares is x^2 exactly (float32 squares fit float64), and for
  // |x| >= 1e-5 the scale is |x| and the code is 1 for x > 0, else 0.
  std::string magnitude_difference;
  std::string sign_difference;
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const double expected = decode_small_float(static_cast<uint16_t>(bits), kF16Format);
    if (!std::isfinite(expected)) continue;
    TestMatrix matrix;
    matrix.dtype = DType::F16;
    matrix.rows = matrix.columns = 1;
    matrix.bytes.resize(2);
    const uint16_t pattern = static_cast<uint16_t>(bits);
    std::memcpy(matrix.bytes.data(), &pattern, 2);
    matrix.values = {expected};
    RunOptions options;
    options.threads = 1;
    const KernelRun run = run_kernel(matrix, make_params(1, -1), options);

    const std::string where = "pattern " + std::to_string(bits) + " (" + std::to_string(expected) + ")";
    if (run.result.weight_error.squared_reference != expected * expected && magnitude_difference.empty()) {
      magnitude_difference = where;
    }
    const bool sign_visible = std::fabs(expected) >= 1e-5;
    const bool sign_right = run.scales[0] == std::fabs(expected) && run.code(0) == (expected > 0 ? 1u : 0u);
    if (sign_visible && !sign_right && sign_difference.empty()) sign_difference = where;
  }
  CHECK(magnitude_difference == "");
  CHECK(sign_difference == "");
}

TEST_CASE("BF16 inputs decode exactly") {
  std::string magnitude_difference;
  std::string sign_difference;
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const double expected = decode_small_float(static_cast<uint16_t>(bits), kBF16Format);
    if (!std::isfinite(expected)) continue;
    TestMatrix matrix;
    matrix.dtype = DType::BF16;
    matrix.rows = matrix.columns = 1;
    matrix.bytes.resize(2);
    const uint16_t pattern = static_cast<uint16_t>(bits);
    std::memcpy(matrix.bytes.data(), &pattern, 2);
    matrix.values = {expected};
    RunOptions options;
    options.threads = 1;
    options.scale_dtype = DType::F32;  // BF16 magnitudes overflow F16 scales
    const KernelRun run = run_kernel(matrix, make_params(1, -1), options);

    const std::string where = "pattern " + std::to_string(bits) + " (" + std::to_string(expected) + ")";
    if (run.result.weight_error.squared_reference != expected * expected && magnitude_difference.empty()) {
      magnitude_difference = where;
    }
    const bool sign_visible = std::fabs(expected) >= 1e-5;
    const bool sign_right = run.scales[0] == std::fabs(expected) && run.code(0) == (expected > 0 ? 1u : 0u);
    if (sign_visible && !sign_right && sign_difference.empty()) sign_difference = where;
  }
  CHECK(magnitude_difference == "");
  CHECK(sign_difference == "");
}

TEST_CASE("F32 inputs decode exactly") {
  std::vector<uint32_t> patterns = {
      0x00000001u,  // smallest subnormal
      0x007fffffu,  // largest subnormal
      0x00800000u,  // smallest normal
      0x3f800001u,  // 1 + 2^-23
      0x7f7fffffu,  // largest finite
      0x80000001u, 0xbf800001u, 0xff7fffffu, 0x80000000u,
  };
  std::mt19937 engine(61);
  while (patterns.size() < 4096) {
    const uint32_t bits = static_cast<uint32_t>(engine());
    if (((bits >> 23) & 0xff) != 0xff) patterns.push_back(bits);  // finite only
  }
  for (uint32_t bits : patterns) {
    float expected;
    std::memcpy(&expected, &bits, 4);
    INFO("pattern ", bits, " (", expected, ")");
    RunOptions options;
    options.threads = 1;
    options.scale_dtype = DType::F32;
    const KernelRun run = run_kernel(make_f32_row({expected}), make_params(1, -1), options);
    CHECK(run.result.weight_error.squared_reference == double(expected) * double(expected));
    if (std::fabs(expected) >= 1e-5f) {
      CHECK(run.scales[0] == std::fabs(expected));
      CHECK(run.code(0) == (expected > 0 ? 1u : 0u));
    }
  }
}

TEST_CASE("F64 inputs keep float64 above 16 bits") {
  // 2^20 + 2^-20 is not a float32. In float32 arithmetic (wbits <= 16) it
  // rounds to 2^20; in float64 arithmetic it is kept exactly.
  const double value = 1048576 + std::ldexp(1.0, -20);
  const TestMatrix matrix = make_matrix(DType::F64, 1, 1, {value});
  CHECK(run_kernel(matrix, make_params(1, -1)).scales[0] == 1048576.0);
  const KernelRun wide = run_kernel(matrix, make_params(17, -1));
  CHECK(wide.scales[0] == value / 131071);
  CHECK(wide.result.weight_error.squared_reference == value * value);

  const TestMatrix random = make_matrix(DType::F64, 3, 40, heavy_tailed_values(120, 71));
  for (int wbits : {4, 16, 17, 32, 53, 64}) {
    for (bool mse : {false, true}) check_against_yardstick(random, make_params(wbits, 8, false, mse));
  }
}

TEST_CASE("thread count leaves output unchanged") {
  const TestMatrix matrix = make_matrix(DType::BF16, 67, 96, heavy_tailed_values(67 * 96, 81));
  const RtnParams params = make_params(4, 32, false, true);
  RunOptions one_thread;
  one_thread.threads = 1;
  const KernelRun reference = run_kernel(matrix, params, one_thread);
  for (int threads : {2, 3, 8}) {
    INFO(threads, " threads");
    RunOptions options;
    options.threads = threads;
    const KernelRun run = run_kernel(matrix, params, options);
    CHECK(run.codes == reference.codes);
    CHECK(run.stored_scales == reference.stored_scales);
    CHECK(run.stored_zeros == reference.stored_zeros);
    // Bit-identical sums, because rows are merged in row order.
    CHECK(run.result.weight_error.squared_error == reference.result.weight_error.squared_error);
    CHECK(run.result.weight_error.squared_reference == reference.result.weight_error.squared_reference);
  }
}

TEST_CASE("Conv1D weight quantizes per column") {
  // Stored [in = 12, out = 5]: the yardstick quantizes the transpose [5, 12]
  // by rows, and the codes keep the stored layout.
  const int64_t in = 12;
  const int64_t out = 5;
  const TestMatrix stored = make_matrix(DType::F32, in, out, heavy_tailed_values(60, 91));
  std::vector<double> transposed(static_cast<size_t>(in * out));
  for (int64_t i = 0; i < in; ++i) {
    for (int64_t o = 0; o < out; ++o) transposed[o * in + i] = stored.values[i * out + o];
  }
  for (bool sym : {false, true}) {
    for (bool mse : {false, true}) {
      const RtnParams params = make_params(3, 4, sym, mse);
      INFO(describe_params(params));
      RunOptions options;
      options.conv1d = true;
      const KernelRun run = run_kernel(stored, params, options);
      const YardstickResult expected = rtnq_test::yardstick_quantize(transposed, out, in, params);
      std::vector<uint64_t> expected_stored_codes(static_cast<size_t>(in * out));
      for (int64_t i = 0; i < in; ++i) {
        for (int64_t o = 0; o < out; ++o) expected_stored_codes[i * out + o] = expected.codes[o * in + i];
      }
      CHECK(first_code_difference(run, expected_stored_codes) == "");
      CHECK(first_value_difference("scale", run.scales, expected.scales) == "");
      CHECK(first_value_difference("zero", run.zeros, expected.zeros) == "");
    }
  }
}

TEST_CASE("non-finite weights are counted") {
  // Linear [4, 16] in groups of 8: NaN at (1, 5), +inf at (2, 3), -inf at (2, 9).
  std::vector<double> values = normal_values(64, 101);
  const std::vector<double> finite_values = values;
  values[1 * 16 + 5] = std::numeric_limits<double>::quiet_NaN();
  values[2 * 16 + 3] = std::numeric_limits<double>::infinity();
  values[2 * 16 + 9] = -std::numeric_limits<double>::infinity();
  const TestMatrix matrix = make_matrix(DType::F32, 4, 16, values);
  const RtnParams params = make_params(4, 8);
  const KernelRun run = run_kernel(matrix, params);

  CHECK(run.result.nonfinite_count == 3);
  CHECK(run.result.first_nonfinite_row == 1);
  CHECK(run.result.first_nonfinite_column == 5);
  // Groups holding a non-finite value get code 0; the other 5 groups of 8 are summed.
  for (int64_t column = 0; column < 8; ++column) CHECK(run.code(static_cast<size_t>(1 * 16 + column)) == 0);
  for (int64_t column = 0; column < 16; ++column) CHECK(run.code(static_cast<size_t>(2 * 16 + column)) == 0);
  CHECK(run.result.weight_error.count == 40);

  // The finite groups are quantized as if the others were not there.
  const YardstickResult expected = rtnq_test::yardstick_quantize(finite_values, 4, 16, params);
  for (size_t index : {size_t(0), size_t(5), size_t(15), size_t(16 + 8), size_t(16 + 15), size_t(48), size_t(63)}) {
    INFO("element ", index);
    CHECK(run.code(index) == expected.codes[index]);
  }
  for (size_t group : {size_t(0), size_t(1), size_t(3), size_t(6), size_t(7)}) {
    INFO("group ", group);
    CHECK(run.scales[group] == expected.scales[group]);
    CHECK(run.zeros[group] == expected.zeros[group]);
  }

  // A Conv1D weight reports the position in its stored [in, out] layout.
  std::vector<double> conv_values = normal_values(60, 102);
  conv_values[7 * 5 + 2] = std::numeric_limits<double>::quiet_NaN();  // stored (7, 2)
  RunOptions conv1d;
  conv1d.conv1d = true;
  const KernelRun conv_run = run_kernel(make_matrix(DType::F32, 12, 5, conv_values), make_params(4, -1), conv1d);
  CHECK(conv_run.result.nonfinite_count == 1);
  CHECK(conv_run.result.first_nonfinite_row == 7);
  CHECK(conv_run.result.first_nonfinite_column == 2);
}

TEST_CASE("matrix without rows") {
  const TestMatrix matrix = make_matrix(DType::F32, 0, 16, {});
  const KernelRun run = run_kernel(matrix, make_params(4, 8));
  CHECK(run.result.weight_error.count == 0);
  CHECK(run.result.nonfinite_count == 0);
}
