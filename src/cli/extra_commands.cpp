// Registers the subcommands that read rtnq's outputs: dequantize and report.
#include "commands.hpp"

namespace rtnq::cli {

CommandSetup add_dequantize_command(CLI::App& app);
CommandSetup add_report_command(CLI::App& app);

std::vector<CommandSetup> add_extra_commands(CLI::App& app) {
  return {add_dequantize_command(app), add_report_command(app)};
}

}  // namespace rtnq::cli
