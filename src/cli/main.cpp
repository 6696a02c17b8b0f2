// rtnq: the command line. It parses options and calls the library.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "commands.hpp"
#include "interrupt.hpp"
#include "rtnq/error.hpp"

int main(int argc, char** argv) {
  using namespace rtnq::cli;
  CLI::App app{"rtnq: round-to-nearest (RTN) quantization of safetensors checkpoints"};
  app.set_version_flag("--version", std::string("rtnq ") + RTNQ_VERSION);
  app.require_subcommand(1, 1);
  app.footer(
      "Examples:\n"
      "  rtnq inspect model.safetensors\n"
      "  rtnq quantize model.safetensors -o model-w4g128.safetensors --groupsize 128\n"
      "Run 'rtnq SUBCOMMAND --help' for the options of each.");

  QuantizeArgs quantize_args;
  InspectArgs inspect_args;
  std::vector<CommandSetup> commands = {
      add_quantize_command(app, quantize_args),
      add_inspect_command(app, inspect_args),
  };
  for (CommandSetup& extra : add_extra_commands(app)) commands.push_back(std::move(extra));

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& help) {
    return app.exit(help);
  } catch (const CLI::CallForAllHelp& help) {
    return app.exit(help);
  } catch (const CLI::CallForVersion& version) {
    return app.exit(version);
  } catch (const CLI::ParseError& error) {
    std::fprintf(stderr, "rtnq: error: %s\nRun 'rtnq --help' or 'rtnq SUBCOMMAND --help' for usage.\n",
                 error.what());
    return 2;
  }

  install_interrupt_handlers();
  for (CommandSetup& command : commands) {
    if (!command.app->parsed()) continue;
    try {
      return command.run();
    } catch (const Interrupted& interrupted) {
      std::fprintf(stderr, "rtnq: %s\n", interrupted.what());
      die_by_signal(interrupted.signal_number());
    } catch (const UsageError& error) {
      std::fprintf(stderr, "rtnq: error: %s\n", error.what());
      return 2;
    } catch (const rtnq::Error& error) {
      std::fprintf(stderr, "rtnq: error: %s\n", error.what());
      return 1;
    } catch (const std::exception& error) {
      std::fprintf(stderr, "rtnq: error: %s\n", error.what());
      return 1;
    }
  }
  return 2;
}
