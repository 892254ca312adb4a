#include "mixlaw/evaluate.hpp"

#include <algorithm>

#include "mixlaw/parallel.hpp"
#include "mixlaw/repetition.hpp"

namespace mixlaw {
namespace detail {

CallConstants call_constants(const Plan& plan, const double* theta, const Records& rec, const CancelFlag* cancel) {
  CallConstants cc;
  cc.ln_n_scale = std::log(plan.spec.n_scale);
  cc.ln_d_scale = std::log(plan.spec.d_scale);
  cc.E = plan.src[slot_E].type == Source::param ? theta[plan.src[slot_E].index] : 0.0;
  const Source bN = plan.src[slot_bN], bD = plan.src[slot_bD];
  if (bN.type == Source::param) {
    const double b = theta[bN.index];
    cc.eN_uniq.resize(rec.uniq_lnN.size());
    for (std::size_t i = 0; i < rec.uniq_lnN.size(); ++i) {
      if (cancel && (i & 4095) == 0 && cancel->is_set()) throw Cancelled();
      cc.eN_uniq[i] = std::exp(-b * (rec.uniq_lnN[i] - cc.ln_n_scale));
    }
  }
  if (bD.type == Source::param) {
    const double b = theta[bD.index];
    cc.eD_uniq.resize(rec.uniq_lnD.size());
    for (std::size_t i = 0; i < rec.uniq_lnD.size(); ++i) {
      if (cancel && (i & 4095) == 0 && cancel->is_set()) throw Cancelled();
      cc.eD_uniq[i] = std::exp(-b * (rec.uniq_lnD[i] - cc.ln_d_scale));
    }
  }
  return cc;
}

}  // namespace detail

namespace {

using detail::MixtureWork;

struct PredictVisitor {
  const Records& rec;
  double* out;
  void begin_mixture(std::size_t, const MixtureWork&) {}
  void record(std::size_t s, double L, const double*) { out[rec.order[s]] = L; }
  void end_mixture(std::size_t, const MixtureWork&) {}
};

// Accumulates J^T w: per mixture, the six slot sums sum_j w_j u_j[slot] are accumulated
// branch-free, then sent once to their global parameter or, through one adjoint per feature,
// to the feature's k-long gradient (so per-record work is a handful of multiply-adds).
struct GradVisitor {
  const Plan& plan;
  const Records& rec;
  const double* theta;
  const double* w;
  double* pred;
  double* grad;  // chunk-local partial gradient
  double acc[n_slots] = {0, 0, 0, 0, 0, 0};

  void begin_mixture(std::size_t, const MixtureWork&) { std::fill(acc, acc + n_slots, 0.0); }
  void record(std::size_t s, double L, const double* u) {
    const std::int64_t j = rec.order[s];
    if (pred) pred[j] = L;
    const double wj = w[j];
    for (int a = 0; a < n_slots; ++a) acc[a] += wj * u[a];
  }
  void end_mixture(std::size_t m, const MixtureWork& mw) {
    double adj[detail::max_features] = {0, 0, 0, 0, 0};
    for (int a = 0; a < n_slots; ++a) {
      const Source& src = plan.src[a];
      if (src.type == Source::param) grad[src.index] += acc[a];
      else if (src.type == Source::feature) adj[src.index] += acc[a];
    }
    for (std::size_t f = 0; f < plan.features.size(); ++f)
      detail::accumulate_feature_grad(plan, static_cast<int>(f), theta, rec, m, mw, adj[f], grad);
  }
};

struct JacobianVisitor {
  const Plan& plan;
  const Records& rec;
  double* pred;
  double* J;
  const MixtureWork* mw = nullptr;
  void begin_mixture(std::size_t, const MixtureWork& w) { mw = &w; }
  void record(std::size_t s, double L, const double* u) {
    const std::int64_t j = rec.order[s];
    if (pred) pred[j] = L;
    detail::jacobian_row(plan, u, *mw, J + static_cast<std::size_t>(j) * static_cast<std::size_t>(plan.n_params));
  }
  void end_mixture(std::size_t, const MixtureWork&) {}
};

struct HGradVisitor {
  const Plan& plan;
  const Records& rec;
  double* out;
  const MixtureWork* mw = nullptr;
  void begin_mixture(std::size_t, const MixtureWork& w) { mw = &w; }
  void record(std::size_t s, double, const double* u) {
    detail::h_gradient_row(plan, u, *mw,
                           out + static_cast<std::size_t>(rec.order[s]) * static_cast<std::size_t>(plan.spec.k));
  }
  void end_mixture(std::size_t, const MixtureWork&) {}
};

// Runs a visitor built per chunk over every chunk in parallel.
template <bool ParamGrad, bool HGrad, class MakeVisitor>
void run_chunks(const Plan& plan, const double* theta, const Records& rec, int threads, const CancelFlag* cancel,
                MakeVisitor make) {
  const detail::CallConstants cc = detail::call_constants(plan, theta, rec, cancel);
  parallel_for(
      rec.n_chunks(), threads,
      [&](std::size_t c) {
        MixtureWork w(plan);
        auto vis = make(c);
        detail::for_each_record<ParamGrad, HGrad>(plan, theta, rec, cc, rec.chunk_start[c],
                                                  rec.chunk_start[c + 1], w, vis, cancel);
      },
      cancel);
}

}  // namespace

void predict(const Plan& plan, const double* theta, const Records& rec, double* out, int threads,
             const CancelFlag* cancel) {
  if (plan.spec.repetition) return evaluate_repeated(plan, theta, rec, out, nullptr, nullptr, threads, cancel);
  run_chunks<false, false>(plan, theta, rec, threads, cancel, [&](std::size_t) { return PredictVisitor{rec, out}; });
}

void predict_grad(const Plan& plan, const double* theta, const Records& rec, const double* w,
                  double* pred, double* grad, int threads, const CancelFlag* cancel) {
  const std::size_t P = static_cast<std::size_t>(plan.n_params);
  if (plan.spec.repetition) {  // J^T w from the Jacobian: O(n P) memory, in a fixed order
    std::vector<double> J(rec.n * P);
    evaluate_repeated(plan, theta, rec, pred, J.data(), nullptr, threads, cancel);
    std::fill(grad, grad + P, 0.0);
    for (std::size_t j = 0; j < rec.n; ++j)
      for (std::size_t p = 0; p < P; ++p) grad[p] += w[j] * J[j * P + p];
    return;
  }
  std::vector<double> partial(rec.n_chunks() * P, 0.0);
  // Feature gradients are accumulated directly (accumulate_feature_grad), so the engine
  // need not materialise them: ParamGrad = false.
  run_chunks<false, false>(plan, theta, rec, threads, cancel, [&](std::size_t c) {
    return GradVisitor{plan, rec, theta, w, pred, partial.data() + c * P};
  });
  std::fill(grad, grad + P, 0.0);
  for (std::size_t c = 0; c < rec.n_chunks(); ++c)  // fixed order: thread-count independent
    for (std::size_t p = 0; p < P; ++p) grad[p] += partial[c * P + p];
}

void jacobian(const Plan& plan, const double* theta, const Records& rec, double* pred, double* J,
              int threads, const CancelFlag* cancel) {
  if (plan.spec.repetition) return evaluate_repeated(plan, theta, rec, pred, J, nullptr, threads, cancel);
  run_chunks<true, false>(plan, theta, rec, threads, cancel,
                          [&](std::size_t) { return JacobianVisitor{plan, rec, pred, J}; });
}

void check_fit_records(const Plan& plan, const Records& rec) {
  if (plan.spec.kind != LawKind::bimix || rec.k != plan.spec.k) return;
  const int t = plan.spec.target_domain;
  const std::size_t k = static_cast<std::size_t>(rec.k);
  std::size_t bad = 0;
  std::int64_t first = -1;
  for (std::size_t m = 0; m < rec.n_mix; ++m) {
    if (rec.mix_h[m * k + static_cast<std::size_t>(t)] > 0) continue;
    for (std::size_t s = rec.mix_start[m]; s < rec.mix_start[m + 1]; ++s) {
      ++bad;
      if (first < 0 || rec.order[s] < first) first = rec.order[s];
    }
  }
  if (bad == 0) return;
  throw std::invalid_argument(
      "H: record " + std::to_string(first) + " (and " + std::to_string(bad - 1) +
      " other(s)) gives weight 0 to domain " + std::to_string(t) +
      ", the bimix law's target domain, where its loss C / h_t^gamma is infinite; drop those runs "
      "before fitting (e.g. runs.select(runs.H[:, " + std::to_string(t) + "] > 0))");
}

void grad_h(const Plan& plan, const double* theta, const Records& rec, double* out, int threads,
            const CancelFlag* cancel) {
  if (plan.spec.repetition) return evaluate_repeated(plan, theta, rec, nullptr, nullptr, out, threads, cancel);
  run_chunks<false, true>(plan, theta, rec, threads, cancel,
                          [&](std::size_t) { return HGradVisitor{plan, rec, out}; });
}

}  // namespace mixlaw
