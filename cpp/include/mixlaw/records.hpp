// Records (N, D, h rows) prepared once per data set.
//
// Real run tables repeat a lot: every checkpoint of a run shares its mixture, and a
// handful of model sizes and token counts recur. Records are therefore grouped by
// distinct mixture (records of one mixture are contiguous in `order`), and the logs
// of N, D and h are taken once. Evaluators compute mixture features once per group.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "mixlaw/parallel.hpp"

namespace mixlaw {

struct Records {
  std::size_t n = 0;  // records
  int k = 0;          // domains
  std::size_t n_mix = 0;

  // Distinct mixtures (sorted lexicographically, which makes grouping deterministic).
  std::vector<double> mix_h;     // n_mix * k
  std::vector<double> mix_logh;  // n_mix * k; log h, or 0 where h == 0 (masked by mix_h)
  std::vector<std::size_t> mix_start;  // n_mix + 1: records of mixture m are
                                       // order[mix_start[m] .. mix_start[m+1])

  // Per record, in grouped order.
  std::vector<std::int64_t> order;  // original record index
  std::vector<double> lnN;          // log N (raw units)
  std::vector<double> lnD;          // log D (raw units)
  std::vector<std::int32_t> n_idx;  // index into uniq_lnN
  std::vector<std::int32_t> d_idx;  // index into uniq_lnD

  std::vector<double> uniq_lnN;  // distinct log N values
  std::vector<double> uniq_lnD;  // distinct log D values

  // Unique tokens available per domain (data-constrained laws, repetition.hpp), per record
  // in grouped order, max(k, 1) each (+inf: unlimited); empty when not given.
  std::vector<double> U;

  // Fixed partition of mixtures into work chunks. It depends only on the data, never on
  // the thread count, so that chunked reductions give identical results for any threads.
  std::vector<std::size_t> chunk_start;  // n_chunks + 1 mixture indices
  std::size_t n_chunks() const { return chunk_start.empty() ? 0 : chunk_start.size() - 1; }
};

// Validates and prepares records. N, D: n values (> 0, finite); H: n*k row-major, each
// row finite, >= 0, summing to 1 within simplex_tol (k == 0 allowed: no mixture).
// Throws std::invalid_argument naming the argument and the first bad row, and Cancelled
// once `cancel` (may be null; polled every 4,096 records) is set.
Records prepare_records(const double* N, const double* D, const double* H, std::size_t n, int k,
                        double simplex_tol = 1e-6, const CancelFlag* cancel = nullptr);

// Attaches the unique tokens U (original record order, n x max(k, 1) row-major; each > 0,
// +inf for an unlimited domain) to prepared records. Throws std::invalid_argument naming
// unique_tokens and the first bad record.
void attach_unique_tokens(Records& rec, const double* U);

// Numbers the distinct rows of an n x len row-major array 0, 1, ... in order of first
// appearance, as prepare_records groups mixtures (exact equality, -0.0 equal to 0.0; a row
// holding NaN equals no other): ids[j] is row j's number, and `first` (cleared) receives
// the index of the first row of each number. O(n len) by hashing, no sorting. Throws
// Cancelled once `cancel` (may be null) is set.
void number_rows(const double* rows, std::size_t n, std::size_t len, std::int64_t* ids,
                 std::vector<std::int64_t>& first, const CancelFlag* cancel = nullptr);

}  // namespace mixlaw
