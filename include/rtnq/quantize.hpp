// The quantization run: plan, then quantize and write every output file.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "rtnq/checkpoint.hpp"
#include "rtnq/native_format.hpp"
#include "rtnq/report.hpp"

namespace rtnq {

struct QuantizeOptions {
  std::string input;
  std::string output;
  std::string report_path;  // empty: the default beside or inside the output
  FormatOptions format;
  std::string activations_path;  // empty: no output error
  int threads = 0;               // <= 0: the OpenMP default
  bool overwrite = false;
};

// Sent after each quantized layer.
struct ProgressEvent {
  size_t layers_done = 0;
  size_t layers_total = 0;
  const LayerPlan* layer = nullptr;
  const LayerResult* result = nullptr;
  uint64_t bytes_done = 0;   // input bytes handled so far
  uint64_t bytes_total = 0;
  double elapsed_seconds = 0;
};
using ProgressCallback = std::function<void(const ProgressEvent&)>;

struct QuantizeOutcome {
  std::vector<LayerResult> layers;  // parallel to plan.layers
  nlohmann::ordered_json report;
  std::string output_path;
  std::string report_path;
};

// The report path used when none is given: OUTPUT.report.json beside a file
// output, OUTPUT/quantization_report.json inside a folder output.
std::string default_report_path(const std::string& output, bool directory_output);

// Throws Error if output is the input, the same file by another name,
// inside the input folder or a folder that contains an input file, or if it
// exists and overwrite is false.
void check_output_path(const Checkpoint& checkpoint, const std::string& output, bool overwrite);

// Throws Error if the report file would be an input file (under any name),
// inside the input folder, or the output itself, or if it exists and
// overwrite is false.
void check_report_path(const Checkpoint& checkpoint, const std::string& report, const std::string& output,
                       bool overwrite);

// Runs check_output_path and check_report_path for the output and report
// paths of options.
void check_quantize_outputs(const Checkpoint& checkpoint, const QuantizeOptions& options);

// Quantizes the checkpoint as planned and writes the output and the report.
// Nothing appears under the output names unless the whole run succeeds.
QuantizeOutcome quantize_checkpoint(const Checkpoint& checkpoint, const QuantizationPlan& plan,
                                    const QuantizeOptions& options, const ProgressCallback& progress);

}  // namespace rtnq
