// Exact decoding of F16 and BF16, and rounding to them (nearest, ties to even).
#pragma once

#include <cstdint>
#include <cstring>

namespace rtnq {

inline float bf16_to_float(uint16_t bits) {
  uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof value);
  return value;
}

float f16_to_float(uint16_t bits);

// Rounds to the nearest F16 or BF16, ties to even. Values past the largest
// finite one round to infinity as IEEE 754 specifies; NaN stays NaN.
// The double overloads round once, so no double rounding happens through float.
uint16_t double_to_f16(double value);
uint16_t double_to_bf16(double value);
inline uint16_t float_to_f16(float value) { return double_to_f16(value); }
inline uint16_t float_to_bf16(float value) { return double_to_bf16(value); }

}  // namespace rtnq
