// Helpers for the tests: temporary folders, whole-file reads and writes,
// hand-made safetensors files, and running a command with its output captured.
#pragma once

#include <stdlib.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>

namespace rtnq::test {

// A fresh folder under the system temporary folder, removed with everything
// in it when the object is destroyed.
class TempDir {
 public:
  TempDir() {
    std::string name = (std::filesystem::temp_directory_path() / "rtnq-test-XXXXXX").string();
    if (::mkdtemp(name.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + name);
    path_ = name;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

inline void write_file(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream stream(path, std::ios::binary | std::ios::trunc);
  stream.write(bytes.data(), std::streamsize(bytes.size()));
  if (!stream) throw std::runtime_error("write failed: " + path.string());
}

// The names of the entries of folder, hidden ones included.
inline std::set<std::string> folder_entries(const std::filesystem::path& folder) {
  std::set<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(folder)) {
    names.insert(entry.path().filename().string());
  }
  return names;
}

// True if text is exactly one line starting "rtnq: error: ".
inline bool is_one_error_line(const std::string& text) {
  return !text.empty() && text.rfind("rtnq: error: ", 0) == 0 && text.back() == '\n' &&
         std::count(text.begin(), text.end(), '\n') == 1;
}

inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream stream(path, std::ios::binary);
  if (!stream) throw std::runtime_error("read failed: " + path.string());
  return std::string(std::istreambuf_iterator<char>(stream), std::istreambuf_iterator<char>());
}

// The 8-byte little-endian length field of a safetensors file.
inline std::string length_prefix(uint64_t length) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[size_t(i)] = static_cast<char>((length >> (8 * i)) & 0xff);
  return bytes;
}

// Writes a safetensors file of the given header text and data section.
inline std::string write_safetensors(const TempDir& dir, const std::string& name, const std::string& header,
                                     const std::string& data) {
  const std::string path = dir / name;
  write_file(path, length_prefix(header.size()) + header + data);
  return path;
}

// Quotes text for /bin/sh.
inline std::string shell_quote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  return quoted + "'";
}

struct CommandResult {
  int exit_status = -1;  // -1 if the command did not exit normally
  std::string out;       // stdout
  std::string err;       // stderr
};

// Runs a shell command line with stdin empty and stdout and stderr captured.
inline CommandResult run_command(const std::string& command_line) {
  TempDir capture;
  const std::string out_path = capture / "stdout";
  const std::string err_path = capture / "stderr";
  const std::string full = command_line + " </dev/null >" + shell_quote(out_path) + " 2>" + shell_quote(err_path);
  const int status = std::system(full.c_str());
  CommandResult result;
  result.exit_status = (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
  result.out = read_file(out_path);
  result.err = read_file(err_path);
  return result;
}

// Runs the rtnq binary under test with the given (already quoted) arguments.
inline CommandResult run_rtnq(const std::string& arguments) {
  return run_command(shell_quote(RTNQ_BINARY) + " " + arguments);
}

}  // namespace rtnq::test
