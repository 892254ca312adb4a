// The fitting objective for one target:
//
//     H(theta) = sum_j c_j rho(r_j),   r_j = L_j - y_j   (or log L_j - log y_j)
//
// with rho = Huber(delta) or r^2/2, and record weights c_j (normalised to sum 1 for the
// paper's mean). Besides value and gradient it assembles the Gauss-Newton matrix
// B = J^T diag(c_j omega_j) J with curvature weights omega_j (exact rho'' or IRLS, see
// ObjectiveSpec); B is built per distinct mixture from a 6x6 slot matrix, so its cost is
// O(records * 36 + mixtures * P^2) instead of O(records * P^2).
#pragma once

#include <cstddef>
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
};

// y and weights (nullable: all 1) in original record order; `mean` divides the weights
// by their sum. Throws std::invalid_argument for non-finite or non-positive inputs.
FitProblem make_problem(const Plan& plan, const Records& rec, const double* y, const double* weights,
                        bool mean, const ObjectiveSpec& spec);

// Objective value (may be +inf/NaN where the law is undefined, e.g. log of L <= 0).
double objective_value(const FitProblem& pb, const double* theta);

// Value and gradient (grad: P).
double objective_grad(const FitProblem& pb, const double* theta, double* grad);

// Value, gradient and the Gauss-Newton matrix (B: P x P, row-major, full symmetric).
double objective_gauss_newton(const FitProblem& pb, const double* theta, double* grad, double* B);

// Residuals r_j in original record order (for reporting).
void residuals(const FitProblem& pb, const double* theta, double* out);

}  // namespace mixlaw
