// rtnq-make-fixtures: writes the small checkpoints under testdata/.
//
// Usage: rtnq-make-fixtures OUTDIR
//
// The output depends on this source alone. The random numbers come from a
// splitmix64 generator seeded per tensor name, and the normal samples are sums
// of uniforms (additions only, no libm calls). The library's own encoders round
// the values to F16 and BF16. A test regenerates the fixtures and compares
// them byte for byte with the committed ones.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "rtnq/error.hpp"
#include "rtnq/half.hpp"
#include "rtnq/safetensors.hpp"

namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;
using rtnq::DType;

// splitmix64: a 64-bit counter and a fixed integer mix, so the sequence is the
// same on every platform and library version.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}

  uint64_t next() {
    state_ += 0x9e3779b97f4a7c15ull;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }

  // Uniform in [0, 1): the top 53 bits as a multiple of 2^-53, exact in double.
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }

  // Approximately standard normal: the sum of 12 uniforms minus 6 has mean 0
  // and variance 1 (Irwin-Hall). Only additions, so it is bit-reproducible.
  double normal() {
    double sum = 0;
    for (int i = 0; i < 12; ++i) sum += uniform();
    return sum - 6.0;
  }

 private:
  uint64_t state_;
};

// FNV-1a, 64-bit: gives each tensor its own stream, independent of the order
// in which tensors are generated.
uint64_t hash_name(const std::string& name) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (unsigned char c : name) {
    hash ^= c;
    hash *= 0x100000001b3ull;
  }
  return hash;
}

constexpr uint64_t kSeed = 20240601;

// How a tensor's values are drawn.
struct Distribution {
  double mean = 0;
  double stddev = 0.02;
  // One value in outlier_period (on average) is multiplied by 10, because
  // trained weights have rare large entries that stretch an RTN group's range.
  // 0 means no outliers.
  uint32_t outlier_period = 0;
};

Distribution weight_distribution() { return {0.0, 0.02, 128}; }
Distribution norm_distribution() { return {1.0, 0.05, 0}; }
Distribution bias_distribution() { return {0.0, 0.01, 0}; }

struct FixtureTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  Distribution distribution;
};

uint64_t element_count(const std::vector<int64_t>& shape) {
  uint64_t count = 1;
  for (int64_t dimension : shape) count *= uint64_t(dimension);
  return count;
}

void append_little_endian(std::vector<unsigned char>& bytes, uint64_t value, int byte_count) {
  for (int i = 0; i < byte_count; ++i) bytes.push_back(static_cast<unsigned char>((value >> (8 * i)) & 0xff));
}

// The tensor's data, little-endian, in its dtype (F32, F16 or BF16).
std::vector<unsigned char> tensor_bytes(const FixtureTensor& tensor) {
  SplitMix64 random(kSeed ^ hash_name(tensor.name));
  const Distribution& distribution = tensor.distribution;
  std::vector<unsigned char> bytes;
  const uint64_t count = element_count(tensor.shape);
  for (uint64_t i = 0; i < count; ++i) {
    double value = distribution.stddev * random.normal();
    if (distribution.outlier_period != 0 && random.next() % distribution.outlier_period == 0) value *= 10;
    value += distribution.mean;
    switch (tensor.dtype) {
      case DType::BF16:
        append_little_endian(bytes, rtnq::double_to_bf16(value), 2);
        break;
      case DType::F16:
        append_little_endian(bytes, rtnq::double_to_f16(value), 2);
        break;
      case DType::F32: {
        const float narrow = static_cast<float>(value);
        uint32_t bits;
        std::memcpy(&bits, &narrow, sizeof bits);
        append_little_endian(bytes, bits, 4);
        break;
      }
      default:
        throw rtnq::Error("fixture tensor " + tensor.name + " has a dtype the generator does not write");
    }
  }
  return bytes;
}

uint64_t byte_size_of(const FixtureTensor& tensor) {
  return element_count(tensor.shape) * uint64_t(rtnq::dtype_bits(tensor.dtype)) / 8;
}

void write_bytes(const fs::path& path, const std::string& text) {
  std::ofstream stream(path, std::ios::binary | std::ios::trunc);
  stream.write(text.data(), std::streamsize(text.size()));
  stream.close();
  if (!stream) throw rtnq::Error(path.string() + ": write failed");
}

void write_json(const fs::path& path, const json& value) { write_bytes(path, value.dump(2) + "\n"); }

// Writes a safetensors file laid out by the library's writer plan, so the
// fixtures have exactly the header form and alignment rtnq itself writes.
// Returns the bytes of tensor data (the index's total_size counts these).
uint64_t write_safetensors(const fs::path& path, const std::vector<FixtureTensor>& tensors,
                           const rtnq::Metadata& metadata) {
  std::vector<rtnq::OutputTensor> outputs;
  std::map<std::string, const FixtureTensor*> by_name;
  for (const FixtureTensor& tensor : tensors) {
    outputs.push_back({tensor.name, tensor.dtype, tensor.shape, byte_size_of(tensor)});
    by_name[tensor.name] = &tensor;
  }
  const rtnq::SafetensorsLayout layout = rtnq::plan_safetensors_layout(outputs, metadata, !metadata.empty());

  std::string file = layout.header;
  uint64_t data_bytes = 0;
  for (size_t i = 0; i < layout.tensors.size(); ++i) {
    if (file.size() != layout.file_offsets[i]) {
      throw rtnq::Error(path.string() + ": tensor " + layout.tensors[i].name + " is not at its planned offset");
    }
    const std::vector<unsigned char> bytes = tensor_bytes(*by_name.at(layout.tensors[i].name));
    file.append(bytes.begin(), bytes.end());
    data_bytes += bytes.size();
  }
  if (file.size() != layout.file_bytes) throw rtnq::Error(path.string() + ": size differs from the plan");
  write_bytes(path, file);
  return data_bytes;
}

// The attention and MLP weights of one Llama decoder layer.
void add_llama_layer(std::vector<FixtureTensor>& tensors, int layer, int64_t hidden, int64_t kv_width,
                     int64_t intermediate, DType attention_dtype, DType mlp_dtype) {
  const std::string prefix = "model.layers." + std::to_string(layer) + ".";
  tensors.push_back({prefix + "self_attn.q_proj.weight", attention_dtype, {hidden, hidden}, weight_distribution()});
  tensors.push_back({prefix + "self_attn.k_proj.weight", attention_dtype, {kv_width, hidden}, weight_distribution()});
  tensors.push_back({prefix + "self_attn.v_proj.weight", attention_dtype, {kv_width, hidden}, weight_distribution()});
  tensors.push_back({prefix + "self_attn.o_proj.weight", attention_dtype, {hidden, hidden}, weight_distribution()});
  tensors.push_back({prefix + "mlp.gate_proj.weight", mlp_dtype, {intermediate, hidden}, weight_distribution()});
  tensors.push_back({prefix + "mlp.up_proj.weight", mlp_dtype, {intermediate, hidden}, weight_distribution()});
  tensors.push_back({prefix + "mlp.down_proj.weight", mlp_dtype, {hidden, intermediate}, weight_distribution()});
}

void add_llama_norms(std::vector<FixtureTensor>& tensors, int layer, int64_t hidden) {
  const std::string prefix = "model.layers." + std::to_string(layer) + ".";
  tensors.push_back({prefix + "input_layernorm.weight", DType::F32, {hidden}, norm_distribution()});
  tensors.push_back({prefix + "post_attention_layernorm.weight", DType::F32, {hidden}, norm_distribution()});
}

json llama_config(int64_t hidden, int64_t intermediate, int layers, int heads, int kv_heads, int64_t vocab,
                  const std::string& torch_dtype, bool mlp_bias) {
  json config;
  config["architectures"] = {"LlamaForCausalLM"};
  config["model_type"] = "llama";
  config["hidden_size"] = hidden;
  config["intermediate_size"] = intermediate;
  config["num_hidden_layers"] = layers;
  config["num_attention_heads"] = heads;
  config["num_key_value_heads"] = kv_heads;
  config["head_dim"] = hidden / heads;
  config["vocab_size"] = vocab;
  config["max_position_embeddings"] = 256;
  config["rms_norm_eps"] = 1e-5;
  config["hidden_act"] = "silu";
  config["attention_bias"] = false;
  config["mlp_bias"] = mlp_bias;
  config["tie_word_embeddings"] = false;
  config["torch_dtype"] = torch_dtype;
  return config;
}

// sample/: one BF16 file of a 2-layer Llama (hidden 64, intermediate 160,
// 4 heads of which 2 are key/value heads, vocabulary 128), about 200 KiB.
void write_sample(const fs::path& folder) {
  constexpr int64_t kHidden = 64;
  constexpr int64_t kIntermediate = 160;
  constexpr int kHeads = 4;
  constexpr int kKeyValueHeads = 2;
  constexpr int64_t kVocab = 128;
  constexpr int kLayers = 2;
  const int64_t kv_width = kHidden / kHeads * kKeyValueHeads;

  std::vector<FixtureTensor> tensors;
  tensors.push_back({"model.embed_tokens.weight", DType::BF16, {kVocab, kHidden}, weight_distribution()});
  for (int layer = 0; layer < kLayers; ++layer) {
    add_llama_layer(tensors, layer, kHidden, kv_width, kIntermediate, DType::BF16, DType::BF16);
    const std::string prefix = "model.layers." + std::to_string(layer) + ".";
    tensors.push_back({prefix + "input_layernorm.weight", DType::BF16, {kHidden}, norm_distribution()});
    tensors.push_back({prefix + "post_attention_layernorm.weight", DType::BF16, {kHidden}, norm_distribution()});
  }
  tensors.push_back({"model.norm.weight", DType::BF16, {kHidden}, norm_distribution()});
  tensors.push_back({"lm_head.weight", DType::BF16, {kVocab, kHidden}, weight_distribution()});

  fs::create_directories(folder);
  write_safetensors(folder / "model.safetensors", tensors, {{"format", "pt"}});
  write_json(folder / "config.json",
             llama_config(kHidden, kIntermediate, kLayers, kHeads, kKeyValueHeads, kVocab, "bfloat16", false));
}

// sharded/: a Hugging Face folder of three shards and an index, F16 and F32
// mixed (hidden 32, intermediate 64, 2 layers, MLP biases). Layer 1's
// down_proj weight is in shard 2 and its bias in shard 3, so a layer's
// tensors span two shards.
void write_sharded(const fs::path& folder) {
  constexpr int64_t kHidden = 32;
  constexpr int64_t kIntermediate = 64;
  constexpr int kHeads = 4;
  constexpr int kKeyValueHeads = 2;
  constexpr int64_t kVocab = 64;
  const int64_t kv_width = kHidden / kHeads * kKeyValueHeads;

  std::vector<FixtureTensor> shard1;
  shard1.push_back({"model.embed_tokens.weight", DType::F16, {kVocab, kHidden}, weight_distribution()});
  add_llama_layer(shard1, 0, kHidden, kv_width, kIntermediate, DType::F16, DType::F16);
  shard1.push_back({"model.layers.0.mlp.down_proj.bias", DType::F32, {kHidden}, bias_distribution()});
  add_llama_norms(shard1, 0, kHidden);

  // Layer 1: F16 attention, F32 MLP.
  std::vector<FixtureTensor> shard2;
  add_llama_layer(shard2, 1, kHidden, kv_width, kIntermediate, DType::F16, DType::F32);

  std::vector<FixtureTensor> shard3;
  shard3.push_back({"model.layers.1.mlp.down_proj.bias", DType::F32, {kHidden}, bias_distribution()});
  add_llama_norms(shard3, 1, kHidden);
  shard3.push_back({"model.norm.weight", DType::F32, {kHidden}, norm_distribution()});
  shard3.push_back({"lm_head.weight", DType::F16, {kVocab, kHidden}, weight_distribution()});

  fs::create_directories(folder);
  const std::vector<std::vector<FixtureTensor>> shards = {shard1, shard2, shard3};
  json weight_map = json::object();
  std::map<std::string, std::string> shard_of_tensor;  // sorted by name, as Hugging Face writes the index
  uint64_t total_size = 0;
  for (size_t i = 0; i < shards.size(); ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    total_size += write_safetensors(folder / name, shards[i], {{"format", "pt"}});
    for (const FixtureTensor& tensor : shards[i]) shard_of_tensor[tensor.name] = name;
  }
  for (const auto& [tensor, shard] : shard_of_tensor) weight_map[tensor] = shard;

  json index;
  index["metadata"] = {{"total_size", total_size}};
  index["weight_map"] = weight_map;
  write_json(folder / "model.safetensors.index.json", index);
  write_json(folder / "config.json",
             llama_config(kHidden, kIntermediate, 2, kHeads, kKeyValueHeads, kVocab, "float16", true));

  // A minimal tokenizer.json (a word-level vocabulary) and a model card,
  // so that a folder output must carry along files that are not tensors.
  json vocabulary = json::object();
  vocabulary["<unk>"] = 0;
  vocabulary["<s>"] = 1;
  vocabulary["</s>"] = 2;
  for (int i = 3; i < 16; ++i) vocabulary["w" + std::to_string(i)] = i;
  json tokenizer;
  tokenizer["version"] = "1.0";
  tokenizer["truncation"] = nullptr;
  tokenizer["padding"] = nullptr;
  tokenizer["added_tokens"] = json::array();
  tokenizer["normalizer"] = nullptr;
  tokenizer["pre_tokenizer"] = {{"type", "Whitespace"}};
  tokenizer["post_processor"] = nullptr;
  tokenizer["decoder"] = nullptr;
  tokenizer["model"] = {{"type", "WordLevel"}, {"vocab", vocabulary}, {"unk_token", "<unk>"}};
  write_json(folder / "tokenizer.json", tokenizer);
  write_bytes(folder / "README.md",
              "# sharded\n\n"
              "A tiny Llama-shaped checkpoint of random weights in three safetensors\n"
              "shards, written by rtnq-make-fixtures for rtnq's tests. It is not a\n"
              "trained model.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: rtnq-make-fixtures OUTDIR\n");
    return 2;
  }
  try {
    const fs::path out_dir = argv[1];
    write_sample(out_dir / "sample");
    write_sharded(out_dir / "sharded");
  } catch (const std::exception& error) {
    std::fprintf(stderr, "rtnq-make-fixtures: error: %s\n", error.what());
    return 1;
  }
  return 0;
}
