// The RTN kernel body for SSE2, the baseline of every x86-64 CPU.
#define RTNQ_KERNEL_ARCH xsimd::sse2
#include "rtn_kernel_simd.hpp"

namespace rtnq::kernel_detail {

void quantize_rows_sse2(const WeightMatrix& weight, const RtnParams& params, const QuantizedBuffers& out,
                        int threads, RowOutcome* outcomes, RowsDoneNotifier& notifier) {
  quantize_rows(weight, params, out, threads, outcomes, notifier);
}

}  // namespace rtnq::kernel_detail
