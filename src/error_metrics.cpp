#include "rtnq/error_metrics.hpp"

namespace rtnq {

std::optional<double> ErrorStats::relative_squared_error() const {
  if (squared_reference == 0) return std::nullopt;
  return squared_error / squared_reference;
}

void ErrorStats::merge(const ErrorStats& other) {
  squared_error += other.squared_error;
  squared_reference += other.squared_reference;
  count += other.count;
}

}  // namespace rtnq
