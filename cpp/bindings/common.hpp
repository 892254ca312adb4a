// Shared pybind11 set-up for every binding file: one array alias, argument checks that
// raise ValueError naming the argument, and the thread-count convention.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>

namespace py = pybind11;

namespace mixlaw::bind {

// C-contiguous float64, converting (and copying) other dtypes or layouts.
using darray = py::array_t<double, py::array::c_style | py::array::forcecast>;

void bind_law(py::module_& m);
void bind_records(py::module_& m);
void bind_evaluate(py::module_& m);
void bind_fit(py::module_& m);
void bind_simplex(py::module_& m);

// std::invalid_argument reaches Python as ValueError (pybind11's default translation).
[[noreturn]] inline void fail(const std::string& msg) { throw std::invalid_argument(msg); }

inline darray as_darray(const py::handle& obj, const char* name) {
  if (obj.is_none()) fail(std::string(name) + ": must not be None");
  darray a = darray::ensure(obj);  // null (error cleared) when not convertible
  if (!a) fail(std::string(name) + ": cannot be converted to a float64 array");
  return a;
}

inline void require_ndim(const darray& a, int ndim, const char* name) {
  if (a.ndim() != ndim)
    fail(std::string(name) + ": expected a " + std::to_string(ndim) + "-D array, got " +
         std::to_string(a.ndim()) + "-D");
}

// None -> 0 ("OpenMP default, honours OMP_NUM_THREADS"); otherwise >= 1.
inline int threads_arg(const std::optional<int>& threads) {
  if (!threads) return 0;
  if (*threads < 1) fail("threads: must be None or >= 1, got " + std::to_string(*threads));
  return *threads;
}

}  // namespace mixlaw::bind
