// Tests of the kernel's fast paths: how often the fast MSE search picks the
// shrink level of the exact search (the scalar yardstick), exact codes for
// the level it picks, identical output from every SIMD level, and the
// rows_done callback that lets the caller write codes while quantizing.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "rtn_yardstick.hpp"
#include "rtnq/rtn_kernel.hpp"

using rtnq::DType;
using rtnq::RtnParams;
using rtnq::SimdLevel;

namespace {

// A BF16, F16 or F32 matrix [rows, columns]: stored bytes and the exact values they hold.
struct StoredMatrix {
  DType dtype = DType::BF16;
  int64_t rows = 0;
  int64_t columns = 0;
  std::vector<std::byte> bytes;
  std::vector<double> values;
};

StoredMatrix store_matrix(DType dtype, int64_t rows, int64_t columns, const std::vector<double>& requested) {
  StoredMatrix matrix;
  matrix.dtype = dtype;
  matrix.rows = rows;
  matrix.columns = columns;
  const size_t width = dtype == DType::F32 ? 4 : 2;
  matrix.bytes.resize(requested.size() * width);
  matrix.values.resize(requested.size());
  for (size_t i = 0; i < requested.size(); ++i) {
    if (dtype == DType::F32) {
      const float value = static_cast<float>(requested[i]);
      std::memcpy(matrix.bytes.data() + i * 4, &value, 4);
      matrix.values[i] = value;
      continue;
    }
    const auto format = dtype == DType::F16 ? rtnq_test::kF16Format : rtnq_test::kBF16Format;
    const uint16_t bits = rtnq_test::nearest_small_float_bits(requested[i], format);
    std::memcpy(matrix.bytes.data() + i * 2, &bits, 2);
    matrix.values[i] = rtnq_test::decode_small_float(bits, format);
  }
  return matrix;
}

// Student-t weights (3 degrees of freedom, scale 0.02), each row with its
// own spread, and one value in 500 ten times larger.
std::vector<double> heavy_tailed_weights(int64_t rows, int64_t columns, uint32_t seed) {
  std::mt19937 engine(seed);
  std::student_t_distribution<double> student(3.0);
  std::uniform_real_distribution<double> spread(0.5, 1.5);
  std::uniform_int_distribution<int> outlier(0, 499);
  std::vector<double> values(static_cast<size_t>(rows * columns));
  for (int64_t row = 0; row < rows; ++row) {
    const double row_scale = 0.02 * spread(engine);
    for (int64_t column = 0; column < columns; ++column) {
      double value = row_scale * student(engine);
      if (outlier(engine) == 0) value *= 10;
      values[static_cast<size_t>(row * columns + column)] = value;
    }
  }
  return values;
}

// Code width from the output table: U8 up to 8 bits, U16 up to 16, U32 up to 32, else U64.
int code_bytes_for_bits(int wbits) {
  if (wbits <= 8) return 1;
  if (wbits <= 16) return 2;
  if (wbits <= 32) return 4;
  return 8;
}

// Everything the kernel wrote for one matrix.
struct KernelOutput {
  std::vector<std::byte> codes;
  std::vector<std::byte> stored_scales;
  std::vector<std::byte> stored_zeros;
  std::vector<double> scales;  // as computed
  std::vector<double> zeros;
  rtnq::KernelResult result;

  uint64_t code(size_t index, int wbits) const {
    const int width = code_bytes_for_bits(wbits);
    uint64_t value = 0;
    std::memcpy(&value, codes.data() + index * width, width);  // little-endian host
    return value;
  }
};

KernelOutput run_kernel(const StoredMatrix& matrix, const RtnParams& params, SimdLevel simd, int threads = 2,
                        bool conv1d = false, DType scale_dtype = DType::F16) {
  rtnq::WeightMatrix weight;
  weight.data = matrix.bytes.data();
  weight.dtype = matrix.dtype;
  weight.out_features = conv1d ? matrix.columns : matrix.rows;
  weight.in_features = conv1d ? matrix.rows : matrix.columns;
  weight.conv1d = conv1d;
  const int64_t group_size = params.groupsize == -1 ? weight.in_features : params.groupsize;
  const size_t groups = static_cast<size_t>(weight.out_features * (weight.in_features / group_size));
  const size_t scale_width = scale_dtype == DType::F32 ? 4 : 2;

  KernelOutput output;
  output.codes.resize(matrix.values.size() * code_bytes_for_bits(params.wbits));
  output.stored_scales.resize(groups * scale_width);
  output.stored_zeros.resize(groups * 8);
  output.scales.resize(groups);
  output.zeros.resize(groups);
  rtnq::QuantizedBuffers out;
  out.codes = output.codes.data();
  out.stored_scales = output.stored_scales.data();
  out.scale_dtype = scale_dtype;
  out.stored_zeros = output.stored_zeros.data();
  out.computed_scales = output.scales.data();
  out.computed_zeros = output.zeros.data();
  output.result = rtnq::quantize_matrix(weight, params, out, threads, simd);
  return output;
}

std::vector<SimdLevel> supported_levels() {
  std::vector<SimdLevel> levels = {SimdLevel::sse2};
  if (rtnq::best_simd_level() == SimdLevel::avx2) levels.push_back(SimdLevel::avx2);
  return levels;
}

RtnParams make_params(int wbits, int64_t groupsize, bool sym, bool mse) {
  RtnParams params;
  params.wbits = wbits;
  params.groupsize = groupsize;
  params.sym = sym;
  params.mse = mse;
  return params;
}

// Returns the shrink level whose scale and zero, computed in float32 as the
// search defines them, equal (scale, zero), or -1 if none does.
int64_t shrink_level_of(const std::vector<float>& group, const RtnParams& params, double scale, double zero) {
  const float qmax = static_cast<float>(std::ldexp(1.0, params.wbits) - 1);
  float hi = 0;
  float lo = 0;
  for (float value : group) {
    hi = std::max(hi, value);
    lo = std::min(lo, value);
  }
  if (params.sym) {
    hi = std::max(-lo, hi);
    lo = -hi;
  }
  if (lo == 0 && hi == 0) {
    lo = -1;
    hi = 1;
  }
  const int64_t levels = static_cast<int64_t>(std::floor(0.8 * static_cast<double>(params.grid)));
  for (int64_t i = 0; i < levels; ++i) {
    const float p = static_cast<float>(1.0 - static_cast<double>(i) / static_cast<double>(params.grid));
    const float candidate_scale = std::max((p * hi - p * lo) / qmax, 1e-5f);
    const float candidate_zero = params.sym ? std::ldexp(1.0f, params.wbits - 1)
                                            : std::nearbyint(-(p * lo) / candidate_scale);
    if (candidate_scale == scale && candidate_zero == zero) return i;
  }
  return -1;
}

struct AgreementCount {
  int64_t groups = 0;
  int64_t same_level = 0;
  int64_t not_a_shrink_level = 0;  // kernel scale and zero match no level
  int64_t inexact_codes = 0;       // groups whose codes differ from code(x) at the kernel's scale and zero
};

// Quantizes the matrix with the kernel and the yardstick and counts the
// groups where both chose the same shrink level.
AgreementCount count_agreement(const StoredMatrix& matrix, const RtnParams& params, SimdLevel simd) {
  const KernelOutput kernel = run_kernel(matrix, params, simd);
  const rtnq_test::YardstickResult exact =
      rtnq_test::yardstick_quantize(matrix.values, matrix.rows, matrix.columns, params);
  const int64_t group_size = params.groupsize;
  const int64_t n_groups = matrix.columns / group_size;
  const float qmax = static_cast<float>(std::ldexp(1.0, params.wbits) - 1);

  AgreementCount count;
  std::vector<float> group(static_cast<size_t>(group_size));
  for (int64_t row = 0; row < matrix.rows; ++row) {
    for (int64_t g = 0; g < n_groups; ++g) {
      const size_t first = static_cast<size_t>(row * matrix.columns + g * group_size);
      const size_t index = static_cast<size_t>(row * n_groups + g);
      for (int64_t k = 0; k < group_size; ++k) group[k] = static_cast<float>(matrix.values[first + k]);
      count.groups += 1;

      const int64_t kernel_level = shrink_level_of(group, params, kernel.scales[index], kernel.zeros[index]);
      const int64_t exact_level = shrink_level_of(group, params, exact.scales[index], exact.zeros[index]);
      if (kernel_level < 0) count.not_a_shrink_level += 1;
      if (kernel_level == exact_level) count.same_level += 1;

      const float scale = static_cast<float>(kernel.scales[index]);
      const float zero = static_cast<float>(kernel.zeros[index]);
      for (int64_t k = 0; k < group_size; ++k) {
        const float expected = rtnq_test::yardstick_code(group[k], scale, zero, qmax);
        if (kernel.code(first + k, params.wbits) != static_cast<uint64_t>(expected)) {
          count.inexact_codes += 1;
          break;
        }
      }
    }
  }
  return count;
}

}  // namespace

TEST_CASE("fast MSE search agrees with exact search") {
  // Realistic layer widths: k_proj of a 1B model, and a 2-bit case with
  // small groups where the search has the most near-ties.
  struct Case {
    const char* name;
    int64_t rows;
    int64_t columns;
    RtnParams params;
  };
  RtnParams norm_two = make_params(4, 128, false, true);
  norm_two.norm = 2.0;
  RtnParams fine_grid = make_params(3, 64, false, true);
  fine_grid.grid = 250;
  const std::vector<Case> cases = {
      {"4 bits, groups of 128", 192, 2048, make_params(4, 128, false, true)},
      {"4 bits symmetric, groups of 128", 128, 2048, make_params(4, 128, true, true)},
      {"3 bits, groups of 64, grid 250", 128, 2048, fine_grid},
      {"2 bits, groups of 32", 64, 2048, make_params(2, 32, false, true)},
      {"4 bits, norm 2", 128, 2048, norm_two},
  };
  uint32_t seed = 11;
  for (const Case& test : cases) {
    const StoredMatrix matrix =
        store_matrix(DType::BF16, test.rows, test.columns, heavy_tailed_weights(test.rows, test.columns, seed++));
    for (SimdLevel simd : supported_levels()) {
      const std::string where = std::string(test.name) + ", " + rtnq::simd_level_name(simd);
      INFO(where);
      const AgreementCount count = count_agreement(matrix, test.params, simd);
      const double agreement = static_cast<double>(count.same_level) / static_cast<double>(count.groups);
      MESSAGE(where, ": ", count.same_level, " of ", count.groups, " groups chose the exact search's level");
      CHECK(count.groups == test.rows * (test.columns / test.params.groupsize));
      CHECK(agreement >= 0.999);
      CHECK(count.not_a_shrink_level == 0);
      CHECK(count.inexact_codes == 0);
    }
  }
}

TEST_CASE("SIMD levels give identical output") {
  struct Case {
    const char* name;
    DType dtype;
    int64_t rows;
    int64_t columns;
    RtnParams params;
    bool conv1d;
  };
  RtnParams low_norm = make_params(3, 16, false, true);
  low_norm.norm = 0.7;
  const std::vector<Case> cases = {
      {"BF16, 4 bits, groups of 128", DType::BF16, 40, 512, make_params(4, 128, false, false), false},
      {"F16, 8 bits per row", DType::F16, 33, 200, make_params(8, -1, false, false), false},
      {"F32, 2 bits, groups of 7 (SIMD tails)", DType::F32, 19, 133, make_params(2, 7, false, false), false},
      {"BF16, 12 bits symmetric", DType::BF16, 16, 96, make_params(12, 32, true, false), false},
      {"BF16, 20 bits (float64 arithmetic)", DType::BF16, 16, 96, make_params(20, 32, false, false), false},
      {"BF16, MSE, groups of 64", DType::BF16, 64, 256, make_params(4, 64, false, true), false},
      {"F16, MSE symmetric, groups of 24", DType::F16, 24, 96, make_params(3, 24, true, true), false},
      {"F32, MSE norm 0.7", DType::F32, 24, 96, low_norm, false},
      {"F32, MSE, groups of 5 (exact search)", DType::F32, 12, 40, make_params(3, 5, false, true), false},
      {"BF16 Conv1D, MSE", DType::BF16, 96, 24, make_params(4, 32, false, true), true},
  };
  uint32_t seed = 101;
  for (const Case& test : cases) {
    const StoredMatrix matrix =
        store_matrix(test.dtype, test.rows, test.columns, heavy_tailed_weights(test.rows, test.columns, seed++));
    INFO(std::string(test.name));
    const KernelOutput baseline = run_kernel(matrix, test.params, SimdLevel::sse2, 1, test.conv1d);
    if (!test.params.mse && !test.conv1d) {
      // The SSE2 level alone against the yardstick; the kernel tests cover the widest level.
      const rtnq_test::YardstickResult exact =
          rtnq_test::yardstick_quantize(matrix.values, matrix.rows, matrix.columns, test.params);
      CHECK(baseline.scales == exact.scales);
      CHECK(baseline.zeros == exact.zeros);
      size_t first_wrong_code = exact.codes.size();
      for (size_t i = 0; i < exact.codes.size() && first_wrong_code == exact.codes.size(); ++i) {
        if (baseline.code(i, test.params.wbits) != exact.codes[i]) first_wrong_code = i;
      }
      CHECK(first_wrong_code == exact.codes.size());
    }
    for (SimdLevel simd : supported_levels()) {
      for (int threads : {1, 2}) {
        INFO(std::string(rtnq::simd_level_name(simd)), ", ", threads, " threads");
        const KernelOutput run = run_kernel(matrix, test.params, simd, threads, test.conv1d);
        CHECK(run.codes == baseline.codes);
        CHECK(run.scales == baseline.scales);
        CHECK(run.zeros == baseline.zeros);
        CHECK(run.stored_scales == baseline.stored_scales);
        CHECK(run.stored_zeros == baseline.stored_zeros);
        CHECK(run.result.weight_error.count == baseline.result.weight_error.count);
        CHECK(run.result.weight_error.squared_error ==
              doctest::Approx(baseline.result.weight_error.squared_error).epsilon(1e-12));
        CHECK(run.result.weight_error.squared_reference ==
              doctest::Approx(baseline.result.weight_error.squared_reference).epsilon(1e-12));
      }
    }
  }
}

TEST_CASE("stored F16 and BF16 scales round to nearest even") {
  // At 1 bit a group of one value x gets scale |x| (above 1e-5), so each
  // value below is stored as a scale. A third of them sit exactly halfway
  // between two F16 values, a third between two BF16 values, and the range
  // runs into F16 overflow.
  std::mt19937 engine(7);
  std::uniform_real_distribution<double> exponent(-16.0, 16.2);
  std::vector<double> values;
  for (int i = 0; i < 6144; ++i) {
    const double magnitude = std::exp2(exponent(engine));
    if (i % 3 == 2) {
      values.push_back(magnitude);
      continue;
    }
    const auto format = i % 3 == 0 ? rtnq_test::kF16Format : rtnq_test::kBF16Format;
    const uint16_t below = rtnq_test::nearest_small_float_bits(magnitude, format);
    const double low = rtnq_test::decode_small_float(below, format);
    const double high = rtnq_test::decode_small_float(static_cast<uint16_t>(below + 1), format);
    values.push_back(std::isfinite(high) ? 0.5 * (low + high) : magnitude);
  }
  const StoredMatrix matrix = store_matrix(DType::F32, 1, static_cast<int64_t>(values.size()), values);
  for (DType scale_dtype : {DType::F16, DType::BF16}) {
    const auto format = scale_dtype == DType::F16 ? rtnq_test::kF16Format : rtnq_test::kBF16Format;
    for (SimdLevel simd : supported_levels()) {
      INFO(std::string(rtnq::simd_level_name(simd)), ", scale dtype ", std::string(rtnq::dtype_name(scale_dtype)));
      const KernelOutput run = run_kernel(matrix, make_params(1, 1, false, false), simd, 2, false, scale_dtype);
      size_t first_wrong = values.size();
      for (size_t i = 0; i < values.size() && first_wrong == values.size(); ++i) {
        const double scale = std::max(std::fabs(matrix.values[i]), static_cast<double>(1e-5f));
        CHECK(run.scales[i] == scale);
        uint16_t stored;
        std::memcpy(&stored, run.stored_scales.data() + i * 2, 2);
        if (stored != rtnq_test::nearest_small_float_bits(run.scales[i], format)) first_wrong = i;
      }
      CHECK(first_wrong == values.size());
    }
  }
}

TEST_CASE("rows_done reports every row once") {
  // 208 rows and 64 columns: both divide by the group size 16, as a Conv1D weight reads rows as columns.
  const StoredMatrix matrix = store_matrix(DType::BF16, 208, 64, heavy_tailed_weights(208, 64, 5));
  for (bool conv1d : {false, true}) {
    for (int threads : {1, 2, 3}) {
      INFO("conv1d ", conv1d, ", ", threads, " threads");
      const int64_t rows = conv1d ? matrix.columns : matrix.rows;
      rtnq::WeightMatrix weight;
      weight.data = matrix.bytes.data();
      weight.dtype = matrix.dtype;
      weight.out_features = rows;
      weight.in_features = conv1d ? matrix.rows : matrix.columns;
      weight.conv1d = conv1d;
      std::vector<std::byte> codes(matrix.values.size());
      const int64_t groups = rows * (weight.in_features / 16);
      std::vector<std::byte> scales(static_cast<size_t>(groups) * 2);
      std::vector<std::byte> zeros(scales.size());
      std::vector<int> calls_per_row(static_cast<size_t>(rows), 0);
      int64_t calls = 0;
      std::mutex mutex;
      rtnq::QuantizedBuffers out;
      out.codes = codes.data();
      out.stored_scales = scales.data();
      out.stored_zeros = zeros.data();
      out.rows_done = [&](int64_t first_row, int64_t row_count) {
        std::lock_guard<std::mutex> lock(mutex);
        calls += 1;
        for (int64_t row = first_row; row < first_row + row_count; ++row) calls_per_row[row] += 1;
      };
      rtnq::quantize_matrix(weight, make_params(4, 16, false, false), out, threads);
      CHECK(std::count(calls_per_row.begin(), calls_per_row.end(), 1) == rows);
      // A Conv1D weight's codes are strided over the whole buffer, so it gets one call.
      if (conv1d) CHECK(calls == 1);
      if (!conv1d) CHECK(calls > 1);
    }
  }
}

TEST_CASE("rows_done exception reaches the caller") {
  const StoredMatrix matrix = store_matrix(DType::F32, 300, 32, heavy_tailed_weights(300, 32, 6));
  rtnq::WeightMatrix weight;
  weight.data = matrix.bytes.data();
  weight.dtype = matrix.dtype;
  weight.out_features = matrix.rows;
  weight.in_features = matrix.columns;
  std::vector<std::byte> codes(matrix.values.size());
  std::vector<std::byte> scales(static_cast<size_t>(matrix.rows) * 2);
  std::vector<std::byte> zeros(scales.size());
  std::atomic<int> calls{0};
  rtnq::QuantizedBuffers out;
  out.codes = codes.data();
  out.stored_scales = scales.data();
  out.stored_zeros = zeros.data();
  out.rows_done = [&](int64_t, int64_t) {
    calls += 1;
    throw std::runtime_error("disk full");
  };
  for (SimdLevel simd : supported_levels()) {
    INFO(std::string(rtnq::simd_level_name(simd)));
    calls = 0;
    CHECK_THROWS_WITH(rtnq::quantize_matrix(weight, make_params(4, -1, false, false), out, 2, simd), "disk full");
    // Calls that start after the failure is stored return at once, so at most one per thread fails.
    CHECK(calls >= 1);
    CHECK(calls <= 2);
  }
}
