"""Many domains: mixlaw's fitter against SciPy on synthetic data of KNOWN truth, k = 7 .. 1024.

For each (law, k, design) a problem is drawn with known parameters (`make_problem`), S
random starts are drawn once (mixlaw's own sampler, E's init range [0, min y], as
`mixlaw.fit` draws them) and given to both mixlaw (`mixlaw.fit(runs, law, starts=...)`,
threads=1 and threads=2) and SciPy (`least_squares(method="trf", loss="huber",
f_scale=1e-3)`, analytic NumPy Jacobian, the reference of `scipy_reference.py`, which
works in parameter space). mixlaw's default fit (random starts, `n_starts` default,
nesting for joint) is run and reported separately. Every configuration runs in its own
subprocess (peak RSS from `os.wait4`).

Data: 4 model sizes x 5 checkpoints per mixture; mixtures Dirichlet(1) with each weight
set to 0 with probability 0.2 (renormalised, never all zero); losses = truth x (1 + 0.001
standard normal). Designs: "3k" (3,000 mixtures) and "k+10" (k + 10 mixtures). Held-out:
200 fresh mixtures, same sizes and checkpoints, noisy the same way; the fit and the
truth are scored (MRE) on the same noisy held-out losses.

Objective: mean Huber(delta=1e-3) of the raw residuals L - y, as mixlaw's default.
SciPy's cost (sum_j f_scale^2 rho(r_j^2 / f_scale^2) / 2 = sum_j Huber_delta(r_j)) is
divided by the number of records.

Stationarity check, independent of the C++: for every start mixlaw reports converged
(status > 0), the gradient of the mean Huber in the solver's coordinates (z = log theta
for log-scaled parameters with lower bound >= 0, else theta), projected on the box (a
coordinate at its bound with the gradient pointing outwards counts as 0), is computed
with this file's NumPy gradient (analytic, from the formulas of tests/numpy_oracle.py;
checked against central differences of that oracle at every run), and
max_p |g_z[p]| * max(1, |z_p|) / f is compared with --stat-tol (1e-4): a "converged"
start above it is a false convergence. The same measure is reported for SciPy's
converged starts, as a control of the threshold. Every start's end point comes from
`mixlaw._core.fit_many`, the call `mixlaw.fit` makes (a Fit keeps only the best start's
parameters); its objectives and statuses are checked equal to the public fit's. In z a
scale coefficient driven towards 0 has a vanishing gradient whatever its
parameter-space gradient, so such points pass the measure; they are counted separately
("collapsed": below COLLAPSED x the bottom of the init range, and f decreases as the
coefficient grows, by more than --stat-tol relative to f to first order when raised to
the bottom of its init range).

SciPy runs the starts in order until --scipy-cap seconds per (law, k, design); it is
skipped when one start is estimated above the cap (--scipy-est-nfev iterations of
residuals + Jacobian + SVD), and a start still running at the cap is stopped (callback)
and not counted. BLAS threads of the SciPy worker: --blas-threads (1).

Run (from bench/):
  python bench_domains.py --quick                        # k = 7, 16, 32; both laws and designs
  python bench_domains.py --laws additive --designs 3k --ks 7,16 --starts 4 --scipy-cap 120
  python bench_domains.py                                 # the full grid (many hours)
  python bench_domains.py ... --md table.md --json results.json
  python bench_domains.py --from-json a.json b.json --md table.md   # tables of earlier runs, merged
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

DELTA = 1e-3
SIZES = np.array([20e6, 50e6, 120e6, 300e6])           # model sizes N (parameters)
TOKENS_PER_PARAM = np.array([10.0, 20.0, 40.0, 80.0, 160.0])  # checkpoints: D = N x these
N_HELDOUT = 200
ZERO_FRAC = 0.2
NOISE = 1e-3
K_ADDITIVE = (7, 16, 32, 64, 128, 256, 512, 1024)
K_JOINT = (7, 16, 32, 64, 128, 256)
K_QUICK = (7, 16, 32)
COLLAPSED = 1e-6  # a log-scaled parameter below this x the bottom of its init range counts as collapsed


def _import_mixlaw():
    """mixlaw is rebuilt from time to time by another developer: retry a failing import."""
    for attempt in range(5):
        try:
            import mixlaw  # noqa: F401
            import mixlaw.fit  # noqa: F401
            return sys.modules["mixlaw"]
        except ImportError:
            if attempt == 4:
                raise
            for name in [m for m in sys.modules if m == "mixlaw" or m.startswith("mixlaw.")]:
                del sys.modules[name]
            time.sleep(60)


# ---------------------------------------------------------------------------------------
# Problem generator
# ---------------------------------------------------------------------------------------
def _mixtures(rng: np.random.Generator, M: int, k: int) -> np.ndarray:
    """M Dirichlet(1) mixtures, each weight zeroed with probability ZERO_FRAC (never all)."""
    W = rng.standard_exponential((M, k))
    Z = rng.random((M, k)) < ZERO_FRAC
    allz = np.flatnonzero(Z.all(axis=1))
    Z[allz, rng.integers(0, k, allz.size)] = False
    W[Z] = 0.0
    return W / W.sum(axis=1, keepdims=True)


def _records(M: int):
    """Per mixture: 4 sizes x 5 checkpoints. Returns mixture index, N, D, run id per record."""
    NN = np.repeat(SIZES, TOKENS_PER_PARAM.size)
    DD = (SIZES[:, None] * TOKENS_PER_PARAM[None, :]).ravel()
    per = NN.size
    idx = np.repeat(np.arange(M), per)
    run = idx * SIZES.size + np.tile(np.repeat(np.arange(SIZES.size), TOKENS_PER_PARAM.size), M)
    return idx, np.tile(NN, M), np.tile(DD, M), run


class Design:
    """Records of one data set, stored by mixture (Hm: M x k) plus a record -> mixture index."""

    def __init__(self, Hm: np.ndarray) -> None:
        self.Hm = Hm
        self.idx, self.N, self.D, self.run = _records(Hm.shape[0])
        self.lnN, self.lnD = np.log(self.N / 1e6), np.log(self.D / 1e9)
        pos = Hm > 0
        self.pos = pos
        self.logHm = np.where(pos, np.log(np.where(pos, Hm, 1.0)), 0.0)

    @property
    def n(self) -> int:
        return self.idx.size

    def H(self) -> np.ndarray:
        return self.Hm[self.idx]


def _split(law: str, p: np.ndarray, k: int) -> dict:
    from scipy_reference import _split as split
    return split(law, p, k)


def np_predict(law: str, k: int, p: np.ndarray, d: Design) -> np.ndarray:
    """The law's prediction at every record (NumPy, mixture-level work done per mixture)."""
    q = _split(law, p, k)
    T = np.where(d.pos, np.exp(q["gamma"] * d.logHm), 0.0)
    inv = 1.0 / (T @ q["C"])
    nN, nD = np.exp(-q["alpha"] * d.lnN), np.exp(-q["beta"] * d.lnD)
    if law == "additive":
        return q["E"] + inv[d.idx] + q["A"] * nN + q["B"] * nD
    Ah, Bh = (d.Hm @ q["CA"]) ** q["gA"], (d.Hm @ q["CB"]) ** q["gB"]
    return q["E"] + inv[d.idx] + Ah[d.idx] * nN + Bh[d.idx] * nD


def _np_forward(law: str, k: int, p: np.ndarray, d: Design, y: np.ndarray) -> dict:
    """The law's terms at parameters p (shared by the gradient and the Gauss-Newton diagonal):
    per mixture T = h^gamma, 1/S(h) and, for joint, u = H CA (CB) and their powers; per record
    N'^-alpha, D'^-beta, the two token/size terms and the residual L - y."""
    q = _split(law, p, k)
    T = np.where(d.pos, np.exp(q["gamma"] * d.logHm), 0.0)
    inv = 1.0 / (T @ q["C"])
    nN, nD = np.exp(-q["alpha"] * d.lnN), np.exp(-q["beta"] * d.lnD)
    out = dict(q=q, T=T, inv=inv, nN=nN, nD=nD, M=d.Hm.shape[0])
    if law == "additive":
        out.update(aN=q["A"] * nN, aD=q["B"] * nD)
    else:
        uA, uB = d.Hm @ q["CA"], d.Hm @ q["CB"]
        Ah, Bh = uA ** q["gA"], uB ** q["gB"]
        out.update(uA=uA, uB=uB, Ah=Ah, Bh=Bh, aN=Ah[d.idx] * nN, aD=Bh[d.idx] * nD)
    out["r"] = q["E"] + inv[d.idx] + out["aN"] + out["aD"] - y
    return out


def np_objective_grad(law: str, k: int, p: np.ndarray, d: Design, y: np.ndarray, delta: float = DELTA):
    """Mean Huber(delta) of L - y and its analytic gradient in parameter space (theta)."""
    t = _np_forward(law, k, p, d, y)
    q, T, inv, nN, nD, aN, aD, r, M = (t[n] for n in ("q", "T", "inv", "nN", "nD", "aN", "aD", "r", "M"))
    a = np.abs(r)
    f = float(np.mean(np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))))
    psi = np.clip(r, -delta, delta) / r.size
    wS = np.bincount(d.idx, psi, M) * (-inv * inv)          # d f / d S_m
    dC = T.T @ wS
    dG = ((T * d.logHm).T @ wS) * q["C"]
    dE = psi.sum()
    dalpha = -np.dot(psi, aN * d.lnN)
    dbeta = -np.dot(psi, aD * d.lnD)
    if law == "additive":
        g = np.concatenate([[dE, np.dot(psi, nN), np.dot(psi, nD), dalpha, dbeta], dC, dG])
    else:
        uA, uB, Ah, Bh = t["uA"], t["uB"], t["Ah"], t["Bh"]
        vA = np.bincount(d.idx, psi * nN, M)
        vB = np.bincount(d.idx, psi * nD, M)
        dCA = d.Hm.T @ (vA * q["gA"] * Ah / uA)
        dCB = d.Hm.T @ (vB * q["gB"] * Bh / uB)
        dgA = np.dot(vA, Ah * np.log(uA))
        dgB = np.dot(vB, Bh * np.log(uB))
        g = np.concatenate([[dE, dalpha, dbeta], dC, dG, dCA, [dgA], dCB, [dgB]])
    return f, g


def np_gauss_newton_diag(law: str, k: int, p: np.ndarray, d: Design, y: np.ndarray, delta: float = DELTA):
    """diag(J^T W J) / n in parameter space with the exact Huber curvature (W = 1 inside the
    band, 0 outside): the curvature mixlaw's documented stationarity measure uses."""
    t = _np_forward(law, k, p, d, y)
    q, T, inv, nN, nD, aN, aD, r, M = (t[n] for n in ("q", "T", "inv", "nN", "nD", "aN", "aD", "r", "M"))
    w = (np.abs(r) <= delta) / r.size
    wm = np.bincount(d.idx, w, M) * inv ** 4  # (d L / d S)^2 summed per mixture
    dC = (T * T).T @ wm
    dG = ((T * d.logHm) ** 2).T @ wm * q["C"] ** 2
    dE = w.sum()
    dalpha = np.dot(w, (aN * d.lnN) ** 2)
    dbeta = np.dot(w, (aD * d.lnD) ** 2)
    if law == "additive":
        return np.concatenate([[dE, np.dot(w, nN ** 2), np.dot(w, nD ** 2), dalpha, dbeta], dC, dG])
    uA, uB, Ah, Bh = t["uA"], t["uB"], t["Ah"], t["Bh"]
    vA = np.bincount(d.idx, w * nN ** 2, M)
    vB = np.bincount(d.idx, w * nD ** 2, M)
    dCA = (d.Hm ** 2).T @ (vA * (q["gA"] * Ah / uA) ** 2)
    dCB = (d.Hm ** 2).T @ (vB * (q["gB"] * Bh / uB) ** 2)
    dgA = np.dot(vA, (Ah * np.log(uA)) ** 2)
    dgB = np.dot(vB, (Bh * np.log(uB)) ** 2)
    return np.concatenate([[dE, dalpha, dbeta], dC, dG, dCA, [dgA], dCB, [dgB]])


def mean_huber(r: np.ndarray, delta: float = DELTA) -> float:
    a = np.abs(r)
    return float(np.mean(np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))))


def mre(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - y) / np.abs(y)) * 100)


def _truth(law: str, k: int, rng: np.random.Generator, d_train: Design) -> np.ndarray:
    """Plausible true parameters: E 1.5-2, Chinchilla-like size and token terms (N' = N/1e6,
    D' = D/1e9), gamma_i in 0.2-0.8, C_i log-uniform in [0.3, 3] times one scale chosen so
    that the mixture term 1/S(h) has median m0 ~ U(0.2, 0.5) over the training mixtures
    (otherwise it vanishes as k grows); joint: CA_i = A^(1/gA) x log-uniform [0.7, 1.4],
    gA in 0.5-1.5, likewise CB, gB (so A_h is within a factor ~1.4^gA of A)."""
    lu = lambda lo, hi, size=None: np.exp(rng.uniform(np.log(lo), np.log(hi), size))  # noqa: E731
    E = rng.uniform(1.5, 2.0)
    A, alpha = lu(1.0, 3.0), rng.uniform(0.28, 0.40)
    B, beta = lu(0.3, 0.8), rng.uniform(0.25, 0.35)
    gamma = rng.uniform(0.2, 0.8, k)
    C = lu(0.3, 3.0, k)
    T = np.where(d_train.pos, np.exp(gamma * d_train.logHm), 0.0)
    m0 = rng.uniform(0.2, 0.5)
    C = C * np.median(1.0 / (T @ C)) / m0
    if law == "additive":
        return np.concatenate([[E, A, B, alpha, beta], C, gamma])
    gA, gB = rng.uniform(0.5, 1.5), rng.uniform(0.5, 1.5)
    CA = A ** (1 / gA) * lu(0.7, 1.4, k)
    CB = B ** (1 / gB) * lu(0.7, 1.4, k)
    return np.concatenate([[E, alpha, beta], C, gamma, CA, [gA], CB, [gB]])


def make_problem(law: str, k: int, design: str, seed: int = 0, n_heldout: int = N_HELDOUT) -> dict:
    """A synthetic problem of known truth. Deterministic in (law, k, design, seed)."""
    M = {"3k": 3000, "k+10": k + 10}[design]
    rng = np.random.default_rng([seed, k, {"additive": 1, "joint": 2}[law], {"3k": 1, "k+10": 2}[design]])
    train = Design(_mixtures(rng, M, k))
    held = Design(_mixtures(rng, n_heldout, k))
    theta = _truth(law, k, rng, train)
    clean = np_predict(law, k, theta, train)
    y = clean * (1 + NOISE * rng.standard_normal(clean.size))
    clean_h = np_predict(law, k, theta, held)
    y_h = clean_h * (1 + NOISE * rng.standard_normal(clean_h.size))
    return {"law": law, "k": k, "design": design, "seed": seed, "theta": theta, "train": train, "y": y,
            "clean": clean, "held": held, "y_held": y_h, "clean_held": clean_h}


def make_runs(prob: dict):
    mixlaw = _import_mixlaw()
    d = prob["train"]
    return mixlaw.Runs(d.N, d.D, d.H(), targets={"y": prob["y"]}, run=d.run)


def make_starts(prob: dict, S: int, seed: int, two_stage: bool = False):
    """S starts by mixlaw's sampler, with E's init range [0, min y] as `mixlaw.fit` draws it;
    with `two_stage`, start 0 is replaced by mixlaw's two-stage start (`mixlaw.fit`'s start 0
    by default), computed from the training data alone."""
    mixlaw = _import_mixlaw()
    from mixlaw.fit import random_starts
    L = mixlaw.law(prob["law"], prob["k"])
    ilo, ihi = L.init_lower.copy(), L.init_upper.copy()
    ilo[L.index("E")], ihi[L.index("E")] = 0.0, float(prob["y"].min())
    rng = np.random.default_rng([seed, prob["k"], 77])
    starts = random_starts(L, S, rng, L.lower, L.upper, ilo, ihi)
    if two_stage:
        from mixlaw._two_stage import two_stage_start
        d = prob["train"]
        starts[0] = two_stage_start(L, d.N, d.D, d.H(), prob["y"], None, L.lower, L.upper)
    return starts


# ---------------------------------------------------------------------------------------
# Stationarity in the solver's coordinates
# ---------------------------------------------------------------------------------------
def z_space(L):
    """The solver's coordinates: z = log theta where log_scale and lower >= 0 (z in
    [max(log lo, -700), min(log hi, 700)]), else theta (as cpp/src/solver.cpp)."""
    logp = np.asarray(L.log_scale, bool) & (L.lower >= 0)
    with np.errstate(divide="ignore"):
        zlo = np.where(logp, np.where(L.lower > 0, np.maximum(np.log(np.maximum(L.lower, 1e-300)), -700), -700),
                       L.lower)
        zhi = np.where(logp, np.minimum(np.log(L.upper), 700), L.upper)
    return logp, zlo, zhi


def stationarity(L, law: str, k: int, theta: np.ndarray, d: Design, y: np.ndarray) -> dict:
    """max_p |g_z[p]| max(1, |z_p|) / f of the projected gradient of the mean Huber in z."""
    logp, zlo, zhi = z_space(L)
    f, g = np_objective_grad(law, k, theta, d, y)
    with np.errstate(divide="ignore"):
        z = np.where(logp, np.log(np.where(theta > 0, theta, 1.0)), theta)
    z = np.where(logp & (theta <= 0), zlo, z)
    gz = np.where(logp, g * theta, g)
    tol = 1e-12 * np.maximum(1.0, np.abs(z))
    at_lo = (z <= zlo + tol) & (gz > 0)
    at_hi = (z >= zhi - tol) & (gz < 0)
    gp = np.where(at_lo | at_hi, 0.0, gz)
    m = np.abs(gp) * np.maximum(1.0, np.abs(z)) / f
    worst = int(np.argmax(m))
    # Collapsed scale parameters: in z = log theta a coefficient driven towards 0 has a
    # vanishing z-gradient whatever its theta-gradient, so the measure above calls such a
    # point stationary. Flag log-scaled coordinates below COLLAPSED x the bottom of their
    # init range whose theta-gradient says f decreases as they grow (KKT violated at theta
    # = 0): first-order gain of raising them to the bottom of the init range, relative to f.
    floor = np.asarray(L.init_lower, float)
    coll = logp & (theta < COLLAPSED * floor) & (g < 0)
    cm = np.where(coll, -g * floor / f, 0.0)
    # mixlaw's documented measure (Fit.stationarity): unit 1 in z for a log-scaled
    # coordinate, max(1, |z|) for another, shortened to sqrt(2 f / B_pp) with B_pp the exact
    # Gauss-Newton curvature in z.
    Bz = np_gauss_newton_diag(law, k, theta, d, y) * np.where(logp, theta * theta, 1.0)
    unit = np.where(logp, 1.0, np.maximum(1.0, np.abs(z)))
    with np.errstate(divide="ignore"):
        unit = np.where(Bz > 0, np.minimum(unit, np.sqrt(2 * f / np.where(Bz > 0, Bz, 1.0))), unit)
    doc = float(np.max(np.abs(gp) * unit) / f)
    return {"measure": float(m[worst]), "measure_doc": doc, "worst_param": L.param_names[worst], "f": f,
            "n_active": int(np.sum(at_lo | at_hi)), "collapsed_measure": float(cm.max(initial=0.0)),
            "n_collapsed": int(np.sum(cm > 0)),
            "collapsed": [L.param_names[i] for i in np.flatnonzero(cm > 0)][:12]}


def gradient_check(seed: int = 0) -> dict:
    """Once per run: this file's predictions against tests/numpy_oracle.py and mixlaw, and its
    z-gradient against central differences of the oracle's mean Huber (both laws, k = 7)."""
    mixlaw = _import_mixlaw()
    from numpy_oracle import oracle_predict
    out = {}
    for law in ("additive", "joint"):
        k = 7
        prob = make_problem(law, k, "k+10", seed=seed + 1000)
        d, L = prob["train"], mixlaw.law(law, k)
        rng = np.random.default_rng(5)
        th = prob["theta"] * np.exp(0.05 * rng.standard_normal(L.n_params))  # off the optimum
        H = d.H()
        p_np = np_predict(law, k, th, d)
        p_or = oracle_predict(L, th, d.N, d.D, H)
        p_ml = L.predict(th, d.N, d.D, H)
        logp, _, _ = z_space(L)
        z0 = np.where(logp, np.log(th), th)
        to_th = lambda z: np.where(logp, np.exp(z), z)  # noqa: E731
        f, g = np_objective_grad(law, k, th, d, prob["y"])
        gz = np.where(logp, g * th, g)
        fd = np.empty_like(gz)
        for p in range(z0.size):
            h = 1e-6 * max(1.0, abs(z0[p]))
            zp, zm = z0.copy(), z0.copy()
            zp[p] += h
            zm[p] -= h
            fd[p] = (mean_huber(oracle_predict(L, to_th(zp), d.N, d.D, H) - prob["y"])
                     - mean_huber(oracle_predict(L, to_th(zm), d.N, d.D, H) - prob["y"])) / (2 * h)
        out[law] = {"pred_vs_oracle": float(np.max(np.abs(p_np - p_or) / p_or)),
                    "pred_vs_mixlaw": float(np.max(np.abs(p_np - p_ml) / p_ml)),
                    "grad_vs_fd": float(np.max(np.abs(gz - fd)) / np.max(np.abs(fd))),
                    "f_vs_oracle": abs(f - mean_huber(p_or - prob["y"])) / f}
    return out


# ---------------------------------------------------------------------------------------
# Workers (each configuration in its own subprocess)
# ---------------------------------------------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _write(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh)
    os.replace(tmp, path)


def _heldout(law: str, k: int, x: np.ndarray, prob: dict) -> dict:
    p = np_predict(law, k, x, prob["held"])
    return {"mre_noisy": mre(p, prob["y_held"]), "mre_clean": mre(p, prob["clean_held"])}


def worker_mixlaw(a) -> dict:
    """Explicit starts, threads=a.threads; with --check also every start's end point
    (the same C++ call `mixlaw.fit` makes, `_core.fit_many`, which returns all of them)."""
    mixlaw = _import_mixlaw()
    prob = make_problem(a.law, a.k, a.design, a.seed)
    runs = make_runs(prob)
    L = mixlaw.law(a.law, a.k)
    starts = make_starts(prob, a.starts, a.seed, a.two_stage)
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    fits = mixlaw.fit(runs, L, starts=starts, threads=a.threads)
    wall = time.perf_counter() - t0
    f = fits["y"]
    out = {"wall": wall, "rss_before_fit_mb": rss0, "fun": f.fun, "status": f.status, "nit_best": f.nit,
           "starts_fun": f.starts_fun.tolist(), "starts_status": f.starts_status.tolist(),
           "x_sha": hashlib.sha1(np.ascontiguousarray(f.x).tobytes()).hexdigest(),
           "starts_sha": hashlib.sha1(starts.tobytes()).hexdigest(),
           "heldout": _heldout(a.law, a.k, np.asarray(f.x), prob), "spread": f.spread}
    if hasattr(f, "starts_stationarity"):  # the solver's own measure, where the build reports one
        out["starts_stationarity_reported"] = [float(v) for v in np.asarray(f.starts_stationarity, float)]
    if a.check:
        out.update(_per_start_check(mixlaw, runs, L, starts, f, prob, a))
    return out


def _per_start_check(mixlaw, runs, L, starts, f, prob, a) -> dict:
    from mixlaw import _core
    from mixlaw.fit import _prepare_job, _solver_options
    via = "core"
    try:
        job = _prepare_job(runs, L, "y", n_starts=starts.shape[0], seed=f.options["seed"], lo=L.lower.copy(),
                           hi=L.upper.copy(), touched=set(), residual="raw", starts=starts)
        r = _core.fit_many([job.problem], [job.starts], [L.lower.copy()], [L.upper.copy()], [job.seed],
                           threads=1, **_solver_options(f.options))[0]
        X, fun, status, nit = np.asarray(r["x"]), np.asarray(r["fun"]), np.asarray(r["status"]), np.asarray(r["nit"])
    except Exception as exc:  # private API changed: one public fit per start instead
        via = f"per-start public fits ({type(exc).__name__}: {exc})"
        X, fun, status, nit = [], [], [], []
        for s in range(starts.shape[0]):
            g = mixlaw.fit(runs, L, starts=starts[s:s + 1], threads=1)["y"]
            X.append(np.asarray(g.x))
            fun.append(g.fun)
            status.append(g.status)
            nit.append(g.nit)
        X, fun, status, nit = np.array(X), np.array(fun), np.array(status), np.array(nit)
    same = bool(np.array_equal(fun, f.starts_fun) and np.array_equal(status, f.starts_status))
    stat = []
    for s in range(starts.shape[0]):
        if status[s] > 0:
            st = stationarity(L, a.law, a.k, X[s], prob["train"], prob["y"])
            st.update(start=s, status=int(status[s]), nit=int(nit[s]), fun=float(fun[s]))
            stat.append(st)
    return {"check_via": via, "check_same_as_fit": same, "nit": nit.tolist(), "stationarity": stat,
            "starts_x": X.tolist()}


#: The tying of the `--tie` fits: one exponent shared by all domains (fit's docstring).
TIE = {"gamma": "gamma_*"}


def worker_default(a) -> dict:
    """mixlaw's default fit (threads=1); worker "tied": the same with `tie=TIE`."""
    mixlaw = _import_mixlaw()
    prob = make_problem(a.law, a.k, a.design, a.seed)
    runs = make_runs(prob)
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    f = mixlaw.fit(runs, a.law, threads=1, **({"tie": TIE} if a.worker == "tied" else {}))["y"]
    wall = time.perf_counter() - t0
    return {"wall": wall, "success": bool(f.success), "at_limit": len(f.at_limit), "rss_before_fit_mb": rss0, "fun": f.fun, "status": f.status, "nit_best": f.nit,
            "n_starts": int(f.starts_fun.size), "nested": bool(f.options.get("nested_start")),
            "starts_fun": f.starts_fun.tolist(), "starts_status": f.starts_status.tolist(),
            "heldout": _heldout(a.law, a.k, np.asarray(f.x), prob), "spread": f.spread}


class _DesignJacobian:
    """Predictions and dense Jacobian for least_squares, from the reference's NumpyLaw
    (scipy_reference.py) on the expanded records."""

    def __init__(self, law: str, d: Design) -> None:
        from scipy_reference import NumpyLaw
        self.m = NumpyLaw(law, d.N, d.D, d.H())

    def fun(self, p, y):
        return self.m.predict_jacobian(p, jac=False)[0] - y

    def jac(self, p, y=None):
        return self.m.predict_jacobian(p)[1]


def worker_scipy(a) -> dict:
    """least_squares(trf, huber, f_scale=delta) from every start, in start order, until the
    time cap; results written after every start (the parent may kill a run at the cap)."""
    from scipy.optimize import least_squares
    mixlaw = _import_mixlaw()
    prob = make_problem(a.law, a.k, a.design, a.seed)
    L = mixlaw.law(a.law, a.k)
    starts = make_starts(prob, a.starts, a.seed, a.two_stage)
    P, n = L.n_params, prob["y"].size
    tr_solver = "exact" if P <= a.exact_max_p else "lsmr"
    out = {"tr_solver": tr_solver, "starts_sha": hashlib.sha1(starts.tobytes()).hexdigest(), "n_done": 0,
           "starts_fun": [], "starts_fun_recomputed": [], "status": [], "nfev": [], "njev": [], "seconds": [],
           "stationarity": [], "skipped": None, "cap": a.scipy_cap}
    jac_gb = n * P * 8 / 1e9
    if jac_gb > a.scipy_max_gb:
        out["skipped"] = f"dense Jacobian {jac_gb:.1f} GB > --scipy-max-gb {a.scipy_max_gb}"
        return out
    model = _DesignJacobian(a.law, prob["train"])
    y = prob["y"]
    # Cost of one iteration: residuals + Jacobian + (exact) an SVD of the n x P Jacobian.
    t0 = time.perf_counter()
    model.fun(starts[0], y)
    J = model.jac(starts[0])
    if tr_solver == "exact":
        np.linalg.svd(J, full_matrices=False)
    t_iter = time.perf_counter() - t0
    del J
    out["t_iter_estimate"] = t_iter
    est_nfev = a.scipy_est_nfev
    est = t_iter * est_nfev
    out["est_one_start"] = est
    if est > a.scipy_cap:
        out["skipped"] = (f"one start estimated at {est:.0f} s ({est_nfev} iterations x {t_iter:.2f} s) "
                          f"> cap {a.scipy_cap:.0f} s")
        return out
    rss0 = _rss_mb()
    out["rss_before_fit_mb"] = rss0
    t_all = time.perf_counter()
    deadline = t_all + a.scipy_cap

    def stop_at_cap(x):
        if time.perf_counter() > deadline:
            raise StopIteration

    for s in range(starts.shape[0]):
        el = time.perf_counter() - t_all
        if s > 0 and el + el / s > a.scipy_cap:
            out["stopped"] = f"time cap {a.scipy_cap:.0f} s after {s} starts"
            break
        ts = time.perf_counter()
        tol = {} if a.scipy_tol is None else {"ftol": a.scipy_tol, "xtol": a.scipy_tol, "gtol": a.scipy_tol}
        r = least_squares(model.fun, starts[s], jac=model.jac, bounds=(L.lower, L.upper), method="trf",
                          loss="huber", f_scale=DELTA, tr_solver=tr_solver, args=(y,), callback=stop_at_cap, **tol)
        if r.status == -2:  # stopped by the time cap: not a finished start
            out["stopped"] = f"time cap {a.scipy_cap:.0f} s during start {s}"
            out["truncated_start"] = {"start": s, "fun": float(r.cost) / n, "nfev": int(r.nfev),
                                      "seconds": time.perf_counter() - ts}
            out["wall_with_truncated"] = time.perf_counter() - t_all
            _write(a.out, out)
            break
        out["seconds"].append(time.perf_counter() - ts)
        out["starts_fun"].append(float(r.cost) / n)          # sum of Huber_delta(r_j) / n
        out["starts_fun_recomputed"].append(mean_huber(r.fun))
        out["status"].append(int(r.status))
        out["nfev"].append(int(r.nfev))
        out["njev"].append(int(r.njev) if r.njev is not None else -1)
        if r.status > 0:
            st = stationarity(L, a.law, a.k, r.x, prob["train"], y)
            st.update(start=s)
            out["stationarity"].append(st)
        fb = int(np.argmin(out["starts_fun"]))
        if fb == s:
            out["x_best"] = r.x.tolist()
        out["n_done"] = s + 1
        out["wall"] = time.perf_counter() - t_all
        out["heldout"] = _heldout(a.law, a.k, np.asarray(out["x_best"]), prob)
        _write(a.out, out)
    out.pop("x_best", None)
    return out


def run_worker(a) -> None:
    fn = {"mixlaw": worker_mixlaw, "default": worker_default, "tied": worker_default, "scipy": worker_scipy}[a.worker]
    res = fn(a)
    res.pop("x_best", None)
    _write(a.out, res)


# ---------------------------------------------------------------------------------------
# Parent: one subprocess per configuration
# ---------------------------------------------------------------------------------------
def spawn(mode: str, law: str, k: int, design: str, a, threads: int = 1, check: bool = False,
          timeout: float | None = None) -> dict:
    fd, path = tempfile.mkstemp(prefix=f"bench_domains_{mode}_", suffix=".json")
    os.close(fd)
    os.unlink(path)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--law", law, "--k", str(k),
           "--design", design, "--seed", str(a.seed), "--starts", str(a.starts), "--threads", str(threads),
           "--out", path, "--scipy-cap", str(a.scipy_cap), "--scipy-est-nfev", str(a.scipy_est_nfev),
           "--exact-max-p", str(a.exact_max_p), "--scipy-max-gb", str(a.scipy_max_gb)]
    if a.scipy_tol is not None:
        cmd += ["--scipy-tol", str(a.scipy_tol)]
    if a.two_stage:
        cmd.append("--two-stage")
    if check:
        cmd.append("--check")
    env = dict(os.environ)
    if mode == "scipy" and a.blas_threads:
        for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[v] = str(a.blas_threads)
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    killed = []
    timer = None
    if timeout:
        def _kill():
            killed.append(True)
            p.kill()
        timer = threading.Timer(timeout, _kill)
        timer.start()
    err_chunks = []
    reader = threading.Thread(target=lambda: err_chunks.append(p.stderr.read()))
    reader.start()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    if timer:
        timer.cancel()
    res = {}
    if os.path.exists(path):
        with open(path) as fh:
            res = json.load(fh)
        os.unlink(path)
    res["peak_rss_mb"] = ru.ru_maxrss / 1024
    res["process_wall"] = time.perf_counter() - t0
    res["returncode"] = p.returncode
    if killed:
        res["killed_at_timeout"] = timeout
    if p.returncode != 0 and not killed:
        res["error"] = (err_chunks[0] if err_chunks else "")[-3000:]
        print(f"  worker {mode} {law} k={k} {design} failed:\n{res['error']}", file=sys.stderr)
    return res


def run_row(law: str, k: int, design: str, a) -> dict:
    mixlaw = _import_mixlaw()
    load = os.getloadavg()
    prob = make_problem(law, k, design, a.seed)
    L = mixlaw.law(law, k)
    truth_fun = mean_huber(prob["clean"] - prob["y"])
    truth_held = mre(prob["clean_held"], prob["y_held"])
    row = {"law": law, "k": k, "design": design, "P": L.n_params, "n_records": int(prob["y"].size),
           "n_mixtures": int(prob["train"].Hm.shape[0]), "starts": a.starts, "two_stage": a.two_stage, "seed": a.seed,
           "loadavg_at_start": list(load), "started": datetime.datetime.now().isoformat(timespec="seconds"),
           "truth_fun": truth_fun, "truth_heldout_mre": truth_held, "stat_tol": a.stat_tol,
           "y_range": [float(prob["y"].min()), float(prob["y"].max())],
           "truth_stationarity": stationarity(L, law, k, prob["theta"], prob["train"], prob["y"])["measure"]}
    del prob
    log = lambda s: print(f"  [{law} k={k} {design}] {s}", file=sys.stderr, flush=True)  # noqa: E731
    log(f"load {load[0]:.2f}; mixlaw threads=1 (+ per-start check)")
    wt = a.worker_timeout or None
    row["mixlaw1"] = spawn("mixlaw", law, k, design, a, threads=1, check=True, timeout=wt)
    log(f"mixlaw threads=1 {row['mixlaw1'].get('wall', math.nan):.2f} s; threads=2")
    row["mixlaw2"] = spawn("mixlaw", law, k, design, a, threads=2, timeout=wt)
    if not a.no_default:
        log("mixlaw default fit")
        row["default"] = spawn("default", law, k, design, a, threads=1, timeout=wt)
    if a.tie:
        log("mixlaw default fit with tie=" + repr(TIE))
        row["tied"] = spawn("tied", law, k, design, a, threads=1, timeout=wt)
    if not a.no_scipy:
        log("scipy")
        row["scipy"] = spawn("scipy", law, k, design, a, timeout=a.scipy_cap * 1.25 + 120)
        log(f"scipy {row['scipy'].get('wall', math.nan):.1f} s, {row['scipy'].get('n_done', 0)} starts"
            + (f" (skipped: {row['scipy']['skipped']})" if row["scipy"].get("skipped") else ""))
    summarize(row)
    return row


def summarize(row: dict) -> None:
    """Derived figures of a row (stored under row['summary'])."""
    m1, m2 = row["mixlaw1"], row.get("mixlaw2", {})
    sc, df = row.get("scipy", {}), row.get("default", {})
    S = row["starts"]
    s = {}
    f1 = np.array(m1.get("starts_fun", [np.nan] * S), dtype=float)
    st1 = np.array(m1.get("starts_status", [-4] * S))
    cands = [np.nanmin(f1)] if f1.size else []
    sc_f = np.array(sc.get("starts_fun", []), dtype=float)
    if sc_f.size:
        cands.append(np.nanmin(sc_f))
    if "fun" in df:
        cands.append(df["fun"])
    best = float(np.nanmin(cands)) if cands else math.nan
    s["best_any"] = best
    at = lambda f: f <= best * (1 + 1e-6) + 1e-300  # noqa: E731
    s["mixlaw_converged"] = float(np.mean(st1 > 0))
    s["mixlaw_at_best"] = float(np.mean(at(f1)))
    s["mixlaw_fun_ratio"] = m1.get("fun", math.nan) / row["truth_fun"]
    s["mixlaw_held_ratio"] = m1.get("heldout", {}).get("mre_noisy", math.nan) / row["truth_heldout_mre"]
    nit = m1.get("nit", [])
    s["mixlaw_nit_median"] = float(np.median(nit)) if nit else math.nan
    stat = m1.get("stationarity", [])
    s["n_converged"] = len(stat)
    s["false_convergences"] = int(sum(x["measure"] > row["stat_tol"] for x in stat))
    # Against mixlaw's own documented definition and gtol (1% for rounding between the two).
    s["false_convergences_doc"] = int(sum(x.get("measure_doc", 0.0) > 1.01 * row.get("gtol", 1e-6) for x in stat))
    s["max_stationarity_doc"] = max((x.get("measure_doc", math.nan) for x in stat), default=math.nan)
    s["max_stationarity"] = max((x["measure"] for x in stat), default=math.nan)
    s["collapsed_convergences"] = int(sum(x["measure"] <= row["stat_tol"] and x.get("collapsed_measure", 0) >
                                          row["stat_tol"] for x in stat))
    s["median_stationarity"] = float(np.median([x["measure"] for x in stat])) if stat else math.nan
    s["threads_bit_identical"] = m1.get("x_sha") is not None and m1.get("x_sha") == m2.get("x_sha")
    s["speedup_2threads"] = m1.get("wall", math.nan) / m2.get("wall", math.nan) if m2 else math.nan
    s["same_starts"] = len({r.get("starts_sha") for r in (m1, m2, sc) if r.get("starts_sha")}) <= 1
    nd = int(sc.get("n_done", 0))
    s["scipy_n_done"] = nd
    if nd:
        sst = np.array(sc["status"])
        s["scipy_converged"] = float(np.mean(sst > 0))
        s["scipy_at_best"] = float(np.mean(at(sc_f)))
        s["scipy_fun_ratio"] = float(np.min(sc_f)) / row["truth_fun"]
        s["scipy_held_ratio"] = sc["heldout"]["mre_noisy"] / row["truth_heldout_mre"]
        s["scipy_nfev_median"] = float(np.median(sc["nfev"]))
        s["scipy_per_start_ratio"] = (sc["wall"] / nd) / (m1["wall"] / S)
        s["mixlaw_best_same_starts"] = float(np.nanmin(f1[:nd]))
        s["mixlaw_le_scipy_same_starts"] = bool(s["mixlaw_best_same_starts"] <= np.min(sc_f) * (1 + 1e-6))
        s["scipy_cost_vs_recomputed"] = float(np.max(np.abs(sc_f - np.array(sc["starts_fun_recomputed"]))
                                                     / sc_f))
        sstat = sc.get("stationarity", [])
        s["scipy_false_convergences"] = int(sum(x["measure"] > row["stat_tol"] for x in sstat))
        s["scipy_n_converged"] = len(sstat)
        s["scipy_max_stationarity"] = max((x["measure"] for x in sstat), default=math.nan)
        s["scipy_collapsed_convergences"] = int(sum(x["measure"] <= row["stat_tol"] and
                                                    x.get("collapsed_measure", 0) > row["stat_tol"] for x in sstat))
    if "fun" in df:
        s["default_fun_ratio"] = df["fun"] / row["truth_fun"]
        s["default_held_ratio"] = df["heldout"]["mre_noisy"] / row["truth_heldout_mre"]
        s["default_converged"] = float(np.mean(np.array(df["starts_status"]) > 0))
        s["default_at_best"] = float(np.mean(at(np.array(df["starts_fun"], dtype=float))))
    td = row.get("tied", {})
    if "fun" in td:
        s["tied_fun_ratio"] = td["fun"] / row["truth_fun"]
        s["tied_held_ratio"] = td["heldout"]["mre_noisy"] / row["truth_heldout_mre"]
    row["summary"] = s


# ---------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------
def _f(v, fmt="{:.3g}", na="-"):
    try:
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            return na
    except TypeError:
        return na
    return fmt.format(v)


def header(meta: dict) -> str:
    o = meta["options"]
    return (f"{meta['date']}, {meta['host_cpus']} CPUs, mixlaw {meta['mixlaw']} (repository HEAD at run time "
            f"{meta['git']}; package {meta['core']['module']}, _core sha1 {meta['core']['sha1']} built "
            f"{meta['core']['mtime']}), "
            f"SciPy {meta['scipy']}, NumPy {meta['numpy']}; S = {o['starts']} explicit starts (same for mixlaw and "
            f"SciPy{'; start 0 the two-stage start' if o.get('two_stage') else ''}), seed {o['seed']}, SciPy cap {o['scipy_cap']:.0f} s per row, BLAS threads "
            f"{o['blas_threads'] or 'default'}, SciPy tolerances {o['scipy_tol'] or 'default'}, stationarity "
            f"threshold {o['stat_tol']:g}; load average {meta['loadavg_at_start'][0]:.2f} at the start, "
            f"{meta.get('loadavg_at_end', [math.nan])[0]:.2f} at the end")


def markdown(rows: list[dict], metas: list[dict]) -> str:
    out = [header(m) for m in metas]
    meta = metas[0]
    gc = meta.get("gradient_check", {})
    if gc:
        out.append("gradient check (k=7, vs tests/numpy_oracle.py central differences): " + "; ".join(
            f"{law}: pred vs oracle {v['pred_vs_oracle']:.1e}, vs mixlaw {v['pred_vs_mixlaw']:.1e}, "
            f"grad_z vs FD {v['grad_vs_fd']:.1e}" for law, v in gc.items()))
    out.append("")
    out.append("Speed and memory (wall seconds; SciPy: starts done of S, `*` = not all; ratio = SciPy "
               "seconds per start / mixlaw threads=1 seconds per start; iterations: median over starts, "
               "mixlaw LM iterations / SciPy nfev; peak RSS of the worker process)")
    out.append("")
    out.append("| law | k | design | P | records | load | mixlaw t=1 | t=2 | 2-thr speed-up | SciPy | ratio "
               "| iters mixlaw / SciPy | peak MB mixlaw / SciPy | default fit t=1 |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s, m1, m2 = r["summary"], r["mixlaw1"], r.get("mixlaw2", {})
        sc, df = r.get("scipy"), r.get("default")
        if sc is None:
            sct = "not run"
        elif sc.get("skipped"):
            sct = (f"skipped (~{sc['est_one_start']:.0f} s per start)" if "est_one_start" in sc else "skipped (memory)")
        elif s["scipy_n_done"]:
            sct = f"{sc['wall']:.3g} ({s['scipy_n_done']}{'' if s['scipy_n_done'] == r['starts'] else '*'})"
        elif sc.get("truncated_start"):
            sct = f"0 done ({sc['truncated_start']['seconds']:.0f} s in start 0, cap)"
        else:
            sct = "killed" if sc.get("killed_at_timeout") else "failed"
        out.append(
            f"| {r['law']} | {r['k']} | {r['design']} | {r['P']} | {r['n_records']} | {r['loadavg_at_start'][0]:.2f} "
            f"| {_f(m1.get('wall'), '{:.3g}')} | {_f(m2.get('wall'), '{:.3g}')} "
            f"| {_f(s['speedup_2threads'], '{:.2f}x')} "
            f"| {sct} | {_f(s.get('scipy_per_start_ratio'), '{:.0f}x')} "
            f"| {_f(s['mixlaw_nit_median'], '{:.0f}')} / {_f(s.get('scipy_nfev_median'), '{:.0f}')} "
            f"| {_f(m1.get('peak_rss_mb'), '{:.0f}')} / "
            f"{_f(sc.get('peak_rss_mb') if sc and s['scipy_n_done'] else None, '{:.0f}')} "
            f"| {_f(df.get('wall') if df else None, '{:.3g} s')} |")
    out.append("")
    out.append("Quality (objective: mean Huber; `/truth` = ratio to the truth's value on the same data; held-out "
               "MRE on 200 fresh noisy mixtures x 20 records; converged = status > 0; at best = within 1e-6 "
               "of the best objective any solver found; false conv. = converged starts whose projected "
               "z-gradient measure (unit max(1, |z|)) exceeds the threshold; documented measure = mixlaw's "
               "Fit.stationarity definition (curvature-shortened units, exact Gauss-Newton diagonal) recomputed "
               "in NumPy, its false convergences counted above 1.01 x gtol (1e-6); collapsed = converged starts "
               "below the threshold with a "
               "scale coefficient driven to ~0 whose parameter-space gradient asks to raise it (KKT violated, "
               "see `stationarity`); SciPy's in brackets)")
    out.append("")
    out.append("| law | k | design | truth obj | best/truth mixlaw / SciPy / default | truth held-out MRE % "
               "| held-out/truth mixlaw / SciPy / default | converged mixlaw / SciPy "
               "| at best mixlaw / SciPy / default "
               "| false conv. (SciPy) | collapsed (SciPy) | max stationarity (SciPy) "
               "| false conv. / max, documented measure | t1 = t2 bits |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["summary"]
        nc = s["n_converged"]
        out.append(
            f"| {r['law']} | {r['k']} | {r['design']} | {r['truth_fun']:.3e} "
            f"| {_f(s['mixlaw_fun_ratio'], '{:.4f}')} / {_f(s.get('scipy_fun_ratio'), '{:.4f}')} / "
            f"{_f(s.get('default_fun_ratio'), '{:.4f}')} "
            f"| {r['truth_heldout_mre']:.4f} "
            f"| {_f(s['mixlaw_held_ratio'], '{:.4f}')} / {_f(s.get('scipy_held_ratio'), '{:.4f}')} / "
            f"{_f(s.get('default_held_ratio'), '{:.4f}')} "
            f"| {_f(s['mixlaw_converged'], '{:.2f}')} / {_f(s.get('scipy_converged'), '{:.2f}')} "
            f"| {_f(s['mixlaw_at_best'], '{:.2f}')} / {_f(s.get('scipy_at_best'), '{:.2f}')} / "
            f"{_f(s.get('default_at_best'), '{:.2f}')} "
            f"| {s['false_convergences']} of {nc} ({_f(s.get('scipy_false_convergences'), '{}')} of "
            f"{_f(s.get('scipy_n_converged'), '{}')}) "
            f"| {s.get('collapsed_convergences', '-')} ({_f(s.get('scipy_collapsed_convergences'), '{}')}) "
            f"| {_f(s['max_stationarity'], '{:.1e}')} ({_f(s.get('scipy_max_stationarity'), '{:.1e}')}) "
            f"| {s.get('false_convergences_doc', '-')} of {nc} / {_f(s.get('max_stationarity_doc'), '{:.1e}')} "
            f"| {s['threads_bit_identical']} |")
    tied = [r for r in rows if "tied_fun_ratio" in r["summary"]]
    if tied:
        out.append("")
        out.append(f"Tying (`tie={TIE!r}`: one exponent shared by all domains), both default fits, threads=1; "
                   "held-out MRE on the same 200 fresh mixtures as above, as a ratio to the truth's")
        out.append("")
        out.append("| law | k | design | P untied | mixtures | objective/truth untied / tied "
                   "| held-out/truth untied / tied | success untied / tied | at a limit untied / tied "
                   "| seconds untied / tied |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in tied:
            s, df, td = r["summary"], r.get("default", {}), r["tied"]
            out.append(
                f"| {r['law']} | {r['k']} | {r['design']} | {r['P']} | {r['n_mixtures']} "
                f"| {_f(s.get('default_fun_ratio'), '{:.4f}')} / {s['tied_fun_ratio']:.4f} "
                f"| {_f(s.get('default_held_ratio'), '{:.4f}')} / {s['tied_held_ratio']:.4f} "
                f"| {df.get('success', '-')} / {td.get('success', '-')} "
                f"| {df.get('at_limit', '-')} / {td.get('at_limit', '-')} "
                f"| {_f(df.get('wall'), '{:.3g}')} / {td['wall']:.3g} |")
    return "\n".join(out)


def _git() -> str:
    try:
        h = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
        dirty = subprocess.run(["git", "-C", HERE, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout
        return h.strip() + ("+dirty" if dirty.strip() else "")
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--laws", default="additive,joint", help="comma-separated: additive, joint")
    ap.add_argument("--designs", default="3k,k+10", help="comma-separated: 3k, k+10")
    ap.add_argument("--ks", default=None, help="comma-separated k (default: additive "
                    f"{','.join(map(str, K_ADDITIVE))}; joint {','.join(map(str, K_JOINT))}; "
                    "values outside a law's grid are skipped for it)")
    ap.add_argument("--quick", action="store_true", help=f"k in {K_QUICK} only")
    ap.add_argument("--starts", type=int, default=8, help="explicit starts S, shared by mixlaw and SciPy")
    ap.add_argument("--two-stage", action="store_true",
                    help="start 0 is mixlaw's two-stage start (the default fit's start 0) instead of a random one")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stat-tol", type=float, default=1e-4, help="false-convergence threshold")
    ap.add_argument("--scipy-cap", type=float, default=600.0, help="SciPy seconds per (law, k, design)")
    ap.add_argument("--scipy-est-nfev", type=int, default=150,
                    help="iterations assumed when estimating one SciPy start, to skip SciPy when one start would "
                         "exceed the cap (150: the medians at k = 7 on the 3k design are 47 additive, 136 "
                         "joint; joint on k+10 needs ~2000, but is cheap); a start still running at the cap is "
                         "stopped (least_squares callback) and not counted")
    ap.add_argument("--scipy-max-gb", type=float, default=4.0, help="skip SciPy if its dense Jacobian is larger")
    ap.add_argument("--exact-max-p", type=int, default=300, help="tr_solver='exact' up to this P, 'lsmr' beyond")
    ap.add_argument("--scipy-tol", type=float, default=None,
                    help="ftol = xtol = gtol of least_squares (default: SciPy's, 1e-8)")
    ap.add_argument("--blas-threads", type=int, default=1, help="BLAS threads of the SciPy worker (0: default)")
    ap.add_argument("--no-scipy", action="store_true")
    ap.add_argument("--no-default", action="store_true", help="skip mixlaw's default fit")
    ap.add_argument("--tie", action="store_true",
                    help="also the default fit with one exponent shared by all domains (held-out MRE side by side)")
    ap.add_argument("--worker-timeout", type=float, default=0,
                    help="kill a mixlaw worker (explicit starts or default fit) after this many seconds (0: never)")
    ap.add_argument("--from-json", nargs="+", default=None,
                    help="only print (and --md) the tables of earlier --json files, rows concatenated")
    ap.add_argument("--md", default=None, help="also write the markdown tables here")
    ap.add_argument("--json", default=None, help="write every number here")
    # worker mode (internal)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--law", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--k", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--design", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        run_worker(a)
        return

    if a.from_json:
        metas, rows = [], []
        for path in a.from_json:
            with open(path) as fh:
                d = json.load(fh)
            metas.append(d["meta"])
            rows += d["rows"]
        rows.sort(key=lambda r: (("additive", "joint").index(r["law"]), r["k"], ("3k", "k+10").index(r["design"])))
        text = markdown(rows, metas)
        print(text)
        if a.md:
            with open(a.md, "w") as fh:
                fh.write(text + "\n")
        return

    mixlaw = _import_mixlaw()
    import scipy
    laws = [x for x in a.laws.split(",") if x]
    designs = [x for x in a.designs.split(",") if x]
    for x in laws:
        if x not in ("additive", "joint"):
            ap.error(f"--laws: {x!r} is not additive or joint")
    for x in designs:
        if x not in ("3k", "k+10"):
            ap.error(f"--designs: {x!r} is not 3k or k+10")
    wanted = None if a.ks is None else [int(v) for v in a.ks.split(",") if v]
    meta = {"date": datetime.date.today().isoformat(), "git": _git(), "mixlaw": mixlaw.__version__,
            "scipy": scipy.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "host_cpus": os.cpu_count(), "argv": sys.argv[1:], "loadavg_at_start": list(os.getloadavg()),
            "options": {key: getattr(a, key) for key in ("starts", "seed", "stat_tol", "scipy_cap", "scipy_est_nfev",
                                                          "scipy_max_gb", "exact_max_p", "blas_threads", "scipy_tol",
                                                          "no_scipy", "no_default", "two_stage", "tie")}}
    so = mixlaw._core.__file__
    with open(so, "rb") as fh:
        meta["core"] = {"module": os.path.dirname(mixlaw.__file__), "so": so,
                        "sha1": hashlib.sha1(fh.read()).hexdigest()[:12],
                        "mtime": datetime.datetime.fromtimestamp(os.path.getmtime(so)).isoformat(timespec="seconds"),
                        "status_messages": {str(v): mixlaw._core.status_message(v) for v in range(-4, 5)}}
    gc = gradient_check()
    meta["gradient_check"] = gc
    for law, v in gc.items():
        print(f"gradient check {law}: pred vs oracle {v['pred_vs_oracle']:.1e}, vs mixlaw {v['pred_vs_mixlaw']:.1e}, "
              f"grad_z vs central differences {v['grad_vs_fd']:.1e}", file=sys.stderr)
        if v["pred_vs_oracle"] > 1e-12 or v["grad_vs_fd"] > 1e-5:
            sys.exit(f"gradient check failed for {law}: {v}")
    rows = []
    for law in laws:
        grid = K_QUICK if a.quick else (K_ADDITIVE if law == "additive" else K_JOINT)
        ks = [k for k in grid if wanted is None or k in wanted]
        for k in ks:
            for design in designs:
                rows.append(run_row(law, k, design, a))
                if a.json:
                    with open(a.json, "w") as fh:
                        json.dump({"meta": meta, "rows": rows}, fh, indent=1, default=float)
    meta["loadavg_at_end"] = list(os.getloadavg())
    text = markdown(rows, [meta])
    print(text)
    if a.md:
        with open(a.md, "w") as fh:
            fh.write(text + "\n")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=1, default=float)


if __name__ == "__main__":
    main()
