#include <cstdio>
#include <memory>

#include "commands.hpp"
#include "rtnq/report_view.hpp"

namespace rtnq::cli {
namespace {

struct ReportArgs {
  std::vector<std::string> reports;
  size_t top = 0;
  std::string sort = "error";
  bool summary_only = false;
};

ReportSort sort_from(const std::string& name) {
  if (name == "name") return ReportSort::name;
  if (name == "time") return ReportSort::time;
  return ReportSort::error;
}

int run_report(const ReportArgs& args) {
  if (args.summary_only && args.reports.size() != 1) {
    throw UsageError("--summary-only takes one report, not " + std::to_string(args.reports.size()));
  }
  ReportViewOptions options;
  options.top = args.top;
  options.sort = sort_from(args.sort);

  const nlohmann::ordered_json first = read_report_file(args.reports[0]);
  std::string text;
  if (args.summary_only) {
    text = format_summary_fields(first);
  } else if (args.reports.size() == 1) {
    text = format_report(first, options);
  } else {
    text = format_report_comparison(first, read_report_file(args.reports[1]), options);
  }
  std::fputs(text.c_str(), stdout);
  return 0;
}

}  // namespace

CommandSetup add_report_command(CLI::App& app) {
  auto args = std::make_shared<ReportArgs>();
  CLI::App* command = app.add_subcommand(
      "report", "Show a quantization report as a table, or two reports side by side with their error ratios");
  command->add_option("REPORT", args->reports, "The JSON report of rtnq quantize; give two to compare them (A B)")
      ->required()
      ->expected(1, 2);
  command->add_option("--top", args->top, "Show only the first N layers of the sorted table; 0 shows all")
      ->check(CLI::Validator(
          [](std::string& value) {
            // size_t parsing would wrap "-1" around to a huge count.
            return value.find('-') == std::string::npos ? std::string() : "must be 0 or more, not " + value;
          },
          ""))
      ->capture_default_str();
  command->add_option("--sort", args->sort,
                      "Row order: error (largest relative error first; by A's error when comparing), "
                      "name, or time (longest first)")
      ->check(CLI::IsMember({"error", "name", "time"}))
      ->capture_default_str();
  command->add_flag("--summary-only", args->summary_only,
                    "Print only the summary, one 'field<TAB>value' line each, for scripts");
  command->footer(
      "Examples:\n"
      "  rtnq report model-w4g128.safetensors.report.json --top 10\n"
      "  rtnq report w4g128.report.json w4g32.report.json --sort name\n"
      "Exit status: 0 success, 1 unreadable report, 2 usage error.");
  return {command, [args] { return run_report(*args); }};
}

}  // namespace rtnq::cli
