// Scalar yardstick for the RTN kernel tests: the quantizer's formulas
// written out one value at a time, with no SIMD, no threads and no code
// shared with the library apart from the RtnParams struct. Also exact F16
// and BF16 decoding and rounding, computed independently of rtnq/half.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "rtnq/rtn_params.hpp"

namespace rtnq_test {

// Codes, scales and zeros of one matrix [out, in], in the linear layout.
// Scales and zeros are the computed values, before rounding to a stored dtype.
struct YardstickResult {
  std::vector<uint64_t> codes;  // [out, in]
  std::vector<double> scales;   // [out, n_groups]
  std::vector<double> zeros;    // [out, n_groups]
};

// Largest code 2^wbits - 1. Past 53 bits double cannot hold it, so the
// codes saturate at the largest double below 2^wbits.
inline double yardstick_max_code(int wbits) {
  const double power = std::ldexp(1.0, wbits);
  return wbits <= 53 ? power - 1 : std::nextafter(power, 0.0);
}

template <class T>
T yardstick_code(T x, T scale, T zero, T max_code) {
  T level = std::nearbyint(x / scale) + zero;
  if (level < 0) level = 0;
  if (level > max_code) level = max_code;
  return level;
}

// Chooses the scale and zero of one group of n values.
template <class T>
void yardstick_choose(const T* x, int64_t n, const rtnq::RtnParams& params, T& scale, T& zero) {
  const T max_code = static_cast<T>(yardstick_max_code(params.wbits));
  T hi = 0;
  T lo = 0;
  for (int64_t i = 0; i < n; ++i) {
    hi = std::max(hi, x[i]);
    lo = std::min(lo, x[i]);
  }
  if (params.sym) {
    hi = std::max(-lo, hi);
    lo = -hi;
  }
  if (lo == 0 && hi == 0) {
    lo = -1;
    hi = 1;
  }

  const T min_scale = static_cast<T>(1e-5);
  // (max_code + 1) / 2 with the exact max_code 2^wbits - 1.
  const T symmetric_zero = std::ldexp(T(1), params.wbits - 1);
  scale = std::max((hi - lo) / max_code, min_scale);
  zero = params.sym ? symmetric_zero : std::nearbyint(-lo / scale);
  if (!params.mse) return;

  double best = std::numeric_limits<double>::infinity();
  const int64_t levels = static_cast<int64_t>(std::floor(0.8 * static_cast<double>(params.grid)));
  for (int64_t i = 0; i < levels; ++i) {
    const T p = static_cast<T>(1.0 - static_cast<double>(i) / static_cast<double>(params.grid));
    const T candidate_scale = std::max((p * hi - p * lo) / max_code, min_scale);
    const T candidate_zero = params.sym ? zero : std::nearbyint(-(p * lo) / candidate_scale);
    double error = 0;
    for (int64_t k = 0; k < n; ++k) {
      const T level = yardstick_code(x[k], candidate_scale, candidate_zero, max_code);
      const T deviation = (level - candidate_zero) * candidate_scale - x[k];
      error += std::pow(static_cast<double>(std::fabs(deviation)), params.norm);
    }
    if (error < best) {
      best = error;
      scale = candidate_scale;
      zero = candidate_zero;
    }
  }
}

// Quantizes values [out, in] in the arithmetic type T (float for wbits <= 16,
// double above). values are converted to T first, which rounds only F64 input
// in float arithmetic.
template <class T>
YardstickResult yardstick_quantize_as(const std::vector<double>& values, int64_t out, int64_t in,
                                      const rtnq::RtnParams& params) {
  const int64_t group_size = params.groupsize == -1 ? in : params.groupsize;
  const int64_t n_groups = in / group_size;
  const T max_code = static_cast<T>(yardstick_max_code(params.wbits));

  YardstickResult result;
  result.codes.resize(static_cast<size_t>(out * in));
  result.scales.resize(static_cast<size_t>(out * n_groups));
  result.zeros.resize(static_cast<size_t>(out * n_groups));
  std::vector<T> group(static_cast<size_t>(group_size));
  for (int64_t row = 0; row < out; ++row) {
    for (int64_t g = 0; g < n_groups; ++g) {
      const int64_t first = row * in + g * group_size;
      for (int64_t k = 0; k < group_size; ++k) group[k] = static_cast<T>(values[first + k]);

      T scale = 0;
      T zero = 0;
      yardstick_choose(group.data(), group_size, params, scale, zero);
      result.scales[row * n_groups + g] = scale;
      result.zeros[row * n_groups + g] = zero;
      for (int64_t k = 0; k < group_size; ++k) {
        result.codes[first + k] = static_cast<uint64_t>(yardstick_code(group[k], scale, zero, max_code));
      }
    }
  }
  return result;
}

inline YardstickResult yardstick_quantize(const std::vector<double>& values, int64_t out, int64_t in,
                                          const rtnq::RtnParams& params) {
  if (params.wbits <= 16) return yardstick_quantize_as<float>(values, out, in, params);
  return yardstick_quantize_as<double>(values, out, in, params);
}

// A binary16-like format: F16 has 5 exponent and 10 fraction bits, BF16 has 8 and 7.
struct SmallFloatFormat {
  int exponent_bits;
  int fraction_bits;
};
constexpr SmallFloatFormat kF16Format{5, 10};
constexpr SmallFloatFormat kBF16Format{8, 7};

// Magnitude of the bit pattern without its sign. The all-ones exponent reads
// as the next power of two, so the infinity pattern sits where rounding to
// nearest puts overflowing values.
inline double small_float_magnitude(uint32_t bits, SmallFloatFormat format) {
  const int bias = (1 << (format.exponent_bits - 1)) - 1;
  const uint32_t exponent = bits >> format.fraction_bits;
  const uint32_t fraction = bits & ((1u << format.fraction_bits) - 1);
  if (exponent == 0) return std::ldexp(static_cast<double>(fraction), 1 - bias - format.fraction_bits);
  const double significand = static_cast<double>(fraction + (1u << format.fraction_bits));
  return std::ldexp(significand, static_cast<int>(exponent) - bias - format.fraction_bits);
}

// Decodes F16 or BF16 bits exactly, including subnormals, infinities and NaN.
inline double decode_small_float(uint16_t bits, SmallFloatFormat format) {
  const uint32_t magnitude_bits = bits & 0x7fffu;
  const uint32_t infinity_bits = ((1u << format.exponent_bits) - 1) << format.fraction_bits;
  double magnitude = small_float_magnitude(magnitude_bits, format);
  if (magnitude_bits == infinity_bits) magnitude = std::numeric_limits<double>::infinity();
  if (magnitude_bits > infinity_bits) magnitude = std::numeric_limits<double>::quiet_NaN();
  return (bits & 0x8000u) ? -magnitude : magnitude;
}

// Magnitudes of every non-negative finite pattern and the infinity pattern,
// in bit order, which is also ascending order.
inline const std::vector<double>& small_float_ladder(SmallFloatFormat format) {
  auto build = [](SmallFloatFormat f) {
    const uint32_t infinity_bits = ((1u << f.exponent_bits) - 1) << f.fraction_bits;
    std::vector<double> ladder(infinity_bits + 1);
    for (uint32_t bits = 0; bits <= infinity_bits; ++bits) ladder[bits] = small_float_magnitude(bits, f);
    return ladder;
  };
  static const std::vector<double> f16_ladder = build(kF16Format);
  static const std::vector<double> bf16_ladder = build(kBF16Format);
  return format.fraction_bits == kF16Format.fraction_bits ? f16_ladder : bf16_ladder;
}

// Rounds a non-NaN value to the nearest F16 or BF16 bits, ties to the even
// pattern, by searching the ladder of magnitudes.
inline uint16_t nearest_small_float_bits(double value, SmallFloatFormat format) {
  const std::vector<double>& ladder = small_float_ladder(format);
  const uint32_t infinity_bits = static_cast<uint32_t>(ladder.size() - 1);
  const uint16_t sign = std::signbit(value) ? 0x8000 : 0;
  const double magnitude = std::fabs(value);
  if (magnitude >= ladder.back()) return static_cast<uint16_t>(sign | infinity_bits);

  const uint32_t below = static_cast<uint32_t>(std::upper_bound(ladder.begin(), ladder.end(), magnitude) -
                                               ladder.begin() - 1);
  // Exact differences (Sterbenz) once below >= 1, because the neighbours then
  // lie within a factor of two of magnitude. Below the smallest subnormal an
  // inexact difference still compares the right way.
  const double distance_below = magnitude - ladder[below];
  const double distance_above = ladder[below + 1] - magnitude;
  uint32_t nearest = below + 1;
  if (distance_below < distance_above || (distance_below == distance_above && below % 2 == 0)) nearest = below;
  return static_cast<uint16_t>(sign | nearest);
}

}  // namespace rtnq_test
