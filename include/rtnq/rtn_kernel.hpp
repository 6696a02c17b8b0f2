// The RTN kernel: quantizes one weight matrix group by group.
#pragma once

#include <cstddef>
#include <cstdint>

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

// Quantizes the matrix with RTN (min/max range, optional MSE shrink search)
// and fills the buffers. threads <= 0 uses the OpenMP default. The result
// does not depend on the thread count. Non-finite weights are counted, not
// quantized; their groups get code 0 and the caller must reject the layer.
KernelResult quantize_matrix(const WeightMatrix& weight, const RtnParams& params,
                             const QuantizedBuffers& out, int threads = 0);

// The dequantized value of one code, in the arithmetic of the kernel:
// float32 for wbits <= 16, float64 above.
template <class T>
inline T dequantize_code(T code, T zero, T scale) {
  return (code - zero) * scale;
}

}  // namespace rtnq
