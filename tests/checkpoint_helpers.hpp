// Helpers for the folder, dequantize, activations and Conv1D tests: writing
// small safetensors files from float values, reading tensors back, and the
// values the scalar yardstick expects after a quantize and dequantize round trip.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "rtn_yardstick.hpp"
#include "rtnq/dtype.hpp"
#include "rtnq/rtn_params.hpp"
#include "rtnq/safetensors.hpp"
#include "test_support.hpp"

namespace rtnq::test {

// The sharded fixture made by scripts/make_fixtures.cpp, and its shard files.
inline const std::filesystem::path kSharded = std::filesystem::path(RTNQ_SOURCE_DIR) / "testdata/sharded";
inline const std::vector<std::string> kShards = {"model-00001-of-00003.safetensors",
                                                 "model-00002-of-00003.safetensors",
                                                 "model-00003-of-00003.safetensors"};

// True for the fixtures' linear layers: 2-D *.weight tensors apart from the
// embedding and lm_head, which the default rules copy.
inline bool is_quantized_weight(const TensorInfo& tensor) {
  return tensor.shape.size() == 2 && tensor.name != "model.embed_tokens.weight" && tensor.name != "lm_head.weight";
}

// A tensor to write: values in row-major order, stored as dtype (F32, F16 or BF16).
struct FloatTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<double> values;
};

// The little-endian bytes of values in dtype. F16 and BF16 round to nearest,
// ties to even, with the yardstick's rounding, not the library's.
inline std::string encode_floats(const std::vector<double>& values, DType dtype) {
  std::string bytes;
  for (double value : values) {
    if (dtype == DType::F32) {
      const float narrow = static_cast<float>(value);
      char raw[4];
      std::memcpy(raw, &narrow, 4);
      bytes.append(raw, 4);
      continue;
    }
    const auto format = dtype == DType::F16 ? rtnq_test::kF16Format : rtnq_test::kBF16Format;
    const uint16_t bits = rtnq_test::nearest_small_float_bits(value, format);
    bytes.push_back(static_cast<char>(bits & 0xff));
    bytes.push_back(static_cast<char>(bits >> 8));
  }
  return bytes;
}

// Writes a safetensors file of the tensors in the given order, with the
// metadata entries (none if empty). The header is built here by hand.
inline void write_float_checkpoint(const std::filesystem::path& path, const std::vector<FloatTensor>& tensors,
                                   const std::map<std::string, std::string>& metadata = {}) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string data;
  for (const FloatTensor& tensor : tensors) {
    const std::string bytes = encode_floats(tensor.values, tensor.dtype);
    header[tensor.name] = {{"dtype", std::string(dtype_name(tensor.dtype))},
                           {"shape", tensor.shape},
                           {"data_offsets", {data.size(), data.size() + bytes.size()}}};
    data += bytes;
  }
  const std::string text = header.dump();
  write_file(path, length_prefix(text.size()) + text + data);
}

// Pseudo-random values of a roughly normal spread around 0 with the given
// standard deviation, the same on every platform (a 64-bit LCG, sums of 4 uniforms).
inline std::vector<double> test_values(size_t count, uint64_t seed, double stddev = 0.05) {
  std::vector<double> values(count);
  uint64_t state = seed * 2862933555777941757ull + 3037000493ull;
  for (double& value : values) {
    double sum = 0;
    for (int k = 0; k < 4; ++k) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      sum += static_cast<double>(state >> 11) * 0x1.0p-53;
    }
    value = (sum - 2.0) * 1.7320508075688772 * stddev;  // 4 uniforms have variance 1/3
  }
  return values;
}

// Element i of a float tensor as double, decoded with the yardstick's decoders.
inline double float_value(const std::byte* data, DType dtype, uint64_t i) {
  switch (dtype) {
    case DType::F16:
    case DType::BF16: {
      uint16_t bits;
      std::memcpy(&bits, data + 2 * i, 2);
      return rtnq_test::decode_small_float(bits, dtype == DType::F16 ? rtnq_test::kF16Format : rtnq_test::kBF16Format);
    }
    case DType::F32: {
      float value;
      std::memcpy(&value, data + 4 * i, 4);
      return value;
    }
    case DType::F64: {
      double value;
      std::memcpy(&value, data + 8 * i, 8);
      return value;
    }
    default:
      throw std::runtime_error("not a float dtype: " + std::string(dtype_name(dtype)));
  }
}

// Element i of an unsigned code tensor (U8 to U64, little-endian host).
inline uint64_t code_value(const std::byte* data, DType dtype, uint64_t i) {
  const int bytes = dtype_bits(dtype) / 8;
  uint64_t value = 0;
  std::memcpy(&value, data + uint64_t(bytes) * i, size_t(bytes));
  return value;
}

inline std::vector<double> float_values(const SafetensorsFile& file, const TensorInfo& tensor) {
  std::vector<double> values(tensor.element_count());
  for (uint64_t i = 0; i < values.size(); ++i) values[i] = float_value(file.tensor_data(tensor), tensor.dtype, i);
  return values;
}

inline std::map<std::string, const TensorInfo*> tensors_by_name(const SafetensorsFile& file) {
  std::map<std::string, const TensorInfo*> tensors;
  for (const TensorInfo& tensor : file.tensors()) tensors[tensor.name] = &tensor;
  return tensors;
}

inline std::string tensor_bytes(const SafetensorsFile& file, const TensorInfo& tensor) {
  return std::string(reinterpret_cast<const char*>(file.tensor_data(tensor)), tensor.byte_size());
}

inline std::string metadata_value(const SafetensorsFile& file, const std::string& key) {
  for (const auto& [name, value] : file.header().metadata) {
    if (name == key) return value;
  }
  return "";
}

// value rounded to a stored dtype (nearest, ties to even), read back as double.
inline double rounded_to(double value, DType dtype) {
  switch (dtype) {
    case DType::F16:
      return rtnq_test::decode_small_float(rtnq_test::nearest_small_float_bits(value, rtnq_test::kF16Format),
                                           rtnq_test::kF16Format);
    case DType::BF16:
      return rtnq_test::decode_small_float(rtnq_test::nearest_small_float_bits(value, rtnq_test::kBF16Format),
                                           rtnq_test::kBF16Format);
    case DType::F32:
      return static_cast<float>(value);
    default:
      return value;
  }
}

// The yardstick's view of one quantized matrix [out, in]: its codes, the
// scales and zeros as stored (rounded to scale_dtype and zero_dtype), and the
// dequantized values (code - zero) * scale in the arithmetic rtnq uses:
// float32 for wbits <= 16, float64 above.
struct ExpectedLayer {
  rtnq_test::YardstickResult computed;
  std::vector<double> stored_scales;
  std::vector<double> stored_zeros;
  std::vector<double> dequantized;  // [out, in]
};

inline ExpectedLayer expected_layer(const std::vector<double>& weight, int64_t out, int64_t in,
                                    const RtnParams& params, DType scale_dtype, DType zero_dtype) {
  ExpectedLayer expected;
  expected.computed = rtnq_test::yardstick_quantize(weight, out, in, params);
  const int64_t group = params.groupsize == -1 ? in : params.groupsize;
  const int64_t n_groups = in / group;
  for (double scale : expected.computed.scales) expected.stored_scales.push_back(rounded_to(scale, scale_dtype));
  for (double zero : expected.computed.zeros) expected.stored_zeros.push_back(rounded_to(zero, zero_dtype));
  expected.dequantized.resize(weight.size());
  for (int64_t row = 0; row < out; ++row) {
    for (int64_t column = 0; column < in; ++column) {
      const size_t g = size_t(row * n_groups + column / group);
      const uint64_t code = expected.computed.codes[size_t(row * in + column)];
      double value;
      if (params.wbits <= 16) {
        value = (static_cast<float>(code) - static_cast<float>(expected.stored_zeros[g])) *
                static_cast<float>(expected.stored_scales[g]);
      } else {
        value = (static_cast<double>(code) - expected.stored_zeros[g]) * expected.stored_scales[g];
      }
      expected.dequantized[size_t(row * in + column)] = value;
    }
  }
  return expected;
}

// The [columns, rows] transpose of a row-major [rows, columns] matrix.
inline std::vector<double> transposed(const std::vector<double>& values, int64_t rows, int64_t columns) {
  std::vector<double> result(values.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < columns; ++c) result[size_t(c * rows + r)] = values[size_t(r * columns + c)];
  }
  return result;
}

}  // namespace rtnq::test
