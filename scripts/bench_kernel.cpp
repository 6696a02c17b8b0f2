// rtnq-bench-kernel: times the RTN kernel alone (no I/O) against the scalar
// yardstick of the tests, on one TinyLlama MLP matrix.
//
// Usage: rtnq-bench-kernel [--rows 5632] [--columns 2048] [--repeats 7]
//        rtnq-bench-kernel --print-simd-level
//
// The matrix is BF16 with Student-t values (3 degrees of freedom) and every
// 61st value 40 times larger. Each timing is the median of --repeats runs
// after one warm-up run; the yardstick runs once, because it is slow. The
// kernel's codes are checked against the yardstick's before any time is shown.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../tests/rtn_yardstick.hpp"
#include "rtnq/error.hpp"
#include "rtnq/rtn_kernel.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  int64_t rows = 5632;
  int64_t columns = 2048;
  int repeats = 7;
  bool print_simd_level = false;  // print the level quantize_matrix picks, then exit
};

Options parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string argument = argv[i];
    if (argument == "--print-simd-level") {
      options.print_simd_level = true;
      continue;
    }
    if (i + 1 >= argc) throw rtnq::Error("missing value after " + argument);
    const long long value = std::stoll(argv[++i]);
    if (value < 1) throw rtnq::Error(argument + " must be at least 1, got " + std::to_string(value));
    if (argument == "--rows") {
      options.rows = value;
    } else if (argument == "--columns") {
      options.columns = value;
    } else if (argument == "--repeats") {
      options.repeats = int(value);
    } else {
      throw rtnq::Error("invalid argument '" + argument + "'; expected --rows, --columns, --repeats or --print-simd-level");
    }
  }
  if (options.columns % 128 != 0) throw rtnq::Error("--columns must be a multiple of the group size 128");
  return options;
}

// BF16 bits of the test values, and the values they hold exactly.
struct Matrix {
  std::vector<uint16_t> bits;
  std::vector<double> values;
};

Matrix make_matrix(const Options& options) {
  const size_t count = size_t(options.rows * options.columns);
  Matrix matrix;
  matrix.bits.resize(count);
  matrix.values.resize(count);
  std::mt19937 engine(2024);
  std::student_t_distribution<float> distribution(3.0f);
  for (size_t i = 0; i < count; ++i) {
    float value = 0.02f * distribution(engine);
    if (i % 61 == 7) value *= 40;
    uint32_t wide;
    std::memcpy(&wide, &value, 4);
    wide += 0x7fffu + ((wide >> 16) & 1u);  // round to nearest BF16, ties to even
    matrix.bits[i] = uint16_t(wide >> 16);
    const uint32_t rounded = uint32_t(matrix.bits[i]) << 16;
    float stored;
    std::memcpy(&stored, &rounded, 4);
    matrix.values[i] = stored;
  }
  return matrix;
}

struct KernelBuffers {
  std::vector<std::byte> codes;
  std::vector<std::byte> scales;
  std::vector<std::byte> zeros;
};

double seconds_of(const std::function<void()>& work) {
  const Clock::time_point start = Clock::now();
  work();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double median_seconds(int repeats, const std::function<void()>& work) {
  work();  // warm-up
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) times.push_back(seconds_of(work));
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void print_row(const char* name, double seconds, double parameters, double yardstick_seconds) {
  std::printf("%-26s %10.1f %12.1f %12.2fx\n", name, seconds * 1e3, parameters / seconds / 1e6,
              yardstick_seconds / seconds);
}

int run(const Options& options) {
  if (options.print_simd_level) {
    std::printf("%s\n", rtnq::simd_level_name(rtnq::best_simd_level()));
    return 0;
  }
  const Matrix matrix = make_matrix(options);
  const double parameters = double(matrix.values.size());
  rtnq::RtnParams params;
  params.wbits = 4;
  params.groupsize = 128;

  rtnq::WeightMatrix weight;
  weight.data = reinterpret_cast<const std::byte*>(matrix.bits.data());
  weight.dtype = rtnq::DType::BF16;
  weight.out_features = options.rows;
  weight.in_features = options.columns;
  KernelBuffers buffers;
  buffers.codes.resize(matrix.values.size());
  const size_t groups = size_t(options.rows * options.columns / 128);
  buffers.scales.resize(groups * 2);
  buffers.zeros.resize(groups * 2);
  rtnq::QuantizedBuffers out;
  out.codes = buffers.codes.data();
  out.stored_scales = buffers.scales.data();
  out.stored_zeros = buffers.zeros.data();

  rtnq_test::YardstickResult expected;
  const double yardstick_seconds = seconds_of(
      [&] { expected = rtnq_test::yardstick_quantize(matrix.values, options.rows, options.columns, params); });

  std::printf("kernel micro-benchmark: %lld x %lld BF16, wbits 4, groupsize 128, asymmetric; median of %d runs\n",
              static_cast<long long>(options.rows), static_cast<long long>(options.columns), options.repeats);
  std::printf("%-26s %10s %12s %13s\n", "variant", "ms", "Mparam/s", "vs yardstick");
  print_row("scalar yardstick", yardstick_seconds, parameters, yardstick_seconds);

  std::vector<rtnq::SimdLevel> levels = {rtnq::SimdLevel::sse2};
  if (rtnq::best_simd_level() == rtnq::SimdLevel::avx2) levels.push_back(rtnq::SimdLevel::avx2);
  double best_two = 0;
  for (rtnq::SimdLevel level : levels) {
    double seconds_by_threads[3] = {0, 0, 0};
    for (int threads : {1, 2}) {
      std::fill(buffers.codes.begin(), buffers.codes.end(), std::byte{0xff});
      auto work = [&] { rtnq::quantize_matrix(weight, params, out, threads, level); };
      seconds_by_threads[threads] = median_seconds(options.repeats, work);
      for (size_t i = 0; i < expected.codes.size(); ++i) {
        if (uint64_t(buffers.codes[i]) == expected.codes[i]) continue;
        throw rtnq::Error(std::string("kernel code ") + std::to_string(i) + " differs from the yardstick at " +
                          rtnq::simd_level_name(level));
      }
      const std::string name = std::string(rtnq::simd_level_name(level)) + ", " + std::to_string(threads) +
                               (threads == 1 ? " thread" : " threads");
      print_row(name.c_str(), seconds_by_threads[threads], parameters, yardstick_seconds);
    }
    std::printf("%-26s %10s %12s %12.2fx\n", (std::string(rtnq::simd_level_name(level)) + ", 2 / 1 thread").c_str(),
                "", "", seconds_by_threads[1] / seconds_by_threads[2]);
    best_two = seconds_by_threads[2];
  }

  // The MSE search (grid 100) with the widest level, for its cost per parameter.
  rtnq::RtnParams mse_params = params;
  mse_params.mse = true;
  const double mse_seconds = median_seconds(
      std::max(1, options.repeats / 3), [&] { rtnq::quantize_matrix(weight, mse_params, out, 2); });
  std::printf("%-26s %10.1f %12.1f %12.2fx the plain kernel at 2 threads\n", "MSE grid 100, 2 threads", mse_seconds * 1e3,
              parameters / mse_seconds / 1e6, mse_seconds / best_two);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_options(argc, argv));
  } catch (const std::exception& error) {
    std::fprintf(stderr, "rtnq-bench-kernel: error: %s\n", error.what());
    return 1;
  }
}
