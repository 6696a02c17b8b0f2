#include "commands.hpp"

namespace rtnq::cli {
namespace {

// A list option replaces its default; a single empty value ('') clears it.
std::vector<std::string> given_list(const std::vector<std::string>& values) {
  std::vector<std::string> list;
  for (const std::string& value : values) {
    if (!value.empty()) list.push_back(value);
  }
  return list;
}

}  // namespace

void add_selection_options(CLI::App& command, SelectionArgs& args) {
  const std::string group = "Layer selection (names without the trailing .weight)";
  args.include_names_option =
      command.add_option("--include-name", args.include_names, "Quantize only these layers (exact names)")
          ->group(group);
  args.include_keywords_option =
      command.add_option("--include-keyword", args.include_keywords, "Quantize only layers containing one of these")
          ->group(group);
  args.exclude_names_option =
      command.add_option("--exclude-name", args.exclude_names,
                         "Skip these layers (exact names) [default: lm_head]; '' clears the default")
          ->group(group);
  args.exclude_keywords_option =
      command.add_option("--exclude-keyword", args.exclude_keywords,
                         "Skip layers containing one of these [default: per_layer_model_projection]; '' clears it")
          ->group(group);
  args.num_layers_option =
      command.add_option("--num-layers", args.num_layers, "Quantize only the first N selected layers in natural order")
          ->check(CLI::Validator(
              [](const std::string& text) {
                return !text.empty() && text.find_first_not_of("0123456789") == std::string::npos
                           ? std::string()
                           : "must be a whole number, 0 or more, found " + text;
              },
              "N >= 0"))
          ->group(group);
  args.conv1d_option =
      command.add_option("--conv1d-keyword", args.conv1d_keywords,
                         "Layers stored as GPT-2 Conv1D [in, out], quantized per output column "
                         "[default: c_attn c_proj c_fc q_attn if config.json says model_type gpt2, else none]")
          ->group(group);
  // One value per flag, repeated as needed, so a list never swallows INPUT.
  for (CLI::Option* option : {args.include_names_option, args.include_keywords_option, args.exclude_names_option,
                              args.exclude_keywords_option, args.conv1d_option}) {
    option->expected(1)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  }
}

SelectionRules selection_rules_from(const SelectionArgs& args, bool& conv1d_given) {
  SelectionRules rules;
  if (args.include_names_option->count()) rules.include_layer_names = given_list(args.include_names);
  if (args.include_keywords_option->count()) rules.include_layer_keywords = given_list(args.include_keywords);
  if (args.exclude_names_option->count()) rules.exclude_layer_names = given_list(args.exclude_names);
  if (args.exclude_keywords_option->count()) rules.exclude_layer_keywords = given_list(args.exclude_keywords);
  if (args.num_layers_option->count()) rules.num_layers = args.num_layers;
  conv1d_given = args.conv1d_option->count() > 0;
  if (conv1d_given) rules.conv1d_keywords = given_list(args.conv1d_keywords);
  return rules;
}

}  // namespace rtnq::cli
