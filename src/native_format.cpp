#include "rtnq/native_format.hpp"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "rtnq/error.hpp"

namespace rtnq {
namespace {

std::string lowercase_dtype(DType dtype) {
  std::string name(dtype_name(dtype));
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return name;
}

uint64_t element_count(const std::vector<int64_t>& shape) {
  uint64_t count = 1;
  for (int64_t dimension : shape) count *= static_cast<uint64_t>(dimension);
  return count;
}

uint64_t byte_size_of(DType dtype, const std::vector<int64_t>& shape) {
  return element_count(shape) * static_cast<uint64_t>(dtype_bits(dtype)) / 8;
}

// Turns the indivisible layers into skipped ones, or fails naming all of them.
void apply_groupsize_rule(std::vector<TensorVerdict>& verdicts, const std::vector<const CheckpointTensor*>& tensors,
                          const FormatOptions& options) {
  if (options.params.groupsize == -1) return;
  std::vector<std::string> indivisible;
  for (size_t i = 0; i < verdicts.size(); ++i) {
    TensorVerdict& verdict = verdicts[i];
    if (!verdict.quantize) continue;
    const auto& shape = tensors[i]->info->shape;
    const int64_t in_features = verdict.conv1d ? shape[0] : shape[1];
    if (in_features % options.params.groupsize == 0) continue;
    indivisible.push_back(verdict.layer + " (in_features " + std::to_string(in_features) + ")");
    if (options.skip_indivisible) {
      verdict.quantize = false;
      verdict.conv1d = false;
      verdict.rule = SelectionRule::indivisible;
      verdict.reason = "copy: groupsize " + std::to_string(options.params.groupsize) + " does not divide in_features " +
                       std::to_string(in_features);
    }
  }
  if (indivisible.empty() || options.skip_indivisible) return;
  std::string list;
  for (const std::string& item : indivisible) list += (list.empty() ? "" : ", ") + item;
  throw Error("groupsize " + std::to_string(options.params.groupsize) + " does not divide in_features of " +
              std::to_string(indivisible.size()) + " layer(s): " + list +
              "; pass --skip-indivisible to copy them unquantized");
}

}  // namespace

std::vector<std::string> effective_conv1d_keywords(const Checkpoint& checkpoint, const FormatOptions& options) {
  if (options.conv1d_keywords_given) return options.rules.conv1d_keywords;
  const auto& config = checkpoint.config();
  if (config && config->contains("model_type") && (*config)["model_type"].is_string()) {
    return default_conv1d_keywords((*config)["model_type"].get<std::string>());
  }
  return {};
}

std::string quantization_config_json(const FormatOptions& options, const std::vector<std::string>& conv1d_layers) {
  nlohmann::ordered_json config;
  config["quant_method"] = "rtn";
  config["format"] = "native";
  config["wbits"] = options.params.wbits;
  config["groupsize"] = options.params.groupsize;
  config["sym"] = options.params.sym;
  config["mse"] = options.params.mse;
  config["norm"] = options.params.norm;
  config["grid"] = options.params.grid;
  config["scale_dtype"] = lowercase_dtype(options.scale_dtype);
  config["producer"] = std::string("rtnq ") + RTNQ_VERSION;
  config["conv1d_layers"] = conv1d_layers;
  return config.dump();
}

QuantizationPlan plan_quantization(const Checkpoint& checkpoint, const FormatOptions& options) {
  QuantizationPlan plan;
  FormatOptions effective = options;
  effective.rules.conv1d_keywords = effective_conv1d_keywords(checkpoint, options);

  std::vector<TensorDescription> descriptions;
  for (const CheckpointTensor& tensor : checkpoint.tensors()) {
    descriptions.push_back({tensor.info->name, tensor.info->dtype, tensor.info->shape});
    plan.verdict_tensors.push_back(&tensor);
  }
  plan.verdicts = select_tensors(descriptions, effective.rules);
  apply_groupsize_rule(plan.verdicts, plan.verdict_tensors, effective);

  // Layers, in natural name order.
  std::map<const CheckpointTensor*, size_t> layer_of_tensor;
  for (size_t i = 0; i < plan.verdicts.size(); ++i) {
    const TensorVerdict& verdict = plan.verdicts[i];
    const CheckpointTensor* tensor = plan.verdict_tensors[i];
    plan.total_parameters += tensor->info->element_count();
    if (!verdict.quantize) continue;
    LayerPlan layer;
    layer.layer = verdict.layer;
    layer.source = tensor;
    layer.conv1d = verdict.conv1d;
    layer.out_features = verdict.conv1d ? tensor->info->shape[1] : tensor->info->shape[0];
    layer.in_features = verdict.conv1d ? tensor->info->shape[0] : tensor->info->shape[1];
    layer.n_groups = groups_per_row(options.params, layer.in_features);
    plan.layers.push_back(layer);
    plan.quantized_parameters += tensor->info->element_count();
  }
  std::stable_sort(plan.layers.begin(), plan.layers.end(),
                   [](const LayerPlan& a, const LayerPlan& b) { return natural_less(a.layer, b.layer); });
  for (size_t i = 0; i < plan.layers.size(); ++i) layer_of_tensor[plan.layers[i].source] = i;

  // Output files, one per input file; tensors keep the input's data order.
  std::vector<std::string> conv1d_layers;
  for (const LayerPlan& layer : plan.layers) {
    if (layer.conv1d) conv1d_layers.push_back(layer.layer);
  }
  plan.quantization_config = quantization_config_json(options, conv1d_layers);
  const DType code_dtype = code_dtype_for_bits(options.params.wbits);
  const DType zero_dtype = zero_dtype_for_bits(options.params.wbits);
  size_t verdict_index = 0;
  for (const auto& file : checkpoint.files()) {
    OutputFilePlan file_plan;
    file_plan.file_name = std::filesystem::path(file->path()).filename().string();
    file_plan.input_file = file.get();
    std::vector<OutputTensor> tensors;
    std::map<std::string, OutputTensorPlan> sources;
    auto add = [&](OutputTensor tensor, OutputTensorPlan source) {
      if (sources.count(tensor.name)) {
        throw Error(file->path() + ": output tensor '" + tensor.name +
                    "' would be written twice; the input already has a tensor of that name");
      }
      sources[tensor.name] = source;
      tensors.push_back(std::move(tensor));
    };
    for (size_t k = 0; k < file->tensors().size(); ++k, ++verdict_index) {
      const CheckpointTensor* input = plan.verdict_tensors[verdict_index];
      const TensorInfo& info = *input->info;
      auto found = layer_of_tensor.find(input);
      if (found == layer_of_tensor.end()) {
        add({info.name, info.dtype, info.shape, info.byte_size()}, {TensorSource::copy, input, 0});
        continue;
      }
      const LayerPlan& layer = plan.layers[found->second];
      const std::vector<int64_t> parameter_shape = {layer.out_features, layer.n_groups};
      add({layer.layer + ".quantized_weight", code_dtype, info.shape, byte_size_of(code_dtype, info.shape)},
          {TensorSource::codes, nullptr, found->second});
      add({layer.layer + ".scale", options.scale_dtype, parameter_shape, byte_size_of(options.scale_dtype, parameter_shape)},
          {TensorSource::scales, nullptr, found->second});
      add({layer.layer + ".zero", zero_dtype, parameter_shape, byte_size_of(zero_dtype, parameter_shape)},
          {TensorSource::zeros, nullptr, found->second});
    }

    Metadata metadata;
    for (const auto& entry : file->header().metadata) {
      if (entry.first != "quantization_config") metadata.push_back(entry);
    }
    metadata.emplace_back("quantization_config", plan.quantization_config);
    file_plan.layout = plan_safetensors_layout(std::move(tensors), metadata, true);
    for (const OutputTensor& tensor : file_plan.layout.tensors) file_plan.sources.push_back(sources[tensor.name]);

    plan.input_bytes += file->file_bytes();
    plan.output_bytes += file_plan.layout.file_bytes;
    plan.files.push_back(std::move(file_plan));
  }
  return plan;
}

}  // namespace rtnq
