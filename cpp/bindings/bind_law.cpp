#include <cmath>

#include "common.hpp"
#include "mixlaw/law.hpp"

namespace mixlaw::bind {
namespace {

// The data-constrained option by name: "none", "shared" (one R_D) or "per_domain".
void set_repetition(LawSpec& spec, const std::string& name) {
  if (name != "none" && name != "shared" && name != "per_domain")
    fail("repetition: expected 'none', 'shared' or 'per_domain', got '" + name + "'");
  spec.repetition = name != "none";
  spec.repetition_per_domain = name == "per_domain";
}

std::string repetition_name(const LawSpec& spec) {
  return !spec.repetition ? "none" : spec.repetition_per_domain ? "per_domain" : "shared";
}

}  // namespace

void bind_law(py::module_& m) {
  py::class_<Plan>(m, "Law", "A scaling law's description: parameters, bounds and structure.")
      .def(py::init([](const std::string& name, int k, bool n_term, bool d_term, double n_scale,
                       double d_scale, int target_domain, const std::string& repetition) {
             LawSpec spec;
             spec.kind = law_kind_from_name(name);
             spec.k = k;
             spec.n_term = n_term;
             spec.d_term = d_term;
             spec.n_scale = n_scale;
             spec.d_scale = d_scale;
             spec.target_domain = target_domain;
             set_repetition(spec, repetition);
             if (!n_term && !d_term && spec.kind == LawKind::chinchilla)
               fail("n_term, d_term: the chinchilla law without both terms is a constant");
             return make_plan(spec);
           }),
           py::arg("name"), py::arg("k"), py::arg("n_term") = true, py::arg("d_term") = true,
           py::arg("n_scale") = 1e6, py::arg("d_scale") = 1e9, py::arg("target_domain") = -1,
           py::arg("repetition") = "none")
      .def_property_readonly("name", [](const Plan& p) { return std::string(law_kind_name(p.spec.kind)); })
      .def_property_readonly("k", [](const Plan& p) { return p.spec.k; })
      .def_property_readonly("n_term", [](const Plan& p) { return p.spec.n_term; })
      .def_property_readonly("d_term", [](const Plan& p) { return p.spec.d_term; })
      .def_property_readonly("n_scale", [](const Plan& p) { return p.spec.n_scale; })
      .def_property_readonly("d_scale", [](const Plan& p) { return p.spec.d_scale; })
      .def_property_readonly("target_domain", [](const Plan& p) { return p.spec.target_domain; })
      .def_property_readonly("repetition", [](const Plan& p) { return repetition_name(p.spec); })
      .def_property_readonly("n_params", [](const Plan& p) { return p.n_params; })
      .def_property_readonly("param_names",
                             [](const Plan& p) {
                               py::list out;
                               for (const auto& q : p.params) out.append(q.name);
                               return py::tuple(out);
                             })
      .def_property_readonly("defaults",
                             [](const Plan& p) {
                               // (lo, hi, init_lo, init_hi, log_scale) arrays in parameter order.
                               const auto n = static_cast<py::ssize_t>(p.n_params);
                               darray lo(n), hi(n), ilo(n), ihi(n);
                               py::array_t<bool> logs(n);
                               for (py::ssize_t i = 0; i < n; ++i) {
                                 const auto& q = p.params[static_cast<std::size_t>(i)];
                                 lo.mutable_at(i) = q.lo;
                                 hi.mutable_at(i) = q.hi;
                                 ilo.mutable_at(i) = q.init_lo;
                                 ihi.mutable_at(i) = q.init_hi;
                                 logs.mutable_at(i) = q.log_scale;
                               }
                               return py::make_tuple(lo, hi, ilo, ihi, logs);
                             })
      .def(py::pickle(
          [](const Plan& p) {
            return py::make_tuple(std::string(law_kind_name(p.spec.kind)), p.spec.k, p.spec.n_term,
                                  p.spec.d_term, p.spec.n_scale, p.spec.d_scale, p.spec.target_domain,
                                  repetition_name(p.spec));
          },
          [](const py::tuple& t) {
            LawSpec spec;
            spec.kind = law_kind_from_name(t[0].cast<std::string>());
            spec.k = t[1].cast<int>();
            spec.n_term = t[2].cast<bool>();
            spec.d_term = t[3].cast<bool>();
            spec.n_scale = t[4].cast<double>();
            spec.d_scale = t[5].cast<double>();
            spec.target_domain = t.size() > 6 ? t[6].cast<int>() : -1;
            set_repetition(spec, t.size() > 7 ? t[7].cast<std::string>() : std::string("none"));
            return make_plan(spec);
          }));
}

}  // namespace mixlaw::bind
