// The RTN kernel body for AVX2 with FMA. CMakeLists.txt compiles this file
// alone with -mavx2 -mfma; rtn_kernel.cpp calls it only when the CPU
// supports both.
#define RTNQ_KERNEL_ARCH xsimd::fma3<xsimd::avx2>
#include "rtn_kernel_simd.hpp"

namespace rtnq::kernel_detail {

void quantize_rows_avx2(const WeightMatrix& weight, const RtnParams& params, const QuantizedBuffers& out,
                        int threads, RowOutcome* outcomes, RowsDoneNotifier& notifier) {
  quantize_rows(weight, params, out, threads, outcomes, notifier);
}

}  // namespace rtnq::kernel_detail
