// Many independent fits in one parallel call: every (problem, start) pair is a unit of
// work for the OpenMP loop. Each unit is sequential and writes its own slot, so results
// never depend on the number of threads; the caller picks the best start per problem in
// index order.
//
// Screening (opt.screen_iter > 0): most random starts of these fits end in minima well
// above the best, and it shows early. Every start first runs screen_iter local
// iterations; then, per problem, only the screen_keep best starts and those within
// screen_ratio times the best objective go on (their local solve resumes from that point,
// then basin hopping); the others stop with status_screened. The selection depends only on
// the screening results, never on the thread count. The best objective can only be higher
// than without screening if the start that leads to it was not yet among the survivors
// after screen_iter iterations.
#pragma once

#include <cstdint>
#include <vector>

#include "mixlaw/parallel.hpp"
#include "mixlaw/solver.hpp"

namespace mixlaw {

struct FitTask {
  const FitProblem* problem = nullptr;
  Box box;  // bounds, log scaling and ties (Box::group) of the problem's parameters
  const double* starts = nullptr;  // n_starts x P, parameter space
  int n_starts = 0;
  std::uint64_t seed = 0;  // basin-hopping stream of start s: mix_seed(seed, s)
};

// results[t][s] for task t and start s. `progress` (may be null) counts the starts whose
// result is final, up to the total number of starts.
std::vector<std::vector<SolveResult>> fit_tasks(const std::vector<FitTask>& tasks, const SolverOptions& opt,
                                                int threads, const CancelFlag* cancel = nullptr,
                                                ProgressCounter* progress = nullptr);

}  // namespace mixlaw
