#include "mixlaw/mixture.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <stdexcept>

#include "mixlaw/evaluate.hpp"
#include "mixlaw/random.hpp"
#include "mixlaw/simplex.hpp"
#include "mixlaw/vmath.hpp"

namespace mixlaw {
namespace {

// A one-record Records whose mixture is overwritten at every evaluation, so that the
// law formulas of evaluate.hpp are reused as they are.
Records single_record(int k, double N, double D) {
  Records r;
  r.n = 1;
  r.k = k;
  r.n_mix = 1;
  r.mix_h.assign(static_cast<std::size_t>(k), 0.0);
  r.mix_logh.assign(static_cast<std::size_t>(k), 0.0);
  r.mix_start = {0, 1};
  r.order = {0};
  r.lnN = {std::log(N)};
  r.lnD = {std::log(D)};
  r.n_idx = {0};
  r.d_idx = {0};
  r.uniq_lnN = r.lnN;
  r.uniq_lnD = r.lnD;
  r.chunk_start = {0, 1};
  return r;
}

struct PointVisitor {
  double L = 0.0;
  double u[n_slots] = {0, 0, 0, 0, 0, 0};
  void begin_mixture(std::size_t, const detail::MixtureWork&) {}
  void record(std::size_t, double value, const double* uu) {
    L = value;
    std::copy(uu, uu + n_slots, u);
  }
  void end_mixture(std::size_t, const detail::MixtureWork&) {}
};

// The generic evaluator: every law through the formulas of evaluate.hpp, on the targets
// listed in `targets` (F and grad only see those; per_law is written for them).
struct GenericEvaluator {
  const std::vector<FittedLaw>& laws;
  const MixtureProblem& pb;
  int k;
  std::vector<int> targets;
  Records rec;
  std::vector<detail::MixtureWork> work;         // per law (only listed ones are used)
  std::vector<detail::CallConstants> constants;  // N and D are fixed: computed once

  GenericEvaluator(const std::vector<FittedLaw>& l, const MixtureProblem& p, int kk, std::vector<int> ts)
      : laws(l), pb(p), k(kk), targets(std::move(ts)), rec(single_record(kk, p.N, p.D)) {
    for (const auto& fl : laws) {
      work.emplace_back(*fl.plan);
      constants.push_back(detail::call_constants(*fl.plan, fl.theta, rec));
    }
  }

  // Adds sum_t w_t L_t to F and its h-gradient to grad (which the caller has zeroed).
  // logh (optional): log h where h > 0, when the caller already knows it.
  void add(const double* h, double& F, double* grad, double* per_law, const double* logh) {
    for (int i = 0; i < k; ++i) {
      rec.mix_h[i] = h[i];
      rec.mix_logh[i] = h[i] > 0 ? (logh ? logh[i] : std::log(h[i])) : 0.0;
    }
    for (int t : targets) {
      const Plan& plan = *laws[t].plan;
      const detail::CallConstants& cc = constants[t];
      PointVisitor vis;
      if (grad) {
        detail::for_each_record<false, true>(plan, laws[t].theta, rec, cc, 0, 1, work[t], vis);
      } else {
        detail::for_each_record<false, false>(plan, laws[t].theta, rec, cc, 0, 1, work[t], vis);
      }
      if (per_law) per_law[t] = vis.L;
      const double wt = pb.weights[t];
      if (wt == 0.0) continue;
      F += wt * vis.L;
      if (grad) {
        for (int a = 0; a < n_slots; ++a) {
          const Source& src = plan.src[a];
          if (src.type != Source::feature || vis.u[a] == 0.0) continue;
          const double* dh = work[t].dphi_dh.data() + static_cast<std::size_t>(src.index) * k;
          const double c = wt * vis.u[a];
          for (int i = 0; i < k; ++i) grad[i] += c * dh[i];
        }
      }
    }
  }
};

// Whether the fast evaluator handles law `plan`: the exponents b_N, b_D are global
// parameters (so N'^-b_N and D'^-b_D are per-problem constants), M is 1/sum C h^gamma,
// (sum C h)^(+-g) or a constant, and a_N, a_D are (sum C h)^g or constants. That covers
// chinchilla, additive, joint and simple; full, dml_*, bimix and linear go the generic way.
bool fast_law(const Plan& plan) {
  auto kind = [&](Slot a) {
    const Source& s = plan.src[a];
    return s.type == Source::feature ? plan.features[s.index].kind : -1;
  };
  for (Slot a : {slot_E, slot_bN, slot_bD})
    if (plan.src[a].type == Source::feature) return false;
  if (plan.src[slot_M].type == Source::feature && kind(slot_M) != Feature::inv_power_sum &&
      kind(slot_M) != Feature::linear_power)
    return false;
  for (Slot a : {slot_aN, slot_aD})
    if (plan.src[a].type == Source::feature && kind(a) != Feature::linear_power) return false;
  return true;
}

// F(h) = sum_t w_t L_t and its h-gradient for one problem. The fitted laws are "compiled"
// once per problem into flat arrays: the rows (C_i, gamma_i) of every 1/sum C h^gamma term,
// the rows C_i of every (sum C h)^e term with its per-problem factor (1, N'^-b_N or D'^-b_D),
// so that an evaluation is a few loops over (term x domain) and batched exp/log (vmath.hpp)
// with no allocation. Targets of weight 0 are left out unless per-law losses are wanted.
// Other laws use the generic evaluator; any non-finite result is recomputed by it, so
// infinities and NaN have exactly the generic semantics.
struct Evaluator {
  const std::vector<FittedLaw>& laws;
  const MixtureProblem& pb;
  int k;
  int nfev = 0;
  bool all_targets;                            // per_law may be asked for
  std::unique_ptr<GenericEvaluator> slow;      // the targets without a fast path, if any
  std::unique_ptr<GenericEvaluator> fallback;  // every target, built on first need
  std::vector<double> slow_grad;

  struct Target {
    int t;
    double w;
    double base;  // E + M when M is a constant
    double cN, cD;  // N'^-b_N, D'^-b_D (0 where the term is absent)
    bool hasN, hasD;
    // Where M, a_N, a_D come from: -1 constant (value in vM, vN, vD), else the index of
    // an inverse-power row (M only) or of a power term.
    int iM = -1, iN = -1, iD = -1;
    bool M_ips = false;
    double vM = 0.0, vN = 0.0, vD = 0.0;
  };
  std::vector<Target> tg;
  int R = 0, J = 0;                // inverse-power rows, power terms
  // All per-problem arrays, carved out of one block. Matrices are stored domain-major
  // (element (i, r) at i * R + r) so that the loops over the rows vectorise.
  std::vector<double> buf;
  double *G, *C, *Cg, *X, *T;  // k*R: gamma, C, C gamma, gamma log h, h^gamma
  double *rw, *inv, *a;        // R: the row's target weight; 1 / sum C h^gamma; gradient factor
  double *PC;                  // k*J: the power terms' C
  double *pe, *pc, *U, *LU, *PHI;  // J: exponent, w_t * factor, sum C h, (e) log u, value, ...
  double *lh;                  // k

  Evaluator(const std::vector<FittedLaw>& l, const MixtureProblem& p, int kk, bool all = false)
      : laws(l), pb(p), k(kk), all_targets(all) {
    std::vector<int> slow_targets;
    const double lnN = std::log(p.N), lnD = std::log(p.D);
    for (int t = 0; t < static_cast<int>(laws.size()); ++t) {
      const Plan& plan = *laws[t].plan;
      if (!all && pb.weights[t] == 0.0) continue;
      if (!fast_law(plan)) {
        slow_targets.push_back(t);
        continue;
      }
      const double* th = laws[t].theta;
      Target x;
      x.t = t;
      x.w = pb.weights[t];
      x.base = plan.src[slot_E].type == Source::param ? th[plan.src[slot_E].index] : 0.0;
      x.hasN = plan.src[slot_aN].type != Source::none;
      x.hasD = plan.src[slot_aD].type != Source::none;
      // As call_constants / for_each_record compute them.
      auto factor = [&](Slot b, double ln, double scale) {
        const double e = plan.src[b].type == Source::param ? th[plan.src[b].index] : 0.0;
        return std::exp(-e * (ln - std::log(scale)));
      };
      x.cN = x.hasN ? factor(slot_bN, lnN, plan.spec.n_scale) : 0.0;
      x.cD = x.hasD ? factor(slot_bD, lnD, plan.spec.d_scale) : 0.0;
      auto place = [&](Slot a, int& idx, double& v) {
        const Source& s = plan.src[a];
        if (s.type == Source::param) v = th[s.index];
        if (s.type != Source::feature) return;
        const Feature& f = plan.features[s.index];
        if (f.kind == Feature::inv_power_sum) {
          idx = R++;
          x.M_ips = true;
        } else {
          idx = J++;
        }
      };
      place(slot_M, x.iM, x.vM);
      place(slot_aN, x.iN, x.vN);
      place(slot_aD, x.iD, x.vD);
      tg.push_back(x);
    }
    if (!slow_targets.empty()) slow = std::make_unique<GenericEvaluator>(l, p, kk, std::move(slow_targets));
    const std::size_t RK = static_cast<std::size_t>(R) * k, JK = static_cast<std::size_t>(J) * k;
    buf.assign(5 * RK + 3 * static_cast<std::size_t>(R) + JK + 5 * static_cast<std::size_t>(J) +
                   static_cast<std::size_t>(k),
               0.0);
    double* b = buf.data();
    auto take = [&](std::size_t n) {
      double* q = b;
      b += n;
      return q;
    };
    G = take(RK), C = take(RK), Cg = take(RK), X = take(RK), T = take(RK);
    rw = take(R), inv = take(R), a = take(R);
    PC = take(JK), pe = take(J), pc = take(J), U = take(J), LU = take(J), PHI = take(J);
    lh = take(k);
    for (const Target& x : tg) {
      const Plan& plan = *laws[x.t].plan;
      const double* th = laws[x.t].theta;
      auto fill = [&](Slot a, int idx, double factor) {
        if (idx < 0) return;
        const Feature& f = plan.features[plan.src[a].index];
        if (a == slot_M && x.M_ips) {
          for (int i = 0; i < k; ++i) {
            G[i * R + idx] = th[f.g_off + i];
            C[i * R + idx] = th[f.c_off + i];
            Cg[i * R + idx] = th[f.c_off + i] * th[f.g_off + i];
          }
          rw[idx] = x.w;
        } else {
          for (int i = 0; i < k; ++i) PC[i * J + idx] = th[f.c_off + i];
          pe[idx] = f.sign * th[f.g_off];
          pc[idx] = x.w * factor;  // generic: skipped when the slot's factor is 0
        }
      };
      fill(slot_M, x.iM, 1.0);
      fill(slot_aN, x.iN, x.cN);
      fill(slot_aD, x.iD, x.cD);
    }
  }

  // The fast path; returns F (grad, per_law as in operator()). Compiled twice, for the
  // baseline and for AVX2 (chosen at run time): the loops over rows vectorise, and without
  // FMA or reassociation both builds round identically.
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
  double fast(const double* h, double* grad, double* per_law, const double* logh) {
    return cpu_has_avx2() ? fast_avx2(h, grad, per_law, logh) : fast_impl(h, grad, per_law, logh);
  }
  __attribute__((target("avx2"))) double fast_avx2(const double* h, double* grad, double* per_law,
                                                   const double* logh) {
    return fast_impl(h, grad, per_law, logh);
  }
  inline __attribute__((always_inline))
#else
  double fast(const double* h, double* grad, double* per_law, const double* logh) {
    return fast_impl(h, grad, per_law, logh);
  }
#endif
  double fast_impl(const double* h, double* grad, double* per_law, const double* logh) {
    const int k = this->k, R = this->R, J = this->J;
    double* __restrict lh = this->lh;
    bool positive = true;
    for (int i = 0; i < k; ++i) {
      positive &= h[i] > 0;
      lh[i] = h[i] > 0 ? (logh ? logh[i] : std::log(h[i])) : 0.0;
    }
    if (R > 0) {
      const double* __restrict G = this->G;
      const double* __restrict C = this->C;
      double* __restrict X = this->X;
      double* __restrict T = this->T;
      double* __restrict inv = this->inv;
      // h^gamma for every inverse-power row; a zero weight contributes nothing.
      for (int i = 0; i < k; ++i)
        for (int r = 0; r < R; ++r) X[i * R + r] = G[i * R + r] * lh[i];
      vexp(X, T, R * k);
      if (!positive)
        for (int i = 0; i < k; ++i)
          if (!(h[i] > 0))
            for (int r = 0; r < R; ++r) T[i * R + r] = 0.0;
      // Sums over i in order, as mixture_features. With few rows, in a register:
      // accumulating into inv[r] across the i loop would chain every add through a store.
      if (R >= 4) {
        for (int r = 0; r < R; ++r) inv[r] = 0.0;
        for (int i = 0; i < k; ++i)
          for (int r = 0; r < R; ++r) inv[r] += C[i * R + r] * T[i * R + r];
      } else {
        for (int r = 0; r < R; ++r) {
          double sum = 0.0;
          for (int i = 0; i < k; ++i) sum += C[i * R + r] * T[i * R + r];
          inv[r] = sum;
        }
      }
      for (int r = 0; r < R; ++r) inv[r] = 1.0 / inv[r];
    }
    if (J > 0) {  // (sum C h)^e for every power term
      const double* __restrict PC = this->PC;
      const double* __restrict pe = this->pe;
      double* __restrict U = this->U;
      double* __restrict LU = this->LU;
      double* __restrict PHI = this->PHI;
      if (J >= 4) {  // as for the inverse-power sums
        for (int j = 0; j < J; ++j) U[j] = 0.0;
        for (int i = 0; i < k; ++i)
          for (int j = 0; j < J; ++j) U[j] += PC[i * J + j] * h[i];
      } else {
        for (int j = 0; j < J; ++j) {
          double u = 0.0;
          for (int i = 0; i < k; ++i) u += PC[i * J + j] * h[i];
          U[j] = u;
        }
      }
      vlog(U, LU, J);
      for (int j = 0; j < J; ++j) LU[j] *= pe[j];
      vexp(LU, PHI, J);
      for (int j = 0; j < J; ++j)
        if (!(U[j] > 0)) PHI[j] = detail::power_of_nonpositive(pe[j]);
    }
    double F = 0.0;
    for (const Target& x : tg) {  // L = E + M + a_N N'^-b_N + a_D D'^-b_D, as for_each_record
      double L = x.base + (x.iM < 0 ? x.vM : (x.M_ips ? inv[x.iM] : PHI[x.iM]));
      if (x.hasN) L += (x.iN < 0 ? x.vN : PHI[x.iN]) * x.cN;
      if (x.hasD) L += (x.iD < 0 ? x.vD : PHI[x.iD]) * x.cD;
      if (per_law) per_law[x.t] = L;
      if (x.w != 0.0) F += x.w * L;
    }
    if (!grad) return F;
    // dF/dh_i = -(1/h_i) sum_r w_r gamma_ri C_ri h_i^gamma_ri / S_r^2 + sum_j pc_j e_j phi_j / u_j C_ji
    const double* __restrict Cg = this->Cg;
    const double* __restrict T = this->T;
    const double* __restrict PC = this->PC;
    double* __restrict a = this->a;
    double* __restrict b = this->LU;  // log u is no longer needed
    for (int r = 0; r < R; ++r) a[r] = rw[r] == 0.0 ? 0.0 : rw[r] * (inv[r] * inv[r]);
    for (int j = 0; j < J; ++j) b[j] = pc[j] == 0.0 || !(U[j] > 0) ? 0.0 : pc[j] * (pe[j] * PHI[j] / U[j]);
    for (int i = 0; i < k; ++i) {
      double s = 0.0;
      for (int r = 0; r < R; ++r) s += a[r] * (Cg[i * R + r] * T[i * R + r]);
      double q = 0.0;
      for (int j = 0; j < J; ++j) q += b[j] * PC[i * J + j];
      if (h[i] > 0) {
        grad[i] = q - s / h[i];
        continue;
      }
      s = 0.0;
      for (int r = 0; r < R; ++r) {  // one-sided slopes at h_i = 0, as in mixture_features
        const double c = C[i * R + r], slope = detail::power_slope_at_zero(G[i * R + r]);
        if (rw[r] != 0.0) s += rw[r] * (c == 0.0 ? 0.0 : -c * slope * (inv[r] * inv[r]));
      }
      grad[i] = q + s;
    }
    return F;
  }

  // logh (optional): log h where h > 0, when the caller already knows it.
  double operator()(const double* h, double* grad, double* per_law = nullptr, const double* logh = nullptr) {
    ++nfev;
    double F = fast(h, grad, per_law, logh);
    if (slow) {
      if (grad) {  // the generic evaluator adds its gradient to a zeroed vector
        std::vector<double>& g = slow_grad;
        g.assign(static_cast<std::size_t>(k), 0.0);
        slow->add(h, F, g.data(), per_law, logh);
        for (int i = 0; i < k; ++i) grad[i] += g[i];
      } else {
        slow->add(h, F, nullptr, per_law, logh);
      }
    }
    bool finite = std::isfinite(F);
    if (grad)
      for (int i = 0; i < k; ++i) finite &= std::isfinite(grad[i]);
    if (per_law)
      for (const Target& x : tg) finite &= std::isfinite(per_law[x.t]);
    if (finite) return F;
    // Infinite or NaN somewhere: redo everything the generic way, whose formulas define
    // what a non-finite result is.
    if (!fallback) {
      std::vector<int> ts;
      for (int t = 0; t < static_cast<int>(laws.size()); ++t)
        if (all_targets || pb.weights[t] != 0.0) ts.push_back(t);
      fallback = std::make_unique<GenericEvaluator>(laws, pb, k, std::move(ts));
    }
    F = 0.0;
    if (grad) std::fill(grad, grad + k, 0.0);
    fallback->add(h, F, grad, per_law, logh);
    return F;
  }
};

double fw_gap(const std::vector<double>& g, const std::vector<double>& h, const MixtureProblem& pb, int k,
              std::vector<double>& s) {
  const double gs = linear_minimizer(g.data(), pb.lo.data(), pb.hi.data(), k, s.data());
  double gh = 0.0;
  for (int i = 0; i < k; ++i) gh += g[i] * h[i];
  const double gap = gh - gs;
  return std::isnan(gap) ? std::numeric_limits<double>::infinity() : std::max(gap, 0.0);
}

// A finite stand-in for -inf gradient entries (h_i = 0 where the law's slope is
// infinite): steeper than every finite entry, so the step still moves weight there.
void finite_gradient(std::vector<double>& g) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (double v : g)
    if (std::isfinite(v)) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  if (!std::isfinite(lo)) lo = hi = 0.0;
  const double span = std::max(hi - lo, 1.0);
  for (double& v : g)
    if (!std::isfinite(v)) v = v < 0 ? lo - span : hi + span;
}

constexpr double mixture_weight_floor = 1e-300;

MixtureResult solve_one(Evaluator& F, const MixtureProblem& pb, std::vector<double> h, const MixtureOptions& opt) {
  const int k = F.k;
  const bool mirror = opt.method == MixtureMethod::mirror;
  MixtureResult res;
  // Projected gradient keeps its iterates 1e-12 inside the lower bounds: a Euclidean
  // projection can set a weight to exactly lo_i, where laws with gamma_i < 1 have an
  // infinite slope and the method stalls. The certificate below uses the true bounds.
  std::vector<double> lo_in = pb.lo;
  if (!mirror) {
    double room = 1.0;
    for (int i = 0; i < k; ++i) room -= pb.lo[i];
    const double floor = std::min(1e-12, room / (2.0 * k));
    for (int i = 0; i < k; ++i) lo_in[i] = std::min(pb.lo[i] + floor, pb.hi[i]);
    project_capped_simplex(h.data(), lo_in.data(), pb.hi.data(), k, h.data());
  }
  // Mirror descent carries log h along (log of a multiplicative update is a subtraction),
  // which saves k logarithms per evaluation and per step-size update.
  std::vector<double> lh(k), lh_new(k), lv(k);
  for (int i = 0; i < k; ++i) lh[i] = h[i] > 0 ? std::log(h[i]) : 0.0;
  std::vector<double> g(k), g_used(k), h_new(k), g_new(k), v(k), s(k), ex(k);
  double f = F(h.data(), g.data(), nullptr, lh.data());
  double eta = 1.0;
  // Non-monotone Armijo test (Grippo-Lampariello-Lucidi, as in spectral projected
  // gradient): a trial is compared with the largest F of the last `memory` iterates, not
  // with the current one. Barzilai-Borwein steps are not monotone by nature; the monotone
  // test rejected about 0.6 of them per iteration and stalled some problems near the optimum.
  // (More than max_iter + 1 entries could never be filled.)
  const int memory = static_cast<int>(std::max<long long>(
      1, std::min<long long>(opt.line_search_memory, static_cast<long long>(opt.max_iter) + 1)));
  std::vector<double> recent(static_cast<std::size_t>(memory), -std::numeric_limits<double>::infinity());
  recent[0] = f;
  // The best iterate is returned when the run ends uncertified (F need not decrease).
  std::vector<double> best_h = h, best_g = g;
  double best_f = f;
  res.status = 0;
  for (res.nit = 0; res.nit < opt.max_iter; ++res.nit) {
    res.gap = fw_gap(g, h, pb, k, s);
    if (res.gap <= opt.gap_tol) {
      res.status = 1;
      break;
    }
    g_used = g;
    finite_gradient(g_used);
    double gmin = g_used[0], gmax = g_used[0];
    for (double x : g_used) {
      gmin = std::min(gmin, x);
      gmax = std::max(gmax, x);
    }
    // Mirror steps multiply weights by exp(-eta (g_i - gmin)); keep that factor above
    // e^-30 so no weight underflows to 0, from where a multiplicative method never returns.
    if (mirror && gmax > gmin) eta = std::min(eta, 30.0 / (gmax - gmin));
    bool ok = false;
    double f_new = f;
    const double f_ref = *std::max_element(recent.begin(), recent.end());
    for (int ls = 0; ls < 80; ++ls) {
      if (mirror) {
        for (int i = 0; i < k; ++i) {
          lv[i] = lh[i] - eta * (g_used[i] - gmin);
          ex[i] = -eta * (g_used[i] - gmin);
        }
        vexp(ex.data(), ex.data(), k);
        for (int i = 0; i < k; ++i) v[i] = h[i] * ex[i];
        const double c = kl_project_capped_simplex(v.data(), pb.lo.data(), pb.hi.data(), k, h_new.data());
        const double lc = std::log(c);
        for (int i = 0; i < k; ++i) {
          lh_new[i] = h_new[i] == c * v[i] ? lc + lv[i] : (h_new[i] > 0 ? std::log(h_new[i]) : 0.0);
          // Repeated shrinking can underflow a weight to exactly 0, where a law with
          // gamma_i < 1 has slope -inf and the certificate becomes infinite although the
          // weight's optimum is merely below double range: keep it at a tiny normal number.
          if (h_new[i] < mixture_weight_floor && pb.hi[i] >= mixture_weight_floor) {
            h_new[i] = mixture_weight_floor;
            lh_new[i] = std::log(mixture_weight_floor);
          }
        }
      } else {
        for (int i = 0; i < k; ++i) v[i] = h[i] - eta * g_used[i];
        project_capped_simplex(v.data(), lo_in.data(), pb.hi.data(), k, h_new.data());
        for (int i = 0; i < k; ++i) lh_new[i] = h_new[i] > 0 ? std::log(h_new[i]) : 0.0;
      }
      double dec = 0.0;  // g . (h_new - h) < 0 for a descent step
      bool moved = false;
      for (int i = 0; i < k; ++i) {
        dec += g_used[i] * (h_new[i] - h[i]);
        moved |= h_new[i] != h[i];
      }
      if (!moved) break;
      f_new = F(h_new.data(), g_new.data(), nullptr, lh_new.data());
      if (std::isfinite(f_new) && f_new <= f_ref + 1e-4 * dec && f_new <= f_ref) {
        ok = true;
        break;
      }
      // Near the optimum F changes by less than its rounding error and Armijo cannot
      // tell progress from noise. Accept then if F is unchanged within rounding and the
      // slope at the new point still points forward (no overshoot): precision is then
      // limited by the gradient, not by differences of F.
      if (std::isfinite(f_new) && std::fabs(f_new - f) <= 8 * std::numeric_limits<double>::epsilon() * std::fabs(f)) {
        double slope = 0.0;
        for (int i = 0; i < k; ++i) slope += g_new[i] * (h_new[i] - h[i]);
        if (slope <= 0 && dec < 0) {
          ok = true;
          break;
        }
      }
      eta *= 0.5;
    }
    if (!ok) {
      res.status = 4;
      break;
    }
    // Next trial step: Barzilai-Borwein, eta = <s, s> / <s, y>, with s the step in the
    // solver's own coordinates (h for projected gradient, log h for mirror descent) and y
    // the change of gradient, both centred (directions along the simplex). This removes
    // the zig-zag of a fixed step on curved problems (spectral projected gradient).
    double ss = 0.0, sy = 0.0, ms = 0.0, my = 0.0;
    int m = 0;
    for (int i = 0; i < k; ++i) {
      if (!(h[i] > 0 && h_new[i] > 0) || !std::isfinite(g_new[i]) || !std::isfinite(g[i])) continue;
      ms += mirror ? lh_new[i] - lh[i] : h_new[i] - h[i];
      my += g_new[i] - g[i];
      ++m;
    }
    if (m > 0) {
      ms /= m;
      my /= m;
      for (int i = 0; i < k; ++i) {
        if (!(h[i] > 0 && h_new[i] > 0) || !std::isfinite(g_new[i]) || !std::isfinite(g[i])) continue;
        const double si = (mirror ? lh_new[i] - lh[i] : h_new[i] - h[i]) - ms;
        const double yi = g_new[i] - g[i] - my;
        ss += si * si;
        sy += si * yi;
      }
    }
    h.swap(h_new);
    lh.swap(lh_new);
    g.swap(g_new);
    f = f_new;
    recent[static_cast<std::size_t>((res.nit + 1) % memory)] = f;
    if (f < best_f) {
      best_f = f;
      best_h = h;
      best_g = g;
    }
    if (sy > 0 && ss > 0) eta = std::min(std::max(ss / sy, 1e-12), 1e12);
    else eta *= 2.0;  // let the step grow again: the line search only ever shrinks it
  }
  if ((res.status == 0 || res.status == 4) && best_f < f) {
    h.swap(best_h);
    g.swap(best_g);
    f = best_f;
  }
  if (res.status == 0 || res.status == 4) res.gap = fw_gap(g, h, pb, k, s);
  if (res.status == 4 && res.gap <= opt.gap_tol) res.status = 1;
  res.h = h;
  res.f = f;
  res.nfev = F.nfev;
  return res;
}

}  // namespace

double mixture_objective(const std::vector<FittedLaw>& laws, const MixtureProblem& pb, const double* h,
                         double* grad, double* per_law, bool generic) {
  const int k = laws.empty() ? 0 : laws[0].plan->spec.k;
  if (generic) {
    std::vector<int> all(laws.size());
    for (std::size_t t = 0; t < laws.size(); ++t) all[t] = static_cast<int>(t);
    GenericEvaluator G(laws, pb, k, std::move(all));
    double F = 0.0;
    if (grad) std::fill(grad, grad + k, 0.0);
    G.add(h, F, grad, per_law, nullptr);
    return F;
  }
  Evaluator F(laws, pb, k, true);
  return F(h, grad, per_law);
}

std::vector<MixtureResult> optimize_mixtures(const std::vector<FittedLaw>& laws,
                                             const std::vector<MixtureProblem>& problems,
                                             const MixtureOptions& opt, int threads, const CancelFlag* cancel) {
  if (laws.empty()) throw std::invalid_argument("fits: need at least one fitted law");
  const int k = laws[0].plan->spec.k;
  for (const auto& fl : laws)
    if (fl.plan->spec.k != k) throw std::invalid_argument("fits: all laws must have the same domains");
  const int S = std::max(1, opt.n_starts);
  std::vector<MixtureResult> all(problems.size() * static_cast<std::size_t>(S));
  parallel_for(
      all.size(), threads,
      [&](std::size_t u) {
        const std::size_t p = u / static_cast<std::size_t>(S);
        const int s = static_cast<int>(u % static_cast<std::size_t>(S));
        const MixtureProblem& pb = problems[p];
        std::vector<double> v(static_cast<std::size_t>(k), 1.0), h0(static_cast<std::size_t>(k));
        if (s > 0) {  // Dirichlet(1): normalised exponentials
          Rng rng(mix_seed(opt.seed, p, static_cast<std::uint64_t>(s)));
          for (double& x : v) x = -std::log(1.0 - rng.uniform());
        }
        kl_project_capped_simplex(v.data(), pb.lo.data(), pb.hi.data(), k, h0.data());
        Evaluator F(laws, pb, k);
        all[u] = solve_one(F, pb, h0, opt);
        all[u].best_start = s;
      },
      cancel);
  std::vector<MixtureResult> best(problems.size());
  for (std::size_t p = 0; p < problems.size(); ++p) {
    std::size_t b = p * static_cast<std::size_t>(S);
    for (int s = 1; s < S; ++s) {
      const std::size_t u = p * static_cast<std::size_t>(S) + static_cast<std::size_t>(s);
      if (all[u].f < all[b].f) b = u;
    }
    best[p] = std::move(all[b]);
  }
  // Each law's loss at the solution (zero-weight targets included), in parallel too.
  parallel_for(
      best.size(), threads,
      [&](std::size_t p) {
        best[p].per_law.assign(laws.size(), 0.0);
        Evaluator F(laws, problems[p], k, true);
        F(best[p].h.data(), nullptr, best[p].per_law.data());
      },
      cancel);
  return best;
}

}  // namespace mixlaw
