#include "mixlaw/repetition.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "mixlaw/evaluate.hpp"

namespace mixlaw {

RepeatedEpochs repeated_epochs(double x, double R) {
  if (!(x > 1.0)) return {x, 1.0, 0.0};
  const double t = (x - 1.0) / R;
  const double e = std::exp(-t);
  const double saturation = -std::expm1(-t);  // 1 - e^-t, accurate just past x = 1
  return {1.0 + R * saturation, e, saturation - t * e};
}

void check_repetition_records(const Plan& plan, const Records& rec) {
  if (!plan.spec.repetition) return;
  const std::size_t cols = static_cast<std::size_t>(std::max(rec.k, 1));
  if (rec.U.size() != rec.n * cols)
    throw std::invalid_argument(
        "unique_tokens: the data-constrained law (repetition=True) needs the unique tokens of every record" +
        std::string(rec.k > 1 ? " and domain" : "") + "; these records have none");
}

namespace {

// The records at the effective token counts and mixtures, and the derivatives of the
// transform, all in grouped record order.
// Both chain rules share one factor per record and domain: with
// b_i = dL/dlog D' + dL/dh'_i - sum_j h'_j dL/dh'_j (the change of L when D'_i grows by D'),
// dL/dh_i = a_i b_i and dL/dR_i = r_i b_i (a shared R_D: the sum over i).
struct Effective {
  Records eff;
  std::vector<double> a;  // n x max(k, 1): D g'(x_i) / D'
  std::vector<double> r;  // n x max(k, 1): U_i dg/dR(x_i) / D'
};

Effective effective_records(const Plan& plan, const double* theta, const Records& rec) {
  check_repetition_records(plan, rec);
  const int k = rec.k;
  const std::size_t n = rec.n, kk = static_cast<std::size_t>(k), cols = std::max<std::size_t>(kk, 1);
  const double* R = theta + plan.repetition_param;  // R[i] with one per domain, R[0] shared
  const bool per_domain = plan.n_repetition_params > 1;
  constexpr double inf = std::numeric_limits<double>::infinity();
  Effective out;
  Records& e = out.eff;
  e.n = n;
  e.k = k;
  e.order = rec.order;
  e.lnN = rec.lnN;
  e.n_idx = rec.n_idx;
  e.uniq_lnN = rec.uniq_lnN;
  e.lnD.resize(n);
  e.d_idx.resize(n);
  out.a.assign(n * cols, 0.0);
  out.r.assign(n * cols, 0.0);
  if (k == 0) {  // one implicit domain, h = 1: the records keep their (single) mixture group
    e.n_mix = rec.n_mix;
    e.mix_start = rec.mix_start;
    e.chunk_start = rec.chunk_start;
  } else {  // each record its own mixture h'
    e.n_mix = n;
    e.mix_h.resize(n * kk);
    e.mix_logh.resize(n * kk);
    e.mix_start.resize(n + 1);
    for (std::size_t s = 0; s <= n; ++s) e.mix_start[s] = s;
    constexpr std::size_t chunk = 4096;  // fixed: the partition never depends on the thread count
    for (std::size_t s = 0; s < n; s += chunk) e.chunk_start.push_back(s);
    e.chunk_start.push_back(n);
  }
  std::vector<double> Di(cols), gp(cols), gR(cols);
  for (std::size_t m = 0; m < rec.n_mix; ++m) {
    const double* h = k > 0 ? rec.mix_h.data() + m * kk : nullptr;
    for (std::size_t s = rec.mix_start[m]; s < rec.mix_start[m + 1]; ++s) {
      const double D = std::exp(rec.lnD[s]);
      const double* U = rec.U.data() + s * cols;
      bool repeated = false;
      double S = 0.0;
      for (std::size_t i = 0; i < cols; ++i) {
        const double hi = k > 0 ? h[i] : 1.0;
        const double x = U[i] == inf ? 0.0 : hi * D / U[i];
        if (x > 1.0) {
          const RepeatedEpochs r = repeated_epochs(x, R[per_domain ? i : 0]);
          Di[i] = U[i] * r.g;
          gp[i] = r.dg_dx;
          gR[i] = U[i] * r.dg_dR;
          repeated = true;
        } else {
          Di[i] = hi * D;  // U_i g(x_i) = h_i D, without the rounding of U_i (h_i D / U_i)
          gp[i] = 1.0;
          gR[i] = 0.0;
        }
        S += Di[i];
      }
      // No domain repeated: exactly the plain law's D and h (sum h = 1 is the records' contract).
      const double Dp = repeated ? S : D;
      e.lnD[s] = repeated ? std::log(S) : rec.lnD[s];
      e.d_idx[s] = static_cast<std::int32_t>(s);
      for (std::size_t i = 0; i < cols; ++i) {
        out.a[s * cols + i] = D * gp[i] / Dp;
        out.r[s * cols + i] = gR[i] / Dp;
      }
      if (k == 0) continue;
      double* hp = e.mix_h.data() + s * kk;
      double* lhp = e.mix_logh.data() + s * kk;
      for (std::size_t i = 0; i < kk; ++i) {
        hp[i] = repeated ? Di[i] / S : h[i];
        lhp[i] = hp[i] > 0 ? (repeated ? std::log(hp[i]) : rec.mix_logh[m * kk + i]) : 0.0;
      }
    }
  }
  e.uniq_lnD = e.lnD;
  return out;
}

// Per record (grouped order): the prediction, dL/dlog D', dL/dh' (k) and, when J is
// wanted, the law's Jacobian row over its own parameters (R_D's entry left 0).
struct RecordDerivatives {
  const Plan& plan;
  const double* theta;
  double* L;      // n
  double* dlnD;   // n
  double* dh;     // n x k (may be null)
  double* row;    // n x P (may be null)
  const detail::MixtureWork* mw = nullptr;
  double aD = 0.0, bD = 0.0;

  void begin_mixture(std::size_t, const detail::MixtureWork& w) {
    mw = &w;
    aD = detail::source_value(plan.src[slot_aD], theta, w);
    bD = detail::source_value(plan.src[slot_bD], theta, w);
  }
  void record(std::size_t s, double value, const double* u) {
    L[s] = value;
    dlnD[s] = -bD * aD * u[slot_aD];  // d(aD D'^-bD)/d log D'
    if (dh) detail::h_gradient_row(plan, u, *mw, dh + s * static_cast<std::size_t>(plan.spec.k));
    if (row) detail::jacobian_row(plan, u, *mw, row + s * static_cast<std::size_t>(plan.n_params));
  }
  void end_mixture(std::size_t, const detail::MixtureWork&) {}
};

}  // namespace

void evaluate_repeated(const Plan& plan, const double* theta, const Records& rec, double* pred, double* J,
                       double* GH, int threads, const CancelFlag* cancel) {
  if (!plan.spec.repetition) throw std::invalid_argument("law: not a data-constrained law (repetition=False)");
  const Effective ef = effective_records(plan, theta, rec);
  const Records& e = ef.eff;
  const std::size_t n = rec.n, kk = static_cast<std::size_t>(rec.k);
  const std::size_t P = static_cast<std::size_t>(plan.n_params);
  const bool need_h = kk > 0 && (J != nullptr || GH != nullptr);
  std::vector<double> L(n), dlnD(n), dh(need_h ? n * kk : 0), rows(J ? n * P : 0);
  const detail::CallConstants cc = detail::call_constants(plan, theta, e, cancel);
  parallel_for(
      e.n_chunks(), threads,
      [&](std::size_t c) {
        detail::MixtureWork w(plan);
        RecordDerivatives vis{plan, theta, L.data(), dlnD.data(), need_h ? dh.data() : nullptr,
                              J ? rows.data() : nullptr};
        if (J) {
          if (need_h) detail::for_each_record<true, true>(plan, theta, e, cc, e.chunk_start[c], e.chunk_start[c + 1], w, vis, cancel);
          else detail::for_each_record<true, false>(plan, theta, e, cc, e.chunk_start[c], e.chunk_start[c + 1], w, vis, cancel);
        } else if (need_h) {
          detail::for_each_record<false, true>(plan, theta, e, cc, e.chunk_start[c], e.chunk_start[c + 1], w, vis, cancel);
        } else {
          detail::for_each_record<false, false>(plan, theta, e, cc, e.chunk_start[c], e.chunk_start[c + 1], w, vis, cancel);
        }
      },
      cancel);
  if (cancel && cancel->is_set()) return;
  const std::size_t r0 = static_cast<std::size_t>(plan.repetition_param), cols = std::max<std::size_t>(kk, 1);
  const bool per_domain = plan.n_repetition_params > 1;
  std::vector<double> b(cols);
  for (std::size_t s = 0; s < n; ++s) {
    const std::size_t j = static_cast<std::size_t>(rec.order[s]);
    if (pred) pred[j] = L[s];
    if (!J && !GH) continue;
    double mean = 0.0;  // sum_l h'_l dL/dh'_l (a weight of 0 adds nothing, even with dL/dh' = -inf)
    const double* g = need_h ? dh.data() + s * kk : nullptr;
    const double* hp = kk > 0 ? e.mix_h.data() + s * kk : nullptr;
    for (std::size_t i = 0; i < kk && g; ++i)
      if (hp[i] > 0) mean += hp[i] * g[i];
    for (std::size_t i = 0; i < cols; ++i) b[i] = dlnD[s] + (g ? g[i] - mean : 0.0);
    if (J) {
      double* out = J + j * P;
      std::copy(rows.begin() + static_cast<std::ptrdiff_t>(s * P), rows.begin() + static_cast<std::ptrdiff_t>((s + 1) * P), out);
      for (std::size_t i = 0; i < cols; ++i)  // r_i = 0 for a domain not repeated (b_i may be infinite there)
        if (ef.r[s * cols + i] != 0.0) out[r0 + (per_domain ? i : 0)] += ef.r[s * cols + i] * b[i];
    }
    if (GH && kk > 0)
      for (std::size_t i = 0; i < kk; ++i) GH[j * kk + i] = ef.a[s * kk + i] * b[i];
  }
}

}  // namespace mixlaw
