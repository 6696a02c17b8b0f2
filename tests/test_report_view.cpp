// rtnq report: the hand-written reports in testdata/report shown as tables
// and compared, against the expected text committed beside them.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "rtnq/report_view.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using rtnq::test::is_one_error_line;
using rtnq::test::read_file;
using rtnq::test::run_rtnq;
using rtnq::test::shell_quote;
using rtnq::test::TempDir;

namespace {

const fs::path kReports = fs::path(RTNQ_SOURCE_DIR) / "testdata/report";

std::string report_path(const std::string& name) { return shell_quote((kReports / name).string()); }

size_t widest_line(const std::string& text) {
  std::istringstream lines(text);
  size_t widest = 0;
  for (std::string line; std::getline(lines, line);) widest = std::max(widest, line.size());
  return widest;
}

}  // namespace

TEST_CASE("report views match expected text") {
  struct ViewCase {
    std::string arguments;
    std::string expected_file;
  };
  const std::vector<ViewCase> cases = {
      {report_path("w4-per-row.report.json"), "w4-per-row.txt"},
      {report_path("w4-per-row.report.json") + " --sort name", "w4-per-row.sort-name.txt"},
      {report_path("w4-g32.report.json") + " --sort time --top 2", "w4-g32.sort-time.top-2.txt"},
      {report_path("w4-per-row.report.json") + " " + report_path("w4-g32.report.json"), "w4-per-row.vs.w4-g32.txt"},
      {report_path("w4-per-row.report.json") + " " + report_path("w4-g32.report.json") + " --sort name --top 3",
       "w4-per-row.vs.w4-g32.sort-name.top-3.txt"},
      {report_path("w4-per-row.report.json") + " " + report_path("w4-g32.report.json") + " --sort time",
       "w4-per-row.vs.w4-g32.sort-time.txt"},
  };
  for (const ViewCase& view : cases) {
    CAPTURE(view.expected_file);
    const auto result = run_rtnq("report " + view.arguments);
    CAPTURE(result.err);
    CHECK(result.exit_status == 0);
    CHECK(result.err.empty());
    CHECK(result.out == read_file(kReports / view.expected_file));
    CHECK(widest_line(result.out) <= 100);
  }
}

TEST_CASE("report summary fields for scripts") {
  const auto result = run_rtnq("report " + report_path("w4-g32.report.json") + " --summary-only");
  CAPTURE(result.err);
  REQUIRE(result.exit_status == 0);
  const std::string expected =
      "layers_quantized\t3\n"
      "tensors_copied\t8\n"
      "layers_skipped_indivisible\t1\n"
      "parameters_quantized\t1332224\n"
      "parameters_total\t1400000\n"
      "input_bytes\t2800000\n"
      "output_bytes\t851968\n"
      "compression_ratio\t3.29e+00\n"
      "wall_time\t7.00e-01\n"
      "input_bytes_per_second\t4.00e+06\n"
      "parameters_per_second\t1.90e+06\n"
      "mean_relative_weight_squared_error\t5.52e-03\n"
      "worst_relative_weight_squared_error\t6.10e-03\n"
      "mean_relative_output_squared_error\t1.12e-02\n"
      "worst_relative_output_squared_error\t1.24e-02\n";
  CHECK(result.out == expected);
}

TEST_CASE("scientific numbers have 3 digits") {
  CHECK(rtnq::format_scientific(0.0199949) == "2.00e-02");
  CHECK(rtnq::format_scientific(0.009876) == "9.88e-03");
  CHECK(rtnq::format_scientific(1234.5) == "1.23e+03");
  CHECK(rtnq::format_scientific(0.0) == "0.00e+00");
  CHECK(rtnq::format_scientific(std::nullopt) == "-");
}

TEST_CASE("report of real run fits 100 columns") {
  // A run without activations has no output error column.
  TempDir dir;
  const std::string input = std::string(RTNQ_SOURCE_DIR) + "/testdata/sample/model.safetensors";
  const std::string output = dir / "out.safetensors";
  const auto quantize = run_rtnq("quantize " + shell_quote(input) + " -o " + shell_quote(output) + " --quiet");
  CAPTURE(quantize.err);
  REQUIRE(quantize.exit_status == 0);

  const auto result = run_rtnq("report " + shell_quote(output + ".report.json") + " --top 5");
  CAPTURE(result.err);
  REQUIRE(result.exit_status == 0);
  CHECK(result.out.find("output error") == std::string::npos);
  CHECK(result.out.find("5 of 14 layers, largest relative weight error first") != std::string::npos);
  CHECK(widest_line(result.out) <= 100);
}

TEST_CASE("unreadable reports rejected") {
  TempDir dir;
  rtnq::test::write_file(dir / "empty.json", "{}");
  rtnq::test::write_file(dir / "broken.json", "{\"tool\": \"rtnq\", ");
  struct BadCase {
    std::string path;
    std::string message;
  };
  const std::vector<BadCase> cases = {
      {dir / "absent.json", "not found"},
      {dir / "empty.json", "not a report of rtnq quantize"},
      {dir / "broken.json", "not valid JSON"},
      {dir.path().string(), "is a folder, not a report file"},
  };
  for (const BadCase& bad : cases) {
    CAPTURE(bad.path);
    const auto result = run_rtnq("report " + shell_quote(bad.path));
    CAPTURE(result.err);
    CHECK(result.exit_status == 1);
    CHECK(is_one_error_line(result.err));
    CHECK(result.err.find(bad.path) != std::string::npos);
    CHECK(result.err.find(bad.message) != std::string::npos);
    CHECK(result.err.find("[json.exception") == std::string::npos);
  }
}

TEST_CASE("report usage errors") {
  const std::string report = report_path("w4-per-row.report.json");
  for (const std::string& arguments : {report + " " + report + " " + report, report + " --sort size",
                                       report + " " + report + " --summary-only", report + " --top -1"}) {
    CAPTURE(arguments);
    const auto result = run_rtnq("report " + arguments);
    CAPTURE(result.err);
    CHECK(result.exit_status == 2);
    CHECK(result.out.empty());
  }
}
