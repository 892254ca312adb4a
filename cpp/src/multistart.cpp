#include "mixlaw/multistart.hpp"

#include <chrono>

#include "mixlaw/random.hpp"

namespace mixlaw {

std::vector<std::vector<SolveResult>> fit_tasks(const std::vector<FitTask>& tasks, const SolverOptions& opt,
                                                int threads, const CancelFlag* cancel) {
  std::vector<std::vector<SolveResult>> out(tasks.size());
  std::vector<std::pair<std::size_t, int>> units;
  for (std::size_t t = 0; t < tasks.size(); ++t) {
    out[t].resize(static_cast<std::size_t>(tasks[t].n_starts));
    for (int s = 0; s < tasks[t].n_starts; ++s) {
      out[t][static_cast<std::size_t>(s)].status = status_cancelled;
      units.emplace_back(t, s);
    }
  }
  SolverOptions unit_opt = opt;
  unit_opt.cancel = cancel;  // running solves stop at their next iteration
  parallel_for(
      units.size(), threads,
      [&](std::size_t u) {
        const FitTask& task = tasks[units[u].first];
        const int s = units[u].second;
        const std::size_t P = task.box.lo.size();
        const auto t0 = std::chrono::steady_clock::now();
        SolveResult r = global_solve(*task.problem, task.box, task.starts + static_cast<std::size_t>(s) * P, unit_opt,
                                     mix_seed(task.seed, static_cast<std::uint64_t>(s)));
        r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        out[units[u].first][static_cast<std::size_t>(s)] = std::move(r);
      },
      cancel);
  return out;
}

}  // namespace mixlaw
