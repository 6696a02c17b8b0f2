#include "rtnq/report.hpp"

#include <algorithm>
#include <filesystem>

namespace rtnq {
namespace {

using json = nlohmann::ordered_json;

json optional_number(const std::optional<double>& value) { return value ? json(*value) : json(nullptr); }

std::string lowercase(std::string_view text) {
  std::string result(text);
  std::transform(result.begin(), result.end(), result.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return result;
}

json selection_json(const SelectionRules& rules, const std::vector<std::string>& conv1d_keywords) {
  json selection;
  selection["include_layer_names"] = rules.include_layer_names ? json(*rules.include_layer_names) : json(nullptr);
  selection["include_layer_keywords"] =
      rules.include_layer_keywords ? json(*rules.include_layer_keywords) : json(nullptr);
  selection["exclude_layer_names"] = rules.exclude_layer_names;
  selection["exclude_layer_keywords"] = rules.exclude_layer_keywords;
  selection["num_layers"] = rules.num_layers ? json(*rules.num_layers) : json(nullptr);
  selection["conv1d_keywords"] = conv1d_keywords;
  return selection;
}

json layer_json(const LayerPlan& layer, const LayerResult& result, const FormatOptions& options) {
  const TensorInfo& info = *layer.source->info;
  json entry;
  entry["name"] = layer.layer;
  entry["tensor"] = info.name;
  entry["file"] = std::filesystem::path(layer.source->file->path()).filename().string();
  entry["shape"] = info.shape;
  entry["dtype"] = std::string(dtype_name(info.dtype));
  entry["conv1d"] = layer.conv1d;
  entry["wbits"] = options.params.wbits;
  entry["groupsize"] = options.params.groupsize;
  entry["sym"] = options.params.sym;
  entry["quantization_time"] = result.seconds;
  entry["weight_squared_error"] = result.weight_error.squared_error;
  entry["mean_weight_squared_error"] = result.weight_error.mean_squared_error();
  entry["relative_weight_squared_error"] = optional_number(result.weight_error.relative_squared_error());
  if (result.output_error) {
    entry["output_squared_error"] = result.output_error->squared_error;
    entry["mean_output_squared_error"] = result.output_error->mean_squared_error();
    entry["relative_output_squared_error"] = optional_number(result.output_error->relative_squared_error());
  } else {
    entry["output_squared_error"] = nullptr;
    entry["mean_output_squared_error"] = nullptr;
    entry["relative_output_squared_error"] = nullptr;
  }
  return entry;
}

json summary_json(const QuantizationPlan& plan, const std::vector<LayerResult>& results, const RunDescription& run,
                  size_t skipped_indivisible) {
  json summary;
  summary["layers_quantized"] = plan.layers.size();
  summary["tensors_copied"] = plan.verdicts.size() - plan.layers.size();
  summary["layers_skipped_indivisible"] = skipped_indivisible;
  summary["parameters_quantized"] = plan.quantized_parameters;
  summary["parameters_total"] = plan.total_parameters;
  summary["input_bytes"] = plan.input_bytes;
  summary["output_bytes"] = plan.output_bytes;
  summary["compression_ratio"] = plan.output_bytes ? double(plan.input_bytes) / double(plan.output_bytes) : 0.0;
  summary["wall_time"] = run.wall_seconds;
  summary["input_bytes_per_second"] = run.wall_seconds > 0 ? double(plan.input_bytes) / run.wall_seconds : 0.0;
  summary["parameters_per_second"] =
      run.wall_seconds > 0 ? double(plan.quantized_parameters) / run.wall_seconds : 0.0;

  // Mean and worst relative weight error over the layers that have one.
  std::vector<std::pair<double, size_t>> relative;
  for (size_t i = 0; i < results.size(); ++i) {
    if (auto value = results[i].weight_error.relative_squared_error()) relative.emplace_back(*value, i);
  }
  double sum = 0;
  for (const auto& item : relative) sum += item.first;
  summary["mean_relative_weight_squared_error"] =
      relative.empty() ? json(nullptr) : json(sum / double(relative.size()));
  std::stable_sort(relative.begin(), relative.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  summary["worst_relative_weight_squared_error"] = relative.empty() ? json(nullptr) : json(relative.front().first);
  json worst = json::array();
  for (size_t k = 0; k < relative.size() && k < 5; ++k) {
    worst.push_back({{"name", plan.layers[relative[k].second].layer},
                     {"relative_weight_squared_error", relative[k].first}});
  }
  summary["worst_layers"] = worst;

  std::vector<double> output_relative;
  for (const LayerResult& result : results) {
    if (!result.output_error) continue;
    if (auto value = result.output_error->relative_squared_error()) output_relative.push_back(*value);
  }
  if (output_relative.empty()) {
    summary["mean_relative_output_squared_error"] = nullptr;
    summary["worst_relative_output_squared_error"] = nullptr;
  } else {
    double output_sum = 0;
    for (double value : output_relative) output_sum += value;
    summary["mean_relative_output_squared_error"] = output_sum / double(output_relative.size());
    summary["worst_relative_output_squared_error"] =
        *std::max_element(output_relative.begin(), output_relative.end());
  }
  return summary;
}

}  // namespace

json build_report(const QuantizationPlan& plan, const std::vector<LayerResult>& results, const RunDescription& run) {
  json report;
  report["tool"] = "rtnq";
  report["version"] = RTNQ_VERSION;
  report["input"] = run.input_path;
  report["output"] = run.output_path;
  report["activations"] = run.activations_path.empty() ? json(nullptr) : json(run.activations_path);

  const RtnParams& params = run.options.params;
  json parameters;
  parameters["wbits"] = params.wbits;
  parameters["groupsize"] = params.groupsize;
  parameters["sym"] = params.sym;
  parameters["mse"] = params.mse;
  parameters["norm"] = params.norm;
  parameters["grid"] = params.grid;
  parameters["scale_dtype"] = lowercase(dtype_name(run.options.scale_dtype));
  parameters["skip_indivisible"] = run.options.skip_indivisible;
  parameters["threads"] = run.threads;
  report["parameters"] = parameters;
  report["selection"] = selection_json(run.options.rules, run.conv1d_keywords);

  json layers = json::array();
  for (size_t i = 0; i < plan.layers.size(); ++i) layers.push_back(layer_json(plan.layers[i], results[i], run.options));
  report["layers"] = layers;

  json skipped = json::array();
  size_t skipped_indivisible = 0;
  for (size_t i = 0; i < plan.verdicts.size(); ++i) {
    const TensorVerdict& verdict = plan.verdicts[i];
    if (verdict.quantize) continue;
    if (verdict.rule == SelectionRule::indivisible) skipped_indivisible += 1;
    const TensorInfo& info = *plan.verdict_tensors[i]->info;
    skipped.push_back({{"tensor", verdict.tensor},
                       {"file", std::filesystem::path(plan.verdict_tensors[i]->file->path()).filename().string()},
                       {"shape", info.shape},
                       {"dtype", std::string(dtype_name(info.dtype))},
                       {"reason", verdict.reason.substr(verdict.reason.rfind("copy: ", 0) == 0 ? 6 : 0)}});
  }
  report["skipped"] = skipped;
  report["summary"] = summary_json(plan, results, run, skipped_indivisible);
  return report;
}

}  // namespace rtnq
