#include "rtnq/dequantize.hpp"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>

#include <nlohmann/json.hpp>

#include "rtnq/error.hpp"
#include "rtnq/half.hpp"
#include "rtnq/json_text.hpp"
#include "rtnq/native_format.hpp"
#include "rtnq/output_file.hpp"
#include "rtnq/output_folder.hpp"
#include "rtnq/quantize.hpp"
#include "rtnq/rtn_kernel.hpp"
#include "rtnq/selection.hpp"

namespace rtnq {
namespace fs = std::filesystem;
namespace {

constexpr const char* kCodesSuffix = ".quantized_weight";

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Code `index` of a U8, U16, U32 or U64 array. Exact up to 2^53, which
// covers every code rtnq writes (codes of more than 53 bits saturate below that).
double read_code(const std::byte* base, DType dtype, int64_t index) {
  switch (dtype) {
    case DType::U8:
      return static_cast<double>(static_cast<uint8_t>(base[index]));
    case DType::U16: {
      uint16_t code;
      std::memcpy(&code, base + index * 2, 2);
      return code;
    }
    case DType::U32: {
      uint32_t code;
      std::memcpy(&code, base + index * 4, 4);
      return code;
    }
    default: {
      uint64_t code;
      std::memcpy(&code, base + index * 8, 8);
      return static_cast<double>(code);
    }
  }
}

// Rounds value to dtype (nearest, ties to even) and stores it at index.
void store_value(double value, DType dtype, std::byte* base, int64_t index) {
  switch (dtype) {
    case DType::F16: {
      const uint16_t bits = double_to_f16(value);
      std::memcpy(base + index * 2, &bits, 2);
      return;
    }
    case DType::BF16: {
      const uint16_t bits = double_to_bf16(value);
      std::memcpy(base + index * 2, &bits, 2);
      return;
    }
    default: {
      const float narrow = static_cast<float>(value);
      std::memcpy(base + index * 4, &narrow, 4);
      return;
    }
  }
}

template <class T>
void dequantize_row_as(const QuantizedMatrix& matrix, int64_t row, double* values) {
  if (matrix.n_groups == 0) return;
  const int64_t group_length = matrix.in_features / matrix.n_groups;
  for (int64_t group = 0; group < matrix.n_groups; ++group) {
    const int64_t parameter = row * matrix.n_groups + group;
    const T scale = static_cast<T>(read_float_element(matrix.scales, matrix.scale_dtype, parameter));
    const T zero = static_cast<T>(read_float_element(matrix.zeros, matrix.zero_dtype, parameter));
    for (int64_t i = group * group_length; i < (group + 1) * group_length; ++i) {
      const int64_t index = matrix.conv1d ? i * matrix.out_features + row : row * matrix.in_features + i;
      const T code = static_cast<T>(read_code(matrix.codes, matrix.code_dtype, index));
      values[i] = static_cast<double>(dequantize_code<T>(code, zero, scale));
    }
  }
}

// --- Reading the stored quantization_config ---

const nlohmann::json& config_field(const nlohmann::json& config, const char* field, const std::string& path) {
  if (!config.contains(field)) throw Error(path + ": quantization_config has no \"" + field + "\" field");
  return config[field];
}

int64_t integer_field(const nlohmann::json& config, const char* field, const std::string& path) {
  const nlohmann::json& value = config_field(config, field, path);
  if (!value.is_number_integer()) throw Error(path + ": quantization_config \"" + field + "\" is not an integer");
  return value.get<int64_t>();
}

bool boolean_field(const nlohmann::json& config, const char* field, const std::string& path) {
  const nlohmann::json& value = config_field(config, field, path);
  if (!value.is_boolean()) throw Error(path + ": quantization_config \"" + field + "\" is not true or false");
  return value.get<bool>();
}

std::string string_field(const nlohmann::json& config, const char* field, const std::string& path) {
  const nlohmann::json& value = config_field(config, field, path);
  if (!value.is_string()) throw Error(path + ": quantization_config \"" + field + "\" is not a string");
  return value.get<std::string>();
}

DType scale_dtype_named(const std::string& name, const std::string& path) {
  if (name == "f16") return DType::F16;
  if (name == "bf16") return DType::BF16;
  if (name == "f32") return DType::F32;
  throw Error(path + ": quantization_config \"scale_dtype\" is '" + name + "', expected f16, bf16 or f32");
}

// --- Planning ---

// Finds L.scale and L.zero beside L.quantized_weight and checks every
// dtype and shape against the config.
DequantizedLayerPlan plan_layer(const SafetensorsFile& file, const TensorInfo& codes,
                                const std::map<std::string, const TensorInfo*>& by_name,
                                const StoredQuantizationConfig& config) {
  const std::string& path = file.path();
  DequantizedLayerPlan layer;
  layer.layer = codes.name.substr(0, codes.name.size() - std::string(kCodesSuffix).size());
  layer.file = &file;
  layer.codes = &codes;
  layer.conv1d = std::find(config.conv1d_layers.begin(), config.conv1d_layers.end(), layer.layer) !=
                 config.conv1d_layers.end();

  auto find = [&](const std::string& name) -> const TensorInfo* {
    auto found = by_name.find(name);
    if (found == by_name.end()) {
      throw Error(path + ": layer " + layer.layer + " has " + codes.name + " but no " + name + " in the same file");
    }
    return found->second;
  };
  layer.scales = find(layer.layer + ".scale");
  layer.zeros = find(layer.layer + ".zero");
  if (by_name.count(layer.layer + ".weight")) {
    throw Error(path + ": layer " + layer.layer + " has both " + codes.name + " and " + layer.layer + ".weight");
  }

  const int wbits = config.params.wbits;
  auto check_dtype = [&](const TensorInfo& tensor, DType expected) {
    if (tensor.dtype == expected) return;
    throw Error(path + ": " + tensor.name + " has dtype " + std::string(dtype_name(tensor.dtype)) + ", expected " +
                std::string(dtype_name(expected)) + " for wbits " + std::to_string(wbits));
  };
  check_dtype(codes, code_dtype_for_bits(wbits));
  check_dtype(*layer.scales, config.scale_dtype);
  check_dtype(*layer.zeros, zero_dtype_for_bits(wbits));

  if (codes.shape.size() != 2) {
    throw Error(path + ": " + codes.name + " has shape " + format_shape(codes.shape) + ", expected rank 2");
  }
  layer.out_features = layer.conv1d ? codes.shape[1] : codes.shape[0];
  layer.in_features = layer.conv1d ? codes.shape[0] : codes.shape[1];
  const int64_t groupsize = config.params.groupsize;
  if (groupsize != -1 && layer.in_features % groupsize != 0) {
    throw Error(path + ": layer " + layer.layer + " has in_features " + std::to_string(layer.in_features) +
                ", which groupsize " + std::to_string(groupsize) + " does not divide");
  }
  layer.n_groups = groups_per_row(config.params, layer.in_features);

  const std::vector<int64_t> parameter_shape = {layer.out_features, layer.n_groups};
  for (const TensorInfo* tensor : {layer.scales, layer.zeros}) {
    if (tensor->shape == parameter_shape) continue;
    throw Error(path + ": " + tensor->name + " has shape " + format_shape(tensor->shape) + ", expected " +
                format_shape(parameter_shape) + " for codes " + format_shape(codes.shape) +
                (layer.conv1d ? " stored [in, out]" : ""));
  }
  return layer;
}

uint64_t byte_size_of(DType dtype, const std::vector<int64_t>& shape) {
  uint64_t count = 1;
  for (int64_t dimension : shape) count *= static_cast<uint64_t>(dimension);
  return count * static_cast<uint64_t>(dtype_bits(dtype)) / 8;
}

// --- Writing ---

QuantizedMatrix stored_matrix(const DequantizedLayerPlan& layer, const StoredQuantizationConfig& config) {
  QuantizedMatrix matrix;
  matrix.codes = layer.file->tensor_data(*layer.codes);
  matrix.code_dtype = layer.codes->dtype;
  matrix.scales = layer.file->tensor_data(*layer.scales);
  matrix.scale_dtype = layer.scales->dtype;
  matrix.zeros = layer.file->tensor_data(*layer.zeros);
  matrix.zero_dtype = layer.zeros->dtype;
  matrix.out_features = layer.out_features;
  matrix.in_features = layer.in_features;
  matrix.n_groups = layer.n_groups;
  matrix.conv1d = layer.conv1d;
  matrix.wbits = config.params.wbits;
  return matrix;
}

// Code `index` of a U8, U16, U32 or U64 array, exact at every width.
uint64_t read_code_bits(const std::byte* base, DType dtype, int64_t index) {
  const int bytes = dtype_bits(dtype) / 8;
  uint64_t code = 0;
  std::memcpy(&code, base + index * bytes, size_t(bytes));  // little-endian host, as the reader assumes
  return code;
}

// The first in_features index of output channel `row` whose code exceeds
// max_code, or -1 if every code fits.
int64_t first_code_above(const QuantizedMatrix& matrix, int64_t row, uint64_t max_code) {
  for (int64_t i = 0; i < matrix.in_features; ++i) {
    const int64_t index = matrix.conv1d ? i * matrix.out_features + row : row * matrix.in_features + i;
    if (read_code_bits(matrix.codes, matrix.code_dtype, index) > max_code) return i;
  }
  return -1;
}

// Rebuilds the layer's weight in dtype, in the stored layout of its codes.
// Throws Error naming the file and layer if a code exceeds 2^wbits - 1,
// since such a file was not written by rtnq quantize or was damaged.
void rebuild_weight(const DequantizedLayerPlan& layer, const QuantizedMatrix& matrix, DType dtype, int threads,
                    std::vector<std::byte>& buffer) {
  const int64_t rows = matrix.out_features;
  const int64_t columns = matrix.in_features;
  buffer.resize(static_cast<size_t>(rows) * static_cast<size_t>(columns) * static_cast<size_t>(dtype_bits(dtype) / 8));
  const int thread_count = threads > 0 ? threads : omp_get_max_threads();
  const uint64_t max_code = matrix.wbits >= 64 ? UINT64_MAX : (uint64_t(1) << matrix.wbits) - 1;
  // Per output channel, the first in_features index of a code above max_code, or -1.
  std::vector<int64_t> bad_column(static_cast<size_t>(rows), -1);

#pragma omp parallel num_threads(thread_count)
  {
    std::vector<double> values(static_cast<size_t>(columns));
#pragma omp for schedule(static)
    for (int64_t row = 0; row < rows; ++row) {
      bad_column[size_t(row)] = first_code_above(matrix, row, max_code);
      if (bad_column[size_t(row)] >= 0) continue;
      dequantize_row(matrix, row, values.data());
      for (int64_t i = 0; i < columns; ++i) {
        const int64_t index = matrix.conv1d ? i * rows + row : row * columns + i;
        store_value(values[size_t(i)], dtype, buffer.data(), index);
      }
    }
  }

  for (int64_t row = 0; row < rows; ++row) {
    const int64_t column = bad_column[size_t(row)];
    if (column < 0) continue;
    const int64_t index = matrix.conv1d ? column * rows + row : row * columns + column;
    const std::vector<int64_t> position = matrix.conv1d ? std::vector<int64_t>{column, row}
                                                        : std::vector<int64_t>{row, column};
    throw Error(layer.file->path() + ": layer " + layer.layer + " has code " +
                std::to_string(read_code_bits(matrix.codes, matrix.code_dtype, index)) + " at " +
                format_shape(position) + " of " + layer.codes->name + ", above " + std::to_string(max_code) +
                ", the maximum for wbits " + std::to_string(matrix.wbits));
  }
}

// The value of config.json's "torch_dtype" for a weight dtype.
const char* torch_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F16:
      return "float16";
    case DType::BF16:
      return "bfloat16";
    default:
      return "float32";
  }
}

// Sets "torch_dtype", where the config has it, to the dtype of the rebuilt
// weights, in place so the key order stays.
std::string with_torch_dtype(const std::string& config_text, DType dtype) {
  nlohmann::ordered_json config = nlohmann::ordered_json::parse(config_text);
  if (!config.contains("torch_dtype")) return config_text;
  config["torch_dtype"] = torch_dtype_name(dtype);
  return config.dump(2) + "\n";
}

void write_text_file(AtomicOutputFile& file, const std::string& text) {
  file.write_at(text.data(), text.size(), 0);
  file.resize(text.size());
}

// Copies the folder's other files and writes config.json without its
// quantization_config and the rewritten index into the partial folder. The
// quantization report of the input folder is left out: it describes the
// quantized checkpoint, not this one.
void write_folder_files(const Checkpoint& checkpoint, const DequantizationPlan& plan, const OutputTarget& target,
                        std::vector<std::unique_ptr<AtomicOutputFile>>& files) {
  std::vector<std::string> excluded = {kShardIndexName, kConfigName, kFolderReportName};
  std::vector<ShardContents> shards;
  for (const DequantizedFilePlan& file : plan.files) {
    excluded.push_back(file.file_name);
    shards.push_back({file.file_name, &file.layout});
  }
  copy_other_files(checkpoint.path(), target.partial_folder(), excluded);

  if (checkpoint.config()) {
    const std::string config_path = (fs::path(checkpoint.path()) / kConfigName).string();
    files.push_back(std::make_unique<AtomicOutputFile>(target.path_of(kConfigName), true));
    write_text_file(*files.back(), with_torch_dtype(rewritten_config_text(config_path, std::nullopt), plan.dtype));
  }
  if (checkpoint.index() || plan.files.size() > 1) {
    const nlohmann::json* input_index = checkpoint.index() ? &*checkpoint.index() : nullptr;
    files.push_back(std::make_unique<AtomicOutputFile>(target.path_of(kShardIndexName), true));
    write_text_file(*files.back(), shard_index_text(input_index, shards));
  }
}

}  // namespace

double read_float_element(const std::byte* base, DType dtype, int64_t index) {
  switch (dtype) {
    case DType::F16: {
      uint16_t bits;
      std::memcpy(&bits, base + index * 2, 2);
      return f16_to_float(bits);
    }
    case DType::BF16: {
      uint16_t bits;
      std::memcpy(&bits, base + index * 2, 2);
      return bf16_to_float(bits);
    }
    case DType::F32: {
      float value;
      std::memcpy(&value, base + index * 4, 4);
      return value;
    }
    default: {
      double value;
      std::memcpy(&value, base + index * 8, 8);
      return value;
    }
  }
}

StoredQuantizationConfig read_quantization_config(const SafetensorsFile& file) {
  const std::string& path = file.path();
  const Metadata& metadata = file.header().metadata;
  auto entry = std::find_if(metadata.begin(), metadata.end(),
                            [](const auto& item) { return item.first == "quantization_config"; });
  if (entry == metadata.end()) {
    throw Error(path + ": no quantization_config in the metadata; only checkpoints written by rtnq quantize "
                       "can be dequantized");
  }

  nlohmann::json config;
  try {
    config = nlohmann::json::parse(entry->second);
  } catch (const nlohmann::json::exception& error) {
    throw Error(path + ": quantization_config is not valid JSON: " + json_error_text(error));
  }
  if (!config.is_object()) throw Error(path + ": quantization_config is not a JSON object");

  StoredQuantizationConfig stored;
  stored.text = entry->second;
  const std::string method = string_field(config, "quant_method", path);
  const std::string format = string_field(config, "format", path);
  stored.producer = string_field(config, "producer", path);
  if (method != "rtn" || format != "native" || stored.producer.rfind("rtnq ", 0) != 0) {
    throw Error(path + ": quantization_config is quant_method '" + method + "', format '" + format +
                "' from producer '" + stored.producer +
                "'; only checkpoints written by rtnq quantize (rtn, native) can be dequantized");
  }

  const int64_t wbits = integer_field(config, "wbits", path);
  if (wbits < 1 || wbits > 64) {
    throw Error(path + ": quantization_config has invalid wbits " + std::to_string(wbits) + ", expected 1 to 64");
  }
  stored.params.wbits = static_cast<int>(wbits);
  stored.params.groupsize = integer_field(config, "groupsize", path);
  stored.params.sym = boolean_field(config, "sym", path);
  stored.params.mse = boolean_field(config, "mse", path);
  const nlohmann::json& norm = config_field(config, "norm", path);
  if (!norm.is_number()) throw Error(path + ": quantization_config \"norm\" is not a number");
  stored.params.norm = norm.get<double>();
  stored.params.grid = integer_field(config, "grid", path);
  const std::vector<std::string> problems = validate_rtn_params(stored.params);
  if (!problems.empty()) throw Error(path + ": quantization_config has " + problems.front());
  stored.scale_dtype = scale_dtype_named(string_field(config, "scale_dtype", path), path);

  const nlohmann::json& conv1d = config_field(config, "conv1d_layers", path);
  if (!conv1d.is_array()) throw Error(path + ": quantization_config \"conv1d_layers\" is not a list");
  for (const nlohmann::json& layer : conv1d) {
    if (!layer.is_string()) throw Error(path + ": quantization_config \"conv1d_layers\" contains a value that is not a string");
    stored.conv1d_layers.push_back(layer.get<std::string>());
  }
  return stored;
}

void dequantize_row(const QuantizedMatrix& matrix, int64_t row, double* values) {
  if (computes_in_float32(matrix.wbits)) {
    dequantize_row_as<float>(matrix, row, values);
  } else {
    dequantize_row_as<double>(matrix, row, values);
  }
}

DequantizationPlan plan_dequantization(const Checkpoint& checkpoint, DType dtype) {
  if (dtype != DType::F16 && dtype != DType::BF16 && dtype != DType::F32) {
    throw Error("cannot dequantize to " + std::string(dtype_name(dtype)) + "; choose F16, BF16 or F32");
  }
  DequantizationPlan plan;
  plan.dtype = dtype;

  // Every file of a folder carries the same quantization_config.
  nlohmann::json first_config;
  for (size_t i = 0; i < checkpoint.files().size(); ++i) {
    const SafetensorsFile& file = *checkpoint.files()[i];
    StoredQuantizationConfig config = read_quantization_config(file);
    nlohmann::json parsed = nlohmann::json::parse(config.text);
    if (i == 0) {
      plan.config = std::move(config);
      first_config = std::move(parsed);
    } else if (parsed != first_config) {
      throw Error(file.path() + ": quantization_config differs from the one in " + checkpoint.files()[0]->path());
    }
  }

  // Layers, in natural name order.
  std::vector<std::map<std::string, const TensorInfo*>> names_of_file(checkpoint.files().size());
  for (size_t i = 0; i < checkpoint.files().size(); ++i) {
    const SafetensorsFile& file = *checkpoint.files()[i];
    for (const TensorInfo& tensor : file.tensors()) names_of_file[i][tensor.name] = &tensor;
    for (const TensorInfo& tensor : file.tensors()) {
      if (ends_with(tensor.name, kCodesSuffix)) {
        plan.layers.push_back(plan_layer(file, tensor, names_of_file[i], plan.config));
      }
    }
  }
  std::stable_sort(plan.layers.begin(), plan.layers.end(), [](const auto& a, const auto& b) {
    return natural_less(a.layer, b.layer);
  });

  // Tensors that the rebuilt weights replace, and the layer of each codes tensor.
  std::map<const TensorInfo*, size_t> layer_of_codes;
  std::map<const TensorInfo*, bool> replaced;
  for (size_t k = 0; k < plan.layers.size(); ++k) {
    layer_of_codes[plan.layers[k].codes] = k;
    replaced[plan.layers[k].scales] = true;
    replaced[plan.layers[k].zeros] = true;
  }

  std::map<std::string, std::string> file_of_output;  // to reject a name written twice
  for (const auto& file : checkpoint.files()) {
    DequantizedFilePlan file_plan;
    file_plan.file_name = fs::path(file->path()).filename().string();
    file_plan.input_file = file.get();
    std::vector<OutputTensor> tensors;
    std::map<std::string, std::pair<const TensorInfo*, size_t>> source_of;
    for (const TensorInfo& tensor : file->tensors()) {
      if (replaced.count(&tensor)) continue;
      auto layer = layer_of_codes.find(&tensor);
      if (layer == layer_of_codes.end()) {
        tensors.push_back({tensor.name, tensor.dtype, tensor.shape, tensor.byte_size()});
        source_of[tensor.name] = {&tensor, 0};
        continue;
      }
      const std::string name = plan.layers[layer->second].layer + ".weight";
      tensors.push_back({name, dtype, tensor.shape, byte_size_of(dtype, tensor.shape)});
      source_of[name] = {nullptr, layer->second};
    }

    Metadata metadata;
    for (const auto& entry : file->header().metadata) {
      if (entry.first != "quantization_config") metadata.push_back(entry);
    }
    const bool write_metadata = !metadata.empty();
    file_plan.layout = plan_safetensors_layout(std::move(tensors), metadata, write_metadata);
    for (const OutputTensor& tensor : file_plan.layout.tensors) {
      auto [previous, inserted] = file_of_output.emplace(tensor.name, file->path());
      if (!inserted) {
        throw Error(file->path() + ": the rebuilt checkpoint would hold " + tensor.name + " twice, here and in " +
                    previous->second);
      }
      const auto& source = source_of.at(tensor.name);
      file_plan.copied.push_back(source.first);
      file_plan.layer_indices.push_back(source.second);
    }
    plan.output_bytes += file_plan.layout.file_bytes;
    plan.files.push_back(std::move(file_plan));
  }
  return plan;
}

void dequantize_checkpoint(const Checkpoint& checkpoint, const DequantizationPlan& plan,
                           const DequantizeOptions& options) {
  check_output_path(checkpoint, options.output, options.overwrite);
  const bool directory = checkpoint.is_directory();
  OutputTarget target(options.output, directory, options.overwrite);
  std::vector<std::unique_ptr<AtomicOutputFile>> files;
  std::vector<std::byte> buffer;

  for (const DequantizedFilePlan& file_plan : plan.files) {
    files.push_back(std::make_unique<AtomicOutputFile>(target.path_of(file_plan.file_name), target.overwrite_files()));
    AtomicOutputFile& out = *files.back();
    const SafetensorsFile& input = *file_plan.input_file;
    out.write_at(file_plan.layout.header.data(), file_plan.layout.header.size(), 0);

    for (size_t k = 0; k < file_plan.layout.tensors.size(); ++k) {
      if (options.before_tensor) options.before_tensor();
      const uint64_t offset = file_plan.layout.file_offsets[k];
      if (const TensorInfo* copied = file_plan.copied[k]) {
        out.copy_from(input.mapping().fd(), input.data_offset() + copied->begin, copied->byte_size(), offset);
        continue;
      }
      const DequantizedLayerPlan& layer = plan.layers[file_plan.layer_indices[k]];
      rebuild_weight(layer, stored_matrix(layer, plan.config), plan.dtype, options.threads, buffer);
      out.write_at(buffer.data(), buffer.size(), offset);
      for (const TensorInfo* tensor : {layer.codes, layer.scales, layer.zeros}) input.release(*tensor);
    }
    out.resize(file_plan.layout.file_bytes);
  }

  if (directory) write_folder_files(checkpoint, plan, target, files);
  for (auto& file : files) file->commit();
  target.commit();
}

}  // namespace rtnq
