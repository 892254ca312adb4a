#include "mixlaw/simplex.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>
#include <stdexcept>

namespace mixlaw {
namespace {

// Moves the last rounding error of sum(out) = 1 onto the largest coordinate strictly
// inside its bounds: there it is a relative change of ~1e-16, whereas spreading it over
// every free coordinate could turn a tiny weight into an exact 0 (a point multiplicative
// updates never leave).
void absorb_rounding(double* out, const double* lo, const double* hi, int k) {
  double s = 0.0;
  int big = -1;
  for (int i = 0; i < k; ++i) {
    s += out[i];
    if (out[i] > lo[i] && out[i] < hi[i] && (big < 0 || out[i] > out[big])) big = i;
  }
  if (big >= 0 && s != 1.0) out[big] = std::min(std::max(out[big] + (1.0 - s), lo[big]), hi[big]);
}

}  // namespace

void check_feasible(const double* lo, const double* hi, int k, const char* what_lo, const char* what_hi) {
  if (k < 1) throw std::invalid_argument("k: need at least one domain");
  double slo = 0.0, shi = 0.0;
  for (int i = 0; i < k; ++i) {
    if (!std::isfinite(lo[i]) || std::isnan(hi[i])) {
      std::ostringstream os;
      os << what_lo << ": domain " << i << " has a non-finite bound";
      throw std::invalid_argument(os.str());
    }
    if (lo[i] > hi[i]) {
      std::ostringstream os;
      os << what_lo << ", " << what_hi << ": domain " << i << " has lower " << lo[i] << " > upper " << hi[i];
      throw std::invalid_argument(os.str());
    }
    slo += lo[i];
    shi += std::min(hi[i], 1.0);
  }
  if (slo > 1.0 + 1e-12) {
    std::ostringstream os;
    os << what_lo << ": the minimum weights sum to " << slo << " > 1, no mixture satisfies them";
    throw std::invalid_argument(os.str());
  }
  if (shi < 1.0 - 1e-12) {
    std::ostringstream os;
    os << what_hi << ": the maximum weights sum to " << shi << " < 1, no mixture satisfies them";
    throw std::invalid_argument(os.str());
  }
}

void project_capped_simplex(const double* v, const double* lo, const double* hi, int k, double* out) {
  // f(tau) = sum_i clip(v_i - tau, lo_i, hi_i) is continuous, non-increasing and piecewise
  // linear with breakpoints v_i - hi_i (coordinate becomes free) and v_i - lo_i (hits lo).
  std::vector<double> bp;
  bp.reserve(2 * static_cast<std::size_t>(k));
  for (int i = 0; i < k; ++i) {
    if (std::isfinite(hi[i])) bp.push_back(v[i] - hi[i]);
    bp.push_back(v[i] - lo[i]);
  }
  std::sort(bp.begin(), bp.end());
  auto f = [&](double tau) {
    double s = 0.0;
    for (int i = 0; i < k; ++i) s += std::min(std::max(v[i] - tau, lo[i]), hi[i]);
    return s;
  };
  // Binary search for the last breakpoint with f >= 1.
  std::size_t a = 0, b = bp.size();  // invariant: f(bp[a-1]) >= 1 (or a == 0), f(bp[b]) < 1
  while (b - a > 1) {
    const std::size_t mid = (a + b) / 2;
    if (f(bp[mid]) >= 1.0) a = mid;
    else b = mid;
  }
  // tau lies in [bp[a], bp[a+1]] (or below bp[0]), where the set of free coordinates is
  // fixed: solve sum_free (v_i - tau) + sum_clipped bound_i = 1 on that set directly.
  double probe;
  if (f(bp[a]) < 1.0) probe = bp[0] - 1.0;
  else if (b >= bp.size()) probe = bp[a];
  else probe = 0.5 * (bp[a] + bp[b]);
  double sum_free_v = 0.0, sum_clipped = 0.0;
  int nfree = 0;
  for (int i = 0; i < k; ++i) {
    const double x = v[i] - probe;
    if (x <= lo[i]) sum_clipped += lo[i];
    else if (x >= hi[i]) sum_clipped += hi[i];
    else {
      sum_free_v += v[i];
      ++nfree;
    }
  }
  const double tau = nfree > 0 ? (sum_free_v + sum_clipped - 1.0) / nfree : probe;
  for (int i = 0; i < k; ++i) out[i] = std::min(std::max(v[i] - tau, lo[i]), hi[i]);
  absorb_rounding(out, lo, hi, k);
}

double kl_project_capped_simplex(const double* v, const double* lo, const double* hi, int k, double* out) {
  {  // Fast path: no bound is active after plain normalisation.
    double sum_v = 0.0;
    for (int i = 0; i < k; ++i) sum_v += v[i];
    const double c = 1.0 / sum_v;
    bool inside = sum_v > 0 && std::isfinite(sum_v);
    for (int i = 0; i < k && inside; ++i) {
      const double x = c * v[i];
      inside = x > lo[i] && x < hi[i];
    }
    if (inside) {
      for (int i = 0; i < k; ++i) out[i] = c * v[i];
      absorb_rounding(out, lo, hi, k);
      return c;
    }
  }
  // g(c) = sum_i clip(c v_i, lo_i, hi_i) is continuous, non-decreasing and piecewise linear
  // in c > 0, with breakpoints lo_i / v_i (coordinate leaves lo) and hi_i / v_i (reaches
  // hi). Sort them, find the piece where g crosses 1 and solve on its free set exactly.
  std::vector<double> bp;
  bp.reserve(2 * static_cast<std::size_t>(k));
  for (int i = 0; i < k; ++i) {
    if (!(v[i] > 0)) continue;  // such a coordinate stays at lo
    bp.push_back(lo[i] / v[i]);
    if (std::isfinite(hi[i])) bp.push_back(hi[i] / v[i]);
  }
  std::sort(bp.begin(), bp.end());
  auto g = [&](double c) {
    double s = 0.0;
    for (int i = 0; i < k; ++i) s += std::min(std::max(c * v[i], lo[i]), hi[i]);
    return s;
  };
  double probe;
  if (bp.empty()) {
    probe = 1.0;
  } else {
    // Last breakpoint with g <= 1; the crossing lies between it and the next one.
    std::size_t a = 0, b = bp.size();
    if (g(bp[0]) > 1.0) {
      probe = 0.5 * bp[0];
    } else {
      while (b - a > 1) {
        const std::size_t mid = (a + b) / 2;
        if (g(bp[mid]) <= 1.0) a = mid;
        else b = mid;
      }
      probe = b < bp.size() ? 0.5 * (bp[a] + bp[b]) : 2.0 * bp[a] + 1.0;
    }
  }
  double sum_free_v = 0.0, sum_clipped = 0.0;
  for (int i = 0; i < k; ++i) {
    const double x = probe * v[i];
    if (x <= lo[i]) sum_clipped += lo[i];
    else if (x >= hi[i]) sum_clipped += hi[i];
    else sum_free_v += v[i];
  }
  const double c = sum_free_v > 0 ? (1.0 - sum_clipped) / sum_free_v : probe;
  for (int i = 0; i < k; ++i) out[i] = std::min(std::max(c * v[i], lo[i]), hi[i]);
  absorb_rounding(out, lo, hi, k);
  return c;
}

bool plain_simplex(const double* lo, const double* hi, int k) {
  for (int i = 0; i < k; ++i)
    if (!(lo[i] == 0.0 && hi[i] >= 1.0)) return false;
  return true;
}

double linear_minimizer(const double* g, const double* lo, const double* hi, int k, double* s) {
  if (plain_simplex(lo, hi, k)) {  // the minimiser is the cheapest vertex
    int best = 0;
    for (int i = 1; i < k; ++i)
      if (g[i] < g[best]) best = i;
    for (int i = 0; i < k; ++i) s[i] = i == best ? 1.0 : 0.0;
    return g[best];
  }
  std::vector<int> idx(static_cast<std::size_t>(k));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return g[a] < g[b]; });
  double budget = 1.0;
  for (int i = 0; i < k; ++i) {
    s[i] = lo[i];
    budget -= lo[i];
  }
  for (int i : idx) {
    const double add = std::min(std::min(hi[i], 1.0) - lo[i], budget);
    if (add <= 0) continue;
    s[i] += add;
    budget -= add;
    if (budget <= 0) break;
  }
  double v = 0.0;
  for (int i = 0; i < k; ++i) v += g[i] * s[i];
  return v;
}

}  // namespace mixlaw
