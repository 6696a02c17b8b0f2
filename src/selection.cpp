#include "rtnq/selection.hpp"

#include <algorithm>
#include <array>
#include <string_view>

#include "rtnq/error.hpp"

namespace rtnq {
namespace {

constexpr std::string_view kWeightSuffix = ".weight";

// Last components that name embedding tables in Hugging Face models.
constexpr std::array<std::string_view, 6> kEmbeddingNames = {
    "wte", "wpe", "shared", "word_embeddings", "position_embeddings", "token_type_embeddings"};

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_embedding_layer(const std::string& layer) {
  const size_t dot = layer.rfind('.');
  const std::string_view last = dot == std::string::npos ? std::string_view(layer)
                                                         : std::string_view(layer).substr(dot + 1);
  if (last.find("embed") != std::string_view::npos) return true;
  return std::find(kEmbeddingNames.begin(), kEmbeddingNames.end(), last) != kEmbeddingNames.end();
}

const std::string* first_keyword_in(const std::string& layer, const std::vector<std::string>& keywords) {
  for (const std::string& keyword : keywords) {
    if (layer.find(keyword) != std::string::npos) return &keyword;
  }
  return nullptr;
}

bool contains(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

void copy_because(TensorVerdict& verdict, SelectionRule rule, const std::string& why) {
  verdict.quantize = false;
  verdict.rule = rule;
  verdict.reason = "copy: " + why;
}

// Rules 1 to 5, which look at one tensor alone.
TensorVerdict judge_tensor(const TensorDescription& tensor, const SelectionRules& rules) {
  TensorVerdict verdict;
  verdict.tensor = tensor.name;
  verdict.layer = layer_name_of(tensor.name);
  const std::string& layer = verdict.layer;

  if (!ends_with(tensor.name, kWeightSuffix)) {
    copy_because(verdict, SelectionRule::not_weight_name, "not a linear weight (name does not end in .weight)");
    return verdict;
  }
  if (tensor.shape.size() != 2) {
    copy_because(verdict, SelectionRule::not_rank_2,
                 "not a linear weight (rank " + std::to_string(tensor.shape.size()) + ", not 2)");
    return verdict;
  }
  if (!is_quantizable_float(tensor.dtype)) {
    copy_because(verdict, SelectionRule::not_float_dtype,
                 "not a linear weight (dtype " + std::string(dtype_name(tensor.dtype)) + ")");
    return verdict;
  }
  if (is_embedding_layer(layer)) {
    copy_because(verdict, SelectionRule::embedding, "embedding table");
    return verdict;
  }
  if (rules.include_layer_names && !contains(*rules.include_layer_names, layer)) {
    copy_because(verdict, SelectionRule::include_name, "not in include_layer_names");
    return verdict;
  }
  if (rules.include_layer_keywords && !first_keyword_in(layer, *rules.include_layer_keywords)) {
    copy_because(verdict, SelectionRule::include_keyword, "matches no include_layer_keywords");
    return verdict;
  }
  if (contains(rules.exclude_layer_names, layer)) {
    copy_because(verdict, SelectionRule::exclude_name, "excluded by name `" + layer + "`");
    return verdict;
  }
  if (const std::string* keyword = first_keyword_in(layer, rules.exclude_layer_keywords)) {
    copy_because(verdict, SelectionRule::exclude_keyword, "excluded by keyword `" + *keyword + "`");
    return verdict;
  }
  if (tensor.shape[0] == 0 || tensor.shape[1] == 0) {
    copy_because(verdict, SelectionRule::zero_elements, "zero elements");
    return verdict;
  }
  verdict.quantize = true;
  verdict.rule = SelectionRule::linear_weight;
  verdict.conv1d = first_keyword_in(layer, rules.conv1d_keywords) != nullptr;
  verdict.reason = verdict.conv1d ? "quantize (Conv1D, per output column)" : "quantize";
  return verdict;
}

}  // namespace

std::string layer_name_of(const std::string& tensor_name) {
  if (ends_with(tensor_name, kWeightSuffix)) return tensor_name.substr(0, tensor_name.size() - kWeightSuffix.size());
  return tensor_name;
}

bool natural_less(const std::string& a, const std::string& b) {
  size_t i = 0;
  size_t j = 0;
  while (i < a.size() && j < b.size()) {
    const bool digit_a = a[i] >= '0' && a[i] <= '9';
    const bool digit_b = b[j] >= '0' && b[j] <= '9';
    if (digit_a && digit_b) {
      // Compare the digit runs as numbers: skip leading zeros, then longer is larger.
      size_t end_a = i;
      size_t end_b = j;
      while (end_a < a.size() && a[end_a] >= '0' && a[end_a] <= '9') ++end_a;
      while (end_b < b.size() && b[end_b] >= '0' && b[end_b] <= '9') ++end_b;
      size_t start_a = i;
      size_t start_b = j;
      while (start_a + 1 < end_a && a[start_a] == '0') ++start_a;
      while (start_b + 1 < end_b && b[start_b] == '0') ++start_b;
      const size_t length_a = end_a - start_a;
      const size_t length_b = end_b - start_b;
      if (length_a != length_b) return length_a < length_b;
      const int order = a.compare(start_a, length_a, b, start_b, length_b);
      if (order != 0) return order < 0;
      i = end_a;
      j = end_b;
      continue;
    }
    if (a[i] != b[j]) return static_cast<unsigned char>(a[i]) < static_cast<unsigned char>(b[j]);
    ++i;
    ++j;
  }
  if (a.size() - i != b.size() - j) return a.size() - i < b.size() - j;
  return a < b;  // equal as numbers ("01" and "1"): fall back to plain order
}

std::vector<std::string> default_conv1d_keywords(const std::string& model_type) {
  if (model_type == "gpt2") return {"c_attn", "c_proj", "c_fc", "q_attn"};
  return {};
}

std::vector<TensorVerdict> select_tensors(const std::vector<TensorDescription>& tensors,
                                          const SelectionRules& rules) {
  std::vector<TensorVerdict> verdicts;
  verdicts.reserve(tensors.size());
  for (const TensorDescription& tensor : tensors) verdicts.push_back(judge_tensor(tensor, rules));
  if (!rules.num_layers) return verdicts;

  // Rule 6: the first num_layers survivors in natural name order.
  std::vector<TensorVerdict*> survivors;
  for (TensorVerdict& verdict : verdicts) {
    if (verdict.quantize) survivors.push_back(&verdict);
  }
  const int64_t wanted = *rules.num_layers;
  if (wanted < 0 || static_cast<size_t>(wanted) > survivors.size()) {
    throw Error("num_layers is " + std::to_string(wanted) + " but only " + std::to_string(survivors.size()) +
                " layers pass the selection rules");
  }
  std::stable_sort(survivors.begin(), survivors.end(),
                   [](const TensorVerdict* a, const TensorVerdict* b) { return natural_less(a->layer, b->layer); });
  for (size_t i = static_cast<size_t>(wanted); i < survivors.size(); ++i) {
    copy_because(*survivors[i], SelectionRule::num_layers,
                 "beyond the first " + std::to_string(wanted) + " layers (num_layers)");
    survivors[i]->conv1d = false;
  }
  return verdicts;
}

}  // namespace rtnq
