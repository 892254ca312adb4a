#include "mixlaw/mixture.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "mixlaw/evaluate.hpp"
#include "mixlaw/random.hpp"
#include "mixlaw/simplex.hpp"

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

struct Evaluator {
  const std::vector<FittedLaw>& laws;
  const MixtureProblem& pb;
  int k;
  Records rec;
  std::vector<detail::MixtureWork> work;
  std::vector<detail::CallConstants> constants;  // N and D are fixed: computed once
  int nfev = 0;

  Evaluator(const std::vector<FittedLaw>& l, const MixtureProblem& p, int kk)
      : laws(l), pb(p), k(kk), rec(single_record(kk, p.N, p.D)) {
    for (const auto& fl : laws) {
      work.emplace_back(*fl.plan);
      constants.push_back(detail::call_constants(*fl.plan, fl.theta, rec));
    }
  }

  // logh (optional): log h where h > 0, when the caller already knows it.
  double operator()(const double* h, double* grad, double* per_law = nullptr, const double* logh = nullptr) {
    ++nfev;
    for (int i = 0; i < k; ++i) {
      rec.mix_h[i] = h[i];
      rec.mix_logh[i] = h[i] > 0 ? (logh ? logh[i] : std::log(h[i])) : 0.0;
    }
    if (grad) std::fill(grad, grad + k, 0.0);
    double F = 0.0;
    for (std::size_t t = 0; t < laws.size(); ++t) {
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
  std::vector<double> g(k), g_used(k), h_new(k), g_new(k), v(k), s(k);
  double f = F(h.data(), g.data(), nullptr, lh.data());
  double eta = 1.0;
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
    for (int ls = 0; ls < 80; ++ls) {
      if (mirror) {
        for (int i = 0; i < k; ++i) {
          lv[i] = lh[i] - eta * (g_used[i] - gmin);
          v[i] = h[i] * std::exp(-eta * (g_used[i] - gmin));
        }
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
      if (std::isfinite(f_new) && f_new <= f + 1e-4 * dec && f_new <= f) {
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
    if (sy > 0 && ss > 0) eta = std::min(std::max(ss / sy, 1e-12), 1e12);
    else eta *= 2.0;  // let the step grow again: the line search only ever shrinks it
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
                         double* grad, double* per_law) {
  const int k = laws.empty() ? 0 : laws[0].plan->spec.k;
  Evaluator F(laws, pb, k);
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
    best[p] = all[b];
  }
  return best;
}

}  // namespace mixlaw
