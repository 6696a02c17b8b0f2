// rtnq-make-bench-model: writes the synthetic BF16 checkpoint that
// scripts/bench.sh quantizes.
//
// Usage: rtnq-make-bench-model OUTPUT.safetensors [--preset tinyllama|huge]
//
// tinyllama has the tensor names and shapes of TinyLlama-1.1B (22 layers,
// hidden 2048, intermediate 5632, k_proj and v_proj 256 x 2048, vocabulary
// 32000, embeddings, norms and lm_head), 2.2 GB in BF16. huge keeps the names
// but takes Llama-2-13B's widths (hidden 5120, intermediate 13824) with 46
// layers: 14.9 billion parameters, 29.8 GB, so it does not fit in 24 GB of RAM.
//
// Values are approximately normal (the sum of eight uniform bytes) with a
// standard deviation that varies from row to row, and one value in 1024 is ten
// times larger, so that a group's min and max behave as in trained weights.
// The file depends only on this source: each chunk of 2^20 values has its own
// random stream, so the thread count does not change it. Data is generated
// and written a chunk at a time, so memory stays small for any preset, and the
// file appears under its name only when complete.
#include <omp.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "rtnq/error.hpp"
#include "rtnq/output_file.hpp"
#include "rtnq/safetensors.hpp"

namespace {

using rtnq::DType;

struct ModelShape {
  int64_t layers;
  int64_t hidden;
  int64_t intermediate;
  int64_t key_value;  // rows of k_proj and v_proj
  int64_t vocabulary;
};

constexpr ModelShape kTinyLlama{22, 2048, 5632, 256, 32000};
constexpr ModelShape kHuge{46, 5120, 13824, 5120, 32000};

// The distribution of one tensor's values.
enum class ValueKind { weight, norm };

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  ValueKind kind = ValueKind::weight;

  int64_t columns() const { return shape.back(); }
  uint64_t element_count() const {
    uint64_t count = 1;
    for (int64_t extent : shape) count *= uint64_t(extent);
    return count;
  }
};

// The tensors in the order of a Llama model's state dict.
std::vector<TensorSpec> model_tensors(const ModelShape& model) {
  const int64_t h = model.hidden;
  std::vector<TensorSpec> tensors;
  tensors.push_back({"model.embed_tokens.weight", {model.vocabulary, h}});
  for (int64_t layer = 0; layer < model.layers; ++layer) {
    const std::string prefix = "model.layers." + std::to_string(layer) + ".";
    tensors.push_back({prefix + "input_layernorm.weight", {h}, ValueKind::norm});
    tensors.push_back({prefix + "self_attn.q_proj.weight", {h, h}});
    tensors.push_back({prefix + "self_attn.k_proj.weight", {model.key_value, h}});
    tensors.push_back({prefix + "self_attn.v_proj.weight", {model.key_value, h}});
    tensors.push_back({prefix + "self_attn.o_proj.weight", {h, h}});
    tensors.push_back({prefix + "post_attention_layernorm.weight", {h}, ValueKind::norm});
    tensors.push_back({prefix + "mlp.gate_proj.weight", {model.intermediate, h}});
    tensors.push_back({prefix + "mlp.up_proj.weight", {model.intermediate, h}});
    tensors.push_back({prefix + "mlp.down_proj.weight", {h, model.intermediate}});
  }
  tensors.push_back({"model.norm.weight", {h}, ValueKind::norm});
  tensors.push_back({"lm_head.weight", {model.vocabulary, h}});
  return tensors;
}

// splitmix64 finaliser: turns a counter or a seed into well-mixed bits.
uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// xoshiro256+ (Blackman and Vigna): a fast generator whose 64 output bits
// all serve here as uniform bytes.
class Xoshiro256Plus {
 public:
  explicit Xoshiro256Plus(uint64_t seed) {
    for (uint64_t& word : state_) {
      seed = mix64(seed);
      word = seed;
    }
  }

  uint64_t next() {
    const uint64_t result = state_[0] + state_[3];
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = (state_[3] << 45) | (state_[3] >> 19);
    return result;
  }

 private:
  uint64_t state_[4];
};

// Sum of the eight bytes of bits: 0..2040, mean 1020, variance 8 * (256^2 - 1) / 12.
int byte_sum(uint64_t bits) {
  uint64_t pairs = (bits & 0x00ff00ff00ff00ffull) + ((bits >> 8) & 0x00ff00ff00ff00ffull);
  uint64_t quads = (pairs & 0x0000ffff0000ffffull) + ((pairs >> 16) & 0x0000ffff0000ffffull);
  return int((quads & 0xffffffffull) + (quads >> 32));
}

// Rounds a finite float to BF16, to nearest with ties to even.
uint16_t float_to_bf16_bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}

constexpr uint64_t kChunkElements = uint64_t(1) << 20;
constexpr uint64_t kSeed = 20250101;
const float kByteSumMean = 1020.0f;
const float kByteSumInverseStddev = 1.0f / 209.02f;  // 1 / sqrt(8 * 65535 / 12)

// Fills out with the BF16 values first .. first + out.size() - 1 of tensor
// number tensor_index.
void generate_chunk(const TensorSpec& tensor, uint64_t tensor_index, uint64_t chunk_index, uint64_t first,
                    std::vector<uint16_t>& out) {
  Xoshiro256Plus random(mix64(kSeed ^ (tensor_index << 40) ^ chunk_index));
  const uint64_t columns = uint64_t(tensor.columns());
  uint64_t outlier_bits = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const uint64_t index = first + i;
    const float normal = (float(byte_sum(random.next())) - kByteSumMean) * kByteSumInverseStddev;
    if (i % 6 == 0) outlier_bits = random.next();
    const bool outlier = ((outlier_bits >> (10 * (i % 6))) & 1023u) == 0;

    float value;
    if (tensor.kind == ValueKind::norm) {
      value = 1.0f + 0.05f * normal;
    } else {
      // Row standard deviation from 0.01 to 0.03, fixed by the row's index.
      const uint64_t row = index / columns;
      const float row_stddev = 0.01f + 0.02f * float(mix64(tensor_index * 0x100000000ull + row) >> 40) * 0x1.0p-24f;
      value = row_stddev * normal * (outlier ? 10.0f : 1.0f);
    }
    out[i] = float_to_bf16_bits(value);
  }
}

struct Options {
  std::string output;
  ModelShape shape = kTinyLlama;
};

Options parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string argument = argv[i];
    if (argument == "--preset" && i + 1 < argc) {
      const std::string preset = argv[++i];
      if (preset == "tinyllama") {
        options.shape = kTinyLlama;
      } else if (preset == "huge") {
        options.shape = kHuge;
      } else {
        throw rtnq::Error("invalid --preset '" + preset + "'; expected tinyllama or huge");
      }
    } else if (options.output.empty() && argument.rfind("--", 0) != 0) {
      options.output = argument;
    } else {
      throw rtnq::Error("invalid argument '" + argument + "'");
    }
  }
  if (options.output.empty()) {
    throw rtnq::Error("missing output path; usage: rtnq-make-bench-model OUTPUT.safetensors [--preset tinyllama|huge]");
  }
  return options;
}

void write_model(const Options& options) {
  const std::vector<TensorSpec> tensors = model_tensors(options.shape);
  std::vector<rtnq::OutputTensor> layout_tensors;
  for (const TensorSpec& tensor : tensors) {
    layout_tensors.push_back({tensor.name, DType::BF16, tensor.shape, tensor.element_count() * 2});
  }
  // All tensors are BF16, so the planned order is the order above.
  const rtnq::SafetensorsLayout layout =
      rtnq::plan_safetensors_layout(layout_tensors, {{"format", "pt"}}, true);

  rtnq::AtomicOutputFile file(options.output, true);
  file.write_at(layout.header.data(), layout.header.size(), 0);

  // Every (tensor, chunk) pair is one unit of work.
  struct Chunk {
    size_t tensor;
    uint64_t index;
  };
  std::vector<Chunk> chunks;
  for (size_t t = 0; t < tensors.size(); ++t) {
    const uint64_t count = (tensors[t].element_count() + kChunkElements - 1) / kChunkElements;
    for (uint64_t c = 0; c < count; ++c) chunks.push_back({t, c});
  }

  std::string failure;
#pragma omp parallel
  {
    std::vector<uint16_t> values;
#pragma omp for schedule(dynamic, 1)
    for (size_t k = 0; k < chunks.size(); ++k) {
      const TensorSpec& tensor = tensors[chunks[k].tensor];
      const uint64_t first = chunks[k].index * kChunkElements;
      values.resize(size_t(std::min(kChunkElements, tensor.element_count() - first)));
      generate_chunk(tensor, chunks[k].tensor, chunks[k].index, first, values);
      try {
        file.write_at(values.data(), values.size() * 2, layout.file_offsets[chunks[k].tensor] + first * 2);
      } catch (const std::exception& error) {
#pragma omp critical
        failure = error.what();
      }
    }
  }
  if (!failure.empty()) throw rtnq::Error(failure);
  file.commit();
  std::printf("%s: %zu tensors, %.2f GB\n", options.output.c_str(), tensors.size(), double(layout.file_bytes) / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    write_model(parse_options(argc, argv));
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "rtnq-make-bench-model: error: %s\n", error.what());
    return 1;
  }
}
