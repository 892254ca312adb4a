// Data-constrained laws (LawSpec::repetition): repeated tokens are worth less than fresh ones.
//
// Domain i has U_i unique tokens. Training on D tokens with mixture h takes h_i D tokens
// from it, x_i = h_i D / U_i epochs. Its effective tokens are
//
//     D'_i = U_i g(x_i),  g(x) = x (x <= 1),  1 + R (1 - exp(-(x - 1) / R)) (x > 1)
//
// (Muennighoff et al. 2023: the first epoch counts in full, repeated epochs decay with
// half-life-like constant R = R_D, the law's last parameter, or R_i = R_D_i, one per domain,
// with LawSpec::repetition_per_domain), and the law is evaluated at
// the effective token count and mixture
//
//     D' = sum_i D'_i,  h'_i = D'_i / D'.
//
// Without repetition (every x_i <= 1) D' = D and h' = h exactly: the law is unchanged.
// g is continuous with a continuous slope at x = 1 (g' = 1 from both sides) and
// dg/dR = 0 there, so the law is once continuously differentiable in h, D and R. An
// unlimited domain (U_i = +inf) contributes h_i D. Laws without a mixture (k = 0) have one
// implicit domain with h = 1 (the plain data-constrained law of Muennighoff et al.).
//
// Evaluation: per record, (D', h') and their derivatives in R and h are formed (O(k)),
// and the law's engine (evaluate.hpp) runs on records whose mixture is h' (one mixture
// per record: O(records x k) per call, no sharing of mixture features). The Jacobian's
// R_D columns and the h-gradient then follow by the chain rule from dL/dlog D' and dL/dh'.
#pragma once

#include <cstddef>

#include "mixlaw/law.hpp"
#include "mixlaw/parallel.hpp"
#include "mixlaw/records.hpp"

namespace mixlaw {

// g(x; R) and its derivatives dg/dx, dg/dR.
struct RepeatedEpochs {
  double g, dg_dx, dg_dR;
};
RepeatedEpochs repeated_epochs(double x, double R);

// Predictions (pred: n, original order; may be null), the Jacobian (J: n x n_params,
// row-major, original order; may be null) and the h-gradient (GH: n x k; may be null) of a
// law with plan.spec.repetition at theta. Records must carry unique tokens
// (attach_unique_tokens); throws std::invalid_argument naming unique_tokens otherwise.
void evaluate_repeated(const Plan& plan, const double* theta, const Records& rec, double* pred, double* J,
                       double* GH, int threads, const CancelFlag* cancel = nullptr);

// Throws std::invalid_argument when the records cannot serve plan: a data-constrained law
// on records without unique tokens (or with the wrong number per record).
void check_repetition_records(const Plan& plan, const Records& rec);

}  // namespace mixlaw
