// Error text of nlohmann::json exceptions, as shown to a user.
#pragma once

#include <exception>
#include <string>

namespace rtnq {

// Returns the message of a nlohmann::json exception without its leading id:
// "[json.exception.parse_error.101] parse error at line 1, column 3: ..."
// becomes "parse error at line 1, column 3: ...". The id identifies the
// exception class and means nothing to a user.
inline std::string json_error_text(const std::exception& error) {
  const std::string message = error.what();
  if (message.rfind("[json.exception.", 0) != 0) return message;
  const size_t start = message.find("] ");
  return start == std::string::npos ? message : message.substr(start + 2);
}

}  // namespace rtnq
