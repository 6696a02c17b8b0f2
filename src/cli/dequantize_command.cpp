#include <cstdio>
#include <memory>

#include "commands.hpp"
#include "interrupt.hpp"
#include "progress.hpp"
#include "rtnq/checkpoint.hpp"
#include "rtnq/dequantize.hpp"
#include "rtnq/output_folder.hpp"

namespace rtnq::cli {
namespace {

struct DequantizeArgs {
  std::string input;
  std::string output;
  std::string dtype = "bf16";
  int threads = 0;
  bool force = false;
  bool quiet = false;
};

int run_dequantize(const DequantizeArgs& args) {
  const std::string threads = threads_problem(args.threads);
  if (!threads.empty()) throw UsageError(threads);
  const Checkpoint checkpoint(args.input);
  const DequantizationPlan plan = plan_dequantization(checkpoint, float_dtype_from(args.dtype));

  DequantizeOptions options;
  options.output = without_trailing_separators(args.output);
  options.threads = args.threads;
  options.overwrite = args.force;
  options.before_tensor = throw_if_interrupted;
  dequantize_checkpoint(checkpoint, plan, options);
  if (!args.quiet) {
    std::fprintf(stderr, "rtnq: dequantized %zu layers to %s: %s -> %s (%s)\n", plan.layers.size(),
                 std::string(dtype_name(plan.dtype)).c_str(), args.input.c_str(), options.output.c_str(),
                 format_bytes(double(plan.output_bytes)).c_str());
  }
  return 0;
}

}  // namespace

CommandSetup add_dequantize_command(CLI::App& app) {
  auto args = std::make_shared<DequantizeArgs>();
  CLI::App* command = app.add_subcommand(
      "dequantize", "Rebuild float weights (code - zero) * scale from a checkpoint written by rtnq quantize");
  command->add_option("INPUT", args->input, "A .safetensors file or a model folder written by rtnq quantize")
      ->required();
  command->add_option("-o,--output", args->output, "Output file (for a file input) or folder (for a folder input)")
      ->required();
  command->add_option("--dtype", args->dtype, "Dtype of the rebuilt weights; other tensors keep theirs")
      ->check(CLI::IsMember({"bf16", "f16", "f32"}))
      ->capture_default_str();
  command->add_option("--threads", args->threads, "Worker threads; 0 uses every core")->capture_default_str();
  command->add_flag("--force", args->force, "Replace an existing output");
  command->add_flag("-q,--quiet", args->quiet, "Print nothing but errors");
  command->footer(
      "Example:\n"
      "  rtnq dequantize model-w4g128.safetensors -o model-w4g128-bf16.safetensors --dtype bf16\n"
      "Exit status: 0 success, 1 input or runtime error, 2 usage error.");
  return {command, [args] { return run_dequantize(*args); }};
}

}  // namespace rtnq::cli
