#include "rtnq/report_view.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <vector>

#include "rtnq/error.hpp"
#include "rtnq/json_text.hpp"
#include "rtnq/selection.hpp"

namespace rtnq {
namespace {

using json = nlohmann::ordered_json;

constexpr size_t kShapeMaxWidth = 16;
constexpr size_t kNumberWidth = 12;  // "1.23e-02" right-aligned under a header of up to 12 characters
constexpr size_t kRatioWidth = 8;

// printf into a std::string.
template <class... Args>
std::string printed(const char* format, Args... args) {
  const int length = std::snprintf(nullptr, 0, format, args...);
  std::string text(static_cast<size_t>(std::max(length, 0)) + 1, '\0');
  std::snprintf(text.data(), text.size(), format, args...);
  text.pop_back();
  return text;
}

std::optional<double> number_at(const json& object, const char* key) {
  if (!object.is_object() || !object.contains(key) || !object[key].is_number()) return std::nullopt;
  return object[key].get<double>();
}

std::string integer_text(const json& object, const char* key) {
  if (!object.is_object() || !object.contains(key) || !object[key].is_number_integer()) return "-";
  return std::to_string(object[key].get<int64_t>());
}

std::string string_at(const json& object, const char* key) {
  if (!object.is_object() || !object.contains(key) || !object[key].is_string()) return "-";
  return object[key].get<std::string>();
}

// Cuts text to width characters, keeping its end: a layer name differs from
// its neighbours in the last components.
std::string fitted(const std::string& text, size_t width) {
  if (text.size() <= width) return text;
  if (width <= 3) return text.substr(text.size() - width);
  return "..." + text.substr(text.size() - (width - 3));
}

std::string padded(const std::string& text, size_t width) {
  return text.size() >= width ? text : text + std::string(width - text.size(), ' ');
}

std::string right_aligned(const std::string& text, size_t width) {
  return text.size() >= width ? text : std::string(width - text.size(), ' ') + text;
}

std::optional<double> ratio_of(const std::optional<double>& numerator, const std::optional<double>& denominator) {
  if (!numerator || !denominator || *denominator == 0) return std::nullopt;
  return *numerator / *denominator;
}

std::string shape_text(const json& layer) {
  if (!layer.contains("shape") || !layer["shape"].is_array()) return "-";
  std::string text = "[";
  for (size_t i = 0; i < layer["shape"].size(); ++i) {
    const json& dimension = layer["shape"][i];
    text += (i ? ", " : "") + (dimension.is_number_integer() ? std::to_string(dimension.get<int64_t>()) : "?");
  }
  return text + "]";
}

// "wbits 4, groupsize 32, asymmetric, scale f16", plus the MSE search settings.
std::string settings_text(const json& report) {
  const json& parameters = report["parameters"];
  std::string text = "wbits " + integer_text(parameters, "wbits") + ", groupsize " +
                     integer_text(parameters, "groupsize") + ", ";
  const bool sym = parameters.contains("sym") && parameters["sym"].is_boolean() && parameters["sym"].get<bool>();
  text += sym ? "symmetric" : "asymmetric";
  text += ", scale " + string_at(parameters, "scale_dtype");
  if (parameters.contains("mse") && parameters["mse"].is_boolean() && parameters["mse"].get<bool>()) {
    text += ", mse (norm " + printed("%g", number_at(parameters, "norm").value_or(0)) + ", grid " +
            integer_text(parameters, "grid") + ")";
  }
  return text;
}

struct LayerRow {
  std::string name;
  std::string shape;
  std::optional<double> weight_error;  // relative squared errors
  std::optional<double> output_error;
  std::optional<double> seconds;
};

std::vector<LayerRow> layer_rows(const json& report) {
  std::vector<LayerRow> rows;
  for (const json& layer : report["layers"]) {
    LayerRow row;
    row.name = string_at(layer, "name");
    row.shape = shape_text(layer);
    row.weight_error = number_at(layer, "relative_weight_squared_error");
    row.output_error = number_at(layer, "relative_output_squared_error");
    row.seconds = number_at(layer, "quantization_time");
    rows.push_back(row);
  }
  return rows;
}

bool has_output_error(const std::vector<LayerRow>& rows) {
  return std::any_of(rows.begin(), rows.end(), [](const LayerRow& row) { return row.output_error.has_value(); });
}

// Largest first; rows without a value go last, in their previous order.
void sort_descending(std::vector<size_t>& order, const std::vector<std::optional<double>>& keys) {
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (!keys[a] || !keys[b]) return keys[a].has_value() && !keys[b].has_value();
    return *keys[a] > *keys[b];
  });
}

// The row order and the words that describe it.
std::vector<size_t> sorted_order(const std::vector<std::string>& names, const std::vector<std::optional<double>>& errors,
                                 const std::vector<std::optional<double>>& seconds, ReportSort sort) {
  std::vector<size_t> order(names.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  switch (sort) {
    case ReportSort::name:
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return natural_less(names[a], names[b]); });
      break;
    case ReportSort::time:
      sort_descending(order, seconds);
      break;
    case ReportSort::error:
      sort_descending(order, errors);
      break;
  }
  return order;
}

std::string order_text(ReportSort sort, const std::string& error_kind) {
  switch (sort) {
    case ReportSort::name:
      return "in name order";
    case ReportSort::time:
      return "longest quantization time first";
    case ReportSort::error:
      break;
  }
  return "largest relative " + error_kind + " first";
}

std::string shown_text(size_t shown, size_t total, ReportSort sort, const std::string& error_kind) {
  return printed("%zu of %zu layers, ", shown, total) + order_text(sort, error_kind) + "\n";
}

size_t shown_count(size_t total, const ReportViewOptions& options) {
  return options.top == 0 ? total : std::min(options.top, total);
}

// The name column's width: the longest name, at most what the other columns leave.
size_t name_width(const std::vector<std::string>& names, size_t other_columns) {
  size_t longest = 5;  // "layer"
  for (const std::string& name : names) longest = std::max(longest, name.size());
  const size_t available = kReportViewColumns > other_columns + 10 ? kReportViewColumns - other_columns : 10;
  return std::min(longest, available);
}

constexpr size_t kSummaryLabelWidth = 16;

// "  label           text". The caller keeps text within the view's width.
std::string summary_line(const std::string& label, const std::string& text) {
  return "  " + padded(label, kSummaryLabelWidth) + text + "\n";
}

// "N thing" or "N things".
std::string counted(const std::string& count, const std::string& thing) {
  return count + " " + thing + (count == "1" ? "" : "s");
}

std::string worst_layer_name(const json& summary) {
  if (!summary.contains("worst_layers") || !summary["worst_layers"].is_array() || summary["worst_layers"].empty()) {
    return "";
  }
  return string_at(summary["worst_layers"][0], "name");
}

std::string summary_text(const json& report) {
  const json& summary = report["summary"];
  std::string text = "summary\n";
  text += summary_line("layers", integer_text(summary, "layers_quantized") + " quantized, " +
                                     counted(integer_text(summary, "tensors_copied"), "tensor") + " copied, " +
                                     counted(integer_text(summary, "layers_skipped_indivisible"), "layer") +
                                     " skipped as indivisible");
  text += summary_line("parameters", integer_text(summary, "parameters_quantized") + " of " +
                                         integer_text(summary, "parameters_total") + " quantized");
  text += summary_line("bytes", integer_text(summary, "input_bytes") + " -> " + integer_text(summary, "output_bytes") +
                                    ", compression ratio " +
                                    format_scientific(number_at(summary, "compression_ratio")));
  text += summary_line("wall time", format_scientific(number_at(summary, "wall_time")) + " s, " +
                                        format_scientific(number_at(summary, "input_bytes_per_second")) +
                                        " input bytes/s");
  std::string weight_error = "mean " + format_scientific(number_at(summary, "mean_relative_weight_squared_error")) +
                             ", worst " + format_scientific(number_at(summary, "worst_relative_weight_squared_error"));
  const std::string worst_name = worst_layer_name(summary);
  if (!worst_name.empty()) {
    // The name gets the rest of the line; a long one keeps its last components.
    weight_error += " in ";
    const size_t used = 2 + kSummaryLabelWidth + weight_error.size();
    weight_error += fitted(worst_name, kReportViewColumns > used + 10 ? kReportViewColumns - used : 10);
  }
  text += summary_line("weight error", weight_error);
  if (number_at(summary, "mean_relative_output_squared_error")) {
    text += summary_line("output error",
                         "mean " + format_scientific(number_at(summary, "mean_relative_output_squared_error")) +
                             ", worst " + format_scientific(number_at(summary, "worst_relative_output_squared_error")));
  }
  return text;
}

const json* find_layer(const json& report, const std::string& name) {
  for (const json& layer : report["layers"]) {
    if (layer.is_object() && layer.contains("name") && layer["name"] == name) return &layer;
  }
  return nullptr;
}

}  // namespace

json read_report_file(const std::string& path) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) {
    throw Error(path + ": is a folder, not a report file; give the report's path, such as " +
                (std::filesystem::path(path) / "quantization_report.json").string());
  }
  if (!std::filesystem::is_regular_file(path, error)) throw Error(path + ": report not found");
  std::ifstream stream(path, std::ios::binary);
  if (!stream) throw Error(path + ": cannot open the report");
  json report;
  try {
    report = json::parse(stream);
  } catch (const json::exception& error) {
    throw Error(path + ": the report is not valid JSON: " + json_error_text(error));
  }
  if (!report.is_object() || !report.contains("tool") || report["tool"] != "rtnq") {
    throw Error(path + ": not a report of rtnq quantize (no \"tool\": \"rtnq\")");
  }
  if (!report.contains("parameters") || !report["parameters"].is_object()) {
    throw Error(path + ": the report has no \"parameters\" object");
  }
  if (!report.contains("layers") || !report["layers"].is_array()) {
    throw Error(path + ": the report has no \"layers\" list");
  }
  if (!report.contains("summary") || !report["summary"].is_object()) {
    throw Error(path + ": the report has no \"summary\" object");
  }
  return report;
}

std::string format_scientific(const std::optional<double>& value) {
  return value ? printed("%.2e", *value) : "-";
}

std::string format_report(const json& report, const ReportViewOptions& options) {
  const std::vector<LayerRow> rows = layer_rows(report);
  const bool with_output = has_output_error(rows);

  std::vector<std::string> names;
  std::vector<std::optional<double>> errors;
  std::vector<std::optional<double>> seconds;
  size_t shape_width = 5;  // "shape"
  for (const LayerRow& row : rows) {
    names.push_back(row.name);
    errors.push_back(with_output ? row.output_error : row.weight_error);
    seconds.push_back(row.seconds);
    shape_width = std::max(shape_width, std::min(row.shape.size(), kShapeMaxWidth));
  }
  const size_t other_columns = 2 + shape_width + (with_output ? 2 : 1) * (2 + kNumberWidth) + 2 + kNumberWidth;
  const size_t width = name_width(names, other_columns);

  std::string text;
  text += fitted("input       " + string_at(report, "input"), kReportViewColumns) + "\n";
  text += fitted("output      " + string_at(report, "output"), kReportViewColumns) + "\n";
  text += "settings    " + settings_text(report) + "\n";
  if (with_output) text += fitted("activations " + string_at(report, "activations"), kReportViewColumns) + "\n";
  text += "errors are relative squared errors, sum (W - W^)^2 / sum W^2 and the same for W X^T\n\n";

  std::string header = padded("layer", width) + "  " + padded("shape", shape_width) + "  " +
                       right_aligned("weight error", kNumberWidth);
  if (with_output) header += "  " + right_aligned("output error", kNumberWidth);
  header += "  " + right_aligned("time (s)", kNumberWidth);
  text += header + "\n";

  const std::vector<size_t> order = sorted_order(names, errors, seconds, options.sort);
  const size_t shown = shown_count(rows.size(), options);
  for (size_t k = 0; k < shown; ++k) {
    const LayerRow& row = rows[order[k]];
    std::string line = padded(fitted(row.name, width), width) + "  " +
                       padded(fitted(row.shape, shape_width), shape_width) + "  " +
                       right_aligned(format_scientific(row.weight_error), kNumberWidth);
    if (with_output) line += "  " + right_aligned(format_scientific(row.output_error), kNumberWidth);
    line += "  " + right_aligned(format_scientific(row.seconds), kNumberWidth);
    text += line + "\n";
  }
  text += shown_text(shown, rows.size(), options.sort, with_output ? "output error" : "weight error") + "\n";
  text += summary_text(report);
  return text;
}

std::string format_report_comparison(const json& first, const json& second, const ReportViewOptions& options) {
  const std::vector<LayerRow> first_rows = layer_rows(first);
  const std::vector<LayerRow> second_rows = layer_rows(second);
  const bool with_output = has_output_error(first_rows) && has_output_error(second_rows);

  // Layers of A, then those only in B.
  std::vector<std::string> names;
  for (const LayerRow& row : first_rows) names.push_back(row.name);
  for (const LayerRow& row : second_rows) {
    if (!find_layer(first, row.name)) names.push_back(row.name);
  }
  std::map<std::string, const LayerRow*> first_by_name;
  std::map<std::string, const LayerRow*> second_by_name;
  for (const LayerRow& row : first_rows) first_by_name[row.name] = &row;
  for (const LayerRow& row : second_rows) second_by_name[row.name] = &row;
  auto value_of = [](const std::map<std::string, const LayerRow*>& rows, const std::string& name,
                     std::optional<double> LayerRow::*field) -> std::optional<double> {
    auto found = rows.find(name);
    return found == rows.end() ? std::nullopt : found->second->*field;
  };

  std::vector<std::optional<double>> errors;
  std::vector<std::optional<double>> seconds;
  for (const std::string& name : names) {
    errors.push_back(value_of(first_by_name, name, with_output ? &LayerRow::output_error : &LayerRow::weight_error));
    seconds.push_back(value_of(first_by_name, name, &LayerRow::seconds));
  }
  const size_t group_width = 3 * (2 + kRatioWidth);
  const size_t width = name_width(names, (with_output ? 2 : 1) * group_width);

  std::string text;
  text += fitted("A  " + string_at(first, "output"), kReportViewColumns) + "\n";
  text += "   " + settings_text(first) + "\n";
  text += fitted("B  " + string_at(second, "output"), kReportViewColumns) + "\n";
  text += "   " + settings_text(second) + "\n";
  text += "errors are relative squared errors; B/A below 1 means B is closer to the original\n\n";

  auto cells = [](const std::vector<std::string>& values) {
    std::string joined;
    for (const std::string& value : values) joined += "  " + right_aligned(value, kRatioWidth);
    return joined;
  };
  std::string header = padded("layer", width) + cells({"A weight", "B weight", "B/A"});
  if (with_output) header += cells({"A output", "B output", "B/A"});
  text += header + "\n";

  const std::vector<size_t> order = sorted_order(names, errors, seconds, options.sort);
  const size_t shown = shown_count(names.size(), options);
  for (size_t k = 0; k < shown; ++k) {
    const std::string& name = names[order[k]];
    const auto first_weight = value_of(first_by_name, name, &LayerRow::weight_error);
    const auto second_weight = value_of(second_by_name, name, &LayerRow::weight_error);
    std::string line = padded(fitted(name, width), width) +
                       cells({format_scientific(first_weight), format_scientific(second_weight),
                              format_scientific(ratio_of(second_weight, first_weight))});
    if (with_output) {
      const auto first_output = value_of(first_by_name, name, &LayerRow::output_error);
      const auto second_output = value_of(second_by_name, name, &LayerRow::output_error);
      line += cells({format_scientific(first_output), format_scientific(second_output),
                     format_scientific(ratio_of(second_output, first_output))});
    }
    text += line + "\n";
  }
  text += shown_text(shown, names.size(), options.sort, with_output ? "output error of A" : "weight error of A");

  // Layers quantized in one run only (such as those --skip-indivisible
  // copied) make the two summaries average over different layers.
  size_t only_first = 0;
  size_t only_second = 0;
  for (const std::string& name : names) {
    if (!second_by_name.count(name)) only_first += 1;
    if (!first_by_name.count(name)) only_second += 1;
  }
  if (only_first + only_second > 0) {
    text += counted(std::to_string(only_first), "layer") + " quantized only in A and " + std::to_string(only_second) +
            " only in B, so the summaries cover different layers\n";
  }
  text += "\n";

  // The summaries, one row per measure.
  const json& first_summary = first["summary"];
  const json& second_summary = second["summary"];
  text += padded("summary", 28) + cells({"A", "B", "B/A"}) + "\n";
  auto summary_row = [&](const std::string& label, const char* key) {
    const auto a = number_at(first_summary, key);
    const auto b = number_at(second_summary, key);
    return padded("  " + label, 28) + cells({format_scientific(a), format_scientific(b), format_scientific(ratio_of(b, a))}) +
           "\n";
  };
  text += summary_row("output bytes", "output_bytes");
  text += summary_row("compression ratio", "compression_ratio");
  text += summary_row("mean weight error", "mean_relative_weight_squared_error");
  text += summary_row("worst weight error", "worst_relative_weight_squared_error");
  if (with_output) {
    text += summary_row("mean output error", "mean_relative_output_squared_error");
    text += summary_row("worst output error", "worst_relative_output_squared_error");
  }
  text += summary_row("wall time (s)", "wall_time");
  return text;
}

std::string format_summary_fields(const json& report) {
  std::string text;
  for (const auto& item : report["summary"].items()) {
    const json& value = item.value();
    if (value.is_number_integer()) {
      text += item.key() + "\t" + printed("%lld", static_cast<long long>(value.get<int64_t>())) + "\n";
    } else if (value.is_number()) {
      text += item.key() + "\t" + format_scientific(value.get<double>()) + "\n";
    } else if (value.is_null()) {
      text += item.key() + "\t-\n";
    }
  }
  return text;
}

}  // namespace rtnq
