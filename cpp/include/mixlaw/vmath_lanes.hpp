// The four-lane exp/log kernels behind vmath.hpp, for code that fuses them into its own
// loops (the mixture evaluator). GCC/Clang vector extensions only (MIXLAW_HAVE_LANES).
// Every operation is lane-wise IEEE arithmetic without FMA, so a caller compiled for the
// baseline (two SSE2 registers) and for AVX2 (one register) gets the same bits; sums
// across lanes must be written in a fixed order (hsum).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__GNUC__) || defined(__clang__)
#define MIXLAW_HAVE_LANES 1

namespace mixlaw {
namespace lanes {

// Four double lanes; the compiler lowers them to two SSE2 registers or one AVX2 register.
typedef double vd __attribute__((vector_size(32)));
typedef std::int64_t vi __attribute__((vector_size(32)));
typedef std::uint64_t vu __attribute__((vector_size(32)));
constexpr int W = 4;

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"
#define MIXLAW_INLINE inline __attribute__((always_inline))

MIXLAW_INLINE vd splat(double a) { return vd{a, a, a, a}; }
MIXLAW_INLINE vu splat_u(std::uint64_t a) { return vu{a, a, a, a}; }
MIXLAW_INLINE vd load(const double* p) {
  vd v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
MIXLAW_INLINE void store(double* p, vd v) { std::memcpy(p, &v, sizeof v); }
// m ? a : b for a lane mask m (all ones / all zeros), written with bit operations.
MIXLAW_INLINE vd select(vi m, vd a, vd b) { return (vd)(((vi)a & m) | ((vi)b & ~m)); }

// fdlibm e_exp.c: x = k ln2 + r, |r| <= ln2/2, exp(r) by a rational approximation.
MIXLAW_INLINE vd exp_kernel(vd x, vi& bad) {
  const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10,
               inv_ln2 = 1.44269504088896338700e+00, shift = 0x1.8p52;
  const double P1 = 1.66666666666666019037e-01, P2 = -2.77777777770155933842e-03,
               P3 = 6.61375632143793436117e-05, P4 = -1.65339022054652515390e-06,
               P5 = 4.13813679705723846039e-08;
  // In range, 2^k and the result are normal numbers; NaN fails the test too.
  bad |= ~((vi)(x >= splat(-700.0)) & (vi)(x <= splat(700.0)));
  const vd t = x * splat(inv_ln2) + splat(shift);  // k = round(x / ln2) in the low bits
  const vd kd = t - splat(shift);
  const vd hi = x - kd * splat(ln2_hi);  // exact: ln2_hi has 32 significant bits
  const vd lo = kd * splat(ln2_lo);
  const vd r = hi - lo;
  const vd z = r * r;
  const vd c = r - z * (splat(P1) + z * (splat(P2) + z * (splat(P3) + z * (splat(P4) + z * splat(P5)))));
  const vd y = splat(1.0) - ((lo - (r * c) / (splat(2.0) - c)) - hi);
  const vu two_k = ((vu)t + splat_u(1023)) << 52;
  return y * (vd)two_k;
}

// fdlibm e_log.c: x = 2^k (1 + f), sqrt(2)/2 <= 1 + f < sqrt(2), log(1 + f) from s = f / (2 + f).
MIXLAW_INLINE vd log_kernel(vd x, vi& bad) {
  const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  const double Lg1 = 6.666666666666735130e-01, Lg2 = 3.999999999940941908e-01, Lg3 = 2.857142874366239149e-01,
               Lg4 = 2.222219843214978396e-01, Lg5 = 1.818357216161805012e-01, Lg6 = 1.531383769920937332e-01,
               Lg7 = 1.479819860511658591e-01;
  bad |= ~((vi)(x >= splat(0x1p-1022)) & (vi)(x <= splat(0x1.fffffffffffffp1023)));  // positive normal
  const vu bits = (vu)x;
  // Exponent as a double without int64 -> double conversions (not in AVX2): place the
  // biased exponent in the mantissa of 2^52.
  const vd e = (vd)((bits >> 52) | splat_u(0x4330000000000000ULL)) - splat(0x1p52 + 1023.0);
  const vd m = (vd)((bits & splat_u(0x000fffffffffffffULL)) | splat_u(0x3ff0000000000000ULL));  // [1, 2)
  // fdlibm's integer tests on the top 20 mantissa bits hx, as exact comparisons of m.
  const vi big = (vi)(m >= splat(1.0 + 0x6a09c * 0x1p-20));  // hx >= 0x6a09c: use m / 2
  const vd mn = select(big, m * splat(0.5), m);
  const vd k = e + (vd)(big & (vi)splat(1.0));
  const vi mid = (vi)(m >= splat(1.0 + 0x6147a * 0x1p-20)) & (vi)(m < splat(1.0 + 0x6b852 * 0x1p-20));
  const vd f = mn - splat(1.0);
  const vd s = f / (splat(2.0) + f);
  const vd z = s * s;
  const vd w = z * z;
  const vd t1 = w * (splat(Lg2) + w * (splat(Lg4) + w * splat(Lg6)));
  const vd t2 = z * (splat(Lg1) + w * (splat(Lg3) + w * (splat(Lg5) + w * splat(Lg7))));
  const vd R = t2 + t1;
  const vd hfsq = splat(0.5) * f * f;
  const vd a = k * splat(ln2_hi) - ((hfsq - (s * (hfsq + R) + k * splat(ln2_lo))) - f);
  const vd b = k * splat(ln2_hi) - ((s * (f - R) - k * splat(ln2_lo)) - f);
  return select(mid, a, b);
}

// Whether any / every lane of a mask is set.
MIXLAW_INLINE bool any(vi m) { return (m[0] | m[1] | m[2] | m[3]) != 0; }
MIXLAW_INLINE bool all(vi m) { return (m[0] & m[1] & m[2] & m[3]) != 0; }

template <bool Exp>
MIXLAW_INLINE vd kernel(vd x) {
  vi bad = {0, 0, 0, 0};
  vd y = Exp ? exp_kernel(x, bad) : log_kernel(x, bad);
  if (any(bad))  // rare: lanes out of the kernel's range
    for (int l = 0; l < W; ++l)
      if (bad[l]) y[l] = Exp ? std::exp(x[l]) : std::log(x[l]);
  return y;
}

// l0 + l1 + l2 + l3 in a fixed order: (l0 + l2) + (l1 + l3), the natural order of a
// 256-bit register split into halves.
MIXLAW_INLINE double hsum(vd v) { return (v[0] + v[2]) + (v[1] + v[3]); }

#pragma GCC diagnostic pop
}  // namespace lanes
}  // namespace mixlaw
#endif
