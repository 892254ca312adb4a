"""The two-stage start (issue 20, defaults at many domains): per-mixture offsets by least
squares, then the mixture term by non-negative least squares; checked against planted
parameters and a NumPy objective, and the start-count policy of n_starts="auto"."""
from __future__ import annotations

import itertools
import sys
import warnings

import numpy as np
import pytest

import mixlaw
from mixlaw import _two_stage
from mixlaw.data import _distinct_rows
from test_convergence import additive_terms, draw_additive_runs, synthetic_additive


def prepare(runs, law, **kw):
    # the starts fit() would use for target "loss" (fit.py, _prepare_job)
    lo, hi = kw.pop("lo", law.lower), kw.pop("hi", law.upper)
    return sys.modules["mixlaw.fit"]._prepare_job(runs, law, "loss", seed=0, lo=lo, hi=hi, touched=set(),
                                                  residual="raw", **kw)


def planted(k: int, n_mix: int, seed: int, noise: float):
    rng = np.random.default_rng(seed)
    truth = np.concatenate([[1.8, 400.0, 400.0, 0.35, 0.3], np.exp(rng.uniform(np.log(0.5), np.log(5), k)),
                            rng.uniform(0.2, 0.8, k)])
    return mixlaw.law("additive", k), truth, draw_additive_runs(rng, truth, k, n_mix, noise=noise)


def mean_huber(x, k, runs, delta=1e-3):
    N, D, H, y = runs.target("loss")
    r = np.abs(additive_terms(x, k, N, D, H)[0] - y)
    return float(np.mean(np.where(r <= delta, 0.5 * r * r, delta * (r - 0.5 * delta))))


def test_offsets_recover_the_planted_size_and_token_terms():
    # Noise-free runs: stage 1 must recover A, alpha, B, beta and every mixture's offset
    # E + 1/S(h) (the planted values; the exponents to the pattern search's 1e-8).
    k = 8
    law, truth, runs = planted(k, 40, seed=5, noise=0.0)
    N, D, H, y = runs.target("loss")
    Hu, mix = _distinct_rows(H)
    assert Hu.shape[0] == 40 and np.array_equal(Hu[mix], H)
    o, wm, g = _two_stage._offsets(law, N, D, mix, y, np.ones_like(y), Hu.shape[0], law.lower, law.upper)
    np.testing.assert_allclose([g["A"], g["B"]], truth[1:3], rtol=1e-6)
    np.testing.assert_allclose([g["alpha"], g["beta"]], truth[3:5], atol=1e-7)
    S = np.sum(truth[5:5 + k] * np.where(Hu > 0, Hu ** truth[5 + k:], 0.0), axis=1)
    np.testing.assert_allclose(o, truth[0] + 1 / S, rtol=1e-5)
    np.testing.assert_array_equal(wm, np.full(40, 20.0))


def test_mixture_term_recovers_a_common_exponent_exactly():
    # Offsets of a planted mixture term whose exponents all equal a grid value and whose E
    # lies on the E grid: the non-negative solve must return the planted C.
    rng = np.random.default_rng(3)
    k, M = 6, 50
    law = mixlaw.law("additive", k)
    H = rng.dirichlet(np.ones(k), M)
    C = np.exp(rng.uniform(np.log(0.5), np.log(5), k))
    gamma = _two_stage.GAMMA_GRID[2]
    frac = _two_stage.E_FRACTIONS[4]
    inv_S = 1 / (H ** gamma @ C)
    # E = frac * min(o) with o = E + 1/S  =>  E = frac * min(1/S) / (1 - frac)
    E = frac * inv_S.min() / (1 - frac)
    E_fit, C_fit, g_fit = _two_stage._mixture_term(H, E + inv_S, np.ones(M), law, law.lower, law.upper)
    assert g_fit == gamma
    np.testing.assert_allclose(E_fit, E, rtol=1e-12)
    np.testing.assert_allclose(C_fit, C, rtol=1e-7)


def brute_force_nnls(X, t, omega):
    """Exact non-negative least squares by trying every support (an independent oracle)."""
    n = X.shape[1]
    best = (np.inf, None)
    for size in range(n + 1):
        for support in itertools.combinations(range(n), size):
            c = np.zeros(n)
            if support:
                s = list(support)
                Xs = X[:, s] * np.sqrt(omega)[:, None]
                c[s] = np.linalg.lstsq(Xs, t * np.sqrt(omega), rcond=None)[0]
                if np.any(c[s] < 0):
                    continue
            val = float(np.sum(omega * (t - X @ c) ** 2))
            if val < best[0]:
                best = (val, c)
    return best


def test_nonnegative_solve_against_brute_force():
    # The active-set solve against the exact optimum over every support: the same
    # coefficients (to the solve's 1e-10 relative ridge) and the same objective, on 300
    # random problems (a few of them need a dropped coefficient added back).
    for seed in range(300):
        rng = np.random.default_rng(seed)
        X = rng.random((30, 5)) ** rng.uniform(0.2, 2.0, 5)
        c_true = np.where(rng.random(5) < 0.3, 0.0, rng.uniform(0.1, 2.0, 5))
        t = X @ c_true + 0.05 * rng.standard_normal(30)
        omega = rng.uniform(0.5, 2.0, 30)
        c = _two_stage._nnls(X, t, omega)
        best, c_best = brute_force_nnls(X, t, omega)
        assert c is not None and np.all(c >= 0), seed
        np.testing.assert_allclose(c, c_best, rtol=0, atol=1e-8 * np.max(c_best), err_msg=str(seed))
        np.testing.assert_allclose(float(np.sum(omega * (t - X @ c) ** 2)), best, rtol=1e-8, err_msg=str(seed))


@pytest.mark.parametrize("k", [16, 48])
def test_default_fit_reaches_the_planted_objective_from_the_two_stage_start(k):
    # At k = 48 (101 parameters) n_starts="auto" runs the two-stage start alone; at k = 16 it
    # is start 0 of 65. Either way the fit must reach the objective of the planted
    # parameters (NumPy), stationary.
    law, truth, runs = synthetic_additive(k, 300, seed=1)
    f = mixlaw.fit(runs, "additive", threads=2)["loss"]
    assert f.options["two_stage_start"] and f.options["init"] == "auto" and f.options["n_starts"] == "auto"
    assert f.starts_fun.size == (65 if k == 16 else 1)
    assert f.success
    assert f.fun <= mean_huber(truth, k, runs) * (1 + 1e-6)
    np.testing.assert_allclose(f.fun, mean_huber(np.asarray(f.x), k, runs), rtol=1e-12)
    # the two-stage start alone (start 0) reaches the planted objective too
    assert f.starts_fun[0] <= mean_huber(truth, k, runs) * (1 + 1e-6)


def test_random_starts_are_unchanged_and_come_after_the_two_stage_start():
    law, _, runs = synthetic_additive(6, 30)
    auto = prepare(runs, law, n_starts=5, init="auto")
    rand = prepare(runs, law, n_starts=5, init="random")
    assert auto.two_stage and not rand.two_stage
    assert auto.starts.shape == (6, law.n_params) and rand.starts.shape == (5, law.n_params)
    np.testing.assert_array_equal(auto.starts[1:], rand.starts)
    np.testing.assert_array_equal(auto.starts[0], _two_stage.two_stage_start(law, *runs.target("loss"), None,
                                                                              law.lower, law.upper))


def test_auto_start_count_depends_on_the_parameter_count():
    for k, n_random in ((47, 64), (48, 0)):  # 99 and 101 parameters
        law, _, runs = synthetic_additive(k, 60)
        job = prepare(runs, law, n_starts="auto", init="auto")
        assert job.two_stage and job.starts.shape[0] == 1 + n_random
        # without a structured start, "auto" keeps its 64 random starts
        assert prepare(runs, law, n_starts="auto", init="random").starts.shape[0] == 64
    # the nested law gets no two-stage start (the caller adds its nested start) and, beyond
    # 100 parameters, no random ones
    law = mixlaw.law("joint", 48)
    _, _, runs = synthetic_additive(48, 60)
    job = prepare(runs, law, n_starts="auto", init="auto", nested=True)
    assert not job.two_stage and job.starts.shape[0] == 0
    job = prepare(runs, law, n_starts="auto", init="auto", nested=False)
    assert job.two_stage and job.starts.shape[0] == 1


def test_joint_without_nesting_starts_from_the_embedded_two_stage_start():
    law, truth, runs = synthetic_additive(6, 60)
    joint = mixlaw.law("joint", 6)
    N, D, H, y = runs.target("loss")
    x_add = _two_stage.two_stage_start(law, N, D, H, y, None, law.lower, law.upper)
    x_joint = _two_stage.two_stage_start(joint, N, D, H, y, None, joint.lower, joint.upper)
    # same predictions on the simplex (the nesting embedding)
    np.testing.assert_allclose(joint.predict(x_joint, N, D, H), law.predict(x_add, N, D, H), rtol=1e-12)
    f = mixlaw.fit(runs, "joint", nest=False, n_starts=2)["loss"]
    assert f.options["two_stage_start"] and f.starts_fun.size == 3
    f = mixlaw.fit(runs, "joint", n_starts=2)["loss"]
    assert not f.options["two_stage_start"] and f.options["nested_start"] and f.starts_fun.size == 3


def test_start_respects_the_bounds():
    law, _, runs = synthetic_additive(8, 60)
    lo, hi = law.lower.copy(), law.upper.copy()
    for name, (a, b) in {"alpha": (0.5, 0.6), "E": (0.0, 1.0)}.items():
        lo[law.index(name)], hi[law.index(name)] = a, b
    g = [law.index(f"gamma_{i}") for i in range(1, 9)]
    lo[g], hi[g] = 0.6, 0.9
    x = _two_stage.two_stage_start(law, *runs.target("loss"), None, lo, hi)
    assert x is not None and np.all(x >= lo) and np.all(x <= hi)
    assert 0.6 <= x[g[0]] <= 0.9 and np.all(x[g] == x[g[0]])


def test_no_start_where_the_data_cannot_give_one():
    rng = np.random.default_rng(0)
    law = mixlaw.law("additive", 3)
    # one record per mixture: no mixture has two sizes or token counts
    H = rng.dirichlet(np.ones(3), 40)
    N, D = rng.choice([1e8, 2e8, 4e8], 40), rng.choice([1e9, 4e9], 40)
    y = 2.0 + rng.random(40)
    assert _two_stage.two_stage_start(law, N, D, H, y, None, law.lower, law.upper) is None
    runs = mixlaw.Runs(N, D, H, targets={"loss": y})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixlaw.ConvergenceWarning)
        f = mixlaw.fit(runs, law, n_starts="auto", max_iter=20)["loss"]
    assert not f.options["two_stage_start"] and f.starts_fun.size == 64
    with pytest.raises(ValueError, match=r"^n_starts: 0 random starts need a two-stage or nested start"):
        mixlaw.fit(runs, law, n_starts=0)
    # laws without the additive mixture term never get one
    assert _two_stage.two_stage_start(mixlaw.law("simple", 3), N, D, H, y, None, law.lower, law.upper) is None


def test_zero_weight_records_are_left_out():
    law, _, runs = synthetic_additive(5, 30)
    N, D, H, y = runs.target("loss")
    w = np.ones_like(y)
    w[::7] = 0.0
    bad = y.copy()
    bad[::7] = 1e3  # garbage where the weight is 0
    keep = w > 0
    a = _two_stage.two_stage_start(law, N, D, H, bad, w, law.lower, law.upper)
    b = _two_stage.two_stage_start(law, N[keep], D[keep], H[keep], y[keep], None, law.lower, law.upper)
    np.testing.assert_array_equal(a, b)


def test_options_say_which_start_was_used_and_round_trip():
    law, _, runs = synthetic_additive(5, 30)
    fits = mixlaw.fit(runs, "additive", n_starts=3)
    back = mixlaw.load_fits(fits.to_json())
    assert back["loss"].options["two_stage_start"] is True and back["loss"].options["n_starts"] == 3
    auto = mixlaw.fit(runs, "additive", n_starts="auto", max_iter=50, init="random")
    assert mixlaw.load_fits(auto.to_json())["loss"].options["n_starts"] == "auto"
    with pytest.raises(ValueError, match=r"^init: expected 'auto' or 'random', got 'smart'"):
        mixlaw.fit(runs, "additive", init="smart")
    with pytest.raises(ValueError, match=r"^n_starts: expected 'auto' or an int >= 0, got 'many'"):
        mixlaw.fit(runs, "additive", n_starts="many")
