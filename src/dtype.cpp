#include "rtnq/dtype.hpp"

#include <array>
#include <utility>

namespace rtnq {
namespace {

struct DTypeEntry {
  DType dtype;
  std::string_view name;
  int bits;
};

constexpr std::array<DTypeEntry, 19> kDTypes = {{
    {DType::BOOL, "BOOL", 8},       {DType::U8, "U8", 8},
    {DType::I8, "I8", 8},           {DType::U16, "U16", 16},
    {DType::I16, "I16", 16},        {DType::U32, "U32", 32},
    {DType::I32, "I32", 32},        {DType::U64, "U64", 64},
    {DType::I64, "I64", 64},        {DType::F16, "F16", 16},
    {DType::BF16, "BF16", 16},      {DType::F32, "F32", 32},
    {DType::F64, "F64", 64},        {DType::F8_E4M3, "F8_E4M3", 8},
    {DType::F8_E5M2, "F8_E5M2", 8}, {DType::F8_E8M0, "F8_E8M0", 8},
    {DType::F4, "F4", 4},           {DType::F6_E2M3, "F6_E2M3", 6},
    {DType::F6_E3M2, "F6_E3M2", 6},
}};

const DTypeEntry& entry_of(DType dtype) {
  return kDTypes[static_cast<size_t>(dtype)];
}

}  // namespace

std::optional<DType> parse_dtype(std::string_view name) {
  for (const DTypeEntry& entry : kDTypes) {
    if (entry.name == name) return entry.dtype;
  }
  return std::nullopt;
}

std::string_view dtype_name(DType dtype) { return entry_of(dtype).name; }

int dtype_bits(DType dtype) { return entry_of(dtype).bits; }

bool is_quantizable_float(DType dtype) {
  return dtype == DType::F16 || dtype == DType::BF16 || dtype == DType::F32 ||
         dtype == DType::F64;
}

DType code_dtype_for_bits(int wbits) {
  if (wbits <= 8) return DType::U8;
  if (wbits <= 16) return DType::U16;
  if (wbits <= 32) return DType::U32;
  return DType::U64;
}

DType zero_dtype_for_bits(int wbits) {
  if (wbits <= 11) return DType::F16;
  if (wbits <= 24) return DType::F32;
  return DType::F64;
}

}  // namespace rtnq
