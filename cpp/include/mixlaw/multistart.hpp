// Many independent fits in one parallel call: every (problem, start) pair is a unit of
// work for the OpenMP loop. Each unit is sequential and writes its own slot, so results
// never depend on the number of threads; the caller picks the best start per problem in
// index order.
#pragma once

#include <cstdint>
#include <vector>

#include "mixlaw/parallel.hpp"
#include "mixlaw/solver.hpp"

namespace mixlaw {

struct FitTask {
  const FitProblem* problem = nullptr;
  Box box;
  const double* starts = nullptr;  // n_starts x P, parameter space
  int n_starts = 0;
  std::uint64_t seed = 0;  // basin-hopping stream of start s: mix_seed(seed, s)
};

// results[t][s] for task t and start s.
std::vector<std::vector<SolveResult>> fit_tasks(const std::vector<FitTask>& tasks, const SolverOptions& opt,
                                                int threads, const CancelFlag* cancel = nullptr);

}  // namespace mixlaw
