#include <cstdio>

#include "commands.hpp"
#include "interrupt.hpp"
#include "progress.hpp"
#include "rtnq/checkpoint.hpp"
#include "rtnq/error.hpp"
#include "rtnq/output_error.hpp"
#include "rtnq/output_folder.hpp"
#include "rtnq/quantize.hpp"

namespace rtnq::cli {
namespace {

void print_dry_run(const QuantizationPlan& plan, const QuantizeArgs& args) {
  for (const LayerPlan& layer : plan.layers) {
    // The stored shape, as inspect and the report show it: [in, out] for Conv1D.
    std::printf("quantize %-56s %s%s\n", layer.layer.c_str(), format_shape(layer.source->info->shape).c_str(),
                layer.conv1d ? " Conv1D" : "");
  }
  for (const TensorVerdict& verdict : plan.verdicts) {
    if (!verdict.quantize) std::printf("%-65s %s\n", verdict.reason.substr(0, 4).c_str(), verdict.tensor.c_str());
  }
  std::printf("%zu layers (%llu parameters) would be quantized; output %s: %s (input %s, ratio %.2f)\n",
              plan.layers.size(), static_cast<unsigned long long>(plan.quantized_parameters), args.output.c_str(),
              format_bytes(double(plan.output_bytes)).c_str(), format_bytes(double(plan.input_bytes)).c_str(),
              plan.output_bytes ? double(plan.input_bytes) / double(plan.output_bytes) : 0.0);
}

int run_quantize(const QuantizeArgs& args) {
  std::vector<std::string> problems = validate_rtn_params(args.params);
  const std::string threads = threads_problem(args.threads);
  if (!threads.empty()) problems.push_back(threads);
  if (!problems.empty()) {
    std::string message;
    for (const std::string& problem : problems) message += (message.empty() ? "" : "; ") + problem;
    throw UsageError(message);
  }

  QuantizeOptions options;
  options.input = args.input;
  options.output = without_trailing_separators(args.output);
  options.report_path = args.report;
  options.format.params = args.params;
  options.format.rules = selection_rules_from(args.selection, options.format.conv1d_keywords_given);
  options.format.skip_indivisible = args.skip_indivisible;
  options.format.scale_dtype = float_dtype_from(args.scale_dtype);
  options.activations_path = args.activations;
  options.threads = args.threads;
  options.overwrite = args.force;

  const Checkpoint checkpoint(args.input);
  if (!checkpoint.is_directory() && !args.output.empty() && args.output.back() == '/') {
    throw rtnq::Error(args.output + ": ends in '/', but the input is a file, so the output is a file too; give its name");
  }
  const QuantizationPlan plan = plan_quantization(checkpoint, options.format);
  if (plan.layers.empty() && !args.quiet) {
    std::fprintf(stderr, "rtnq: warning: no layer passes the selection rules, so the output will hold the input's "
                         "tensors unchanged; run 'rtnq inspect' with the same options to see why\n");
  }
  if (args.dry_run) {
    check_quantize_outputs(checkpoint, options);
    if (!options.activations_path.empty()) ActivationSet(options.activations_path).check_layers(plan.layers);
    print_dry_run(plan, args);
    return 0;
  }

  ProgressPrinter printer(args.quiet);
  QuantizeOutcome outcome = quantize_checkpoint(checkpoint, plan, options,
                                                [&printer](const ProgressEvent& event) {
                                                  printer(event);
                                                  throw_if_interrupted();
                                                });
  printer.finish();
  if (!args.quiet) {
    const auto& summary = outcome.report["summary"];
    std::fprintf(stderr, "rtnq: quantized %zu layers in %s: %s -> %s (ratio %.2f)\n", plan.layers.size(),
                 format_seconds(summary["wall_time"].get<double>()).c_str(),
                 format_bytes(double(plan.input_bytes)).c_str(), format_bytes(double(plan.output_bytes)).c_str(),
                 summary["compression_ratio"].get<double>());
    std::fprintf(stderr, "rtnq: wrote %s\nrtnq: report %s\n", outcome.output_path.c_str(),
                 outcome.report_path.c_str());
  }
  return 0;
}

}  // namespace

CommandSetup add_quantize_command(CLI::App& app, QuantizeArgs& args) {
  CLI::App* command = app.add_subcommand("quantize", "Quantize the linear weights of a checkpoint with RTN");
  command->add_option("INPUT", args.input, "A .safetensors file or a model folder")->required();
  command->add_option("-o,--output", args.output, "Output file (for a file input) or folder (for a folder input)")
      ->required();

  const std::string rtn = "RTN parameters";
  command->add_option("--wbits", args.params.wbits, "Bits per weight code, 1 to 64")->capture_default_str()->group(rtn);
  command->add_option("--groupsize", args.params.groupsize,
                      "Weights per scale and zero along in_features; -1 for one group per row")
      ->capture_default_str()
      ->group(rtn);
  command->add_flag("--sym", args.params.sym, "Symmetric range, zero point fixed at 2^(wbits-1)")->group(rtn);
  command->add_flag("--mse", args.params.mse, "Search a shrunken range that minimises the |error|^norm sum")
      ->group(rtn);
  command->add_option("--norm", args.params.norm, "Exponent of the error in the --mse search")
      ->capture_default_str()
      ->group(rtn);
  command->add_option("--grid", args.params.grid, "Shrink steps of the --mse search (it tries 0.8 * grid of them)")
      ->capture_default_str()
      ->group(rtn);
  command->add_flag("--skip-indivisible", args.skip_indivisible,
                    "Copy layers whose in_features is not a multiple of --groupsize instead of failing")
      ->group(rtn);

  add_selection_options(*command, args.selection);

  const std::string output = "Output";
  command->add_option("--scale-dtype", args.scale_dtype, "Stored dtype of the scales")
      ->check(CLI::IsMember({"f16", "bf16", "f32"}))
      ->capture_default_str()
      ->group(output);
  command->add_option("--activations", args.activations,
                      "safetensors file of input rows per layer ([rows, in] or [batch, seq, in]) for the output error")
      ->group(output);
  command->add_option("--report", args.report,
                      "Report path [default: OUTPUT.report.json, or OUTPUT/quantization_report.json for a folder]")
      ->group(output);
  command->add_flag("--force", args.force, "Replace an existing output")->group(output);
  command->add_flag("--dry-run", args.dry_run, "Print what would be quantized and the output size; write nothing")
      ->group(output);

  command->add_option("--threads", args.threads, "Worker threads; 0 uses every core")->capture_default_str();
  command->add_flag("-q,--quiet", args.quiet, "Print nothing but errors");
  command->footer(
      "Example:\n"
      "  rtnq quantize model.safetensors -o model-w4g128.safetensors --wbits 4 --groupsize 128\n"
      "Exit status: 0 success, 1 input or runtime error, 2 usage error.");
  return {command, [&args] { return run_quantize(args); }};
}

}  // namespace rtnq::cli
