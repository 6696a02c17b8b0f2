// Stopping cleanly on Ctrl-C (SIGINT), SIGTERM and SIGHUP.
//
// The handler only records the signal. The quantize and dequantize loops
// call throw_if_interrupted between layers, so the exception unwinds through
// the library, which removes its partial output files, and main then ends the
// process with the same signal. A signal that arrives while one large layer
// is being quantized takes effect when that layer is done.
#pragma once

#include <stdexcept>

namespace rtnq::cli {

class Interrupted : public std::runtime_error {
 public:
  explicit Interrupted(int signal_number);
  int signal_number() const { return signal_number_; }

 private:
  int signal_number_;
};

// Installs the handler for SIGINT, SIGTERM and SIGHUP.
void install_interrupt_handlers();

// Throws Interrupted if one of those signals has arrived.
void throw_if_interrupted();

// Restores the default action of the signal and raises it again, so that the
// wait status the parent process gets shows that signal. Does not return.
[[noreturn]] void die_by_signal(int signal_number);

}  // namespace rtnq::cli
