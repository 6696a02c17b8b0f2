// The instruction-set independent part of the RTN kernel: dispatch to the
// SIMD body (rtn_kernel_simd.hpp), rounding of the stored scales and zeros,
// and the merge of the row results.
#include "rtnq/rtn_kernel.hpp"

#include <cstring>
#include <string>
#include <vector>

#include "rtn_kernel_internal.hpp"
#include "rtnq/error.hpp"
#include "rtnq/half.hpp"

namespace rtnq {
namespace kernel_detail {

double store_rounded(double value, DType dtype, std::byte* dst, int64_t index) {
  value += 0.0;  // negative zero is stored as +0
  switch (dtype) {
    case DType::F16: {
      uint16_t bits = double_to_f16(value);
      std::memcpy(dst + index * 2, &bits, 2);
      return f16_to_float(bits);
    }
    case DType::BF16: {
      uint16_t bits = double_to_bf16(value);
      std::memcpy(dst + index * 2, &bits, 2);
      return bf16_to_float(bits);
    }
    case DType::F32: {
      float narrow = static_cast<float>(value);
      std::memcpy(dst + index * 4, &narrow, 4);
      return narrow;
    }
    default: {
      std::memcpy(dst + index * 8, &value, 8);
      return value;
    }
  }
}

bool RowsDoneNotifier::active() const { return static_cast<bool>(out_.rows_done); }

void RowsDoneNotifier::notify(int64_t first_row, int64_t row_count) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (failure_) return;
  }
  try {
    out_.rows_done(first_row, row_count);
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!failure_) failure_ = std::current_exception();
  }
}

void RowsDoneNotifier::rethrow_failure() const {
  if (failure_) std::rethrow_exception(failure_);
}

}  // namespace kernel_detail

namespace {

bool cpu_has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

}  // namespace

SimdLevel best_simd_level() {
  static const SimdLevel level = cpu_has_avx2() ? SimdLevel::avx2 : SimdLevel::sse2;
  return level;
}

const char* simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::sse2:
      return "sse2";
    case SimdLevel::avx2:
      return "avx2";
    default:
      return "automatic";
  }
}

KernelResult quantize_matrix(const WeightMatrix& weight, const RtnParams& params, const QuantizedBuffers& out,
                             int threads, SimdLevel simd) {
  if (simd == SimdLevel::automatic) simd = best_simd_level();
  if (simd == SimdLevel::avx2 && !cpu_has_avx2()) {
    throw Error("the RTN kernel cannot use AVX2 and FMA: this CPU lacks them; use the SSE2 level");
  }

  const int64_t rows = weight.out_features;
  std::vector<kernel_detail::RowOutcome> outcomes(static_cast<size_t>(rows));
  kernel_detail::RowsDoneNotifier notifier(out);
  if (simd == SimdLevel::avx2) {
    kernel_detail::quantize_rows_avx2(weight, params, out, threads, outcomes.data(), notifier);
  } else {
    kernel_detail::quantize_rows_sse2(weight, params, out, threads, outcomes.data(), notifier);
  }
  notifier.rethrow_failure();

  // Merge in row order, so the sums do not depend on the thread count.
  KernelResult result;
  for (int64_t row = 0; row < rows; ++row) {
    const kernel_detail::RowOutcome& outcome = outcomes[static_cast<size_t>(row)];
    result.weight_error.merge(outcome.error);
    result.overflowed_scale_count += outcome.overflowed_scales;
    if (outcome.nonfinite_count == 0) continue;
    if (result.nonfinite_count == 0) {
      const int64_t column = outcome.first_nonfinite_column;
      result.first_nonfinite_row = weight.conv1d ? column : row;
      result.first_nonfinite_column = weight.conv1d ? row : column;
    }
    result.nonfinite_count += outcome.nonfinite_count;
  }
  return result;
}

}  // namespace rtnq
