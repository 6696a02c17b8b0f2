#include <cstdio>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "progress.hpp"
#include "rtnq/checkpoint.hpp"
#include "rtnq/selection.hpp"

namespace rtnq::cli {
namespace {

int run_inspect(const InspectArgs& args) {
  const Checkpoint checkpoint(args.input);
  FormatOptions options;
  options.rules = selection_rules_from(args.selection, options.conv1d_keywords_given);
  options.rules.conv1d_keywords = effective_conv1d_keywords(checkpoint, options);

  std::vector<TensorDescription> descriptions;
  for (const CheckpointTensor& tensor : checkpoint.tensors()) {
    descriptions.push_back({tensor.info->name, tensor.info->dtype, tensor.info->shape});
  }
  const std::vector<TensorVerdict> verdicts = select_tensors(descriptions, options.rules);

  if (args.json) {
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (size_t i = 0; i < verdicts.size(); ++i) {
      const CheckpointTensor& tensor = checkpoint.tensors()[i];
      list.push_back({{"tensor", tensor.info->name},
                      {"layer", verdicts[i].layer},
                      {"file", tensor.file->path()},
                      {"dtype", std::string(dtype_name(tensor.info->dtype))},
                      {"shape", tensor.info->shape},
                      {"bytes", tensor.info->byte_size()},
                      {"quantize", verdicts[i].quantize},
                      {"conv1d", verdicts[i].conv1d},
                      {"reason", verdicts[i].reason}});
    }
    std::printf("%s\n", list.dump(2).c_str());
    return 0;
  }

  size_t selected = 0;
  uint64_t selected_bytes = 0;
  std::printf("%-56s %-6s %-14s %10s  %s\n", "tensor", "dtype", "shape", "bytes", "verdict");
  for (size_t i = 0; i < verdicts.size(); ++i) {
    const TensorInfo& info = *checkpoint.tensors()[i].info;
    std::printf("%-56s %-6s %-14s %10llu  %s\n", info.name.c_str(), std::string(dtype_name(info.dtype)).c_str(),
                format_shape(info.shape).c_str(), static_cast<unsigned long long>(info.byte_size()),
                verdicts[i].reason.c_str());
    if (verdicts[i].quantize) {
      selected += 1;
      selected_bytes += info.byte_size();
    }
  }
  std::printf("%zu of %zu tensors would be quantized (%s of %s)\n", selected, verdicts.size(),
              format_bytes(double(selected_bytes)).c_str(), format_bytes(double(checkpoint.total_file_bytes())).c_str());
  return 0;
}

}  // namespace

CommandSetup add_inspect_command(CLI::App& app, InspectArgs& args) {
  CLI::App* command = app.add_subcommand("inspect", "List every tensor with its dtype, shape, size and the verdict");
  command->add_option("INPUT", args.input, "A .safetensors file or a model folder")->required();
  command->add_flag("--json", args.json, "Print a JSON array instead of a table");
  add_selection_options(*command, args.selection);
  command->footer("Example:\n  rtnq inspect model.safetensors --exclude-name '' --include-keyword mlp");
  return {command, [&args] { return run_inspect(args); }};
}

}  // namespace rtnq::cli
