// Threads: an OpenMP loop over independent units that never lets an exception escape
// the parallel region (that would terminate the process) and never lets the thread
// count change a result (each unit's arithmetic is sequential and written to its own
// slot; reductions happen afterwards in index order).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace mixlaw {

// The most threads any call may use: max(64, 4 x the machine's CPUs), CPUs as
// std::thread::hardware_concurrency() counts them (os.cpu_count() in Python). More
// threads than CPUs only oversubscribe; far more fail inside the OpenMP runtime, which
// reports that by terminating the process (libgomp: "Thread creation failed", a crash,
// or "Out of memory allocating ..." for 2**31 - 1 threads).
inline int thread_limit() {
  static const int limit = [] {
    const unsigned long long cpus = std::max(1u, std::thread::hardware_concurrency());
    return static_cast<int>(std::min<unsigned long long>(std::max<unsigned long long>(64, 4 * cpus), 1 << 20));
  }();
  return limit;
}

// "max(64, 4 x N CPUs) = L", for messages.
inline std::string thread_limit_text() {
  return "max(64, 4 x " + std::to_string(std::max(1u, std::thread::hardware_concurrency())) +
         " CPUs) = " + std::to_string(thread_limit());
}

// threads <= 0 means "OpenMP default" (honours OMP_NUM_THREADS). Throws
// std::invalid_argument, naming threads or OMP_NUM_THREADS, for counts above
// thread_limit() (before any thread starts: the caller is never inside a parallel region).
inline int resolve_threads(int threads) {
  if (threads > thread_limit())
    throw std::invalid_argument("threads: must be None or at most " + thread_limit_text() + ", got " +
                                std::to_string(threads));
#ifdef _OPENMP
  if (threads > 0) return threads;
  const int n = omp_get_max_threads();
  if (n > thread_limit()) {
    const char* env = std::getenv("OMP_NUM_THREADS");
    throw std::invalid_argument("OMP_NUM_THREADS: asks for " + std::to_string(n) + " threads" +
                                (env ? " (OMP_NUM_THREADS=" + std::string(env) + ")" : std::string()) +
                                ", more than mixlaw's limit of " + thread_limit_text() +
                                "; lower OMP_NUM_THREADS or pass threads=");
  }
  return n;
#else
  return 1;
#endif
}

// Cooperative cancellation (e.g. Ctrl-C seen by the binding): units not yet started
// are skipped once the flag is set, and long units poll it (solver iterations, the mixture
// solvers' iterations, record preparation). A cancelled call's results are incomplete: the
// binding that set the flag raises KeyboardInterrupt instead of returning them.
struct CancelFlag {
  std::atomic<bool> flag{false};
  bool is_set() const { return flag.load(std::memory_order_relaxed); }
  void set() { flag.store(true, std::memory_order_relaxed); }
};

// Units of a batch finished so far, for progress reports: workers add to it, the caller's
// polling thread reads it (relaxed: a count, never used to order other memory).
struct ProgressCounter {
  std::atomic<std::size_t> done{0};
  void add(std::size_t n = 1) { done.fetch_add(n, std::memory_order_relaxed); }
  std::size_t value() const { return done.load(std::memory_order_relaxed); }
};

// Thrown by a serial loop that saw its CancelFlag set (never escapes a parallel region:
// parallel_for catches it like any exception).
struct Cancelled : std::runtime_error {
  Cancelled() : std::runtime_error("cancelled") {}
};

// Runs body(i) for i in [0, n) on `threads` threads, handing out one unit at a time (as
// schedule(dynamic, 1)). The first exception thrown by any unit is rethrown after the
// loop; later units are skipped. Once `cancel` is set no further unit starts, and the
// threads leave at once (an omp for loop would still have to hand out, and skip, every
// remaining unit: 16 ms for 800,000 mixture units).
template <class Body>
void parallel_for(std::size_t n, int threads, Body&& body, const CancelFlag* cancel = nullptr) {
  std::exception_ptr error;
  std::mutex error_mutex;
  std::atomic<bool> failed{false};
  const long long nn = static_cast<long long>(n);
  // No more threads than units (the same results: each unit runs alone either way).
  const int nt = static_cast<int>(std::min<long long>(resolve_threads(threads), std::max(nn, 1LL)));
  if (nt <= 1 || n <= 1) {
    for (long long i = 0; i < nn; ++i) {
      if (cancel && cancel->is_set()) break;
      body(static_cast<std::size_t>(i));
    }
    return;
  }
  std::atomic<long long> next{0};
#pragma omp parallel num_threads(nt)
  for (;;) {
    if (failed.load(std::memory_order_relaxed) || (cancel && cancel->is_set())) break;
    const long long i = next.fetch_add(1, std::memory_order_relaxed);
    if (i >= nn) break;
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
