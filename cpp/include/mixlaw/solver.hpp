// Bounded local solvers for one fitting problem, and basin hopping around them.
//
// Both solvers work in an internal space z where positive scale parameters are
// log-transformed (theta = exp(z)); bounds become a box in z. Stopping rules use
// relative decreases and relative steps only, so scaling the objective (mean vs sum)
// never changes where a solver stops.
//
// - "lm": projected Levenberg-Marquardt on the IRLS Gauss-Newton model of the Huber
//   objective (the default: on these problems plain quasi-Newton converges slowly and
//   stalls in the Huber kinks).
// - "lbfgsb": projected L-BFGS with an active set and a projected Armijo line search.
#pragma once

#include <cstdint>
#include <vector>

#include "mixlaw/objective.hpp"
#include "mixlaw/parallel.hpp"

namespace mixlaw {

enum class Method : int { lm = 0, lbfgsb = 1 };

struct SolverOptions {
  Method method = Method::lm;
  int max_iter = 1000;
  double ftol = 1e-10;  // stop when the relative decrease of one step is below ftol
  double xtol = 1e-10;  // stop when the step is below xtol * (1 + |z|)
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

enum Status : int {
  status_screened = -3,
  status_cancelled = -2,
  status_not_finite = -1,
  status_max_iter = 0,
  status_ftol = 1,
  status_xtol = 2,
  status_gtol = 3,
  status_no_decrease = 4,
};

const char* status_message(int status);

// Bounds in parameter space; log-scaled parameters need lo >= 0.
struct Box {
  std::vector<double> lo, hi;
  std::vector<char> log_scale;  // move this parameter in log space
};

struct SolveResult {
  std::vector<double> theta;
  double f = 0.0;
  int status = status_max_iter;
  int nit = 0, nfev = 0, njev = 0;
  double seconds = 0.0;  // wall time of this solve (reporting only; never affects results)
  bool success() const { return status > 0; }
};

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
