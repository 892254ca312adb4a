#include "common.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "mixlaw's C++ core (laws, gradients, fitting, simplex). Use the mixlaw package, not this module.";
  mixlaw::bind::bind_law(m);
  mixlaw::bind::bind_records(m);
  mixlaw::bind::bind_evaluate(m);
  mixlaw::bind::bind_fit(m);
  mixlaw::bind::bind_simplex(m);
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
}
