#include "progress.hpp"

#include <unistd.h>

#include <cmath>

namespace rtnq::cli {

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int unit = 0;
  while (bytes >= 1000 && unit < 4) {
    bytes /= 1000;
    unit += 1;
  }
  char text[32];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.2f %s", bytes, units[unit]);
  return text;
}

std::string format_seconds(double seconds) {
  char text[32];
  if (seconds < 60) {
    std::snprintf(text, sizeof text, "%.1f s", seconds);
  } else {
    const long whole = std::lround(seconds);
    std::snprintf(text, sizeof text, "%ld min %02ld s", whole / 60, whole % 60);
  }
  return text;
}

ProgressPrinter::ProgressPrinter(bool quiet) : quiet_(quiet), terminal_(::isatty(STDERR_FILENO) == 1) {}

void ProgressPrinter::operator()(const ProgressEvent& event) {
  if (quiet_) return;
  const double rate = event.elapsed_seconds > 0 ? double(event.bytes_done) / event.elapsed_seconds : 0;
  if (terminal_) {
    const double left = rate > 0 ? double(event.bytes_total - event.bytes_done) / rate : 0;
    std::fprintf(stderr, "\r\033[K[%zu/%zu layers] %s of %s, %s/s, %s left  %s", event.layers_done,
                 event.layers_total, format_bytes(double(event.bytes_done)).c_str(),
                 format_bytes(double(event.bytes_total)).c_str(), format_bytes(rate).c_str(),
                 format_seconds(left).c_str(), event.layer->layer.c_str());
    std::fflush(stderr);
    line_open_ = true;
    return;
  }
  const auto relative = event.result->weight_error.relative_squared_error();
  char error_text[32] = "n/a";
  if (relative) std::snprintf(error_text, sizeof error_text, "%.3e", *relative);
  // The stored shape, as inspect and the report show it: [in, out] for Conv1D.
  const std::string shape = format_shape(event.layer->source->info->shape);
  std::fprintf(stderr, "rtnq: [%zu/%zu] %-48s %-14s %8.3f s  relative error %s\n", event.layers_done,
               event.layers_total, event.layer->layer.c_str(), shape.c_str(), event.result->seconds, error_text);
}

void ProgressPrinter::finish() {
  if (line_open_) std::fputc('\n', stderr);
  line_open_ = false;
}

}  // namespace rtnq::cli
