#include "interrupt.hpp"

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>

namespace rtnq::cli {
namespace {

volatile std::sig_atomic_t g_signal_number = 0;

extern "C" void record_signal(int signal_number) { g_signal_number = signal_number; }

}  // namespace

Interrupted::Interrupted(int signal_number)
    : std::runtime_error(std::string("interrupted by SIG") + sigabbrev_np(signal_number) +
                         "; the partial output was removed"),
      signal_number_(signal_number) {}

void install_interrupt_handlers() {
  struct sigaction action {};
  action.sa_handler = record_signal;
  sigemptyset(&action.sa_mask);
  for (int signal_number : {SIGINT, SIGTERM, SIGHUP}) sigaction(signal_number, &action, nullptr);
}

void throw_if_interrupted() {
  const int signal_number = g_signal_number;
  if (signal_number != 0) throw Interrupted(signal_number);
}

void die_by_signal(int signal_number) {
  std::signal(signal_number, SIG_DFL);
  std::raise(signal_number);
  std::_Exit(128 + signal_number);
}

}  // namespace rtnq::cli
