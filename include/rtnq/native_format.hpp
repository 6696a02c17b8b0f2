// The plan of a quantization run: every verdict, every layer's shapes, and
// the layout of every output file, all known before any data is read.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "rtnq/checkpoint.hpp"
#include "rtnq/dtype.hpp"
#include "rtnq/rtn_params.hpp"
#include "rtnq/safetensors.hpp"
#include "rtnq/selection.hpp"

namespace rtnq {

// Settings that shape the output, beside the RTN parameters.
struct FormatOptions {
  RtnParams params;
  SelectionRules rules;
  bool conv1d_keywords_given = false;  // else taken from config.json's model_type
  bool skip_indivisible = false;
  DType scale_dtype = DType::F16;
};

struct LayerPlan {
  std::string layer;     // "model.layers.0.mlp.down_proj"
  const CheckpointTensor* source = nullptr;
  bool conv1d = false;
  int64_t out_features = 0;
  int64_t in_features = 0;
  int64_t n_groups = 0;
};

// The source of one output tensor's bytes.
enum class TensorSource { copy, codes, scales, zeros };

struct OutputTensorPlan {
  TensorSource source = TensorSource::copy;
  const CheckpointTensor* input = nullptr;  // for copy
  size_t layer_index = 0;                   // into QuantizationPlan::layers, for the others
};

struct OutputFilePlan {
  std::string file_name;  // file name of the output file (a shard name for folders)
  const SafetensorsFile* input_file = nullptr;
  SafetensorsLayout layout;
  std::vector<OutputTensorPlan> sources;  // parallel to layout.tensors
};

struct QuantizationPlan {
  std::vector<TensorVerdict> verdicts;  // every input tensor, in input order
  std::vector<const CheckpointTensor*> verdict_tensors;  // parallel to verdicts
  std::vector<LayerPlan> layers;        // quantized layers, natural name order
  std::vector<OutputFilePlan> files;
  std::string quantization_config;      // JSON text stored in __metadata__
  uint64_t input_bytes = 0;
  uint64_t output_bytes = 0;
  uint64_t quantized_parameters = 0;
  uint64_t total_parameters = 0;
};

// Plans the run. Throws Error if a layer's in_features is not a multiple of
// groupsize (naming every such layer) unless options.skip_indivisible is set.
QuantizationPlan plan_quantization(const Checkpoint& checkpoint, const FormatOptions& options);

// The quantization_config JSON object stored in the output's __metadata__.
// conv1d_layers lists the layers quantized per output column, so that a
// reader can tell the layout of square Conv1D weights.
std::string quantization_config_json(const FormatOptions& options, const std::vector<std::string>& conv1d_layers);

// The Conv1D keywords in effect: the given ones, or those that config.json's
// model_type implies (see default_conv1d_keywords).
std::vector<std::string> effective_conv1d_keywords(const Checkpoint& checkpoint, const FormatOptions& options);

}  // namespace rtnq
