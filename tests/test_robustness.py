"""Numerical robustness (reliability issue): N up to 1e13, D up to 1e15, losses near 0 and
near 20, k = 512, and starts that overflow: every value finite where the law is, and a
failing start is reported in its status without spoiling the others."""
from __future__ import annotations

import numpy as np
import pytest

import mixlaw
from numpy_oracle import oracle_predict

K = 512


@pytest.mark.parametrize("name", mixlaw.LAW_NAMES)
def test_k512_extreme_scales_finite_and_equal_to_the_oracle(name):
    law = mixlaw.law(name, None if name == "chinchilla" else K)
    rng = np.random.default_rng(512)
    p = law.init_lower + rng.random(law.n_params) * (law.init_upper - law.init_lower)
    n = 64
    N = np.concatenate([[1.0, 1e13, 1e13, 1.0], 10 ** rng.uniform(0, 13, n - 4)])
    D = np.concatenate([[1e15, 1.0, 1e15, 1.0], 10 ** rng.uniform(0, 15, n - 4)])
    H = rng.dirichlet(np.ones(K), n) if law.k else None
    y = law.predict(p, N, D, H)
    np.testing.assert_allclose(y, oracle_predict(law, p, N, D, H), rtol=1e-10)
    v, g = law.value_and_grad(p, np.ones(n), N, D, H)
    _, J = law.jacobian(p, N, D, H)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(g)) and np.all(np.isfinite(J))
    np.testing.assert_array_equal(v, y)
    if law.k:
        assert np.all(np.isfinite(law.grad_h(p, N, D, H)))


def planted(E, A=4.0, B=3.0, alpha=0.34, beta=0.28, sizes=(1e9, 1e13), tokens=(1e11, 1e15), seed=0):
    law = mixlaw.law("chinchilla")
    N = np.repeat(np.geomspace(*sizes, 5), 6)
    D = np.tile(np.geomspace(*tokens, 6), 5)
    y = law.predict([E, A, B, alpha, beta], N, D) * (1 + 1e-3 * np.random.default_rng(seed).normal(size=N.size))
    return mixlaw.load_runs({"model_size": N, "n_tokens": D, "l_loss": y}, weights=[])


@pytest.mark.parametrize("loss", ["huber", "mse"])
@pytest.mark.parametrize("E, A, B", [(1.7, 4.0, 3.0), (19.0, 4.0, 3.0), (1e-3, 1e-2, 1e-2), (1e-4, 5e-2, 2e-2)])
def test_huge_N_and_D_and_losses_near_0_and_20_fit_to_the_noise(E, A, B, loss):
    runs = planted(E, A, B)
    y = runs.targets["l"]
    assert y.max() < 21 and y.min() > 1e-4
    f = mixlaw.fit(runs, "chinchilla", n_starts=16, loss=loss)["l"]
    assert np.isfinite(f.fun) and np.all(np.isfinite(f.x)) and f.success
    assert f.train["mre"] < 0.2  # 0.1 % noise
    assert set(np.unique(f.starts_status)) <= {-1, 0, 1, 2, 3, 4}  # every start reports how it ended


GOOD = np.array([2.0, 100.0, 100.0, 0.3, 0.3])
OVERFLOW = np.array([1.7e308, 1.7e308, 1.7e308, 0.3, 0.3])  # the prediction overflows
HUGE = np.array([1.0, 1e300, 1e300, 0.0, 0.0])


def test_overflowing_starts_are_reported_and_never_spoil_the_others():
    runs = planted(1.7, 400.0, 300.0, sizes=(1e7, 1e13), tokens=(1e9, 1e15))
    alone = mixlaw.fit(runs, "chinchilla", starts=GOOD[None], loss="mse")["l"]
    f = mixlaw.fit(runs, "chinchilla", starts=np.array([OVERFLOW, GOOD, HUGE]), loss="mse")["l"]
    assert list(f.starts_status[[0, 2]]) == [-1, -1]  # not finite
    assert f.starts_status[1] > 0 and f.success and f.status == f.starts_status[1]
    np.testing.assert_array_equal(f.x, alone.x)  # bit-identical to the good start on its own
    assert f.fun == alone.fun and f.train["mre"] < 0.2
    # Huber: the overflowing starts end at astronomically bad values, the best is unaffected.
    h_alone = mixlaw.fit(runs, "chinchilla", starts=GOOD[None])["l"]
    h = mixlaw.fit(runs, "chinchilla", starts=np.array([OVERFLOW, GOOD, HUGE]))["l"]
    np.testing.assert_array_equal(h.x, h_alone.x)
    assert h.starts_fun[0] > 1e100 and h.starts_fun[2] > 1e100


def test_all_starts_failing_is_reported_not_raised():
    runs = planted(1.7)
    f = mixlaw.fit(runs, "chinchilla", starts=OVERFLOW[None], loss="mse")["l"]
    assert not f.success and f.status == -1 and "not finite" in f.message
    assert np.isnan(f.train["mre"]) and f.spread["n_at_best"] == 0
    assert "not finite" in repr(f) or "success=False" in repr(f)


def test_extreme_bounds_keep_every_value_finite():
    runs = planted(1.7)
    bounds = {"E": (0.0, 1e300), "A": (1e-300, 1e300), "B": (0.0, 1e300), "alpha": (0.0, 2.0)}
    f = mixlaw.fit(runs, "chinchilla", n_starts=8, bounds=bounds)["l"]
    assert f.success and np.all(np.isfinite(f.x)) and f.train["mre"] < 0.2
    assert np.all(np.isfinite(f.starts_fun[f.starts_status >= 0]))


def k512_fit(gamma_range, C_range, seed=1):
    from mixlaw.fit import Fit

    law = mixlaw.law("additive", K)
    rng = np.random.default_rng(seed)
    p = law.init_lower + rng.random(law.n_params) * (law.init_upper - law.init_lower)
    p[5:5 + K] = rng.uniform(*C_range, K)
    p[5 + K:] = rng.uniform(*gamma_range, K)
    return Fit(law=law, target="t", x=p, fun=0.0, success=True, status=1, message="", nit=0, nfev=0, njev=0,
               starts_fun=np.zeros(1), starts_status=np.ones(1, dtype=int), n_records=0, train={})


def test_optimal_mixture_with_512_domains_is_feasible_and_certified():
    r = mixlaw.optimize_mixture(k512_fit((0.3, 0.9), (1.0, 10.0)), N=1e13, D=1e15, n_starts=2)
    assert r.x.shape == (K,) and abs(r.x.sum() - 1) < 1e-12 and np.all(r.x > 0)
    assert r.success and np.isfinite(r.fun) and 0 <= r.gap < 1e-10


def test_optimal_mixture_on_an_extreme_512_domain_law_reports_what_it_reached():
    # gamma_i down to 0.05: optimal weights down to ~1e-236, where multiplicative steps
    # underflow; the result stays feasible and its status says whether it is certified.
    r = mixlaw.optimize_mixture(k512_fit((0.05, 1.5), (0.1, 10.0)), N=1e13, D=1e15, n_starts=1, max_iter=500)
    assert abs(r.x.sum() - 1) < 1e-12 and np.all(r.x >= 0) and np.isfinite(r.fun)
    assert r.status in (0, 1, 4) and r.message
    assert r.success == (r.status == 1)
    if r.success:
        assert r.gap < 1e-10
