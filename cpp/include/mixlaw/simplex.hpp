// Geometry of the feasible mixtures C = { h : sum_i h_i = 1, lo_i <= h_i <= hi_i }.
#pragma once

#include <vector>

namespace mixlaw {

// Throws std::invalid_argument naming the constraint when C is empty or malformed
// (lo > hi, sum lo > 1, sum hi < 1, non-finite lo). `what_lo` / `what_hi` name the
// constraints in the message (e.g. "bounds" or "available_tokens").
void check_feasible(const double* lo, const double* hi, int k, const char* what_lo = "lower bounds",
                    const char* what_hi = "upper bounds");

// Euclidean projection of v onto C (exact: the breakpoints of the piecewise-linear
// function tau -> sum_i clip(v_i - tau, lo_i, hi_i) are sorted and the linear piece
// through 1 is solved). out may alias v.
void project_capped_simplex(const double* v, const double* lo, const double* hi, int k, double* out);

// Bregman (KL) projection of a positive vector v onto C: h_i = clip(c v_i, lo_i, hi_i)
// with the scalar c > 0 that makes sum h = 1 (returned). Used by mirror descent.
double kl_project_capped_simplex(const double* v, const double* lo, const double* hi, int k, double* out);

// Whether C is the probability simplex itself (every lo_i = 0, every hi_i >= 1).
bool plain_simplex(const double* lo, const double* hi, int k);

// Linear minimisation oracle: argmin_{s in C} g . s (fill the cheapest coordinates
// first, from lo up to hi). Returns g . s.
double linear_minimizer(const double* g, const double* lo, const double* hi, int k, double* s);

}  // namespace mixlaw
