// The subcommands of the rtnq command line.
#pragma once

#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "rtnq/native_format.hpp"

namespace rtnq::cli {

// Largest --threads accepted. OpenMP crashes when it cannot start the threads
// it was asked for (100000 threads crashed it on a 2-core machine), and 1024
// leaves room for the largest servers.
inline constexpr int kMaxThreads = 1024;

// The dtype an option value "f16", "bf16" or "f32" names; CLI::IsMember has
// already rejected any other value.
inline DType float_dtype_from(const std::string& name) {
  if (name == "bf16") return DType::BF16;
  if (name == "f32") return DType::F32;
  return DType::F16;
}

// The usage error of a --threads value outside 0 to kMaxThreads, or "".
inline std::string threads_problem(int threads) {
  if (threads >= 0 && threads <= kMaxThreads) return "";
  return "invalid threads " + std::to_string(threads) + ": must be from 0 to " + std::to_string(kMaxThreads);
}

// A bad option value found after parsing; main exits with status 2.
class UsageError : public std::runtime_error {
 public:
  explicit UsageError(const std::string& message) : std::runtime_error(message) {}
};

// A registered subcommand and the function that runs it after parsing.
struct CommandSetup {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

// The layer selection options shared by quantize and inspect.
struct SelectionArgs {
  std::vector<std::string> include_names;
  std::vector<std::string> include_keywords;
  std::vector<std::string> exclude_names;
  std::vector<std::string> exclude_keywords;
  std::vector<std::string> conv1d_keywords;
  int64_t num_layers = -1;
  CLI::Option* include_names_option = nullptr;
  CLI::Option* include_keywords_option = nullptr;
  CLI::Option* exclude_names_option = nullptr;
  CLI::Option* exclude_keywords_option = nullptr;
  CLI::Option* conv1d_option = nullptr;
  CLI::Option* num_layers_option = nullptr;
};

void add_selection_options(CLI::App& command, SelectionArgs& args);
// The rules the options give; writes whether Conv1D keywords were given.
SelectionRules selection_rules_from(const SelectionArgs& args, bool& conv1d_given);

struct QuantizeArgs {
  std::string input;
  std::string output;
  RtnParams params;
  SelectionArgs selection;
  bool skip_indivisible = false;
  std::string scale_dtype = "f16";
  std::string activations;
  std::string report;
  int threads = 0;
  bool dry_run = false;
  bool force = false;
  bool quiet = false;
};

struct InspectArgs {
  std::string input;
  bool json = false;
  SelectionArgs selection;
};

CommandSetup add_quantize_command(CLI::App& app, QuantizeArgs& args);
CommandSetup add_inspect_command(CLI::App& app, InspectArgs& args);
// Subcommands defined in other files of the CLI (report, dequantize).
std::vector<CommandSetup> add_extra_commands(CLI::App& app);

}  // namespace rtnq::cli
