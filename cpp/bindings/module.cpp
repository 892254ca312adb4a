#include "common.hpp"
#include "mixlaw/vmath.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "mixlaw's C++ core (laws, gradients, fitting, simplex). Use the mixlaw package, not this module.";
  mixlaw::bind::bind_law(m);
  mixlaw::bind::bind_records(m);
  mixlaw::bind::bind_evaluate(m);
  mixlaw::bind::bind_fit(m);
  mixlaw::bind::bind_simplex(m);
  m.def("cpu_has_avx2", &mixlaw::cpu_has_avx2,
        "Whether the AVX2 builds of the vectorised kernels run (they give the same bits as the baseline; "
        "MIXLAW_DISABLE_AVX2=1 at import keeps the baseline).");
  m.def("thread_limit", &mixlaw::thread_limit,
        "The most threads a call may use: max(64, 4 x the CPUs (os.cpu_count())); threads= above it, or "
        "OMP_NUM_THREADS above it with threads=None, raise ValueError.");
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
}
