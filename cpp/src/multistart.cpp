#include "mixlaw/multistart.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>

#include "mixlaw/random.hpp"

namespace mixlaw {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

bool is_screened(const FitTask& task, const SolverOptions& opt) {
  return opt.screen_iter > 0 && opt.screen_iter < opt.max_iter && task.n_starts > opt.screen_keep;
}

// The starts of one screened task that go on after the screening iterations: the
// screen_keep best (ties: lower index first) and every start within screen_ratio of the
// best objective. Starts whose objective is not finite have ended for good.
std::vector<char> survivors(const std::vector<SolveResult>& rs, const SolverOptions& opt) {
  std::vector<int> order;
  for (int s = 0; s < static_cast<int>(rs.size()); ++s)
    if (!rs[static_cast<std::size_t>(s)].theta.empty() && std::isfinite(rs[static_cast<std::size_t>(s)].f))
      order.push_back(s);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return rs[static_cast<std::size_t>(a)].f < rs[static_cast<std::size_t>(b)].f;
  });
  std::vector<char> keep(rs.size(), 0);
  if (order.empty()) return keep;
  const double limit = opt.screen_ratio * rs[static_cast<std::size_t>(order[0])].f;
  for (std::size_t rank = 0; rank < order.size(); ++rank) {
    const auto s = static_cast<std::size_t>(order[rank]);
    keep[s] = rank < static_cast<std::size_t>(opt.screen_keep) || rs[s].f <= limit;
  }
  return keep;
}

}  // namespace

std::vector<std::vector<SolveResult>> fit_tasks(const std::vector<FitTask>& tasks, const SolverOptions& opt,
                                                int threads, const CancelFlag* cancel, ProgressCounter* progress) {
  const auto finished = [progress](std::size_t n) {
    if (progress) progress->add(n);
  };
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
  SolverOptions screen_opt = unit_opt;
  screen_opt.max_iter = opt.screen_iter;

  // Phase 1: every start; those of screened tasks for screen_iter iterations only.
  parallel_for(
      units.size(), threads,
      [&](std::size_t u) {
        const FitTask& task = tasks[units[u].first];
        const int s = units[u].second;
        const double* theta0 = task.starts + static_cast<std::size_t>(s) * task.box.lo.size();
        const auto t0 = Clock::now();
        SolveResult r = is_screened(task, opt)
                            ? local_solve(*task.problem, task.box, theta0, screen_opt)
                            : global_solve(*task.problem, task.box, theta0, unit_opt,
                                           mix_seed(task.seed, static_cast<std::uint64_t>(s)));
        r.seconds = seconds_since(t0);
        out[units[u].first][static_cast<std::size_t>(s)] = std::move(r);
        if (!is_screened(task, opt)) finished(1);  // a screened start may go on in phase 2
      },
      cancel);
  if (cancel && cancel->is_set()) return out;

  // Phase 2: the survivors of screening go on from where they stopped (then basin hops);
  // the others end with status_screened. The choice depends on phase-1 results only, so
  // it never depends on the thread count.
  units.clear();
  for (std::size_t t = 0; t < tasks.size(); ++t) {
    if (!is_screened(tasks[t], opt)) continue;
    const std::vector<char> keep = survivors(out[t], opt);
    for (int s = 0; s < tasks[t].n_starts; ++s) {
      SolveResult& r = out[t][static_cast<std::size_t>(s)];
      if (r.theta.empty() || !std::isfinite(r.f)) {
        finished(1);  // ended for good
        continue;
      }
      const bool unfinished = r.status == status_max_iter || opt.hops > 0;
      if (unfinished && keep[static_cast<std::size_t>(s)]) {
        units.emplace_back(t, s);
        continue;
      }
      if (unfinished) r.status = status_screened;
      finished(1);  // converged within the screening iterations (no hops to run), or screened out
    }
  }
  parallel_for(
      units.size(), threads,
      [&](std::size_t u) {
        const FitTask& task = tasks[units[u].first];
        const int s = units[u].second;
        SolveResult& slot = out[units[u].first][static_cast<std::size_t>(s)];
        const auto t0 = Clock::now();
        SolveResult r = slot;
        if (slot.status == status_max_iter) {
          SolverOptions rest = unit_opt;
          rest.max_iter = opt.max_iter - slot.nit;
          r = local_solve(*task.problem, task.box, slot.theta.data(), rest);
          r.nit += slot.nit;
          r.nfev += slot.nfev;
          r.njev += slot.njev;
        }
        r = basin_hop(*task.problem, task.box, std::move(r), unit_opt,
                      mix_seed(task.seed, static_cast<std::uint64_t>(s)));
        r.seconds = slot.seconds + seconds_since(t0);
        slot = std::move(r);
        finished(1);
      },
      cancel);
  return out;
}

}  // namespace mixlaw
