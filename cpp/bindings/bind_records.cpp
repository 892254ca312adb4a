#include "common.hpp"
#include "mixlaw/records.hpp"

namespace mixlaw::bind {

// Converts and checks (N, D, H) and prepares records. H may be None when k == 0.
Records records_from_arrays(const py::handle& N, const py::handle& D, const py::handle& H, int k) {
  darray n = as_darray(N, "N"), d = as_darray(D, "D");
  require_ndim(n, 1, "N");
  require_ndim(d, 1, "D");
  if (d.shape(0) != n.shape(0))
    fail("D: expected " + std::to_string(n.shape(0)) + " values (like N), got " + std::to_string(d.shape(0)));
  const std::size_t rows = static_cast<std::size_t>(n.shape(0));
  darray h;
  if (H.is_none()) {
    if (k > 0) fail("H: the law has " + std::to_string(k) + " domains; pass an (n, k) array of weights");
    h = darray(std::vector<py::ssize_t>{static_cast<py::ssize_t>(rows), 0});
  } else {
    h = as_darray(H, "H");
    require_ndim(h, 2, "H");
    if (h.shape(0) != n.shape(0))
      fail("H: expected " + std::to_string(rows) + " rows (like N), got " + std::to_string(h.shape(0)));
    if (k >= 0 && h.shape(1) != k)
      fail("H: expected " + std::to_string(k) + " columns (domains), got " + std::to_string(h.shape(1)));
  }
  const int kk = static_cast<int>(h.shape(1));
  // Safe without the GIL: the three arrays are owned by this frame and only read.
  py::gil_scoped_release release;
  return prepare_records(n.data(), d.data(), h.data(), rows, kk);
}

void bind_records(py::module_& m) {
  py::class_<Records>(m, "Records",
                      "Records (N, D, h rows) validated and prepared once: logs taken, records grouped "
                      "by distinct mixture.")
      .def(py::init([](const py::object& N, const py::object& D, const py::object& H) {
             return records_from_arrays(N, D, H, -1);
           }),
           py::arg("N"), py::arg("D"), py::arg("H") = py::none())
      .def_property_readonly("n", [](const Records& r) { return r.n; })
      .def_property_readonly("k", [](const Records& r) { return r.k; })
      .def_property_readonly("n_mixtures", [](const Records& r) { return r.n_mix; })
      .def_property_readonly("n_sizes", [](const Records& r) { return r.uniq_lnN.size(); })
      .def_property_readonly("n_token_counts", [](const Records& r) { return r.uniq_lnD.size(); })
      .def("__len__", [](const Records& r) { return r.n; });
}

}  // namespace mixlaw::bind
