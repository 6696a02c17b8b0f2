// scripts/quantize-all.sh: a batch of three checkpoint folders, one of
// them broken, run twice through the shell as a user would.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "test_support.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;
using rtnq::test::folder_entries;
using rtnq::test::read_file;
using rtnq::test::run_command;
using rtnq::test::shell_quote;
using rtnq::test::TempDir;

namespace {

const fs::path kTestdata = fs::path(RTNQ_SOURCE_DIR) / "testdata";
const std::string kScript = std::string(RTNQ_SOURCE_DIR) + "/scripts/quantize-all.sh";

// Runs the script with the rtnq under test found through $RTNQ.
rtnq::test::CommandResult run_script(const std::string& arguments) {
  return run_command("RTNQ=" + shell_quote(RTNQ_BINARY) + " bash " + shell_quote(kScript) + " " + arguments);
}

// One row of the closing table: checkpoint, status, seconds, size ratio, mean relative error.
using TableRow = std::vector<std::string>;

// The table rows of the script's standard output, by checkpoint name.
std::map<std::string, TableRow> table_rows(const std::string& out) {
  std::map<std::string, TableRow> rows;
  std::istringstream lines(out);
  bool in_table = false;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("checkpoint ", 0) == 0) {
      in_table = true;
      continue;
    }
    if (!in_table || line.empty()) {
      in_table = in_table && !line.empty();
      continue;
    }
    std::istringstream words(line);
    TableRow row;
    for (std::string word; words >> word;) row.push_back(word);
    rows[row.front()] = row;
  }
  return rows;
}

std::string scientific(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2e", value);
  return text;
}

// Three model folders under dir/models: two good ones and one whose
// safetensors file is cut short.
fs::path make_models(const TempDir& dir) {
  const fs::path models = dir.path() / "models";
  fs::create_directories(models);
  fs::copy(kTestdata / "sample", models / "alpha", fs::copy_options::recursive);
  fs::copy(kTestdata / "sharded", models / "beta", fs::copy_options::recursive);
  fs::create_directory(models / "broken");
  const std::string whole = read_file(kTestdata / "sample/model.safetensors");
  rtnq::test::write_file(models / "broken/model.safetensors", whole.substr(0, whole.size() / 2));
  return models;
}

// Checks a done or skipped row against the output's own report.
void check_good_row(const TableRow& row, const fs::path& report_path, const std::string& status) {
  CAPTURE(report_path);
  REQUIRE(row.size() == 5);
  CHECK(row[1] == status);
  const json report = json::parse(read_file(report_path));
  CHECK(row[3] == scientific(report["summary"]["compression_ratio"].get<double>()));
  CHECK(row[4] == scientific(report["summary"]["mean_relative_weight_squared_error"].get<double>()));
}

}  // namespace

TEST_CASE("batch script continues after failure") {
  TempDir dir;
  const fs::path models = make_models(dir);
  const fs::path output_root = dir.path() / "out";
  const std::string arguments =
      "-o " + shell_quote(output_root.string()) + " " + shell_quote(models.string()) + " -- --groupsize 32 --quiet";

  // First run: alpha and beta are quantized, broken fails.
  const auto first = run_script(arguments);
  CAPTURE(first.out);
  CAPTURE(first.err);
  CHECK(first.exit_status == 1);
  CHECK(folder_entries(output_root) == std::set<std::string>{"alpha", "beta"});
  const fs::path alpha_report = output_root / "alpha/quantization_report.json";
  const fs::path beta_report = output_root / "beta/quantization_report.json";
  REQUIRE(fs::exists(alpha_report));
  REQUIRE(fs::exists(beta_report));
  CHECK(fs::exists(output_root / "beta/model-00002-of-00003.safetensors"));

  std::map<std::string, TableRow> rows = table_rows(first.out);
  REQUIRE(rows.size() == 3);
  check_good_row(rows["alpha"], alpha_report, "done");
  check_good_row(rows["beta"], beta_report, "done");
  CHECK(rows["broken"] == TableRow{"broken", "failed", rows["broken"][2], "-", "-"});
  CHECK(first.out.find("failed: broken: ") != std::string::npos);
  CHECK(first.out.find("broken/model.safetensors") != std::string::npos);
  CHECK(first.err.find("rtnq: error: ") != std::string::npos);

  // Second run: the two complete outputs are skipped, not redone, and the
  // broken folder fails again.
  const std::string alpha_before = read_file(alpha_report);
  const auto second = run_script(arguments);
  CAPTURE(second.out);
  CAPTURE(second.err);
  CHECK(second.exit_status == 1);
  rows = table_rows(second.out);
  REQUIRE(rows.size() == 3);
  check_good_row(rows["alpha"], alpha_report, "skipped");
  check_good_row(rows["beta"], beta_report, "skipped");
  CHECK(rows["alpha"][2] == "-");
  CHECK(rows["broken"][1] == "failed");
  CHECK(second.err.find("alpha: output complete, skipped") != std::string::npos);
  CHECK(read_file(alpha_report) == alpha_before);
  CHECK(folder_entries(output_root) == std::set<std::string>{"alpha", "beta"});
}

TEST_CASE("batch script all done exits zero") {
  // Inputs named one by one; a single .safetensors file is one of them.
  TempDir dir;
  const fs::path models = make_models(dir);
  const fs::path output_root = dir.path() / "out";
  const std::string file_input = (kTestdata / "sample/model.safetensors").string();
  const auto result = run_script("-o " + shell_quote(output_root.string()) + " " +
                                 shell_quote((models / "beta").string()) + " " + shell_quote(file_input) +
                                 " -- --quiet");
  CAPTURE(result.out);
  CAPTURE(result.err);
  CHECK(result.exit_status == 0);
  CHECK(folder_entries(output_root) ==
        std::set<std::string>{"beta", "model.safetensors", "model.safetensors.report.json"});
  const std::map<std::string, TableRow> rows = table_rows(result.out);
  REQUIRE(rows.size() == 2);
  check_good_row(rows.at("beta"), output_root / "beta/quantization_report.json", "done");
  check_good_row(rows.at("model.safetensors"), output_root / "model.safetensors.report.json", "done");
}

TEST_CASE("batch script redoes output without report") {
  // A file output renamed into place by a run that stopped before its report.
  TempDir dir;
  const fs::path output_root = dir.path() / "out";
  fs::create_directories(output_root);
  rtnq::test::write_file(output_root / "model.safetensors", "left by a stopped run");
  const std::string file_input = (kTestdata / "sample/model.safetensors").string();

  const auto result =
      run_script("-o " + shell_quote(output_root.string()) + " " + shell_quote(file_input) + " -- --quiet");
  CAPTURE(result.out);
  CAPTURE(result.err);
  CHECK(result.exit_status == 0);
  CHECK(result.err.find("has no report; quantizing model.safetensors again") != std::string::npos);
  CHECK(read_file(output_root / "model.safetensors") != "left by a stopped run");
  const std::map<std::string, TableRow> rows = table_rows(result.out);
  REQUIRE(rows.size() == 1);
  check_good_row(rows.at("model.safetensors"), output_root / "model.safetensors.report.json", "done");
}

TEST_CASE("batch script usage errors") {
  TempDir dir;
  const std::string models = shell_quote(make_models(dir).string());
  const std::string output = shell_quote(dir / "out");
  const std::vector<std::string> cases = {
      models,                                       // no -o
      "-o " + output,                               // no input
      "-o " + output + " " + models + " --wbits 4",  // rtnq option before --
      "-o " + output + " " + models + " -- -o elsewhere",
  };
  for (const std::string& arguments : cases) {
    CAPTURE(arguments);
    const auto result = run_script(arguments);
    CAPTURE(result.err);
    CHECK(result.exit_status == 2);
    CHECK(result.err.rfind("quantize-all: error: ", 0) == 0);
    CHECK(!fs::exists(dir / "out"));
  }
}

TEST_CASE("batch script redoes unreadable report") {
  // Both outputs exist, but their reports are not reports rtnq can read.
  TempDir dir;
  const fs::path models = make_models(dir);
  const fs::path output_root = dir.path() / "out";
  fs::create_directories(output_root / "alpha");
  rtnq::test::write_file(output_root / "alpha/model.safetensors", "left by a stopped run");
  rtnq::test::write_file(output_root / "alpha/quantization_report.json", "garbage");
  rtnq::test::write_file(output_root / "model.safetensors", "left by a stopped run");
  rtnq::test::write_file(output_root / "model.safetensors.report.json", "{\"tool\": \"rtnq\"}");
  const std::string file_input = (kTestdata / "sample/model.safetensors").string();

  const auto result = run_script("-o " + shell_quote(output_root.string()) + " " +
                                 shell_quote((models / "alpha").string()) + " " + shell_quote(file_input) +
                                 " -- --quiet");
  CAPTURE(result.out);
  CAPTURE(result.err);
  CHECK(result.exit_status == 0);
  CHECK(result.err.find("quantization_report.json is not a readable report; quantizing alpha again") !=
        std::string::npos);
  CHECK(result.err.find("model.safetensors.report.json is not a readable report; quantizing model.safetensors "
                        "again") != std::string::npos);
  CHECK(read_file(output_root / "alpha/model.safetensors") != "left by a stopped run");
  CHECK(read_file(output_root / "model.safetensors") != "left by a stopped run");
  const std::map<std::string, TableRow> rows = table_rows(result.out);
  REQUIRE(rows.size() == 2);
  check_good_row(rows.at("alpha"), output_root / "alpha/quantization_report.json", "done");
  check_good_row(rows.at("model.safetensors"), output_root / "model.safetensors.report.json", "done");
}

TEST_CASE("batch script rejects output root that is a file") {
  TempDir dir;
  const fs::path models = make_models(dir);
  rtnq::test::write_file(dir.path() / "out", "a file");
  const auto result = run_script("-o " + shell_quote(dir / "out") + " " + shell_quote(models.string()));
  CAPTURE(result.err);
  CHECK(result.exit_status == 2);
  CHECK(result.err.rfind("quantize-all: error: output root " + (dir / "out") + " exists and is not a folder\n", 0) ==
        0);
  CHECK(result.err.find("mkdir") == std::string::npos);
  CHECK(read_file(dir.path() / "out") == "a file");

  // A file in place of a folder above the output root: mkdir fails.
  const auto below_file = run_script("-o " + shell_quote(dir / "out/sub") + " " + shell_quote(models.string()));
  CAPTURE(below_file.err);
  CHECK(below_file.exit_status == 1);
  CHECK(below_file.err == "quantize-all: error: cannot create output root " + (dir / "out/sub") +
                              ": Not a directory\n");
  CHECK(read_file(dir.path() / "out") == "a file");
}

TEST_CASE("batch script rejects output root inside input") {
  TempDir dir;
  const fs::path models = make_models(dir);
  const std::set<std::string> alpha_before = folder_entries(models / "alpha");
  struct InsideCase {
    std::string output_root;
    std::string inputs;
  };
  const std::vector<InsideCase> cases = {
      {(models / "alpha/quantized").string(), shell_quote((models / "alpha").string())},
      {(models / "alpha").string() + "/./q/r", shell_quote((models / "beta").string()) + " " +
                                                   shell_quote((models / "alpha").string() + "/")},
      {(models / "alpha").string(), shell_quote((models / "alpha").string())},
  };
  for (const InsideCase& inside : cases) {
    CAPTURE(inside.output_root);
    const auto result = run_script("-o " + shell_quote(inside.output_root) + " " + inside.inputs + " -- --quiet");
    CAPTURE(result.err);
    CHECK(result.exit_status == 2);
    CHECK(result.err.rfind("quantize-all: error: output root " + inside.output_root + " is inside the input folder ",
                           0) == 0);
    CHECK(folder_entries(models / "alpha") == alpha_before);
  }
}
