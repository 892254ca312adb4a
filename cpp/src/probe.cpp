#include "mixlaw/probe.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

namespace mixlaw {

double exp_seconds_per_call(std::size_t n, int repeats) {
  std::vector<double> x(n), y(n);
  for (std::size_t i = 0; i < n; ++i) x[i] = -3.0 + 6.0 * static_cast<double>(i % 1000) / 1000.0;
  double best = 1e300;
  volatile double sink = 0.0;  // keeps the loop from being optimised away
  for (int r = 0; r < std::max(1, repeats); ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < n; ++i) y[i] = std::exp(x[i]);
    const auto t1 = std::chrono::steady_clock::now();
    sink = sink + y[n / 2];
    best = std::min(best, std::chrono::duration<double>(t1 - t0).count());
  }
  return best / static_cast<double>(n);
}

}  // namespace mixlaw
