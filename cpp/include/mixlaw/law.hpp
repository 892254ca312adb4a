// Scaling laws L(N, D, h; theta): the single description of every law.
//
// Every law in mixlaw has the same shape
//
//     L = E + M(h) + a_N * N'^(-b_N) + a_D * D'^(-b_D)
//
// where each of M, a_N, b_N, a_D, b_D is either absent, a global parameter, or a
// "mixture feature": a scalar function of h with its own block of parameters
// (1/sum_i C_i h_i^gamma_i, or (sum_i C_i h_i)^(+-g)). Describing the laws this way
// lets one evaluator serve all of them, and lets it compute each feature once per
// distinct mixture instead of once per record.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mixlaw {

enum class LawKind : int { chinchilla = 0, additive = 1, joint = 2, simple = 3, full = 4 };

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
struct Feature {
  enum Kind : int {
    inv_power_sum = 0,  // phi = 1 / sum_i C_i h_i^gamma_i  (C at c_off, gamma at g_off, k each)
    linear_power = 1,   // phi = (sum_i C_i h_i)^(sign * g)  (C at c_off, k values; g at g_off)
  };
  Kind kind;
  int c_off;
  int g_off;
  double sign;  // +1, or -1 for the `simple` law's (sum C h)^(-gamma)
};

// Where one of the law's terms takes its value from.
struct Source {
  enum Type : int { none = 0, param = 1, feature = 2 };
  Type type = none;
  int index = -1;  // parameter index or feature index
};

// The law's terms are numbered ("slots") so that per-record derivatives are a
// short fixed-size vector: dL/d(slot) for each slot.
enum Slot : int { slot_E = 0, slot_M = 1, slot_aN = 2, slot_bN = 3, slot_aD = 4, slot_bD = 5 };
constexpr int n_slots = 6;

struct LawSpec {
  LawKind kind = LawKind::additive;
  int k = 1;            // number of domains (0 allowed only for chinchilla)
  bool n_term = true;   // include the model-size term
  bool d_term = true;   // include the token term
  double n_scale = 1e6; // N' = N / n_scale
  double d_scale = 1e9; // D' = D / d_scale
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
};

// Builds the plan; throws std::invalid_argument naming the bad field.
Plan make_plan(const LawSpec& spec);

// Number of parameters without building the plan.
int n_params(const LawSpec& spec);

}  // namespace mixlaw
