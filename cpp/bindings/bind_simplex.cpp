#include <cmath>

#include "common.hpp"
#include "mixlaw/mixture.hpp"
#include "mixlaw/simplex.hpp"

namespace mixlaw::bind {
namespace {

darray vec(const py::handle& obj, const char* name, py::ssize_t n = -1) {
  darray a = as_darray(obj, name);
  require_ndim(a, 1, name);
  if (n >= 0 && a.shape(0) != n)
    fail(std::string(name) + ": expected " + std::to_string(n) + " values, got " + std::to_string(a.shape(0)));
  return a;
}

darray mat(const py::handle& obj, const char* name, py::ssize_t rows, py::ssize_t cols) {
  darray a = as_darray(obj, name);
  require_ndim(a, 2, name);
  if (a.shape(0) != rows || a.shape(1) != cols)
    fail(std::string(name) + ": expected shape (" + std::to_string(rows) + ", " + std::to_string(cols) + ")");
  return a;
}

struct HeldLaws {
  std::vector<darray> params;
  std::vector<FittedLaw> laws;
  int k = 0;
};

HeldLaws hold_laws(const py::list& fitted) {
  HeldLaws h;
  if (fitted.empty()) fail("fits: need at least one fitted law");
  for (const auto& item : fitted) {
    py::tuple t = item.cast<py::tuple>();
    const Plan& plan = t[0].cast<const Plan&>();
    if (plan.spec.k < 1) fail("fits: the " + std::string(law_kind_name(plan.spec.kind)) + " law has no mixture");
    darray p = vec(t[1], "params", plan.n_params);
    for (py::ssize_t i = 0; i < p.shape(0); ++i)
      if (!std::isfinite(p.data()[i])) fail("params: not finite");
    if (h.laws.empty()) h.k = plan.spec.k;
    else if (plan.spec.k != h.k) fail("fits: all laws must have the same number of domains");
    h.laws.push_back({&plan, p.data()});
    h.params.push_back(std::move(p));
  }
  return h;
}

// The KL regulariser of a problem: strength kl (finite, >= 0) and, when kl > 0, the prior
// (k weights, each finite and > 0, summing to 1).
void set_regulariser(MixtureProblem& pb, double kl, const double* prior, int k) {
  if (!(kl >= 0) || !std::isfinite(kl)) fail("kl: must be finite and >= 0");
  pb.kl = kl;
  if (kl == 0) return;
  if (prior == nullptr) fail("prior: needed when kl > 0");
  double sum = 0.0;
  for (int i = 0; i < k; ++i) {
    if (!(prior[i] > 0) || !std::isfinite(prior[i]))
      fail("prior: every weight must be finite and > 0 (KL(h || prior) is infinite where the prior is 0; keep a "
           "domain out with bounds instead)");
    sum += prior[i];
  }
  if (!(std::fabs(sum - 1.0) <= 1e-9)) fail("prior: the weights must sum to 1, got " + std::to_string(sum));
  pb.prior = prior;
}

// The repetition inputs of a problem: unique tokens (k values, each > 0, +inf unlimited; null:
// none) and the half-life for laws fitted without their own R_D (finite, > 0).
void set_unique_tokens(MixtureProblem& pb, const double* U, int k, double halflife) {
  if (!(halflife > 0) || !std::isfinite(halflife)) fail("repetition_halflife: must be finite and > 0");
  pb.halflife = halflife;
  if (U == nullptr) return;
  for (int i = 0; i < k; ++i)
    if (!(U[i] > 0)) fail("unique_tokens: must be > 0 (inf: unlimited)");
  pb.unique_tokens = U;
}

}  // namespace

void bind_simplex(py::module_& m) {
  m.def(
      "project_simplex",
      [](const py::object& v, const py::object& lo, const py::object& hi) {
        darray va = vec(v, "v");
        const auto k = va.shape(0);
        darray la = vec(lo, "lo", k), ha = vec(hi, "hi", k);
        for (py::ssize_t i = 0; i < k; ++i)
          if (!std::isfinite(va.data()[i])) fail("v: contains non-finite values");
        check_feasible(la.data(), ha.data(), static_cast<int>(k), "lo", "hi");
        darray out(k);
        project_capped_simplex(va.data(), la.data(), ha.data(), static_cast<int>(k), out.mutable_data());
        return out;
      },
      py::arg("v"), py::arg("lo"), py::arg("hi"),
      "Euclidean projection onto {h : sum h = 1, lo <= h <= hi} (exact).");

  m.def(
      "linear_minimizer",
      [](const py::object& g, const py::object& lo, const py::object& hi) {
        darray ga = vec(g, "g");
        const auto k = ga.shape(0);
        darray la = vec(lo, "lo", k), ha = vec(hi, "hi", k);
        check_feasible(la.data(), ha.data(), static_cast<int>(k), "lo", "hi");
        darray s(k);
        const double v = linear_minimizer(ga.data(), la.data(), ha.data(), static_cast<int>(k), s.mutable_data());
        return py::make_tuple(v, s);
      },
      py::arg("g"), py::arg("lo"), py::arg("hi"));

  m.def(
      "mixture_objective",
      [](const py::list& fitted, double N, double D, const py::object& weights, const py::object& h, bool generic,
         double kl, const py::object& prior, const py::object& unique_tokens, double halflife) {
        HeldLaws held = hold_laws(fitted);
        const auto T = static_cast<py::ssize_t>(held.laws.size());
        darray w = vec(weights, "weights", T), ha = vec(h, "h", held.k);
        MixtureProblem pb;
        pb.N = N;
        pb.D = D;
        pb.weights = w.data();
        darray pa;
        if (!prior.is_none()) pa = vec(prior, "prior", held.k);
        set_regulariser(pb, kl, prior.is_none() ? nullptr : pa.data(), held.k);
        darray ua;
        if (!unique_tokens.is_none()) ua = vec(unique_tokens, "unique_tokens", held.k);
        set_unique_tokens(pb, unique_tokens.is_none() ? nullptr : ua.data(), held.k, halflife);
        darray g(held.k), per(T);
        const double f =
            mixture_objective(held.laws, pb, ha.data(), g.mutable_data(), per.mutable_data(), generic);
        return py::make_tuple(f, g, per);
      },
      py::arg("fits"), py::arg("N"), py::arg("D"), py::arg("weights"), py::arg("h"), py::arg("generic") = false,
      py::arg("kl") = 0.0, py::arg("prior") = py::none(), py::arg("unique_tokens") = py::none(),
      py::arg("repetition_halflife") = 15.4,
      "F(h) = sum_t w_t L_t(N, D, h) (+ kl KL(h || prior) when kl > 0; data-constrained with unique_tokens), "
      "dF/dh and the L_t. generic=True: the generic formulas instead of the solver's fast path (for tests).");

  m.def(
      "optimize_mixtures",
      [](const py::list& fitted, const py::object& N, const py::object& D, const py::object& weights,
         const py::object& lo, const py::object& hi, const std::string& method, int max_iter, double gap_tol,
         int n_starts, std::uint64_t seed, const py::object& threads, int line_search_memory, bool lanes,
         const py::object& kl, const py::object& prior, const py::object& unique_tokens, double halflife) {
        const int nt = threads_arg(threads);
        HeldLaws held = hold_laws(fitted);
        const auto T = static_cast<py::ssize_t>(held.laws.size());
        darray Na = vec(N, "N"), Da = vec(D, "D", Na.shape(0));
        const auto P = Na.shape(0);
        darray W = mat(weights, "weights", P, T), La = mat(lo, "bounds", P, held.k), Ha = mat(hi, "bounds", P, held.k);
        darray KLa, PRa, UTa;  // per problem: KL strength, prior mixture, unique tokens
        if (!kl.is_none()) KLa = vec(kl, "kl", P);
        if (!prior.is_none()) PRa = mat(prior, "prior", P, held.k);
        if (!unique_tokens.is_none()) UTa = mat(unique_tokens, "unique_tokens", P, held.k);
        MixtureOptions opt;
        if (method == "mirror") opt.method = MixtureMethod::mirror;
        else if (method == "projected") opt.method = MixtureMethod::projected;
        else fail("method: unknown method '" + method + "' (expected 'mirror' or 'projected')");
        if (max_iter < 1) fail("max_iter: must be >= 1");
        if (!(gap_tol >= 0)) fail("gap_tol: must be >= 0");
        if (n_starts < 1) fail("n_starts: must be >= 1");
        if (line_search_memory < 1) fail("line_search_memory: must be >= 1");
        opt.max_iter = max_iter;
        opt.line_search_memory = line_search_memory;
        opt.gap_tol = gap_tol;
        opt.n_starts = n_starts;
        opt.seed = seed;
        opt.lanes = lanes;
        std::vector<MixtureProblem> problems(static_cast<std::size_t>(P));
        for (py::ssize_t p = 0; p < P; ++p) {
          MixtureProblem& pb = problems[static_cast<std::size_t>(p)];
          pb.N = Na.data()[p];
          pb.D = Da.data()[p];
          if (!(pb.N > 0) || !std::isfinite(pb.N)) fail("N: must be finite and > 0");
          if (!(pb.D > 0) || !std::isfinite(pb.D)) fail("D: must be finite and > 0");
          pb.weights = W.data() + p * T;
          double wsum = 0.0;
          for (py::ssize_t t = 0; t < T; ++t) {
            const double x = pb.weights[t];
            if (!(x >= 0) || !std::isfinite(x)) fail("weights: must be finite and >= 0");
            wsum += x;
          }
          if (!(wsum > 0)) fail("weights: must not all be zero");
          pb.lo = La.data() + p * held.k;
          pb.hi = Ha.data() + p * held.k;
          check_feasible(pb.lo, pb.hi, held.k, "bounds", "bounds");
          set_regulariser(pb, kl.is_none() ? 0.0 : KLa.data()[p], prior.is_none() ? nullptr : PRa.data() + p * held.k,
                          held.k);
          set_unique_tokens(pb, unique_tokens.is_none() ? nullptr : UTa.data() + p * held.k, held.k, halflife);
        }
        // Safe without the GIL: plans and parameter arrays are held by this frame. Ctrl-C
        // stops the solvers within an iteration and raises KeyboardInterrupt (the
        // incomplete results are dropped).
        std::vector<MixtureResult> res;
        CancelFlag cancel;
        run_interruptible(cancel, [&] { res = optimize_mixtures(held.laws, problems, opt, nt, &cancel); });
        darray h(std::vector<py::ssize_t>{P, static_cast<py::ssize_t>(held.k)}), fun(P), gap(P),
            per(std::vector<py::ssize_t>{P, T});
        py::array_t<int> nit(P), nfev(P), status(P), best(P);
        for (py::ssize_t p = 0; p < P; ++p) {
          const MixtureResult& r = res[static_cast<std::size_t>(p)];
          std::copy(r.h.begin(), r.h.end(), h.mutable_data() + p * held.k);
          fun.mutable_at(p) = r.f;
          gap.mutable_at(p) = r.gap;
          nit.mutable_at(p) = r.nit;
          nfev.mutable_at(p) = r.nfev;
          status.mutable_at(p) = r.status;
          best.mutable_at(p) = r.best_start;
          if (r.per_law.size() == static_cast<std::size_t>(T))
            std::copy(r.per_law.begin(), r.per_law.end(), per.mutable_data() + p * T);
          else
            std::fill(per.mutable_data() + p * T, per.mutable_data() + (p + 1) * T,
                      std::numeric_limits<double>::quiet_NaN());
        }
        py::dict d;
        d["h"] = h;
        d["fun"] = fun;
        d["gap"] = gap;
        d["nit"] = nit;
        d["nfev"] = nfev;
        d["status"] = status;
        d["best_start"] = best;
        d["per_target"] = per;
        return d;
      },
      py::arg("fits"), py::arg("N"), py::arg("D"), py::arg("weights"), py::arg("lo"), py::arg("hi"),
      py::arg("method") = "mirror", py::arg("max_iter") = 20000, py::arg("gap_tol") = 1e-10,
      py::arg("n_starts") = 1, py::arg("seed") = 0, py::arg("threads") = py::none(),
      py::arg("line_search_memory") = 10, py::arg("lanes") = true, py::arg("kl") = py::none(),
      py::arg("prior") = py::none(), py::arg("unique_tokens") = py::none(), py::arg("repetition_halflife") = 15.4,
      "Optimal mixtures for many (N, D, weights, bounds) problems in one parallel call. lanes=False "
      "solves every problem on its own instead of four per vector (the same results; for tests). kl (P,) and "
      "prior (P, k): the objective gains kl KL(h || prior) where kl > 0. unique_tokens (P, k): every law "
      "with the data-constrained option (R_D its own, or repetition_halflife).");
}

}  // namespace mixlaw::bind
