#include "common.hpp"
#include "mixlaw/records.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>

namespace mixlaw::bind {

// Converts and checks (N, D, H) (with the GIL); prepare() then runs without it. H may be
// None when k == 0.
RecordArrays record_arrays(const py::handle& N, const py::handle& D, const py::handle& H, int k) {
  RecordArrays ra;
  ra.n = as_darray(N, "N");
  ra.d = as_darray(D, "D");
  require_ndim(ra.n, 1, "N");
  require_ndim(ra.d, 1, "D");
  if (ra.d.shape(0) != ra.n.shape(0))
    fail("D: expected " + std::to_string(ra.n.shape(0)) + " values (like N), got " + std::to_string(ra.d.shape(0)));
  ra.rows = static_cast<std::size_t>(ra.n.shape(0));
  if (H.is_none()) {
    if (k > 0) fail("H: the law has " + std::to_string(k) + " domains; pass an (n, k) array of weights");
    ra.h = darray(std::vector<py::ssize_t>{static_cast<py::ssize_t>(ra.rows), 0});
  } else {
    ra.h = as_darray(H, "H");
    require_ndim(ra.h, 2, "H");
    if (ra.h.shape(0) != ra.n.shape(0))
      fail("H: expected " + std::to_string(ra.rows) + " rows (like N), got " + std::to_string(ra.h.shape(0)));
    if (k >= 0 && ra.h.shape(1) != k)
      fail("H: expected " + std::to_string(k) + " columns (domains), got " + std::to_string(ra.h.shape(1)));
  }
  ra.k = static_cast<int>(ra.h.shape(1));
  return ra;
}

// Safe without the GIL: the three arrays are owned by `ra` and only read.
Records RecordArrays::prepare(const CancelFlag* cancel) const {
  return prepare_records(n.data(), d.data(), h.data(), rows, k, 1e-6, cancel);
}

void bind_records(py::module_& m) {
  py::class_<Records>(m, "Records",
                      "Records (N, D, h rows) validated and prepared once: logs taken, records grouped "
                      "by distinct mixture.")
      .def(py::init([](const py::object& N, const py::object& D, const py::object& H, const py::object& U) {
             const RecordArrays ra = record_arrays(N, D, H, -1);
             darray ua;
             const bool with_u = !U.is_none();
             if (with_u) {  // unique tokens: (n,) with one domain or none, else (n, k)
               ua = as_darray(U, "unique_tokens");
               const auto cols = static_cast<py::ssize_t>(std::max(ra.k, 1));
               const bool ok = (ua.ndim() == 2 && ua.shape(0) == static_cast<py::ssize_t>(ra.rows) &&
                                ua.shape(1) == cols) ||
                               (ua.ndim() == 1 && cols == 1 && ua.shape(0) == static_cast<py::ssize_t>(ra.rows));
               if (!ok)
                 fail("unique_tokens: expected shape (" + std::to_string(ra.rows) + ", " + std::to_string(cols) +
                      ") (one per record and domain), got a " + std::to_string(ua.ndim()) + "-D array");
             }
             Records rec;
             CancelFlag cancel;
             run_without_gil(ra.cost(), cancel, [&] {
               rec = ra.prepare(&cancel);
               if (with_u) attach_unique_tokens(rec, ua.data());
             });
             return rec;
           }),
           py::arg("N"), py::arg("D"), py::arg("H") = py::none(), py::arg("unique_tokens") = py::none())
      .def_property_readonly("has_unique_tokens", [](const Records& r) { return !r.U.empty(); })
      .def_property_readonly("n", [](const Records& r) { return r.n; })
      .def_property_readonly("k", [](const Records& r) { return r.k; })
      .def_property_readonly("n_mixtures", [](const Records& r) { return r.n_mix; })
      .def_property_readonly("n_sizes", [](const Records& r) { return r.uniq_lnN.size(); })
      .def_property_readonly("n_token_counts", [](const Records& r) { return r.uniq_lnD.size(); })
      .def("__len__", [](const Records& r) { return r.n; });

  m.def(
      "first_appearance_ids",
      [](const py::object& rows) {
        darray a = as_darray(rows, "rows");
        require_ndim(a, 2, "rows");
        const auto n = static_cast<std::size_t>(a.shape(0)), len = static_cast<std::size_t>(a.shape(1));
        if (n > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
          fail("rows: at most " + std::to_string(std::numeric_limits<std::int32_t>::max()) + " rows, got " +
               std::to_string(n));
        py::array_t<std::int64_t> ids(static_cast<py::ssize_t>(n));
        std::int64_t* out = ids.mutable_data();
        std::vector<std::int64_t> first;
        CancelFlag cancel;
        run_without_gil(static_cast<double>(n) * static_cast<double>(len + 1), cancel,
                        [&] { number_rows(a.data(), n, len, out, first, &cancel); });
        py::array_t<std::int64_t> f(static_cast<py::ssize_t>(first.size()));
        std::copy(first.begin(), first.end(), f.mutable_data());
        return py::make_tuple(ids, f);
      },
      py::arg("rows"),
      "Numbers the distinct rows of a 2-D array 0, 1, ... in order of first appearance, as Records\n"
      "groups mixtures (exact equality, -0.0 equal to 0.0, a row with NaN equal to no other):\n"
      "(ids, first) with ids[j] the number of row j and first[g] the first row numbered g.");
}

}  // namespace mixlaw::bind
