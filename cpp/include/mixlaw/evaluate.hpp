// Evaluation of a law on prepared records: predictions, parameter gradients (J^T w and
// the full Jacobian) and gradients with respect to the mixture h. Each runs its chunks of
// records in parallel; `cancel` (may be null) skips the chunks not yet started once set
// (the outputs are then incomplete: the caller drops them).
//
// One engine (`for_each_record`) walks the records mixture by mixture: it computes the
// law's mixture features once per distinct mixture, then for each record of that
// mixture the prediction L and the short vector u = dL/d(slot) (see law.hpp). Every
// consumer is a small visitor on top of it, so each formula exists exactly once.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include "mixlaw/law.hpp"
#include "mixlaw/parallel.hpp"
#include "mixlaw/records.hpp"

namespace mixlaw {

// Laws with the data-constrained option (LawSpec::repetition) go through repetition.hpp:
// the records must carry unique tokens, and the h-gradient is that of the law with the
// weights entering through the effective mixture and token count.

// Predictions at every record (out: n, original record order).
void predict(const Plan& plan, const double* theta, const Records& rec, double* out, int threads,
             const CancelFlag* cancel = nullptr);

// Predictions (pred may be null) and the parameter gradient J^T w (grad: n_params).
// The reduction runs over a fixed partition of the data, so any thread count gives a
// bit-identical gradient.
void predict_grad(const Plan& plan, const double* theta, const Records& rec, const double* w,
                  double* pred, double* grad, int threads, const CancelFlag* cancel = nullptr);

// Predictions (may be null) and the full Jacobian dL_j/dtheta_p (J: n x n_params, row-major).
void jacobian(const Plan& plan, const double* theta, const Records& rec, double* pred, double* J,
              int threads, const CancelFlag* cancel = nullptr);

// dL_j/dh_ji treating the k weights as independent variables (out: n x k, row-major).
// At h_i = 0 the one-sided derivative is returned: it is -inf for an inv_power_sum
// domain with 0 < gamma_i < 1 (the law is not differentiable there), and for the bimix
// target domain with gamma > 0.
//
// The bimix law is infinite where its target domain has weight 0 (gamma > 0): predict
// returns +inf there, and its parameter derivatives are +inf; nothing throws.
void grad_h(const Plan& plan, const double* theta, const Records& rec, double* out, int threads,
            const CancelFlag* cancel = nullptr);

// Throws std::invalid_argument (naming H and the first bad record, in original order)
// when the records cannot be fitted by the law whatever its parameters: a bimix law's
// target domain with weight 0 in some record (the law's loss is infinite there).
void check_fit_records(const Plan& plan, const Records& rec);

namespace detail {

constexpr int max_features = 5;

// The conventions at a zero: the one-sided slope of h^g at h = 0 (h^0 = 1), and u^e for u <= 0
// (the linear_power feature's sum C h when it is not positive). The mixture solver's fast
// evaluator uses the same ones.
inline double power_slope_at_zero(double g) {
  return g == 1.0 ? 1.0 : (g > 0.0 && g < 1.0 ? std::numeric_limits<double>::infinity() : 0.0);
}
inline double power_of_nonpositive(double e) {
  return e > 0 ? 0.0 : (e == 0 ? 1.0 : std::numeric_limits<double>::infinity());
}

// Scratch for one mixture: feature values, their parameter gradients and h-gradients.
struct MixtureWork {
  int k = 0;
  double phi[max_features] = {0, 0, 0, 0, 0};
  std::vector<double> dphi;     // concatenated parameter gradients of each feature
  std::vector<int> dphi_off;    // offset of feature f in dphi
  std::vector<double> dphi_dh;  // n_features * k
  std::vector<double> t;        // k: h_i^gamma_i of the inv_power_sum feature
  std::vector<double> ex;       // k: exp(t_i h_i) of the sum_exp feature
  double pw = 0.0;              // h_target^(-g) of the target_power feature
  // (a law has at most one feature of each of these kinds)

  explicit MixtureWork(const Plan& plan) : k(plan.spec.k) {
    int off = 0;
    for (const auto& fp : plan.feature_params) {
      dphi_off.push_back(off);
      off += static_cast<int>(fp.size());
    }
    dphi.assign(static_cast<std::size_t>(off), 0.0);
    dphi_dh.assign(plan.features.size() * static_cast<std::size_t>(k), 0.0);
    t.assign(static_cast<std::size_t>(k), 0.0);
    ex.assign(static_cast<std::size_t>(k), 0.0);
  }
};

// Values shared by every record of one call: the scalar parameters and, where an
// exponent is a global parameter, N'^-b and D'^-b per distinct N and D.
struct CallConstants {
  double ln_n_scale, ln_d_scale;
  double E;  // 0 when the law has no E (linear)
  std::vector<double> eN_uniq, eD_uniq;  // empty when the exponent is a mixture feature
};

// cancel (may be null): polled every 4,096 values (throws Cancelled); millions of distinct
// sizes or token counts take a second here.
CallConstants call_constants(const Plan& plan, const double* theta, const Records& rec,
                             const CancelFlag* cancel = nullptr);

// Computes the features of mixture m into w (all but feature `skip`, which the caller
// computes itself; -1: none).
template <bool ParamGrad, bool HGrad>
inline void mixture_features(const Plan& plan, const double* theta, const Records& rec, std::size_t m,
                             MixtureWork& w, int skip = -1) {
  const int k = plan.spec.k;
  const double* h = rec.mix_h.data() + m * static_cast<std::size_t>(k);
  const double* lh = rec.mix_logh.data() + m * static_cast<std::size_t>(k);
  const int nf = static_cast<int>(plan.features.size());
  for (int f = 0; f < nf; ++f) {
    if (f == skip) continue;
    const Feature& F = plan.features[f];
    const double* C = theta + F.c_off;
    if (F.kind == Feature::inv_power_sum) {
      const double* g = theta + F.g_off;
      double* t = w.t.data();
      double S = 0.0;
      // A domain with h_i == 0 contributes nothing, whatever gamma_i (lh is 0 there,
      // so exp() is finite and the mask keeps the loop branch-free).
      for (int i = 0; i < k; ++i) {
        double ti = std::exp(g[i] * lh[i]);
        ti = h[i] > 0 ? ti : 0.0;
        t[i] = ti;
        S += C[i] * ti;
      }
      const double inv = 1.0 / S;
      w.phi[f] = inv;
      const double inv2 = inv * inv;
      if (ParamGrad) {
        double* d = w.dphi.data() + w.dphi_off[f];
        for (int i = 0; i < k; ++i) {
          d[i] = -t[i] * inv2;
          d[k + i] = -C[i] * t[i] * lh[i] * inv2;
        }
      }
      if (HGrad) {
        double* dh = w.dphi_dh.data() + static_cast<std::size_t>(f) * k;
        for (int i = 0; i < k; ++i) {
          // d(h^gamma)/dh
          const double slope = h[i] > 0 ? g[i] * t[i] / h[i] : power_slope_at_zero(g[i]);
          dh[i] = (C[i] == 0.0 ? 0.0 : -C[i] * slope * inv2);
        }
      }
    } else if (F.kind == Feature::exp_linear) {
      // phi = exp(sum_i t_i h_i); d/dt_i = phi h_i, d/dh_i = phi t_i.
      double s = 0.0;
      for (int i = 0; i < k; ++i) s += C[i] * h[i];
      const double phi = std::exp(s);
      w.phi[f] = phi;
      if (ParamGrad) {
        double* d = w.dphi.data() + w.dphi_off[f];
        for (int i = 0; i < k; ++i) d[i] = phi * h[i];
      }
      if (HGrad) {
        double* dh = w.dphi_dh.data() + static_cast<std::size_t>(f) * k;
        for (int i = 0; i < k; ++i) dh[i] = phi * C[i];
      }
    } else if (F.kind == Feature::sum_exp) {
      // phi = sum_i C_i e_i, e_i = exp(t_i h_i); d/dC_i = e_i, d/dt_i = C_i h_i e_i,
      // d/dh_i = C_i t_i e_i.
      const double* t = theta + F.g_off;
      double* e = w.ex.data();
      double phi = 0.0;
      for (int i = 0; i < k; ++i) {
        e[i] = std::exp(t[i] * h[i]);
        phi += C[i] * e[i];
      }
      w.phi[f] = phi;
      if (ParamGrad) {
        double* d = w.dphi.data() + w.dphi_off[f];
        for (int i = 0; i < k; ++i) {
          d[i] = e[i];
          d[k + i] = C[i] * h[i] * e[i];
        }
      }
      if (HGrad) {
        double* dh = w.dphi_dh.data() + static_cast<std::size_t>(f) * k;
        for (int i = 0; i < k; ++i) dh[i] = C[i] * t[i] * e[i];
      }
    } else if (F.kind == Feature::target_power) {
      // phi = C h_t^(-g). At h_t = 0 (h_t^0 = 1 by convention) the value is +inf for g > 0
      // and so are the derivatives; a zero C gives phi = 0 and no slope in h or g.
      const double c = C[0], g = theta[F.g_off];
      const double ht = h[F.target], lt = lh[F.target];
      constexpr double inf = std::numeric_limits<double>::infinity();
      const double pw = ht > 0 ? std::exp(-g * lt) : (g > 0 ? inf : 1.0);
      w.pw = pw;
      w.phi[f] = c == 0.0 ? 0.0 : c * pw;
      if (ParamGrad) {
        double* d = w.dphi.data() + w.dphi_off[f];
        d[0] = pw;
        d[1] = c == 0.0 ? 0.0 : (ht > 0 ? -c * pw * lt : inf);
      }
      if (HGrad) {
        double* dh = w.dphi_dh.data() + static_cast<std::size_t>(f) * k;
        for (int i = 0; i < k; ++i) dh[i] = 0.0;
        if (c != 0.0 && g != 0.0) dh[F.target] = ht > 0 ? -g * c * pw / ht : -inf;
      }
    } else if (F.kind == Feature::linear_sum) {
      // phi = sum_i C_i h_i; d/dC_i = h_i, d/dh_i = C_i.
      double phi = 0.0;
      for (int i = 0; i < k; ++i) phi += C[i] * h[i];
      w.phi[f] = phi;
      if (ParamGrad) {
        double* d = w.dphi.data() + w.dphi_off[f];
        for (int i = 0; i < k; ++i) d[i] = h[i];
      }
      if (HGrad) {
        double* dh = w.dphi_dh.data() + static_cast<std::size_t>(f) * k;
        for (int i = 0; i < k; ++i) dh[i] = C[i];
      }
    } else {  // linear_power
      const double e = F.sign * theta[F.g_off];
      double u = 0.0;
      for (int i = 0; i < k; ++i) u += C[i] * h[i];
      double phi, lu = 0.0;
      if (u > 0) {
        lu = std::log(u);
        phi = std::exp(e * lu);
      } else {
        phi = power_of_nonpositive(e);
      }
      w.phi[f] = phi;
      const double scale = u > 0 ? e * phi / u : 0.0;  // dphi/du
      if (ParamGrad) {
        double* d = w.dphi.data() + w.dphi_off[f];
        for (int i = 0; i < k; ++i) d[i] = scale * h[i];
        d[k] = u > 0 ? F.sign * phi * lu : 0.0;
      }
      if (HGrad) {
        double* dh = w.dphi_dh.data() + static_cast<std::size_t>(f) * k;
        for (int i = 0; i < k; ++i) dh[i] = scale * C[i];
      }
    }
  }
}

// grad += adj * dphi_f/dtheta for feature f of mixture m, written straight into the
// feature's contiguous parameter blocks (the gradient path of J^T w and of the fitting
// objective; cheaper than materialising dphi and scattering it). Needs w.t and w.phi
// from mixture_features.
inline void accumulate_feature_grad(const Plan& plan, int f, const double* theta, const Records& rec,
                                    std::size_t m, const MixtureWork& w, double adj, double* grad) {
  if (adj == 0.0) return;
  const int k = plan.spec.k;
  const Feature& F = plan.features[f];
  const double* h = rec.mix_h.data() + m * static_cast<std::size_t>(k);
  const double* lh = rec.mix_logh.data() + m * static_cast<std::size_t>(k);
  const double* C = theta + F.c_off;
  double* gC = grad + F.c_off;
  if (F.kind == Feature::inv_power_sum) {
    const double phi = w.phi[f];
    const double a = -adj * phi * phi;  // d(1/S)/dS * adj
    const double* t = w.t.data();
    double* gG = grad + F.g_off;
    for (int i = 0; i < k; ++i) {
      const double at = a * t[i];
      gC[i] += at;
      gG[i] += at * C[i] * lh[i];
    }
  } else if (F.kind == Feature::exp_linear) {
    const double a = adj * w.phi[f];
    for (int i = 0; i < k; ++i) gC[i] += a * h[i];
  } else if (F.kind == Feature::sum_exp) {
    const double* e = w.ex.data();
    double* gT = grad + F.g_off;
    for (int i = 0; i < k; ++i) {
      const double ae = adj * e[i];
      gC[i] += ae;
      gT[i] += ae * C[i] * h[i];
    }
  } else if (F.kind == Feature::target_power) {
    const double c = C[0], ht = h[F.target];
    gC[0] += adj * w.pw;
    if (c != 0.0)
      grad[F.g_off] += ht > 0 ? -adj * c * w.pw * lh[F.target]
                              : adj * std::numeric_limits<double>::infinity();
  } else if (F.kind == Feature::linear_sum) {
    for (int i = 0; i < k; ++i) gC[i] += adj * h[i];
  } else {
    const double e = F.sign * theta[F.g_off];
    double u = 0.0;
    for (int i = 0; i < k; ++i) u += C[i] * h[i];
    if (!(u > 0)) return;
    const double phi = w.phi[f];
    const double scale = adj * e * phi / u;
    for (int i = 0; i < k; ++i) gC[i] += scale * h[i];
    grad[F.g_off] += adj * F.sign * phi * std::log(u);
  }
}

inline double source_value(const Source& s, const double* theta, const MixtureWork& w) {
  switch (s.type) {
    case Source::param: return theta[s.index];
    case Source::feature: return w.phi[s.index];
    default: return 0.0;
  }
}

// One record's Jacobian row dL/dtheta (row: n_params, overwritten) from its slot
// derivatives u and its mixture's feature gradients (mixture_features<true, ...>).
inline void jacobian_row(const Plan& plan, const double* u, const MixtureWork& mw, double* row) {
  std::fill(row, row + plan.n_params, 0.0);
  for (int a = 0; a < n_slots; ++a) {
    const Source& src = plan.src[a];
    if (src.type == Source::param) {
      row[src.index] += u[a];
    } else if (src.type == Source::feature) {
      const auto& idx = plan.feature_params[src.index];
      const double* d = mw.dphi.data() + mw.dphi_off[src.index];
      for (std::size_t q = 0; q < idx.size(); ++q) row[idx[q]] += u[a] * d[q];
    }
  }
}

// One record's dL/dh (row: k, overwritten) from u and the features' h-gradients
// (mixture_features<..., true>).
inline void h_gradient_row(const Plan& plan, const double* u, const MixtureWork& mw, double* row) {
  const int k = plan.spec.k;
  std::fill(row, row + k, 0.0);
  for (int a = 0; a < n_slots; ++a) {
    const Source& src = plan.src[a];
    if (src.type != Source::feature || u[a] == 0.0) continue;
    const double* dh = mw.dphi_dh.data() + static_cast<std::size_t>(src.index) * k;
    for (int i = 0; i < k; ++i) row[i] += u[a] * dh[i];
  }
}

// Walks the mixtures [m_begin, m_end). For each mixture: vis.begin_mixture(m, w); for each of
// its records at grouped position s: vis.record(s, L, u) with u[n_slots] = dL/d(slot); then
// vis.end_mixture(m, w).
template <bool ParamGrad, bool HGrad, class Visitor>
void for_each_record(const Plan& plan, const double* theta, const Records& rec, const CallConstants& cc,
                     std::size_t m_begin, std::size_t m_end, MixtureWork& w, Visitor& vis,
                     const CancelFlag* cancel = nullptr) {
  const Source sM = plan.src[slot_M], saN = plan.src[slot_aN], sbN = plan.src[slot_bN];
  const Source saD = plan.src[slot_aD], sbD = plan.src[slot_bD];
  const bool hasN = saN.type != Source::none, hasD = saD.type != Source::none;
  const bool hasE = plan.src[slot_E].type != Source::none;
  const bool cachedN = !cc.eN_uniq.empty(), cachedD = !cc.eD_uniq.empty();
  for (std::size_t m = m_begin; m < m_end; ++m) {
    if (rec.k > 0) mixture_features<ParamGrad, HGrad>(plan, theta, rec, m, w);
    vis.begin_mixture(m, w);
    const double M = source_value(sM, theta, w);
    const double aN = source_value(saN, theta, w), bN = source_value(sbN, theta, w);
    const double aD = source_value(saD, theta, w), bD = source_value(sbD, theta, w);
    const double base = cc.E + M;
    for (std::size_t s = rec.mix_start[m]; s < rec.mix_start[m + 1]; ++s) {
      // One mixture can hold millions of records (one work chunk): poll every 4,096.
      if (cancel && (s & 4095) == 0 && cancel->is_set()) throw Cancelled();
      double u[n_slots] = {hasE ? 1.0 : 0.0, sM.type != Source::none ? 1.0 : 0.0, 0.0, 0.0, 0.0, 0.0};
      double L = base;
      if (hasN) {
        const double x = rec.lnN[s] - cc.ln_n_scale;
        const double e = cachedN ? cc.eN_uniq[rec.n_idx[s]] : std::exp(-bN * x);
        L += aN * e;
        u[slot_aN] = e;
        u[slot_bN] = -aN * x * e;
      }
      if (hasD) {
        const double x = rec.lnD[s] - cc.ln_d_scale;
        const double e = cachedD ? cc.eD_uniq[rec.d_idx[s]] : std::exp(-bD * x);
        L += aD * e;
        u[slot_aD] = e;
        u[slot_bD] = -aD * x * e;
      }
      vis.record(s, L, u);
    }
    vis.end_mixture(m, w);
  }
}

}  // namespace detail
}  // namespace mixlaw
