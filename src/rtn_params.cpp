#include "rtnq/rtn_params.hpp"

#include <cmath>
#include <sstream>

namespace rtnq {

std::vector<std::string> validate_rtn_params(const RtnParams& params) {
  std::vector<std::string> problems;
  auto add = [&](const std::string& name, const std::string& value, const std::string& range) {
    problems.push_back("invalid " + name + " " + value + ": " + range);
  };
  if (params.wbits < 1 || params.wbits > 64) {
    add("wbits", std::to_string(params.wbits), "must be an integer from 1 to 64");
  }
  if (params.groupsize != -1 && params.groupsize < 1) {
    add("groupsize", std::to_string(params.groupsize), "must be -1 (one group per row) or at least 1");
  }
  if (!(params.norm > 0) || !std::isfinite(params.norm)) {
    std::ostringstream value;
    value << params.norm;
    add("norm", value.str(), "must be a finite number greater than 0");
  }
  // The MSE search tries 0.8 * grid shrink levels on every group, so a grid
  // of a million already costs about a million times plain RTN.
  if (params.grid < 1 || params.grid > kMaxGrid) {
    add("grid", std::to_string(params.grid), "must be an integer from 1 to " + std::to_string(kMaxGrid));
  }
  return problems;
}

int64_t groups_per_row(const RtnParams& params, int64_t in_features) {
  if (params.groupsize == -1) return 1;
  return in_features / params.groupsize;
}

int64_t mse_shrink_levels(const RtnParams& params) {
  return static_cast<int64_t>(std::floor(0.8 * static_cast<double>(params.grid)));
}

double mse_shrink_factor(const RtnParams& params, int64_t level) {
  return 1.0 - static_cast<double>(level) / static_cast<double>(params.grid);
}

double max_code_level(int wbits) {
  if (wbits <= 53) return std::ldexp(1.0, wbits) - 1.0;
  // 2^wbits - 1 lies between 2^wbits - 2^(wbits-53) and 2^wbits: take the lower.
  return std::ldexp(1.0, wbits) - std::ldexp(1.0, wbits - 53);
}

double symmetric_zero(int wbits) { return std::ldexp(1.0, wbits - 1); }

}  // namespace rtnq
