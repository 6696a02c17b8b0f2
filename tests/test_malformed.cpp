// The malformed-file corpus in testdata/malformed/. The CLI rejects every file
// with exit status 1 and one error line that names the file and states what is
// wrong, and writes nothing. The committed files are exactly what
// scripts/make_malformed.cpp generates.
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using rtnq::test::read_file;
using rtnq::test::run_rtnq;
using rtnq::test::shell_quote;
using rtnq::test::TempDir;

const fs::path kCorpus = fs::path(RTNQ_SOURCE_DIR) / "testdata" / "malformed";

struct ExpectedError {
  std::string file_name;
  std::string expected;  // text the message must contain
  std::string reason;
};

// Reads EXPECTED.tsv: file name, expected text and reason, tab-separated.
std::vector<ExpectedError> read_expected_errors() {
  std::ifstream table(kCorpus / "EXPECTED.tsv");
  REQUIRE(table);
  std::vector<ExpectedError> rows;
  std::string line;
  while (std::getline(table, line)) {
    const size_t first_tab = line.find('\t');
    const size_t second_tab = line.find('\t', first_tab + 1);
    REQUIRE(first_tab != std::string::npos);
    REQUIRE(second_tab != std::string::npos);
    rows.push_back({line.substr(0, first_tab), line.substr(first_tab + 1, second_tab - first_tab - 1),
                    line.substr(second_tab + 1)});
  }
  return rows;
}

std::vector<std::string> sorted_listing(const fs::path& folder) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(folder)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// True if message is one line "rtnq: error: PATH: ..." containing expected.
void check_error_line(const std::string& message, const std::string& path, const std::string& expected) {
  CHECK(message.rfind("rtnq: error: " + path + ": ", 0) == 0);
  CHECK(std::count(message.begin(), message.end(), '\n') == 1);
  CHECK(message.back() == '\n');
  CHECK(message.find(expected) != std::string::npos);
}

}  // namespace

TEST_CASE("corpus lists every file once") {
  const std::vector<ExpectedError> rows = read_expected_errors();
  CHECK(rows.size() >= 30);
  std::vector<std::string> listed;
  for (const ExpectedError& row : rows) {
    CHECK_FALSE(row.expected.empty());
    CHECK_FALSE(row.reason.empty());
    listed.push_back(row.file_name);
  }
  listed.push_back("EXPECTED.tsv");
  std::sort(listed.begin(), listed.end());
  CHECK(std::adjacent_find(listed.begin(), listed.end()) == listed.end());
  CHECK(listed == sorted_listing(kCorpus));
}

TEST_CASE("quantize rejects every malformed file") {
  TempDir out;
  const std::string output = out / "out.safetensors";
  for (const ExpectedError& row : read_expected_errors()) {
    CAPTURE(row.file_name);
    CAPTURE(row.reason);
    const std::string path = (kCorpus / row.file_name).string();
    const std::string bytes_before = read_file(path);
    struct stat before {};
    REQUIRE(::stat(path.c_str(), &before) == 0);

    const auto result = run_rtnq("quantize " + shell_quote(path) + " -o " + shell_quote(output));
    CHECK(result.exit_status == 1);
    CHECK(result.out.empty());
    check_error_line(result.err, path, row.expected);
    // Nothing under the output name, no report and no temporary file.
    CHECK(sorted_listing(out.path()).empty());

    struct stat after {};
    REQUIRE(::stat(path.c_str(), &after) == 0);
    CHECK(read_file(path) == bytes_before);
    CHECK(after.st_mtim.tv_sec == before.st_mtim.tv_sec);
    CHECK(after.st_mtim.tv_nsec == before.st_mtim.tv_nsec);
  }
}

TEST_CASE("inspect rejects every malformed file") {
  for (const ExpectedError& row : read_expected_errors()) {
    CAPTURE(row.file_name);
    const std::string path = (kCorpus / row.file_name).string();
    const auto result = run_rtnq("inspect " + shell_quote(path));
    CHECK(result.exit_status == 1);
    CHECK(result.out.empty());
    check_error_line(result.err, path, row.expected);
  }
}

TEST_CASE("malformed file in folder named") {
  // A folder checkpoint whose model.safetensors is cut short: the error names
  // the file inside the folder, and no output folder appears.
  TempDir dir;
  const fs::path model = dir.path() / "model";
  fs::create_directory(model);
  fs::copy_file(kCorpus / "truncated-data.safetensors", model / "model.safetensors");
  const auto result = run_rtnq("quantize " + shell_quote(model.string()) + " -o " + shell_quote(dir / "out"));
  CHECK(result.exit_status == 1);
  check_error_line(result.err, (model / "model.safetensors").string(), "tensor 'b' ends past the end of the file");
  CHECK(sorted_listing(dir.path()) == std::vector<std::string>{"model"});
}

TEST_CASE("corpus regenerates byte for byte") {
  TempDir generated;
  const auto result = rtnq::test::run_command(shell_quote(RTNQ_MAKE_MALFORMED) + " " +
                                              shell_quote(generated.path().string()));
  REQUIRE(result.exit_status == 0);
  const std::vector<std::string> names = sorted_listing(generated.path());
  CHECK(names == sorted_listing(kCorpus));
  for (const std::string& name : names) {
    CAPTURE(name);
    CHECK(read_file(generated.path() / name) == read_file(kCorpus / name));
  }
}
