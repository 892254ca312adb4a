"""The reference a capable user would write instead of mixlaw: NumPy laws with analytic
Jacobians, the paper's mean-Huber objective, and SciPy's solvers.

Parameter layout and units are mixlaw's (N' = N/1e6, D' = D/1e9), so the same starts can
be given to both. Only the additive and joint laws are implemented (the benchmarked ones).
"""
from __future__ import annotations

import time

import numpy as np
from scipy.optimize import least_squares, minimize


def _split(law: str, p: np.ndarray, k: int) -> dict:
    if law == "additive":
        return {"E": p[0], "A": p[1], "B": p[2], "alpha": p[3], "beta": p[4], "C": p[5:5 + k],
                "gamma": p[5 + k:5 + 2 * k]}
    if law == "joint":
        o = 3
        return {"E": p[0], "alpha": p[1], "beta": p[2], "C": p[o:o + k], "gamma": p[o + k:o + 2 * k],
                "CA": p[o + 2 * k:o + 3 * k], "gA": p[o + 3 * k], "CB": p[o + 3 * k + 1:o + 4 * k + 1],
                "gB": p[o + 4 * k + 1]}
    raise ValueError(f"law: reference implements additive and joint, not {law!r}")


class NumpyLaw:
    """Predictions and analytic Jacobian, vectorised over records x domains."""

    def __init__(self, law: str, N: np.ndarray, D: np.ndarray, H: np.ndarray) -> None:
        self.law, self.k = law, H.shape[1]
        self.lnN, self.lnD = np.log(N / 1e6), np.log(D / 1e9)
        self.H = H
        self.pos = H > 0
        self.logH = np.where(self.pos, np.log(np.where(self.pos, H, 1.0)), 0.0)

    def predict_jacobian(self, p: np.ndarray, jac: bool = True):
        q = _split(self.law, p, self.k)
        T = np.where(self.pos, np.exp(q["gamma"] * self.logH), 0.0)   # h_i^gamma_i
        S = T @ q["C"]
        nN, nD = np.exp(-q["alpha"] * self.lnN), np.exp(-q["beta"] * self.lnD)
        if self.law == "additive":
            pred = q["E"] + 1 / S + q["A"] * nN + q["B"] * nD
        else:
            uA, uB = self.H @ q["CA"], self.H @ q["CB"]
            Ah, Bh = uA ** q["gA"], uB ** q["gB"]
            pred = q["E"] + 1 / S + Ah * nN + Bh * nD
        if not jac:
            return pred, None
        dS = -1 / S ** 2
        dC = dS[:, None] * T
        dG = dS[:, None] * T * q["C"] * self.logH
        ones = np.ones((pred.size, 1))
        if self.law == "additive":
            J = np.hstack([ones, nN[:, None], nD[:, None], (-q["A"] * self.lnN * nN)[:, None],
                           (-q["B"] * self.lnD * nD)[:, None], dC, dG])
        else:
            dCA = (q["gA"] * Ah / uA * nN)[:, None] * self.H
            dCB = (q["gB"] * Bh / uB * nD)[:, None] * self.H
            J = np.hstack([ones, (-Ah * self.lnN * nN)[:, None], (-Bh * self.lnD * nD)[:, None], dC, dG,
                           dCA, (Ah * np.log(uA) * nN)[:, None], dCB, (Bh * np.log(uB) * nD)[:, None]])
        return pred, J

    def value_and_grad(self, p: np.ndarray, w: np.ndarray):
        pred, J = self.predict_jacobian(p)
        return pred, J.T @ w


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def mean_huber(model: NumpyLaw, p: np.ndarray, y: np.ndarray, delta: float) -> float:
    return float(np.mean(huber(model.predict_jacobian(p, jac=False)[0] - y, delta)))


def fit_least_squares(model: NumpyLaw, y: np.ndarray, starts: np.ndarray, bounds, delta: float = 1e-3) -> dict:
    """scipy.optimize.least_squares(method="trf", loss="huber", f_scale=delta) from every
    start, with the analytic Jacobian. Its cost is sum_j huber_delta(r_j); the mean-Huber
    objective reported is recomputed for comparability."""
    fun, nfev = [], []
    x_best, f_best = None, np.inf
    t0 = time.perf_counter()
    for x0 in starts:
        r = least_squares(lambda p: model.predict_jacobian(p, jac=False)[0] - y, x0,
                          jac=lambda p: model.predict_jacobian(p)[1], bounds=bounds, method="trf",
                          loss="huber", f_scale=delta)
        f = mean_huber(model, r.x, y, delta)
        fun.append(f)
        nfev.append(r.nfev)
        if f < f_best:
            x_best, f_best = r.x, f
    return {"x": x_best, "fun": f_best, "starts_fun": np.array(fun), "nfev": np.array(nfev),
            "seconds": time.perf_counter() - t0}


def fit_lbfgsb(model: NumpyLaw, y: np.ndarray, starts: np.ndarray, bounds, delta: float = 1e-3) -> dict:
    """scipy.optimize.minimize(method="L-BFGS-B") on the mean Huber with its analytic gradient."""
    lo, hi = bounds
    box = list(zip(lo, hi))
    n = y.size

    def fg(p):
        pred, J = model.predict_jacobian(p)
        r = pred - y
        psi = np.clip(r, -delta, delta)
        return float(np.mean(huber(r, delta))), J.T @ psi / n

    fun, nfev = [], []
    x_best, f_best = None, np.inf
    t0 = time.perf_counter()
    for x0 in starts:
        r = minimize(fg, x0, jac=True, method="L-BFGS-B", bounds=box)
        f = mean_huber(model, r.x, y, delta)
        fun.append(f)
        nfev.append(r.nfev)
        if f < f_best:
            x_best, f_best = r.x, f
    return {"x": x_best, "fun": f_best, "starts_fun": np.array(fun), "nfev": np.array(nfev),
            "seconds": time.perf_counter() - t0}
