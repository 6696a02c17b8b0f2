// The JSON report of a quantization run.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "rtnq/error_metrics.hpp"
#include "rtnq/native_format.hpp"

namespace rtnq {

// Measurements of one quantized layer.
struct LayerResult {
  double seconds = 0;
  ErrorStats weight_error;
  std::optional<ErrorStats> output_error;  // only with activations
};

// Facts the report records about the run beside the plan and the layers.
struct RunDescription {
  std::string input_path;
  std::string output_path;
  std::string activations_path;  // empty if none
  FormatOptions options;
  std::vector<std::string> conv1d_keywords;  // in effect
  int threads = 0;
  double wall_seconds = 0;
};

// Builds the report: parameters, one entry per layer (OneComp RTNResult field
// names), every skipped tensor with its reason, and the summary.
// results is parallel to plan.layers.
nlohmann::ordered_json build_report(const QuantizationPlan& plan, const std::vector<LayerResult>& results,
                                    const RunDescription& run);

}  // namespace rtnq
