#include "mixlaw/objective.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "mixlaw/evaluate.hpp"

namespace mixlaw {
namespace {

using detail::MixtureWork;

// Huber on a raw residual, branch-free (selects, no jumps) so that loops over records can
// vectorise: rho, psi and the curvature om, which outside the band is owd / |r| (IRLS,
// owd = outside_weight * delta) or, without Irls, 0. MSE is delta = inf.
struct HuberTerms {
  double rho, psi, om;
};
template <bool Irls>
inline HuberTerms huber_raw(double r, double delta, double owd) {
  const double a = std::fabs(r);
  const bool in = a <= delta;
  return {in ? 0.5 * r * r : delta * (a - 0.5 * delta), in ? r : std::copysign(delta, r),
          in ? 1.0 : (Irls ? owd / a : 0.0)};
}

// Residual, loss, its derivative psi = rho'(r) and IRLS weight omega = rho'(r)/r, plus the
// factor dr/dL (1, or 1/L for log residuals).
struct Pointwise {
  double r, rho, psi, omega, drdL;
};

inline Pointwise pointwise(const ObjectiveSpec& spec, double L, double y) {
  Pointwise p;
  if (spec.log_residual) {
    p.r = L > 0 ? std::log(L) - std::log(y) : std::numeric_limits<double>::infinity();
    p.drdL = 1.0 / L;
  } else {
    p.r = L - y;
    p.drdL = 1.0;
  }
  const double a = std::fabs(p.r);
  if (spec.loss == LossKind::huber && a > spec.delta) {
    p.rho = spec.delta * (a - 0.5 * spec.delta);
    p.psi = p.r > 0 ? spec.delta : -spec.delta;
    p.omega = spec.delta / a;
  } else {
    p.rho = 0.5 * p.r * p.r;
    p.psi = p.r;
    p.omega = 1.0;
  }
  return p;
}

struct ValueVisitor {
  const FitProblem& pb;
  double f = 0.0;
  void begin_mixture(std::size_t, const MixtureWork&) {}
  void record(std::size_t s, double L, const double*) { f += pb.c[s] * pointwise(pb.spec, L, pb.y[s]).rho; }
  void end_mixture(std::size_t, const MixtureWork&) {}
};

// Gradient through per-mixture slot adjoints (as in evaluate.cpp's J^T w).
struct GradVisitor {
  const FitProblem& pb;
  const double* theta;
  double* grad;
  double f = 0.0;
  double adj[n_slots] = {0, 0, 0, 0, 0, 0};
  void begin_mixture(std::size_t, const MixtureWork&) { std::fill(adj, adj + n_slots, 0.0); }
  void record(std::size_t s, double L, const double* u) {
    const Pointwise p = pointwise(pb.spec, L, pb.y[s]);
    f += pb.c[s] * p.rho;
    const double a = pb.c[s] * p.psi * p.drdL;
    for (int q = 0; q < n_slots; ++q) adj[q] += a * u[q];
  }
  void end_mixture(std::size_t m, const MixtureWork& mw) {
    const Plan& plan = *pb.plan;
    for (int q = 0; q < n_slots; ++q) {
      const Source& src = plan.src[q];
      if (src.type == Source::param) grad[src.index] += adj[q];
      else if (src.type == Source::feature)
        detail::accumulate_feature_grad(plan, src.index, theta, *pb.rec, m, mw, adj[q], grad);
    }
  }
};

// Expands one mixture's slot-space sums into parameter space: grad += sum_q gs[q] v_q and
// B += sum_{q,r} Q[q][r] v_q v_r^T, where v_q is slot q's parameter gradient at the mixture
// (1 for a global parameter, the feature's k-long gradient for a mixture feature). Only the
// lower triangle Q[q][r], r <= q, is read. For a pair of global parameters v_q = v_r = 1 at
// every mixture, so their sums are collected over all mixtures and written once by finish().
struct SlotExpansion {
  const FitProblem& pb;
  double* grad;
  double* B;
  int P;
  int first[n_slots];  // first parameter index of a slot whose parameters are contiguous, else -1
  bool param[n_slots];
  double Qp[n_slots][n_slots] = {};
  double gp[n_slots] = {0, 0, 0, 0, 0, 0};

  SlotExpansion(const FitProblem& pb_, double* grad_, double* B_, int P_) : pb(pb_), grad(grad_), B(B_), P(P_) {
    for (int q = 0; q < n_slots; ++q) {
      const Source& src = pb.plan->src[q];
      first[q] = -1;
      param[q] = src.type == Source::param;
      if (src.type == Source::param) {
        first[q] = src.index;
      } else if (src.type == Source::feature) {
        const auto& fp = pb.plan->feature_params[src.index];
        bool contiguous = true;
        for (std::size_t i = 0; i < fp.size(); ++i) contiguous = contiguous && fp[i] == fp[0] + static_cast<int>(i);
        if (contiguous && !fp.empty()) first[q] = fp[0];
      }
    }
  }

  // Parameter indices and values of slot q's gradient at this mixture.
  void slot_vector(int q, const MixtureWork& mw, const int*& idx, const double*& val, std::size_t& len,
                   const double* one) const {
    const Source& src = pb.plan->src[q];
    if (src.type == Source::param) {
      idx = &src.index;
      val = one;
      len = 1;
    } else if (src.type == Source::feature) {
      const auto& fp = pb.plan->feature_params[src.index];
      idx = fp.data();
      val = mw.dphi.data() + mw.dphi_off[src.index];
      len = fp.size();
    } else {
      len = 0;
    }
  }

  void operator()(const double (&Q)[n_slots][n_slots], const double (&gs)[n_slots], const MixtureWork& mw) {
    static const double one = 1.0;
    const int* iq = nullptr;
    const double* vq = nullptr;
    std::size_t nq = 0;
    const int* ir = nullptr;
    const double* vr = nullptr;
    std::size_t nr = 0;
    for (int q = 0; q < n_slots; ++q) {
      slot_vector(q, mw, iq, vq, nq, &one);
      if (param[q]) gp[q] += gs[q];
      else
        for (std::size_t a = 0; a < nq; ++a) grad[iq[a]] += gs[q] * vq[a];
      for (int r = 0; r <= q; ++r) {
        if (param[q] && param[r]) {
          Qp[q][r] += Q[q][r];
          continue;
        }
        // Each slot owns distinct parameters, so block (q, r) of B is written only here; the
        // (r, q) block is filled by symmetrising once per call (see objective_gauss_newton).
        // A diagonal block is written as its lower triangle with the diagonal at half weight.
        const double Qqr = Q[q][r];
        if (Qqr == 0.0) continue;
        slot_vector(r, mw, ir, vr, nr, &one);
        const bool diag = r == q;
        if (first[q] >= 0 && first[r] >= 0) {  // dense rank-1 update (vectorises)
          for (std::size_t a = 0; a < nq; ++a) {
            const double x = Qqr * vq[a];
            double* row = B + (static_cast<std::size_t>(first[q]) + a) * P + first[r];
            const std::size_t bend = diag ? a : nr;
            for (std::size_t b = 0; b < bend; ++b) row[b] += x * vr[b];
            if (diag) row[a] += 0.5 * x * vq[a];
          }
        } else {
          for (std::size_t a = 0; a < nq; ++a) {
            const double x = Qqr * vq[a];
            double* row = B + static_cast<std::size_t>(iq[a]) * P;
            const std::size_t bend = diag ? a : nr;
            for (std::size_t b = 0; b < bend; ++b) row[ir[b]] += x * vr[b];
            if (diag) row[iq[a]] += 0.5 * x * vq[a];
          }
        }
      }
    }
  }
  // Writes the global-parameter pairs collected over the mixtures (same conventions).
  void finish() {
    for (int q = 0; q < n_slots; ++q) {
      if (!param[q]) continue;
      const int i = pb.plan->src[q].index;
      grad[i] += gp[q];
      for (int r = 0; r <= q; ++r)
        if (param[r]) B[static_cast<std::size_t>(i) * P + pb.plan->src[r].index] += (r == q ? 0.5 : 1.0) * Qp[q][r];
    }
  }
};

// Gradient and B = sum_j c_j omega_j J_j J_j^T, with J_j = sum_slots u_j[q] * (slot q's
// parameter gradient at mixture m). Per mixture, Q = sum_j c_j omega_j v_j v_j^T over the
// 6 slots is accumulated first and expanded into parameter space once. (The general path,
// for log residuals and per-mixture exponents; see gauss_newton_segments for the common one.)
struct GaussNewtonVisitor {
  const FitProblem& pb;
  SlotExpansion expand;
  double f = 0.0;
  double gs[n_slots] = {0, 0, 0, 0, 0, 0};
  double Q[n_slots][n_slots] = {};

  GaussNewtonVisitor(const FitProblem& pb_, double* grad_, double* B_, int P_) : pb(pb_), expand(pb_, grad_, B_, P_) {}
  // Records are buffered (slot values u in structure-of-arrays form, prediction L) and
  // reduced a chunk at a time: the per-slot sums then run as vectorisable loops over
  // records with their accumulators in registers, instead of 27 read-modify-writes of
  // Q and gs per record.
  static constexpr int chunk = 64;
  double ub[n_slots][chunk];
  double Lb[chunk];
  std::size_t s0 = 0;  // grouped position of the first buffered record (records of a mixture are contiguous)
  int nb = 0;

  void begin_mixture(std::size_t, const MixtureWork&) {
    std::fill(gs, gs + n_slots, 0.0);
    for (auto& row : Q) std::fill(row, row + n_slots, 0.0);
    nb = 0;
  }
  void record(std::size_t s, double L, const double* u) {
    if (nb == 0) s0 = s;
    Lb[nb] = L;
    for (int q = slot_aN; q < n_slots; ++q) ub[q][nb] = u[q];
    if (++nb == chunk) flush();
  }
  void flush() {
    const int n = nb;
    nb = 0;
    if (n == 0) return;
    const double* y = pb.y.data() + s0;
    const double* c = pb.c.data() + s0;
    double ab[chunk], wb[chunk];  // c psi dr/dL and c * curvature * (dr/dL)^2
    double fsum = 0.0;
    if (pb.spec.log_residual) {
      for (int i = 0; i < n; ++i) {
        const Pointwise p = pointwise(pb.spec, Lb[i], y[i]);
        fsum += c[i] * p.rho;
        ab[i] = c[i] * p.psi * p.drdL;
        wb[i] = c[i] * (p.omega == 1.0 ? 1.0 : pb.spec.outside_weight * p.omega) * p.drdL * p.drdL;
      }
    } else {  // raw residuals: branch-free Huber so the loop vectorises
      const bool huber = pb.spec.loss == LossKind::huber;
      const double delta = huber ? pb.spec.delta : std::numeric_limits<double>::infinity();
      const double owd = pb.spec.outside_weight * delta;
#pragma omp simd reduction(+ : fsum)
      for (int i = 0; i < n; ++i) {
        const HuberTerms h = huber_raw<true>(Lb[i] - y[i], delta, owd);
        fsum += c[i] * h.rho;
        ab[i] = c[i] * h.psi;
        wb[i] = c[i] * h.om;
      }
    }
    f += fsum;
    // Slots E and M have u = 1 at every record (see for_each_record): their sums are shared.
    double sw = 0.0, sa = 0.0;
#pragma omp simd reduction(+ : sw, sa)
    for (int i = 0; i < n; ++i) {
      sw += wb[i];
      sa += ab[i];
    }
    const bool hasM = pb.plan->src[slot_M].type != Source::none;
    gs[slot_E] += sa;
    Q[slot_E][slot_E] += sw;
    if (hasM) {
      gs[slot_M] += sa;
      Q[slot_M][slot_E] += sw;
      Q[slot_M][slot_M] += sw;
    }
    for (int q = slot_aN; q < n_slots; ++q) {
      if (pb.plan->src[q].type == Source::none) continue;
      const double* uq = ub[q];
      double g = 0.0, w1 = 0.0;
#pragma omp simd reduction(+ : g, w1)
      for (int i = 0; i < n; ++i) {
        g += ab[i] * uq[i];
        w1 += wb[i] * uq[i];
      }
      gs[q] += g;
      Q[q][slot_E] += w1;
      if (hasM) Q[q][slot_M] += w1;
      for (int r = slot_aN; r <= q; ++r) {
        if (pb.plan->src[r].type == Source::none) continue;
        const double* ur = ub[r];
        double acc = 0.0;
#pragma omp simd reduction(+ : acc)
        for (int i = 0; i < n; ++i) acc += wb[i] * uq[i] * ur[i];
        Q[q][r] += acc;
      }
    }
  }
  void end_mixture(std::size_t, const MixtureWork& mw) {
    flush();
    expand(Q, gs, mw);
  }
};

template <bool ParamGrad, class Visitor>
void walk(const FitProblem& pb, const double* theta, Visitor& vis) {
  const detail::CallConstants cc = detail::call_constants(*pb.plan, theta, *pb.rec);
  MixtureWork w(*pb.plan);
  detail::for_each_record<ParamGrad, false>(*pb.plan, theta, *pb.rec, cc, 0, pb.rec->n_mix, w, vis);
}

// The Gauss-Newton fast path (see FitProblem): raw residuals, exponents global (or absent).
void build_segments(FitProblem& pb) {
  const Plan& plan = *pb.plan;
  const Records& rec = *pb.rec;
  pb.segmented = !pb.spec.log_residual && plan.src[slot_bN].type != Source::feature &&
                 plan.src[slot_bD].type != Source::feature;
  if (!pb.segmented) return;
  const bool hasN = plan.src[slot_aN].type != Source::none;
  std::vector<std::size_t> perm;
  pb.mix_seg.assign(1, 0);
  pb.sd.reserve(rec.n);
  pb.sy.reserve(rec.n);
  pb.sc.reserve(rec.n);
  pb.seg_start.assign(1, 0);
  for (std::size_t m = 0; m < rec.n_mix; ++m) {
    perm.clear();
    for (std::size_t s = rec.mix_start[m]; s < rec.mix_start[m + 1]; ++s) perm.push_back(s);
    if (hasN)
      std::stable_sort(perm.begin(), perm.end(),
                       [&](std::size_t a, std::size_t b) { return rec.n_idx[a] < rec.n_idx[b]; });
    for (std::size_t i = 0; i < perm.size(); ++i) {
      const std::size_t s = perm[i];
      const std::int32_t n = hasN ? rec.n_idx[s] : 0;
      if (i == 0 || n != pb.seg_n.back()) {  // a new segment starts here
        if (i > 0) pb.seg_start.push_back(pb.sd.size());
        pb.seg_n.push_back(n);
      }
      pb.sd.push_back(rec.d_idx[s]);
      pb.sy.push_back(pb.y[s]);
      pb.sc.push_back(pb.c[s]);
    }
    if (!perm.empty()) pb.seg_start.push_back(pb.sd.size());
    pb.mix_seg.push_back(pb.seg_n.size());
  }
}

// The nine sums of one segment (and its objective): w = c omega, a = c psi, D = eD, X = xD eD.
struct SegmentSums {
  double f = 0, w = 0, a = 0, wD = 0, wX = 0, wDD = 0, wDX = 0, wXX = 0, aD = 0, aX = 0;
};

// Irls: curvature owd/|r| outside the Huber band; otherwise 0 there (the default), which
// spares a division per record (see huber_raw).
template <bool Irls>
inline void segment_sums(SegmentSums& out, double base, double aD, double delta, double owd, const std::int32_t* sd,
                         const double* sy, const double* sc, const double* eD, const double* xeD, std::size_t s0,
                         std::size_t s1) {
  double f = 0, Sw = 0, Sa = 0, SwD = 0, SwX = 0, SwDD = 0, SwDX = 0, SwXX = 0, SaD = 0, SaX = 0;
#pragma omp simd reduction(+ : f, Sw, Sa, SwD, SwX, SwDD, SwDX, SwXX, SaD, SaX)
  for (std::size_t s = s0; s < s1; ++s) {
    const double e = eD[sd[s]], xe = xeD[sd[s]];
    const HuberTerms h = huber_raw<Irls>(base + aD * e - sy[s], delta, owd);
    const double ab = sc[s] * h.psi, wb = sc[s] * h.om;
    f += sc[s] * h.rho;
    Sw += wb;
    Sa += ab;
    SwD += wb * e;
    SwX += wb * xe;
    SwDD += wb * e * e;
    SwDX += wb * e * xe;
    SwXX += wb * xe * xe;
    SaD += ab * e;
    SaX += ab * xe;
  }
  out = {f, Sw, Sa, SwD, SwX, SwDD, SwDX, SwXX, SaD, SaX};
}

// Value, gradient and Gauss-Newton matrix on the segments. With the exponents global,
// u = dL/d(slot) is (1, 1, eN, -aN xN eN, eD, -aD xD eD) where eN, xN are constant within
// a segment: the slot sums Q = sum c omega u u^T and gs = sum c psi u then follow from nine
// sums over the segment's records (of 1, eD, xD eD and their products), one loop with its
// accumulators in registers, instead of 27 products per record. (Segments are short, about
// 9 checkpoints of one run, so GCC keeps the loop scalar on the SSE2 baseline; a clamp-based
// branch-free body measured only 3% faster.)
double gauss_newton_segments(const FitProblem& pb, const double* theta, double* grad, double* B) {
  const Plan& plan = *pb.plan;
  const Records& rec = *pb.rec;
  const int P = plan.n_params;
  const detail::CallConstants cc = detail::call_constants(plan, theta, rec);
  const Source sM = plan.src[slot_M], saN = plan.src[slot_aN], saD = plan.src[slot_aD];
  const bool hasE = plan.src[slot_E].type != Source::none, hasM = sM.type != Source::none;
  const bool hasN = saN.type != Source::none, hasD = saD.type != Source::none;
  // Per distinct N and D: the term's value e and x e (x = log of the rescaled size).
  std::vector<double> eN(rec.uniq_lnN.size(), 0.0), xeN(eN.size(), 0.0);
  std::vector<double> eD(rec.uniq_lnD.size(), 0.0), xeD(eD.size(), 0.0);
  if (hasN)
    for (std::size_t i = 0; i < eN.size(); ++i) {
      eN[i] = cc.eN_uniq[i];
      xeN[i] = (rec.uniq_lnN[i] - cc.ln_n_scale) * eN[i];
    }
  if (hasD)
    for (std::size_t i = 0; i < eD.size(); ++i) {
      eD[i] = cc.eD_uniq[i];
      xeD[i] = (rec.uniq_lnD[i] - cc.ln_d_scale) * eD[i];
    }
  const bool huber = pb.spec.loss == LossKind::huber;
  const double delta = huber ? pb.spec.delta : std::numeric_limits<double>::infinity();
  const double ow = pb.spec.outside_weight;
  const std::int32_t* sd = pb.sd.data();
  const double* sy = pb.sy.data();
  const double* sc = pb.sc.data();
  const double* peD = eD.data();
  const double* pxD = xeD.data();

  SlotExpansion expand(pb, grad, B, P);
  MixtureWork mw(plan);
  double f = 0.0;
  for (std::size_t m = 0; m < rec.n_mix; ++m) {
    if (rec.k > 0) detail::mixture_features<true, false>(plan, theta, rec, m, mw);
    const double M = detail::source_value(sM, theta, mw);
    const double aN = detail::source_value(saN, theta, mw), aD = detail::source_value(saD, theta, mw);
    double Q[n_slots][n_slots] = {};
    double gs[n_slots] = {0, 0, 0, 0, 0, 0};
    for (std::size_t g = pb.mix_seg[m]; g < pb.mix_seg[m + 1]; ++g) {
      const std::int32_t n = pb.seg_n[g];
      const double fN = hasN ? eN[n] : 0.0, gN = hasN ? -aN * xeN[n] : 0.0;
      const double base = cc.E + M + aN * fN;
      SegmentSums ss;
      if (ow == 0.0)
        segment_sums<false>(ss, base, aD, delta, 0.0, sd, sy, sc, peD, pxD, pb.seg_start[g], pb.seg_start[g + 1]);
      else
        segment_sums<true>(ss, base, aD, delta, ow * delta, sd, sy, sc, peD, pxD, pb.seg_start[g],
                           pb.seg_start[g + 1]);
      const double fs = ss.f, Sw = ss.w, Sa = ss.a, SwD = ss.wD, SwX = ss.wX, SwDD = ss.wDD, SwDX = ss.wDX,
                   SwXX = ss.wXX, SaD = ss.aD, SaX = ss.aX;
      f += fs;
      // Slots E, M, aN, bN are constant in the segment (cv); aD is e and bD is -aD x e.
      const double cv[4] = {hasE ? 1.0 : 0.0, hasM ? 1.0 : 0.0, fN, gN};
      for (int q = 0; q < 4; ++q) {
        gs[q] += cv[q] * Sa;
        for (int r = 0; r <= q; ++r) Q[q][r] += cv[q] * cv[r] * Sw;
      }
      if (hasD) {
        for (int q = 0; q < 4; ++q) {
          Q[slot_aD][q] += cv[q] * SwD;
          Q[slot_bD][q] -= aD * cv[q] * SwX;
        }
        Q[slot_aD][slot_aD] += SwDD;
        Q[slot_bD][slot_aD] -= aD * SwDX;
        Q[slot_bD][slot_bD] += aD * aD * SwXX;
        gs[slot_aD] += SaD;
        gs[slot_bD] -= aD * SaX;
      }
    }
    expand(Q, gs, mw);
  }
  expand.finish();
  return f;
}

}  // namespace

FitProblem make_problem(const Plan& plan, const Records& rec, const double* y, const double* weights,
                        bool mean, const ObjectiveSpec& spec) {
  if (rec.k != plan.spec.k) throw std::invalid_argument("H: records and law disagree on the number of domains");
  if (!(spec.delta > 0) || !std::isfinite(spec.delta)) throw std::invalid_argument("delta: must be finite and > 0");
  check_fit_records(plan, rec);
  FitProblem pb;
  pb.plan = &plan;
  pb.rec = &rec;
  pb.spec = spec;
  pb.y.resize(rec.n);
  pb.c.resize(rec.n);
  double total = 0.0;
  for (std::size_t s = 0; s < rec.n; ++s) {
    const auto j = static_cast<std::size_t>(rec.order[s]);
    if (!std::isfinite(y[j])) throw std::invalid_argument("y: value " + std::to_string(j) + " is not finite");
    if (spec.log_residual && !(y[j] > 0))
      throw std::invalid_argument("y: value " + std::to_string(j) + " must be > 0 for log residuals");
    const double c = weights ? weights[j] : 1.0;
    if (!std::isfinite(c) || c < 0) throw std::invalid_argument("weights: value " + std::to_string(j) + " must be finite and >= 0");
    pb.y[s] = y[j];
    pb.c[s] = c;
    total += c;
  }
  if (!(total > 0)) throw std::invalid_argument("weights: must not all be zero");
  if (mean)
    for (double& c : pb.c) c /= total;
  build_segments(pb);
  return pb;
}

double objective_value(const FitProblem& pb, const double* theta) {
  ValueVisitor v{pb};
  walk<false>(pb, theta, v);
  return v.f;
}

double objective_grad(const FitProblem& pb, const double* theta, double* grad) {
  std::fill(grad, grad + pb.plan->n_params, 0.0);
  GradVisitor v{pb, theta, grad};
  walk<false>(pb, theta, v);
  return v.f;
}

double objective_gauss_newton(const FitProblem& pb, const double* theta, double* grad, double* B) {
  const int P = pb.plan->n_params;
  std::fill(grad, grad + P, 0.0);
  std::fill(B, B + static_cast<std::size_t>(P) * P, 0.0);
  double f;
  if (pb.segmented) {
    f = gauss_newton_segments(pb, theta, grad, B);
  } else {
    GaussNewtonVisitor v{pb, grad, B, P};
    walk<true>(pb, theta, v);
    v.expand.finish();
    f = v.f;
  }
  for (int p = 0; p < P; ++p)
    for (int q = 0; q <= p; ++q) {
      const double s = B[static_cast<std::size_t>(p) * P + q] + B[static_cast<std::size_t>(q) * P + p];
      B[static_cast<std::size_t>(p) * P + q] = s;
      B[static_cast<std::size_t>(q) * P + p] = s;
    }
  return f;
}

void residuals(const FitProblem& pb, const double* theta, double* out) {
  struct V {
    const FitProblem& pb;
    double* out;
    void begin_mixture(std::size_t, const MixtureWork&) {}
    void record(std::size_t s, double L, const double*) {
      out[pb.rec->order[s]] = pointwise(pb.spec, L, pb.y[s]).r;
    }
    void end_mixture(std::size_t, const MixtureWork&) {}
  } v{pb, out};
  walk<false>(pb, theta, v);
}

}  // namespace mixlaw
