// Shared pybind11 set-up for every binding file: one array alias, argument checks that
// raise ValueError naming the argument, the thread-count convention, and the one way a
// long call runs without the GIL and stays interruptible (Ctrl-C).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include "mixlaw/parallel.hpp"
#include "mixlaw/records.hpp"

namespace py = pybind11;

namespace mixlaw::bind {

// C-contiguous float64, converting (and copying) other dtypes or layouts.
using darray = py::array_t<double, py::array::c_style | py::array::forcecast>;

// N, D, H of records converted and checked (bind_records.cpp): prepare() validates the
// values and groups the records; call it without the GIL (run_without_gil: cost()).
struct RecordArrays {
  darray n, d, h;
  std::size_t rows = 0;
  int k = 0;
  double cost() const { return static_cast<double>(rows) * (k + 1); }
  Records prepare(const CancelFlag* cancel) const;
};
RecordArrays record_arrays(const py::handle& N, const py::handle& D, const py::handle& H, int k);

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

// The thread count of every parallel entry point, resolved in the calling thread: None
// -> the OpenMP default (omp_get_max_threads(), which honours OMP_NUM_THREADS), else an
// int in [1, thread_limit()] (parallel.hpp: max(64, 4 x CPUs)). Out of range: ValueError
// naming threads (or OMP_NUM_THREADS for None), before any work starts; not an int
// (bool included): TypeError naming threads.
inline int threads_arg(const py::handle& threads) {
  if (threads.is_none()) return resolve_threads(0);
  if (PyBool_Check(threads.ptr()) || !PyIndex_Check(threads.ptr()))
    throw py::type_error("threads: expected None or an int, got " +
                         std::string(py::str(py::type::handle_of(threads).attr("__name__"))));
  const py::int_ value = py::reinterpret_steal<py::int_>(PyNumber_Index(threads.ptr()));
  if (!value) throw py::error_already_set();
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
  if (overflow == 0 && v >= 1 && v <= thread_limit()) return static_cast<int>(v);
  fail("threads: must be None or an int in [1, " + std::to_string(thread_limit()) + "] (the limit is " +
       thread_limit_text() + "), got " + std::string(py::str(value)));
}

// Runs `work` on a helper thread with the GIL released, checking for KeyboardInterrupt
// (and other signals) every 20 ms; on a signal the cancel flag stops the running work
// (solver iterations and long loops poll it; units not yet started are skipped), and the
// Python exception is raised once the worker has finished: a cancelled call never returns
// its (incomplete) results. The wait ends as soon as the worker is done (a short call
// costs no polling delay). Only the main thread sees signals (PyErr_CheckSignals); in
// other threads this just runs `work`.
//
// `tick` (if given) runs with the GIL at every poll and once at the end, e.g. to report
// progress; an exception it throws cancels the work like a signal and is raised after it.
template <class Work, class Tick>
void run_interruptible(CancelFlag& cancel, Work&& work, Tick&& tick) {
  std::exception_ptr error, tick_error;
  std::mutex mutex;
  std::condition_variable cv;
  bool done = false;
  bool interrupted = false;
  {
    py::gil_scoped_release release;
    std::thread worker([&] {
      try {
        work();
      } catch (...) {
        error = std::current_exception();
      }
      std::lock_guard<std::mutex> lock(mutex);
      done = true;
      cv.notify_one();
    });
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex);
        if (cv.wait_for(lock, std::chrono::milliseconds(20), [&] { return done; })) break;
      }
      if (!interrupted && !tick_error) {
        py::gil_scoped_acquire acquire;
        if (PyErr_CheckSignals() != 0) {
          interrupted = true;
          cancel.set();
        } else {
          try {
            tick();
          } catch (...) {
            tick_error = std::current_exception();
            cancel.set();
          }
        }
      }
    }
    worker.join();
  }
  if (interrupted) throw py::error_already_set();
  if (tick_error) std::rethrow_exception(tick_error);
  if (error) std::rethrow_exception(error);
  tick();
}

template <class Work>
void run_interruptible(CancelFlag& cancel, Work&& work) {
  run_interruptible(cancel, std::forward<Work>(work), [] {});
}

// Work of about `cost` elementary operations (record x domain evaluations) without the GIL:
// in the calling thread when small (at most a few milliseconds: no helper thread to start),
// else through run_interruptible.
constexpr double interruptible_cost = 1 << 16;
template <class Work>
void run_without_gil(double cost, CancelFlag& cancel, Work&& work) {
  if (cost < interruptible_cost) {
    py::gil_scoped_release release;
    work();
    return;
  }
  run_interruptible(cancel, std::forward<Work>(work));
}

}  // namespace mixlaw::bind
