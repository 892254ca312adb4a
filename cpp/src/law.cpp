#include "mixlaw/law.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>

namespace mixlaw {
namespace {

constexpr double inf = std::numeric_limits<double>::infinity();

// Default bounds and start ranges, in the internal units N' = N/1e6, D' = D/1e9 where
// losses are O(1). Documented in python/mixlaw/laws.py; users override by name.
ParamInfo offset_E() { return {"E", 0.0, inf, 0.5, 2.5, false}; }
ParamInfo amplitude(const std::string& n) { return {n, 0.0, inf, 0.1, 100.0, true}; }
ParamInfo exponent(const std::string& n) { return {n, 0.0, 2.0, 0.05, 1.0, false}; }
ParamInfo mix_scale(const std::string& n) { return {n, 0.0, inf, 0.1, 10.0, true}; }
ParamInfo mix_gamma(const std::string& n) { return {n, 0.0, 5.0, 0.05, 1.5, false}; }
// Starts of both signs: the best joint-law minima on the SlimPajama targets mostly have
// gA, gB < 0, and a local solver started at gA > 0 rarely crosses gA = 0, where the CA_i
// directions are flat (bench/README.md, joint law).
ParamInfo mix_power(const std::string& n) { return {n, -5.0, 5.0, -1.0, 1.5, false}; }
ParamInfo exponent_scale(const std::string& n) { return {n, 0.0, inf, 0.05, 1.0, true}; }
// Baselines. Exponent rates t_i of exp(t_i h_i) may have either sign; |t_i| <= 20 keeps
// exp() far from overflow (h_i <= 1) and is far beyond any fitted loss curve. dml_exp's
// exp(t_i) is the reducible loss when training on domain i alone, O(0.05 .. 5).
ParamInfo dml_rate(const std::string& n) { return {n, -20.0, 20.0, -3.0, 1.5, false}; }
ParamInfo dml_sum_rate(const std::string& n) { return {n, -20.0, 20.0, -3.0, 3.0, false}; }
ParamInfo dml_scale(const std::string& n) { return {n, 0.0, inf, 0.01, 1.0, true}; }
ParamInfo bimix_scale(const std::string& n) { return {n, 0.0, inf, 0.01, 1.0, true}; }
ParamInfo bimix_gamma(const std::string& n) { return {n, 0.0, 5.0, 0.05, 1.0, false}; }
// linear: c_i is the loss of a model trained on domain i alone; any sign allowed.
ParamInfo linear_coef(const std::string& n) { return {n, -inf, inf, 1.0, 5.0, false}; }
// R_D: the epochs over which repeated tokens lose their value (Muennighoff et al. fit 15.4);
// below 0.01 every repeated token is worthless, above 1e4 every one is fresh.
ParamInfo repetition_halflife(const std::string& n) { return {n, 1e-2, 1e4, 2.0, 50.0, true}; }

struct Builder {
  Plan plan;
  int add(ParamInfo p) {
    plan.params.push_back(std::move(p));
    return static_cast<int>(plan.params.size()) - 1;
  }
  // Adds k parameters "<stem>_1" .. "<stem>_k"; returns the first index.
  template <class Maker>
  int add_block(const std::string& stem, int k, Maker make) {
    int first = static_cast<int>(plan.params.size());
    for (int i = 0; i < k; ++i) add(make(stem + "_" + std::to_string(i + 1)));
    return first;
  }
  int feature(Feature f) {
    std::vector<int> idx;
    int k = plan.spec.k;
    switch (f.kind) {
      case Feature::inv_power_sum:
      case Feature::sum_exp:
        for (int i = 0; i < k; ++i) idx.push_back(f.c_off + i);
        for (int i = 0; i < k; ++i) idx.push_back(f.g_off + i);
        break;
      case Feature::linear_power:
        for (int i = 0; i < k; ++i) idx.push_back(f.c_off + i);
        idx.push_back(f.g_off);
        break;
      case Feature::exp_linear:
      case Feature::linear_sum:
        for (int i = 0; i < k; ++i) idx.push_back(f.c_off + i);
        break;
      case Feature::target_power:
        idx.push_back(f.c_off);
        idx.push_back(f.g_off);
        break;
    }
    plan.features.push_back(f);
    plan.feature_params.push_back(std::move(idx));
    return static_cast<int>(plan.features.size()) - 1;
  }
  static Source param(int i) { return {Source::param, i}; }
  static Source feat(int i) { return {Source::feature, i}; }
};

}  // namespace

LawKind law_kind_from_name(const std::string& name) {
  if (name == "chinchilla") return LawKind::chinchilla;
  if (name == "additive") return LawKind::additive;
  if (name == "joint") return LawKind::joint;
  if (name == "simple") return LawKind::simple;
  if (name == "full") return LawKind::full;
  if (name == "dml_exp") return LawKind::dml_exp;
  if (name == "dml_sum") return LawKind::dml_sum;
  if (name == "bimix") return LawKind::bimix;
  if (name == "linear") return LawKind::linear;
  throw std::invalid_argument("law: unknown law '" + name +
                              "' (expected one of chinchilla, additive, joint, simple, full, dml_exp, "
                              "dml_sum, bimix, linear)");
}

bool law_has_n_term(LawKind kind) {
  switch (kind) {
    case LawKind::dml_exp:
    case LawKind::dml_sum:
    case LawKind::bimix:
    case LawKind::linear: return false;
    default: return true;
  }
}

bool law_has_d_term(LawKind kind) {
  switch (kind) {
    case LawKind::dml_exp:
    case LawKind::dml_sum:
    case LawKind::linear: return false;
    default: return true;
  }
}

const char* law_kind_name(LawKind kind) {
  switch (kind) {
    case LawKind::chinchilla: return "chinchilla";
    case LawKind::additive: return "additive";
    case LawKind::joint: return "joint";
    case LawKind::simple: return "simple";
    case LawKind::full: return "full";
    case LawKind::dml_exp: return "dml_exp";
    case LawKind::dml_sum: return "dml_sum";
    case LawKind::bimix: return "bimix";
    case LawKind::linear: return "linear";
  }
  return "?";
}

Plan make_plan(const LawSpec& spec) {
  if (spec.kind == LawKind::chinchilla) {
    if (spec.k < 0) throw std::invalid_argument("k: must be >= 0");
  } else if (spec.k < 1) {
    throw std::invalid_argument("k: the " + std::string(law_kind_name(spec.kind)) +
                                " law needs at least one domain (k >= 1)");
  }
  if (!(spec.n_scale > 0) || !std::isfinite(spec.n_scale))
    throw std::invalid_argument("n_scale: must be finite and > 0");
  if (!(spec.d_scale > 0) || !std::isfinite(spec.d_scale))
    throw std::invalid_argument("d_scale: must be finite and > 0");

  if (spec.kind == LawKind::bimix) {
    if (spec.target_domain < 0 || spec.target_domain >= spec.k)
      throw std::invalid_argument("target_domain: the bimix law needs the index of the target's own domain, "
                                  "0 <= target_domain < k = " + std::to_string(spec.k) + ", got " +
                                  std::to_string(spec.target_domain));
  } else if (spec.target_domain != -1) {
    throw std::invalid_argument("target_domain: only the bimix law has a target domain (the " +
                                std::string(law_kind_name(spec.kind)) + " law takes -1)");
  }

  if (spec.repetition_per_domain && !spec.repetition)
    throw std::invalid_argument("repetition: per-domain R_D needs the data-constrained option");
  if (spec.repetition && !(spec.d_term && law_has_d_term(spec.kind)))
    throw std::invalid_argument("repetition: the data-constrained option needs the law's token term (the " +
                                std::string(law_kind_name(spec.kind)) + " law " +
                                (law_has_d_term(spec.kind) ? "with d_term=False" : "") +
                                " has none), since repeated tokens enter through it");
  Builder b;
  b.plan.spec = spec;
  // Terms a law does not have are recorded as absent, whatever was asked for.
  b.plan.spec.n_term = spec.n_term && law_has_n_term(spec.kind);
  b.plan.spec.d_term = spec.d_term && law_has_d_term(spec.kind);
  const int k = spec.k;
  Plan& p = b.plan;
  if (spec.kind == LawKind::linear) {
    // sum_i c_i h_i: no separate E (E + sum_i c_i h_i = sum_i (c_i + E) h_i on the simplex).
    int c = b.add_block("c", k, linear_coef);
    p.src[slot_M] = Builder::feat(b.feature({Feature::linear_sum, c, -1, 1.0}));
    p.n_params = static_cast<int>(p.params.size());
    return std::move(b.plan);
  }
  p.src[slot_E] = Builder::param(b.add(offset_E()));

  switch (spec.kind) {
    case LawKind::chinchilla:
    case LawKind::additive:
    case LawKind::simple: {
      int A = -1, B = -1, alpha = -1, beta = -1;
      if (spec.n_term) A = b.add(amplitude("A"));
      if (spec.d_term) B = b.add(amplitude("B"));
      if (spec.n_term) alpha = b.add(exponent("alpha"));
      if (spec.d_term) beta = b.add(exponent("beta"));
      if (spec.n_term) {
        p.src[slot_aN] = Builder::param(A);
        p.src[slot_bN] = Builder::param(alpha);
      }
      if (spec.d_term) {
        p.src[slot_aD] = Builder::param(B);
        p.src[slot_bD] = Builder::param(beta);
      }
      if (spec.kind == LawKind::additive) {
        int c = b.add_block("C", k, mix_scale);
        int g = b.add_block("gamma", k, mix_gamma);
        p.src[slot_M] = Builder::feat(b.feature({Feature::inv_power_sum, c, g, 1.0}));
      } else if (spec.kind == LawKind::simple) {
        int g = b.add({"gamma", 0.0, 10.0, 0.1, 2.0, false});
        int c = b.add_block("C", k, mix_scale);
        p.src[slot_M] = Builder::feat(b.feature({Feature::linear_power, c, g, -1.0}));
      }
      break;
    }
    case LawKind::joint: {
      int alpha = spec.n_term ? b.add(exponent("alpha")) : -1;
      int beta = spec.d_term ? b.add(exponent("beta")) : -1;
      int c = b.add_block("C", k, mix_scale);
      int g = b.add_block("gamma", k, mix_gamma);
      p.src[slot_M] = Builder::feat(b.feature({Feature::inv_power_sum, c, g, 1.0}));
      if (spec.n_term) {
        int ca = b.add_block("CA", k, amplitude);
        int ga = b.add(mix_power("gA"));
        p.src[slot_aN] = Builder::feat(b.feature({Feature::linear_power, ca, ga, 1.0}));
        p.src[slot_bN] = Builder::param(alpha);
      }
      if (spec.d_term) {
        int cb = b.add_block("CB", k, amplitude);
        int gb = b.add(mix_power("gB"));
        p.src[slot_aD] = Builder::feat(b.feature({Feature::linear_power, cb, gb, 1.0}));
        p.src[slot_bD] = Builder::param(beta);
      }
      break;
    }
    case LawKind::full: {
      int c = b.add_block("C", k, mix_scale);
      int g = b.add_block("gamma", k, mix_gamma);
      p.src[slot_M] = Builder::feat(b.feature({Feature::inv_power_sum, c, g, 1.0}));
      int ca = -1, ga = -1, cb = -1, gb = -1;
      if (spec.n_term) {
        ca = b.add_block("CA", k, amplitude);
        ga = b.add(mix_power("gA"));
      }
      if (spec.d_term) {
        cb = b.add_block("CB", k, amplitude);
        gb = b.add(mix_power("gB"));
      }
      if (spec.n_term) {
        int cal = b.add_block("Calpha", k, exponent_scale);
        int gal = b.add(mix_power("galpha"));
        p.src[slot_aN] = Builder::feat(b.feature({Feature::linear_power, ca, ga, 1.0}));
        p.src[slot_bN] = Builder::feat(b.feature({Feature::linear_power, cal, gal, 1.0}));
      }
      if (spec.d_term) {
        int cbe = b.add_block("Cbeta", k, exponent_scale);
        int gbe = b.add(mix_power("gbeta"));
        p.src[slot_aD] = Builder::feat(b.feature({Feature::linear_power, cb, gb, 1.0}));
        p.src[slot_bD] = Builder::feat(b.feature({Feature::linear_power, cbe, gbe, 1.0}));
      }
      break;
    }
    case LawKind::dml_exp: {
      int t = b.add_block("t", k, dml_rate);
      p.src[slot_M] = Builder::feat(b.feature({Feature::exp_linear, t, -1, 1.0}));
      break;
    }
    case LawKind::dml_sum: {
      int c = b.add_block("C", k, dml_scale);
      int t = b.add_block("t", k, dml_sum_rate);
      p.src[slot_M] = Builder::feat(b.feature({Feature::sum_exp, c, t, 1.0}));
      break;
    }
    case LawKind::bimix: {
      int c = b.add(bimix_scale("C"));
      int g = b.add(bimix_gamma("gamma"));
      p.src[slot_M] = Builder::feat(b.feature({Feature::target_power, c, g, 1.0, spec.target_domain}));
      if (p.spec.d_term) {
        int B = b.add(amplitude("B"));
        int beta = b.add(exponent("beta"));
        p.src[slot_aD] = Builder::param(B);
        p.src[slot_bD] = Builder::param(beta);
      }
      break;
    }
    case LawKind::linear: break;  // handled above
  }
  if (spec.repetition) {
    const bool per_domain = spec.repetition_per_domain && k >= 1;
    p.repetition_param = per_domain ? b.add_block("R_D", k, repetition_halflife) : b.add(repetition_halflife("R_D"));
    p.n_repetition_params = per_domain ? k : 1;
  }
  p.n_params = static_cast<int>(p.params.size());
  return std::move(b.plan);
}

int n_params(const LawSpec& spec) { return make_plan(spec).n_params; }

}  // namespace mixlaw
