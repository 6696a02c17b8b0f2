// The output error of quantized layers, measured on given input rows X:
// ||W X^T - W^ X^T||^2 against ||W X^T||^2, as OneComp's RTNResult reports it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "rtnq/dequantize.hpp"
#include "rtnq/error_metrics.hpp"
#include "rtnq/native_format.hpp"
#include "rtnq/rtn_kernel.hpp"
#include "rtnq/safetensors.hpp"

namespace rtnq {

// Sums, in float64, over the output channels o and the rows r of X:
// squared_error ((W - W^) X^T)[o, r]^2, squared_reference (W X^T)[o, r]^2,
// and count = out_features * rows. W^ comes from the stored codes, scale and
// zero through dequantize_row. x contains rows * in_features values of
// x_dtype (F16, BF16, F32 or F64), row-major. The result does not depend on
// the thread count.
ErrorStats compute_output_error(const WeightMatrix& weight, const QuantizedMatrix& quantized, const std::byte* x,
                                DType x_dtype, int64_t rows, int threads = 0);

// A safetensors file of input rows: the tensor named after a layer
// ("model.layers.0.mlp.down_proj") contains its X, [rows, in] or [batch, seq, in].
class ActivationSet {
 public:
  // Opens and validates the file; throws Error naming it.
  explicit ActivationSet(const std::string& path);

  // Checks the tensors named after the layers: float dtype, rank 2 or 3,
  // last dimension in_features, at least one row and only finite values
  // (which reads every value once). Throws Error naming the file, the tensor
  // and its shape, and the weight's shape or the first non-finite index. It
  // also throws if no layer has activations, since then the file was
  // probably meant for another model.
  void check_layers(const std::vector<LayerPlan>& layers) const;

  // The output error of a layer from its stored codes, scales and zeros
  // (as written to the output file), or nullopt if the file has no rows for it.
  std::optional<ErrorStats> output_error(const LayerPlan& layer, const FormatOptions& options, const std::byte* codes,
                                         const std::byte* scales, const std::byte* zeros, int threads) const;

  const std::string& path() const { return file_.path(); }

 private:
  const TensorInfo* find(const std::string& layer) const;

  SafetensorsFile file_;
};

}  // namespace rtnq
