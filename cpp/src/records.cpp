#include "mixlaw/records.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
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

// Numbers distinct rows of `len` doubles in order of first appearance, by hashing (open
// addressing). Tables repeat a lot and list a run's checkpoints together, so a row equal
// to the previous one is recognised without hashing at all. O(n len), no sorting.
// Throws Cancelled when `cancel` is set, checked every 4,096 values of j.
inline void poll(const CancelFlag* cancel, std::size_t j) {
  if ((j & 4095) == 0 && cancel && cancel->is_set()) throw Cancelled();
}

class RowInterner {
 public:
  RowInterner(std::size_t expected, std::size_t len, const CancelFlag* cancel) : len_(len), cancel_(cancel) {
    std::size_t cap = 16;
    while (cap < 2 * expected) cap <<= 1;
    slots_.assign(cap, -1);
  }
  std::int32_t id(const double* row) {
    if (last_ >= 0 && equal(rows_[static_cast<std::size_t>(last_)], row)) return last_;
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t pos = hash(row) & mask;; pos = (pos + 1) & mask) {
      const std::int32_t c = slots_[pos];
      if (c < 0) {
        slots_[pos] = last_ = static_cast<std::int32_t>(rows_.size());
        rows_.push_back(row);
        if (2 * rows_.size() > slots_.size()) grow();  // load <= 1/2: probes stay short, a free slot always exists
        return last_;
      }
      if (equal(rows_[static_cast<std::size_t>(c)], row)) return last_ = c;
    }
  }
  const std::vector<const double*>& rows() const { return rows_; }

 private:
  void grow() {
    slots_.assign(slots_.size() * 2, -1);
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t c = 0; c < rows_.size(); ++c) {
      poll(cancel_, c);  // a late growth rehashes millions of rows
      std::size_t pos = hash(rows_[c]) & mask;
      while (slots_[pos] >= 0) pos = (pos + 1) & mask;
      slots_[pos] = static_cast<std::int32_t>(c);
    }
  }
  bool equal(const double* a, const double* b) const {
    for (std::size_t i = 0; i < len_; ++i)
      if (!(a[i] == b[i])) return false;
    return true;
  }
  std::size_t hash(const double* row) const {
    std::uint64_t h = 0x9e3779b97f4a7c15ULL;
    for (std::size_t i = 0; i < len_; ++i) {
      const double x = row[i] + 0.0;  // -0.0 and 0.0 compare equal: give them one hash
      std::uint64_t b;
      std::memcpy(&b, &x, sizeof b);
      h ^= b + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    }
    h ^= h >> 33;  // finaliser (splitmix-style) so the low bits used by the mask are mixed
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return static_cast<std::size_t>(h);
  }
  std::size_t len_;
  const CancelFlag* cancel_;
  std::vector<std::int32_t> slots_;
  std::vector<const double*> rows_;
  std::int32_t last_ = -1;
};

// Distinct values of v (first-appearance order), their logs, and each value's index.
void intern_logs(const double* v, std::size_t n, std::vector<double>& uniq_log, std::vector<std::int32_t>& idx,
                 const CancelFlag* cancel) {
  RowInterner in(std::min<std::size_t>(n, 1024), 1, cancel);  // grows when values are mostly distinct
  idx.resize(n);
  for (std::size_t j = 0; j < n; ++j) {
    poll(cancel, j);
    idx[j] = in.id(v + j);
  }
  uniq_log.resize(in.rows().size());
  for (std::size_t u = 0; u < uniq_log.size(); ++u) {
    poll(cancel, u);
    uniq_log[u] = std::log(*in.rows()[u]);
  }
}

}  // namespace

Records prepare_records(const double* N, const double* D, const double* H, std::size_t n, int k,
                        double simplex_tol, const CancelFlag* cancel) {
  if (k < 0) throw std::invalid_argument("H: negative number of domains");
  for (std::size_t j = 0; j < n; ++j) {
    poll(cancel, j);
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
  // Group records by mixture (mixtures numbered in order of first appearance); within a
  // mixture, records keep their input order (counting sort: stable, O(n k)).
  const std::size_t ku = static_cast<std::size_t>(k);
  std::vector<std::int32_t> mix_of(n, 0);
  std::size_t n_mix = n > 0 ? 1 : 0;
  if (k > 0 && n > 0) {
    RowInterner mixes(n, ku, cancel);
    for (std::size_t j = 0; j < n; ++j) {
      poll(cancel, j);
      mix_of[j] = mixes.id(H + j * ku);
    }
    n_mix = mixes.rows().size();
    r.mix_h.resize(n_mix * ku);
    r.mix_logh.resize(n_mix * ku);
    for (std::size_t m = 0; m < n_mix; ++m) {
      poll(cancel, m);  // k logs each: 100 ms for 3,000,000 mixtures of 3 domains
      const double* h = mixes.rows()[m];
      for (std::size_t i = 0; i < ku; ++i) {
        r.mix_h[m * ku + i] = h[i];
        r.mix_logh[m * ku + i] = h[i] > 0 ? std::log(h[i]) : 0.0;
      }
    }
  }
  r.n_mix = n_mix;
  r.mix_start.assign(n_mix + 1, 0);
  for (std::size_t j = 0; j < n; ++j) ++r.mix_start[static_cast<std::size_t>(mix_of[j]) + 1];
  for (std::size_t m = 0; m < n_mix; ++m) r.mix_start[m + 1] += r.mix_start[m];
  r.order.resize(n);
  {
    std::vector<std::size_t> next(r.mix_start.begin(), r.mix_start.end() - 1);
    for (std::size_t j = 0; j < n; ++j) {
      poll(cancel, j);
      r.order[next[static_cast<std::size_t>(mix_of[j])]++] = static_cast<std::int64_t>(j);
    }
  }

  // Logs once per distinct N and D.
  std::vector<std::int32_t> nid, did;
  intern_logs(N, n, r.uniq_lnN, nid, cancel);
  intern_logs(D, n, r.uniq_lnD, did, cancel);
  r.lnN.resize(n);
  r.lnD.resize(n);
  r.n_idx.resize(n);
  r.d_idx.resize(n);
  for (std::size_t s = 0; s < n; ++s) {
    poll(cancel, s);
    const auto j = static_cast<std::size_t>(r.order[s]);
    r.n_idx[s] = nid[j];
    r.d_idx[s] = did[j];
    r.lnN[s] = r.uniq_lnN[static_cast<std::size_t>(nid[j])];
    r.lnD[s] = r.uniq_lnD[static_cast<std::size_t>(did[j])];
  }

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

void number_rows(const double* rows, std::size_t n, std::size_t len, std::int64_t* ids,
                 std::vector<std::int64_t>& first, const CancelFlag* cancel) {
  first.clear();
  if (n == 0) return;
  RowInterner interner(n, len, cancel);
  for (std::size_t j = 0; j < n; ++j) {
    poll(cancel, j);
    const std::int32_t id = interner.id(rows + j * len);
    if (static_cast<std::size_t>(id) == first.size()) first.push_back(static_cast<std::int64_t>(j));
    ids[j] = id;
  }
}

void attach_unique_tokens(Records& rec, const double* U) {
  const std::size_t cols = static_cast<std::size_t>(std::max(rec.k, 1));
  for (std::size_t j = 0; j < rec.n; ++j)
    for (std::size_t i = 0; i < cols; ++i) {
      const double u = U[j * cols + i];
      if (!(u > 0))  // NaN included
        throw std::invalid_argument("unique_tokens: record " + std::to_string(j) + (cols > 1 ? ", domain " + std::to_string(i) : std::string()) +
                                    " has " + std::to_string(u) + " unique tokens; they must be > 0 (inf: unlimited)");
    }
  rec.U.resize(rec.n * cols);
  for (std::size_t s = 0; s < rec.n; ++s) {
    const double* src = U + static_cast<std::size_t>(rec.order[s]) * cols;
    std::copy(src, src + cols, rec.U.begin() + static_cast<std::ptrdiff_t>(s * cols));
  }
}

}  // namespace mixlaw
