// Progress and log lines of the CLI, on stderr.
#pragma once

#include <cstdio>
#include <string>

#include "rtnq/quantize.hpp"

namespace rtnq::cli {

// Prints progress of a quantization run: one updating status line when
// stderr is a terminal, else one log line per layer.
class ProgressPrinter {
 public:
  explicit ProgressPrinter(bool quiet);
  void operator()(const ProgressEvent& event);
  // Ends the status line, so the next message starts on a fresh line.
  void finish();

 private:
  bool quiet_;
  bool terminal_;
  bool line_open_ = false;
};

std::string format_bytes(double bytes);
std::string format_seconds(double seconds);

}  // namespace rtnq::cli
