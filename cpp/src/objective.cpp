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

// Gradient and B = sum_j c_j omega_j J_j J_j^T, with J_j = sum_slots u_j[q] * (slot q's
// parameter gradient at mixture m). Per mixture, Q = sum_j c_j omega_j v_j v_j^T over the
// 6 slots is accumulated first and expanded into parameter space once.
struct GaussNewtonVisitor {
  const FitProblem& pb;
  double* grad;
  double* B;
  int P;
  double f = 0.0;
  double gs[n_slots] = {0, 0, 0, 0, 0, 0};
  double Q[n_slots][n_slots] = {};

  void begin_mixture(std::size_t, const MixtureWork&) {
    std::fill(gs, gs + n_slots, 0.0);
    for (auto& row : Q) std::fill(row, row + n_slots, 0.0);
  }
  void record(std::size_t s, double L, const double* u) {
    const Pointwise p = pointwise(pb.spec, L, pb.y[s]);
    f += pb.c[s] * p.rho;
    double v[n_slots];
    for (int q = 0; q < n_slots; ++q) v[q] = u[q] * p.drdL;
    const double a = pb.c[s] * p.psi;
    const double w = pb.c[s] * (p.omega == 1.0 ? 1.0 : pb.spec.outside_weight * p.omega);
    for (int q = 0; q < n_slots; ++q) {
      gs[q] += a * v[q];
      const double wv = w * v[q];
      for (int r = 0; r <= q; ++r) Q[q][r] += wv * v[r];
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
  void end_mixture(std::size_t, const MixtureWork& mw) {
    static const double one = 1.0;
    const int* iq;
    const double* vq;
    std::size_t nq;
    const int* ir;
    const double* vr;
    std::size_t nr;
    for (int q = 0; q < n_slots; ++q) {
      slot_vector(q, mw, iq, vq, nq, &one);
      for (std::size_t a = 0; a < nq; ++a) grad[iq[a]] += gs[q] * vq[a];
      for (int r = 0; r <= q; ++r) {
        const double Qqr = Q[q][r];
        if (Qqr == 0.0) continue;
        slot_vector(r, mw, ir, vr, nr, &one);
        for (std::size_t a = 0; a < nq; ++a) {
          const double x = Qqr * vq[a];
          double* row = B + static_cast<std::size_t>(iq[a]) * P;
          for (std::size_t b = 0; b < nr; ++b) row[ir[b]] += x * vr[b];
          if (r != q) {  // the (r, q) block is the transpose of (q, r)
            for (std::size_t b = 0; b < nr; ++b) B[static_cast<std::size_t>(ir[b]) * P + iq[a]] += x * vr[b];
          }
        }
      }
    }
  }
};

template <bool ParamGrad, class Visitor>
void walk(const FitProblem& pb, const double* theta, Visitor& vis) {
  const detail::CallConstants cc = detail::call_constants(*pb.plan, theta, *pb.rec);
  MixtureWork w(*pb.plan);
  detail::for_each_record<ParamGrad, false>(*pb.plan, theta, *pb.rec, cc, 0, pb.rec->n_mix, w, vis);
}

}  // namespace

FitProblem make_problem(const Plan& plan, const Records& rec, const double* y, const double* weights,
                        bool mean, const ObjectiveSpec& spec) {
  if (rec.k != plan.spec.k) throw std::invalid_argument("H: records and law disagree on the number of domains");
  if (!(spec.delta > 0) || !std::isfinite(spec.delta)) throw std::invalid_argument("delta: must be finite and > 0");
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
  GaussNewtonVisitor v{pb, grad, B, P};
  walk<true>(pb, theta, v);
  return v.f;
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
