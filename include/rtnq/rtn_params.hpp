// Parameters of round-to-nearest quantization, named as in OneComp's RTN quantizer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rtnq {

// Largest --grid accepted.
inline constexpr int64_t kMaxGrid = 1000000;

struct RtnParams {
  int wbits = 4;            // bits per code, 1..64
  int64_t groupsize = -1;   // -1: one group per row; else >= 1 and divides in_features
  bool sym = false;         // symmetric range with zero fixed at 2^(wbits-1)
  bool mse = false;         // search a shrunken range that minimises the norm-error
  double norm = 2.4;        // exponent of the error in the MSE search, > 0
  int64_t grid = 100;       // shrink steps of the MSE search, 1 to kMaxGrid
};

// Returns one message per invalid parameter, naming the value and the valid range.
std::vector<std::string> validate_rtn_params(const RtnParams& params);

// Number of groups per row of length in_features (1 when groupsize is -1).
int64_t groups_per_row(const RtnParams& params, int64_t in_features);

// Number of shrink levels the MSE search tries: floor(0.8 * grid).
int64_t mse_shrink_levels(const RtnParams& params);

// The shrink factor of level i: 1 - i / grid, computed in double as Python does.
double mse_shrink_factor(const RtnParams& params, int64_t level);

// Largest code. Exactly 2^wbits - 1 up to 53 bits; above, the largest double
// not above 2^wbits - 1, because float64 cannot hold every level there.
double max_code_level(int wbits);

// Symmetric zero point 2^(wbits-1), exact in double for every wbits.
double symmetric_zero(int wbits);

// True when the arithmetic is float32 (wbits <= 16); float64 above.
inline bool computes_in_float32(int wbits) { return wbits <= 16; }

}  // namespace rtnq
