#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cmath>

#include "common.hpp"
#include "mixlaw/multistart.hpp"
#include "mixlaw/objective.hpp"

namespace mixlaw::bind {
namespace {

ObjectiveSpec objective_spec(const std::string& loss, double delta, const std::string& residual,
                             const std::string& curvature = "exact") {
  ObjectiveSpec spec;
  if (loss == "huber") spec.loss = LossKind::huber;
  else if (loss == "mse") spec.loss = LossKind::mse;
  else fail("loss: unknown loss '" + loss + "' (expected 'huber' or 'mse')");
  if (!(delta > 0) || !std::isfinite(delta)) fail("delta: must be finite and > 0");
  spec.delta = delta;
  if (residual == "raw") spec.log_residual = false;
  else if (residual == "log") spec.log_residual = true;
  else fail("residual: unknown residual '" + residual + "' (expected 'raw' or 'log')");
  if (curvature == "exact") spec.outside_weight = 0.0;
  else if (curvature == "irls") spec.outside_weight = 1.0;
  else fail("curvature: unknown curvature '" + curvature + "' (expected 'exact' or 'irls')");
  return spec;
}

// A problem together with the arrays it points into (kept alive while the core runs).
struct HeldProblem {
  darray y, w;
  FitProblem problem;
};

HeldProblem hold_problem(const Plan& plan, const Records& rec, const py::handle& y, const py::handle& w, bool mean,
                         const ObjectiveSpec& spec) {
  HeldProblem h;
  h.y = as_darray(y, "y");
  require_ndim(h.y, 1, "y");
  if (static_cast<std::size_t>(h.y.shape(0)) != rec.n)
    fail("y: expected " + std::to_string(rec.n) + " values, got " + std::to_string(h.y.shape(0)));
  const double* wp = nullptr;
  if (!w.is_none()) {
    h.w = as_darray(w, "weights");
    require_ndim(h.w, 1, "weights");
    if (static_cast<std::size_t>(h.w.shape(0)) != rec.n)
      fail("weights: expected " + std::to_string(rec.n) + " values, got " + std::to_string(h.w.shape(0)));
    wp = h.w.data();
  }
  if (rec.k != plan.spec.k) fail("records: have " + std::to_string(rec.k) + " domains, the law has " + std::to_string(plan.spec.k));
  h.problem = make_problem(plan, rec, h.y.data(), wp, mean, spec);
  return h;
}

darray vector_arg(const py::handle& obj, std::size_t n, const char* name) {
  darray a = as_darray(obj, name);
  require_ndim(a, 1, name);
  if (static_cast<std::size_t>(a.shape(0)) != n)
    fail(std::string(name) + ": expected " + std::to_string(n) + " values, got " + std::to_string(a.shape(0)));
  return a;
}

// Refuses, before any solve allocates, a call whose solver work would not fit in memory. Each
// running start holds, with dense steps, five P x P matrices (current and trial Gauss-Newton
// matrices, the damped system, the exact-curvature matrix) and the per-mixture sums of one
// evaluation; with matrix-free steps three sets of per-mixture sums (current, trial, exact
// curvature: mixtures x (P + 34) values each); data-constrained laws also a records x P
// Jacobian. At most `threads` starts run at once. The limit is 3/4 of physical memory.
void check_memory(const std::vector<FitTask>& tasks, int threads, const SolverOptions& opt) {
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  const double pages = static_cast<double>(sysconf(_SC_PHYS_PAGES));
  const double limit = page > 0 && pages > 0 ? 0.75 * page * pages : 16.0 * (1ull << 30);
  const int nt = resolve_threads(threads);
  double per_start = 0.0;
  std::size_t units = 0, P_max = 0;
  bool dense = false, repeated = false;
  for (const FitTask& t : tasks) {
    const std::size_t Pn = t.box.lo.size();
    const double P = static_cast<double>(Pn), n_mix = static_cast<double>(t.problem->rec->n_mix);
    // Data-constrained laws: dense steps always, and each evaluation holds the full Jacobian
    // and the records at their effective mixtures (repetition.hpp).
    const bool rep = t.problem->plan->spec.repetition;
    const bool d = opt.method == Method::lm && (uses_dense_steps(opt, Pn) || rep);
    double bytes = opt.method == Method::lbfgsb ? 8.0 * (2.0 * opt.history + 10.0) * P
                   : d ? 8.0 * (5.0 * P * P + n_mix * (P + 28.0))
                       : 8.0 * (3.0 * n_mix * (P + 34.0) + 30.0 * P);
    if (rep) bytes += 8.0 * static_cast<double>(t.problem->rec->n) * (P + 4.0 * (t.problem->rec->k + 1.0));
    if (bytes > per_start) {
      per_start = bytes;
      P_max = Pn;
      dense = d;
      repeated = rep;
    }
    units += static_cast<std::size_t>(std::max(t.n_starts, 0));
  }
  // Upper estimate: the largest problem's starts run together.
  const std::size_t running = std::min<std::size_t>(static_cast<std::size_t>(std::max(nt, 1)), units);
  const double need = static_cast<double>(running) * per_start;
  if (need > limit) {
    const double gib = 1024.0 * 1024.0 * 1024.0;
    char msg[600];
    std::snprintf(msg, sizeof msg,
                  "starts: the %s solve needs about %.3g GiB per running start (%zu parameters) and %zu running at "
                  "once would need %.3g GiB, more than the limit of %.3g GiB (3/4 of this machine's memory); use "
                  "fewer threads%s, or a law with fewer parameters or fewer mixtures",
                  dense ? "dense Levenberg-Marquardt" : (opt.method == Method::lbfgsb ? "L-BFGS" : "matrix-free Levenberg-Marquardt"),
                  per_start / gib, P_max, running, need / gib, limit / gib,
                  dense && !repeated ? ", linear_solver='cg'" : "");
    fail(msg);
  }
}

}  // namespace

void bind_fit(py::module_& m) {
  m.def(
      "objective",
      [](const Plan& plan, const Records& rec, const py::object& y, const py::object& weights,
         const py::object& params, const std::string& loss, double delta, const std::string& residual, bool mean,
         bool gauss_newton, const std::string& curvature, const py::object& product) {
        const ObjectiveSpec spec = objective_spec(loss, delta, residual, curvature);
        HeldProblem h = hold_problem(plan, rec, y, weights, mean, spec);
        darray t = vector_arg(params, static_cast<std::size_t>(plan.n_params), "params");
        const auto P = static_cast<py::ssize_t>(plan.n_params);
        darray g(P);
        if (!product.is_none()) {
          if (gauss_newton) fail("product: give either product or gauss_newton=True, not both");
          darray x = vector_arg(product, static_cast<std::size_t>(P), "product");
          darray Bx(P), diag(P);
          thread_local GaussNewtonOperator op;  // reused across calls, as by a solver: tests cover the reuse
          const double f = objective_gauss_newton_operator(h.problem, t.data(), g.mutable_data(), op);
          op.apply(x.data(), Bx.mutable_data());
          op.diagonal(diag.mutable_data());
          return py::tuple(py::make_tuple(f, g, Bx, diag));
        }
        if (gauss_newton) {
          darray B(std::vector<py::ssize_t>{P, P});
          const double f = objective_gauss_newton(h.problem, t.data(), g.mutable_data(), B.mutable_data());
          return py::tuple(py::make_tuple(f, g, B));
        }
        const double f = objective_grad(h.problem, t.data(), g.mutable_data());
        return py::tuple(py::make_tuple(f, g));
      },
      py::arg("law"), py::arg("records"), py::arg("y"), py::arg("weights"), py::arg("params"),
      py::arg("loss") = "huber", py::arg("delta") = 1e-3, py::arg("residual") = "raw", py::arg("mean") = true,
      py::arg("gauss_newton") = false, py::arg("curvature") = "exact", py::arg("product") = py::none(),
      "Objective value and gradient (and the Gauss-Newton matrix B) for one target. With product=x:\n"
      "(f, g, B x, diag(B)) from the matrix-free operator.");

  m.def(
      "fit_many",
      [](const py::list& problems, const py::list& starts, const py::list& lower, const py::list& upper,
         const py::list& seeds, const std::string& loss, double delta, const std::string& residual, bool mean,
         const std::string& curvature, const std::string& method, const std::string& linear_solver, int max_iter,
         double ftol, double xtol, double gtol, double max_step, int hops, double hop_step,
         double hop_temperature, int screen_iter, double screen_ratio, int screen_keep, const py::object& threads,
         const py::object& tie, const py::object& progress) {
        if (!progress.is_none() && !PyCallable_Check(progress.ptr()))
          fail("progress: expected None or a callable progress(done, total)");
        const int nt = threads_arg(threads);
        const ObjectiveSpec spec = objective_spec(loss, delta, residual, curvature);
        SolverOptions opt;
        if (method == "lm") opt.method = Method::lm;
        else if (method == "lbfgsb") opt.method = Method::lbfgsb;
        else fail("method: unknown method '" + method + "' (expected 'lm' or 'lbfgsb')");
        if (linear_solver == "auto") opt.linear_solver = LinearSolver::automatic;
        else if (linear_solver == "dense") opt.linear_solver = LinearSolver::dense;
        else if (linear_solver == "cg") opt.linear_solver = LinearSolver::matrix_free;
        else fail("linear_solver: unknown linear solver '" + linear_solver + "' (expected 'auto', 'dense' or 'cg')");
        if (max_iter < 1) fail("max_iter: must be >= 1");
        if (!(ftol >= 0) || !(xtol >= 0)) fail("ftol, xtol: must be >= 0");
        if (!(gtol > 0) || !std::isfinite(gtol)) fail("gtol: must be finite and > 0");
        opt.gtol = gtol;
        if (hops < 0) fail("hops: must be >= 0");
        if (!(hop_step > 0) || !(hop_temperature > 0)) fail("hop_step, hop_temperature: must be > 0");
        opt.max_iter = max_iter;
        opt.ftol = ftol;
        opt.xtol = xtol;
        if (!(max_step > 0) || !std::isfinite(max_step)) fail("max_step: must be finite and > 0");
        opt.max_step = max_step;
        opt.hops = hops;
        opt.hop_step = hop_step;
        opt.hop_temperature = hop_temperature;
        if (screen_iter < 0) fail("screen_iter: must be >= 0 (0: no screening)");
        if (!(screen_ratio >= 1) || !std::isfinite(screen_ratio)) fail("screen_ratio: must be finite and >= 1");
        if (screen_keep < 1) fail("screen_keep: must be >= 1");
        opt.screen_iter = screen_iter;
        opt.screen_ratio = screen_ratio;
        opt.screen_keep = screen_keep;
        const std::size_t T = problems.size();
        if (starts.size() != T || lower.size() != T || upper.size() != T || seeds.size() != T)
          fail("starts, lower, upper, seeds: need one entry per problem");
        py::list ties;
        if (!tie.is_none()) {
          ties = tie.cast<py::list>();
          if (ties.size() != T) fail("tie: need one entry per problem (None: no ties)");
        }

        std::vector<HeldProblem> held;
        held.reserve(T);
        std::vector<darray> start_arrays;
        std::vector<FitTask> tasks(T);
        for (std::size_t t = 0; t < T; ++t) {
          py::tuple item = problems[t].cast<py::tuple>();
          const Plan& plan = item[0].cast<const Plan&>();
          const Records& rec = item[1].cast<const Records&>();
          held.push_back(hold_problem(plan, rec, item[2], item[3], mean, spec));
          const std::size_t P = static_cast<std::size_t>(plan.n_params);
          darray st = as_darray(starts[t], "starts");
          require_ndim(st, 2, "starts");
          if (static_cast<std::size_t>(st.shape(1)) != P)
            fail("starts: expected " + std::to_string(P) + " columns, got " + std::to_string(st.shape(1)));
          for (py::ssize_t i = 0; i < st.size(); ++i)
            if (!std::isfinite(st.data()[i])) fail("starts: contain non-finite values");
          darray lo = vector_arg(lower[t], P, "lower"), hi = vector_arg(upper[t], P, "upper");
          FitTask& task = tasks[t];
          task.box.lo.assign(lo.data(), lo.data() + P);
          task.box.hi.assign(hi.data(), hi.data() + P);
          task.box.log_scale.resize(P);
          for (std::size_t p = 0; p < P; ++p) {
            if (!(task.box.lo[p] <= task.box.hi[p]) || std::isnan(task.box.lo[p]))
              fail("bounds: lower > upper for " + plan.params[p].name);
            task.box.log_scale[p] = plan.params[p].log_scale && task.box.lo[p] >= 0;
          }
          if (!tie.is_none() && !ties[t].is_none()) {
            const py::array_t<long long, py::array::c_style | py::array::forcecast> labels(ties[t]);
            if (labels.ndim() != 1 || static_cast<std::size_t>(labels.shape(0)) != P)
              fail("tie: expected " + std::to_string(P) + " labels (one per parameter)");
            task.box.group.resize(P);
            std::vector<std::size_t> first_of;  // by label: the first parameter with it
            for (std::size_t p = 0; p < P; ++p) {
              const long long v = labels.at(static_cast<py::ssize_t>(p));
              if (v < 0 || v >= static_cast<long long>(P)) fail("tie: labels must be in [0, number of parameters)");
              task.box.group[p] = static_cast<int>(v);
              if (first_of.size() <= static_cast<std::size_t>(v)) first_of.resize(static_cast<std::size_t>(v) + 1, P);
              std::size_t& q = first_of[static_cast<std::size_t>(v)];
              if (q == P) q = p;
              else if (task.box.lo[p] != task.box.lo[q] || task.box.hi[p] != task.box.hi[q] ||
                       task.box.log_scale[p] != task.box.log_scale[q])
                fail("tie: " + plan.params[q].name + " and " + plan.params[p].name +
                     " are tied but have different bounds or scaling");
            }
          }
          task.starts = st.data();
          task.n_starts = static_cast<int>(st.shape(0));
          task.seed = seeds[t].cast<std::uint64_t>();
          start_arrays.push_back(std::move(st));
        }
        for (std::size_t t = 0; t < T; ++t) tasks[t].problem = &held[t].problem;
        check_memory(tasks, nt, opt);

        std::vector<std::vector<SolveResult>> results;
        CancelFlag cancel;
        ProgressCounter counter;
        std::size_t total = 0, reported = 0;
        for (const FitTask& task : tasks) total += static_cast<std::size_t>(task.n_starts);
        const auto report = [&] {  // with the GIL: progress(done, total) when the count moved
          const std::size_t done = counter.value();
          if (progress.is_none() || done == reported) return;
          reported = done;
          progress(done, total);
        };
        run_interruptible(cancel, [&] { results = fit_tasks(tasks, opt, nt, &cancel, &counter); }, report);

        py::list out;
        for (std::size_t t = 0; t < T; ++t) {
          const auto S = static_cast<py::ssize_t>(tasks[t].n_starts);
          const auto P = static_cast<py::ssize_t>(tasks[t].box.lo.size());
          darray x(std::vector<py::ssize_t>{S, P}), fun(S), seconds(S), stationarity(S);
          py::array_t<int> status(S), nit(S), nfev(S), njev(S);
          for (py::ssize_t s = 0; s < S; ++s) {
            const SolveResult& r = results[t][static_cast<std::size_t>(s)];
            for (py::ssize_t p = 0; p < P; ++p)
              x.mutable_at(s, p) = r.theta.empty() ? std::nan("") : r.theta[static_cast<std::size_t>(p)];
            fun.mutable_at(s) = r.theta.empty() ? std::nan("") : r.f;
            status.mutable_at(s) = r.status;
            nit.mutable_at(s) = r.nit;
            nfev.mutable_at(s) = r.nfev;
            njev.mutable_at(s) = r.njev;
            seconds.mutable_at(s) = r.seconds;
            stationarity.mutable_at(s) = r.stationarity;
          }
          py::dict d;
          d["x"] = x;
          d["fun"] = fun;
          d["status"] = status;
          d["nit"] = nit;
          d["nfev"] = nfev;
          d["njev"] = njev;
          d["seconds"] = seconds;
          d["stationarity"] = stationarity;
          out.append(d);
        }
        return out;
      },
      py::arg("problems"), py::arg("starts"), py::arg("lower"), py::arg("upper"), py::arg("seeds"),
      py::arg("loss") = "huber", py::arg("delta") = 1e-3, py::arg("residual") = "raw", py::arg("mean") = true,
      py::arg("curvature") = "exact", py::arg("method") = "lm", py::arg("linear_solver") = "auto", py::arg("max_iter") = 1000, py::arg("ftol") = 1e-10, py::arg("xtol") = 1e-10,
      py::arg("gtol") = SolverOptions{}.gtol, py::arg("max_step") = 1.0,
      py::arg("hops") = 0, py::arg("hop_step") = 0.5, py::arg("hop_temperature") = 0.05,
      py::arg("screen_iter") = 0, py::arg("screen_ratio") = 1.5, py::arg("screen_keep") = 8,
      py::arg("threads") = py::none(), py::arg("tie") = py::none(), py::arg("progress") = py::none(),
      "Fit every (problem, start) pair in one parallel call. problems: list of (law, records, y, weights).\n"
      "progress: None, or progress(done, total) called (in this thread) as starts finish, with done <= total.\n"
      "tie: None, or one entry per problem: None or P integer labels in [0, P); parameters with equal labels\n"
      "share one value (equal bounds and scaling required; a start's group value is its first member's).");

  m.def("status_message", &status_message, py::arg("status"));
}

}  // namespace mixlaw::bind
