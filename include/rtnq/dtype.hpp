// Element types of the safetensors format.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace rtnq {

enum class DType {
  BOOL, U8, I8, U16, I16, U32, I32, U64, I64,
  F16, BF16, F32, F64,
  F8_E4M3, F8_E5M2, F8_E8M0, F4, F6_E2M3, F6_E3M2,
};

// Parses the dtype spelling of a safetensors header ("BF16"); nullopt if unknown.
std::optional<DType> parse_dtype(std::string_view name);

std::string_view dtype_name(DType dtype);

// Size of one element in bits (4 for F4, 6 for the F6 types, else 8 times the byte size).
int dtype_bits(DType dtype);

// True for F16, BF16, F32 and F64: the dtypes rtnq can decode and quantize.
bool is_quantizable_float(DType dtype);

// Unsigned code dtype for wbits: U8 up to 8 bits, U16 up to 16, U32 up to 32, else U64.
DType code_dtype_for_bits(int wbits);

// Zero-point dtype that represents every level exactly: F16 up to 11 bits, F32 up to 24, else F64.
DType zero_dtype_for_bits(int wbits);

}  // namespace rtnq
