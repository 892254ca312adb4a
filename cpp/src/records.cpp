#include "mixlaw/records.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <sstream>
#include <stdexcept>

namespace mixlaw {
namespace {

[[noreturn]] void bad_row(const char* arg, std::size_t row, const std::string& what) {
  std::ostringstream os;
  os << arg << ": row " << row << " " << what;
  throw std::invalid_argument(os.str());
}

// Sorted distinct values and the index of each input value among them.
void uniquify(const std::vector<double>& v, std::vector<double>& uniq, std::vector<std::int32_t>& idx) {
  uniq = v;
  std::sort(uniq.begin(), uniq.end());
  uniq.erase(std::unique(uniq.begin(), uniq.end()), uniq.end());
  idx.resize(v.size());
  for (std::size_t i = 0; i < v.size(); ++i)
    idx[i] = static_cast<std::int32_t>(std::lower_bound(uniq.begin(), uniq.end(), v[i]) - uniq.begin());
}

}  // namespace

Records prepare_records(const double* N, const double* D, const double* H, std::size_t n, int k,
                        double simplex_tol) {
  if (k < 0) throw std::invalid_argument("H: negative number of domains");
  for (std::size_t j = 0; j < n; ++j) {
    if (!std::isfinite(N[j])) bad_row("N", j, "is not finite");
    if (!(N[j] > 0)) bad_row("N", j, "must be > 0");
    if (!std::isfinite(D[j])) bad_row("D", j, "is not finite");
    if (!(D[j] > 0)) bad_row("D", j, "must be > 0");
    if (k > 0) {
      const double* h = H + j * static_cast<std::size_t>(k);
      double s = 0.0;
      for (int i = 0; i < k; ++i) {
        if (!std::isfinite(h[i])) bad_row("H", j, "has a non-finite weight");
        if (h[i] < 0) bad_row("H", j, "has a negative weight");
        s += h[i];
      }
      if (std::fabs(s - 1.0) > simplex_tol) {
        std::ostringstream os;
        os << "sums to " << s << ", expected 1 within " << simplex_tol;
        bad_row("H", j, os.str());
      }
    }
  }

  Records r;
  r.n = n;
  r.k = k;
  // Group records by mixture: stable sort of record indices by their h row.
  std::vector<std::int64_t> order(n);
  std::iota(order.begin(), order.end(), std::int64_t{0});
  const std::size_t ku = static_cast<std::size_t>(k);
  if (k > 0) {
    std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) {
      const double* ha = H + static_cast<std::size_t>(a) * ku;
      const double* hb = H + static_cast<std::size_t>(b) * ku;
      for (std::size_t i = 0; i < ku; ++i) {
        if (ha[i] < hb[i]) return true;
        if (hb[i] < ha[i]) return false;
      }
      return false;
    });
  }
  r.order = order;
  r.mix_start.push_back(0);
  for (std::size_t s = 0; s < n; ++s) {
    bool new_mix = (s == 0);
    if (!new_mix && k > 0) {
      const double* ha = H + static_cast<std::size_t>(order[s - 1]) * ku;
      const double* hb = H + static_cast<std::size_t>(order[s]) * ku;
      for (std::size_t i = 0; i < ku && !new_mix; ++i) new_mix = !(ha[i] == hb[i]);
    }
    if (new_mix) {
      if (s > 0) r.mix_start.push_back(s);
      const double* h = H + static_cast<std::size_t>(order[s]) * ku;
      for (std::size_t i = 0; i < ku; ++i) {
        r.mix_h.push_back(h[i]);
        r.mix_logh.push_back(h[i] > 0 ? std::log(h[i]) : 0.0);
      }
    }
  }
  if (n > 0) r.mix_start.push_back(n);
  r.n_mix = r.mix_start.size() - 1;
  if (n == 0) r.n_mix = 0;

  std::vector<double> lnN(n), lnD(n);
  for (std::size_t s = 0; s < n; ++s) {
    lnN[s] = std::log(N[order[s]]);
    lnD[s] = std::log(D[order[s]]);
  }
  uniquify(lnN, r.uniq_lnN, r.n_idx);
  uniquify(lnD, r.uniq_lnD, r.d_idx);
  r.lnN = std::move(lnN);
  r.lnD = std::move(lnD);

  // Work chunks of roughly equal cost (records + k per mixture feature evaluation).
  constexpr std::size_t chunk_cost = 16384;
  r.chunk_start.push_back(0);
  std::size_t cost = 0;
  for (std::size_t m = 0; m < r.n_mix; ++m) {
    cost += (r.mix_start[m + 1] - r.mix_start[m]) * 4 + ku + 1;
    if (cost >= chunk_cost && m + 1 < r.n_mix) {
      r.chunk_start.push_back(m + 1);
      cost = 0;
    }
  }
  r.chunk_start.push_back(r.n_mix);
  return r;
}

}  // namespace mixlaw
