#include <cmath>
#include <memory>

#include "common.hpp"
#include "mixlaw/evaluate.hpp"
#include "mixlaw/probe.hpp"

namespace mixlaw::bind {

Records records_from_arrays(const py::handle& N, const py::handle& D, const py::handle& H, int k);

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

// Either prepared Records (D and H must be None) or arrays N, D, H prepared on the fly.
struct Data {
  std::unique_ptr<Records> owned;
  const Records* rec = nullptr;
};

Data data_arg(const Plan& plan, const py::handle& N, const py::handle& D, const py::handle& H) {
  Data out;
  if (py::isinstance<Records>(N)) {
    if (!D.is_none() || !H.is_none()) fail("D, H: must be None when N is a prepared Records object");
    out.rec = &N.cast<const Records&>();
    if (out.rec->k != plan.spec.k)
      fail("N: records have " + std::to_string(out.rec->k) + " domains, the law has " +
           std::to_string(plan.spec.k));
  } else {
    out.owned = std::make_unique<Records>(records_from_arrays(N, D, H, plan.spec.k));
    out.rec = out.owned.get();
  }
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
         const py::object& H, std::optional<int> threads) {
        const int nt = threads_arg(threads);
        darray t = params_arg(plan, params);
        Data data = data_arg(plan, N, D, H);
        darray out(static_cast<py::ssize_t>(data.rec->n));
        double* o = out.mutable_data();
        {
          // Safe without the GIL: all inputs are C++ copies or arrays owned by this frame.
          py::gil_scoped_release release;
          predict(plan, t.data(), *data.rec, o, nt);
        }
        return out;
      },
      py::arg("law"), py::arg("params"), py::arg("N"), py::arg("D") = py::none(), py::arg("H") = py::none(),
      py::arg("threads") = py::none());

  m.def(
      "predict_grad",
      [](const Plan& plan, const py::object& params, const py::object& w, const py::object& N,
         const py::object& D, const py::object& H, std::optional<int> threads) {
        const int nt = threads_arg(threads);
        darray t = params_arg(plan, params);
        Data data = data_arg(plan, N, D, H);
        darray wa = as_darray(w, "w");
        require_ndim(wa, 1, "w");
        if (static_cast<std::size_t>(wa.shape(0)) != data.rec->n)
          fail("w: expected " + std::to_string(data.rec->n) + " weights, got " + std::to_string(wa.shape(0)));
        darray pred(static_cast<py::ssize_t>(data.rec->n)), grad(static_cast<py::ssize_t>(plan.n_params));
        double* po = pred.mutable_data();
        double* go = grad.mutable_data();
        {
          py::gil_scoped_release release;  // see predict
          predict_grad(plan, t.data(), *data.rec, wa.data(), po, go, nt);
        }
        return py::make_tuple(pred, grad);
      },
      py::arg("law"), py::arg("params"), py::arg("w"), py::arg("N"), py::arg("D") = py::none(),
      py::arg("H") = py::none(), py::arg("threads") = py::none());

  m.def(
      "jacobian",
      [](const Plan& plan, const py::object& params, const py::object& N, const py::object& D,
         const py::object& H, std::optional<int> threads) {
        const int nt = threads_arg(threads);
        darray t = params_arg(plan, params);
        Data data = data_arg(plan, N, D, H);
        const auto n = static_cast<py::ssize_t>(data.rec->n);
        darray pred(n), J(std::vector<py::ssize_t>{n, static_cast<py::ssize_t>(plan.n_params)});
        double* po = pred.mutable_data();
        double* jo = J.mutable_data();
        {
          py::gil_scoped_release release;  // see predict
          jacobian(plan, t.data(), *data.rec, po, jo, nt);
        }
        return py::make_tuple(pred, J);
      },
      py::arg("law"), py::arg("params"), py::arg("N"), py::arg("D") = py::none(), py::arg("H") = py::none(),
      py::arg("threads") = py::none());

  m.def(
      "grad_h",
      [](const Plan& plan, const py::object& params, const py::object& N, const py::object& D,
         const py::object& H, std::optional<int> threads) {
        const int nt = threads_arg(threads);
        darray t = params_arg(plan, params);
        Data data = data_arg(plan, N, D, H);
        darray out(std::vector<py::ssize_t>{static_cast<py::ssize_t>(data.rec->n),
                                            static_cast<py::ssize_t>(plan.spec.k)});
        double* o = out.mutable_data();
        {
          py::gil_scoped_release release;  // see predict
          grad_h(plan, t.data(), *data.rec, o, nt);
        }
        return out;
      },
      py::arg("law"), py::arg("params"), py::arg("N"), py::arg("D") = py::none(), py::arg("H") = py::none(),
      py::arg("threads") = py::none());
}

}  // namespace mixlaw::bind
