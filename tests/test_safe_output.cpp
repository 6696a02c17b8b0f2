// Safe output through the CLI. An output that is (or is inside) the input is
// rejected under any name. An existing output is replaced only with --force
// and only by a complete file. A run that fails (bad layer, unwritable
// folder, full disk, SIGKILL) leaves no output under the final name. Every
// test also checks that the input's bytes and modification time are unchanged.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "rtnq/safetensors.hpp"
#include "synthetic_checkpoint.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using rtnq::test::FileSnapshot;
using rtnq::test::folder_entries;
using rtnq::test::is_one_error_line;
using rtnq::test::read_file;
using rtnq::test::run_command;
using rtnq::test::run_rtnq;
using rtnq::test::shell_quote;
using rtnq::test::snapshot_file;
using rtnq::test::TempDir;
using rtnq::test::TensorBytes;
using rtnq::test::write_checkpoint;
using rtnq::test::write_file;

const std::string kSample = std::string(RTNQ_SOURCE_DIR) + "/testdata/sample/model.safetensors";
const std::string kSampleConfig = std::string(RTNQ_SOURCE_DIR) + "/testdata/sample/config.json";

// An F32 matrix whose value at index i is ((i * 7) % 13 - 6) / 8, or NaN at
// index nan_index when that is not negative.
TensorBytes f32_matrix(const std::string& name, int64_t rows, int64_t columns, int64_t nan_index = -1) {
  std::string bytes(size_t(rows * columns) * 4, '\0');
  for (int64_t i = 0; i < rows * columns; ++i) {
    const float value = i == nan_index ? std::numeric_limits<float>::quiet_NaN() : float((i * 7) % 13 - 6) / 8.0f;
    std::memcpy(bytes.data() + 4 * i, &value, 4);
  }
  return {name, "F32", {rows, columns}, bytes};
}

// A model folder holding a copy of the sample checkpoint and its config.json.
std::string make_model_folder(const fs::path& folder) {
  fs::create_directories(folder);
  fs::copy_file(kSample, folder / "model.safetensors");
  fs::copy_file(kSampleConfig, folder / "config.json");
  return folder.string();
}

std::string quantize_command(const std::string& input, const std::string& output, const std::string& extra = "") {
  return "quantize " + shell_quote(input) + " -o " + shell_quote(output) + " --quiet" +
         (extra.empty() ? "" : " " + extra);
}

// Starts rtnq quantize on input with the MSE search on one thread, waits for
// its partial output (file or folder) to appear beside output, and sends it
// signal_number. Returns the partial's path, named after the killed process.
std::string kill_when_partial_appears(const std::string& input, const std::string& output,
                                      int signal_number = SIGKILL) {
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    const int null_fd = ::open("/dev/null", O_RDWR);
    ::dup2(null_fd, 0);
    ::dup2(null_fd, 1);
    ::dup2(null_fd, 2);
    ::execl(RTNQ_BINARY, RTNQ_BINARY, "quantize", input.c_str(), "-o", output.c_str(), "--mse", "--threads", "1",
            "--quiet", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  const fs::path final_path(output);
  const std::string partial =
      (final_path.parent_path() / ("." + final_path.filename().string() + ".rtnq-partial-" + std::to_string(child)))
          .string();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!fs::exists(partial) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const bool partial_seen = fs::exists(partial);
  ::kill(child, signal_number);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  REQUIRE(partial_seen);
  // Had the run finished before the kill, the test would prove nothing.
  REQUIRE(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == signal_number);
  return partial;
}

}  // namespace

TEST_CASE("output equal to input rejected") {
  TempDir dir;
  const std::string input = dir / "in.safetensors";
  fs::copy_file(kSample, input);
  const FileSnapshot before = snapshot_file(input);

  for (const std::string extra : {"", "--force"}) {
    CAPTURE(extra);
    const auto result = run_rtnq(quantize_command(input, input, extra));
    CAPTURE(result.err);
    CHECK(result.exit_status == 1);
    CHECK(is_one_error_line(result.err));
    CHECK(result.err.find(input + ": output is the input") != std::string::npos);
    CHECK(folder_entries(dir.path()) == std::set<std::string>{"in.safetensors"});
    CHECK(snapshot_file(input) == before);
  }
}

TEST_CASE("output reaching input through links rejected") {
  TempDir dir;
  const std::string input = dir / "in.safetensors";
  fs::copy_file(kSample, input);
  const FileSnapshot before = snapshot_file(input);
  const std::string symlink = dir / "symlink.safetensors";
  const std::string hard_link = dir / "hardlink.safetensors";
  fs::create_symlink("in.safetensors", symlink);
  fs::create_hard_link(input, hard_link);
  const std::set<std::string> listing = {"in.safetensors", "symlink.safetensors", "hardlink.safetensors"};

  SUBCASE("symbolic link as output") {
    const auto result = run_rtnq(quantize_command(input, symlink, "--force"));
    CAPTURE(result.err);
    CHECK(result.exit_status == 1);
    CHECK(is_one_error_line(result.err));
    CHECK(result.err.find(symlink + ": output is the input") != std::string::npos);
  }
  SUBCASE("symbolic link as input") {
    const auto result = run_rtnq(quantize_command(symlink, input, "--force"));
    CAPTURE(result.err);
    CHECK(result.exit_status == 1);
    CHECK(result.err.find(input + ": output is the input") != std::string::npos);
  }
  SUBCASE("hard link as output") {
    const auto result = run_rtnq(quantize_command(input, hard_link, "--force"));
    CAPTURE(result.err);
    CHECK(result.exit_status == 1);
    CHECK(is_one_error_line(result.err));
    CHECK(result.err.find(hard_link + ": output is the input file " + input + " under another name") !=
          std::string::npos);
  }
  CHECK(folder_entries(dir.path()) == listing);
  CHECK(fs::is_symlink(symlink));
  CHECK(fs::hard_link_count(input) == 2);
  CHECK(snapshot_file(input) == before);
}

TEST_CASE("output inside input folder rejected") {
  TempDir dir;
  const std::string model = make_model_folder(dir.path() / "model");
  const std::string weights = model + "/model.safetensors";
  const FileSnapshot before = snapshot_file(weights);
  fs::create_directory_symlink("model", dir.path() / "model-link");

  struct Case {
    std::string output;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {model, model + ": output is the input"},
      {model + "/quantized", model + "/quantized: output is inside the input folder " + model},
      {dir / "model-link/quantized", dir / "model-link/quantized: output is inside the input folder " + model},
      // Replacing a folder that contains the input would delete the input.
      {dir.path().string(), dir.path().string() + ": output contains the input " + model},
  };
  for (const Case& test_case : cases) {
    CAPTURE(test_case.output);
    const auto result = run_rtnq(quantize_command(model, test_case.output, "--force"));
    CAPTURE(result.err);
    CHECK(result.exit_status == 1);
    CHECK(is_one_error_line(result.err));
    CHECK(result.err.find(test_case.expected) != std::string::npos);
    CHECK(folder_entries(dir.path()) == std::set<std::string>{"model", "model-link"});
    CHECK(folder_entries(model) == std::set<std::string>{"model.safetensors", "config.json"});
    CHECK(snapshot_file(weights) == before);
  }
}

TEST_CASE("file output containing input rejected") {
  // A file input whose output is the folder holding it: the output must be a
  // file, and replacing that folder would delete the input.
  TempDir dir;
  const std::string input = dir / "in.safetensors";
  fs::copy_file(kSample, input);
  const FileSnapshot before = snapshot_file(input);
  const auto result = run_rtnq(quantize_command(input, dir.path().string(), "--force"));
  CAPTURE(result.err);
  CHECK(result.exit_status == 1);
  CHECK(is_one_error_line(result.err));
  CHECK(result.err.find(dir.path().string() + ": ") != std::string::npos);
  CHECK(folder_entries(dir.path()) == std::set<std::string>{"in.safetensors"});
  CHECK(snapshot_file(input) == before);
}

TEST_CASE("report path equal to input rejected") {
  TempDir dir;
  const std::string input = dir / "in.safetensors";
  fs::copy_file(kSample, input);
  const FileSnapshot before = snapshot_file(input);
  const std::string output = dir / "out.safetensors";

  const auto onto_input = run_rtnq(quantize_command(input, output, "--force --report " + shell_quote(input)));
  CAPTURE(onto_input.err);
  CHECK(onto_input.exit_status == 1);
  CHECK(is_one_error_line(onto_input.err));
  CHECK(onto_input.err.find(input + ": report is the input") != std::string::npos);

  const auto onto_output = run_rtnq(quantize_command(input, output, "--force --report " + shell_quote(output)));
  CAPTURE(onto_output.err);
  CHECK(onto_output.exit_status == 1);
  CHECK(is_one_error_line(onto_output.err));
  CHECK(onto_output.err.find(output + ": report would replace the output") != std::string::npos);

  CHECK(folder_entries(dir.path()) == std::set<std::string>{"in.safetensors"});
  CHECK(snapshot_file(input) == before);
}

TEST_CASE("existing report needs --force") {
  // The report is checked before any work, like the output, and a dry run
  // checks it too.
  TempDir dir;
  const std::string input = dir / "in.safetensors";
  fs::copy_file(kSample, input);
  const std::string output = dir / "out.safetensors";
  const std::string report = output + ".report.json";
  write_file(report, "old report");

  for (const std::string extra : {"", "--dry-run"}) {
    CAPTURE(extra);
    const auto result = run_rtnq(quantize_command(input, output, extra));
    CAPTURE(result.err);
    CHECK(result.exit_status == 1);
    CHECK(is_one_error_line(result.err));
    CHECK(result.err.find(report + ": report already exists; pass --force to replace it") != std::string::npos);
    CHECK(read_file(report) == "old report");
    CHECK(folder_entries(dir.path()) == std::set<std::string>{"in.safetensors", "out.safetensors.report.json"});
  }
  const auto dry_run_onto_input =
      run_rtnq(quantize_command(input, output, "--dry-run --force --report " + shell_quote(input)));
  CHECK(dry_run_onto_input.exit_status == 1);
  CHECK(dry_run_onto_input.err.find(input + ": report is the input") != std::string::npos);

  const auto forced = run_rtnq(quantize_command(input, output, "--force"));
  CAPTURE(forced.err);
  CHECK(forced.exit_status == 0);
  CHECK(read_file(report).rfind("{", 0) == 0);
}

TEST_CASE("existing output replaced only with --force") {
  TempDir dir;
  const std::string input = dir / "in.safetensors";
  fs::copy_file(kSample, input);
  const FileSnapshot before = snapshot_file(input);
  const std::string output = dir / "out.safetensors";
  write_file(output, "old output");
  // A second name for the old output's inode: if rtnq rewrote the file in
  // place instead of renaming a new one over it, this name would change too.
  fs::create_hard_link(output, dir / "old-inode");

  const auto rejected = run_rtnq(quantize_command(input, output));
  CAPTURE(rejected.err);
  CHECK(rejected.exit_status == 1);
  CHECK(is_one_error_line(rejected.err));
  CHECK(rejected.err.find(output + ": output already exists; pass --force to replace it") != std::string::npos);
  CHECK(read_file(output) == "old output");
  CHECK(folder_entries(dir.path()) == std::set<std::string>{"in.safetensors", "out.safetensors", "old-inode"});

  const auto forced = run_rtnq(quantize_command(input, output, "--force"));
  CAPTURE(forced.err);
  REQUIRE(forced.exit_status == 0);
  CHECK(rtnq::SafetensorsFile(output).tensors().size() == 21 + 2 * 14);
  CHECK(read_file(dir / "old-inode") == "old output");
  CHECK(fs::hard_link_count(output) == 1);
  CHECK(folder_entries(dir.path()) ==
        std::set<std::string>{"in.safetensors", "out.safetensors", "out.safetensors.report.json", "old-inode"});
  CHECK(snapshot_file(input) == before);
}

TEST_CASE("failed forced run keeps old output") {
  TempDir dir;
  const std::string input =
      write_checkpoint(dir, "in.safetensors", {f32_matrix("a.weight", 4, 8), f32_matrix("b.weight", 4, 8, 9)});
  const FileSnapshot before = snapshot_file(input);

  SUBCASE("file output") {
    const std::string output = dir / "out.safetensors";
    write_file(output, "old output");
    write_file(output + ".report.json", "old report");
    const auto result = run_rtnq(quantize_command(input, output, "--force"));
    CAPTURE(result.err);
    CHECK(result.exit_status == 1);
    CHECK(result.err.find("b: 1 weights are NaN or infinite, the first at row 1, column 1 ") != std::string::npos);
    CHECK(read_file(output) == "old output");
    CHECK(read_file(output + ".report.json") == "old report");
    CHECK(folder_entries(dir.path()) ==
          std::set<std::string>{"in.safetensors", "out.safetensors", "out.safetensors.report.json"});
  }
  SUBCASE("folder output") {
    const fs::path model = dir.path() / "model";
    fs::create_directory(model);
    fs::copy_file(input, model / "model.safetensors");
    const fs::path output = dir.path() / "out";
    fs::create_directory(output);
    write_file(output / "model.safetensors", "old output");
    const auto result = run_rtnq(quantize_command(model.string(), output.string(), "--force"));
    CAPTURE(result.err);
    CHECK(result.exit_status == 1);
    CHECK(result.err.find("b: 1 weights are NaN or infinite") != std::string::npos);
    CHECK(folder_entries(output) == std::set<std::string>{"model.safetensors"});
    CHECK(read_file(output / "model.safetensors") == "old output");
    CHECK(folder_entries(dir.path()) == std::set<std::string>{"in.safetensors", "model", "out"});
    CHECK(folder_entries(model) == std::set<std::string>{"model.safetensors"});
  }
  CHECK(snapshot_file(input) == before);
}

TEST_CASE("unwritable destination fails cleanly") {
  TempDir dir;
  const std::string input = dir / "in.safetensors";
  fs::copy_file(kSample, input);
  const FileSnapshot before = snapshot_file(input);

  SUBCASE("read-only folder") {
    std::string output;
    if (::geteuid() != 0) {
      fs::create_directory(dir / "locked");
      fs::permissions(dir / "locked", fs::perms::owner_read | fs::perms::owner_exec);
      output = dir / "locked/out.safetensors";
    } else {
      // chmod does not stop root, so the test uses a folder where even root
      // cannot create files: sysfs rejects them with EACCES, procfs with ENOENT.
      MESSAGE("running as root, so chmod has no effect: testing with a file in /sys (or /proc) instead of a read-only folder");
      const std::string folder = fs::is_directory("/sys") ? "/sys" : "/proc";
      output = folder + "/rtnq-test-" + std::to_string(::getpid()) + ".safetensors";
    }
    const auto result = run_rtnq(quantize_command(input, output));
    CAPTURE(result.err);
    CHECK(result.exit_status == 1);
    CHECK(is_one_error_line(result.err));
    CHECK(result.err.find(output + ": cannot create file: ") != std::string::npos);
    CHECK_FALSE(fs::exists(output));
    CHECK_FALSE(fs::exists(output + ".report.json"));
    if (::geteuid() != 0) {
      fs::permissions(dir / "locked", fs::perms::owner_all);
      CHECK(folder_entries(dir / "locked").empty());
    }
  }
  SUBCASE("file in place of the folder") {
    write_file(dir / "not-a-folder", "text");
    const std::string output = dir / "not-a-folder/out.safetensors";
    const auto result = run_rtnq(quantize_command(input, output));
    CAPTURE(result.err);
    CHECK(result.exit_status == 1);
    CHECK(is_one_error_line(result.err));
    CHECK(result.err.find(output + ": " + (dir / "not-a-folder") + " is not a folder") != std::string::npos);
    CHECK(read_file(dir / "not-a-folder") == "text");
  }
  SUBCASE("report in missing folder") {
    const std::string output = dir / "out.safetensors";
    const std::string report = dir / "nodir/r.json";
    const auto result = run_rtnq(quantize_command(input, output, "--report " + shell_quote(report)));
    CAPTURE(result.err);
    CHECK(result.exit_status == 1);
    CHECK(is_one_error_line(result.err));
    // Found before any layer is quantized, in a dry run too.
    CHECK(result.err.find(report + ": cannot write the report, the folder " + (dir / "nodir") + " does not exist") !=
          std::string::npos);
    const auto dry_run = run_rtnq(quantize_command(input, output, "--dry-run --report " + shell_quote(report)));
    CHECK(dry_run.exit_status == 1);
    CHECK(dry_run.err == result.err);
    CHECK(folder_entries(dir.path()) == std::set<std::string>{"in.safetensors"});
  }
  CHECK(snapshot_file(input) == before);
}

TEST_CASE("full disk fails cleanly") {
  // RLIMIT_FSIZE replaces a full disk: with SIGXFSZ ignored, a write past the
  // limit fails with EFBIG as a write to a full disk fails with ENOSPC.
  // The limit, 64 blocks of 512 or 1024 bytes depending on the shell, is
  // above the output's header and far below its 4 MiB of tensor data.
  TempDir dir;
  struct Case {
    std::string reason;
    std::vector<TensorBytes> tensors;
  };
  const std::vector<Case> cases = {
      {"copied tensor", {f32_matrix("lm_head.weight", 1024, 1024), f32_matrix("a.weight", 4, 8)}},
      {"quantized codes", {f32_matrix("a.weight", 1024, 1024)}},
  };
  for (const Case& test_case : cases) {
    CAPTURE(test_case.reason);
    const std::string input = write_checkpoint(dir, "in.safetensors", test_case.tensors);
    const FileSnapshot before = snapshot_file(input);
    const std::string output = dir / "out.safetensors";
    const auto result = run_command("sh -c " + shell_quote("trap '' XFSZ; ulimit -f 64; exec \"$0\" \"$@\"") + " " +
                                    shell_quote(RTNQ_BINARY) + " " + quantize_command(input, output));
    CAPTURE(result.err);
    CHECK(result.exit_status == 1);
    CHECK(is_one_error_line(result.err));
    CHECK(result.err.find(output + ": write failed at byte ") != std::string::npos);
    CHECK(result.err.find(std::strerror(EFBIG)) != std::string::npos);
    CHECK(folder_entries(dir.path()) == std::set<std::string>{"in.safetensors"});
    CHECK(snapshot_file(input) == before);
  }
}

TEST_CASE("SIGKILL leaves only a marked partial") {
  // A 16 MiB layer quantized with the MSE search on one thread takes long
  // enough to be killed while the partial output is open.
  TempDir dir;
  const TensorBytes layer = f32_matrix("a.weight", 2048, 2048);

  SUBCASE("file output") {
    const std::string input = write_checkpoint(dir, "in.safetensors", {layer});
    const FileSnapshot before = snapshot_file(input);
    const std::string output = dir / "out.safetensors";
    const std::string partial = kill_when_partial_appears(input, output);
    const std::string partial_name = fs::path(partial).filename().string();
    CHECK(fs::is_regular_file(partial));
    CHECK(folder_entries(dir.path()) == std::set<std::string>{"in.safetensors", partial_name});
    CHECK_FALSE(fs::exists(output));

    // A run killed while writing its report would leave this one, with the
    // same dead process id.
    const std::string report_partial =
        dir / (".out.safetensors.report.json.rtnq-partial-" + partial_name.substr(partial_name.rfind('-') + 1));
    write_file(report_partial, "{");
    // The next run into the same destination removes the dead process's
    // partials but leaves alone one whose process (this test) still runs.
    const std::string live_partial = dir / (".out.safetensors.rtnq-partial-" + std::to_string(::getpid()));
    write_file(live_partial, "in use");
    const auto rerun = run_rtnq(quantize_command(input, output));
    CAPTURE(rerun.err);
    CHECK(rerun.exit_status == 0);
    CHECK(folder_entries(dir.path()) ==
          std::set<std::string>{"in.safetensors", "out.safetensors", "out.safetensors.report.json",
                                fs::path(live_partial).filename().string()});
    CHECK(rtnq::SafetensorsFile(output).tensors().size() == 3);
    CHECK(snapshot_file(input) == before);
  }
  SUBCASE("folder output") {
    const fs::path model = dir.path() / "model";
    fs::create_directory(model);
    const std::string weights = write_checkpoint(dir, "model/model.safetensors", {layer});
    const FileSnapshot before = snapshot_file(weights);
    const std::string output = dir / "out";
    const std::string partial = kill_when_partial_appears(model.string(), output);
    CHECK(fs::is_directory(partial));
    CHECK(folder_entries(dir.path()) == std::set<std::string>{"model", fs::path(partial).filename().string()});

    const auto rerun = run_rtnq(quantize_command(model.string(), output));
    CAPTURE(rerun.err);
    CHECK(rerun.exit_status == 0);
    CHECK(folder_entries(dir.path()) == std::set<std::string>{"model", "out"});
    CHECK(folder_entries(output) == std::set<std::string>{"model.safetensors", "quantization_report.json"});
    CHECK(snapshot_file(weights) == before);
  }
}

TEST_CASE("SIGINT and SIGTERM remove the partial") {
  // rtnq stops after the layer it is quantizing, removes its partial output
  // and then ends by the same signal.
  TempDir dir;
  const TensorBytes layer = f32_matrix("a.weight", 2048, 2048);
  const std::string input = write_checkpoint(dir, "in.safetensors", {layer});
  const FileSnapshot before = snapshot_file(input);
  const fs::path model = dir.path() / "model";
  fs::create_directory(model);
  fs::copy_file(input, model / "model.safetensors");

  for (const int signal_number : {SIGINT, SIGTERM}) {
    CAPTURE(signal_number);
    const std::string output = dir / "out.safetensors";
    const std::string partial = kill_when_partial_appears(input, output, signal_number);
    CHECK_FALSE(fs::exists(partial));
    CHECK(folder_entries(dir.path()) == std::set<std::string>{"in.safetensors", "model"});

    const std::string folder_partial = kill_when_partial_appears(model.string(), dir / "out", signal_number);
    CHECK_FALSE(fs::exists(folder_partial));
    CHECK(folder_entries(dir.path()) == std::set<std::string>{"in.safetensors", "model"});
    CHECK(folder_entries(model) == std::set<std::string>{"model.safetensors"});
    CHECK(snapshot_file(input) == before);
  }
}

TEST_CASE("force keeps folders of other files") {
  // --force replaces a folder output only when every entry in it is a name
  // that the new output also has.
  TempDir dir;
  const std::string model = make_model_folder(dir.path() / "model");
  const fs::path output = dir.path() / "out";
  fs::create_directories(output / "sub");
  write_file(output / "notes.txt", "keep");
  const auto rejected = run_rtnq(quantize_command(model, output.string(), "--force"));
  CAPTURE(rejected.err);
  CHECK(rejected.exit_status == 1);
  CHECK(is_one_error_line(rejected.err));
  CHECK(rejected.err.find("--force would delete ") != std::string::npos);
  CHECK(folder_entries(output) == std::set<std::string>{"notes.txt", "sub"});
  CHECK(read_file(output / "notes.txt") == "keep");

  // A previous output of the same input is replaced.
  fs::remove_all(output);
  REQUIRE(run_rtnq(quantize_command(model, output.string())).exit_status == 0);
  const auto replaced = run_rtnq(quantize_command(model, output.string(), "--force --groupsize 32"));
  CAPTURE(replaced.err);
  CHECK(replaced.exit_status == 0);
  CHECK(folder_entries(output) ==
        std::set<std::string>{"config.json", "model.safetensors", "quantization_report.json"});
}

TEST_CASE("output and report kinds checked") {
  TempDir dir;
  const std::string input = dir / "in.safetensors";
  fs::copy_file(kSample, input);
  fs::create_directory(dir.path() / "folder");

  const auto folder_output = run_rtnq(quantize_command(input, dir / "folder"));
  CHECK(folder_output.exit_status == 1);
  CHECK(folder_output.err.find("is a folder; the input is a file") != std::string::npos);

  const auto slash = run_rtnq(quantize_command(input, dir / "new/"));
  CHECK(slash.exit_status == 1);
  CHECK(slash.err.find("ends in '/', but the input is a file") != std::string::npos);

  const auto report_folder =
      run_rtnq(quantize_command(input, dir / "out.safetensors", "--force --report " + shell_quote(dir / "folder")));
  CHECK(report_folder.exit_status == 1);
  CHECK(is_one_error_line(report_folder.err));
  CHECK(report_folder.err.find("report path is a folder") != std::string::npos);
  CHECK(folder_entries(dir.path()) == std::set<std::string>{"folder", "in.safetensors"});
  CHECK(fs::is_empty(dir.path() / "folder"));
}
