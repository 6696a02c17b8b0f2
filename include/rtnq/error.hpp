// The one exception type of the library.
#pragma once

#include <stdexcept>
#include <string>

namespace rtnq {

// A failure caused by the input, the parameters or the system. The message is
// complete and names the file, tensor or parameter involved, so the CLI prints
// it as it is after "rtnq: error: ".
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace rtnq
