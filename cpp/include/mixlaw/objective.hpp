// The fitting objective for one target:
//
//     H(theta) = sum_j c_j rho(r_j),   r_j = L_j - y_j   (or log L_j - log y_j)
//
// with rho = Huber(delta) or r^2/2, and record weights c_j (normalised to sum 1 for the
// paper's mean). Besides value and gradient it assembles the Gauss-Newton matrix
// B = J^T diag(c_j omega_j) J with curvature weights omega_j (exact rho'' or IRLS, see
// ObjectiveSpec); B is built per distinct mixture from a 6x6 slot matrix, so its cost is
// O(records * 36 + mixtures * P^2) instead of O(records * P^2), and the mixtures' matrices
// are expanded into parameter space once per call with the mixtures innermost (vectorised).
// When the exponents are global parameters (every law but `full`) and residuals raw, the
// slot matrix comes from 10 sums over (mixture, model size) segments (FitProblem), the
// curvature sums over in-band records only; on the SlimPajama additive fits (c4, 1,374
// records) one evaluation takes 8.8 us, 2x faster than the per-mixture expansion before.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "mixlaw/law.hpp"
#include "mixlaw/records.hpp"

namespace mixlaw {

enum class LossKind : int { huber = 0, mse = 1 };

struct ObjectiveSpec {
  LossKind loss = LossKind::huber;
  double delta = 1e-3;
  bool log_residual = false;
  // Curvature of the Gauss-Newton matrix for a residual outside the Huber band, as a
  // multiple of the IRLS weight rho'(r)/r: 0 = exact rho''(r) = 0 (default; on the
  // SlimPajama fits most starts then reach the best basin), 1 = IRLS (a majoriser,
  // steadier far from a minimum but converges linearly).
  double outside_weight = 0.0;
};

struct FitProblem {
  const Plan* plan = nullptr;
  const Records* rec = nullptr;
  std::vector<double> y;  // targets in grouped record order
  std::vector<double> c;  // record weights in grouped order
  ObjectiveSpec spec;

  // Segments for the Gauss-Newton fast path: the records of one mixture and one model
  // size (one training run, typically), contiguous in "segment order" (grouped order,
  // stably sorted by model size within each mixture). Within a segment the model-size
  // term is one number, so the 6x6 slot sums reduce to 9 sums over token counts.
  // Built when the law's exponents are global parameters and residuals are raw.
  bool segmented = false;
  std::vector<std::size_t> mix_seg;    // n_mix + 1: segments of mixture m
  std::vector<std::size_t> seg_start;  // n_seg + 1: records of segment g in segment order
  std::vector<std::int32_t> seg_n;     // n_idx of segment g
  std::vector<std::int32_t> sd;        // d_idx per record, segment order
  std::vector<double> sy, sc;          // y and c, segment order
};

// y and weights (nullable: all 1) in original record order; `mean` divides the weights
// by their sum. Throws std::invalid_argument for non-finite or non-positive inputs.
FitProblem make_problem(const Plan& plan, const Records& rec, const double* y, const double* weights,
                        bool mean, const ObjectiveSpec& spec);

// Objective value (may be +inf/NaN where the law is undefined, e.g. log of L <= 0).
double objective_value(const FitProblem& pb, const double* theta);

// Value and gradient (grad: P).
double objective_grad(const FitProblem& pb, const double* theta, double* grad);

// Value, gradient and the Gauss-Newton matrix (B: P x P, row-major, full symmetric). When the
// value is not below `reject` (a trial point the solver will turn down: f >= the current
// objective, or not finite), grad and B are left unspecified and their expansion skipped.
double objective_gauss_newton(const FitProblem& pb, const double* theta, double* grad, double* B,
                              double reject = std::numeric_limits<double>::infinity());

// The Gauss-Newton matrix of one evaluation as an operator, for matrix-free steps (conjugate
// gradients): B = sum_m sum_{q,r} Q_m[q][r] v_q(m) v_r(m)^T is kept factored, as the
// mixtures' 6x6 slot matrices Q_m and the slots' parameter gradients v_q(m) (the sums that
// objective_gauss_newton expands into the dense B), so B x costs O(mixtures * (feature
// parameters + 36)) instead of O(P^2) and forming B O(mixtures * P^2). Filled by
// objective_gauss_newton_operator; owns its buffers (a solver keeps one per point and swaps
// them) and reuses them across evaluations. Valid while the FitProblem's plan lives.
class GaussNewtonOperator;

// Value and gradient as objective_gauss_newton (the same bits), and its B as the operator
// `op`. When the value is not below `reject`, grad and op are left unspecified.
double objective_gauss_newton_operator(const FitProblem& pb, const double* theta, double* grad,
                                       GaussNewtonOperator& op,
                                       double reject = std::numeric_limits<double>::infinity());

class GaussNewtonOperator {
 public:
  std::size_t n_params() const { return static_cast<std::size_t>(P_); }
  // out = B x (out: P, overwritten; must not alias x).
  void apply(const double* x, double* out) const;
  // out = diag(B) (P, overwritten), summed as objective_gauss_newton sums the dense B's.
  void diagonal(double* out) const;

  // (Internal) the per-mixture sums, mixtures innermost: the slot matrices' lower triangles
  // [pair][m], the slot gradient sums [slot][m] and the feature gradients [parameter][m].
  struct Sums {
    std::vector<double> Q, g, v;
  };

 private:
  friend double objective_gauss_newton_operator(const FitProblem&, const double*, double*, GaussNewtonOperator&,
                                                double);

  const Plan* plan_ = nullptr;
  std::size_t n_mix_ = 0;
  int P_ = 0;
  Sums sums_;
};

// Residuals r_j in original record order (for reporting).
void residuals(const FitProblem& pb, const double* theta, double* out);

}  // namespace mixlaw
