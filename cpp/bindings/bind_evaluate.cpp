#include <cmath>
#include <memory>

#include "common.hpp"
#include "mixlaw/evaluate.hpp"
#include "mixlaw/probe.hpp"

namespace mixlaw::bind {

namespace {

darray params_arg(const Plan& plan, const py::handle& params) {
  darray t = as_darray(params, "params");
  require_ndim(t, 1, "params");
  if (t.shape(0) != plan.n_params)
    fail("params: the " + std::string(law_kind_name(plan.spec.kind)) + " law with k=" +
         std::to_string(plan.spec.k) + " has " + std::to_string(plan.n_params) + " parameters, got " +
         std::to_string(t.shape(0)));
  for (py::ssize_t i = 0; i < t.shape(0); ++i)
    if (!std::isfinite(t.data()[i]))
      fail("params: " + plan.params[static_cast<std::size_t>(i)].name + " is not finite");
  return t;
}

// Either prepared Records (D and H must be None) or arrays N, D, H, prepared by records()
// without the GIL (in run_without_gil's work, so that Ctrl-C stops a huge preparation too).
struct Data {
  const Records* given = nullptr;
  RecordArrays arrays;
  Records owned;
  std::size_t n = 0;  // records
  double cost = 0;    // for run_without_gil: records x (k + 1)
  const Records& records(const CancelFlag* cancel) {
    if (given) return *given;
    owned = arrays.prepare(cancel);
    return owned;
  }
};

Data data_arg(const Plan& plan, const py::handle& N, const py::handle& D, const py::handle& H) {
  Data out;
  if (py::isinstance<Records>(N)) {
    if (!D.is_none() || !H.is_none()) fail("D, H: must be None when N is a prepared Records object");
    out.given = &N.cast<const Records&>();
    if (out.given->k != plan.spec.k)
      fail("N: records have " + std::to_string(out.given->k) + " domains, the law has " +
           std::to_string(plan.spec.k));
    out.n = out.given->n;
  } else {
    out.arrays = record_arrays(N, D, H, plan.spec.k);
    out.n = out.arrays.rows;
  }
  out.cost = static_cast<double>(out.n) * (plan.spec.k + 1);
  return out;
}

}  // namespace

void bind_evaluate(py::module_& m) {
  m.def(
      "exp_floor_ns",
      [](std::size_t n, int repeats) {
        py::gil_scoped_release release;  // pure C++ timing loop
        return 1e9 * exp_seconds_per_call(n, repeats);
      },
      py::arg("n") = 1 << 20, py::arg("repeats") = 5,
      "Nanoseconds per scalar std::exp call in a tight loop (benchmark floor).");

  m.def(
      "predict",
      [](const Plan& plan, const py::object& params, const py::object& N, const py::object& D,
         const py::object& H, const py::object& threads) {
        const int nt = threads_arg(threads);
        darray t = params_arg(plan, params);
        Data data = data_arg(plan, N, D, H);
        darray out(static_cast<py::ssize_t>(data.n));
        double* o = out.mutable_data();
        // Safe without the GIL: all inputs are C++ copies or arrays owned by this frame.
        CancelFlag cancel;
        run_without_gil(data.cost, cancel, [&] { predict(plan, t.data(), data.records(&cancel), o, nt, &cancel); });
        return out;
      },
      py::arg("law"), py::arg("params"), py::arg("N"), py::arg("D") = py::none(), py::arg("H") = py::none(),
      py::arg("threads") = py::none());

  m.def(
      "predict_grad",
      [](const Plan& plan, const py::object& params, const py::object& w, const py::object& N,
         const py::object& D, const py::object& H, const py::object& threads) {
        const int nt = threads_arg(threads);
        darray t = params_arg(plan, params);
        Data data = data_arg(plan, N, D, H);
        darray wa = as_darray(w, "w");
        require_ndim(wa, 1, "w");
        if (static_cast<std::size_t>(wa.shape(0)) != data.n)
          fail("w: expected " + std::to_string(data.n) + " weights, got " + std::to_string(wa.shape(0)));
        darray pred(static_cast<py::ssize_t>(data.n)), grad(static_cast<py::ssize_t>(plan.n_params));
        double* po = pred.mutable_data();
        double* go = grad.mutable_data();
        CancelFlag cancel;  // see predict
        run_without_gil(data.cost, cancel,
                        [&] { predict_grad(plan, t.data(), data.records(&cancel), wa.data(), po, go, nt, &cancel); });
        return py::make_tuple(pred, grad);
      },
      py::arg("law"), py::arg("params"), py::arg("w"), py::arg("N"), py::arg("D") = py::none(),
      py::arg("H") = py::none(), py::arg("threads") = py::none());

  m.def(
      "jacobian",
      [](const Plan& plan, const py::object& params, const py::object& N, const py::object& D,
         const py::object& H, const py::object& threads) {
        const int nt = threads_arg(threads);
        darray t = params_arg(plan, params);
        Data data = data_arg(plan, N, D, H);
        const auto n = static_cast<py::ssize_t>(data.n);
        darray pred(n), J(std::vector<py::ssize_t>{n, static_cast<py::ssize_t>(plan.n_params)});
        double* po = pred.mutable_data();
        double* jo = J.mutable_data();
        CancelFlag cancel;  // see predict
        run_without_gil(data.cost + static_cast<double>(n) * plan.n_params, cancel,
                        [&] { jacobian(plan, t.data(), data.records(&cancel), po, jo, nt, &cancel); });
        return py::make_tuple(pred, J);
      },
      py::arg("law"), py::arg("params"), py::arg("N"), py::arg("D") = py::none(), py::arg("H") = py::none(),
      py::arg("threads") = py::none());

  m.def(
      "grad_h",
      [](const Plan& plan, const py::object& params, const py::object& N, const py::object& D,
         const py::object& H, const py::object& threads) {
        const int nt = threads_arg(threads);
        darray t = params_arg(plan, params);
        Data data = data_arg(plan, N, D, H);
        darray out(std::vector<py::ssize_t>{static_cast<py::ssize_t>(data.n),
                                            static_cast<py::ssize_t>(plan.spec.k)});
        double* o = out.mutable_data();
        CancelFlag cancel;  // see predict
        run_without_gil(data.cost, cancel, [&] { grad_h(plan, t.data(), data.records(&cancel), o, nt, &cancel); });
        return out;
      },
      py::arg("law"), py::arg("params"), py::arg("N"), py::arg("D") = py::none(), py::arg("H") = py::none(),
      py::arg("threads") = py::none());
}

}  // namespace mixlaw::bind
