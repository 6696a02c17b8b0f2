#include "rtnq/half.hpp"

#include <cmath>

namespace rtnq {
namespace {

// Rounds |value| to a binary float with exponent_bits and mantissa_bits
// (IEEE layout, bias 2^(exponent_bits-1) - 1) and returns its bits with the sign.
uint16_t round_to_small_float(double value, int exponent_bits, int mantissa_bits) {
  const uint16_t sign = std::signbit(value) ? uint16_t(1u << (exponent_bits + mantissa_bits)) : 0;
  const uint16_t exponent_all_ones = uint16_t(((1u << exponent_bits) - 1) << mantissa_bits);
  if (std::isnan(value)) return sign | exponent_all_ones | uint16_t(1u << (mantissa_bits - 1));

  const double magnitude = std::fabs(value);
  const int bias = (1 << (exponent_bits - 1)) - 1;
  const int min_normal_exponent = 1 - bias;
  const int max_exponent = bias;
  if (std::isinf(magnitude)) return sign | exponent_all_ones;

  int exponent;  // magnitude = fraction * 2^exponent, fraction in [0.5, 1)
  std::frexp(magnitude, &exponent);
  exponent -= 1;  // now magnitude is in [2^exponent, 2^(exponent+1))

  if (magnitude == 0 || exponent < min_normal_exponent) {
    // Subnormal: an integer multiple of 2^(min_normal_exponent - mantissa_bits).
    // Scaling by a power of two is exact, so nearbyint rounds the true value.
    double units = std::nearbyint(std::ldexp(magnitude, mantissa_bits - min_normal_exponent));
    return sign | uint16_t(units);  // units == 2^mantissa_bits is the smallest normal
  }

  double mantissa = std::nearbyint(std::ldexp(magnitude, mantissa_bits - exponent));
  if (mantissa == std::ldexp(1.0, mantissa_bits + 1)) {
    mantissa /= 2;
    exponent += 1;
  }
  if (exponent > max_exponent) return sign | exponent_all_ones;
  const uint32_t biased = uint32_t(exponent + bias);
  const uint32_t fraction = uint32_t(mantissa) - (1u << mantissa_bits);
  return sign | uint16_t((biased << mantissa_bits) | fraction);
}

}  // namespace

float f16_to_float(uint16_t bits) {
  const uint32_t sign = uint32_t(bits >> 15) << 31;
  const uint32_t exponent = (bits >> 10) & 0x1f;
  const uint32_t fraction = bits & 0x3ff;
  uint32_t wide;
  if (exponent == 0x1f) {
    wide = sign | 0x7f800000u | (fraction << 13);
  } else if (exponent != 0) {
    wide = sign | ((exponent + 112) << 23) | (fraction << 13);
  } else {
    // Zero or subnormal: fraction * 2^-24 is exact in float.
    float magnitude = std::ldexp(float(fraction), -24);
    return sign ? -magnitude : magnitude;
  }
  float value;
  std::memcpy(&value, &wide, sizeof value);
  return value;
}

uint16_t double_to_f16(double value) { return round_to_small_float(value, 5, 10); }
uint16_t double_to_bf16(double value) { return round_to_small_float(value, 8, 7); }

}  // namespace rtnq
