// Layer selection: which tensors are quantized, and the rule behind each verdict.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "rtnq/checkpoint.hpp"
#include "rtnq/error.hpp"
#include "rtnq/selection.hpp"

using rtnq::DType;
using rtnq::SelectionRule;
using rtnq::SelectionRules;
using rtnq::TensorDescription;
using rtnq::TensorVerdict;

namespace {

TensorDescription linear(const std::string& name, int64_t out = 8, int64_t in = 16) {
  return {name, DType::BF16, {out, in}};
}

// A small Llama-like model with one of each kind of tensor.
std::vector<TensorDescription> llama_tensors() {
  return {
      linear("model.embed_tokens.weight"),
      linear("model.layers.0.self_attn.q_proj.weight"),
      linear("model.layers.0.mlp.down_proj.weight"),
      {"model.layers.0.mlp.down_proj.bias", DType::BF16, {8}},
      {"model.layers.0.input_layernorm.weight", DType::BF16, {16}},
      linear("model.layers.1.self_attn.q_proj.weight"),
      linear("model.layers.1.mlp.down_proj.weight"),
      linear("model.per_layer_model_projection.weight"),
      linear("lm_head.weight"),
  };
}

const TensorVerdict& verdict_of(const std::vector<TensorVerdict>& verdicts, const std::string& tensor) {
  auto found = std::find_if(verdicts.begin(), verdicts.end(),
                            [&](const TensorVerdict& verdict) { return verdict.tensor == tensor; });
  if (found == verdicts.end()) throw std::runtime_error("no verdict for " + tensor);
  return *found;
}

// Layer names of the quantized tensors, in input order.
std::vector<std::string> quantized_layers(const std::vector<TensorVerdict>& verdicts) {
  std::vector<std::string> layers;
  for (const TensorVerdict& verdict : verdicts) {
    if (verdict.quantize) layers.push_back(verdict.layer);
  }
  return layers;
}

struct ExpectedVerdict {
  TensorDescription tensor;
  bool quantize;
  SelectionRule rule;
  const char* reason;
};

}  // namespace

TEST_CASE("default rules decide each kind") {
  const std::vector<ExpectedVerdict> table = {
      // A plain linear weight of each float dtype is quantized.
      {{"a.q_proj.weight", DType::BF16, {8, 16}}, true, SelectionRule::linear_weight, "quantize"},
      {{"a.k_proj.weight", DType::F16, {8, 16}}, true, SelectionRule::linear_weight, "quantize"},
      {{"a.v_proj.weight", DType::F32, {8, 16}}, true, SelectionRule::linear_weight, "quantize"},
      {{"a.o_proj.weight", DType::F64, {8, 16}}, true, SelectionRule::linear_weight, "quantize"},
      // Default exclusions.
      {{"lm_head.weight", DType::BF16, {8, 16}}, false, SelectionRule::exclude_name, "copy: excluded by name `lm_head`"},
      {{"model.per_layer_model_projection.weight", DType::BF16, {8, 16}}, false, SelectionRule::exclude_keyword,
       "copy: excluded by keyword `per_layer_model_projection`"},
      // Embedding tables by last name component.
      {{"model.embed_tokens.weight", DType::BF16, {8, 16}}, false, SelectionRule::embedding, "copy: embedding table"},
      {{"transformer.wte.weight", DType::F32, {8, 16}}, false, SelectionRule::embedding, "copy: embedding table"},
      {{"transformer.wpe.weight", DType::F32, {8, 16}}, false, SelectionRule::embedding, "copy: embedding table"},
      {{"shared.weight", DType::F32, {8, 16}}, false, SelectionRule::embedding, "copy: embedding table"},
      {{"bert.embeddings.word_embeddings.weight", DType::F32, {8, 16}}, false, SelectionRule::embedding,
       "copy: embedding table"},
      {{"bert.embeddings.position_embeddings.weight", DType::F32, {8, 16}}, false, SelectionRule::embedding,
       "copy: embedding table"},
      {{"bert.embeddings.token_type_embeddings.weight", DType::F32, {8, 16}}, false, SelectionRule::embedding,
       "copy: embedding table"},
      // "embed" counts only in the last component: this is a linear layer.
      {{"embedder.layers.0.proj.weight", DType::F32, {8, 16}}, true, SelectionRule::linear_weight, "quantize"},
      // Not linear weights: biases, norms, scalars, other ranks, other dtypes.
      {{"a.q_proj.bias", DType::BF16, {8}}, false, SelectionRule::not_weight_name,
       "copy: not a linear weight (name does not end in .weight)"},
      {{"model.norm.weight", DType::BF16, {16}}, false, SelectionRule::not_rank_2,
       "copy: not a linear weight (rank 1, not 2)"},
      {{"scalar.weight", DType::F32, {}}, false, SelectionRule::not_rank_2, "copy: not a linear weight (rank 0, not 2)"},
      {{"conv.weight", DType::F32, {8, 4, 3, 3}}, false, SelectionRule::not_rank_2,
       "copy: not a linear weight (rank 4, not 2)"},
      {{"a.gate.weight", DType::I32, {8, 16}}, false, SelectionRule::not_float_dtype,
       "copy: not a linear weight (dtype I32)"},
      {{"a.up.weight", DType::U8, {8, 16}}, false, SelectionRule::not_float_dtype,
       "copy: not a linear weight (dtype U8)"},
      {{"a.fp8.weight", DType::F8_E4M3, {8, 16}}, false, SelectionRule::not_float_dtype,
       "copy: not a linear weight (dtype F8_E4M3)"},
      {{"a.mask.weight", DType::BOOL, {8, 16}}, false, SelectionRule::not_float_dtype,
       "copy: not a linear weight (dtype BOOL)"},
      // A name that only contains ".weight" is not a weight.
      {{"a.weight.scale", DType::F32, {8, 16}}, false, SelectionRule::not_weight_name,
       "copy: not a linear weight (name does not end in .weight)"},
  };

  std::vector<TensorDescription> tensors;
  for (const ExpectedVerdict& row : table) tensors.push_back(row.tensor);
  const std::vector<TensorVerdict> verdicts = rtnq::select_tensors(tensors, SelectionRules{});
  REQUIRE(verdicts.size() == table.size());
  for (size_t i = 0; i < table.size(); ++i) {
    CAPTURE(table[i].tensor.name);
    CHECK(verdicts[i].tensor == table[i].tensor.name);
    CHECK(verdicts[i].quantize == table[i].quantize);
    CHECK(verdicts[i].rule == table[i].rule);
    CHECK(verdicts[i].reason == table[i].reason);
    CHECK_FALSE(verdicts[i].conv1d);
  }
}

TEST_CASE("layer name drops .weight") {
  CHECK(rtnq::layer_name_of("model.layers.0.mlp.down_proj.weight") == "model.layers.0.mlp.down_proj");
  CHECK(rtnq::layer_name_of("model.layers.0.mlp.down_proj.bias") == "model.layers.0.mlp.down_proj.bias");
  CHECK(rtnq::layer_name_of("weight") == "weight");
  CHECK(rtnq::layer_name_of(".weight") == "");
}

TEST_CASE("include names alone") {
  SelectionRules rules;
  rules.include_layer_names = {{"model.layers.1.mlp.down_proj", "model.layers.0.self_attn.q_proj", "absent"}};
  const auto verdicts = rtnq::select_tensors(llama_tensors(), rules);
  CHECK(quantized_layers(verdicts) ==
        std::vector<std::string>{"model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"});
  const TensorVerdict& other = verdict_of(verdicts, "model.layers.0.mlp.down_proj.weight");
  CHECK(other.rule == SelectionRule::include_name);
  CHECK(other.reason == "copy: not in include_layer_names");
}

TEST_CASE("include names match exactly") {
  // "model.layers.1" is only a prefix of the layer names model.layers.1.*.
  SelectionRules rules;
  rules.include_layer_names = {{"model.layers.1"}};
  CHECK(quantized_layers(rtnq::select_tensors(llama_tensors(), rules)).empty());
}

TEST_CASE("include keywords alone") {
  SelectionRules rules;
  rules.include_layer_keywords = {{"down_proj"}};
  const auto verdicts = rtnq::select_tensors(llama_tensors(), rules);
  CHECK(quantized_layers(verdicts) ==
        std::vector<std::string>{"model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"});
  const TensorVerdict& other = verdict_of(verdicts, "model.layers.1.self_attn.q_proj.weight");
  CHECK(other.rule == SelectionRule::include_keyword);
  CHECK(other.reason == "copy: matches no include_layer_keywords");
}

TEST_CASE("exclude names alone") {
  // Replacing the default list: lm_head is quantized again.
  SelectionRules rules;
  rules.exclude_layer_names = {"model.layers.0.mlp.down_proj"};
  const auto verdicts = rtnq::select_tensors(llama_tensors(), rules);
  const TensorVerdict& excluded = verdict_of(verdicts, "model.layers.0.mlp.down_proj.weight");
  CHECK_FALSE(excluded.quantize);
  CHECK(excluded.rule == SelectionRule::exclude_name);
  CHECK(excluded.reason == "copy: excluded by name `model.layers.0.mlp.down_proj`");
  CHECK(verdict_of(verdicts, "lm_head.weight").quantize);
  CHECK(verdict_of(verdicts, "model.layers.1.mlp.down_proj.weight").quantize);
}

TEST_CASE("exclude keywords alone") {
  // Replacing the default list: per_layer_model_projection is quantized again.
  SelectionRules rules;
  rules.exclude_layer_keywords = {"self_attn"};
  const auto verdicts = rtnq::select_tensors(llama_tensors(), rules);
  const TensorVerdict& excluded = verdict_of(verdicts, "model.layers.1.self_attn.q_proj.weight");
  CHECK_FALSE(excluded.quantize);
  CHECK(excluded.rule == SelectionRule::exclude_keyword);
  CHECK(excluded.reason == "copy: excluded by keyword `self_attn`");
  CHECK(verdict_of(verdicts, "model.per_layer_model_projection.weight").quantize);
  CHECK_FALSE(verdict_of(verdicts, "lm_head.weight").quantize);
}

TEST_CASE("cleared defaults exclude nothing") {
  SelectionRules rules;
  rules.exclude_layer_names = {};
  rules.exclude_layer_keywords = {};
  const auto verdicts = rtnq::select_tensors(llama_tensors(), rules);
  CHECK(quantized_layers(verdicts) == std::vector<std::string>{
                                          "model.layers.0.self_attn.q_proj",
                                          "model.layers.0.mlp.down_proj",
                                          "model.layers.1.self_attn.q_proj",
                                          "model.layers.1.mlp.down_proj",
                                          "model.per_layer_model_projection",
                                          "lm_head",
                                      });
}

TEST_CASE("empty include list selects nothing") {
  SelectionRules rules;
  rules.include_layer_keywords = std::vector<std::string>{};
  CHECK(quantized_layers(rtnq::select_tensors(llama_tensors(), rules)).empty());
}

TEST_CASE("include rule checked before exclude") {
  // A layer both included and excluded by name is reported as excluded.
  SelectionRules rules;
  rules.include_layer_names = {{"lm_head", "model.layers.0.mlp.down_proj"}};
  const auto verdicts = rtnq::select_tensors(llama_tensors(), rules);
  CHECK(quantized_layers(verdicts) == std::vector<std::string>{"model.layers.0.mlp.down_proj"});
  CHECK(verdict_of(verdicts, "lm_head.weight").rule == SelectionRule::exclude_name);
}

TEST_CASE("num_layers counts in natural order") {
  // The input order is scrambled. The first three in natural order are layers
  // 2, 9 and 10, whereas plain string order would pick 10, 11 and 2.
  std::vector<TensorDescription> tensors;
  for (int layer : {11, 2, 30, 10, 9}) tensors.push_back(linear("layers." + std::to_string(layer) + ".fc.weight"));
  SelectionRules rules;
  rules.num_layers = 3;
  const auto verdicts = rtnq::select_tensors(tensors, rules);
  CHECK(quantized_layers(verdicts) == std::vector<std::string>{"layers.2.fc", "layers.10.fc", "layers.9.fc"});
  const TensorVerdict& beyond = verdict_of(verdicts, "layers.11.fc.weight");
  CHECK(beyond.rule == SelectionRule::num_layers);
  CHECK(beyond.reason == "copy: beyond the first 3 layers (num_layers)");
  CHECK(verdict_of(verdicts, "layers.30.fc.weight").rule == SelectionRule::num_layers);
}

TEST_CASE("num_layers counts survivors only") {
  // lm_head and the embedding are excluded first, so they are not counted.
  SelectionRules rules;
  rules.num_layers = 4;
  const auto verdicts = rtnq::select_tensors(llama_tensors(), rules);
  CHECK(quantized_layers(verdicts) == std::vector<std::string>{
                                          "model.layers.0.self_attn.q_proj",
                                          "model.layers.0.mlp.down_proj",
                                          "model.layers.1.self_attn.q_proj",
                                          "model.layers.1.mlp.down_proj",
                                      });
  CHECK(verdict_of(verdicts, "lm_head.weight").rule == SelectionRule::exclude_name);
}

TEST_CASE("num_layers zero selects nothing") {
  SelectionRules rules;
  rules.num_layers = 0;
  CHECK(quantized_layers(rtnq::select_tensors(llama_tensors(), rules)).empty());
}

TEST_CASE("num_layers above survivors fails") {
  // Four layers survive the default rules.
  SelectionRules rules;
  rules.num_layers = 5;
  try {
    rtnq::select_tensors(llama_tensors(), rules);
    FAIL("select_tensors accepted num_layers 5 with 4 survivors");
  } catch (const rtnq::Error& error) {
    const std::string message = error.what();
    CHECK(message.find("num_layers is 5") != std::string::npos);
    CHECK(message.find("only 4 layers") != std::string::npos);
  }
}

TEST_CASE("natural_less orders digit runs") {
  struct Pair {
    std::string a;
    std::string b;
    bool a_first;  // expected natural_less(a, b)
    std::string reason;
  };
  const std::vector<Pair> pairs = {
      {"layers.2", "layers.10", true, "2 < 10 as numbers"},
      {"layers.10", "layers.2", false, "reverse of the above"},
      {"layers.9.mlp", "layers.10.attn", true, "the number decides before the text after it"},
      {"layers.10.attn", "layers.10.mlp", true, "equal numbers, then the text"},
      {"layers.2", "layers.2", false, "a name is not before itself"},
      {"layer", "layers", true, "a prefix comes first"},
      {"a99", "a123456789012345678901234567890", true, "digit runs longer than 64 bits"},
      {"a007", "a8", true, "leading zeros do not count"},
      {"a01", "a1", true, "equal as numbers: plain order breaks the tie"},
      {"a1", "a01", false, "reverse of the above"},
      {"b", "a10", false, "letters compare as usual"},
      {"x.1.y", "x.1.z", true, "text after equal numbers"},
  };
  for (const Pair& pair : pairs) {
    CAPTURE(pair.reason);
    CAPTURE(pair.a);
    CAPTURE(pair.b);
    CHECK(rtnq::natural_less(pair.a, pair.b) == pair.a_first);
  }

  std::vector<std::string> names = {"l.10", "l.1", "l.2", "l.0", "l.21", "l.3"};
  std::sort(names.begin(), names.end(), rtnq::natural_less);
  CHECK(names == std::vector<std::string>{"l.0", "l.1", "l.2", "l.3", "l.10", "l.21"});
}

TEST_CASE("zero-element weight is copied") {
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{0, 64}, std::vector<int64_t>{64, 0}}) {
    CAPTURE(shape[0]);
    const auto verdicts = rtnq::select_tensors({{"empty.weight", DType::F32, shape}}, SelectionRules{});
    REQUIRE(verdicts.size() == 1);
    CHECK_FALSE(verdicts[0].quantize);
    CHECK(verdicts[0].rule == SelectionRule::zero_elements);
    CHECK(verdicts[0].reason == "copy: zero elements");
  }
}

TEST_CASE("Conv1D keywords mark layers") {
  SelectionRules rules;
  rules.conv1d_keywords = {"c_attn", "c_fc"};
  const auto verdicts = rtnq::select_tensors(
      {linear("h.0.attn.c_attn.weight"), linear("h.0.mlp.c_fc.weight"), linear("h.0.mlp.c_proj.weight"),
       {"h.0.attn.c_attn.bias", DType::F32, {8}}},
      rules);
  CHECK(verdicts[0].quantize);
  CHECK(verdicts[0].conv1d);
  CHECK(verdicts[0].reason == "quantize (Conv1D, per output column)");
  CHECK(verdicts[1].conv1d);
  CHECK(verdicts[2].quantize);
  CHECK_FALSE(verdicts[2].conv1d);
  CHECK(verdicts[2].reason == "quantize");
  CHECK_FALSE(verdicts[3].quantize);
  CHECK_FALSE(verdicts[3].conv1d);
}

TEST_CASE("Conv1D mark dropped beyond num_layers") {
  SelectionRules rules;
  rules.conv1d_keywords = {"c_attn"};
  rules.num_layers = 1;
  const auto verdicts =
      rtnq::select_tensors({linear("h.1.attn.c_attn.weight"), linear("h.0.attn.c_attn.weight")}, rules);
  CHECK_FALSE(verdicts[0].quantize);
  CHECK_FALSE(verdicts[0].conv1d);
  CHECK(verdicts[1].quantize);
  CHECK(verdicts[1].conv1d);
}

TEST_CASE("Conv1D defaults follow model_type") {
  CHECK(rtnq::default_conv1d_keywords("gpt2") == std::vector<std::string>{"c_attn", "c_proj", "c_fc", "q_attn"});
  CHECK(rtnq::default_conv1d_keywords("llama").empty());
  CHECK(rtnq::default_conv1d_keywords("").empty());
}

TEST_CASE("RETSim beta and gamma copied") {
  // RETSim's gated attention units hold rank-2 beta and gamma parameters
  // that are not linear weights.
  const rtnq::Checkpoint checkpoint(std::string(RTNQ_MODELS_DIR) + "/retsim/model.safetensors");
  std::vector<TensorDescription> tensors;
  for (const auto& tensor : checkpoint.tensors()) {
    tensors.push_back({tensor.info->name, tensor.info->dtype, tensor.info->shape});
  }
  const auto verdicts = rtnq::select_tensors(tensors, SelectionRules{});

  int beta_gamma_count = 0;
  for (const TensorVerdict& verdict : verdicts) {
    const bool beta_or_gamma = verdict.tensor.find(".beta") != std::string::npos ||
                               verdict.tensor.find(".gamma") != std::string::npos;
    if (!beta_or_gamma) continue;
    CAPTURE(verdict.tensor);
    beta_gamma_count += 1;
    CHECK_FALSE(verdict.quantize);
    CHECK(verdict.rule == SelectionRule::not_weight_name);
  }
  CHECK(beta_gamma_count == 4);
  CHECK(quantized_layers(verdicts) == std::vector<std::string>{
                                          "encoder_start",
                                          "gau_layers.0.proj1",
                                          "gau_layers.0.proj2",
                                          "gau_layers.1.proj1",
                                          "gau_layers.1.proj2",
                                          "metric_embedding.linear",
                                      });
}
