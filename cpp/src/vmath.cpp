#include "mixlaw/vmath.hpp"

#include "mixlaw/vmath_lanes.hpp"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace mixlaw {

#ifdef MIXLAW_HAVE_LANES
namespace {

using namespace lanes;
#pragma GCC diagnostic ignored "-Wpsabi"

template <bool Exp>
MIXLAW_INLINE void apply(const double* x, double* y, int n) {
  int i = 0;
  for (; i + W <= n; i += W) store(y + i, kernel<Exp>(load(x + i)));
  if (i < n) {  // tail: lane by lane (no memcpy through a buffer: store forwarding stalls)
    const int m = n - i;
    const vd v = {x[i], m > 1 ? x[i + 1] : 1.0, m > 2 ? x[i + 2] : 1.0, 1.0};
    const vd r = kernel<Exp>(v);
    for (int l = 0; l < m; ++l) y[i + l] = r[l];
  }
}


#if defined(__x86_64__) || defined(__i386__)
#define MIXLAW_VMATH_AVX2 1
// The same code with 256-bit registers (no FMA: results stay identical to exp_base).
__attribute__((target("avx2"))) void exp_avx2(const double* x, double* y, int n) { apply<true>(x, y, n); }
__attribute__((target("avx2"))) void log_avx2(const double* x, double* y, int n) { apply<false>(x, y, n); }
// __builtin_cpu_init first: this initialiser may run before libgcc's own CPU-detection constructor.
// MIXLAW_DISABLE_AVX2 (set and not "0") keeps the baseline build: for tests (both builds must
// give the same bits) and for ruling the AVX2 code out when chasing a problem.
bool avx2_disabled_by_env() {
  const char* v = std::getenv("MIXLAW_DISABLE_AVX2");
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}
const bool have_avx2 = (__builtin_cpu_init(), __builtin_cpu_supports("avx2")) && !avx2_disabled_by_env();
#endif

}  // namespace

bool cpu_has_avx2() {
#ifdef MIXLAW_VMATH_AVX2
  return have_avx2;
#else
  return false;
#endif
}

void vexp_base(const double* x, double* y, int n) { apply<true>(x, y, n); }
void vlog_base(const double* x, double* y, int n) { apply<false>(x, y, n); }

void vexp(const double* x, double* y, int n) {
#ifdef MIXLAW_VMATH_AVX2
  if (have_avx2) return exp_avx2(x, y, n);
#endif
  vexp_base(x, y, n);
}

void vlog(const double* x, double* y, int n) {
#ifdef MIXLAW_VMATH_AVX2
  if (have_avx2) return log_avx2(x, y, n);
#endif
  vlog_base(x, y, n);
}

#else  // no vector extensions: the standard library, one value at a time

void vexp(const double* x, double* y, int n) {
  for (int i = 0; i < n; ++i) y[i] = std::exp(x[i]);
}
void vlog(const double* x, double* y, int n) {
  for (int i = 0; i < n; ++i) y[i] = std::log(x[i]);
}
bool cpu_has_avx2() { return false; }
void vexp_base(const double* x, double* y, int n) { vexp(x, y, n); }
void vlog_base(const double* x, double* y, int n) { vlog(x, y, n); }

#endif

}  // namespace mixlaw
