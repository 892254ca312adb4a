"""An independent pure-NumPy implementation of every law, written from the formulas of
SPEC section 3 (not from the C++), used as an oracle. Parameters are unpacked by name."""
from __future__ import annotations

import numpy as np


def _vec(p: dict, stem: str, k: int) -> np.ndarray:
    return np.array([p[f"{stem}_{i}"] for i in range(1, k + 1)], dtype=float)


def _inv_power_sum(C: np.ndarray, gamma: np.ndarray, H: np.ndarray) -> np.ndarray:
    # S(h) = sum_i C_i h_i^gamma_i, a domain with h_i == 0 contributing nothing.
    with np.errstate(divide="ignore"):
        terms = np.where(H > 0, np.power(np.where(H > 0, H, 1.0), gamma), 0.0)
    return 1.0 / (terms @ C)


def _baseline_predict(law, p: dict, Dp: np.ndarray, H: np.ndarray) -> np.ndarray:
    # Baselines of other papers (SPEC section 3); none has a model-size term.
    k, name = law.k, law.name
    H = np.asarray(H, dtype=float)
    if name == "linear":  # sum_i c_i h_i
        return H @ _vec(p, "c", k)
    if name == "dml_exp":  # E + exp(sum_i t_i h_i)
        return p["E"] + np.exp(H @ _vec(p, "t", k))
    if name == "dml_sum":  # E + sum_i C_i exp(t_i h_i)
        return p["E"] + np.exp(H * _vec(p, "t", k)) @ _vec(p, "C", k)
    # bimix: E + C / h_t^gamma + B / D'^beta
    out = p["E"] + p["C"] / H[:, law.target_domain] ** p["gamma"]
    if law.d_term:
        out = out + p["B"] / Dp ** p["beta"]
    return out


def oracle_predict(law, params, N, D, H=None) -> np.ndarray:
    p = law.as_dict(params)
    k = law.k
    Np = np.asarray(N, dtype=float) / law.n_scale
    Dp = np.asarray(D, dtype=float) / law.d_scale
    name = law.name
    if name in ("linear", "dml_exp", "dml_sum", "bimix"):
        return _baseline_predict(law, p, Dp, H)
    out = np.full(Np.shape, p["E"])
    if name in ("chinchilla", "additive", "simple"):
        if law.n_term:
            out = out + p["A"] / Np ** p["alpha"]
        if law.d_term:
            out = out + p["B"] / Dp ** p["beta"]
        if name == "additive":
            out = out + _inv_power_sum(_vec(p, "C", k), _vec(p, "gamma", k), H)
        elif name == "simple":
            out = out + (H @ _vec(p, "C", k)) ** (-p["gamma"])
        return out
    out = out + _inv_power_sum(_vec(p, "C", k), _vec(p, "gamma", k), H)
    if law.n_term:
        A_h = (H @ _vec(p, "CA", k)) ** p["gA"]
        alpha = p["alpha"] if name == "joint" else (H @ _vec(p, "Calpha", k)) ** p["galpha"]
        out = out + A_h / Np ** alpha
    if law.d_term:
        B_h = (H @ _vec(p, "CB", k)) ** p["gB"]
        beta = p["beta"] if name == "joint" else (H @ _vec(p, "Cbeta", k)) ** p["gbeta"]
        out = out + B_h / Dp ** beta
    return out
