"""Independent checks of what the mixture solvers and fit report (issue 21, no silent wrong
answers): each test recomputes a reported quantity from NumPy alone, so that a solver that
reports a wrong number fails here even when its answer looks plausible.

- The Frank-Wolfe certificate ``gap = max_{s in C} grad F(h) . (h - s)`` of both mixture
  solvers (one problem at a time, and four per vector) equals the one recomputed from the
  returned h with a NumPy gradient of the laws and a NumPy linear minimiser over the
  capped simplex C.
- The h-gradient at a zero weight (law.grad_h and the mixture objective's gradient) equals
  the one-sided difference quotient into the simplex: 0 for gamma_i > 1, -C_i / S^2 for
  gamma_i = 1, -inf for gamma_i < 1 (the quotient grows without bound).
- More starts never end worse: mixture starts and fit starts are nested (start s depends
  only on the seed, the problem and s), so with more starts the result is never worse, and
  the result is the best of its starts.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy_oracle import oracle_predict

import mixlaw
from mixlaw import _core

from test_mixture import synthetic_fit


# -- NumPy oracle of the h-gradient ----------------------------------------------------
def oracle_grad_h(law: mixlaw.Law, params, N, D, H) -> np.ndarray:
    """dL/dh_i (records x k) of the additive, joint and simple laws, from their formulas
    (SPEC section 3; tests/numpy_oracle.py has the values), the weights taken as
    independent variables; at h_i = 0 the one-sided derivative (h^g has slope 0 for g > 1,
    1 for g = 1 and +inf for 0 < g < 1)."""
    p = law.as_dict(params)
    k = law.k
    H = np.asarray(H, dtype=float)
    Np = np.asarray(N, dtype=float) / law.n_scale
    Dp = np.asarray(D, dtype=float) / law.d_scale

    def vec(stem: str) -> np.ndarray:
        return np.array([p[f"{stem}_{i}"] for i in range(1, k + 1)])

    if law.name == "simple":
        C = vec("C")
        u = H @ C
        return (-p["gamma"] * u ** (-p["gamma"] - 1))[:, None] * C[None, :]
    C, g = vec("C"), vec("gamma")
    pos = H > 0
    Hs = np.where(pos, H, 1.0)
    S = np.where(pos, Hs ** g, 0.0) @ C
    with np.errstate(divide="ignore"):
        slope0 = np.where(g == 1, 1.0, np.where((g > 0) & (g < 1), np.inf, 0.0))
    slope = np.where(pos, g * Hs ** (g - 1), slope0)  # d(h^g)/dh
    out = np.where(C == 0, 0.0, -C * slope) / S[:, None] ** 2
    if law.name == "joint":
        if law.n_term:
            CA = vec("CA")
            out = out + (p["gA"] * (H @ CA) ** (p["gA"] - 1) / Np ** p["alpha"])[:, None] * CA
        if law.d_term:
            CB = vec("CB")
            out = out + (p["gB"] * (H @ CB) ** (p["gB"] - 1) / Dp ** p["beta"])[:, None] * CB
    else:
        assert law.name == "additive", law.name
    return out


def mixture_value_grad(fits, N: float, D: float, w: np.ndarray, h: np.ndarray) -> tuple[float, np.ndarray]:
    """F(h) = sum_t w_t L_t(N, D, h) and its gradient, from the NumPy oracles."""
    F, G = 0.0, np.zeros(h.size)
    for wt, f in zip(w, fits):
        if wt == 0:
            continue
        F += wt * float(oracle_predict(f.law, f.x, [N], [D], h[None, :])[0])
        G += wt * oracle_grad_h(f.law, f.x, [N], [D], h[None, :])[0]
    return F, G


def linear_minimum(g: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """min g.s over {sum s = 1, lo <= s <= hi}: s = lo, then the rest of the mass to the
    smallest g_i first, each up to its hi_i (greedy is exact for one linear constraint)."""
    s = lo.astype(float).copy()
    rest = 1.0 - s.sum()
    for i in np.argsort(g, kind="stable"):
        add = min(hi[i] - s[i], rest)
        s[i] += add
        rest -= add
        if rest <= 0:
            break
    return float(g @ s)


def test_oracle_grad_h_matches_central_differences_of_the_oracle():
    # The NumPy gradient above is itself checked against oracle_predict.
    rng = np.random.default_rng(0)
    for name in ("additive", "joint", "simple"):
        law = mixlaw.law(name, 4)
        p = rng.uniform(law.init_lower, law.init_upper)
        N, D = 10 ** rng.uniform(7, 11, 6), 10 ** rng.uniform(9, 13, 6)
        H = rng.dirichlet(np.ones(4), 6)
        G = oracle_grad_h(law, p, N, D, H)
        for i in range(4):
            e = np.zeros(4)
            e[i] = 1e-6
            num = (oracle_predict(law, p, N, D, H + e) - oracle_predict(law, p, N, D, H - e)) / 2e-6
            np.testing.assert_allclose(G[:, i], num, rtol=1e-6, atol=1e-7 * np.abs(G).max(), err_msg=name)


# -- (a) the certificate ---------------------------------------------------------------
def random_fits(rng: np.random.Generator, k: int) -> list:
    """Two or three fast-path laws (joint, additive, simple) with parameters drawn in their
    start ranges: the joint law's mixture objective is not convex."""
    fits = []
    for t, name in enumerate(rng.choice(["joint", "additive", "simple", "joint"], size=int(rng.integers(2, 4)))):
        law = mixlaw.law(str(name), k)
        fits.append(synthetic_fit(law, rng.uniform(law.init_lower, law.init_upper), f"t{t}"))
    return fits


def random_batch(rng: np.random.Generator, k_low: int, P: int, capped: int):
    """Fits on k in [k_low, 7) domains and P budgets with importance weights; the first
    ``capped`` problems on capped simplices (solved one problem at a time), the others on
    the plain simplex."""
    k = int(rng.integers(k_low, 7))
    fits = random_fits(rng, k)
    N, D = 10 ** rng.uniform(7, 11, P), 10 ** rng.uniform(9, 13, P)
    W = rng.uniform(0, 2, (P, len(fits)))
    LO, HI = np.zeros((P, k)), np.ones((P, k))
    LO[:capped] = rng.uniform(0, 0.5 / k, (capped, k))
    HI[:capped] = np.minimum(1.0, LO[:capped] + rng.uniform(1.5 / k, 1.0, (capped, k)))
    return fits, N, D, W, LO, HI


def certificate_case(seed: int, bounded: bool):
    # bounded: capped simplices, every problem goes to the one-problem solver
    return random_batch(np.random.default_rng(seed), 2, 24, 24 if bounded else 0)


def check_certificates(fits, N, D, W, LO, HI, r) -> int:
    """Asserts the reported fun and gap of every problem against NumPy; returns how many
    gaps were large enough (1e-10 x the gradient scale, 1,000 x the rounding allowance) to tell a factor of 2."""
    told = 0
    for p in range(N.size):
        h = r["h"][p]
        assert np.all(h >= LO[p]) and np.all(h <= HI[p]) and abs(h.sum() - 1) <= 1e-12
        F, G = mixture_value_grad(fits, N[p], D[p], W[p], h)
        gap = float(G @ h) - linear_minimum(G, LO[p], HI[p])
        scale = float(np.abs(G).max())
        assert r["fun"][p] == pytest.approx(F, rel=1e-12), p
        # Rounding: the core and NumPy gradients differ by ~1e-15 relative; the gap is a
        # difference of sums of k such terms.
        assert abs(r["gap"][p] - gap) <= 1e-6 * abs(gap) + 1e-13 * scale, (p, r["gap"][p], gap, r["status"][p])
        told += gap > 1e-10 * scale
    return told


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("lanes", [True, False], ids=["four-per-vector", "one-at-a-time"])
@pytest.mark.parametrize("stop", ["max_iter", "gap_tol"])
def test_reported_gap_equals_the_numpy_certificate(seed, lanes, stop):
    # stop="max_iter": a few iterations, uncertified (status 0, the gap of the best iterate);
    # stop="gap_tol": certified against a loose tolerance (status 1, the gap that stopped the
    # solver). Both leave gaps far above rounding, so a certificate off by any factor fails.
    fits, N, D, W, LO, HI = certificate_case(seed, bounded=False)
    core = [(f.law._core, np.ascontiguousarray(f.x)) for f in fits]
    kw = dict(max_iter=6, gap_tol=0.0) if stop == "max_iter" else dict(gap_tol=1e-4)
    r = _core.optimize_mixtures(core, N, D, W, LO, HI, n_starts=2, seed=seed, lanes=lanes, **kw)
    want = 0 if stop == "max_iter" else 1
    assert np.mean(r["status"] == want) >= 0.5, r["status"]
    assert check_certificates(fits, N, D, W, LO, HI, r) >= N.size // 2


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("method", ["mirror", "projected"])
def test_reported_gap_equals_the_numpy_certificate_on_capped_simplices(seed, method):
    fits, N, D, W, LO, HI = certificate_case(100 + seed, bounded=True)
    core = [(f.law._core, np.ascontiguousarray(f.x)) for f in fits]
    for kw in (dict(max_iter=6, gap_tol=0.0), dict(gap_tol=1e-4)):
        r = _core.optimize_mixtures(core, N, D, W, LO, HI, method=method, n_starts=2, seed=seed, **kw)
        # (at a vertex of a capped simplex the gap can be exactly 0: fewer gaps to tell)
        assert check_certificates(fits, N, D, W, LO, HI, r) >= 4


def test_public_result_carries_the_numpy_certificate():
    fits, N, D, W, LO, HI = certificate_case(7, bounded=False)
    grid = mixlaw.optimize_mixture(fits, N=N, D=D, weights=W, max_iter=8, gap_tol=0.0)
    r = {"h": grid.h, "fun": grid.fun, "gap": grid.gap, "status": grid.status}
    # The public objective is the weighted mean: weights are relative importances.
    assert check_certificates(fits, N, D, W / W.sum(axis=1, keepdims=True), LO, HI, r) >= N.size // 2
    one = grid[3]
    assert one.gap == grid.gap[3] and not one.success


# -- (b) the h-gradient at a zero weight ------------------------------------------------
GAMMAS = (0.3, 0.7, 1.0, 1.5, 2.0, 3.0)


def zero_weight_case(name: str):
    """A law whose domain i has gamma_i = GAMMAS[i], and mixtures with zeros."""
    k = len(GAMMAS)
    law = mixlaw.law(name, k)
    rng = np.random.default_rng(11)
    p = law.as_dict(rng.uniform(law.init_lower, law.init_upper))
    for i, g in enumerate(GAMMAS):
        p[f"gamma_{i + 1}"] = g
    H = rng.dirichlet(np.ones(k), 8)
    H[rng.random(H.shape) < 0.5] = 0.0
    H[np.arange(8), np.arange(8) % k] = 0.0
    H[H.sum(axis=1) == 0, -1] = 1.0
    H /= H.sum(axis=1, keepdims=True)
    N, D = 10 ** rng.uniform(7, 11, 8), 10 ** rng.uniform(9, 13, 8)
    return law, law.params(p), N, D, H


def one_sided_quotient(f, H: np.ndarray, j: int, i: int, t: float) -> float:
    """(f(h + t e_i) - f(h)) / t for row j (a step into the simplex's cone at h_i = 0)."""
    Ht = H[j:j + 1].copy()
    Ht[0, i] += t
    return (f(Ht, j) - f(H[j:j + 1], j)) / t


def check_zero_weight_gradient(grad: np.ndarray, f, H: np.ndarray, gammas=GAMMAS) -> int:
    """grad (rows x k) at the zeros of H against one-sided quotients of f; returns the
    number of zeros checked."""
    checked = 0
    for j, i in zip(*np.nonzero(H == 0)):
        g = gammas[i]
        if g < 1:
            # The quotient ~ -t^(g-1) has no finite limit: each step 1,000 x shorter lowers
            # it by more than the one before (a finite slope would make the changes shrink).
            q = [one_sided_quotient(f, H, j, i, t) for t in (1e-4, 1e-7, 1e-10)]
            assert grad[j, i] == -np.inf, (j, i, g, grad[j, i])
            assert q[2] < q[1] < q[0] and q[1] - q[2] > q[0] - q[1] > 0, (j, i, g, q)
        else:
            # g = 1: the quotient is exact up to O(t); g > 1: it approaches the slope like
            # t^(g-1) (1e-4 at g = 1.5 and t = 1e-8). Rounding: ~1e-16 L / t.
            t = 1e-6 if g == 1 else 1e-8
            q = one_sided_quotient(f, H, j, i, t)
            scale = max(abs(one_sided_quotient(f, H, j, i, 1e-2)), abs(grad[j, i]), 1e-12)
            assert abs(grad[j, i] - q) <= 1e-2 * scale, (j, i, g, grad[j, i], q, scale)
        checked += 1
    return checked


@pytest.mark.parametrize("name", ["additive", "joint"])
def test_grad_h_at_zero_weights_is_the_one_sided_derivative(name):
    law, p, N, D, H = zero_weight_case(name)
    G = law.grad_h(p, N, D, H)
    np.testing.assert_allclose(G[H > 0], oracle_grad_h(law, p, N, D, H)[H > 0], rtol=1e-12)

    def f(Hrow, j):
        return float(oracle_predict(law, p, N[j:j + 1], D[j:j + 1], Hrow)[0])

    assert check_zero_weight_gradient(G, f, H) >= 20


@pytest.mark.parametrize("generic", [False, True], ids=["fast", "generic"])
def test_mixture_gradient_at_zero_weights_is_the_one_sided_derivative(generic):
    # The solver's own evaluator (its fast path, and the generic formulas).
    lawA, pA, N, D, H = zero_weight_case("additive")
    lawJ, pJ, _, _, _ = zero_weight_case("joint")
    fits = [(lawA._core, pA), (lawJ._core, pJ)]
    w = np.array([0.7, 1.3])
    rows = [_core.mixture_objective(fits, N[j], D[j], w, H[j], generic=generic) for j in range(H.shape[0])]
    G = np.array([r[1] for r in rows])

    def f(Hrow, j):
        return float(w[0] * oracle_predict(lawA, pA, N[j:j + 1], D[j:j + 1], Hrow)[0]
                     + w[1] * oracle_predict(lawJ, pJ, N[j:j + 1], D[j:j + 1], Hrow)[0])

    assert check_zero_weight_gradient(G, f, H) >= 20


# -- (c) more starts never end worse ----------------------------------------------------
def nested_start_case(seed: int):
    fits, N, D, W, LO, HI = random_batch(np.random.default_rng(seed), 3, 30, 8)  # some capped simplices
    return fits, [(f.law._core, np.ascontiguousarray(f.x)) for f in fits], N, D, W, LO, HI


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("lanes", [True, False], ids=["four-per-vector", "one-at-a-time"])
def test_more_mixture_starts_never_end_worse_and_the_best_start_is_returned(seed, lanes):
    # Start s of problem p is drawn from (seed, p, s) alone and every unit's result is the
    # same bits whatever else is in the batch, so the starts of n_starts=S are the first S
    # of n_starts=S+1: the result can only get better, it changes exactly when start S is
    # strictly better (ties go to the lower start), and then to start S. A few iterations
    # (max_iter=12) keep the starts' objectives apart.
    _, core, N, D, W, LO, HI = nested_start_case(seed)
    prev = None
    changed = 0
    for S in range(1, 8):
        r = _core.optimize_mixtures(core, N, D, W, LO, HI, n_starts=S, seed=seed, max_iter=12, lanes=lanes)
        assert np.all(r["best_start"] < S)
        if prev is not None:
            assert np.all(r["fun"] <= prev["fun"]), np.flatnonzero(r["fun"] > prev["fun"])
            better = r["fun"] < prev["fun"]
            assert np.array_equal(r["best_start"], np.where(better, S - 1, prev["best_start"]))
            same = ~better
            assert np.array_equal(r["h"][same], prev["h"][same]) and np.array_equal(r["gap"][same], prev["gap"][same])
            changed += int(better.sum())
        prev = r
    assert changed >= 10  # the starts do differ


def test_more_starts_through_optimize_mixture():
    fits, _, N, D, W, _, _ = nested_start_case(9)
    funs = [mixlaw.optimize_mixture(fits, N=N, D=D, weights=W, n_starts=S, seed=3, max_iter=12).fun
            for S in (1, 2, 4, 8)]
    for a, b in zip(funs, funs[1:]):
        assert np.all(b <= a)
    assert np.any(funs[-1] < funs[0])


@pytest.fixture(scope="module")
def fit_runs():
    from test_concurrency import small_runs  # noqa: PLC0415

    return small_runs(1)


@pytest.mark.parametrize("law", ["additive", "simple"])
def test_more_fit_starts_never_end_worse_and_fun_is_the_best_start(fit_runs, law):
    # Random starts come from rng([seed-and-target, 1]).random((n_starts, P)): the first m
    # rows do not depend on n_starts, and each start is solved on its own (no hops), so the
    # starts of n_starts=m are the first m of n_starts=m' with the same results. Re-seating
    # (reseat=True, the default) looks at all starts together (it runs only when one start
    # alone reached the best), so the nesting is checked without it; the best start is
    # returned either way.
    prev = None
    for m in (1, 2, 3, 5, 8, 13):
        for reseat in (False, True):
            fits = mixlaw.fit(fit_runs, law, n_starts=m, seed=4, threads=2, reseat=reseat)
            for t, f in fits.items():
                sf = np.where(np.isfinite(f.starts_fun), f.starts_fun, np.inf)
                assert f.fun == sf.min() == f.starts_fun[int(np.argmin(sf))], (t, m, reseat)  # the best start
                if not reseat and prev is not None:
                    p = prev[t]
                    assert np.array_equal(f.starts_fun[:p.starts_fun.size], p.starts_fun), t  # nested
                    assert f.fun <= p.fun, (t, m)
            if not reseat:
                nested = fits
        prev = nested


def test_weights_are_relative_importances():
    # Scaling the weights changes nothing (fun is the weighted mean; by a power of two,
    # whose normalisation is exact, bit for bit), and equal weights are the default.
    fits, N, D, W, LO, HI = certificate_case(8, bounded=False)
    a = mixlaw.optimize_mixture(fits, N=N, D=D, weights=W, max_iter=30)
    b = mixlaw.optimize_mixture(fits, N=N, D=D, weights=8 * W, max_iter=30)
    np.testing.assert_array_equal(a.h, b.h)
    np.testing.assert_array_equal(a.fun, b.fun)
    ones = mixlaw.optimize_mixture(fits, N=N, D=D, weights={f.target: 1 for f in fits}, max_iter=30)
    plain = mixlaw.optimize_mixture(fits, N=N, D=D, max_iter=30)
    np.testing.assert_array_equal(ones.h, plain.h)
    np.testing.assert_array_equal(ones.fun, plain.fun)
    mean = [np.mean([f.predict(N=N[p], D=D[p], H=plain.h[p]) for f in fits]) for p in range(N.size)]
    np.testing.assert_allclose(plain.fun, mean, rtol=1e-12)
