#include "rtnq/output_error.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "rtnq/error.hpp"

namespace rtnq {
namespace {

// Sum of a[i] * b[i] in float64, in a fixed order: four interleaved partial
// sums, then the tail, so the result is the same on every run.
double dot(const double* a, const double* b, int64_t n) {
  double partial[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    partial[0] += a[i] * b[i];
    partial[1] += a[i + 1] * b[i + 1];
    partial[2] += a[i + 2] * b[i + 2];
    partial[3] += a[i + 3] * b[i + 3];
  }
  double sum = (partial[0] + partial[1]) + (partial[2] + partial[3]);
  for (; i < n; ++i) sum += a[i] * b[i];  // tail
  return sum;
}

bool is_float_dtype(DType dtype) {
  return dtype == DType::F16 || dtype == DType::BF16 || dtype == DType::F32 || dtype == DType::F64;
}

// The weight's stored shape, marked when it is a Conv1D one, stored [in, out].
std::string weight_shape_text(const LayerPlan& layer) {
  return format_shape(layer.source->info->shape) + (layer.conv1d ? " (Conv1D, [in, out])" : "");
}

// The index of element `flat` of a row-major tensor of the given shape, as "[i, j, k]".
std::string element_index_text(const std::vector<int64_t>& shape, uint64_t flat) {
  std::vector<int64_t> index(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    index[d] = int64_t(flat % uint64_t(shape[d]));
    flat /= uint64_t(shape[d]);
  }
  return format_shape(index);
}

// Rejects NaN and Inf in a tensor of input rows, since they make the output
// error NaN or Inf, which the report stores as null.
void check_finite(const std::string& path, const TensorInfo& tensor, const std::byte* data) {
  uint64_t bad_count = 0;
  uint64_t first_bad = 0;
  const uint64_t count = tensor.element_count();
  for (uint64_t i = 0; i < count; ++i) {
    if (std::isfinite(read_float_element(data, tensor.dtype, int64_t(i)))) continue;
    if (bad_count == 0) first_bad = i;
    bad_count += 1;
  }
  if (bad_count == 0) return;
  const std::string values = bad_count == 1 ? " NaN or Inf value" : " NaN or Inf values";
  throw Error(path + ": activations " + tensor.name + " contain " + std::to_string(bad_count) + values +
              ", the first at index " + element_index_text(tensor.shape, first_bad) +
              "; the output error needs finite inputs");
}

}  // namespace

ErrorStats compute_output_error(const WeightMatrix& weight, const QuantizedMatrix& quantized, const std::byte* x,
                                DType x_dtype, int64_t rows, int threads) {
  const int64_t out_features = weight.out_features;
  const int64_t in_features = weight.in_features;
  const int element_bytes = dtype_bits(weight.dtype) / 8;

  // NOTE: X is decoded whole, so this needs rows * in_features * 8 bytes.
  std::vector<double> inputs(static_cast<size_t>(rows * in_features));
  for (int64_t i = 0; i < rows * in_features; ++i) inputs[size_t(i)] = read_float_element(x, x_dtype, i);

  std::vector<ErrorStats> per_channel(static_cast<size_t>(out_features));
  const int thread_count = threads > 0 ? threads : omp_get_max_threads();
#pragma omp parallel num_threads(thread_count)
  {
    std::vector<double> original(static_cast<size_t>(in_features));
    std::vector<double> difference(static_cast<size_t>(in_features));
#pragma omp for schedule(static)
    for (int64_t o = 0; o < out_features; ++o) {
      // Row o of W, and of W - W^; Conv1D weights are stored [in, out].
      const int64_t first = weight.conv1d ? o : o * in_features;
      const int64_t stride = weight.conv1d ? out_features : 1;
      dequantize_row(quantized, o, difference.data());
      for (int64_t i = 0; i < in_features; ++i) {
        original[size_t(i)] = read_float_element(weight.data + first * element_bytes, weight.dtype, i * stride);
        difference[size_t(i)] = original[size_t(i)] - difference[size_t(i)];
      }

      ErrorStats& stats = per_channel[size_t(o)];
      for (int64_t r = 0; r < rows; ++r) {
        const double* row = inputs.data() + r * in_features;
        const double error = dot(difference.data(), row, in_features);
        const double reference = dot(original.data(), row, in_features);
        stats.squared_error += error * error;
        stats.squared_reference += reference * reference;
      }
      stats.count = static_cast<uint64_t>(rows);
    }
  }

  // Merged in channel order, so the sums do not depend on the thread count.
  ErrorStats total;
  for (const ErrorStats& stats : per_channel) total.merge(stats);
  return total;
}

ActivationSet::ActivationSet(const std::string& path) : file_(path) {}

const TensorInfo* ActivationSet::find(const std::string& layer) const {
  for (const TensorInfo& tensor : file_.tensors()) {
    if (tensor.name == layer) return &tensor;
  }
  return nullptr;
}

void ActivationSet::check_layers(const std::vector<LayerPlan>& layers) const {
  size_t matched = 0;
  for (const LayerPlan& layer : layers) {
    const TensorInfo* tensor = find(layer.layer);
    if (!tensor) continue;
    matched += 1;
    if (!is_float_dtype(tensor->dtype)) {
      throw Error(path() + ": activations " + tensor->name + " have dtype " + std::string(dtype_name(tensor->dtype)) +
                  ", expected F16, BF16, F32 or F64");
    }
    const size_t rank = tensor->shape.size();
    if ((rank != 2 && rank != 3) || tensor->shape.back() != layer.in_features) {
      throw Error(path() + ": activations " + tensor->name + " have shape " + format_shape(tensor->shape) +
                  ", which does not fit the weight " + weight_shape_text(layer) + "; expected [rows, " +
                  std::to_string(layer.in_features) + "] or [batch, seq, " + std::to_string(layer.in_features) + "]");
    }
    if (tensor->element_count() == 0) {
      throw Error(path() + ": activations " + tensor->name + " have shape " + format_shape(tensor->shape) +
                  ", which has no rows; the output error needs at least one row");
    }
    check_finite(path(), *tensor, file_.tensor_data(*tensor));
  }
  if (matched == 0 && !layers.empty()) {
    throw Error(path() + ": no tensor is named after one of the " + std::to_string(layers.size()) +
                " quantized layers (such as " + layers.front().layer + "), so no output error can be measured");
  }
}

std::optional<ErrorStats> ActivationSet::output_error(const LayerPlan& layer, const FormatOptions& options,
                                                      const std::byte* codes, const std::byte* scales,
                                                      const std::byte* zeros, int threads) const {
  const TensorInfo* tensor = find(layer.layer);
  if (!tensor) return std::nullopt;
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < tensor->shape.size(); ++d) rows *= tensor->shape[d];

  const TensorInfo& info = *layer.source->info;
  WeightMatrix weight;
  weight.data = layer.source->file->tensor_data(info);
  weight.dtype = info.dtype;
  weight.out_features = layer.out_features;
  weight.in_features = layer.in_features;
  weight.conv1d = layer.conv1d;

  QuantizedMatrix quantized;
  quantized.codes = codes;
  quantized.code_dtype = code_dtype_for_bits(options.params.wbits);
  quantized.scales = scales;
  quantized.scale_dtype = options.scale_dtype;
  quantized.zeros = zeros;
  quantized.zero_dtype = zero_dtype_for_bits(options.params.wbits);
  quantized.out_features = layer.out_features;
  quantized.in_features = layer.in_features;
  quantized.n_groups = layer.n_groups;
  quantized.conv1d = layer.conv1d;
  quantized.wbits = options.params.wbits;
  return compute_output_error(weight, quantized, file_.tensor_data(*tensor), tensor->dtype, rows, threads);
}

}  // namespace rtnq
