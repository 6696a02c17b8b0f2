// The RTN kernel: quantizes one weight matrix group by group.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

#include "rtnq/dtype.hpp"
#include "rtnq/error_metrics.hpp"
#include "rtnq/rtn_params.hpp"

namespace rtnq {

// A weight matrix as stored in the checkpoint. Linear weights are
// [out_features, in_features]; GPT-2 Conv1D weights are stored transposed,
// [in_features, out_features], and are quantized per output column.
struct WeightMatrix {
  const std::byte* data = nullptr;  // row-major, any alignment
  DType dtype = DType::F32;         // F16, BF16, F32 or F64
  int64_t out_features = 0;
  int64_t in_features = 0;
  bool conv1d = false;
};

// Buffers the caller allocates for one matrix.
struct QuantizedBuffers {
  // out*in codes of code_dtype_for_bits(wbits), in the stored layout of the weight.
  std::byte* codes = nullptr;
  // out*n_groups scales and zeros rounded to their stored dtypes, row-major.
  std::byte* stored_scales = nullptr;
  DType scale_dtype = DType::F16;
  std::byte* stored_zeros = nullptr;  // in zero_dtype_for_bits(wbits)
  // Optional (may be null): scales and zeros exactly as computed, before rounding.
  double* computed_scales = nullptr;
  double* computed_zeros = nullptr;
  // Optional: called once per block of rows as soon as their codes are
  // final, so the caller can write them while other rows are quantized.
  // Calls come from the worker threads and may run concurrently. For a
  // linear weight, rows [first_row, first_row + row_count) are one
  // contiguous range of codes; a Conv1D weight gets a single call for all
  // rows at the end. An exception stops further calls, and quantize_matrix
  // rethrows it once every thread has stopped.
  std::function<void(int64_t first_row, int64_t row_count)> rows_done;
};

struct KernelResult {
  // Weight error of the dequantized stored values (code - zero) * scale.
  ErrorStats weight_error;
  // NaN and infinite weights: how many, and the first in stored (row, column).
  int64_t nonfinite_count = 0;
  int64_t first_nonfinite_row = -1;
  int64_t first_nonfinite_column = -1;
  // Scales that became infinite when rounded to scale_dtype.
  int64_t overflowed_scale_count = 0;
};

// The SIMD instruction sets the kernel is built for. All of them give the
// same codes, scales and zeros, except that the fast MSE search may choose
// another shrink level where its error estimate is off by more than its
// tolerance (not seen in the tests). The float64 error sums may differ in
// their last bits, because the lanes add in another order.
enum class SimdLevel {
  automatic,  // the widest one this CPU supports
  sse2,       // every x86-64 CPU
  avx2,       // AVX2 with FMA
};

// The widest instruction set the kernel has that this CPU supports.
SimdLevel best_simd_level();
const char* simd_level_name(SimdLevel level);

// Quantizes the matrix with RTN (min/max range, optional MSE shrink search)
// and fills the buffers. threads <= 0 uses the OpenMP default. Codes, scales
// and zeros depend neither on the thread count nor on the SIMD level.
// Non-finite weights are counted, not quantized; their groups get code 0
// and the caller must reject the layer. Throws Error when simd names an
// instruction set this CPU lacks.
//
// The MSE search with float32 arithmetic (wbits <= 16), a group size that
// is a multiple of 8 and norm <= 4 evaluates each shrink level's error with
// a polynomial pow and float sums; its choice of level agrees with the exact
// search in at least 99.9% of groups (measured by tests/test_mse_agreement.cpp).
// Other cases use the exact search.
KernelResult quantize_matrix(const WeightMatrix& weight, const RtnParams& params,
                             const QuantizedBuffers& out, int threads = 0,
                             SimdLevel simd = SimdLevel::automatic);

// The dequantized value of one code, in the arithmetic of the kernel:
// float32 for wbits <= 16, float64 above.
template <class T>
inline T dequantize_code(T code, T zero, T scale) {
  return (code - zero) * scale;
}

}  // namespace rtnq
