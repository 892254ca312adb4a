#include "mixlaw/solver.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <unordered_map>
#include <utility>

#include "mixlaw/random.hpp"

namespace mixlaw {
namespace {

constexpr double inf = std::numeric_limits<double>::infinity();

bool cancelled(const SolverOptions& opt) { return opt.cancel != nullptr && opt.cancel->is_set(); }

// The z <-> theta map and its box. Without ties z has one coordinate per parameter; with
// ties (Box::group) one per group, numbered in order of first appearance (so a group's index
// is at most its first member's: DenseModel reduces its matrix in place on that account).
// The expansion theta = T(z) has the Jacobian D M: M (P x Z) the 0/1 membership matrix,
// D = diag(theta_p for a log-scaled parameter, else 1); the solvers see g_z = M^T D g and
// B_z = M^T D B D M.
struct Space {
  std::size_t P;  // parameters (theta)
  std::size_t Z;  // solver coordinates (z); Z == P without ties
  std::vector<double> zlo, zhi;  // Z
  std::vector<char> logp;        // Z: coordinate moves in log space
  std::vector<int> group;        // P: coordinate of each parameter; empty without ties
  // Ties only: the members of coordinate i are member[member_start[i] .. member_start[i + 1]),
  // ascending (first: member[member_start[i]]).
  std::vector<std::size_t> member_start, member;

  explicit Space(const Box& box) : P(box.lo.size()), Z(P) {
    if (!box.group.empty()) number_groups(box.group);
    zlo.resize(Z);
    zhi.resize(Z);
    logp.resize(Z);
    for (std::size_t i = 0; i < Z; ++i) {
      const std::size_t p = tied() ? first(i) : i;
      logp[i] = box.log_scale[p];
      if (logp[i]) {
        // exp(z) must stay finite and non-zero: |z| <= 700 (about 1e304).
        zlo[i] = box.lo[p] > 0 ? std::max(std::log(box.lo[p]), -700.0) : -700.0;
        zhi[i] = std::min(std::log(box.hi[p]), 700.0);
      } else {
        zlo[i] = box.lo[p];
        zhi[i] = box.hi[p];
      }
    }
  }
  bool tied() const { return !group.empty(); }
  std::size_t first(std::size_t i) const { return member[member_start[i]]; }
  std::size_t size(std::size_t i) const { return member_start[i + 1] - member_start[i]; }
  // Whether parameter p (not coordinate) is log-scaled.
  bool log_param(std::size_t p) const { return logp[tied() ? static_cast<std::size_t>(group[p]) : p]; }
  // A group's value is its first member's (the start of a tied group: its first member's draw).
  void to_z(const double* theta, double* z) const {
    for (std::size_t i = 0; i < Z; ++i) {
      const double t = theta[tied() ? first(i) : i];
      double v = logp[i] ? (t > 0 ? std::log(t) : zlo[i]) : t;
      if (logp[i] && !std::isfinite(v)) v = -700.0;  // theta == 0 with lo == 0: start very small
      z[i] = std::min(std::max(v, zlo[i]), zhi[i]);
    }
  }
  // Every member of a group gets the same bits.
  void to_theta(const double* z, double* theta) const {
    if (!tied()) {
      for (std::size_t p = 0; p < P; ++p) theta[p] = logp[p] ? std::exp(z[p]) : z[p];
      return;
    }
    for (std::size_t p = 0; p < P; ++p) {
      const auto i = static_cast<std::size_t>(group[p]);
      theta[p] = logp[i] ? std::exp(z[i]) : z[i];
    }
  }
  // d theta_p / d z of each parameter (P entries): theta_p for a log-scaled one, else 1.
  void chain_factors(const double* theta, double* d) const {
    for (std::size_t p = 0; p < P; ++p) d[p] = log_param(p) ? theta[p] : 1.0;
  }
  // g = M^T D gfull (Z entries) from the parameter gradient gfull (P entries); without ties
  // g may be gfull itself (scaled in place).
  void chain_grad(const double* theta, const double* gfull, double* g) const {
    if (!tied()) {
      for (std::size_t p = 0; p < P; ++p) g[p] = logp[p] ? gfull[p] * theta[p] : gfull[p];
      return;
    }
    std::fill(g, g + Z, 0.0);
    for (std::size_t p = 0; p < P; ++p) {
      const auto i = static_cast<std::size_t>(group[p]);
      g[i] += logp[i] ? gfull[p] * theta[p] : gfull[p];
    }
  }

 private:
  void number_groups(const std::vector<int>& labels) {
    std::unordered_map<int, std::size_t> coordinate;  // label -> coordinate, by first appearance
    std::vector<int> g(P);
    std::vector<std::vector<std::size_t>> members;
    for (std::size_t p = 0; p < P; ++p) {
      const auto [it, fresh] = coordinate.emplace(labels[p], members.size());
      if (fresh) members.emplace_back();
      g[p] = static_cast<int>(it->second);
      members[it->second].push_back(p);
    }
    if (members.size() == P) return;  // every label distinct: no ties
    Z = members.size();
    group = std::move(g);
    member_start.assign(1, 0);
    for (const auto& m : members) {
      member.insert(member.end(), m.begin(), m.end());
      member_start.push_back(member.size());
    }
  }

 public:
  double clip(std::size_t p, double v) const { return std::min(std::max(v, zlo[p]), zhi[p]); }
  // A coordinate is held at its bound when the gradient pushes it outwards.
  bool active(std::size_t p, double z, double g) const {
    return (z <= zlo[p] && g > 0) || (z >= zhi[p] && g < 0);
  }
  // First-order stationarity relative to the objective (SolverOptions::gtol): the largest
  // first-order change of f, as a fraction of f, from moving one free coordinate by its unit.
  // The unit is 1 in z for a log-scaled parameter (a factor e) and max(1, |z|) for any other,
  // shortened to sqrt(2 f / B_pp) where the Gauss-Newton curvature B_pp (z coordinates) says
  // that a shorter move already changes f by f: in such stiff coordinates the gradient left
  // at a minimum is set by the rounding of f, not by the distance to the minimum. Coordinates
  // held at a bound count as stationary. A scale coefficient collapsed to ~0 is stationary in
  // z (its gradient there is theta times the parameter-space one) even where raising it
  // would lower f: the fit names it in Fit.at_limit ("~0").
  // f_floor: the objective's rounding level (rounding_floor). The objective is never
  // negative, so a point at or below it is a global minimum to working precision (its
  // gradient is rounding noise): stationarity 0.
  double stationarity(const double* z, const double* g, double f, double f_floor, const double* diagB = nullptr,
                      std::size_t stride = 1) const {
    if (f <= f_floor) return 0.0;
    const double fpos = std::max(f, std::numeric_limits<double>::min());
    double m = 0.0;
    for (std::size_t p = 0; p < Z; ++p) {
      if (active(p, z[p], g[p])) continue;
      double unit = logp[p] ? 1.0 : std::max(1.0, std::fabs(z[p]));
      if (diagB && diagB[p * stride] > 0) unit = std::min(unit, std::sqrt(2.0 * fpos / diagB[p * stride]));
      m = std::max(m, std::fabs(g[p]) * unit);
    }
    return m / fpos;
  }
};

// The objective of residuals that are rounding errors alone (16 ulps of each target, or
// of 1 for log residuals): below it f is zero to working precision.
double rounding_floor(const FitProblem& pb) {
  constexpr double u = 16.0 * std::numeric_limits<double>::epsilon();
  double s = 0.0;
  for (std::size_t j = 0; j < pb.y.size(); ++j) {
    const double r = u * (pb.spec.log_residual ? 1.0 : std::fabs(pb.y[j]));
    s += pb.c[j] * 0.5 * r * r;
  }
  return s;
}

// In-place Cholesky of the n x n matrix A (row-major); false if not positive definite, or
// as soon as `cancel` (may be null; polled every column) is set: O(n^3) is the dense step's
// longest part (30 ms at n = 605), and Ctrl-C must not wait for it.
bool cholesky(std::vector<double>& A, std::size_t n, const CancelFlag* cancel) {
  for (std::size_t j = 0; j < n; ++j) {
    if (cancel && cancel->is_set()) return false;
    double d = A[j * n + j];
    for (std::size_t k = 0; k < j; ++k) d -= A[j * n + k] * A[j * n + k];
    if (!(d > 0) || !std::isfinite(d)) return false;
    d = std::sqrt(d);
    A[j * n + j] = d;
    for (std::size_t i = j + 1; i < n; ++i) {
      double s = A[i * n + j];
      for (std::size_t k = 0; k < j; ++k) s -= A[i * n + k] * A[j * n + k];
      A[i * n + j] = s / d;
    }
  }
  return true;
}

void cholesky_solve(const std::vector<double>& L, std::size_t n, std::vector<double>& x) {
  for (std::size_t i = 0; i < n; ++i) {
    double s = x[i];
    for (std::size_t k = 0; k < i; ++k) s -= L[i * n + k] * x[k];
    x[i] = s / L[i * n + i];
  }
  for (std::size_t ii = n; ii-- > 0;) {
    double s = x[ii];
    for (std::size_t k = ii + 1; k < n; ++k) s -= L[k * n + ii] * x[k];
    x[ii] = s / L[ii * n + ii];
  }
}

double inf_norm(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// The Gauss-Newton model of the current Levenberg-Marquardt iterate in z coordinates, and the
// damped step on the free coordinates. Two implementations of the same model:
// - DenseModel forms B (P x P, O(n_mix P^2) per evaluation) and factors the damped system
//   (O(P^3)); fastest while P is small.
// - OperatorModel keeps B factored per mixture (GaussNewtonOperator: a product B x costs
//   O(n_mix x feature parameters)) and solves the damped system by conjugate gradients
//   preconditioned with its diagonal; no P x P storage or work.
class DenseModel {
 public:
  explicit DenseModel(const Space& sp) : sp_(&sp), P_(sp.P), Z_(sp.Z), B_(P_ * P_) {}
  double evaluate(const FitProblem& pb, const double* theta, double* grad, double reject = inf) {
    return objective_gauss_newton(pb, theta, grad, B_.data(), reject);
  }
  // B <- D B D for the chain rule d theta / d z = diag(d); with ties B <- M^T D B D M (Z x Z,
  // row-major with stride Z, in place in B's first Z * Z entries: see reduce).
  void chain(const std::vector<double>& d) {
    if (sp_->tied()) {
      reduce(d);
      return;
    }
    for (std::size_t p = 0; p < P_; ++p) {
      double* row = B_.data() + p * P_;
      for (std::size_t q = 0; q < P_; ++q) row[q] *= d[p] * d[q];
    }
  }
  const double* diagonal() const { return B_.data(); }
  std::size_t diagonal_stride() const { return Z_ + 1; }
  // Solves (B_FF + lambda diag(max(B_pp, dmin))) s = rhs over the free coordinates `freev`,
  // in place (rhs: one entry per free coordinate); false when the system is not positive
  // definite to working precision.
  bool solve(const std::vector<std::size_t>& freev, double lambda, double dmin, std::vector<double>& rhs,
             const SolverOptions& opt) {
    const std::size_t nF = freev.size(), n = Z_;
    A_.resize(nF * nF);  // every entry is written below
    if (nF == n) A_.assign(B_.begin(), B_.begin() + static_cast<std::ptrdiff_t>(n * n));  // no bound active
    else
      for (std::size_t a = 0; a < nF; ++a)
        for (std::size_t b = 0; b < nF; ++b) A_[a * nF + b] = B_[freev[a] * n + freev[b]];
    for (std::size_t a = 0; a < nF; ++a) A_[a * nF + a] += lambda * std::max(B_[freev[a] * (n + 1)], dmin);
    if (!cholesky(A_, nF, opt.cancel)) return false;
    cholesky_solve(A_, nF, rhs);
    return true;
  }
  // s^T B s (s: one entry per coordinate).
  double quadratic(const std::vector<double>& s) {
    const std::size_t n = Z_;
    double sBs = 0.0;
    for (std::size_t p = 0; p < n; ++p) {
      if (s[p] == 0.0) continue;
      double row = 0.0;
      for (std::size_t q = 0; q < n; ++q) row += B_[p * n + q] * s[q];
      sBs += s[p] * row;
    }
    return sBs;
  }
  void swap(DenseModel& o) { B_.swap(o.B_); }

 private:
  // B_z = M^T D B D M in place, O(P^2): first each row p's columns are summed over the groups
  // (into the row's first Z entries), then the rows of each group are summed into row i of the
  // Z x Z result at offset i Z. Coordinates are numbered by first appearance, so every member
  // p of group i has p >= i, and the rows still to be read (p >= i + 1, at offset p P >= (i + 1) Z)
  // lie past the rows written so far: no P x P scratch (check_memory counts none).
  void reduce(const std::vector<double>& d) {
    const std::vector<int>& group = sp_->group;
    acc_.resize(Z_);
    for (std::size_t p = 0; p < P_; ++p) {
      double* row = B_.data() + p * P_;
      std::fill(acc_.begin(), acc_.end(), 0.0);
      for (std::size_t q = 0; q < P_; ++q) acc_[static_cast<std::size_t>(group[q])] += d[q] * row[q];
      std::copy(acc_.begin(), acc_.end(), row);
    }
    for (std::size_t i = 0; i < Z_; ++i) {
      std::fill(acc_.begin(), acc_.end(), 0.0);
      for (std::size_t m = sp_->member_start[i]; m < sp_->member_start[i + 1]; ++m) {
        const std::size_t p = sp_->member[m];
        const double* row = B_.data() + p * P_;
        for (std::size_t j = 0; j < Z_; ++j) acc_[j] += d[p] * row[j];
      }
      std::copy(acc_.begin(), acc_.end(), B_.begin() + static_cast<std::ptrdiff_t>(i * Z_));
    }
  }

  const Space* sp_;
  std::size_t P_, Z_;
  std::vector<double> B_, A_, acc_;
};

class OperatorModel {
 public:
  explicit OperatorModel(const Space& sp)
      : sp_(&sp), P_(sp.P), Z_(sp.Z), d_(P_, 1.0), diag_(Z_), u_(P_), w_(Z_), wf_(sp.tied() ? P_ : 0) {}
  double evaluate(const FitProblem& pb, const double* theta, double* grad, double reject = inf) {
    return objective_gauss_newton_operator(pb, theta, grad, op_, reject);
  }
  // With ties the diagonal of B_z = M^T D B D M is, for a group of one member p, d_p^2 B_pp;
  // for a group of several it also holds the cross terms: v^T B v with v = D 1_group (not the
  // sum of the members' diagonals), computed exactly by one operator product per such group,
  // O(mixtures x (P + 36)) each; a conjugate-gradient step costs up to min(cg_max_iter, free
  // coordinates) such products, so a few shared groups add little per iteration, and groups
  // of one member (untied parameters) none.
  void chain(const std::vector<double>& d) {
    d_ = d;
    if (!sp_->tied()) {
      op_.diagonal(diag_.data());
      for (std::size_t p = 0; p < P_; ++p) diag_[p] *= d[p] * d[p];
      return;
    }
    op_.diagonal(wf_.data());
    std::fill(u_.begin(), u_.end(), 0.0);
    for (std::size_t i = 0; i < Z_; ++i) {
      if (sp_->size(i) == 1) {
        const std::size_t p = sp_->first(i);
        diag_[i] = wf_[p] * d[p] * d[p];
        continue;
      }
      const std::size_t* m0 = sp_->member.data() + sp_->member_start[i];
      const std::size_t* m1 = sp_->member.data() + sp_->member_start[i + 1];
      for (const std::size_t* m = m0; m != m1; ++m) u_[*m] = d[*m];
      bv_.resize(P_);
      op_.apply(u_.data(), bv_.data());
      double vBv = 0.0;
      for (const std::size_t* m = m0; m != m1; ++m) {
        vBv += d[*m] * bv_[*m];
        u_[*m] = 0.0;
      }
      diag_[i] = vBv;
    }
  }
  const double* diagonal() const { return diag_.data(); }
  std::size_t diagonal_stride() const { return 1; }
  // Preconditioned conjugate gradients on the damped system over the free coordinates,
  // from 0 (every iterate is a descent direction), to a relative residual of cg_tol or
  // cg_max_iter products; polls the cancel flag every product.
  bool solve(const std::vector<std::size_t>& freev, double lambda, double dmin, std::vector<double>& rhs,
             const SolverOptions& opt) {
    const std::size_t nF = freev.size();
    x_.assign(nF, 0.0);
    r_ = rhs;
    m_.resize(nF);
    for (std::size_t a = 0; a < nF; ++a) {
      const double dp = diag_[freev[a]];
      m_[a] = 1.0 / (dp + lambda * std::max(dp, dmin));
    }
    z_.resize(nF);
    p_.resize(nF);
    q_.resize(nF);
    double rz = 0.0, bb = 0.0;
    for (std::size_t a = 0; a < nF; ++a) {
      z_[a] = m_[a] * r_[a];
      p_[a] = z_[a];
      rz += r_[a] * z_[a];
      bb += r_[a] * r_[a];
    }
    const double stop2 = opt.cg_tol * opt.cg_tol * bb;
    const int max_it = std::max(1, std::min<int>(opt.cg_max_iter, static_cast<int>(nF)));
    for (int it = 0; it < max_it && bb > 0; ++it) {
      if (cancelled(opt)) return false;
      damped_product(freev, lambda, dmin, p_, q_);
      double pq = 0.0;
      for (std::size_t a = 0; a < nF; ++a) pq += p_[a] * q_[a];
      if (!(pq > 0) || !std::isfinite(pq)) break;  // curvature lost to rounding: keep the iterate
      const double alpha = rz / pq;
      double rr = 0.0;
      for (std::size_t a = 0; a < nF; ++a) {
        x_[a] += alpha * p_[a];
        r_[a] -= alpha * q_[a];
        rr += r_[a] * r_[a];
      }
      if (rr <= stop2) break;
      double rz_new = 0.0;
      for (std::size_t a = 0; a < nF; ++a) {
        z_[a] = m_[a] * r_[a];
        rz_new += r_[a] * z_[a];
      }
      const double beta = rz_new / rz;
      rz = rz_new;
      for (std::size_t a = 0; a < nF; ++a) p_[a] = z_[a] + beta * p_[a];
    }
    for (std::size_t a = 0; a < nF; ++a)
      if (!std::isfinite(x_[a])) return false;
    rhs = x_;
    return true;
  }
  double quadratic(const std::vector<double>& s) {
    apply(s.data(), w_.data());
    double sBs = 0.0;
    for (std::size_t p = 0; p < Z_; ++p) sBs += s[p] * w_[p];
    return sBs;
  }
  void swap(OperatorModel& o) {
    std::swap(op_, o.op_);
    d_.swap(o.d_);
    diag_.swap(o.diag_);
  }

 private:
  // out = B_z x (one entry per coordinate): D B D x, or M^T D B D M x with ties.
  void apply(const double* x, double* out) {
    if (!sp_->tied()) {
      for (std::size_t p = 0; p < P_; ++p) u_[p] = d_[p] * x[p];
      op_.apply(u_.data(), out);
      for (std::size_t p = 0; p < P_; ++p) out[p] *= d_[p];
      return;
    }
    const std::vector<int>& group = sp_->group;
    for (std::size_t p = 0; p < P_; ++p) u_[p] = d_[p] * x[group[p]];
    op_.apply(u_.data(), wf_.data());
    std::fill(out, out + Z_, 0.0);
    for (std::size_t p = 0; p < P_; ++p) out[group[p]] += d_[p] * wf_[p];
  }
  // q = (B_FF + lambda diag(max(B_pp, dmin))) v over the free coordinates.
  void damped_product(const std::vector<std::size_t>& freev, double lambda, double dmin,
                      const std::vector<double>& v, std::vector<double>& q) {
    std::fill(full_in().begin(), full_in().end(), 0.0);
    for (std::size_t a = 0; a < freev.size(); ++a) full_in()[freev[a]] = v[a];
    apply(full_in().data(), w_.data());
    for (std::size_t a = 0; a < freev.size(); ++a) {
      const std::size_t p = freev[a];
      q[a] = w_[p] + lambda * std::max(diag_[p], dmin) * v[a];
    }
  }
  std::vector<double>& full_in() {
    in_.resize(Z_);
    return in_;
  }

  const Space* sp_;
  std::size_t P_, Z_;
  GaussNewtonOperator op_;
  // d_, u_, wf_: per parameter; diag_, w_, in_ and the CG vectors: per coordinate.
  std::vector<double> d_, diag_, u_, w_, wf_, bv_, in_, x_, r_, m_, z_, p_, q_;
};

template <class Model>
SolveResult solve_lm(const FitProblem& pb, const Space& sp, const double* theta0, const SolverOptions& opt) {
  const std::size_t P = sp.P, n = sp.Z;  // parameters, coordinates
  SolveResult res;
  std::vector<double> z(n), theta(P), g(n), z_new(n), theta_new(P), step(n), g_new(n);
  // With ties the models write parameter gradients here (gf*, P entries) and chain reduces
  // them into g*; without, they write into g* directly.
  std::vector<double> gf(sp.tied() ? P : 0), gf_new(gf.size()), gf_exact;
  const auto full = [&](std::vector<double>& gz, std::vector<double>& gp) { return sp.tied() ? gp.data() : gz.data(); };
  Model model(sp), model_new(sp);
  const double f_floor = rounding_floor(pb);
  sp.to_z(theta0, z.data());
  sp.to_theta(z.data(), theta.data());
  // The problem with the other curvature outside the Huber band (SolverOptions::max_switches),
  // copied on the first switch.
  FitProblem switched;
  bool have_switched = false;
  const auto other = [&]() -> const FitProblem& {
    if (!have_switched) {
      switched = pb;
      switched.spec.outside_weight = pb.spec.outside_weight == 0.0 ? 1.0 : 0.0;
      have_switched = true;
    }
    return switched;
  };
  const FitProblem* cur = &pb;
  const bool can_switch = pb.spec.loss == LossKind::huber && opt.max_switches > 0;
  int switches = 0, futile = 0, slow_steps = 0, window_steps = 0;
  double best_stat = inf, window_f = inf, window_stat = inf, phase_f = inf, phase_stat = inf;
  std::vector<double> g_exact, dchain(P);
  std::unique_ptr<Model> model_exact;
  // Gradient and model into z coordinates (gradient: from gpar with ties, in place without).
  const auto chain = [&](const std::vector<double>& th, std::vector<double>& grad, const std::vector<double>& gpar,
                         Model& m) {
    sp.chain_factors(th.data(), dchain.data());
    if (sp.tied()) sp.chain_grad(th.data(), gpar.data(), grad.data());
    else
      for (std::size_t p = 0; p < P; ++p) grad[p] *= dchain[p];
    m.chain(dchain);
  };
  double f = model.evaluate(pb, theta.data(), full(g, gf));
  res.nfev = res.njev = 1;
  if (!std::isfinite(f)) {
    res.theta = theta;
    res.f = f;
    res.status = status_not_finite;
    res.stationarity = std::numeric_limits<double>::quiet_NaN();
    return res;
  }
  chain(theta, g, gf, model);
  // Stationarity at the current point, its curvature units from the exact Gauss-Newton
  // matrix (the IRLS one, a majoriser, would shorten them).
  const auto certified_stationarity = [&]() {
    if (cur->spec.outside_weight == 0.0)
      return sp.stationarity(z.data(), g.data(), f, f_floor, model.diagonal(), model.diagonal_stride());
    const FitProblem& exact = pb.spec.outside_weight == 0.0 ? pb : other();
    if (!model_exact) model_exact = std::make_unique<Model>(sp);
    g_exact.resize(n);
    gf_exact.resize(gf.size());
    model_exact->evaluate(exact, theta.data(), full(g_exact, gf_exact));
    ++res.nfev;
    ++res.njev;
    chain(theta, g_exact, gf_exact, *model_exact);
    return sp.stationarity(z.data(), g_exact.data(), f, f_floor, model_exact->diagonal(),
                           model_exact->diagonal_stride());
  };

  double lambda = 1e-3, nu = 2.0;
  double radius = opt.max_step;  // grows while capped steps keep succeeding
  std::vector<std::size_t> freev;
  std::vector<double> rhs;
  res.status = status_max_iter;
  for (res.nit = 0; res.nit < opt.max_iter;) {
    if (cancelled(opt)) {
      res.status = status_cancelled;
      break;
    }
    ++res.nit;
    freev.clear();
    for (std::size_t p = 0; p < n; ++p)
      if (!sp.active(p, z[p], g[p])) freev.push_back(p);
    const std::size_t nF = freev.size();
    double gmax = 0.0;
    for (std::size_t p : freev) gmax = std::max(gmax, std::fabs(g[p]));
    if (nF == 0 || gmax == 0.0) {
      res.status = status_converged;
      break;
    }
    const double* diag = model.diagonal();
    const std::size_t ds = model.diagonal_stride();
    double dmax = 0.0;
    for (std::size_t p : freev) dmax = std::max(dmax, diag[p * ds]);
    const double dmin = dmax > 0 ? 1e-12 * dmax : 1.0;

    bool accepted = false;
    double f_new = f, pred = 0.0;
    while (!accepted && !cancelled(opt)) {
      rhs.resize(nF);
      for (std::size_t a = 0; a < nF; ++a) rhs[a] = -g[freev[a]];
      double shrink = 1.0;
      if (model.solve(freev, lambda, dmin, rhs, opt)) {
        std::fill(step.begin(), step.end(), 0.0);
        z_new = z;
        double longest = 0.0, longest_log = 0.0;
        for (std::size_t a = 0; a < nF; ++a) {
          longest = std::max(longest, std::fabs(rhs[a]));
          if (sp.logp[freev[a]]) longest_log = std::max(longest_log, std::fabs(rhs[a]));
        }
        if (longest > radius) shrink = radius / longest;
        if (longest_log * shrink > opt.max_log_step) shrink = opt.max_log_step / longest_log;
        for (std::size_t a = 0; a < nF; ++a) {
          const std::size_t p = freev[a];
          z_new[p] = sp.clip(p, z[p] + shrink * rhs[a]);
          step[p] = z_new[p] - z[p];
        }
        // Predicted decrease of the quadratic model along the projected step.
        double gs = 0.0;
        for (std::size_t p = 0; p < n; ++p) gs += g[p] * step[p];
        pred = -(gs + 0.5 * model.quadratic(step));
        if (pred > 0) {
          sp.to_theta(z_new.data(), theta_new.data());
          // Most trial steps are accepted, so the trial point gets its gradient and
          // Gauss-Newton model at once: one pass over the data per iteration instead of two
          // (a rejected point, f_new >= f, skips their expansion).
          f_new = model_new.evaluate(*cur, theta_new.data(), full(g_new, gf_new), f);
          ++res.nfev;
          ++res.njev;
          if (std::isfinite(f_new) && f_new < f) {
            const double rho = (f - f_new) / pred;
            lambda *= std::max(1.0 / 3.0, 1.0 - std::pow(2.0 * rho - 1.0, 3));
            lambda = std::max(lambda, 1e-15);
            if (shrink < 1.0 && rho > 0.75) radius = std::min(2.0 * radius, 1400.0);
            nu = 2.0;
            accepted = true;
            break;
          }
        }
      }
      lambda *= nu;
      nu *= 2.0;
      if (lambda > 1e16) break;
    }
    if (cancelled(opt)) {
      res.status = status_cancelled;
      break;
    }
    bool stop = !accepted;  // no decrease possible along the damped step
    if (accepted) {
      const double decrease = f - f_new;
      double znorm = 0.0;
      for (double v : z_new) znorm = std::max(znorm, std::isfinite(v) ? std::fabs(v) : 0.0);
      const double snorm = inf_norm(step);
      z.swap(z_new);
      theta.swap(theta_new);
      g.swap(g_new);
      gf.swap(gf_new);
      model.swap(model_new);
      f = f_new;
      chain(theta, g, gf, model);
      // A step is slow when it barely decreases f (or barely moves) and does not halve the
      // smallest stationarity seen since the last switch either: close to a minimum, steps
      // below ftol that still shrink the gradient are progress.
      const double stat = sp.stationarity(z.data(), g.data(), f, f_floor);
      const bool gradient_progress = stat < 0.5 * best_stat;
      if (gradient_progress) best_stat = stat;
      const bool tiny = (decrease <= opt.ftol * f && pred <= opt.ftol * f) || snorm <= opt.xtol * (1.0 + znorm);
      if (tiny && certified_stationarity() <= opt.gtol) {
        res.status = status_converged;
        break;
      }
      slow_steps = tiny && !gradient_progress ? slow_steps + 1 : 0;
      stop = slow_steps >= opt.stall_steps;
      // A crawl: a whole window of steps that together decrease f by less than
      // crawl_decrease relative, without halving the stationarity either.
      if (++window_steps == opt.crawl_window) {
        stop = stop || (window_f - f <= opt.crawl_decrease * f && !(best_stat < 0.5 * window_stat));
        window_steps = 0;
        window_f = f;
        window_stat = best_stat;
      }
    }
    if (!stop) continue;
    if (certified_stationarity() <= opt.gtol) {
      res.status = status_converged;
      break;
    }
    // A phase (the steps since the last switch) made progress when it decreased f by more
    // than ftol or halved the stationarity.
    const bool progress = phase_f - f > opt.ftol * f || best_stat < 0.5 * phase_stat;
    futile = progress ? 0 : futile + 1;
    if (!can_switch || futile >= opt.max_switches) {
      res.status = status_stalled;
      break;
    }
    // Stalled short of stationarity: go on with the other curvature from this point.
    ++switches;
    cur = cur == &pb ? &other() : &pb;
    f = model.evaluate(*cur, theta.data(), full(g, gf));
    ++res.nfev;
    ++res.njev;
    chain(theta, g, gf, model);
    lambda = 1e-3;
    nu = 2.0;
    slow_steps = 0;
    phase_f = f;
    phase_stat = std::min(phase_stat, best_stat);
    best_stat = inf;
    window_steps = 0;
    window_f = window_stat = inf;
  }
  res.theta = theta;
  res.f = f;
  res.stationarity =
      res.status == status_cancelled ? sp.stationarity(z.data(), g.data(), f, f_floor) : certified_stationarity();
  return res;
}

// Projected L-BFGS: two-loop direction on the free variables, projected Armijo search.
SolveResult solve_lbfgs(const FitProblem& pb, const Space& sp, const double* theta0, const SolverOptions& opt) {
  const std::size_t P = sp.Z;  // coordinates (the parameters: sp.P)
  SolveResult res;
  std::vector<double> z(P), theta(sp.P), g(P), d(P), z_new(P), theta_new(sp.P), g_new(P);
  std::vector<double> gf(sp.tied() ? sp.P : 0);  // the parameter gradient with ties
  double* const gpar = sp.tied() ? gf.data() : nullptr;
  const double f_floor = rounding_floor(pb);
  sp.to_z(theta0, z.data());
  sp.to_theta(z.data(), theta.data());
  double f = objective_grad(pb, theta.data(), gpar ? gpar : g.data());
  sp.chain_grad(theta.data(), gpar ? gpar : g.data(), g.data());
  res.nfev = res.njev = 1;
  if (!std::isfinite(f)) {
    res.theta = theta;
    res.f = f;
    res.status = status_not_finite;
    res.stationarity = std::numeric_limits<double>::quiet_NaN();
    return res;
  }
  const int m = std::max(1, opt.history);
  std::vector<std::vector<double>> S, Y;
  std::vector<double> rho_hist, alpha(static_cast<std::size_t>(m));
  std::vector<char> freem(P);
  res.status = status_max_iter;
  for (res.nit = 0; res.nit < opt.max_iter;) {
    if (cancelled(opt)) {
      res.status = status_cancelled;
      break;
    }
    ++res.nit;
    double gmax = 0.0;
    for (std::size_t p = 0; p < P; ++p) {
      freem[p] = !sp.active(p, z[p], g[p]);
      if (freem[p]) gmax = std::max(gmax, std::fabs(g[p]));
    }
    if (gmax == 0.0) {
      res.status = status_converged;
      break;
    }
    // Two-loop recursion restricted to the free variables.
    for (std::size_t p = 0; p < P; ++p) d[p] = freem[p] ? -g[p] : 0.0;
    const std::size_t h = S.size();
    for (std::size_t i = h; i-- > 0;) {
      double a = 0.0;
      for (std::size_t p = 0; p < P; ++p) a += S[i][p] * d[p];
      a *= rho_hist[i];
      alpha[i] = a;
      for (std::size_t p = 0; p < P; ++p) d[p] -= a * (freem[p] ? Y[i][p] : 0.0);
    }
    if (h > 0) {
      double yy = 0.0, sy = 0.0;
      for (std::size_t p = 0; p < P; ++p) {
        yy += Y[h - 1][p] * Y[h - 1][p];
        sy += S[h - 1][p] * Y[h - 1][p];
      }
      const double gamma = sy / yy;
      for (double& v : d) v *= gamma;
    }
    for (std::size_t i = 0; i < h; ++i) {
      double b = 0.0;
      for (std::size_t p = 0; p < P; ++p) b += (freem[p] ? Y[i][p] : 0.0) * d[p];
      b *= rho_hist[i];
      for (std::size_t p = 0; p < P; ++p) d[p] += (freem[p] ? S[i][p] : 0.0) * (alpha[i] - b);
    }
    double gd = 0.0;
    for (std::size_t p = 0; p < P; ++p) {
      if (!freem[p]) d[p] = 0.0;
      gd += g[p] * d[p];
    }
    if (!(gd < 0)) {  // not a descent direction: restart from steepest descent
      S.clear();
      Y.clear();
      rho_hist.clear();
      gd = 0.0;
      for (std::size_t p = 0; p < P; ++p) {
        d[p] = freem[p] ? -g[p] : 0.0;
        gd += g[p] * d[p];
      }
    }
    if (S.empty()) {  // first step: keep it modest in z
      const double dn = inf_norm(d);
      if (dn > 1.0)
        for (double& v : d) v /= dn;
    }
    // Projected backtracking (Armijo on the projected step).
    double t = 1.0, f_new = f;
    bool ok = false;
    for (int ls = 0; ls < 60; ++ls) {
      double gs = 0.0;
      for (std::size_t p = 0; p < P; ++p) {
        z_new[p] = sp.clip(p, z[p] + t * d[p]);
        gs += g[p] * (z_new[p] - z[p]);
      }
      sp.to_theta(z_new.data(), theta_new.data());
      f_new = objective_value(pb, theta_new.data());
      ++res.nfev;
      if (std::isfinite(f_new) && f_new <= f + 1e-4 * gs && f_new < f) {
        ok = true;
        break;
      }
      t *= 0.5;
    }
    if (!ok) {
      res.status = status_stalled;  // classified by stationarity below
      break;
    }
    f_new = objective_grad(pb, theta_new.data(), gpar ? gpar : g_new.data());
    sp.chain_grad(theta_new.data(), gpar ? gpar : g_new.data(), g_new.data());
    ++res.njev;
    std::vector<double> s(P), y(P);
    double sy = 0.0, yy = 0.0, snorm = 0.0, znorm = 0.0;
    for (std::size_t p = 0; p < P; ++p) {
      s[p] = z_new[p] - z[p];
      y[p] = g_new[p] - g[p];
      sy += s[p] * y[p];
      yy += y[p] * y[p];
      snorm = std::max(snorm, std::fabs(s[p]));
      if (std::isfinite(z_new[p])) znorm = std::max(znorm, std::fabs(z_new[p]));
    }
    if (sy > 1e-12 * yy && sy > 0) {
      if (static_cast<int>(S.size()) == m) {
        S.erase(S.begin());
        Y.erase(Y.begin());
        rho_hist.erase(rho_hist.begin());
      }
      S.push_back(std::move(s));
      Y.push_back(std::move(y));
      rho_hist.push_back(1.0 / sy);
    }
    const double decrease = f - f_new;
    z.swap(z_new);
    theta.swap(theta_new);
    g.swap(g_new);
    f = f_new;
    if (decrease <= opt.ftol * f || snorm <= opt.xtol * (1.0 + znorm)) {
      res.status = status_stalled;  // classified by stationarity below
      break;
    }
  }
  res.theta = theta;
  res.f = f;
  res.stationarity = sp.stationarity(z.data(), g.data(), f, f_floor);
  if (res.status == status_stalled && res.stationarity <= opt.gtol) res.status = status_converged;
  return res;
}

}  // namespace

const char* status_message(int status) {
  switch (status) {
    case status_collapsed: return "collapsed: stationary in log coordinates, but a scale coefficient was driven to ~0 although raising it lowers the objective; not a minimum";
    case status_stalled: return "stalled: the steps stopped decreasing the objective before it was stationary (projected gradient above gtol); not a minimum";
    case status_screened: return "screened out: stopped after the screening iterations, its objective then above screen_ratio times the best start's";
    case status_cancelled: return "cancelled (interrupted before or while this start ran)";
    case status_not_finite: return "objective is not finite at the start point";
    case status_max_iter: return "maximum number of iterations reached before the objective was stationary";
    case status_converged: return "converged: first-order stationary (projected gradient, relative to the objective, below gtol)";
  }
  return "unknown status";
}

bool uses_dense_steps(const SolverOptions& opt, std::size_t P) {
  if (opt.linear_solver != LinearSolver::automatic) return opt.linear_solver == LinearSolver::dense;
  return P <= static_cast<std::size_t>(std::max(opt.dense_max_params, 0));
}

SolveResult local_solve(const FitProblem& pb, const Box& box, const double* theta0, const SolverOptions& opt) {
  const Space sp(box);
  if (opt.method == Method::lbfgsb) return solve_lbfgs(pb, sp, theta0, opt);
  // Data-constrained laws have no matrix-free Gauss-Newton operator (objective.hpp).
  return uses_dense_steps(opt, sp.P) || pb.plan->spec.repetition ? solve_lm<DenseModel>(pb, sp, theta0, opt)
                                                                 : solve_lm<OperatorModel>(pb, sp, theta0, opt);
}

SolveResult global_solve(const FitProblem& pb, const Box& box, const double* theta0, const SolverOptions& opt,
                         std::uint64_t seed) {
  return basin_hop(pb, box, local_solve(pb, box, theta0, opt), opt, seed);
}

SolveResult basin_hop(const FitProblem& pb, const Box& box, SolveResult first, const SolverOptions& opt,
                      std::uint64_t seed) {
  SolveResult best = std::move(first);
  if (opt.hops <= 0 || !std::isfinite(best.f)) return best;
  const Space sp(box);
  Rng rng(seed);
  SolveResult current = best;
  int nit = best.nit, nfev = best.nfev, njev = best.njev;
  std::vector<double> z(sp.Z), trial(sp.P);
  for (int hop = 0; hop < opt.hops; ++hop) {
    if (cancelled(opt)) {
      best.status = status_cancelled;
      break;
    }
    sp.to_z(current.theta.data(), z.data());
    for (std::size_t p = 0; p < sp.Z; ++p) z[p] = sp.clip(p, z[p] + opt.hop_step * (2.0 * rng.uniform() - 1.0));
    sp.to_theta(z.data(), trial.data());
    SolveResult r = local_solve(pb, box, trial.data(), opt);
    nit += r.nit;
    nfev += r.nfev;
    njev += r.njev;
    if (!std::isfinite(r.f)) continue;
    const double u = rng.uniform();  // drawn every hop so the sequence never depends on outcomes
    const double scale = opt.hop_temperature * std::max(current.f, 1e-300);
    if (r.f < current.f || u < std::exp(-(r.f - current.f) / scale)) current = r;
    if (r.f < best.f) best = r;
  }
  best.nit = nit;
  best.nfev = nfev;
  best.njev = njev;
  return best;
}

}  // namespace mixlaw
