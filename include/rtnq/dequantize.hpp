// Dequantization: turns a checkpoint written by rtnq quantize back into an
// ordinary checkpoint of float weights, (code - zero) * scale.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "rtnq/checkpoint.hpp"
#include "rtnq/dtype.hpp"
#include "rtnq/rtn_params.hpp"
#include "rtnq/safetensors.hpp"

namespace rtnq {

// The quantization_config JSON that rtnq quantize stores in the
// __metadata__ of every output file.
struct StoredQuantizationConfig {
  RtnParams params;
  DType scale_dtype = DType::F16;
  std::vector<std::string> conv1d_layers;  // layers whose codes are stored [in, out]
  std::string producer;                    // "rtnq 0.1.0"
  std::string text;                        // the JSON text as stored
};

// Reads the quantization_config of file's metadata. Throws Error naming the
// file if it is missing, is not JSON, was not written by rtnq (quant_method
// "rtn", format "native", producer "rtnq ..."), or contains invalid parameters.
StoredQuantizationConfig read_quantization_config(const SafetensorsFile& file);

// Element `index` of an F16, BF16, F32 or F64 array, decoded exactly.
double read_float_element(const std::byte* base, DType dtype, int64_t index);

// One quantized layer as stored: codes in the stored layout of the original
// weight ([out, in], or [in, out] for Conv1D), scale and zero [out, n_groups].
struct QuantizedMatrix {
  const std::byte* codes = nullptr;
  DType code_dtype = DType::U8;
  const std::byte* scales = nullptr;
  DType scale_dtype = DType::F16;
  const std::byte* zeros = nullptr;
  DType zero_dtype = DType::F16;
  int64_t out_features = 0;
  int64_t in_features = 0;
  int64_t n_groups = 1;
  bool conv1d = false;
  int wbits = 4;
};

// Writes the in_features dequantized values (code - zero) * scale of output
// channel `row` into values. The arithmetic is that of the kernel (float32
// for wbits <= 16, else float64), so each value equals the one the kernel
// measured its weight error with; widening it to double is exact.
void dequantize_row(const QuantizedMatrix& matrix, int64_t row, double* values);

struct DequantizedLayerPlan {
  std::string layer;
  const SafetensorsFile* file = nullptr;
  const TensorInfo* codes = nullptr;
  const TensorInfo* scales = nullptr;
  const TensorInfo* zeros = nullptr;
  bool conv1d = false;
  int64_t out_features = 0;
  int64_t in_features = 0;
  int64_t n_groups = 1;
};

struct DequantizedFilePlan {
  std::string file_name;
  const SafetensorsFile* input_file = nullptr;
  SafetensorsLayout layout;
  // Parallel to layout.tensors: the input tensor copied through, or null
  // for a rebuilt weight, whose layer is then in layer_indices.
  std::vector<const TensorInfo*> copied;
  std::vector<size_t> layer_indices;
};

struct DequantizationPlan {
  StoredQuantizationConfig config;
  DType dtype = DType::BF16;                  // of the rebuilt weights
  std::vector<DequantizedLayerPlan> layers;   // natural name order
  std::vector<DequantizedFilePlan> files;     // one per input file, same names
  uint64_t output_bytes = 0;
};

// Plans the output: for each layer L with L.quantized_weight, L.scale and
// L.zero, one tensor L.weight of dtype and of the codes' shape; every other
// tensor is copied. Throws Error naming the file and tensor if the checkpoint
// was not written by rtnq or a layer's tensors disagree with its config.
DequantizationPlan plan_dequantization(const Checkpoint& checkpoint, DType dtype);

struct DequantizeOptions {
  std::string output;
  int threads = 0;  // <= 0: the OpenMP default
  bool overwrite = false;
  // Called before each tensor is written; it may throw to stop the run, and
  // the partial output is then removed.
  std::function<void()> before_tensor;
};

// Writes the planned checkpoint: a file for a file input, else a folder with
// the same shard names, the other files copied, config.json without
// quantization_config and with torch_dtype (if present) naming the rebuilt
// dtype, and a rewritten index. Throws Error naming the layer if a code
// exceeds 2^wbits - 1. The same safety rules as for
// quantize apply: nothing appears under the output name unless all succeeded.
void dequantize_checkpoint(const Checkpoint& checkpoint, const DequantizationPlan& plan,
                           const DequantizeOptions& options);

}  // namespace rtnq
