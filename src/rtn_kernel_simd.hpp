// The body of the RTN kernel for one SIMD instruction set. Each
// rtn_kernel_<isa>.cpp includes this file once, compiled with that set's
// flags, and defines RTNQ_KERNEL_ARCH to the xsimd architecture first.
//
// Everything here sits in an anonymous namespace and uses no standard
// containers or std::function, so that no out-of-line function compiled for
// a wider instruction set can replace the baseline's copy of a shared inline
// function at link time. NOTE: only review keeps it so. The few <cmath>
// inline functions used here are expanded in place at -O2 and above.
#pragma once

#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>

#include <xsimd/xsimd.hpp>

#include "rtn_kernel_internal.hpp"
#include "rtnq/half.hpp"

#ifndef RTNQ_KERNEL_ARCH
#error "define RTNQ_KERNEL_ARCH to an xsimd architecture before including rtn_kernel_simd.hpp"
#endif

namespace rtnq::kernel_detail {
namespace {

using Arch = RTNQ_KERNEL_ARCH;

template <class T>
using Batch = xsimd::batch<T, Arch>;

template <class T>
constexpr int64_t kLanes = static_cast<int64_t>(Batch<T>::size);

template <class T>
T min_of(T a, T b) {
  return b < a ? b : a;
}

template <class T>
T max_of(T a, T b) {
  return a < b ? b : a;
}

inline float round_half_even(float value) { return ::nearbyintf(value); }
inline double round_half_even(double value) { return ::nearbyint(value); }

// An array of n values that one thread reuses from row to row.
template <class T>
class Scratch {
 public:
  explicit Scratch(int64_t n) : data_(new T[static_cast<size_t>(n > 0 ? n : 1)]) {}
  ~Scratch() { delete[] data_; }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* data() const { return data_; }

 private:
  T* data_;
};

float bits_to_float(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, 4);
  return value;
}

uint32_t float_to_bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  return bits;
}

// F16 to float, exactly and without branches, so that loops over it
// vectorize. The magnitude bits shifted into float position read as 2^-112
// times the value (subnormals included, as the multiply is exact), and the
// infinity and NaN patterns get the all-ones exponent back.
float decode_f16(uint16_t bits) {
  const uint32_t magnitude = bits & 0x7fffu;
  const float scaled = bits_to_float(magnitude << 13) * 0x1p112f;
  uint32_t wide = float_to_bits(scaled);
  wide |= magnitude >= 0x7c00u ? 0x7f800000u : 0u;
  wide |= static_cast<uint32_t>(bits & 0x8000u) << 16;
  return bits_to_float(wide);
}

// Rounds a finite float to the nearest F16 bits, ties to even; values from
// 65520 up become infinity. Gives the same bits as double_to_f16.
uint16_t encode_f16(float value) {
  const uint32_t bits = float_to_bits(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude >= 0x47800000u) return sign | 0x7c00u;  // 2^16 and up
  if (magnitude < 0x38800000u) {
    // Below 2^-14 the F16 value is a multiple of 2^-24; the scaling is exact,
    // so nearbyint rounds the true value. 1024 units is the smallest normal.
    return sign | static_cast<uint16_t>(::nearbyintf(bits_to_float(magnitude) * 0x1p24f));
  }
  // Rebias the exponent, keep 10 fraction bits and round on the 13 dropped
  // ones. A carry out of the fraction moves to the exponent, up to infinity.
  const uint32_t exponent = (magnitude >> 23) - 127 + 15;
  const uint32_t fraction = magnitude & 0x7fffffu;
  uint32_t half = (exponent << 10) | (fraction >> 13);
  const uint32_t dropped = fraction & 0x1fffu;
  if (dropped > 0x1000u || (dropped == 0x1000u && (half & 1u))) half += 1;
  return sign | static_cast<uint16_t>(half);
}

// Rounds a finite float to the nearest BF16 bits, ties to even.
uint16_t encode_bf16(float value) {
  const uint32_t bits = float_to_bits(value);
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

// store_rounded for float values: rounds value to dtype, writes it at
// element index of dst and returns the stored value. Negative zero is
// stored as +0. NaN is never passed here.
float store_rounded_float(float value, DType dtype, std::byte* dst, int64_t index) {
  value += 0.0f;
  switch (dtype) {
    case DType::F16: {
      const uint16_t bits = encode_f16(value);
      std::memcpy(dst + index * 2, &bits, 2);
      return decode_f16(bits);
    }
    case DType::BF16: {
      const uint16_t bits = encode_bf16(value);
      std::memcpy(dst + index * 2, &bits, 2);
      return bits_to_float(static_cast<uint32_t>(bits) << 16);
    }
    case DType::F32:
      std::memcpy(dst + index * 4, &value, 4);
      return value;
    default: {
      const double wide = value;
      std::memcpy(dst + index * 8, &wide, 8);
      return value;
    }
  }
}

uint16_t load_u16(const std::byte* src) {
  uint16_t bits;
  std::memcpy(&bits, src, 2);
  return bits;
}

// Decodes count elements that sit stride elements apart into dst. F64
// weights are rounded to float when T is float; every other decode is exact.
template <class T>
void decode_weights(const std::byte* src, DType dtype, int64_t count, int64_t stride, T* dst) {
  switch (dtype) {
    case DType::F32:
      if (stride == 1 && sizeof(T) == 4) {
        std::memcpy(dst, src, static_cast<size_t>(count) * 4);
        return;
      }
      for (int64_t i = 0; i < count; ++i) {
        float value;
        std::memcpy(&value, src + i * stride * 4, 4);
        dst[i] = static_cast<T>(value);
      }
      return;
    case DType::BF16:
      for (int64_t i = 0; i < count; ++i) {
        dst[i] = static_cast<T>(bits_to_float(static_cast<uint32_t>(load_u16(src + i * stride * 2)) << 16));
      }
      return;
    case DType::F16:
      for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<T>(decode_f16(load_u16(src + i * stride * 2)));
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
      lowest = min_of(lowest, lanes_min[lane]);
      highest = max_of(highest, lanes_max[lane]);
    }
    check = xsimd::hadd(vcheck);
  }
  for (; i < n; ++i) {  // tail
    lowest = min_of(lowest, x[i]);
    highest = max_of(highest, x[i]);
    check += x[i] - x[i];
  }
  return {lowest, highest, check == 0};
}

// Writes clamp(round(x / scale) + zero, 0, qmax) for the group into q. The
// division is a true division, as the codes must be exact.
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
    T level = round_half_even(x[i] / scale) + zero;
    q[i] = min_of(max_of(level, T(0)), qmax);
  }
}

// Sum over the group of |dequantized - x|^norm for one candidate scale and
// zero of the MSE search. This is the exact evaluation: float deviations,
// double pow, and the terms summed in float64 in order.
template <class T>
double exact_norm_error(const T* x, int64_t n, T scale, T zero, T qmax, double norm, T* scratch) {
  round_group(x, n, scale, zero, qmax, scratch);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    T deviation = dequantize_code(scratch[i], zero, scale) - x[i];
    sum += std::pow(static_cast<double>(std::fabs(deviation)), norm);
  }
  return sum;
}

// Widening of float lanes to double lanes, which xsimd 8 lacks.
#if defined(__AVX__)
inline void widen(__m256 v, __m256d& low, __m256d& high) {
  low = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
  high = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
}
#endif
inline void widen(__m128 v, __m128d& low, __m128d& high) {
  low = _mm_cvtps_pd(v);
  high = _mm_cvtps_pd(_mm_movehl_ps(v, v));
}

// Lane sums of (x - dequantized)^2 and x^2 in float64.
struct ErrorLanes {
  Batch<double> squared_error = Batch<double>(0.0);
  Batch<double> squared_reference = Batch<double>(0.0);

  void add(Batch<double> reference, Batch<double> dequantized) {
    const Batch<double> difference = reference - dequantized;
    squared_error += difference * difference;
    squared_reference += reference * reference;
  }
};

// Adds the weight error of the group's stored values (code - zero) * scale
// to lanes, with scalar tail terms added to tail.
template <class T>
void add_weight_error(const T* x, const T* q, int64_t n, T zero, T scale, ErrorLanes& lanes, ErrorStats& tail) {
  const Batch<T> vzero(zero), vscale(scale);
  int64_t i = 0;
  for (; i + kLanes<T> <= n; i += kLanes<T>) {
    const Batch<T> reference = Batch<T>::load_unaligned(x + i);
    const Batch<T> dequantized = (Batch<T>::load_unaligned(q + i) - vzero) * vscale;
    if constexpr (sizeof(T) == 4) {
      typename Batch<double>::register_type reference_low, reference_high, dequantized_low, dequantized_high;
      widen(reference, reference_low, reference_high);
      widen(dequantized, dequantized_low, dequantized_high);
      lanes.add(reference_low, dequantized_low);
      lanes.add(reference_high, dequantized_high);
    } else {
      lanes.add(reference, dequantized);
    }
  }
  for (; i < n; ++i) {  // tail
    const double reference = static_cast<double>(x[i]);
    const double difference = reference - static_cast<double>(dequantize_code(q[i], zero, scale));
    tail.squared_error += difference * difference;
    tail.squared_reference += reference * reference;
  }
}

// The fast error evaluation of the MSE search (float32 only). Each
// candidate's error is summed over 8 fixed slots (element k goes to slot
// k % 8) that are added in a fixed order, so every thread count gets the
// same sums. The AVX2 body fuses multiply-adds here (xsimd::fma and fms,
// plain multiply and add on SSE2), so its fast errors differ from SSE2's in
// the last bits; the exact re-evaluation of close levels keeps the choice
// the same. The codes, scales and zeros use no fused operation.
constexpr int64_t kSlots = 8;

// log2 of a positive normal float: exponent plus a degree-5 polynomial in
// m - 1 for the mantissa m in [sqrt(0.5), sqrt(2)). The coefficients
// interpolate log2(1 + f) / f at Chebyshev nodes; the absolute error of the
// float evaluation is below 5e-6.
inline Batch<float> fast_log2(Batch<float> a) {
  using Int = Batch<int32_t>;
  const Int bits = xsimd::bitwise_cast<Int>(a);
  Batch<float> exponent = xsimd::to_float((bits >> 23) - Int(127));
  Batch<float> mantissa = xsimd::bitwise_cast<Batch<float>>((bits & Int(0x7fffff)) | Int(0x3f800000));
  const auto above = mantissa > Batch<float>(1.41421356f);
  mantissa = xsimd::select(above, mantissa * Batch<float>(0.5f), mantissa);
  exponent = xsimd::select(above, exponent + Batch<float>(1.0f), exponent);
  const Batch<float> f = mantissa - Batch<float>(1.0f);
  Batch<float> p(-0.202289264f);
  p = xsimd::fma(p, f, Batch<float>(0.316898187f));
  p = xsimd::fma(p, f, Batch<float>(-0.366925771f));
  p = xsimd::fma(p, f, Batch<float>(0.479925573f));
  p = xsimd::fma(p, f, Batch<float>(-0.721195752f));
  p = xsimd::fma(p, f, Batch<float>(1.44270044f));
  return xsimd::fma(f, p, exponent);
}

// 2^z for z >= -126 (smaller z is taken as -126): 2^round(z) from the
// exponent bits times a degree-5 polynomial for 2^g, g in [-0.5, 0.5],
// interpolated at Chebyshev nodes, relative error below 3e-7.
inline Batch<float> fast_exp2(Batch<float> z) {
  z = xsimd::max(z, Batch<float>(-126.0f));
  const Batch<float> n = xsimd::nearbyint(z);
  const Batch<float> g = z - n;
  Batch<float> p(0.00133908634f);
  p = xsimd::fma(p, g, Batch<float>(0.00967603192f));
  p = xsimd::fma(p, g, Batch<float>(0.0555035711f));
  p = xsimd::fma(p, g, Batch<float>(0.240221075f));
  p = xsimd::fma(p, g, Batch<float>(0.693147188f));
  p = xsimd::fma(p, g, Batch<float>(1.00000008f));
  using Int = Batch<int32_t>;
  const Int power_bits = (xsimd::to_int(n) + Int(127)) << 23;
  return p * xsimd::bitwise_cast<Batch<float>>(power_bits);
}

// u^norm for u >= 0, as u^whole * 2^(fraction * log2 u) with norm = whole + fraction.
struct FastPower {
  int whole = 2;
  float fraction = 0.4f;

  Batch<float> operator()(Batch<float> u) const {
    Batch<float> result(1.0f);
    if (whole >= 1) {
      result = u;
      for (int k = 1; k < whole; ++k) result = result * u;
    }
    if (fraction != 0.0f) {
      Batch<float> fractional = fast_exp2(Batch<float>(fraction) * fast_log2(u));
      // 0^fraction is 0; with whole >= 1 the factor u^whole is already 0.
      if (whole == 0) fractional = xsimd::select(u == Batch<float>(0.0f), Batch<float>(0.0f), fractional);
      result = result * fractional;
    }
    return result;
  }
};

// The fast errors are taken to be within this relative distance of the
// exact ones. Every candidate whose fast error is within that distance of
// the best is evaluated again exactly. So the choice differs from the exact
// search's only where a fast error is off by more. The polynomial pow is
// within about 2e-6, and float sums of a group within about 1e-5.
constexpr float kFastErrorTolerance = 1e-4f;

// Largest norm the fast evaluation takes: deviations measured in units of
// the group's unshrunk scale are at most 2 * 65535, whose 4th power fits
// float. Larger norms use the exact evaluation.
constexpr double kMaxFastNorm = 4.0;

// One slot group of the fast error: the 8 partial sums of one candidate.
struct SlotSums {
  Batch<float> sums[kSlots / kLanes<float> > 0 ? kSlots / kLanes<float> : 1];

  float total() const {
    alignas(64) float slots[kSlots];
    for (int64_t b = 0; b < kSlots / kLanes<float>; ++b) sums[b].store_aligned(slots + b * kLanes<float>);
    return ((slots[0] + slots[1]) + (slots[2] + slots[3])) + ((slots[4] + slots[5]) + (slots[6] + slots[7]));
  }
};

// Arrays that one thread reuses from row to row.
template <class T>
struct ThreadBuffers {
  ThreadBuffers(int64_t in_features, int64_t group_size, int64_t shrink_levels)
      : row(in_features), levels(group_size), scaled(group_size), candidate_errors(shrink_levels) {}

  Scratch<T> row;                  // the decoded row
  Scratch<T> levels;               // one group's levels
  Scratch<T> scaled;               // one group's weights in units of the unshrunk scale
  Scratch<float> candidate_errors;  // fast error of each shrink level
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
    shrink_levels_ = params.mse ? mse_shrink_levels(params) : 0;
    zero_dtype_ = zero_dtype_for_bits(params.wbits);
    fast_search_ = sizeof(T) == 4 && params.mse && group_size_ % kSlots == 0 && kSlots % kLanes<float> == 0 &&
                   params.norm <= kMaxFastNorm;
    power_.whole = static_cast<int>(std::floor(params.norm));
    power_.fraction = static_cast<float>(params.norm - std::floor(params.norm));
  }

  int64_t in_features() const { return in_; }
  int64_t group_size() const { return group_size_; }
  int64_t shrink_levels() const { return shrink_levels_; }

  RowOutcome quantize_row(int64_t row, ThreadBuffers<T>& buffers) const {
    T* row_buffer = buffers.row.data();
    T* levels = buffers.levels.data();
    const bool conv1d = weight_.conv1d;
    const int64_t out_features = weight_.out_features;
    const int64_t first = conv1d ? row : row * in_;
    const int64_t stride = conv1d ? out_features : 1;
    decode_weights(weight_.data + first * element_bytes_, weight_.dtype, in_, stride, row_buffer);

    RowOutcome outcome;
    ErrorLanes lanes;
    int64_t previous_choice = 0;
    const int code_bytes = code_bits_ / 8;
    for (int64_t group = 0; group < n_groups_; ++group) {
      const T* x = row_buffer + group * group_size_;
      const int64_t param_index = row * n_groups_ + group;

      GroupRange<T> range = scan_group(x, group_size_);
      T scale = 1;
      T zero = 0;
      if (range.finite) {
        choose_scale_and_zero(x, range, buffers, previous_choice, scale, zero);
        round_group(x, group_size_, scale, zero, qmax_, levels);
      } else {
        count_nonfinite(x, group * group_size_, outcome);
        for (int64_t i = 0; i < group_size_; ++i) levels[i] = 0;
      }

      if (out_.computed_scales) out_.computed_scales[param_index] = scale;
      if (out_.computed_zeros) out_.computed_zeros[param_index] = zero;
      T stored_scale;
      T stored_zero;
      if constexpr (sizeof(T) == 4) {
        stored_scale = store_rounded_float(scale, out_.scale_dtype, out_.stored_scales, param_index);
        stored_zero = store_rounded_float(zero, zero_dtype_, out_.stored_zeros, param_index);
      } else {
        stored_scale = static_cast<T>(store_rounded(scale, out_.scale_dtype, out_.stored_scales, param_index));
        stored_zero = static_cast<T>(store_rounded(zero, zero_dtype_, out_.stored_zeros, param_index));
      }
      if (std::isinf(stored_scale)) outcome.overflowed_scales += 1;

      if (range.finite) {
        add_weight_error(x, levels, group_size_, stored_zero, stored_scale, lanes, outcome.error);
        outcome.error.count += static_cast<uint64_t>(group_size_);
      }
      const int64_t first_code = first + group * group_size_ * stride;
      write_codes(levels, group_size_, out_.codes + first_code * code_bytes, stride);
    }
    outcome.error.squared_error += xsimd::hadd(lanes.squared_error);
    outcome.error.squared_reference += xsimd::hadd(lanes.squared_reference);
    return outcome;
  }

 private:
  void choose_scale_and_zero(const T* x, const GroupRange<T>& range, ThreadBuffers<T>& buffers,
                             int64_t& previous_choice, T& scale, T& zero) const {
    T hi = max_of(range.max, T(0));
    T lo = min_of(range.min, T(0));
    if (params_.sym) {
      hi = max_of(-lo, hi);
      lo = -hi;
    }
    if (lo == 0 && hi == 0) {
      lo = -1;
      hi = 1;
    }
    const T min_scale = static_cast<T>(1e-5);
    scale = max_of((hi - lo) / qmax_, min_scale);
    zero = params_.sym ? static_cast<T>(symmetric_zero(params_.wbits)) : round_half_even(-lo / scale);
    if (!params_.mse) return;

    if constexpr (sizeof(T) == 4) {
      if (fast_search_) {
        const int64_t choice = fast_search(x, lo, hi, scale, zero, buffers, previous_choice);
        previous_choice = choice;
        candidate(choice, lo, hi, zero, scale, zero);
        return;
      }
    }

    double best = std::numeric_limits<double>::infinity();
    const T base_zero = zero;
    for (int64_t level = 0; level < shrink_levels_; ++level) {
      T candidate_scale;
      T candidate_zero;
      candidate(level, lo, hi, base_zero, candidate_scale, candidate_zero);
      double error =
          exact_norm_error(x, group_size_, candidate_scale, candidate_zero, qmax_, params_.norm, buffers.levels.data());
      if (error < best) {
        best = error;
        scale = candidate_scale;
        zero = candidate_zero;
      }
    }
  }

  // Scale and zero of shrink level `level`, computed exactly as the search defines them.
  void candidate(int64_t level, T lo, T hi, T base_zero, T& scale, T& zero) const {
    const T p = static_cast<T>(mse_shrink_factor(params_, level));
    const T shrunk_lo = p * lo;
    const T shrunk_hi = p * hi;
    scale = max_of((shrunk_hi - shrunk_lo) / qmax_, static_cast<T>(1e-5));
    zero = params_.sym ? base_zero : round_half_even(-shrunk_lo / scale);
  }

  // Returns the shrink level of smallest error, the lowest level on ties,
  // as the exact search picks it. The fast error of every level is computed
  // first; the levels within kFastErrorTolerance of the best are then
  // compared with the exact error. Deviations are measured in units of the
  // unshrunk scale (x * r0), which divides every level's error by the same
  // factor and keeps the powers in float range. previous_choice (the
  // neighbouring group's level) is tried first, so that a level whose
  // partial sum already exceeds the best by the tolerance can be dropped,
  // which cannot change the result because the slot sums only grow.
  int64_t fast_search(const float* x, float lo, float hi, float base_scale, float base_zero,
                      ThreadBuffers<float>& buffers, int64_t previous_choice) const {
    const int64_t n = group_size_;
    float* scaled = buffers.scaled.data();
    float* errors = buffers.candidate_errors.data();
    const float r0 = 1.0f / base_scale;
    const Batch<float> vr0(r0);
    for (int64_t i = 0; i < n; i += kLanes<float>) {
      (Batch<float>::load_unaligned(x + i) * vr0).store_unaligned(scaled + i);
    }

    const float margin = (1.0f + kFastErrorTolerance) / (1.0f - kFastErrorTolerance);
    float best = std::numeric_limits<float>::infinity();
    int64_t best_level = 0;
    if (previous_choice >= shrink_levels_) previous_choice = 0;
    for (int64_t k = 0; k < shrink_levels_; ++k) {
      // previous_choice first, then the others in order.
      const int64_t level = k == 0 ? previous_choice : (k <= previous_choice ? k - 1 : k);
      float candidate_scale;
      float candidate_zero;
      candidate(level, lo, hi, base_zero, candidate_scale, candidate_zero);
      errors[level] = std::numeric_limits<float>::infinity();
      float error;
      if (!candidate_error(x, scaled, candidate_scale, candidate_zero, r0, best * margin, error)) continue;
      errors[level] = error;
      if (error < best || (error == best && level < best_level)) {
        best = error;
        best_level = level;
      }
    }

    // Levels close enough to the best that the fast error cannot order them.
    const float bound = best * margin;
    int64_t close_count = 0;
    for (int64_t level = 0; level < shrink_levels_; ++level) close_count += errors[level] <= bound ? 1 : 0;
    if (close_count <= 1) return best_level;

    double best_exact = std::numeric_limits<double>::infinity();
    for (int64_t level = 0; level < shrink_levels_; ++level) {
      if (!(errors[level] <= bound)) continue;
      float candidate_scale;
      float candidate_zero;
      candidate(level, lo, hi, base_zero, candidate_scale, candidate_zero);
      const double error =
          exact_norm_error(x, n, candidate_scale, candidate_zero, qmax_, params_.norm, buffers.levels.data());
      if (error < best_exact) {
        best_exact = error;
        best_level = level;
      }
    }
    return best_level;
  }

  // Computes the fast error of one candidate into error; returns false as
  // soon as a partial sum exceeds bound.
  bool candidate_error(const float* x, const float* scaled, float scale, float zero, float r0, float bound,
                       float& error) const {
    const int64_t n = group_size_;
    const Batch<float> inverse(1.0f / scale);
    const Batch<float> unit(scale * r0);  // the candidate's step in units of the unshrunk scale
    const Batch<float> lowest(-zero);
    const Batch<float> highest(static_cast<float>(qmax_) - zero);
    constexpr int64_t batches = kSlots / kLanes<float>;
    constexpr int64_t check_every = 32;

    SlotSums slots;
    for (int64_t b = 0; b < batches; ++b) slots.sums[b] = Batch<float>(0.0f);
    for (int64_t i = 0; i < n; i += kSlots) {
      for (int64_t b = 0; b < batches; ++b) {
        const int64_t k = i + b * kLanes<float>;
        Batch<float> t = xsimd::nearbyint(Batch<float>::load_unaligned(x + k) * inverse);
        t = xsimd::min(xsimd::max(t, lowest), highest);
        const Batch<float> u = xsimd::abs(xsimd::fms(t, unit, Batch<float>::load_unaligned(scaled + k)));
        slots.sums[b] += power_(u);
      }
      if ((i + kSlots) % check_every == 0 && i + kSlots < n && slots.total() > bound) return false;
    }
    error = slots.total();
    return true;
  }

  void count_nonfinite(const T* x, int64_t column_offset, RowOutcome& outcome) const {
    for (int64_t i = 0; i < group_size_; ++i) {
      if (std::isfinite(x[i])) continue;
      if (outcome.nonfinite_count == 0) outcome.first_nonfinite_column = column_offset + i;
      outcome.nonfinite_count += 1;
    }
  }

  // Converts the levels in q (integers in 0..qmax) to codes of code_bits_
  // bits, written stride codes apart.
  void write_codes(const T* q, int64_t n, std::byte* dst, int64_t stride) const {
    switch (code_bits_) {
      case 8: {
        uint8_t* codes = reinterpret_cast<uint8_t*>(dst);
        if (stride == 1) {
          for (int64_t i = 0; i < n; ++i) codes[i] = static_cast<uint8_t>(static_cast<int32_t>(q[i]));
        } else {
          for (int64_t i = 0; i < n; ++i) codes[i * stride] = static_cast<uint8_t>(static_cast<int32_t>(q[i]));
        }
        return;
      }
      case 16:
        for (int64_t i = 0; i < n; ++i) {
          uint16_t code = static_cast<uint16_t>(static_cast<int32_t>(q[i]));
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

  const WeightMatrix& weight_;
  const RtnParams& params_;
  const QuantizedBuffers& out_;
  int64_t in_ = 0;
  int64_t group_size_ = 0;
  int64_t n_groups_ = 0;
  T qmax_ = 0;
  int code_bits_ = 8;
  int element_bytes_ = 4;
  int64_t shrink_levels_ = 0;
  DType zero_dtype_ = DType::F16;
  bool fast_search_ = false;
  FastPower power_;
};

// Rows per block of the dynamic schedule: about 16 blocks per thread, so
// both cores stay busy on narrow matrices, and at most 64 rows.
int64_t rows_per_block(int64_t rows, int threads) {
  const int64_t chunk = rows / (int64_t(threads) * 16);
  return min_of<int64_t>(max_of<int64_t>(chunk, 1), 64);
}

template <class T>
void quantize_rows_as(const WeightMatrix& weight, const RtnParams& params, const QuantizedBuffers& out, int threads,
                      RowOutcome* outcomes, RowsDoneNotifier& notifier) {
  const MatrixQuantizer<T> quantizer(weight, params, out);
  const int64_t rows = weight.out_features;
  const int thread_count = threads > 0 ? threads : omp_get_max_threads();
  const int64_t block = rows_per_block(rows, thread_count);
  const int64_t blocks = (rows + block - 1) / block;
  const bool notify_blocks = notifier.active() && !weight.conv1d;

#pragma omp parallel num_threads(thread_count)
  {
    ThreadBuffers<T> buffers(quantizer.in_features(), quantizer.group_size(), quantizer.shrink_levels());
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t first = b * block;
      const int64_t last = min_of(first + block, rows);
      for (int64_t row = first; row < last; ++row) outcomes[row] = quantizer.quantize_row(row, buffers);
      if (notify_blocks) notifier.notify(first, last - first);
    }
  }
  if (notifier.active() && weight.conv1d && rows > 0) notifier.notify(0, rows);
}

void quantize_rows(const WeightMatrix& weight, const RtnParams& params, const QuantizedBuffers& out, int threads,
                   RowOutcome* outcomes, RowsDoneNotifier& notifier) {
  if (computes_in_float32(params.wbits)) {
    quantize_rows_as<float>(weight, params, out, threads, outcomes, notifier);
  } else {
    quantize_rows_as<double>(weight, params, out, threads, outcomes, notifier);
  }
}

}  // namespace
}  // namespace rtnq::kernel_detail
