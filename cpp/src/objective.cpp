#include "mixlaw/objective.hpp"
#include "mixlaw/repetition.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "mixlaw/evaluate.hpp"
#include "mixlaw/vmath.hpp"

#if defined(__GNUC__) || defined(__clang__)
#define MIXLAW_ALWAYS_INLINE inline __attribute__((always_inline))
#if defined(__x86_64__) || defined(__i386__)
#define MIXLAW_X86_DISPATCH 1
#endif
#else
#define MIXLAW_ALWAYS_INLINE inline
#endif

namespace mixlaw {
namespace {

using detail::MixtureWork;

// Huber on a raw residual, branch-free (selects, no jumps) so that loops over records can
// vectorise: rho, psi and the curvature om, which outside the band is owd / |r| (IRLS,
// owd = outside_weight * delta) or, without Irls, 0. MSE is delta = inf.
struct HuberTerms {
  double rho, psi, om;
};
template <bool Irls>
inline HuberTerms huber_raw(double r, double delta, double owd) {
  const double a = std::fabs(r);
  const bool in = a <= delta;
  return {in ? 0.5 * r * r : delta * (a - 0.5 * delta), in ? r : std::copysign(delta, r),
          in ? 1.0 : (Irls ? owd / a : 0.0)};
}

// Residual, loss, its derivative psi = rho'(r) and IRLS weight omega = rho'(r)/r, plus the
// factor dr/dL (1, or 1/L for log residuals).
struct Pointwise {
  double r, rho, psi, omega, drdL;
};

inline Pointwise pointwise(const ObjectiveSpec& spec, double L, double y) {
  Pointwise p;
  if (spec.log_residual) {
    p.r = L > 0 ? std::log(L) - std::log(y) : std::numeric_limits<double>::infinity();
    p.drdL = 1.0 / L;
  } else {
    p.r = L - y;
    p.drdL = 1.0;
  }
  const double a = std::fabs(p.r);
  if (spec.loss == LossKind::huber && a > spec.delta) {
    p.rho = spec.delta * (a - 0.5 * spec.delta);
    p.psi = p.r > 0 ? spec.delta : -spec.delta;
    p.omega = spec.delta / a;
  } else {
    p.rho = 0.5 * p.r * p.r;
    p.psi = p.r;
    p.omega = 1.0;
  }
  return p;
}

struct ValueVisitor {
  const FitProblem& pb;
  double f = 0.0;
  void begin_mixture(std::size_t, const MixtureWork&) {}
  void record(std::size_t s, double L, const double*) { f += pb.c[s] * pointwise(pb.spec, L, pb.y[s]).rho; }
  void end_mixture(std::size_t, const MixtureWork&) {}
};

// Gradient through per-mixture slot adjoints (as in evaluate.cpp's J^T w).
struct GradVisitor {
  const FitProblem& pb;
  const double* theta;
  double* grad;
  double f = 0.0;
  double adj[n_slots] = {0, 0, 0, 0, 0, 0};
  void begin_mixture(std::size_t, const MixtureWork&) { std::fill(adj, adj + n_slots, 0.0); }
  void record(std::size_t s, double L, const double* u) {
    const Pointwise p = pointwise(pb.spec, L, pb.y[s]);
    f += pb.c[s] * p.rho;
    const double a = pb.c[s] * p.psi * p.drdL;
    for (int q = 0; q < n_slots; ++q) adj[q] += a * u[q];
  }
  void end_mixture(std::size_t m, const MixtureWork& mw) {
    const Plan& plan = *pb.plan;
    for (int q = 0; q < n_slots; ++q) {
      const Source& src = plan.src[q];
      if (src.type == Source::param) grad[src.index] += adj[q];
      else if (src.type == Source::feature)
        detail::accumulate_feature_grad(plan, src.index, theta, *pb.rec, m, mw, adj[q], grad);
    }
  }
};

// Sums over mixtures kept in four fixed lanes (term m goes to lane m mod 4), combined as
// (l0 + l1) + (l2 + l3), plus the n mod 4 tail terms: independent accumulators (not bound by
// the latency of one running sum), and the same operations whatever the vector width, so the
// baseline build (two 2-lane SSE2 registers) and the AVX2 build (one 4-lane register) give
// the same bits. No FMA: neither build enables it.
#if defined(__GNUC__) || defined(__clang__)
struct Lanes2x2 {  // baseline: GCC lowers a 4-lane vector badly without AVX (kept in memory)
  typedef double half __attribute__((vector_size(16)));
  struct T {
    half lo, hi;
  };
  static MIXLAW_ALWAYS_INLINE T zero() { return {half{0, 0}, half{0, 0}}; }
  static MIXLAW_ALWAYS_INLINE T load(const double* p) {
    T v;
    std::memcpy(&v.lo, p, sizeof v.lo);
    std::memcpy(&v.hi, p + 2, sizeof v.hi);
    return v;
  }
  static MIXLAW_ALWAYS_INLINE void add(T& acc, const T& x) {
    acc.lo += x.lo;
    acc.hi += x.hi;
  }
  static MIXLAW_ALWAYS_INLINE void madd(T& acc, const T& x, const T& y) {
    acc.lo += x.lo * y.lo;
    acc.hi += x.hi * y.hi;
  }
  static MIXLAW_ALWAYS_INLINE T mul(const T& x, const T& y) { return {x.lo * y.lo, x.hi * y.hi}; }
  static MIXLAW_ALWAYS_INLINE double combine(const T& l) { return (l.lo[0] + l.lo[1]) + (l.hi[0] + l.hi[1]); }
};
#else
struct Lanes2x2 {  // no vector extension: the same sums, one lane at a time
  struct T {
    double l[4];
  };
  static T zero() { return {{0, 0, 0, 0}}; }
  static T load(const double* p) { return {{p[0], p[1], p[2], p[3]}}; }
  static void add(T& acc, const T& x) {
    for (int i = 0; i < 4; ++i) acc.l[i] += x.l[i];
  }
  static void madd(T& acc, const T& x, const T& y) {
    for (int i = 0; i < 4; ++i) acc.l[i] += x.l[i] * y.l[i];
  }
  static T mul(const T& x, const T& y) { return {{x.l[0] * y.l[0], x.l[1] * y.l[1], x.l[2] * y.l[2], x.l[3] * y.l[3]}}; }
  static double combine(const T& a) { return (a.l[0] + a.l[1]) + (a.l[2] + a.l[3]); }
};
#endif
#if MIXLAW_X86_DISPATCH
// Lanes4's helpers are always inlined into the AVX2 build, so the ABI of a 32-byte vector
// passed between functions compiled without AVX never arises (as in vmath.cpp).
#pragma GCC diagnostic ignored "-Wpsabi"
struct Lanes4 {  // AVX2
  typedef double T __attribute__((vector_size(32)));
  static MIXLAW_ALWAYS_INLINE T zero() { return T{0, 0, 0, 0}; }
  static MIXLAW_ALWAYS_INLINE T load(const double* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static MIXLAW_ALWAYS_INLINE void add(T& acc, const T& x) { acc += x; }
  static MIXLAW_ALWAYS_INLINE void madd(T& acc, const T& x, const T& y) { acc += x * y; }
  static MIXLAW_ALWAYS_INLINE T mul(const T& x, const T& y) { return x * y; }
  static MIXLAW_ALWAYS_INLINE double combine(const T& l) { return (l[0] + l[1]) + (l[2] + l[3]); }
};
#endif

template <class L>
MIXLAW_ALWAYS_INLINE double lane_sum(const double* x, std::size_t n) {
  typename L::T acc = L::zero();
  std::size_t m = 0;
  for (; m + 4 <= n; m += 4) L::add(acc, L::load(x + m));
  double t = 0.0;
  for (; m < n; ++m) t += x[m];
  return L::combine(acc) + t;
}
template <class L>
MIXLAW_ALWAYS_INLINE double lane_dot(const double* x, const double* y, std::size_t n) {
  typename L::T acc = L::zero();
  std::size_t m = 0;
  for (; m + 4 <= n; m += 4) L::madd(acc, L::load(x + m), L::load(y + m));
  double t = 0.0;
  for (; m < n; ++m) t += x[m] * y[m];
  return L::combine(acc) + t;
}
// Four dot products of x with the rows y, y + stride, y + 2 stride, y + 3 stride (n entries each).
template <class L>
MIXLAW_ALWAYS_INLINE void lane_dots4_strided(const double* x, const double* y, std::size_t stride, std::size_t n,
                                             double (&out)[4]) {
  typename L::T a0 = L::zero(), a1 = L::zero(), a2 = L::zero(), a3 = L::zero();
  std::size_t m = 0;
  for (; m + 4 <= n; m += 4) {
    const typename L::T xv = L::load(x + m);
    L::madd(a0, xv, L::load(y + m));
    L::madd(a1, xv, L::load(y + stride + m));
    L::madd(a2, xv, L::load(y + 2 * stride + m));
    L::madd(a3, xv, L::load(y + 3 * stride + m));
  }
  double t[4] = {0, 0, 0, 0};
  for (; m < n; ++m)
    for (int i = 0; i < 4; ++i) t[i] += x[m] * y[i * stride + m];
  out[0] = L::combine(a0) + t[0];
  out[1] = L::combine(a1) + t[1];
  out[2] = L::combine(a2) + t[2];
  out[3] = L::combine(a3) + t[3];
}
// ... with the consecutive rows y, y + n, y + 2n, y + 3n.
template <class L>
MIXLAW_ALWAYS_INLINE void lane_dots4(const double* x, const double* y, std::size_t n, double (&out)[4]) {
  lane_dots4_strided<L>(x, y, n, n, out);
}
// sum_m (w_m v_m) v_m: the operations of lane_dot(tmp, v) with tmp = w v (a diagonal entry of B).
template <class L>
MIXLAW_ALWAYS_INLINE double lane_dot_sq(const double* w, const double* v, std::size_t n) {
  typename L::T acc = L::zero();
  std::size_t m = 0;
  for (; m + 4 <= n; m += 4) {
    const typename L::T vv = L::load(v + m);
    L::madd(acc, L::mul(L::load(w + m), vv), vv);
  }
  double t = 0.0;
  for (; m < n; ++m) t += (w[m] * v[m]) * v[m];
  return L::combine(acc) + t;
}

using Sums = GaussNewtonOperator::Sums;

// n doubles of per-thread scratch.
double* row_scratch(std::size_t n) {
  thread_local std::vector<double> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

inline std::size_t slot_pair(int q, int r) { return static_cast<std::size_t>(q * (q + 1) / 2 + r); }
constexpr std::size_t n_pairs = n_slots * (n_slots + 1) / 2;

// Where each slot's parameter gradients live in Sums::v: a global parameter (gradient 1) has
// no row, a mixture feature's a-th parameter has row voff + a.
struct SlotLayout {
  Source::Type kind[n_slots];
  std::size_t voff[n_slots];
  std::size_t nv = 0;
  explicit SlotLayout(const Plan& plan) {
    for (int q = 0; q < n_slots; ++q) {
      const Source& src = plan.src[q];
      kind[q] = src.type;
      voff[q] = nv;
      if (src.type == Source::feature) nv += plan.feature_params[src.index].size();
    }
  }
};

// Expands the mixtures' slot-space sums into parameter space: grad += sum_m sum_q gs_m[q] v_q(m)
// and B += sum_m sum_{q,r} Q_m[q][r] v_q(m) v_r(m)^T, where v_q(m) is slot q's parameter
// gradient at mixture m (1 for a global parameter, the feature's gradient for a mixture
// feature). The per-mixture sums are stored as they come (add) and expanded once per call
// (finish) with the mixtures innermost: every entry of B is then one contiguous dot product
// over the mixtures, which vectorises (expanding mixture by mixture, in short scattered
// rank-1 updates, took a quarter of a fit). Only the lower triangle
// Q[q][r], r <= q, is read. Each slot owns distinct parameters (law.cpp), so an entry of B
// receives exactly one pair's sum; B is symmetrised by the caller as B + B^T
// (objective_gauss_newton), so an off-diagonal sum may go to either triangle and a diagonal one
// is written at half weight. The sums go to `buf`: per-thread scratch for the dense B, or a
// GaussNewtonOperator that keeps them (finish then only adds the gradient).
class BatchedExpansion {
 public:
  BatchedExpansion(const FitProblem& pb, std::size_t n_mix, Sums& buf)
      : plan_(*pb.plan), n_(n_mix), lay_(plan_), Q_(buf.Q), g_(buf.g), v_(buf.v) {
    // Every entry that finish() reads is written by add() (every mixture is added), so the
    // buffers are reused as they are: no allocation or clearing per evaluation.
    Q_.resize(n_pairs * n_);
    g_.resize(n_slots * n_);
    v_.resize(lay_.nv * n_);
  }

  // Where mixture m's sums go: slot pair (q, r), r <= q, at pair_sums(q, r)[m] and slot q's
  // gradient sum at slot_sums(q)[m]; its feature gradients are copied by add_features.
  double* pair_sums(int q, int r) { return Q_.data() + pair(q, r) * n_; }
  double* slot_sums(int q) { return g_.data() + q * n_; }
  // Slot q's feature gradient rows: row a (the feature's a-th parameter) at +a * n_mix.
  double* feature_rows(int q) { return v_.data() + lay_.voff[q] * n_; }
  void add_features(std::size_t m, const MixtureWork& mw, int skip_slot = -1) {
    for (int q = 0; q < n_slots; ++q) {
      if (lay_.kind[q] != Source::feature || q == skip_slot) continue;
      const int f = plan_.src[q].index;
      const double* d = mw.dphi.data() + mw.dphi_off[f];
      const std::size_t len = plan_.feature_params[f].size();
      for (std::size_t a = 0; a < len; ++a) v_[(lay_.voff[q] + a) * n_ + m] = d[a];
    }
  }
  void add(std::size_t m, const double (&Q)[n_slots][n_slots], const double (&gs)[n_slots], const MixtureWork& mw) {
    for (int q = 0; q < n_slots; ++q) {
      if (lay_.kind[q] == Source::none) continue;
      g_[q * n_ + m] = gs[q];
      for (int r = 0; r <= q; ++r) Q_[pair(q, r) * n_ + m] = Q[q][r];
    }
    add_features(m, mw);
  }

  // grad += the mixtures' gradient sums and, unless B is null, B += the expansion (see above).
  // Compiled twice, for the baseline and for AVX2 (chosen at run time, as in vmath.hpp); both
  // give the same bits (see Lanes2x2).
#if MIXLAW_X86_DISPATCH
  void finish(double* grad, double* B, int P) const {
    if (cpu_has_avx2()) finish_avx2(grad, B, P);
    else finish_impl<Lanes2x2>(grad, B, P);
  }
  __attribute__((target("avx2"))) void finish_avx2(double* grad, double* B, int P) const {
    finish_impl<Lanes4>(grad, B, P);
  }
#else
  void finish(double* grad, double* B, int P) const { finish_impl<Lanes2x2>(grad, B, P); }
#endif

 private:
  template <class L>
  MIXLAW_ALWAYS_INLINE void finish_impl(double* grad, double* B, int P) const {
    for (int q = 0; q < n_slots; ++q) {
      if (lay_.kind[q] == Source::none) continue;
      const Vec vq = slot(q);
      const double* gq = g_.data() + q * n_;
      for (std::size_t a = 0; a < vq.len; ++a)
        grad[vq.idx[a]] += vq.v ? lane_dot<L>(gq, vq.v + a * n_, n_) : lane_sum<L>(gq, n_);
    }
    if (!B) return;
    double* tmp = row_scratch(n_);
    for (int q = 0; q < n_slots; ++q) {
      if (lay_.kind[q] == Source::none) continue;
      const Vec vq = slot(q);
      for (int r = 0; r <= q; ++r) {
        if (lay_.kind[r] == Source::none) continue;
        const Vec vr = slot(r);
        const bool diag = r == q;
        const double* w = Q_.data() + pair(q, r) * n_;
        for (std::size_t a = 0; a < vq.len; ++a) {
          double* row = B + static_cast<std::size_t>(vq.idx[a]) * P;
          if (!vr.v) {  // B_a = sum_m Q_qr(m) v_qa(m)
            const double s = vq.v ? lane_dot<L>(w, vq.v + a * n_, n_) : lane_sum<L>(w, n_);
            row[vr.idx[0]] += diag ? 0.5 * s : s;
            continue;
          }
          // tmp = Q_qr(m) v_qa(m); then B_ab = sum_m tmp(m) v_rb(m)
          const double* x = w;
          if (vq.v) {
            const double* va = vq.v + a * n_;
            for (std::size_t m = 0; m < n_; ++m) tmp[m] = w[m] * va[m];
            x = tmp;
          }
          const std::size_t bend = diag ? a + 1 : vr.len;
          std::size_t b = 0;
          for (; b + 4 <= bend; b += 4) {
            double s[4];
            lane_dots4<L>(x, vr.v + b * n_, n_, s);
            for (int i = 0; i < 4; ++i) row[vr.idx[b + i]] += diag && b + i == a ? 0.5 * s[i] : s[i];
          }
          for (; b < bend; ++b) {
            const double s = lane_dot<L>(x, vr.v + b * n_, n_);
            row[vr.idx[b]] += diag && b == a ? 0.5 * s : s;
          }
        }
      }
    }
  }

  struct Vec {
    const int* idx;
    const double* v;  // [a][m], or null for a global parameter (v = 1)
    std::size_t len;
  };
  Vec slot(int q) const {
    const Source& src = plan_.src[q];
    if (src.type == Source::param) return {&src.index, nullptr, 1};
    const auto& fp = plan_.feature_params[src.index];
    return {fp.data(), v_.data() + lay_.voff[q] * n_, fp.size()};
  }
  static std::size_t pair(int q, int r) { return slot_pair(q, r); }

  const Plan& plan_;
  std::size_t n_;
  SlotLayout lay_;
  std::vector<double>&Q_, &g_, &v_;  // [pair][m], [slot][m], [feature parameter][m]
};

// The sums behind the dense B, reused by every evaluation on this thread.
Sums& dense_scratch() {
  thread_local Sums s;
  return s;
}

// B x from the sums (GaussNewtonOperator::apply): per mixture, t_q = v_q . x for every slot q,
// s = Q t, then out += sum_m s_q(m) v_q(m). The mixtures go in blocks whose feature rows stay
// in cache between the two passes over them (t, then out); the block length depends on the
// law and problem only, so every build and vector width gives the same bits.
constexpr std::size_t apply_block_max = 512;
inline std::size_t apply_block(std::size_t nv) {
  std::size_t b = (std::size_t{1} << 16) / std::max<std::size_t>(nv, 1);  // about 512 KiB of rows
  return std::max<std::size_t>(16, std::min(apply_block_max, b & ~std::size_t{3}));
}

template <class L>
MIXLAW_ALWAYS_INLINE void operator_apply(const Plan& plan, std::size_t n, const Sums& sums, const double* x,
                                         double* out) {
  const SlotLayout lay(plan);
  std::fill(out, out + plan.n_params, 0.0);
  const double* Q = sums.Q.data();
  const double* v = sums.v.data();
  const std::size_t blk = apply_block(lay.nv);
  double t[n_slots][apply_block_max], s[n_slots][apply_block_max];
  for (std::size_t m0 = 0; m0 < n; m0 += blk) {
    const std::size_t nb = std::min(blk, n - m0);
    for (int q = 0; q < n_slots; ++q) {
      if (lay.kind[q] == Source::none) continue;
      double* tq = t[q];
      if (lay.kind[q] == Source::param) {
        std::fill(tq, tq + nb, x[plan.src[q].index]);
        continue;
      }
      const auto& idx = plan.feature_params[plan.src[q].index];
      const double* rows = v + lay.voff[q] * n + m0;
      std::fill(tq, tq + nb, 0.0);
      std::size_t a = 0;
      for (; a + 4 <= idx.size(); a += 4) {  // four rows per pass over t
        const double x0 = x[idx[a]], x1 = x[idx[a + 1]], x2 = x[idx[a + 2]], x3 = x[idx[a + 3]];
        const double *r0 = rows + a * n, *r1 = r0 + n, *r2 = r1 + n, *r3 = r2 + n;
        for (std::size_t i = 0; i < nb; ++i) {
          double acc = tq[i];
          acc += x0 * r0[i];
          acc += x1 * r1[i];
          acc += x2 * r2[i];
          acc += x3 * r3[i];
          tq[i] = acc;
        }
      }
      for (; a < idx.size(); ++a) {
        const double xa = x[idx[a]];
        const double* ra = rows + a * n;
        for (std::size_t i = 0; i < nb; ++i) tq[i] += xa * ra[i];
      }
    }
    for (int q = 0; q < n_slots; ++q) {
      if (lay.kind[q] == Source::none) continue;
      double* sq = s[q];
      std::fill(sq, sq + nb, 0.0);
      for (int r = 0; r < n_slots; ++r) {
        if (lay.kind[r] == Source::none) continue;
        const double* w = Q + (r <= q ? slot_pair(q, r) : slot_pair(r, q)) * n + m0;  // Q is symmetric
        const double* tr = t[r];
        for (std::size_t i = 0; i < nb; ++i) sq[i] += w[i] * tr[i];
      }
    }
    for (int q = 0; q < n_slots; ++q) {
      if (lay.kind[q] == Source::none) continue;
      const double* sq = s[q];
      if (lay.kind[q] == Source::param) {
        out[plan.src[q].index] += lane_sum<L>(sq, nb);
        continue;
      }
      const auto& idx = plan.feature_params[plan.src[q].index];
      const double* rows = v + lay.voff[q] * n + m0;
      std::size_t a = 0;
      for (; a + 4 <= idx.size(); a += 4) {
        double d[4];
        lane_dots4_strided<L>(sq, rows + a * n, n, nb, d);
        for (int i = 0; i < 4; ++i) out[idx[a + i]] += d[i];
      }
      for (; a < idx.size(); ++a) out[idx[a]] += lane_dot<L>(sq, rows + a * n, nb);
    }
  }
}

// diag(B): a parameter's entry has only its own slot's diagonal pair (slots own distinct
// parameters), sum_m Q_qq(m) v_qa(m)^2, summed as the dense expansion does.
template <class L>
MIXLAW_ALWAYS_INLINE void operator_diagonal(const Plan& plan, std::size_t n, const Sums& sums, double* out) {
  const SlotLayout lay(plan);
  std::fill(out, out + plan.n_params, 0.0);
  for (int q = 0; q < n_slots; ++q) {
    if (lay.kind[q] == Source::none) continue;
    const double* w = sums.Q.data() + slot_pair(q, q) * n;
    if (lay.kind[q] == Source::param) {
      out[plan.src[q].index] = lane_sum<L>(w, n);
      continue;
    }
    const auto& idx = plan.feature_params[plan.src[q].index];
    const double* rows = sums.v.data() + lay.voff[q] * n;
    for (std::size_t a = 0; a < idx.size(); ++a) out[idx[a]] = lane_dot_sq<L>(w, rows + a * n, n);
  }
}

#if MIXLAW_X86_DISPATCH
__attribute__((target("avx2"))) void operator_apply_avx2(const Plan& plan, std::size_t n, const Sums& sums,
                                                         const double* x, double* out) {
  operator_apply<Lanes4>(plan, n, sums, x, out);
}
__attribute__((target("avx2"))) void operator_diagonal_avx2(const Plan& plan, std::size_t n, const Sums& sums,
                                                            double* out) {
  operator_diagonal<Lanes4>(plan, n, sums, out);
}
#endif

// Gradient and B = sum_j c_j omega_j J_j J_j^T, with J_j = sum_slots u_j[q] * (slot q's
// parameter gradient at mixture m). Per mixture, Q = sum_j c_j omega_j v_j v_j^T over the
// 6 slots is accumulated first and expanded into parameter space once. (The general path,
// for log residuals and per-mixture exponents; see gauss_newton_segments for the common one.)
struct GaussNewtonVisitor {
  const FitProblem& pb;
  BatchedExpansion expand;
  double f = 0.0;
  double gs[n_slots] = {0, 0, 0, 0, 0, 0};
  double Q[n_slots][n_slots] = {};

  GaussNewtonVisitor(const FitProblem& pb_, Sums& buf) : pb(pb_), expand(pb_, pb_.rec->n_mix, buf) {}
  // Records are buffered (slot values u in structure-of-arrays form, prediction L) and
  // reduced a chunk at a time: the per-slot sums then run as vectorisable loops over
  // records with their accumulators in registers, instead of 27 read-modify-writes of
  // Q and gs per record.
  static constexpr int chunk = 64;
  double ub[n_slots][chunk];
  double Lb[chunk];
  std::size_t s0 = 0;  // grouped position of the first buffered record (records of a mixture are contiguous)
  int nb = 0;

  void begin_mixture(std::size_t, const MixtureWork&) {
    std::fill(gs, gs + n_slots, 0.0);
    for (auto& row : Q) std::fill(row, row + n_slots, 0.0);
    nb = 0;
  }
  void record(std::size_t s, double L, const double* u) {
    if (nb == 0) s0 = s;
    Lb[nb] = L;
    for (int q = slot_aN; q < n_slots; ++q) ub[q][nb] = u[q];
    if (++nb == chunk) flush();
  }
  void flush() {
    const int n = nb;
    nb = 0;
    if (n == 0) return;
    const double* y = pb.y.data() + s0;
    const double* c = pb.c.data() + s0;
    double ab[chunk], wb[chunk];  // c psi dr/dL and c * curvature * (dr/dL)^2
    double fsum = 0.0;
    if (pb.spec.log_residual) {
      for (int i = 0; i < n; ++i) {
        const Pointwise p = pointwise(pb.spec, Lb[i], y[i]);
        fsum += c[i] * p.rho;
        ab[i] = c[i] * p.psi * p.drdL;
        wb[i] = c[i] * (p.omega == 1.0 ? 1.0 : pb.spec.outside_weight * p.omega) * p.drdL * p.drdL;
      }
    } else {  // raw residuals: branch-free Huber so the loop vectorises
      const bool huber = pb.spec.loss == LossKind::huber;
      const double delta = huber ? pb.spec.delta : std::numeric_limits<double>::infinity();
      const double owd = pb.spec.outside_weight * delta;
#pragma omp simd reduction(+ : fsum)
      for (int i = 0; i < n; ++i) {
        const HuberTerms h = huber_raw<true>(Lb[i] - y[i], delta, owd);
        fsum += c[i] * h.rho;
        ab[i] = c[i] * h.psi;
        wb[i] = c[i] * h.om;
      }
    }
    f += fsum;
    // Slots E and M have u = 1 at every record (see for_each_record): their sums are shared.
    double sw = 0.0, sa = 0.0;
#pragma omp simd reduction(+ : sw, sa)
    for (int i = 0; i < n; ++i) {
      sw += wb[i];
      sa += ab[i];
    }
    const bool hasM = pb.plan->src[slot_M].type != Source::none;
    gs[slot_E] += sa;
    Q[slot_E][slot_E] += sw;
    if (hasM) {
      gs[slot_M] += sa;
      Q[slot_M][slot_E] += sw;
      Q[slot_M][slot_M] += sw;
    }
    for (int q = slot_aN; q < n_slots; ++q) {
      if (pb.plan->src[q].type == Source::none) continue;
      const double* uq = ub[q];
      double g = 0.0, w1 = 0.0;
#pragma omp simd reduction(+ : g, w1)
      for (int i = 0; i < n; ++i) {
        g += ab[i] * uq[i];
        w1 += wb[i] * uq[i];
      }
      gs[q] += g;
      Q[q][slot_E] += w1;
      if (hasM) Q[q][slot_M] += w1;
      for (int r = slot_aN; r <= q; ++r) {
        if (pb.plan->src[r].type == Source::none) continue;
        const double* ur = ub[r];
        double acc = 0.0;
#pragma omp simd reduction(+ : acc)
        for (int i = 0; i < n; ++i) acc += wb[i] * uq[i] * ur[i];
        Q[q][r] += acc;
      }
    }
  }
  void end_mixture(std::size_t m, const MixtureWork& mw) {
    flush();
    expand.add(m, Q, gs, mw);
  }
};

template <bool ParamGrad, class Visitor>
void walk(const FitProblem& pb, const double* theta, Visitor& vis) {
  const detail::CallConstants cc = detail::call_constants(*pb.plan, theta, *pb.rec);
  MixtureWork w(*pb.plan);
  detail::for_each_record<ParamGrad, false>(*pb.plan, theta, *pb.rec, cc, 0, pb.rec->n_mix, w, vis);
}

// The Gauss-Newton fast path (see FitProblem): raw residuals, exponents global (or absent).
void build_segments(FitProblem& pb) {
  const Plan& plan = *pb.plan;
  const Records& rec = *pb.rec;
  pb.segmented = !pb.spec.log_residual && !plan.spec.repetition && plan.src[slot_bN].type != Source::feature &&
                 plan.src[slot_bD].type != Source::feature;
  if (!pb.segmented) return;
  const bool hasN = plan.src[slot_aN].type != Source::none;
  std::vector<std::size_t> perm;
  pb.mix_seg.assign(1, 0);
  pb.sd.reserve(rec.n);
  pb.sy.reserve(rec.n);
  pb.sc.reserve(rec.n);
  pb.seg_start.assign(1, 0);
  for (std::size_t m = 0; m < rec.n_mix; ++m) {
    perm.clear();
    for (std::size_t s = rec.mix_start[m]; s < rec.mix_start[m + 1]; ++s) perm.push_back(s);
    if (hasN)
      std::stable_sort(perm.begin(), perm.end(),
                       [&](std::size_t a, std::size_t b) { return rec.n_idx[a] < rec.n_idx[b]; });
    for (std::size_t i = 0; i < perm.size(); ++i) {
      const std::size_t s = perm[i];
      const std::int32_t n = hasN ? rec.n_idx[s] : 0;
      if (i == 0 || n != pb.seg_n.back()) {  // a new segment starts here
        if (i > 0) pb.seg_start.push_back(pb.sd.size());
        pb.seg_n.push_back(n);
      }
      pb.sd.push_back(rec.d_idx[s]);
      pb.sy.push_back(pb.y[s]);
      pb.sc.push_back(pb.c[s]);
    }
    if (!perm.empty()) pb.seg_start.push_back(pb.sd.size());
    pb.mix_seg.push_back(pb.seg_n.size());
  }
}

// The nine sums of one segment and its objective: w = c omega, a = c psi, D = eD, X = xD eD.
struct SegmentSums {
  double f = 0, w = 0, a = 0, wD = 0, wX = 0, wDD = 0, wDX = 0, wXX = 0, aD = 0, aX = 0;
};

// With IRLS curvature (owd/|r| outside the Huber band, curvature="irls") every record has a
// curvature weight, so all ten sums run over every record (the exact curvature, the default,
// uses segment_sums_exact below).
inline void segment_sums_irls(SegmentSums& out, double base, double aD, double delta, double owd,
                              const std::int32_t* sd, const double* sy, const double* sc, const double* eD,
                              const double* xeD, std::size_t s0, std::size_t s1) {
  double f = 0, Sw = 0, Sa = 0, SwD = 0, SwX = 0, SwDD = 0, SwDX = 0, SwXX = 0, SaD = 0, SaX = 0;
#pragma omp simd reduction(+ : f, Sw, Sa, SwD, SwX, SwDD, SwDX, SwXX, SaD, SaX)
  for (std::size_t s = s0; s < s1; ++s) {
    const double e = eD[sd[s]], xe = xeD[sd[s]];
    const HuberTerms h = huber_raw<true>(base + aD * e - sy[s], delta, owd);
    const double ab = sc[s] * h.psi, wb = sc[s] * h.om;
    f += sc[s] * h.rho;
    Sw += wb;
    Sa += ab;
    SwD += wb * e;
    SwX += wb * xe;
    SwDD += wb * e * e;
    SwDX += wb * e * xe;
    SwXX += wb * xe * xe;
    SaD += ab * e;
    SaX += ab * xe;
  }
  out = {f, Sw, Sa, SwD, SwX, SwDD, SwDX, SwXX, SaD, SaX};
}

// The same sums with the exact Huber curvature (zero outside the band, the default): most
// residuals at and near a fit lie outside the band (about 90% on the SlimPajama targets),
// where only the objective and the psi-sums are needed. One pass computes those for every
// record and notes the in-band ones (a branch-free append); the curvature sums then run
// over the in-band records alone.
inline void segment_sums_exact(SegmentSums& out, double base, double aD, double delta, const std::int32_t* sd,
                               const double* sy, const double* sc, const double* eD, const double* xeD,
                               std::size_t s0, std::size_t s1, std::size_t* inband) {
  double f = 0, Sa = 0, SaD = 0, SaX = 0;
  std::size_t nin = 0;
  for (std::size_t s = s0; s < s1; ++s) {
    const double e = eD[sd[s]], xe = xeD[sd[s]];
    const HuberTerms h = huber_raw<false>(base + aD * e - sy[s], delta, 0.0);
    const double ab = sc[s] * h.psi;
    f += sc[s] * h.rho;
    Sa += ab;
    SaD += ab * e;
    SaX += ab * xe;
    inband[nin] = s;
    nin += h.om != 0.0;
  }
  double Sw = 0, SwD = 0, SwX = 0, SwDD = 0, SwDX = 0, SwXX = 0;
  for (std::size_t i = 0; i < nin; ++i) {
    const std::size_t s = inband[i];
    const double e = eD[sd[s]], xe = xeD[sd[s]], wb = sc[s];
    Sw += wb;
    SwD += wb * e;
    SwX += wb * xe;
    SwDD += wb * e * e;
    SwDX += wb * e * xe;
    SwXX += wb * xe * xe;
  }
  out = {f, Sw, Sa, SwD, SwX, SwDD, SwDX, SwXX, SaD, SaX};
}

// phi = 1/S, S = sum_i C_i h_i^gamma_i, for every mixture (returned: a per-thread buffer), and
// phi's gradient in (C, gamma) into rows[a * n_mix + m]: -t_i / S^2 and -C_i t_i log h_i / S^2.
const double* batched_inv_power_sum(const Feature& F, const double* theta, const Records& rec, double* rows) {
  thread_local std::vector<double> t, phi, inv2;
  const std::size_t nm = rec.n_mix, k = static_cast<std::size_t>(rec.k);
  const double* C = theta + F.c_off;
  const double* g = theta + F.g_off;
  t.resize(nm * k);
  phi.resize(nm);
  inv2.resize(nm);
  // The loops that read h and log h (stored [m][i]) while writing [i][m] go through the mixtures
  // in tiles: a tile's rows of h stay in cache across the domains (a plain pass over m took one
  // cache miss per element at large k). Element by element the same operations.
  constexpr std::size_t tile = 32;
  const double* lh = rec.mix_logh.data();
  const double* h = rec.mix_h.data();
  for (std::size_t m0 = 0; m0 < nm; m0 += tile) {
    const std::size_t m1 = std::min(nm, m0 + tile);
    for (std::size_t i = 0; i < k; ++i)
      for (std::size_t m = m0; m < m1; ++m) t[i * nm + m] = g[i] * lh[m * k + i];
  }
  vexp(t.data(), t.data(), static_cast<int>(t.size()));
  for (std::size_t m0 = 0; m0 < nm; m0 += tile) {  // a domain with h_i == 0 contributes nothing (lh is 0 there)
    const std::size_t m1 = std::min(nm, m0 + tile);
    for (std::size_t i = 0; i < k; ++i)
      for (std::size_t m = m0; m < m1; ++m) t[i * nm + m] = h[m * k + i] > 0 ? t[i * nm + m] : 0.0;
  }
  std::fill(phi.begin(), phi.end(), 0.0);
  for (std::size_t i = 0; i < k; ++i)
    for (std::size_t m = 0; m < nm; ++m) phi[m] += C[i] * t[i * nm + m];  // S, summed over i in order
  for (std::size_t m = 0; m < nm; ++m) {
    const double inv = 1.0 / phi[m];
    phi[m] = inv;
    inv2[m] = inv * inv;
  }
  for (std::size_t m0 = 0; m0 < nm; m0 += tile) {
    const std::size_t m1 = std::min(nm, m0 + tile);
    for (std::size_t i = 0; i < k; ++i)
      for (std::size_t m = m0; m < m1; ++m) {
        const double ti = t[i * nm + m];
        rows[i * nm + m] = -ti * inv2[m];
        rows[(k + i) * nm + m] = -C[i] * ti * lh[m * k + i] * inv2[m];
      }
  }
  return phi.data();
}

// Value, gradient and Gauss-Newton matrix on the segments. With the exponents global,
// u = dL/d(slot) is (1, 1, eN, -aN xN eN, eD, -aD xD eD) where eN, xN are constant within
// a segment: the slot sums Q = sum c omega u u^T and gs = sum c psi u then follow from nine
// sums over the segment's records (of 1, eD, xD eD and their products) with accumulators in
// registers, instead of 27 products per record; with the exact curvature the six curvature
// sums run over the in-band records only (segment_sums_exact). Segments are short (about 9
// checkpoints of one run), so the loops stay scalar: a branch-free Huber and whole-vector
// sums over padded segments were both slower (bench/README.md, section 2).
double gauss_newton_segments(const FitProblem& pb, const double* theta, double* grad, double* B, double reject,
                             Sums& buf) {
  const Plan& plan = *pb.plan;
  const Records& rec = *pb.rec;
  const int P = plan.n_params;
  const detail::CallConstants cc = detail::call_constants(plan, theta, rec);
  const Source sM = plan.src[slot_M], saN = plan.src[slot_aN], saD = plan.src[slot_aD];
  const bool hasE = plan.src[slot_E].type != Source::none, hasM = sM.type != Source::none;
  const bool hasN = saN.type != Source::none, hasD = saD.type != Source::none;
  // Per distinct N and D: the term's value e and x e (x = log of the rescaled size).
  std::vector<double> eN(rec.uniq_lnN.size(), 0.0), xeN(eN.size(), 0.0);
  std::vector<double> eD(rec.uniq_lnD.size(), 0.0), xeD(eD.size(), 0.0);
  if (hasN)
    for (std::size_t i = 0; i < eN.size(); ++i) {
      eN[i] = cc.eN_uniq[i];
      xeN[i] = (rec.uniq_lnN[i] - cc.ln_n_scale) * eN[i];
    }
  if (hasD)
    for (std::size_t i = 0; i < eD.size(); ++i) {
      eD[i] = cc.eD_uniq[i];
      xeD[i] = (rec.uniq_lnD[i] - cc.ln_d_scale) * eD[i];
    }
  const bool huber = pb.spec.loss == LossKind::huber;
  const double delta = huber ? pb.spec.delta : std::numeric_limits<double>::infinity();
  const double ow = pb.spec.outside_weight;
  const std::int32_t* sd = pb.sd.data();
  const double* sy = pb.sy.data();
  const double* sc = pb.sc.data();
  const double* peD = eD.data();
  const double* pxD = xeD.data();

  BatchedExpansion expand(pb, rec.n_mix, buf);
  double* qsum[n_slots][n_slots] = {};  // the mixtures' slot sums are written straight into the expansion
  double* gsum[n_slots];
  for (int q = 0; q < n_slots; ++q) {
    gsum[q] = expand.slot_sums(q);
    for (int r = 0; r <= q; ++r) qsum[q][r] = expand.pair_sums(q, r);
  }
  MixtureWork mw(plan);
  std::size_t longest = 0;
  for (std::size_t g = 0; g + 1 < pb.seg_start.size(); ++g)
    longest = std::max(longest, pb.seg_start[g + 1] - pb.seg_start[g]);
  std::vector<std::size_t> inband(longest);
  // The mixture term 1/S(h) (inv_power_sum) of every mixture at once, mixtures innermost:
  // h_i^gamma_i by one batched exp (vmath.hpp) and its parameter gradient written straight
  // into the expansion. Same operations, in the same order, as mixture_features.
  const int fM = sM.type == Source::feature && plan.features[sM.index].kind == Feature::inv_power_sum ? sM.index : -1;
  const double* phiM =
      fM >= 0 ? batched_inv_power_sum(plan.features[fM], theta, rec, expand.feature_rows(slot_M)) : nullptr;
  double f = 0.0;
  for (std::size_t m = 0; m < rec.n_mix; ++m) {
    if (rec.k > 0) detail::mixture_features<true, false>(plan, theta, rec, m, mw, fM);
    const double M = fM >= 0 ? phiM[m] : detail::source_value(sM, theta, mw);
    const double aN = detail::source_value(saN, theta, mw), aD = detail::source_value(saD, theta, mw);
    // The slot sums of the mixture are linear in its segments' sums, with coefficients
    // fN, gN of the segment's model size: sum the distinct products over the segments
    // (in registers) and form the 6 x 6 slot matrix once per mixture.
    double A0 = 0, A1 = 0, A2 = 0, A3 = 0, A4 = 0, A5 = 0;       // Sw x (1, fN, fN^2, gN, fN gN, gN^2)
    double D0 = 0, D1 = 0, D2 = 0, DD = 0;                         // SwD x (1, fN, gN), SwDD
    double X0 = 0, X1 = 0, X2 = 0, DX = 0, XX = 0;                 // SwX x (1, fN, gN), SwDX, SwXX
    double G0 = 0, G1 = 0, G2 = 0, GD = 0, GX = 0;                 // Sa x (1, fN, gN), SaD, SaX
    for (std::size_t g = pb.mix_seg[m]; g < pb.mix_seg[m + 1]; ++g) {
      const std::int32_t n = pb.seg_n[g];
      const double fN = hasN ? eN[n] : 0.0, gN = hasN ? -aN * xeN[n] : 0.0;
      const double base = cc.E + M + aN * fN;
      SegmentSums ss;
      if (ow == 0.0)
        segment_sums_exact(ss, base, aD, delta, sd, sy, sc, peD, pxD, pb.seg_start[g], pb.seg_start[g + 1],
                           inband.data());
      else
        segment_sums_irls(ss, base, aD, delta, ow * delta, sd, sy, sc, peD, pxD, pb.seg_start[g],
                          pb.seg_start[g + 1]);
      f += ss.f;
      A0 += ss.w;
      A1 += fN * ss.w;
      A2 += fN * fN * ss.w;
      A3 += gN * ss.w;
      A4 += fN * gN * ss.w;
      A5 += gN * gN * ss.w;
      D0 += ss.wD;
      D1 += fN * ss.wD;
      D2 += gN * ss.wD;
      DD += ss.wDD;
      X0 += ss.wX;
      X1 += fN * ss.wX;
      X2 += gN * ss.wX;
      DX += ss.wDX;
      XX += ss.wXX;
      G0 += ss.a;
      G1 += fN * ss.a;
      G2 += gN * ss.a;
      GD += ss.aD;
      GX += ss.aX;
    }
    // u = (1, 1, fN, gN, e, -aD x e) on slots (E, M, aN, bN, aD, bD); absent slots get 0
    // (and are skipped by the expansion).
    const double uE = hasE ? 1.0 : 0.0, uM = hasM ? 1.0 : 0.0;
    gsum[slot_E][m] = uE * G0;
    gsum[slot_M][m] = uM * G0;
    gsum[slot_aN][m] = G1;
    gsum[slot_bN][m] = G2;
    qsum[slot_E][slot_E][m] = uE * A0;
    qsum[slot_M][slot_E][m] = uM * uE * A0;
    qsum[slot_M][slot_M][m] = uM * A0;
    qsum[slot_aN][slot_E][m] = uE * A1;
    qsum[slot_aN][slot_M][m] = uM * A1;
    qsum[slot_aN][slot_aN][m] = A2;
    qsum[slot_bN][slot_E][m] = uE * A3;
    qsum[slot_bN][slot_M][m] = uM * A3;
    qsum[slot_bN][slot_aN][m] = A4;
    qsum[slot_bN][slot_bN][m] = A5;
    if (hasD) {
      gsum[slot_aD][m] = GD;
      gsum[slot_bD][m] = -aD * GX;
      qsum[slot_aD][slot_E][m] = uE * D0;
      qsum[slot_aD][slot_M][m] = uM * D0;
      qsum[slot_aD][slot_aN][m] = D1;
      qsum[slot_aD][slot_bN][m] = D2;
      qsum[slot_aD][slot_aD][m] = DD;
      qsum[slot_bD][slot_E][m] = -aD * uE * X0;
      qsum[slot_bD][slot_M][m] = -aD * uM * X0;
      qsum[slot_bD][slot_aN][m] = -aD * X1;
      qsum[slot_bD][slot_bN][m] = -aD * X2;
      qsum[slot_bD][slot_aD][m] = -aD * DX;
      qsum[slot_bD][slot_bD][m] = aD * aD * XX;
    }
    expand.add_features(m, mw, fM >= 0 ? slot_M : -1);
  }
  if (f < reject) expand.finish(grad, B, P);  // else the caller discards grad and B (B null: kept as sums)
  return f;
}

}  // namespace

FitProblem make_problem(const Plan& plan, const Records& rec, const double* y, const double* weights,
                        bool mean, const ObjectiveSpec& spec) {
  if (rec.k != plan.spec.k) throw std::invalid_argument("H: records and law disagree on the number of domains");
  if (!(spec.delta > 0) || !std::isfinite(spec.delta)) throw std::invalid_argument("delta: must be finite and > 0");
  check_fit_records(plan, rec);
  check_repetition_records(plan, rec);
  FitProblem pb;
  pb.plan = &plan;
  pb.rec = &rec;
  pb.spec = spec;
  pb.y.resize(rec.n);
  pb.c.resize(rec.n);
  double total = 0.0;
  for (std::size_t s = 0; s < rec.n; ++s) {
    const auto j = static_cast<std::size_t>(rec.order[s]);
    if (!std::isfinite(y[j])) throw std::invalid_argument("y: value " + std::to_string(j) + " is not finite");
    if (spec.log_residual && !(y[j] > 0))
      throw std::invalid_argument("y: value " + std::to_string(j) + " must be > 0 for log residuals");
    const double c = weights ? weights[j] : 1.0;
    if (!std::isfinite(c) || c < 0) throw std::invalid_argument("weights: value " + std::to_string(j) + " must be finite and >= 0");
    pb.y[s] = y[j];
    pb.c[s] = c;
    total += c;
  }
  if (!(total > 0)) throw std::invalid_argument("weights: must not all be zero");
  if (mean)
    for (double& c : pb.c) c /= total;
  build_segments(pb);
  return pb;
}

namespace {

// Data-constrained laws (repetition.hpp): value, gradient (may be null) and Gauss-Newton
// matrix (may be null; lower and upper triangles written) from the law's full Jacobian,
// O(records x P^2) per call: no slot structure, since R_D's column mixes every term.
double repeated_objective(const FitProblem& pb, const double* theta, double* grad, double* B, double reject) {
  const Records& rec = *pb.rec;
  const std::size_t n = rec.n, P = static_cast<std::size_t>(pb.plan->n_params);
  thread_local std::vector<double> L, J;
  L.resize(n);
  J.resize(grad ? n * P : 0);
  evaluate_repeated(*pb.plan, theta, rec, L.data(), grad ? J.data() : nullptr, nullptr, 1);
  double f = 0.0;
  for (std::size_t s = 0; s < n; ++s) f += pb.c[s] * pointwise(pb.spec, L[rec.order[s]], pb.y[s]).rho;
  if (!grad || !(f < reject)) return f;
  std::fill(grad, grad + P, 0.0);
  if (B) std::fill(B, B + P * P, 0.0);
  for (std::size_t s = 0; s < n; ++s) {
    const std::size_t j = static_cast<std::size_t>(rec.order[s]);
    const Pointwise p = pointwise(pb.spec, L[j], pb.y[s]);
    const double a = pb.c[s] * p.psi * p.drdL;
    const double* row = J.data() + j * P;
    for (std::size_t q = 0; q < P; ++q) grad[q] += a * row[q];
    if (!B) continue;
    const double w = pb.c[s] * (p.omega == 1.0 ? 1.0 : pb.spec.outside_weight * p.omega) * p.drdL * p.drdL;
    if (w == 0.0) continue;
    for (std::size_t q = 0; q < P; ++q) {
      const double wq = w * row[q];
      for (std::size_t r = 0; r <= q; ++r) B[q * P + r] += wq * row[r];
    }
  }
  if (B)
    for (std::size_t q = 0; q < P; ++q)
      for (std::size_t r = 0; r < q; ++r) B[r * P + q] = B[q * P + r];
  return f;
}

}  // namespace

double objective_value(const FitProblem& pb, const double* theta) {
  if (pb.plan->spec.repetition) return repeated_objective(pb, theta, nullptr, nullptr, 0.0);
  ValueVisitor v{pb};
  walk<false>(pb, theta, v);
  return v.f;
}

double objective_grad(const FitProblem& pb, const double* theta, double* grad) {
  if (pb.plan->spec.repetition)
    return repeated_objective(pb, theta, grad, nullptr, std::numeric_limits<double>::infinity());
  std::fill(grad, grad + pb.plan->n_params, 0.0);
  GradVisitor v{pb, theta, grad};
  walk<false>(pb, theta, v);
  return v.f;
}

double objective_gauss_newton(const FitProblem& pb, const double* theta, double* grad, double* B, double reject) {
  if (pb.plan->spec.repetition) return repeated_objective(pb, theta, grad, B, reject);
  const int P = pb.plan->n_params;
  std::fill(grad, grad + P, 0.0);
  std::fill(B, B + static_cast<std::size_t>(P) * P, 0.0);
  double f;
  if (pb.segmented) {
    f = gauss_newton_segments(pb, theta, grad, B, reject, dense_scratch());
  } else {
    GaussNewtonVisitor v{pb, dense_scratch()};
    walk<true>(pb, theta, v);
    f = v.f;
    if (f < reject) v.expand.finish(grad, B, P);
  }
  if (!(f < reject)) return f;
  for (int p = 0; p < P; ++p)
    for (int q = 0; q <= p; ++q) {
      const double s = B[static_cast<std::size_t>(p) * P + q] + B[static_cast<std::size_t>(q) * P + p];
      B[static_cast<std::size_t>(p) * P + q] = s;
      B[static_cast<std::size_t>(q) * P + p] = s;
    }
  return f;
}

double objective_gauss_newton_operator(const FitProblem& pb, const double* theta, double* grad,
                                       GaussNewtonOperator& op, double reject) {
  if (pb.plan->spec.repetition)
    throw std::invalid_argument("linear_solver: data-constrained laws (repetition=True) take dense steps only");
  const int P = pb.plan->n_params;
  std::fill(grad, grad + P, 0.0);
  op.plan_ = pb.plan;
  op.n_mix_ = pb.rec->n_mix;
  op.P_ = P;
  // objective_gauss_newton's code with the sums kept in op and B not expanded.
  if (pb.segmented) return gauss_newton_segments(pb, theta, grad, nullptr, reject, op.sums_);
  GaussNewtonVisitor v{pb, op.sums_};
  walk<true>(pb, theta, v);
  if (v.f < reject) v.expand.finish(grad, nullptr, P);
  return v.f;
}

// A solver keeps the current and the trial point's operators and swaps them.
static_assert(std::is_nothrow_move_constructible<GaussNewtonOperator>::value &&
                  std::is_nothrow_move_assignable<GaussNewtonOperator>::value &&
                  std::is_nothrow_swappable<GaussNewtonOperator>::value,
              "GaussNewtonOperator: cheap to swap");

void GaussNewtonOperator::apply(const double* x, double* out) const {
  if (!plan_) return;
#if MIXLAW_X86_DISPATCH
  if (cpu_has_avx2()) return operator_apply_avx2(*plan_, n_mix_, sums_, x, out);
#endif
  operator_apply<Lanes2x2>(*plan_, n_mix_, sums_, x, out);
}

void GaussNewtonOperator::diagonal(double* out) const {
  if (!plan_) return;
#if MIXLAW_X86_DISPATCH
  if (cpu_has_avx2()) return operator_diagonal_avx2(*plan_, n_mix_, sums_, out);
#endif
  operator_diagonal<Lanes2x2>(*plan_, n_mix_, sums_, out);
}

void residuals(const FitProblem& pb, const double* theta, double* out) {
  if (pb.plan->spec.repetition) {
    std::vector<double> L(pb.rec->n);
    evaluate_repeated(*pb.plan, theta, *pb.rec, L.data(), nullptr, nullptr, 1);
    for (std::size_t s = 0; s < pb.rec->n; ++s) {
      const std::size_t j = static_cast<std::size_t>(pb.rec->order[s]);
      out[j] = pointwise(pb.spec, L[j], pb.y[s]).r;
    }
    return;
  }
  struct V {
    const FitProblem& pb;
    double* out;
    void begin_mixture(std::size_t, const MixtureWork&) {}
    void record(std::size_t s, double L, const double*) {
      out[pb.rec->order[s]] = pointwise(pb.spec, L, pb.y[s]).r;
    }
    void end_mixture(std::size_t, const MixtureWork&) {}
  } v{pb, out};
  walk<false>(pb, theta, v);
}

}  // namespace mixlaw
