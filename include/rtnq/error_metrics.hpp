// Squared-error sums of one quantized layer, as in OneComp's RTNResult.
#pragma once

#include <cstdint>
#include <optional>

namespace rtnq {

// Sums of (W - W^)^2 and W^2 over numel weights, in float64.
struct ErrorStats {
  double squared_error = 0;
  double squared_reference = 0;  // sum of W^2 (or of (W X^T)^2 for the output error)
  uint64_t count = 0;            // terms summed

  double mean_squared_error() const { return count ? squared_error / double(count) : 0.0; }
  // squared_error / squared_reference, or nullopt when the reference is all zero.
  std::optional<double> relative_squared_error() const;
  void merge(const ErrorStats& other);
};

}  // namespace rtnq
