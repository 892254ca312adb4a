// exp and log over arrays, several lanes at a time.
//
// The mixture solver spends most of its time in exp/log (h_i^gamma_i for every target and
// domain). These are fdlibm's algorithms (< 1 ulp) written once with GCC/Clang vector
// extensions: no FMA and no fast-math, so the AVX2 build (chosen at run time) and the
// baseline SSE2 build perform the same IEEE operations and give bit-identical results on
// every x86-64 machine. Lanes outside the kernels' range (exp: |x| > 700 or NaN; log: not a
// positive normal number) are recomputed with std::exp / std::log, so special values
// (0, inf, NaN, subnormals, overflow) are exactly those of the standard library.
#pragma once

namespace mixlaw {

void vexp(const double* x, double* y, int n);  // y = exp(x); y may alias x
void vlog(const double* x, double* y, int n);  // y = log(x); y may alias x

// The baseline build, whatever the CPU (for tests: must equal vexp / vlog bit for bit).
void vexp_base(const double* x, double* y, int n);
void vlog_base(const double* x, double* y, int n);

// Whether the CPU runs AVX2 code (the run-time choice of vexp/vlog; also used by other
// kernels compiled twice the same way). False off x86, and when the environment variable
// MIXLAW_DISABLE_AVX2 is set (to anything but "0") at load time.
bool cpu_has_avx2();

}  // namespace mixlaw
