// Bounded local solvers for one fitting problem, and basin hopping around them.
//
// Both solvers work in an internal space z where positive scale parameters are
// log-transformed (theta = exp(z)); bounds become a box in z. Tied parameters (Box::group)
// share one z coordinate: theta = expand(z), gradients and Gauss-Newton models are reduced
// by the chain rule, and bounds, active sets, stopping rules and basin hopping all work on
// the reduced z. Stopping rules use
// relative decreases, relative steps and the gradient relative to the objective only, so
// scaling the objective (mean vs sum) never changes where a solver stops.
//
// - "lm": projected Levenberg-Marquardt on the Gauss-Newton model of the Huber objective
//   (the default: on these problems plain quasi-Newton converges slowly and stalls in the
//   Huber kinks).
// - "lbfgsb": projected L-BFGS with an active set and a projected Armijo line search.
#pragma once

#include <cstdint>
#include <vector>

#include "mixlaw/objective.hpp"
#include "mixlaw/parallel.hpp"

namespace mixlaw {

enum class Method : int { lm = 0, lbfgsb = 1 };
enum class LinearSolver : int { automatic = 0, dense = 1, matrix_free = 2 };

struct SolverOptions {
  Method method = Method::lm;
  int max_iter = 1000;
  double ftol = 1e-10;  // a step "stops decreasing" f when its relative decrease is below ftol
  double xtol = 1e-10;  // ... or when it is below xtol * (1 + |z|)
  // A start is converged only when it is first-order stationary: Space::stationarity (the
  // largest first-order change of f, relative to f, from a unit move of one free coordinate
  // in the solver's coordinates) at most gtol; the default lies between what the solver
  // reaches at true minima and where stalled starts stop (bench/README.md, many domains).
  double gtol = 1e-6;
  // Consecutive steps below ftol (or xtol) before the solver counts itself stalled. Steps
  // below ftol are normal close to a minimum (the Huber kinks make convergence linear), so
  // one such step only stops the solve when it is already stationary.
  int stall_steps = 10;
  // ... and so does a window of crawl_window steps that together decrease f by less than
  // crawl_decrease (relative) without halving the stationarity.
  int crawl_window = 25;
  double crawl_decrease = 1e-3;
  // When Levenberg-Marquardt stalls short of stationarity with the Huber loss, it switches the
  // curvature of the residuals outside the Huber band (exact 0 <-> IRLS) and goes on. Far from
  // a fit with many domains almost no residual lies inside the band, the exact Gauss-Newton
  // matrix has almost no curvature and the damped steps shrink to nothing; the IRLS majoriser
  // keeps making progress there, and the exact curvature then converges fast once the band
  // is populated. The start is stalled after max_switches switches in a row without progress.
  int max_switches = 2;
  // How a Levenberg-Marquardt step is solved: dense (form the P x P Gauss-Newton matrix and
  // factor it, O(n_mix P^2 + P^3) per iteration), matrix-free (conjugate gradients on
  // products with the per-mixture factors, O(n_mix x feature parameters) per product), or
  // automatic: dense up to dense_max_params parameters (bench/README.md, many domains).
  LinearSolver linear_solver = LinearSolver::automatic;
  int dense_max_params = 100;
  double cg_tol = 1e-6;   // relative residual of the damped system
  int cg_max_iter = 250;  // products per step (at most the number of free parameters)
  int history = 10;     // L-BFGS memory
  // Largest change of any z coordinate (log of a positive parameter, else the parameter)
  // in one Levenberg-Marquardt step. Far from a fit most residuals lie outside the Huber
  // band, where the exact curvature is zero, so the Gauss-Newton model is nearly flat and
  // would propose huge steps (a factor e^100 on a coefficient); longer steps are shortened
  // along their direction, as a trust region would.
  double max_step = 1.0;
  // Largest change of a log-scaled coordinate in one step, however far the trust radius has
  // grown: steps of e^16 (a factor 9e6 on a coefficient) and more only ever carried starts to
  // degenerate regions (coefficients of 1e24..1e55, where the model is flat and the solve
  // stops far above the best minima: 3-5x on joint-law starts of the SlimPajama targets).
  double max_log_step = 16.0;
  // Basin hopping (the paper's global strategy): `hops` perturb-and-resolve rounds from
  // each start, perturbing every z coordinate uniformly by +-hop_step, accepting a new
  // minimum with the Metropolis rule at a temperature relative to the objective.
  int hops = 0;
  double hop_step = 0.5;
  double hop_temperature = 0.05;
  // Screening of starts (multistart.hpp; off when screen_iter == 0): every start first runs
  // screen_iter local iterations; only the screen_keep best and those within screen_ratio
  // times the best objective at that point are solved to the end.
  int screen_iter = 0;
  double screen_ratio = 1.5;
  int screen_keep = 8;
  // Polled once per iteration and per hop (one relaxed atomic load): when set, the solve
  // stops at once with status_cancelled (Ctrl-C; the caller discards the results).
  const CancelFlag* cancel = nullptr;
};

// How a start ended. Only status_converged is a success.
enum Status : int {
  status_collapsed = -5,  // set by the Python layer (fit.py, _collapsed): see status_message
  status_stalled = -4,  // steps stopped decreasing f before it was stationary
  status_screened = -3,
  status_cancelled = -2,
  status_not_finite = -1,
  status_max_iter = 0,
  status_converged = 1,  // first-order stationary (stationarity <= gtol)
};

const char* status_message(int status);

// Bounds in parameter space; log-scaled parameters need lo >= 0.
struct Box {
  std::vector<double> lo, hi;
  std::vector<char> log_scale;  // move this parameter in log space
  // Parameter tying (empty: none). P labels: parameters with equal labels share one solver
  // coordinate, so they take one common value; the solvers work on one coordinate per label
  // (numbered in order of first appearance), and results keep every parameter (tied ones
  // bitwise equal). Members of a group must have equal lo, hi and log_scale (the caller
  // checks). A start's group value is its first member's. Labels all distinct: the untied
  // solver, bit for bit.
  std::vector<int> group;
};

struct SolveResult {
  std::vector<double> theta;
  double f = 0.0;
  int status = status_max_iter;
  int nit = 0, nfev = 0, njev = 0;
  double stationarity = 0.0;  // at theta (see SolverOptions::gtol)
  double seconds = 0.0;  // wall time of this solve (reporting only; never affects results)
  bool success() const { return status == status_converged; }
};

// Whether Levenberg-Marquardt forms and factors the dense Gauss-Newton matrix for P parameters.
bool uses_dense_steps(const SolverOptions& opt, std::size_t P);

// One local solve from theta0 (clipped into the box first).
SolveResult local_solve(const FitProblem& pb, const Box& box, const double* theta0, const SolverOptions& opt);

// Local solve followed by opt.hops basin-hopping rounds (none when hops == 0); the
// perturbations come from a generator seeded with `seed` only.
SolveResult global_solve(const FitProblem& pb, const Box& box, const double* theta0, const SolverOptions& opt,
                         std::uint64_t seed);

// The basin-hopping rounds of global_solve after its first local solve `first` (returned
// unchanged when hops == 0); iteration and evaluation counts add up.
SolveResult basin_hop(const FitProblem& pb, const Box& box, SolveResult first, const SolverOptions& opt,
                      std::uint64_t seed);

}  // namespace mixlaw
