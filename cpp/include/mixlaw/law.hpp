// Scaling laws L(N, D, h; theta): the single description of every law.
//
// Every law in mixlaw has the same shape
//
//     L = E + M(h) + a_N * N'^(-b_N) + a_D * D'^(-b_D)
//
// where each of E, M, a_N, b_N, a_D, b_D is either absent, a global parameter, or a
// "mixture feature": a scalar function of h with its own block of parameters
// (1/sum_i C_i h_i^gamma_i, (sum_i C_i h_i)^(+-g), exp(sum_i t_i h_i), ...). Describing
// the laws this way lets one evaluator serve all of them, and lets it compute each
// feature once per distinct mixture instead of once per record.
//
// Besides the laws of Shukor et al. (chinchilla, additive, joint, simple, full) the
// baselines of other papers are described the same way (SPEC section 3):
//   dml_exp  E + exp(sum_i t_i h_i)              Data Mixing Laws (Ye et al. 2024); their
//                                                C exp(t.h) is exp((t + log C).h) on the
//                                                simplex, so C is absorbed into t
//   dml_sum  E + sum_i C_i exp(t_i h_i)          Ye et al.'s per-domain variant
//   bimix    E + C h_t^(-gamma) + B D'^(-beta)   BiMix (Ge et al. 2024), t = target_domain
//   linear   sum_i c_i h_i                       no E: sum_i h_i = 1 makes E collinear
// They have no model-size term (and only bimix a token term): make_plan records
// n_term = false (and d_term = false for dml_*, linear) whatever the spec asked for.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mixlaw {

enum class LawKind : int {
  chinchilla = 0,
  additive = 1,
  joint = 2,
  simple = 3,
  full = 4,
  dml_exp = 5,
  dml_sum = 6,
  bimix = 7,
  linear = 8,
};

// Whether the law has a model-size / token term at all (n_term, d_term may drop it).
bool law_has_n_term(LawKind kind);
bool law_has_d_term(LawKind kind);

// Parses "chinchilla", "additive", ... ; throws std::invalid_argument otherwise.
LawKind law_kind_from_name(const std::string& name);
const char* law_kind_name(LawKind kind);

// Description of one parameter: bounds are hard limits for optimisers, the init
// range is where random starts are drawn. log_scale parameters are positive scale
// coefficients that optimisers move in log space (better conditioned, and their
// lower bound 0 is then never hit exactly).
struct ParamInfo {
  std::string name;
  double lo, hi;            // default bounds (may be +-inf)
  double init_lo, init_hi;  // default range for random starts (finite)
  bool log_scale;
};

// A mixture feature phi(h; block of parameters).
// Its parameters, in feature-gradient order (Plan::feature_params), are listed per kind.
struct Feature {
  enum Kind : int {
    inv_power_sum = 0,  // phi = 1 / sum_i C_i h_i^gamma_i  (C at c_off, gamma at g_off, k each)
    linear_power = 1,   // phi = (sum_i C_i h_i)^(sign * g)  (C at c_off, k values; g at g_off)
    exp_linear = 2,     // phi = exp(sum_i t_i h_i)          (t at c_off, k values; no g)
    sum_exp = 3,        // phi = sum_i C_i exp(t_i h_i)      (C at c_off, t at g_off, k each)
    target_power = 4,   // phi = C h_target^(-g)             (C at c_off, g at g_off; one each)
    linear_sum = 5,     // phi = sum_i C_i h_i               (C at c_off, k values; no g)
  };
  Kind kind;
  int c_off;
  int g_off;
  double sign;       // +1, or -1 for the `simple` law's (sum C h)^(-gamma)
  int target = -1;   // target_power: the domain index (0-based)
};

// Where one of the law's terms takes its value from.
struct Source {
  enum Type : int { none = 0, param = 1, feature = 2 };
  Type type = none;
  int index = -1;  // parameter index or feature index
};

// The law's terms are numbered ("slots") so that per-record derivatives are a
// short fixed-size vector: dL/d(slot) for each slot. Any slot may be absent (Source::none),
// E included: the linear law has none.
enum Slot : int { slot_E = 0, slot_M = 1, slot_aN = 2, slot_bN = 3, slot_aD = 4, slot_bD = 5 };
constexpr int n_slots = 6;

struct LawSpec {
  LawKind kind = LawKind::additive;
  int k = 1;            // number of domains (0 allowed only for chinchilla)
  bool n_term = true;   // include the model-size term
  bool d_term = true;   // include the token term
  double n_scale = 1e6; // N' = N / n_scale
  double d_scale = 1e9; // D' = D / d_scale
  int target_domain = -1;  // bimix only: 0-based index of the target's own domain (required);
                           // -1 for every other law
  // Data-constrained option (repetition.hpp): tokens repeated beyond a domain's unique
  // tokens count less; adds the parameter R_D (last), or one per domain R_D_1 .. R_D_k with
  // repetition_per_domain. Needs records with unique tokens.
  bool repetition = false;
  bool repetition_per_domain = false;
};

// Everything an evaluator or optimiser needs to know about a law, derived once.
struct Plan {
  LawSpec spec;
  int n_params = 0;
  std::vector<ParamInfo> params;
  std::vector<Feature> features;
  Source src[n_slots];
  // For each feature, its parameter indices (in feature-gradient order) so that
  // gradients of a feature can be scattered into the full parameter vector.
  std::vector<std::vector<int>> feature_params;
  int repetition_param = -1;  // index of R_D (the first of the per-domain block), else -1
  int n_repetition_params = 0;  // 1, or k with LawSpec::repetition_per_domain (and k >= 1)
};

// Builds the plan; throws std::invalid_argument naming the bad field. For laws without
// a model-size (token) term the plan's spec has n_term (d_term) = false.
Plan make_plan(const LawSpec& spec);

// Number of parameters without building the plan.
int n_params(const LawSpec& spec);

}  // namespace mixlaw
