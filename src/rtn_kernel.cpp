#include "rtnq/rtn_kernel.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "rtnq/half.hpp"

namespace rtnq {
namespace {

template <class T>
using Batch = xsimd::batch<T>;

template <class T>
constexpr int64_t kLanes = static_cast<int64_t>(Batch<T>::size);

// Decodes count elements that sit stride elements apart into dst. F64 weights
// are rounded to float when T is float; every other decode is exact.
template <class T>
void decode_weights(const std::byte* src, DType dtype, int64_t count, int64_t stride, T* dst) {
  switch (dtype) {
    case DType::F32:
      for (int64_t i = 0; i < count; ++i) {
        float value;
        std::memcpy(&value, src + i * stride * 4, 4);
        dst[i] = static_cast<T>(value);
      }
      return;
    case DType::BF16:
      for (int64_t i = 0; i < count; ++i) {
        uint16_t bits;
        std::memcpy(&bits, src + i * stride * 2, 2);
        dst[i] = static_cast<T>(bf16_to_float(bits));
      }
      return;
    case DType::F16:
      for (int64_t i = 0; i < count; ++i) {
        uint16_t bits;
        std::memcpy(&bits, src + i * stride * 2, 2);
        dst[i] = static_cast<T>(f16_to_float(bits));
      }
      return;
    case DType::F64:
      for (int64_t i = 0; i < count; ++i) {
        double value;
        std::memcpy(&value, src + i * stride * 8, 8);
        dst[i] = static_cast<T>(value);
      }
      return;
    default:
      return;  // quantize_matrix accepts only the four float dtypes
  }
}

template <class T>
struct GroupRange {
  T min;
  T max;
  bool finite;
};

// Min and max of the group, and whether every value is finite: x - x is 0
// for finite x and NaN for NaN or infinity, and a NaN sum stays NaN.
template <class T>
GroupRange<T> scan_group(const T* x, int64_t n) {
  T lowest = x[0];
  T highest = x[0];
  T check = 0;
  int64_t i = 0;
  if (n >= kLanes<T>) {
    Batch<T> vmin = Batch<T>::load_unaligned(x);
    Batch<T> vmax = vmin;
    Batch<T> vcheck(T(0));
    for (; i + kLanes<T> <= n; i += kLanes<T>) {
      Batch<T> v = Batch<T>::load_unaligned(x + i);
      vmin = xsimd::min(vmin, v);
      vmax = xsimd::max(vmax, v);
      vcheck += v - v;
    }
    alignas(64) T lanes_min[kLanes<T>];
    alignas(64) T lanes_max[kLanes<T>];
    vmin.store_aligned(lanes_min);
    vmax.store_aligned(lanes_max);
    for (int64_t lane = 0; lane < kLanes<T>; ++lane) {
      lowest = std::min(lowest, lanes_min[lane]);
      highest = std::max(highest, lanes_max[lane]);
    }
    check = xsimd::hadd(vcheck);
  }
  for (; i < n; ++i) {  // tail
    lowest = std::min(lowest, x[i]);
    highest = std::max(highest, x[i]);
    check += x[i] - x[i];
  }
  return {lowest, highest, check == 0};
}

// Writes clamp(round(x / scale) + zero, 0, qmax) for the group into q.
template <class T>
void round_group(const T* x, int64_t n, T scale, T zero, T qmax, T* q) {
  const Batch<T> vscale(scale), vzero(zero), vqmax(qmax), vnull(T(0));
  int64_t i = 0;
  for (; i + kLanes<T> <= n; i += kLanes<T>) {
    Batch<T> v = Batch<T>::load_unaligned(x + i);
    Batch<T> level = xsimd::nearbyint(v / vscale) + vzero;
    level = xsimd::min(xsimd::max(level, vnull), vqmax);
    level.store_unaligned(q + i);
  }
  for (; i < n; ++i) {  // tail
    T level = std::nearbyint(x[i] / scale) + zero;
    q[i] = std::min(std::max(level, T(0)), qmax);
  }
}

// Sum over the group of |dequantized - x|^norm, for one candidate scale and
// zero of the MSE search. The terms are summed in float64, in order.
template <class T>
double norm_error(const T* x, int64_t n, T scale, T zero, T qmax, double norm, T* scratch) {
  round_group(x, n, scale, zero, qmax, scratch);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    T deviation = dequantize_code(scratch[i], zero, scale) - x[i];
    sum += std::pow(static_cast<double>(std::fabs(deviation)), norm);
  }
  return sum;
}

// Rounds value to dtype, writes it at index of dst and returns the stored value.
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

// Converts the levels in q (integers in 0..qmax) to codes of code_bits bits,
// written stride codes apart.
template <class T>
void write_codes(const T* q, int64_t n, int code_bits, std::byte* dst, int64_t stride) {
  switch (code_bits) {
    case 8:
      for (int64_t i = 0; i < n; ++i) dst[i * stride] = static_cast<std::byte>(static_cast<uint32_t>(q[i]));
      return;
    case 16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t code = static_cast<uint16_t>(static_cast<uint32_t>(q[i]));
        std::memcpy(dst + i * stride * 2, &code, 2);
      }
      return;
    case 32:
      for (int64_t i = 0; i < n; ++i) {
        uint32_t code = static_cast<uint32_t>(static_cast<uint64_t>(q[i]));
        std::memcpy(dst + i * stride * 4, &code, 4);
      }
      return;
    default:
      for (int64_t i = 0; i < n; ++i) {
        uint64_t code = static_cast<uint64_t>(q[i]);
        std::memcpy(dst + i * stride * 8, &code, 8);
      }
      return;
  }
}

struct RowOutcome {
  ErrorStats error;
  int64_t nonfinite_count = 0;
  int64_t first_nonfinite_column = -1;  // within the row's input features
  int64_t overflowed_scales = 0;
};

template <class T>
class MatrixQuantizer {
 public:
  MatrixQuantizer(const WeightMatrix& weight, const RtnParams& params, const QuantizedBuffers& out)
      : weight_(weight), params_(params), out_(out) {
    in_ = weight.in_features;
    group_size_ = params.groupsize == -1 ? in_ : params.groupsize;
    n_groups_ = groups_per_row(params, in_);
    qmax_ = static_cast<T>(max_code_level(params.wbits));
    code_bits_ = dtype_bits(code_dtype_for_bits(params.wbits));
    element_bytes_ = dtype_bits(weight.dtype) / 8;
  }

  // Quantizes output row `row`; row_buffer and scratch hold in_features values.
  RowOutcome quantize_row(int64_t row, T* row_buffer, T* scratch) const {
    const bool conv1d = weight_.conv1d;
    const int64_t out_features = weight_.out_features;
    const int64_t first = conv1d ? row : row * in_;
    const int64_t stride = conv1d ? out_features : 1;
    decode_weights(weight_.data + first * element_bytes_, weight_.dtype, in_, stride, row_buffer);

    RowOutcome outcome;
    const int code_bytes = code_bits_ / 8;
    for (int64_t group = 0; group < n_groups_; ++group) {
      const T* x = row_buffer + group * group_size_;
      T* q = scratch + group * group_size_;
      const int64_t param_index = row * n_groups_ + group;

      GroupRange<T> range = scan_group(x, group_size_);
      T scale = 1;
      T zero = 0;
      if (range.finite) {
        choose_scale_and_zero(x, range, scratch + group * group_size_, scale, zero);
        round_group(x, group_size_, scale, zero, qmax_, q);
      } else {
        count_nonfinite(x, group * group_size_, outcome);
        std::fill(q, q + group_size_, T(0));
      }

      if (out_.computed_scales) out_.computed_scales[param_index] = scale;
      if (out_.computed_zeros) out_.computed_zeros[param_index] = zero;
      const T stored_scale = static_cast<T>(store_rounded(scale, out_.scale_dtype, out_.stored_scales, param_index));
      const T stored_zero = static_cast<T>(
          store_rounded(zero, zero_dtype_for_bits(params_.wbits), out_.stored_zeros, param_index));
      if (std::isinf(stored_scale)) outcome.overflowed_scales += 1;

      if (range.finite) add_weight_error(x, q, stored_zero, stored_scale, outcome.error);
    }

    const int64_t first_code = conv1d ? row : row * in_;
    write_codes(scratch, in_, code_bits_, out_.codes + first_code * code_bytes, stride);
    return outcome;
  }

  int64_t in_features() const { return in_; }

 private:
  void choose_scale_and_zero(const T* x, const GroupRange<T>& range, T* scratch, T& scale, T& zero) const {
    T hi = std::max(range.max, T(0));
    T lo = std::min(range.min, T(0));
    if (params_.sym) {
      hi = std::max(-lo, hi);
      lo = -hi;
    }
    if (lo == 0 && hi == 0) {
      lo = -1;
      hi = 1;
    }
    const T min_scale = static_cast<T>(1e-5);
    scale = std::max((hi - lo) / qmax_, min_scale);
    zero = params_.sym ? static_cast<T>(symmetric_zero(params_.wbits)) : std::nearbyint(-lo / scale);
    if (!params_.mse) return;

    double best = std::numeric_limits<double>::infinity();
    const int64_t levels = mse_shrink_levels(params_);
    for (int64_t level = 0; level < levels; ++level) {
      const T p = static_cast<T>(mse_shrink_factor(params_, level));
      const T shrunk_lo = p * lo;
      const T shrunk_hi = p * hi;
      const T candidate_scale = std::max((shrunk_hi - shrunk_lo) / qmax_, min_scale);
      const T candidate_zero = params_.sym ? zero : std::nearbyint(-shrunk_lo / candidate_scale);
      double error = norm_error(x, group_size_, candidate_scale, candidate_zero, qmax_, params_.norm, scratch);
      if (error < best) {
        best = error;
        scale = candidate_scale;
        zero = candidate_zero;
      }
    }
  }

  void count_nonfinite(const T* x, int64_t column_offset, RowOutcome& outcome) const {
    for (int64_t i = 0; i < group_size_; ++i) {
      if (std::isfinite(x[i])) continue;
      if (outcome.nonfinite_count == 0) outcome.first_nonfinite_column = column_offset + i;
      outcome.nonfinite_count += 1;
    }
  }

  void add_weight_error(const T* x, const T* q, T zero, T scale, ErrorStats& error) const {
    for (int64_t i = 0; i < group_size_; ++i) {
      const double reference = static_cast<double>(x[i]);
      const double difference = reference - static_cast<double>(dequantize_code(q[i], zero, scale));
      error.squared_error += difference * difference;
      error.squared_reference += reference * reference;
    }
    error.count += static_cast<uint64_t>(group_size_);
  }

  const WeightMatrix& weight_;
  const RtnParams& params_;
  const QuantizedBuffers& out_;
  int64_t in_ = 0;
  int64_t group_size_ = 0;
  int64_t n_groups_ = 0;
  T qmax_ = 0;
  int code_bits_ = 8;
  int element_bytes_ = 4;
};

template <class T>
KernelResult quantize_matrix_as(const WeightMatrix& weight, const RtnParams& params, const QuantizedBuffers& out,
                                int threads) {
  const MatrixQuantizer<T> quantizer(weight, params, out);
  const int64_t rows = weight.out_features;
  std::vector<RowOutcome> outcomes(static_cast<size_t>(rows));
  const int thread_count = threads > 0 ? threads : omp_get_max_threads();

#pragma omp parallel num_threads(thread_count)
  {
    // Two row-sized buffers per thread: the decoded row and its levels.
    std::vector<T> row_buffer(static_cast<size_t>(quantizer.in_features()));
    std::vector<T> scratch(static_cast<size_t>(quantizer.in_features()));
#pragma omp for schedule(dynamic, 16)
    for (int64_t row = 0; row < rows; ++row) {
      outcomes[static_cast<size_t>(row)] = quantizer.quantize_row(row, row_buffer.data(), scratch.data());
    }
  }

  // Merge in row order, so the sums do not depend on the thread count.
  KernelResult result;
  for (int64_t row = 0; row < rows; ++row) {
    const RowOutcome& outcome = outcomes[static_cast<size_t>(row)];
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

}  // namespace

KernelResult quantize_matrix(const WeightMatrix& weight, const RtnParams& params, const QuantizedBuffers& out,
                             int threads) {
  if (computes_in_float32(params.wbits)) return quantize_matrix_as<float>(weight, params, out, threads);
  return quantize_matrix_as<double>(weight, params, out, threads);
}

}  // namespace rtnq
