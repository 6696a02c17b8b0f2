// Declarations shared by the parts of the RTN kernel: the generic driver in
// rtn_kernel.cpp and the per-instruction-set bodies rtn_kernel_<isa>.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>

#include "rtnq/rtn_kernel.hpp"

namespace rtnq::kernel_detail {

// The contribution of one output row to the KernelResult.
struct RowOutcome {
  ErrorStats error;
  int64_t nonfinite_count = 0;
  int64_t first_nonfinite_column = -1;  // within the row's input features
  int64_t overflowed_scales = 0;
};

// Rounds value to dtype (F16, BF16, F32 or F64), writes it at element index
// of dst and returns the stored value. Negative zero is stored as +0.
double store_rounded(double value, DType dtype, std::byte* dst, int64_t index);

// Calls QuantizedBuffers::rows_done from the worker threads. It keeps the
// first exception and makes later calls do nothing. Its members are defined
// out of line in rtn_kernel.cpp, so the SIMD bodies call no inline copy of
// std::function compiled for another instruction set.
class RowsDoneNotifier {
 public:
  explicit RowsDoneNotifier(const QuantizedBuffers& out) : out_(out) {}
  bool active() const;
  void notify(int64_t first_row, int64_t row_count);
  void rethrow_failure() const;

 private:
  const QuantizedBuffers& out_;
  std::mutex mutex_;
  std::exception_ptr failure_;
};

// Quantizes every output row of the matrix into out and fills
// outcomes[0 .. out_features - 1]. One function per instruction set; each
// is compiled with that set's compiler flags.
void quantize_rows_sse2(const WeightMatrix& weight, const RtnParams& params, const QuantizedBuffers& out,
                        int threads, RowOutcome* outcomes, RowsDoneNotifier& notifier);
void quantize_rows_avx2(const WeightMatrix& weight, const RtnParams& params, const QuantizedBuffers& out,
                        int threads, RowOutcome* outcomes, RowsDoneNotifier& notifier);

}  // namespace rtnq::kernel_detail
