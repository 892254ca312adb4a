// Threads: an OpenMP loop over independent units that never lets an exception escape
// the parallel region (that would terminate the process) and never lets the thread
// count change a result (each unit's arithmetic is sequential and written to its own
// slot; reductions happen afterwards in index order).
#pragma once

#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace mixlaw {

// threads <= 0 means "OpenMP default" (honours OMP_NUM_THREADS).
inline int resolve_threads(int threads) {
#ifdef _OPENMP
  return threads > 0 ? threads : omp_get_max_threads();
#else
  (void)threads;
  return 1;
#endif
}

// Cooperative cancellation (e.g. Ctrl-C seen by the binding): units not yet started
// are skipped once the flag is set.
struct CancelFlag {
  std::atomic<bool> flag{false};
  bool is_set() const { return flag.load(std::memory_order_relaxed); }
  void set() { flag.store(true, std::memory_order_relaxed); }
};

// Runs body(i) for i in [0, n) on `threads` threads with dynamic scheduling. The first
// exception thrown by any unit is rethrown after the loop; later units are skipped.
template <class Body>
void parallel_for(std::size_t n, int threads, Body&& body, const CancelFlag* cancel = nullptr) {
  std::exception_ptr error;
  std::mutex error_mutex;
  std::atomic<bool> failed{false};
  const int nt = resolve_threads(threads);
  const long long nn = static_cast<long long>(n);
  if (nt <= 1 || n <= 1) {
    for (long long i = 0; i < nn; ++i) {
      if (cancel && cancel->is_set()) break;
      body(static_cast<std::size_t>(i));
    }
    return;
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (long long i = 0; i < nn; ++i) {
    if (failed.load(std::memory_order_relaxed)) continue;
    if (cancel && cancel->is_set()) continue;
    try {
      body(static_cast<std::size_t>(i));
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      failed.store(true, std::memory_order_relaxed);
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace mixlaw
