"""A start for laws with a mixture term 1/S(h), S(h) = sum_i C_i h_i^gamma_i, computed from
the data in two stages of least squares instead of drawn at random.

With many domains almost every random start ends at a minimum on an edge of the parameter
box (coefficients ~0 with their exponents at a bound; bench/README.md, section 6), and each
costs hundreds of iterations. The runs themselves say most of what a start needs, because
the additive law separates into a part in (N, D) and a part in h:

1. **Offsets.** Every record of one mixture shares ``E + 1/S(h)``: fit
   ``y = o_m + A N'^-alpha + B D'^-beta`` with one free offset ``o_m`` per distinct mixture.
   For fixed (alpha, beta) this is linear least squares in (A, B) after removing each
   mixture's mean (the offsets drop out); (alpha, beta) come from a grid refined by a pattern
   search. Cost O(records) per (alpha, beta), a few hundred of them.
2. **Mixture term.** ``o_m = E + 1/S(h_m)``: for a common exponent gamma on a small grid and
   E on a grid below ``min o``, ``1/(o_m - E) = sum_i C_i h_mi^gamma`` is linear in C >= 0;
   weighted by ``(o_m - E)^4`` (the first-order map of an error in o to one in 1/(o - E)) it
   is a non-negative least-squares problem, solved by an active set of Cholesky solves.
   The (gamma, E) pair with the smallest squared error in o wins. Cost per pair
   O(mixtures x k^2) for the Gram matrix and O(k^3) per Cholesky solve (a few per pair).

The start is (E, A, B, alpha, beta, C, gamma = the common gamma), clipped into the bounds;
coefficients the non-negative solve set to 0 start at a fraction of the median of the others
(ZERO_COEFFICIENT_FRACTION). It is a start, not a fit: the solver then minimises the
actual objective from it. Laws that contain the additive law (joint, full) get its start
through their nesting embedding.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .data import _distinct_rows
from .laws import Law, embed

#: Common exponents tried in stage 2 (clipped into each fit's bounds).
GAMMA_GRID = (0.15, 0.3, 0.5, 0.75, 1.0)
#: Values of E tried in stage 2, as fractions of the way from E's lower bound to min(o).
E_FRACTIONS = (0.0, 0.3, 0.5, 0.65, 0.75, 0.82, 0.88, 0.92, 0.95, 0.97)
#: Exponent grid of stage 1 (alpha and beta), refined by a pattern search to EXPONENT_TOL.
EXPONENT_GRID = np.linspace(0.05, 1.5, 12)
EXPONENT_TOL = 1e-8
#: A coefficient the non-negative solve sets to 0 starts at this fraction of the median
#: positive one. The solve zeroes coefficients it cannot tell apart with one common gamma and
#: few mixtures per domain; started near 0 (in log space, where the solver moves them) they
#: cost most of the iterations or stay collapsed (bench/README.md, section 6).
ZERO_COEFFICIENT_FRACTION = 0.3
#: Active-set rounds of the non-negative least squares (each drops the negative entries).
NNLS_ROUNDS = 30


def supports(law: Law) -> bool:
    """Whether ``law`` has (or nests) the additive law's mixture term."""
    return law.name in ("additive", "joint", "full") and law.k >= 1


def two_stage_start(law: Law, N: np.ndarray, D: np.ndarray, H: np.ndarray, y: np.ndarray,
                    weights: Optional[np.ndarray], lo: np.ndarray, hi: np.ndarray) -> Optional[np.ndarray]:
    """The two-stage start of ``law`` (module docstring) in parameter space within
    ``[lo, hi]``, or None when the data cannot give one (fewer than two distinct mixtures,
    or no mixture with records at two model sizes or token counts when the law has those
    terms). Deterministic in its inputs."""
    if not supports(law):
        return None
    additive = law if law.name == "additive" else Law("additive", law.k, n_term=law.n_term, d_term=law.d_term,
                                                      n_scale=law.n_scale, d_scale=law.d_scale)
    w = np.ones(y.shape) if weights is None else np.asarray(weights, dtype=float)
    keep = w > 0
    if not np.all(keep):
        N, D = (None if v is None else v[keep] for v in (N, D))  # None: a term the law does not have
        H, y, w = H[keep], y[keep], w[keep]
    Hu, mix = _distinct_rows(H)
    if Hu.shape[0] < 2:
        return None
    lo_a, hi_a = _additive_bounds(additive, law, lo, hi)
    offsets = _offsets(additive, N, D, mix, y, w, Hu.shape[0], lo_a, hi_a)
    if offsets is None:
        return None
    o, wm, globals_ = offsets
    term = _mixture_term(Hu, o, wm, additive, lo_a, hi_a)
    if term is None:
        return None
    E, C, gamma = term
    x = np.empty(additive.n_params)
    x[additive.index("E")] = E
    for name, value in globals_.items():
        x[additive.index(name)] = value
    k = additive.k
    x[[additive.index(f"C_{i}") for i in range(1, k + 1)]] = C
    x[[additive.index(f"gamma_{i}") for i in range(1, k + 1)]] = gamma
    x = np.clip(x, lo_a, hi_a)
    if law.name != "additive":
        x = np.clip(embed(x, additive, law), lo, hi)
    return x if np.all(np.isfinite(x)) else None


def _additive_bounds(additive: Law, law: Law, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of the additive parameters: the fit's own for a parameter the law shares by
    name, the additive law's defaults for the others (A and B of a joint law)."""
    alo, ahi = additive.lower.copy(), additive.upper.copy()
    names = set(law.param_names)
    for i, name in enumerate(additive.param_names):
        if name in names:
            alo[i], ahi[i] = lo[law.index(name)], hi[law.index(name)]
    return alo, ahi


def _offsets(L: Law, N, D, mix, y, w, M, lo, hi):
    """Stage 1: per-mixture offsets o (M,), the mixtures' total weights and the fitted global
    parameters {A, alpha, B, beta} (those the law has); None when not identifiable."""
    wm = np.bincount(mix, w, M)

    def centred(v):
        return v - (np.bincount(mix, w * v, M) / wm)[mix]

    yc = centred(y)
    columns = []  # (coefficient name, exponent name, log of the scaled variable)
    if L.n_term:
        columns.append(("A", "alpha", np.log(N / L.n_scale)))
    if L.d_term:
        columns.append(("B", "beta", np.log(D / L.d_scale)))
    if not columns:
        return np.bincount(mix, w * y, M) / wm, wm, {}
    ranges = [(max(lo[L.index(e)], EXPONENT_GRID[0]), min(hi[L.index(e)], EXPONENT_GRID[-1])) for _, e, _ in columns]
    if any(a > b for a, b in ranges):
        ranges = [(lo[L.index(e)], hi[L.index(e)]) for _, e, _ in columns]

    def solve(expo):
        X = np.column_stack([centred(np.exp(-e * lv)) for e, (_, _, lv) in zip(expo, columns)])
        sse, coef = _nonneg_small_lstsq(X, yc, w)
        return sse, coef

    grids = [np.unique(np.clip(EXPONENT_GRID, a, b)) for a, b in ranges]
    best = None
    for expo in np.stack(np.meshgrid(*grids, indexing="ij"), -1).reshape(-1, len(columns)):
        s, c = solve(expo)
        if best is None or s < best[0]:
            best = (s, c, expo.copy())
    if best is None or not np.isfinite(best[0]) or best[1] is None or not np.all(best[1] > 0):
        return None
    # Pattern search on the exponents, step halved when no move helps.
    s0, coef, expo = best
    step = (EXPONENT_GRID[1] - EXPONENT_GRID[0]) / 2
    while step > EXPONENT_TOL:
        moved = False
        for j in range(len(columns)):
            for sgn in (1.0, -1.0):
                trial = expo.copy()
                trial[j] = min(max(trial[j] + sgn * step, ranges[j][0]), ranges[j][1])
                s, c = solve(trial)
                if s < s0 and c is not None and np.all(c > 0):
                    s0, coef, expo, moved = s, c, trial, True
        if not moved:
            step /= 2
    fitted = y.copy()
    out = {}
    for c, e, (cname, ename, lv) in zip(coef, expo, columns):
        fitted -= c * np.exp(-e * lv)
        out[cname], out[ename] = float(c), float(e)
    return np.bincount(mix, w * fitted, M) / wm, wm, out


def _nonneg_small_lstsq(X: np.ndarray, y: np.ndarray, w: np.ndarray):
    """min sum w (y - X c)^2 over c >= 0 for one or two columns, by trying every support.
    Returns (sum of squares, c) or (inf, None)."""
    Xw = X * w[:, None]
    G = X.T @ Xw
    r = Xw.T @ y
    n = X.shape[1]
    best = (np.inf, None)
    for support in ([list(range(n))] + ([[0], [1]] if n == 2 else [])):
        c = np.zeros(n)
        Gs = G[np.ix_(support, support)]
        if np.linalg.cond(Gs) > 1e12:
            continue
        c[support] = np.linalg.solve(Gs, r[support])
        if np.any(c[support] <= 0):
            continue
        res = y - X @ c
        s = float(np.sum(w * res * res))
        if s < best[0]:
            best = (s, c)
    return best


def _mixture_term(Hu: np.ndarray, o: np.ndarray, wm: np.ndarray, L: Law, lo: np.ndarray, hi: np.ndarray):
    """Stage 2: (E, C, gamma) with o ~ E + 1 / sum_i C_i h_i^gamma (module docstring), or None."""
    k = L.k
    e_lo = max(float(lo[L.index("E")]), 0.0)
    o_min = float(o.min())
    if not o_min > e_lo:
        return None
    g_lo = max(lo[L.index(f"gamma_{i}")] for i in range(1, k + 1))
    g_hi = min(hi[L.index(f"gamma_{i}")] for i in range(1, k + 1))
    if g_lo > g_hi:
        return None
    c_lo = np.array([lo[L.index(f"C_{i}")] for i in range(1, k + 1)])
    c_hi = np.array([hi[L.index(f"C_{i}")] for i in range(1, k + 1)])
    e_hi = min(float(hi[L.index("E")]), o_min)
    best = None
    for gamma in np.unique(np.clip(GAMMA_GRID, g_lo, g_hi)):
        with np.errstate(divide="ignore"):
            Hg = np.where(Hu > 0, Hu ** gamma, 0.0) if gamma > 0 else np.ones_like(Hu)
        for frac in E_FRACTIONS:
            E = e_lo + frac * (e_hi - e_lo)
            gap = o - E
            if not np.all(gap > 0):
                continue
            t = 1.0 / gap
            omega = wm * gap ** 4
            C = _nnls(Hg, t, omega)
            if C is None:
                continue
            S = Hg @ C
            if not np.all(S > 0):
                continue
            err = float(np.sum(wm * (E + 1.0 / S - o) ** 2))
            if best is None or err < best[0]:
                best = (err, E, C, float(gamma))
    if best is None:
        return None
    _, E, C, gamma = best
    pos = C[C > 0]
    C = np.where(C > 0, C, ZERO_COEFFICIENT_FRACTION * float(np.median(pos)))
    return E, np.clip(C, np.maximum(c_lo, 1e-300), c_hi), gamma


def _nnls(X: np.ndarray, t: np.ndarray, omega: np.ndarray) -> Optional[np.ndarray]:
    """min sum omega (t - X c)^2 over c >= 0 by an active set: solve on the free entries,
    drop the negative ones, and once none is negative add back the fixed entry whose
    gradient most wants it to grow (the KKT check), until none does (exact) or after
    NNLS_ROUNDS solves (then the last feasible point). A tiny ridge keeps the solves defined
    when there are fewer mixtures than domains."""
    Xw = X * omega[:, None]
    G = X.T @ Xw
    r = Xw.T @ t
    n = G.shape[0]
    scale = float(np.trace(G)) / n
    if not (scale > 0 and np.isfinite(scale)):
        return None
    G = G + 1e-10 * scale * np.eye(n)
    free = np.ones(n, bool)
    c = np.zeros(n)
    for _ in range(NNLS_ROUNDS):
        idx = np.flatnonzero(free)
        try:
            cf = np.linalg.solve(G[np.ix_(idx, idx)], r[idx]) if idx.size else np.zeros(0)
        except np.linalg.LinAlgError:
            return None
        neg = cf <= 0
        if np.any(neg):
            free[idx[neg]] = False
            continue
        c[:] = 0.0
        c[idx] = cf
        grow = np.where(free, -np.inf, r - G @ c)
        j = int(np.argmax(grow))
        if not grow[j] > 1e-12 * scale * max(float(np.max(np.abs(c))), 1e-300):
            break
        free[j] = True
    return c if np.any(c > 0) else None
