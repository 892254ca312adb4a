// Optimal mixtures: h*(N, D, w) = argmin_{h in C} F(h),  F(h) = sum_t w_t L_t(N, D, h),
// over the capped simplex C of simplex.hpp, for fitted laws L_t; optionally regularised
// toward a prior mixture p: F(h) + lambda KL(h || p), KL(h || p) = sum_i h_i log(h_i / p_i).
//
// Solvers: exponentiated gradient (mirror descent with the KL geometry, the paper's
// method) and Euclidean projected gradient, both with a non-monotone Armijo line search
// on a Barzilai-Borwein step. Every result carries a Frank-Wolfe certificate
// gap = max_{s in C} grad F(h) . (h - s) >= 0, which is 0 exactly at a stationary point and
// bounds F(h) - min F for convex F. Many independent problems (budgets, weights) are
// solved in one parallel call.
#pragma once

#include <cstdint>
#include <vector>

#include "mixlaw/law.hpp"
#include "mixlaw/parallel.hpp"

namespace mixlaw {

struct FittedLaw {
  const Plan* plan = nullptr;
  const double* theta = nullptr;
};

// Views into arrays the caller keeps alive during the call (a batch of 200,000 problems
// then costs no allocations: freeing 600,000 small vectors alone took 20-35 ms, which a
// Ctrl-C had to wait for).
struct MixtureProblem {
  double N = 0, D = 0;                // raw units
  const double* weights = nullptr;    // one per fitted law, >= 0
  const double* lo = nullptr;         // k each: the feasible set (optimize_mixtures only)
  const double* hi = nullptr;
  // lambda KL(h || prior) joins F when kl > 0; prior: k weights, each > 0 (KL is infinite
  // where p_i = 0 < h_i). Such problems are solved one at a time (never in lanes).
  double kl = 0.0;
  const double* prior = nullptr;
  // Unique tokens per domain (k; +inf unlimited): every law is then evaluated with the
  // data-constrained option (repetition.hpp) at this D, with its own R_D, or `halflife` for
  // a law fitted without the option. Such problems are solved one at a time.
  const double* unique_tokens = nullptr;
  double halflife = 15.4;
};

enum class MixtureMethod : int { mirror = 0, projected = 1 };

struct MixtureOptions {
  MixtureMethod method = MixtureMethod::mirror;
  int max_iter = 20000;
  double gap_tol = 1e-10;  // stop when the Frank-Wolfe gap is below this (loss units)
  int n_starts = 1;        // start 0 is the KL-centre of C (uniform when unconstrained)
  std::uint64_t seed = 0;  // other starts: Dirichlet(1) draws from mix_seed(seed, problem, start)
  int line_search_memory = 10;  // Armijo against the max F of this many last iterates; 1: monotone
  // Mirror descent on the plain simplex solves four problems per vector (the same bits as
  // one at a time); false: one at a time (for tests and benchmarks).
  bool lanes = true;
};

struct MixtureResult {
  std::vector<double> h;
  double f = 0.0;
  double gap = 0.0;
  int nit = 0, nfev = 0;
  int status = 0;  // 1: gap below gap_tol; 4: no further decrease possible; 0: max_iter
  int best_start = 0;
  std::vector<double> per_law;  // each law's loss L_t at h (optimize_mixtures only)
};

// F(h) (with the KL term of pb) and its gradient (grad may be null), and each law's loss
// (per_law may be null; never includes the KL term).
// The solver's evaluator has a fast path for chinchilla, additive, joint and simple laws;
// generic = true forces the generic formulas of evaluate.hpp (for tests: both agree to
// rounding).
double mixture_objective(const std::vector<FittedLaw>& laws, const MixtureProblem& pb, const double* h,
                         double* grad, double* per_law = nullptr, bool generic = false);

// Solves every problem (all starts) in one parallel loop; results[i] is the best start
// of problem i (lowest F, ties to the lower start index). Once `cancel` is set the solvers
// stop within an iteration and the result is empty (never incomplete results).
std::vector<MixtureResult> optimize_mixtures(const std::vector<FittedLaw>& laws,
                                             const std::vector<MixtureProblem>& problems,
                                             const MixtureOptions& opt, int threads,
                                             const CancelFlag* cancel = nullptr);

}  // namespace mixlaw
