// Layer selection: OneComp's rules for the tensors that are quantized.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "rtnq/dtype.hpp"

namespace rtnq {

// Rules match layer names: a tensor name without its trailing ".weight".
struct SelectionRules {
  std::optional<std::vector<std::string>> include_layer_names;     // exact; absent = all
  std::optional<std::vector<std::string>> include_layer_keywords;  // substring; absent = all
  std::vector<std::string> exclude_layer_names = {"lm_head"};
  std::vector<std::string> exclude_layer_keywords = {"per_layer_model_projection"};
  std::optional<int64_t> num_layers;  // keep the first N survivors in natural order
  // Layers stored as GPT-2 Conv1D, [in, out]; quantized per output column.
  std::vector<std::string> conv1d_keywords;
};

// The rule that decided a tensor's verdict.
enum class SelectionRule {
  linear_weight,      // quantized: passed every rule
  not_weight_name,    // name does not end in ".weight"
  not_rank_2,
  not_float_dtype,
  embedding,
  zero_elements,
  include_name,       // not among include_layer_names
  include_keyword,    // contains none of include_layer_keywords
  exclude_name,
  exclude_keyword,
  num_layers,         // beyond the first num_layers survivors
  indivisible,        // groupsize does not divide in_features (set by the planner)
};

struct TensorVerdict {
  std::string tensor;    // full tensor name
  std::string layer;     // tensor name without ".weight", or the tensor name
  bool quantize = false;
  bool conv1d = false;   // quantize as [in, out]
  SelectionRule rule = SelectionRule::not_weight_name;
  std::string reason;    // "quantize" or "copy: <why>"
};

// The facts about a tensor that select_tensors uses.
struct TensorDescription {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
};

// Returns the Conv1D keywords GPT-2 checkpoints need when config.json sets
// model_type "gpt2": c_attn, c_proj, c_fc and q_attn; else an empty list.
std::vector<std::string> default_conv1d_keywords(const std::string& model_type);

// Decides every tensor; verdicts are in the order of the input.
// Throws Error if num_layers requests more layers than survive the other rules.
std::vector<TensorVerdict> select_tensors(const std::vector<TensorDescription>& tensors,
                                          const SelectionRules& rules);

// Orders names as people count: "layers.2" before "layers.10".
bool natural_less(const std::string& a, const std::string& b);

// The layer name of a tensor name: without a trailing ".weight".
std::string layer_name_of(const std::string& tensor_name);

}  // namespace rtnq
