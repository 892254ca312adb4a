#include "mixlaw/mixture.hpp"
#include "mixlaw/repetition.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <stdexcept>

#include "mixlaw/evaluate.hpp"
#include "mixlaw/random.hpp"
#include "mixlaw/simplex.hpp"
#include "mixlaw/vmath.hpp"
#include "mixlaw/vmath_lanes.hpp"

// The mixture evaluator and the lane solver are written with GCC/Clang vector extensions.
#ifndef MIXLAW_HAVE_LANES
#error "mixture.cpp needs GCC or Clang (vector extensions, see vmath_lanes.hpp)"
#endif

namespace mixlaw {
namespace {

// The fast evaluator's lane helpers are always inlined into both of its builds, so the ABI
// of a 32-byte vector passed between functions compiled without AVX never arises.
#pragma GCC diagnostic ignored "-Wpsabi"

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

// lambda KL(h || p) = lambda sum_i h_i (log h_i - log p_i) of problem pb (a weight h_i = 0
// adds 0), and grad += lambda (log h_i - log p_i + 1) (grad may be null; -inf at h_i = 0,
// which the solver's finite_gradient treats as a law's infinite slope). logh (optional):
// log h where h > 0. O(k).
double kl_regulariser(const MixtureProblem& pb, int k, const double* h, double* grad, const double* logh) {
  double s = 0.0;
  for (int i = 0; i < k; ++i) {
    const double lh = h[i] > 0 ? (logh ? logh[i] : std::log(h[i])) : -std::numeric_limits<double>::infinity();
    const double lp = std::log(pb.prior[i]);
    if (h[i] > 0) s += h[i] * (lh - lp);
    if (grad) grad[i] += pb.kl * (lh - lp + 1.0);
  }
  return pb.kl * s;
}

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

  // With pb.unique_tokens: each law with the data-constrained option (a copy of its plan
  // with the option and R_D = pb.halflife appended, when it was fitted without), evaluated
  // through repetition.hpp on the one record, which carries the unique tokens.
  std::vector<Plan> repeated_plans;
  std::vector<std::vector<double>> repeated_theta;
  std::vector<double> gh;

  GenericEvaluator(const std::vector<FittedLaw>& l, const MixtureProblem& p, int kk, std::vector<int> ts)
      : laws(l), pb(p), k(kk), targets(std::move(ts)), rec(single_record(kk, p.N, p.D)) {
    for (const auto& fl : laws) {
      work.emplace_back(*fl.plan);
      constants.push_back(detail::call_constants(*fl.plan, fl.theta, rec));
    }
    if (!pb.unique_tokens) return;
    rec.U.assign(pb.unique_tokens, pb.unique_tokens + k);
    gh.resize(static_cast<std::size_t>(k));
    for (const auto& fl : laws) {
      const Plan& plan = *fl.plan;
      std::vector<double> theta(fl.theta, fl.theta + plan.n_params);
      if (plan.spec.repetition) {
        repeated_plans.push_back(plan);
      } else {
        LawSpec spec = plan.spec;
        spec.repetition = true;
        repeated_plans.push_back(make_plan(spec));
        theta.push_back(pb.halflife);
      }
      repeated_theta.push_back(std::move(theta));
    }
  }

  // Adds sum_t w_t L_t to F and its h-gradient to grad (which the caller has zeroed).
  // logh (optional): log h where h > 0, when the caller already knows it.
  void add(const double* h, double& F, double* grad, double* per_law, const double* logh) {
    for (int i = 0; i < k; ++i) {
      rec.mix_h[i] = h[i];
      rec.mix_logh[i] = h[i] > 0 ? (logh ? logh[i] : std::log(h[i])) : 0.0;
    }
    if (pb.unique_tokens) {
      for (int t : targets) {
        double L = 0.0;
        evaluate_repeated(repeated_plans[t], repeated_theta[t].data(), rec, &L, nullptr, grad ? gh.data() : nullptr, 1);
        if (per_law) per_law[t] = L;
        const double wt = pb.weights[t];
        if (wt == 0.0) continue;
        F += wt * L;
        if (grad)
          for (int i = 0; i < k; ++i) grad[i] += wt * gh[i];
      }
      return;
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

// Arrays of the fast evaluator are padded to whole lanes.
int round_up(int n) { return (n + lanes::W - 1) / lanes::W * lanes::W; }

// The fitted laws with a fast path, laid out once for all problems of a call: the rows
// (C_i, gamma_i) of every 1/sum C h^gamma term and the rows C_i of every (sum C h)^e term,
// so that an evaluation is a few loops over (term x domain) with exp/log fused in.
// Row-major, each row padded with zeros to kp (a whole number of lanes) so that the loops
// over domains run on whole vectors; the power terms' C also domain-major (padded to Jp)
// for the sums over domains.
struct CompiledLaws {
  struct Target {
    int t = 0;
    double base = 0.0;          // E
    bool hasN = false, hasD = false;
    double bN = 0.0, bD = 0.0;  // exponents of N' and D'
    double ln_n_scale = 0.0, ln_d_scale = 0.0;
    // N'^-b_N and D'^-b_D at log N, log D (0 where the term is absent), as call_constants /
    // for_each_record compute them.
    double n_factor(double lnN) const { return hasN ? std::exp(-bN * (lnN - ln_n_scale)) : 0.0; }
    double d_factor(double lnD) const { return hasD ? std::exp(-bD * (lnD - ln_d_scale)) : 0.0; }
    // Where M, a_N, a_D come from: -1 constant (value in vM, vN, vD), else the index of
    // an inverse-power row (M only) or of a power term.
    int iM = -1, iN = -1, iD = -1;
    bool M_ips = false;
    double vM = 0.0, vN = 0.0, vD = 0.0;
  };
  int k = 0, kp = 0, R = 0, J = 0, Jp = 0;
  std::vector<Target> tg;    // the laws with a fast path
  std::vector<int> slow;     // the others
  std::vector<double> G, C, Cg;  // R x kp: gamma, C, C gamma
  std::vector<double> PCr;       // J x kp: the power terms' C
  std::vector<double> PCd;       // k x Jp: the same, domain-major
  std::vector<double> pe;        // J: the power terms' exponents

  // keep (optional): the targets to compile (the others are left out altogether).
  CompiledLaws(const std::vector<FittedLaw>& laws, int kk, const std::vector<char>* keep = nullptr)
      : k(kk), kp(round_up(std::max(kk, 1))) {
    for (int t = 0; t < static_cast<int>(laws.size()); ++t) {
      if (keep && !(*keep)[static_cast<std::size_t>(t)]) continue;
      const Plan& plan = *laws[t].plan;
      if (!fast_law(plan)) {
        slow.push_back(t);
        continue;
      }
      const double* th = laws[t].theta;
      Target x;
      x.t = t;
      x.base = plan.src[slot_E].type == Source::param ? th[plan.src[slot_E].index] : 0.0;
      x.hasN = plan.src[slot_aN].type != Source::none;
      x.hasD = plan.src[slot_aD].type != Source::none;
      auto exponent = [&](Slot b) { return plan.src[b].type == Source::param ? th[plan.src[b].index] : 0.0; };
      x.bN = exponent(slot_bN);
      x.bD = exponent(slot_bD);
      x.ln_n_scale = std::log(plan.spec.n_scale);
      x.ln_d_scale = std::log(plan.spec.d_scale);
      auto place = [&](Slot a, int& idx, double& v) {
        const Source& s = plan.src[a];
        if (s.type == Source::param) v = th[s.index];
        if (s.type != Source::feature) return;
        const Feature& f = plan.features[s.index];
        if (f.kind == Feature::inv_power_sum) {
          idx = R++;
          x.M_ips = true;
          for (int i = 0; i < kp; ++i) {
            G.push_back(i < k ? th[f.g_off + i] : 0.0);
            C.push_back(i < k ? th[f.c_off + i] : 0.0);
            Cg.push_back(i < k ? th[f.c_off + i] * th[f.g_off + i] : 0.0);
          }
        } else {
          idx = J++;
          for (int i = 0; i < kp; ++i) PCr.push_back(i < k ? th[f.c_off + i] : 0.0);
          pe.push_back(f.sign * th[f.g_off]);
        }
      };
      place(slot_M, x.iM, x.vM);
      place(slot_aN, x.iN, x.vN);
      place(slot_aD, x.iD, x.vD);
      tg.push_back(x);
    }
    Jp = round_up(J);
    pe.resize(static_cast<std::size_t>(Jp), 0.0);  // padding lanes: exponent 0
    PCd.assign(static_cast<std::size_t>(k) * Jp, 0.0);
    for (int j = 0; j < J; ++j)
      for (int i = 0; i < k; ++i) PCd[static_cast<std::size_t>(i) * Jp + j] = PCr[static_cast<std::size_t>(j) * kp + i];
  }
};

// F(h) = sum_t w_t L_t and its h-gradient for one problem: the compiled laws' tables with
// this problem's weights and N'^-b_N, D'^-b_D, and scratch; no allocation per evaluation.
// Targets of weight 0 are left out (their rows copied away) unless per-law losses are
// wanted. Other laws use the generic evaluator; any non-finite result is recomputed by it,
// so infinities and NaN have exactly the generic semantics.
struct Evaluator {
  const std::vector<FittedLaw>& laws;
  const MixtureProblem& pb;
  int k, kp;
  int nfev = 0;
  bool all_targets;                            // per_law may be asked for
  std::unique_ptr<GenericEvaluator> slow;      // the targets without a fast path, if any
  std::unique_ptr<GenericEvaluator> fallback;  // every target, built on first need
  std::vector<double> slow_grad;

  struct Target {
    int t;
    double w;
    double base;
    double cN, cD;  // N'^-b_N, D'^-b_D (0 where the term is absent)
    bool hasN, hasD;
    int iM, iN, iD;  // as CompiledLaws::Target, renumbered over the targets kept
    bool M_ips;
    double vM, vN, vD;
  };
  std::vector<Target> tg;
  int R = 0, J = 0, Jp = 0;
  const double *G, *C, *Cg, *PCr, *PCd, *pe;  // the compiled tables, or copies of the rows kept
  std::vector<double> buf;                    // those copies, then the per-problem arrays
  double *rw, *pc;                            // R, Jp: the row's target weight; w_t * factor
  double *T, *inv, *a;                        // R x kp: h^gamma; R: 1 / sum C h^gamma; R: gradient factor
  double *U, *PHI, *b;                        // Jp: sum C h; its power; gradient factor
  double *hp, *lhp, *gp, *qp;                 // kp: h, log h (padding 1, 0); gradient; its power-term part

  Evaluator(const CompiledLaws& cl, const std::vector<FittedLaw>& l, const MixtureProblem& p, bool all = false)
      : laws(l), pb(p), k(cl.k), kp(cl.kp), all_targets(all) {
    std::vector<int> slow_targets;
    if (pb.unique_tokens) {  // data-constrained: every target the generic way, none in the tables
      for (int t = 0; t < static_cast<int>(l.size()); ++t)
        if (all || pb.weights[t] != 0.0) slow_targets.push_back(t);
      slow = std::make_unique<GenericEvaluator>(l, p, k, std::move(slow_targets));
      return;
    }
    for (int t : cl.slow)
      if (all || pb.weights[t] != 0.0) slow_targets.push_back(t);
    if (!slow_targets.empty()) slow = std::make_unique<GenericEvaluator>(l, p, k, std::move(slow_targets));
    const double lnN = std::log(p.N), lnD = std::log(p.D);
    std::vector<int> rows, terms;  // the compiled rows and terms kept, in order
    std::vector<double> term_factor;
    for (const CompiledLaws::Target& c : cl.tg) {
      const double w = pb.weights[c.t];
      if (!all && w == 0.0) continue;
      Target x;
      x.t = c.t;
      x.w = w;
      x.base = c.base;
      x.hasN = c.hasN;
      x.hasD = c.hasD;
      x.cN = c.n_factor(lnN);
      x.cD = c.d_factor(lnD);
      x.M_ips = c.M_ips;
      x.vM = c.vM, x.vN = c.vN, x.vD = c.vD;
      auto keep = [&](int src, bool row, double factor) {
        if (src < 0) return -1;
        if (row) {
          rows.push_back(src);
          return static_cast<int>(rows.size()) - 1;
        }
        terms.push_back(src);
        term_factor.push_back(w * factor);  // generic: skipped when the slot's factor is 0
        return static_cast<int>(terms.size()) - 1;
      };
      x.iM = keep(c.iM, c.M_ips, 1.0);
      x.iN = keep(c.iN, false, x.cN);
      x.iD = keep(c.iD, false, x.cD);
      tg.push_back(x);
    }
    R = static_cast<int>(rows.size());
    J = static_cast<int>(terms.size());
    Jp = round_up(J);
    const bool copy = R != cl.R || J != cl.J;  // rows are kept in order: same count, same rows
    const std::size_t RK = static_cast<std::size_t>(R) * kp, JK = static_cast<std::size_t>(J) * kp,
                      KJ = static_cast<std::size_t>(k) * Jp;
    buf.assign((copy ? 3 * RK + JK + KJ + Jp : 0) + 2 * static_cast<std::size_t>(R) + 3 * static_cast<std::size_t>(Jp) +
                   RK + R + static_cast<std::size_t>(Jp) + 4 * static_cast<std::size_t>(kp),
               0.0);
    double* q = buf.data();
    auto take = [&](std::size_t n) {
      double* r = q;
      q += n;
      return r;
    };
    if (copy) {
      double *g = take(RK), *c = take(RK), *cg = take(RK), *pr = take(JK), *pd = take(KJ), *e = take(Jp);
      for (int r = 0; r < R; ++r) {
        const std::size_t from = static_cast<std::size_t>(rows[r]) * kp;
        std::copy(cl.G.begin() + from, cl.G.begin() + from + kp, g + r * kp);
        std::copy(cl.C.begin() + from, cl.C.begin() + from + kp, c + r * kp);
        std::copy(cl.Cg.begin() + from, cl.Cg.begin() + from + kp, cg + r * kp);
      }
      for (int j = 0; j < J; ++j) {
        const int src = terms[j];
        std::copy(cl.PCr.begin() + static_cast<std::size_t>(src) * kp, cl.PCr.begin() + static_cast<std::size_t>(src + 1) * kp,
                  pr + j * kp);
        for (int i = 0; i < k; ++i) pd[static_cast<std::size_t>(i) * Jp + j] = cl.PCd[static_cast<std::size_t>(i) * cl.Jp + src];
        e[j] = cl.pe[src];
      }
      G = g, C = c, Cg = cg, PCr = pr, PCd = pd, pe = e;
    } else {
      G = cl.G.data(), C = cl.C.data(), Cg = cl.Cg.data(), PCr = cl.PCr.data(), PCd = cl.PCd.data(),
      pe = cl.pe.data();
    }
    rw = take(R), pc = take(Jp);
    T = take(RK), inv = take(R), a = take(R);
    U = take(Jp), PHI = take(Jp), b = take(Jp);
    hp = take(kp), lhp = take(kp), gp = take(kp), qp = take(kp);
    for (const Target& x : tg)
      if (x.iM >= 0 && x.M_ips) rw[x.iM] = x.w;
    for (int j = 0; j < J; ++j) pc[j] = term_factor[j];
    for (int i = k; i < kp; ++i) hp[i] = 1.0;  // padding: h = 1, log h = 0, C = 0
  }

  // The fast path; returns F (grad, per_law as in operator()). Compiled twice, for the
  // baseline and for AVX2 (chosen at run time), from lane-wise operations without FMA and
  // sums in a fixed order, so that both builds round identically.
#if defined(__x86_64__) || defined(__i386__)
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
    const int k = this->k, kp = this->kp, R = this->R, J = this->J;
    double* __restrict hp = this->hp;
    double* __restrict lhp = this->lhp;
    bool positive = true;
    for (int i = 0; i < k; ++i) {
      positive &= h[i] > 0;
      hp[i] = h[i];
      lhp[i] = h[i] > 0 ? (logh ? logh[i] : std::log(h[i])) : 0.0;
    }
    double* __restrict T = this->T;
    double* __restrict inv = this->inv;
    // h^gamma for every inverse-power row (a zero weight contributes nothing): the
    // exponents first, then exp over the whole table in one loop of independent vectors.
    const std::size_t RK = static_cast<std::size_t>(R) * kp;
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < kp; c += lanes::W) {
        const std::size_t o = static_cast<std::size_t>(r) * kp + c;
        lanes::store(T + o, lanes::load(G + o) * lanes::load(lhp + c));
      }
    for (std::size_t o = 0; o < RK; o += lanes::W) lanes::store(T + o, lanes::kernel<true>(lanes::load(T + o)));
    if (!positive)
      for (int r = 0; r < R; ++r)
        for (int i = 0; i < k; ++i)
          if (!(h[i] > 0)) T[static_cast<std::size_t>(r) * kp + i] = 0.0;
    for (int r = 0; r < R; ++r) {  // sums over i in order, as mixture_features
      const double* cr = C + static_cast<std::size_t>(r) * kp;
      const double* t = T + static_cast<std::size_t>(r) * kp;
      double sum = 0.0;
      for (int i = 0; i < k; ++i) sum += cr[i] * t[i];
      inv[r] = 1.0 / sum;
    }
    // (sum C h)^e for every power term (sums over i in order); padding lanes u = 1, e = 0.
    double* __restrict U = this->U;
    double* __restrict PHI = this->PHI;
    for (int c = 0; c < Jp; c += lanes::W) {
      lanes::vd u = lanes::splat(0.0);
      for (int i = 0; i < k; ++i) u += lanes::load(PCd + static_cast<std::size_t>(i) * Jp + c) * lanes::splat(h[i]);
      lanes::store(U + c, u);
    }
    for (int j = J; j < Jp; ++j) U[j] = 1.0;
    for (int c = 0; c < Jp; c += lanes::W) lanes::store(PHI + c, lanes::load(pe + c) * lanes::kernel<false>(lanes::load(U + c)));
    for (int c = 0; c < Jp; c += lanes::W) lanes::store(PHI + c, lanes::kernel<true>(lanes::load(PHI + c)));
    for (int j = 0; j < J; ++j)
      if (!(U[j] > 0)) PHI[j] = detail::power_of_nonpositive(pe[j]);
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
    double* __restrict a = this->a;
    double* __restrict b = this->b;
    for (int r = 0; r < R; ++r) a[r] = rw[r] == 0.0 ? 0.0 : rw[r] * (inv[r] * inv[r]);
    for (int j = 0; j < J; ++j) b[j] = pc[j] == 0.0 || !(U[j] > 0) ? 0.0 : pc[j] * (pe[j] * PHI[j] / U[j]);
    for (int c = 0; c < kp; c += lanes::W) {  // both sums over terms in order, for lanes of domains
      lanes::vd s = lanes::splat(0.0), q = lanes::splat(0.0);
      for (int r = 0; r < R; ++r) {
        const std::size_t o = static_cast<std::size_t>(r) * kp + c;
        s += lanes::splat(a[r]) * (lanes::load(Cg + o) * lanes::load(T + o));
      }
      for (int j = 0; j < J; ++j) q += lanes::splat(b[j]) * lanes::load(PCr + static_cast<std::size_t>(j) * kp + c);
      lanes::store(qp + c, q);
      lanes::store(gp + c, q - s / lanes::load(hp + c));
    }
    for (int i = 0; i < k; ++i) grad[i] = gp[i];
    if (positive) return F;
    for (int i = 0; i < k; ++i) {
      if (h[i] > 0) continue;
      double s = 0.0;
      for (int r = 0; r < R; ++r) {  // one-sided slopes at h_i = 0, as in mixture_features
        const std::size_t o = static_cast<std::size_t>(r) * kp + i;
        const double c = C[o], slope = detail::power_slope_at_zero(G[o]);
        if (rw[r] != 0.0) s += rw[r] * (c == 0.0 ? 0.0 : -c * slope * (inv[r] * inv[r]));
      }
      grad[i] = qp[i] + s;
    }
    return F;
  }

  // logh (optional): log h where h > 0, when the caller already knows it.
  double operator()(const double* h, double* grad, double* per_law = nullptr, const double* logh = nullptr) {
    ++nfev;
    const double F = laws_value(h, grad, per_law, logh);
    return pb.kl > 0 ? F + kl_regulariser(pb, k, h, grad, logh) : F;
  }

  double laws_value(const double* h, double* grad, double* per_law, const double* logh) {
    double F = 0.0;
    if (!pb.unique_tokens) F = fast(h, grad, per_law, logh);
    else if (grad) std::fill(grad, grad + k, 0.0);  // (no tables: every target is in `slow`)
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
  const double gs = linear_minimizer(g.data(), pb.lo, pb.hi, k, s.data());
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

// How many last iterates the Armijo test looks back on (more than max_iter + 1 entries
// could never be filled).
int line_search_memory(const MixtureOptions& opt) {
  return static_cast<int>(std::max<long long>(
      1, std::min<long long>(opt.line_search_memory, static_cast<long long>(opt.max_iter) + 1)));
}

// The start of unit (problem p, start s): the KL-centre of the feasible set for s = 0,
// else a Dirichlet(1) draw (normalised exponentials) from mix_seed(seed, p, s), projected.
std::vector<double> start_point(const MixtureOptions& opt, const MixtureProblem& pb, std::size_t p, int s, int k) {
  std::vector<double> v(static_cast<std::size_t>(k), 1.0), h0(static_cast<std::size_t>(k));
  if (s > 0) {
    Rng rng(mix_seed(opt.seed, p, static_cast<std::uint64_t>(s)));
    for (double& x : v) x = -std::log(1.0 - rng.uniform());
  }
  kl_project_capped_simplex(v.data(), pb.lo, pb.hi, k, h0.data());
  return h0;
}

// cancel (may be null): polled every iteration; a cancelled result is incomplete (the
// caller drops it).
MixtureResult solve_one(Evaluator& F, const MixtureProblem& pb, std::vector<double> h, const MixtureOptions& opt,
                        const CancelFlag* cancel) {
  const int k = F.k;
  const bool mirror = opt.method == MixtureMethod::mirror;
  MixtureResult res;
  // Projected gradient keeps its iterates 1e-12 inside the lower bounds: a Euclidean
  // projection can set a weight to exactly lo_i, where laws with gamma_i < 1 have an
  // infinite slope and the method stalls. The certificate below uses the true bounds.
  std::vector<double> lo_in(pb.lo, pb.lo + k);
  if (!mirror) {
    double room = 1.0;
    for (int i = 0; i < k; ++i) room -= pb.lo[i];
    const double floor = std::min(1e-12, room / (2.0 * k));
    for (int i = 0; i < k; ++i) lo_in[i] = std::min(pb.lo[i] + floor, pb.hi[i]);
    project_capped_simplex(h.data(), lo_in.data(), pb.hi, k, h.data());
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
  const int memory = line_search_memory(opt);
  std::vector<double> recent(static_cast<std::size_t>(memory), -std::numeric_limits<double>::infinity());
  recent[0] = f;
  // The best iterate is returned when the run ends uncertified (F need not decrease).
  std::vector<double> best_h = h, best_g = g;
  double best_f = f;
  res.status = 0;
  for (res.nit = 0; res.nit < opt.max_iter; ++res.nit) {
    if (cancel && cancel->is_set()) break;
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
        const double c = kl_project_capped_simplex(v.data(), pb.lo, pb.hi, k, h_new.data());
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
        project_capped_simplex(v.data(), lo_in.data(), pb.hi, k, h_new.data());
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

// ---- Four problems at once ----
//
// Mirror descent on the plain simplex (lo = 0, hi >= 1), every weighted law with a fast
// path: the common case of a batch over budgets and weights. Four problems share each
// vector, one per lane, so that every step of the solver and of the evaluator is a
// lane-wise vector operation (no sums across lanes, no per-problem loop overhead), and
// a lane is refilled with the next problem as soon as its problem ends. Each lane performs
// exactly the operations of solve_one with Evaluator, in the same order (zero-weight
// targets add exact zeros), so a problem gets the same bits on either path and whatever
// its neighbours. A problem that leaves the common case (a non-finite value, a projection
// with an active bound, a weight at the underflow floor, U <= 0) is handed back and solved
// again from the start by solve_one, which handles all of those.
struct LaneSolver {
  using vd = lanes::vd;
  using vi = lanes::vi;
  static constexpr int L = lanes::W;

  const CompiledLaws& cl;  // the targets weighted in some problem of the batch
  const std::vector<MixtureProblem>& problems;
  const MixtureOptions& opt;
  int S, k, R, J, nt, memory;

  // Lane-wise state, one vector per domain (or table entry), carved out of one block
  // aligned for the vectors (std::vector<vd> would not guarantee it).
  std::unique_ptr<vd[]> block;
  vd *h, *lh, *g, *hn, *lhn, *gn, *lv, *ex, *bh, *bg, *hi;
  vd *T, *inv, *a, *U, *PHI, *b;  // evaluator scratch
  vd *rw, *pc, *w, *cN, *cD;      // per row, term, target: this lane's problem
  vd* Lt;                         // per target: its loss at the last evaluation
  vd f, fn, eta, gmin, dec, fref, bf, moved;
  struct Lane {
    bool busy = false, first = false;  // first: the pending evaluation is the start point
    std::size_t unit = 0;
    int nit = 0, nfev = 0, ls = 0;
    std::vector<double> recent;
  };
  Lane lane[L];

  LaneSolver(const CompiledLaws& c, const std::vector<MixtureProblem>& p, const MixtureOptions& o, int starts)
      : cl(c), problems(p), opt(o), S(starts), k(c.k), R(c.R), J(c.J), nt(static_cast<int>(c.tg.size())) {
    memory = line_search_memory(opt);
    const vd one = lanes::splat(1.0), zero = lanes::splat(0.0);
    const std::size_t K = static_cast<std::size_t>(k);
    const std::size_t n = 11 * K + static_cast<std::size_t>(R) * K + 3 * static_cast<std::size_t>(R) +
                          4 * static_cast<std::size_t>(J) + 4 * static_cast<std::size_t>(nt);
    block.reset(new vd[n]);  // operator new[] honours the type's 32-byte alignment (C++17)
    vd* q = block.get();
    auto take = [&](std::size_t m, vd v) {
      vd* r = q;
      std::fill(q, q + m, v);
      q += m;
      return r;
    };
    h = take(K, one), hn = take(K, one), bh = take(K, one), hi = take(K, one);
    lh = take(K, zero), g = take(K, zero), lhn = take(K, zero), gn = take(K, zero), lv = take(K, zero),
    ex = take(K, zero), bg = take(K, zero);
    T = take(static_cast<std::size_t>(R) * K, zero);
    inv = take(R, zero), a = take(R, zero), rw = take(R, zero);
    U = take(J, zero), PHI = take(J, zero), b = take(J, zero), pc = take(J, zero);
    w = take(nt, zero), cN = take(nt, zero), cD = take(nt, zero), Lt = take(nt, zero);
    f = fn = eta = gmin = dec = fref = bf = moved = zero;
    for (Lane& ln : lane) ln.recent.assign(static_cast<std::size_t>(memory), 0.0);
  }

  // Loads unit u (problem u / S, start u % S) into lane l: the problem's weights and
  // N'^-b_N, D'^-b_D (as Evaluator), the start point (as optimize_mixtures) into hn.
  // False if the start is not in the common case.
  bool load(int l, std::size_t u) {
    const MixtureProblem& pb = problems[u / static_cast<std::size_t>(S)];
    const std::vector<double> h0 =
        start_point(opt, pb, u / static_cast<std::size_t>(S), static_cast<int>(u % static_cast<std::size_t>(S)), k);
    for (int i = 0; i < k; ++i)
      if (!(h0[i] >= mixture_weight_floor)) return false;
    set_problem(l, pb);
    for (int i = 0; i < k; ++i) {
      hn[i][l] = h0[i];
      lhn[i][l] = std::log(h0[i]);
      hi[i][l] = pb.hi[i];
    }
    Lane& ln = lane[l];
    ln.busy = ln.first = true;
    ln.unit = u;
    ln.nit = 0, ln.nfev = 0, ln.ls = 0;
    return true;
  }

  // Problem pb's weights and N'^-b_N, D'^-b_D in lane l (as Evaluator computes them).
  void set_problem(int l, const MixtureProblem& pb) {
    const double lnN = std::log(pb.N), lnD = std::log(pb.D);
    for (int x = 0; x < nt; ++x) {
      const CompiledLaws::Target& c = cl.tg[static_cast<std::size_t>(x)];
      const double wt = pb.weights[c.t];
      const double n = c.n_factor(lnN), d = c.d_factor(lnD);
      w[x][l] = wt, cN[x][l] = n, cD[x][l] = d;
      if (c.iM >= 0) {
        if (c.M_ips) rw[c.iM][l] = wt;
        else pc[c.iM][l] = wt * 1.0;  // as Evaluator: w times the slot's factor
      }
      if (c.iN >= 0) pc[c.iN][l] = wt * n;
      if (c.iD >= 0) pc[c.iD][l] = wt * d;
    }
  }

  // Each law's loss at the solutions of problems ps[0..n) (in results[ps[i]], whose
  // per_law it fills), four at a time, as Evaluator(all targets) computes it from h alone:
  // for a batch whose weighted laws are all the laws. Appends the problems with a
  // non-finite value (left to Evaluator, whose fallback defines them) to handed_back.
  MIXLAW_INLINE void losses(const std::size_t* ps, std::size_t n, std::vector<MixtureResult>& results,
                            std::vector<std::size_t>& handed_back) {
    for (std::size_t first = 0; first < n; first += L) {
      const int m = static_cast<int>(std::min<std::size_t>(L, n - first));
      for (int l = 0; l < L; ++l) {
        if (l >= m) {
          park(l);
          continue;
        }
        const MixtureResult& r = results[ps[first + l]];
        set_problem(l, problems[ps[first + l]]);
        for (int i = 0; i < k; ++i) {
          hn[i][l] = r.h[i];
          lhn[i][l] = r.h[i] > 0 ? std::log(r.h[i]) : 0.0;
        }
      }
      vi ok = evaluate();
      for (int x = 0; x < nt; ++x) ok &= finite(Lt[x]);
      for (int l = 0; l < m; ++l) {
        const std::size_t p = ps[first + l];
        bool positive = true;
        for (int i = 0; i < k; ++i) positive &= results[p].h[i] > 0;
        if (!ok[l] || !positive) {
          handed_back.push_back(p);
          continue;
        }
        results[p].per_law.assign(static_cast<std::size_t>(nt), 0.0);
        for (int x = 0; x < nt; ++x) results[p].per_law[static_cast<std::size_t>(cl.tg[x].t)] = Lt[x][l];
      }
    }
  }

  // An idle lane gets harmless values (the uniform-like point h = 1, weight 0, step 0), so
  // that its share of the vector work never takes the kernels' slow path.
  void park(int l) {
    for (int i = 0; i < k; ++i) h[i][l] = hn[i][l] = 1.0, lh[i][l] = lhn[i][l] = g[i][l] = 0.0;
    for (int r = 0; r < R; ++r) rw[r][l] = 0.0;
    for (int j = 0; j < J; ++j) pc[j][l] = 0.0;
    for (int x = 0; x < nt; ++x) w[x][l] = cN[x][l] = cD[x][l] = 0.0;
    eta[l] = gmin[l] = 0.0;
  }

  // F and its gradient at (hn, lhn) in every lane, into fn, gn (Evaluator::fast_impl on
  // the plain simplex, lane by lane). Returns the lanes whose values are all finite and
  // whose sums U are positive.
  MIXLAW_INLINE vi evaluate() {
    const int k = this->k, R = this->R, J = this->J;
    // exp_kernel flags lanes outside its range; kernel<> (the std::exp fallback) is only run
    // when some lane was flagged, which keeps the flag test out of the loop.
    vi bad = vi{0, 0, 0, 0};
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < k; ++i)
        T[static_cast<std::size_t>(r) * k + i] =
            lanes::exp_kernel(lanes::splat(cl.G[static_cast<std::size_t>(r) * cl.kp + i]) * lhn[i], bad);
    if (lanes::any(bad))
      for (int r = 0; r < R; ++r)
        for (int i = 0; i < k; ++i)
          T[static_cast<std::size_t>(r) * k + i] =
              lanes::kernel<true>(lanes::splat(cl.G[static_cast<std::size_t>(r) * cl.kp + i]) * lhn[i]);
    for (int r = 0; r < R; ++r) {
      vd sum = lanes::splat(0.0);
      for (int i = 0; i < k; ++i)
        sum += lanes::splat(cl.C[static_cast<std::size_t>(r) * cl.kp + i]) * T[static_cast<std::size_t>(r) * k + i];
      inv[r] = lanes::splat(1.0) / sum;
    }
    vi ok = ~vi{0, 0, 0, 0};
    bad = vi{0, 0, 0, 0};
    for (int j = 0; j < J; ++j) {
      vd u = lanes::splat(0.0);
      for (int i = 0; i < k; ++i) u += lanes::splat(cl.PCr[static_cast<std::size_t>(j) * cl.kp + i]) * hn[i];
      U[j] = u;
      ok &= (vi)(u > lanes::splat(0.0));
      PHI[j] = lanes::exp_kernel(lanes::splat(cl.pe[j]) * lanes::log_kernel(u, bad), bad);
    }
    if (lanes::any(bad))
      for (int j = 0; j < J; ++j) PHI[j] = lanes::kernel<true>(lanes::splat(cl.pe[j]) * lanes::kernel<false>(U[j]));
    vd F = lanes::splat(0.0);
    for (int x = 0; x < nt; ++x) {
      const CompiledLaws::Target& c = cl.tg[static_cast<std::size_t>(x)];
      vd Lx = lanes::splat(c.base) + (c.iM < 0 ? lanes::splat(c.vM) : (c.M_ips ? inv[c.iM] : PHI[c.iM]));
      if (c.hasN) Lx += (c.iN < 0 ? lanes::splat(c.vN) : PHI[c.iN]) * cN[x];
      if (c.hasD) Lx += (c.iD < 0 ? lanes::splat(c.vD) : PHI[c.iD]) * cD[x];
      Lt[x] = Lx;
      F = lanes::select((vi)(w[x] != lanes::splat(0.0)), F + w[x] * Lx, F);
    }
    fn = F;
    const vd zero = lanes::splat(0.0);
    for (int r = 0; r < R; ++r) a[r] = lanes::select((vi)(rw[r] == zero), zero, rw[r] * (inv[r] * inv[r]));
    for (int j = 0; j < J; ++j)
      b[j] = lanes::select((vi)(pc[j] == zero) | ~(vi)(U[j] > zero), zero,
                           pc[j] * (lanes::splat(cl.pe[j]) * PHI[j] / U[j]));
    ok &= finite(F);
    for (int i = 0; i < k; ++i) {
      vd s = zero, q = zero;
      for (int r = 0; r < R; ++r)
        s += a[r] * (lanes::splat(cl.Cg[static_cast<std::size_t>(r) * cl.kp + i]) * T[static_cast<std::size_t>(r) * k + i]);
      for (int j = 0; j < J; ++j) q += b[j] * lanes::splat(cl.PCr[static_cast<std::size_t>(j) * cl.kp + i]);
      gn[i] = q - s / hn[i];
      ok &= finite(gn[i]);
    }
    return ok;
  }

  static MIXLAW_INLINE vi finite(vd x) {  // |x| < inf, false for NaN
    const vd ax = (vd)((vi)x & lanes::vi{INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX});
    return (vi)(ax < lanes::splat(std::numeric_limits<double>::infinity()));
  }

  // The Frank-Wolfe gap of (g, h) on the plain simplex (fw_gap with linear_minimizer) and
  // min / max of g, lane-wise.
  MIXLAW_INLINE vd gap_and_range(vd& lo, vd& up) {
    vd gh = lanes::splat(0.0);
    lo = g[0], up = g[0];
    for (int i = 0; i < k; ++i) {
      if (i > 0) {
        lo = lanes::select((vi)(g[i] < lo), g[i], lo);
        up = lanes::select((vi)(up < g[i]), g[i], up);
      }
      gh += g[i] * h[i];
    }
    const vd gap = gh - lo;
    const vd inf = lanes::splat(std::numeric_limits<double>::infinity());
    return lanes::select((vi)(gap != gap), inf, lanes::select((vi)(gap < lanes::splat(0.0)), lanes::splat(0.0), gap));
  }

  // Mirror step from (h, lh) with step eta: hn, lhn as solve_one computes them (the KL
  // projection's fast path, absorb_rounding), dec and moved. Returns the lanes whose step
  // stayed in the common case (every coordinate strictly inside, none at the floor).
  MIXLAW_INLINE vi step() {
    const int k = this->k;
    const vd zero = lanes::splat(0.0);
    vd sum = zero;
    vi bad = vi{0, 0, 0, 0};
    for (int i = 0; i < k; ++i) {
      const vd d = eta * (g[i] - gmin);
      lv[i] = lh[i] - d;
      ex[i] = lanes::exp_kernel(-eta * (g[i] - gmin), bad);
    }
    if (lanes::any(bad))
      for (int i = 0; i < k; ++i) ex[i] = lanes::kernel<true>(-eta * (g[i] - gmin));
    for (int i = 0; i < k; ++i) {
      ex[i] = h[i] * ex[i];  // v
      sum += ex[i];
    }
    const vd c = lanes::splat(1.0) / sum;
    vi ok = (vi)(sum > zero) & finite(sum);
    vd s = zero, big = zero;
    vi bigi = vi{0, 0, 0, 0};
    for (int i = 0; i < k; ++i) {
      const vd x = c * ex[i];
      ok &= (vi)(x > zero) & (vi)(x < hi[i]);
      hn[i] = x;
      s += x;
      const vi more = i == 0 ? ~vi{0, 0, 0, 0} : (vi)(x > big);
      big = lanes::select(more, x, big);
      bigi = (vi)lanes::select(more, (vd)vi{i, i, i, i}, (vd)bigi);
    }
    const vi fix = (vi)(s != lanes::splat(1.0));
    vd lc;
    for (int l = 0; l < L; ++l) lc[l] = std::log(c[l]);
    vd dsum = zero;
    vi mv = vi{0, 0, 0, 0};
    for (int i = 0; i < k; ++i) {
      const vi at = fix & (bigi == vi{i, i, i, i});
      if (lanes::any(at)) {
        const vd y = hn[i] + (lanes::splat(1.0) - s);
        const vd y1 = lanes::select((vi)(y < zero), zero, y);
        hn[i] = lanes::select(at, lanes::select((vi)(hi[i] < y1), hi[i], y1), hn[i]);
      }
      const vi same = (vi)(hn[i] == c * ex[i]);
      vd lx = lc + lv[i];
      if (!lanes::all(same))
        for (int l = 0; l < L; ++l)
          if (!same[l]) lx[l] = hn[i][l] > 0 ? std::log(hn[i][l]) : 0.0;
      lhn[i] = lx;
      ok &= ~((vi)(hn[i] < lanes::splat(mixture_weight_floor)) & (vi)(hi[i] >= lanes::splat(mixture_weight_floor)));
      dsum += g[i] * (hn[i] - h[i]);
      mv |= (vi)(hn[i] != h[i]);
    }
    dec = dsum;
    moved = (vd)mv;
    return ok;
  }

  // Solves the n units listed at `units` into results[unit], and appends to `handed_back`
  // the units that left the common case. Returns at once when `cancel` is set (polled every
  // iteration; the units in the lanes are left unfinished).
  MIXLAW_INLINE void run(const std::size_t* units, std::size_t n, std::vector<MixtureResult>& results,
                         std::vector<std::size_t>& handed_back, const CancelFlag* cancel) {
    std::size_t next = 0;
    const double eps8 = 8 * std::numeric_limits<double>::epsilon();
    for (;;) {
      if (cancel && cancel->is_set()) return;
      bool any = false;
      for (int l = 0; l < L; ++l) {
        while (!lane[l].busy && next < n) {
          const std::size_t u = units[next++];
          if (!load(l, u)) handed_back.push_back(u);
        }
        if (!lane[l].busy) park(l);
        any |= lane[l].busy;
      }
      if (!any) return;
      const vi ok = evaluate();
      // Lanes whose trial (or start) is accepted move to it and start an iteration.
      vi accept = vi{0, 0, 0, 0}, start = vi{0, 0, 0, 0};
      for (int l = 0; l < L; ++l) {
        Lane& ln = lane[l];
        if (!ln.busy) continue;
        ++ln.nfev;
        if (!ok[l]) {
          handed_back.push_back(ln.unit);
          ln.busy = false;
          continue;
        }
        if (ln.first) {
          start[l] = -1;
          continue;
        }
        bool acc = fn[l] <= fref[l] + 1e-4 * dec[l] && fn[l] <= fref[l];
        if (!acc && std::fabs(fn[l] - f[l]) <= eps8 * std::fabs(f[l])) {
          double slope = 0.0;
          for (int i = 0; i < k; ++i) slope += gn[i][l] * (hn[i][l] - h[i][l]);
          acc = slope <= 0 && dec[l] < 0;
        }
        if (acc) {
          accept[l] = -1;
        } else {
          eta[l] *= 0.5;
          if (++ln.ls == 80) finish(l, 4, results);
        }
      }
      if (lanes::any(accept)) {
        // Barzilai-Borwein step in log h, centred (solve_one; every coordinate counts here).
        const vd zero = lanes::splat(0.0);
        vd ms = zero, my = zero, ss = zero, sy = zero;
        for (int i = 0; i < k; ++i) {
          ms += lhn[i] - lh[i];
          my += gn[i] - g[i];
        }
        ms = ms / lanes::splat(static_cast<double>(k));
        my = my / lanes::splat(static_cast<double>(k));
        for (int i = 0; i < k; ++i) {
          const vd si = (lhn[i] - lh[i]) - ms, yi = gn[i] - g[i] - my;
          ss += si * si;
          sy += si * yi;
        }
        const vd bb = ss / sy;
        const vd bb1 = lanes::select((vi)(bb < lanes::splat(1e-12)), lanes::splat(1e-12), bb);
        const vd bb2 = lanes::select((vi)(lanes::splat(1e12) < bb1), lanes::splat(1e12), bb1);
        const vd next_eta = lanes::select((vi)(sy > zero) & (vi)(ss > zero), bb2, eta * lanes::splat(2.0));
        eta = lanes::select(accept, next_eta, eta);
      }
      const vi moveto = accept | start;
      if (lanes::any(moveto)) {
        for (int i = 0; i < k; ++i) {
          h[i] = lanes::select(moveto, hn[i], h[i]);
          lh[i] = lanes::select(moveto, lhn[i], lh[i]);
          g[i] = lanes::select(moveto, gn[i], g[i]);
        }
        f = lanes::select(moveto, fn, f);
        const vi better = start | (accept & (vi)(f < bf));
        if (lanes::any(better)) {
          for (int i = 0; i < k; ++i) {
            bh[i] = lanes::select(better, h[i], bh[i]);
            bg[i] = lanes::select(better, g[i], bg[i]);
          }
          bf = lanes::select(better, f, bf);
        }
        for (int l = 0; l < L; ++l) {
          Lane& ln = lane[l];
          if (start[l]) {
            ln.first = false;
            eta[l] = 1.0;
            std::fill(ln.recent.begin(), ln.recent.end(), -std::numeric_limits<double>::infinity());
            ln.recent[0] = f[l];
          } else if (accept[l]) {
            ++ln.nit;
            ln.recent[static_cast<std::size_t>(ln.nit % memory)] = f[l];
          }
        }
        // A new iteration: the certificate, then the step size's cap and the reference F.
        vd lo, up;
        const vd gap = gap_and_range(lo, up);
        for (int l = 0; l < L; ++l) {
          if (!moveto[l] || !lane[l].busy) continue;
          Lane& ln = lane[l];
          if (ln.nit >= opt.max_iter) {
            finish(l, 0, results);
            continue;
          }
          if (gap[l] <= opt.gap_tol) {
            finish(l, 1, results, gap[l]);
            continue;
          }
          gmin[l] = lo[l];
          if (up[l] > lo[l]) eta[l] = std::min(eta[l], 30.0 / (up[l] - lo[l]));
          fref[l] = *std::max_element(ln.recent.begin(), ln.recent.end());
          ln.ls = 0;
        }
      }
      // Every lane still busy takes its next trial step.
      const vi sok = step();
      for (int l = 0; l < L; ++l) {
        if (!lane[l].busy) continue;
        if (!sok[l]) {
          handed_back.push_back(lane[l].unit);
          lane[l].busy = false;
        } else if (moved[l] == 0) {  // no trial point differs from h: solve_one's status 4
          finish(l, 4, results);
        }
      }
    }
  }

  // solve_one's ending for lane l: the best iterate when uncertified, the certificate.
  void finish(int l, int status, std::vector<MixtureResult>& results, double gap = 0.0) {
    Lane& ln = lane[l];
    MixtureResult& res = results[ln.unit];
    const bool use_best = (status == 0 || status == 4) && bf[l] < f[l];
    std::vector<double> gg(static_cast<std::size_t>(k)), hh(static_cast<std::size_t>(k));
    for (int i = 0; i < k; ++i) {
      hh[i] = use_best ? bh[i][l] : h[i][l];
      gg[i] = use_best ? bg[i][l] : g[i][l];
    }
    res.f = use_best ? bf[l] : f[l];
    res.gap = gap;
    if (status == 0 || status == 4) {
      std::vector<double> s(static_cast<std::size_t>(k));
      const MixtureProblem& pb = problems[ln.unit / static_cast<std::size_t>(S)];
      res.gap = fw_gap(gg, hh, pb, k, s);
    }
    res.status = status == 4 && res.gap <= opt.gap_tol ? 1 : status;
    res.h = std::move(hh);
    res.nit = ln.nit;
    res.nfev = ln.nfev;
    res.best_start = static_cast<int>(ln.unit % static_cast<std::size_t>(S));
    ln.busy = false;
  }
};

// The lane solver compiled for AVX2 and for the baseline, chosen at run time (the same bits).
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2"))) void run_lanes_avx2(LaneSolver& ls, const std::size_t* units, std::size_t n,
                                                    std::vector<MixtureResult>& results,
                                                    std::vector<std::size_t>& handed_back, const CancelFlag* cancel) {
  ls.run(units, n, results, handed_back, cancel);
}
__attribute__((target("avx2"))) void lane_losses_avx2(LaneSolver& ls, const std::size_t* ps, std::size_t n,
                                                      std::vector<MixtureResult>& results,
                                                      std::vector<std::size_t>& handed_back) {
  ls.losses(ps, n, results, handed_back);
}
#endif
void run_lanes(LaneSolver& ls, const std::size_t* units, std::size_t n, std::vector<MixtureResult>& results,
               std::vector<std::size_t>& handed_back, const CancelFlag* cancel) {
#if defined(__x86_64__) || defined(__i386__)
  if (cpu_has_avx2()) return run_lanes_avx2(ls, units, n, results, handed_back, cancel);
#endif
  ls.run(units, n, results, handed_back, cancel);
}
void lane_losses(LaneSolver& ls, const std::size_t* ps, std::size_t n, std::vector<MixtureResult>& results,
                 std::vector<std::size_t>& handed_back) {
#if defined(__x86_64__) || defined(__i386__)
  if (cpu_has_avx2()) return lane_losses_avx2(ls, ps, n, results, handed_back);
#endif
  ls.losses(ps, n, results, handed_back);
}

// Whether problem pb goes to the lane solver: the plain simplex, no KL term, no unique
// tokens, and every weighted law has a fast path.
bool lane_problem(const CompiledLaws& cl, const MixtureProblem& pb, int k) {
  if (pb.kl > 0 || pb.unique_tokens || !plain_simplex(pb.lo, pb.hi, k)) return false;
  for (int t : cl.slow)
    if (pb.weights[t] != 0.0) return false;
  return true;
}

// A data-constrained law means nothing without the unique tokens of its domains.
void check_unique_tokens(const std::vector<FittedLaw>& laws, const MixtureProblem& pb) {
  if (pb.unique_tokens) return;
  for (const FittedLaw& fl : laws)
    if (fl.plan->spec.repetition)
      throw std::invalid_argument("unique_tokens: the fits are data-constrained (repetition=True); give the unique "
                                  "tokens of every domain");
}

}  // namespace

double mixture_objective(const std::vector<FittedLaw>& laws, const MixtureProblem& pb, const double* h,
                         double* grad, double* per_law, bool generic) {
  check_unique_tokens(laws, pb);
  const int k = laws.empty() ? 0 : laws[0].plan->spec.k;
  if (generic) {
    std::vector<int> all(laws.size());
    for (std::size_t t = 0; t < laws.size(); ++t) all[t] = static_cast<int>(t);
    GenericEvaluator G(laws, pb, k, std::move(all));
    double F = 0.0;
    if (grad) std::fill(grad, grad + k, 0.0);
    G.add(h, F, grad, per_law, nullptr);
    return pb.kl > 0 ? F + kl_regulariser(pb, k, h, grad, nullptr) : F;
  }
  const CompiledLaws cl(laws, k);
  Evaluator F(cl, laws, pb, true);
  return F(h, grad, per_law);
}

std::vector<MixtureResult> optimize_mixtures(const std::vector<FittedLaw>& laws,
                                             const std::vector<MixtureProblem>& problems,
                                             const MixtureOptions& opt, int threads, const CancelFlag* cancel) {
  if (laws.empty()) throw std::invalid_argument("fits: need at least one fitted law");
  for (const MixtureProblem& pb : problems) check_unique_tokens(laws, pb);
  const int k = laws[0].plan->spec.k;
  for (const auto& fl : laws)
    if (fl.plan->spec.k != k) throw std::invalid_argument("fits: all laws must have the same domains");
  const int S = std::max(1, opt.n_starts);
  const CompiledLaws cl(laws, k);
  std::vector<MixtureResult> all(problems.size() * static_cast<std::size_t>(S));
  auto solve_unit = [&](std::size_t u) {
    const std::size_t p = u / static_cast<std::size_t>(S);
    const int s = static_cast<int>(u % static_cast<std::size_t>(S));
    const MixtureProblem& pb = problems[p];
    Evaluator F(cl, laws, pb);
    all[u] = solve_one(F, pb, start_point(opt, pb, p, s, k), opt, cancel);
    all[u].best_start = s;
  };
  std::vector<std::size_t> one_at_a_time;
  // Mirror descent on the plain simplex: four problems at a time (the same results),
  // in chunks of units solved in parallel; the units a lane hands back join the others.
  std::vector<std::size_t> four_at_a_time;
  std::vector<char> weighted(laws.size(), 0);
  for (std::size_t p = 0; p < problems.size(); ++p) {
    const bool lanes = opt.lanes && opt.method == MixtureMethod::mirror && k > 0 && lane_problem(cl, problems[p], k);
    for (int s = 0; s < S; ++s) (lanes ? four_at_a_time : one_at_a_time).push_back(p * static_cast<std::size_t>(S) + s);
    if (lanes)
      for (std::size_t t = 0; t < laws.size(); ++t) weighted[t] |= problems[p].weights[t] != 0.0;
  }
  // Fewer units than lanes: one at a time is cheaper (the idle lanes would cost as much).
  if (four_at_a_time.size() < static_cast<std::size_t>(lanes::W)) {
    one_at_a_time.insert(one_at_a_time.end(), four_at_a_time.begin(), four_at_a_time.end());
    four_at_a_time.clear();
  }
  std::unique_ptr<CompiledLaws> lcl;
  if (!four_at_a_time.empty()) {
    lcl = std::make_unique<CompiledLaws>(laws, k, &weighted);
    constexpr std::size_t chunk = 256;  // units per lane solver: few idle lanes at its end
    const std::size_t n_chunks = (four_at_a_time.size() + chunk - 1) / chunk;
    std::vector<std::vector<std::size_t>> handed_back(n_chunks);
    parallel_for(
        n_chunks, threads,
        [&](std::size_t c) {
          LaneSolver ls(*lcl, problems, opt, S);
          const std::size_t first = c * chunk, n = std::min(chunk, four_at_a_time.size() - first);
          run_lanes(ls, four_at_a_time.data() + first, n, all, handed_back[c], cancel);
        },
        cancel);
    for (const auto& hb : handed_back) one_at_a_time.insert(one_at_a_time.end(), hb.begin(), hb.end());
  }
  parallel_for(
      one_at_a_time.size(), threads, [&](std::size_t i) { solve_unit(one_at_a_time[i]); }, cancel);
  if (cancel && cancel->is_set()) return {};  // incomplete: no result is returned
  std::vector<MixtureResult> best(problems.size());
  for (std::size_t p = 0; p < problems.size(); ++p) {
    std::size_t b = p * static_cast<std::size_t>(S);
    for (int s = 1; s < S; ++s) {
      const std::size_t u = p * static_cast<std::size_t>(S) + static_cast<std::size_t>(s);
      if (all[u].f < all[b].f) b = u;
    }
    best[p] = std::move(all[b]);
  }
  // Each law's loss at the solution (zero-weight targets included), in parallel too: four
  // problems at a time when every law is in the lane solver's tables (the same bits).
  std::vector<std::size_t> losses_one_at_a_time;
  if (lcl && lcl->tg.size() == laws.size()) {
    std::vector<std::size_t> all_problems;  // (the tables know nothing of unique tokens)
    for (std::size_t p = 0; p < best.size(); ++p)
      (problems[p].unique_tokens ? losses_one_at_a_time : all_problems).push_back(p);
    constexpr std::size_t chunk = 1024;
    const std::size_t n_chunks = (all_problems.size() + chunk - 1) / chunk;
    std::vector<std::vector<std::size_t>> handed_back(n_chunks);
    MixtureOptions plain = opt;
    plain.n_starts = 1;  // results are indexed by problem here
    parallel_for(
        n_chunks, threads,
        [&](std::size_t c) {
          LaneSolver ls(*lcl, problems, plain, 1);
          const std::size_t first = c * chunk, n = std::min(chunk, all_problems.size() - first);
          lane_losses(ls, all_problems.data() + first, n, best, handed_back[c]);
        },
        cancel);
    for (const auto& hb : handed_back)
      losses_one_at_a_time.insert(losses_one_at_a_time.end(), hb.begin(), hb.end());
  } else {
    for (std::size_t p = 0; p < best.size(); ++p) losses_one_at_a_time.push_back(p);
  }
  parallel_for(
      losses_one_at_a_time.size(), threads,
      [&](std::size_t i) {
        const std::size_t p = losses_one_at_a_time[i];
        best[p].per_law.assign(laws.size(), 0.0);
        Evaluator F(cl, laws, problems[p], true);
        F(best[p].h.data(), nullptr, best[p].per_law.data());
      },
      cancel);
  if (cancel && cancel->is_set()) return {};
  return best;
}

}  // namespace mixlaw
