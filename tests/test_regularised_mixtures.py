"""Mixtures regularised toward a prior (issue 24, item 4): min_h F(h) + kl KL(h || prior).

Every expected value comes from NumPy: the laws' values and h-gradients from the oracles of
tests/numpy_oracle.py and test_mixture_certificates.py, the KL term from its formula, the
certificate from a NumPy linear minimiser over the capped simplex.
"""
from __future__ import annotations

import numpy as np
import pytest
from test_mixture import synthetic_fit
from test_mixture_certificates import linear_minimum, mixture_value_grad, random_batch

import mixlaw
from mixlaw import _core


def kl_numpy(h: np.ndarray, p: np.ndarray) -> float:
    m = h > 0
    return float(np.sum(h[m] * np.log(h[m] / p[m])))


def regularised_value_grad(fits, N, D, w, h, kl, prior):
    F, G = mixture_value_grad(fits, N, D, w, h)
    return F + kl * kl_numpy(h, prior), G + kl * (np.log(h / prior) + 1.0)


def core_laws(fits):
    return [(f.law._core, np.ascontiguousarray(f.x)) for f in fits]


@pytest.mark.parametrize("generic", [False, True], ids=["fast", "generic"])
def test_objective_and_gradient_with_the_kl_term_match_numpy(generic):
    rng = np.random.default_rng(3)
    fits, N, D, W, _, _ = random_batch(rng, 3, 4, 0)
    k = fits[0].law.k
    for p in range(4):
        h, prior = rng.dirichlet(np.ones(k)), rng.dirichlet(np.ones(k))
        lam = float(rng.uniform(0.01, 2))
        f, g, per = _core.mixture_objective(core_laws(fits), N[p], D[p], W[p], h, generic=generic, kl=lam,
                                            prior=prior)
        F, G = regularised_value_grad(fits, N[p], D[p], W[p], h, lam, prior)
        assert f == pytest.approx(F, rel=1e-12)
        np.testing.assert_allclose(g, G, rtol=1e-10, atol=1e-12 * np.abs(G).max())
        # The per-target losses never include the KL term.
        f0, _, per0 = _core.mixture_objective(core_laws(fits), N[p], D[p], W[p], h, generic=generic)
        np.testing.assert_array_equal(per, per0)


def test_kl_gradient_matches_finite_differences_along_the_simplex():
    rng = np.random.default_rng(5)
    fits, N, D, W, _, _ = random_batch(rng, 4, 1, 0)
    k = fits[0].law.k
    h, prior = rng.dirichlet(np.ones(k)), rng.dirichlet(np.ones(k))
    lam = 0.3

    def f(x):
        return _core.mixture_objective(core_laws(fits), N[0], D[0], W[0], x, kl=lam, prior=prior)[0]

    g = _core.mixture_objective(core_laws(fits), N[0], D[0], W[0], h, kl=lam, prior=prior)[1]
    for i, j in ((0, 1), (2, k - 1)):
        e = np.zeros(k)
        e[i], e[j] = 1.0, -1.0  # a direction along the simplex
        t = 1e-3 * h[[i, j]].min()

        def central(s):
            return (f(h + s * e) - f(h - s * e)) / (2 * s)

        num = (4 * central(t / 2) - central(t)) / 3  # Richardson extrapolation: error O(t^4)
        assert g @ e == pytest.approx(num, rel=1e-8)


def test_kl_term_at_a_zero_weight_adds_nothing_and_has_slope_minus_infinity():
    law = mixlaw.law("additive", 3)
    fit = synthetic_fit(law, law.init_lower)
    h, prior = np.array([0.0, 0.4, 0.6]), np.array([0.2, 0.3, 0.5])
    f, g, _ = _core.mixture_objective(core_laws([fit]), 1e9, 1e10, np.ones(1), h, kl=0.5, prior=prior)
    f0, g0, _ = _core.mixture_objective(core_laws([fit]), 1e9, 1e10, np.ones(1), h)
    assert f - f0 == pytest.approx(0.5 * kl_numpy(h, prior), rel=1e-13)
    assert g[0] == -np.inf
    np.testing.assert_allclose(g[1:] - g0[1:], 0.5 * (np.log(h[1:] / prior[1:]) + 1), rtol=1e-12)


@pytest.mark.parametrize("bounded", [False, True], ids=["simplex", "capped"])
@pytest.mark.parametrize("method", ["mirror", "projected"])
def test_reported_certificate_of_regularised_problems_equals_numpy(bounded, method):
    rng = np.random.default_rng(11)
    fits, N, D, W, LO, HI = random_batch(rng, 3, 12, 12 if bounded else 0)
    P, k = W.shape[0], fits[0].law.k
    prior = rng.dirichlet(np.ones(k) * 2, P)
    lam = 10 ** rng.uniform(-3, 0, P)
    r = _core.optimize_mixtures(core_laws(fits), N, D, W, LO, HI, method=method, n_starts=2, kl=lam, prior=prior)
    certified = 0
    for p in range(P):
        h = r["h"][p]
        F, G = regularised_value_grad(fits, N[p], D[p], W[p], h, lam[p], prior[p])
        assert r["fun"][p] == pytest.approx(F, rel=1e-12)
        gap = float(G @ h) - linear_minimum(G, LO[p], HI[p])
        assert abs(r["gap"][p] - gap) <= 1e-6 * abs(gap) + 1e-13 * np.abs(G).max()
        certified += r["status"][p] == 1
    assert certified == P


def slimpajama_fits():
    runs = mixlaw.datasets.slimpajama()
    return runs, mixlaw.fit(runs, "additive", n_starts=8, threads=2, progress=False)


@pytest.fixture(scope="module")
def sp():
    return slimpajama_fits()


def test_public_result_reports_the_regularisation(sp):
    runs, fits = sp
    prior = runs.mixtures.mean(axis=0)
    r = mixlaw.optimize_mixture(fits, N=7e9, D=1.4e11, prior=runs, kl=0.01)
    u = mixlaw.optimize_mixture(fits, N=7e9, D=1.4e11)
    assert r.success and r.unregularised is not None and r.unregularised.success
    # The unregularised optimum is the plain problem's, to the last bit.
    np.testing.assert_array_equal(r.unregularised.x, u.x)
    assert r.unregularised.losses == u.losses
    # Everything reported, recomputed in NumPy.
    np.testing.assert_allclose(list(r.prior.values()), prior, rtol=1e-15)
    assert r.kl_divergence == pytest.approx(kl_numpy(r.x, prior), rel=1e-12)
    assert r.distance_prior == pytest.approx(0.5 * np.abs(r.x - prior).sum(), rel=1e-12)
    nearest = min(0.5 * np.abs(r.x - m).sum() for m in runs.mixtures)
    assert r.distance_runs == pytest.approx(nearest, rel=1e-12)
    W = np.full(len(fits), 1 / len(fits))
    F, _ = mixture_value_grad(list(fits.values()), 7e9, 1.4e11, W, r.x)
    assert r.fun == pytest.approx(F + 0.01 * kl_numpy(r.x, prior), rel=1e-12)
    assert sum(r.losses.values()) / len(r.losses) == pytest.approx(F, rel=1e-12)
    # The regulariser pulls toward the prior and costs predicted loss.
    assert r.distance_prior < 0.5 * np.abs(u.x - prior).sum()
    assert r.kl_divergence < kl_numpy(u.x, prior)
    assert sum(r.losses.values()) >= sum(u.losses.values())


def test_kl_sweep_moves_monotonically_from_the_optimum_to_the_prior(sp):
    runs, fits = sp
    lam = np.concatenate([[0.0], np.geomspace(1e-4, 1e3, 8)])
    g = mixlaw.optimize_mixture(fits, N=7e9, D=1.4e11, prior=runs, kl=lam)
    assert np.all(g.status == 1)
    u = mixlaw.optimize_mixture(fits, N=7e9, D=1.4e11)
    np.testing.assert_array_equal(g.h[0], u.x)  # kl = 0 is the plain problem
    # Along the regularisation path KL(h* || prior) cannot increase and the weighted loss
    # cannot decrease (global minima; up to the solver's certificate).
    mean_loss = g.losses.mean(axis=1)
    assert np.all(np.diff(g.kl_divergence) <= 1e-9)
    assert np.all(np.diff(mean_loss) >= -1e-9)
    # Very strong regularisation returns the prior.
    prior = runs.mixtures.mean(axis=0)
    assert np.abs(g.h[-1] - prior).max() < 1e-4
    df = g.to_pandas()
    assert {"prior", "kl", "kl_divergence", "unregularised_weight"} <= set(df.columns)


def test_runs_prior_is_matched_by_domain_name(sp):
    runs, fits = sp
    order = list(reversed(runs.domains))
    shuffled = mixlaw.Runs(runs.N, runs.D, runs.H[:, [runs.domains.index(d) for d in order]], domains=order,
                           targets=dict(runs.targets))
    a = mixlaw.optimize_mixture(fits, N=7e9, D=1.4e11, prior=runs, kl=0.05)
    b = mixlaw.optimize_mixture(fits, N=7e9, D=1.4e11, prior=shuffled, kl=0.05)
    assert a.prior == pytest.approx(b.prior, rel=1e-14)
    assert a.h == pytest.approx(b.h, rel=1e-12, abs=1e-15)
    as_dict = mixlaw.optimize_mixture(fits, N=7e9, D=1.4e11, prior=dict(a.prior), kl=0.05)
    np.testing.assert_array_equal(as_dict.x, a.x)


def test_binding_multipliers_include_the_kl_gradient(sp):
    runs, fits = sp
    r = mixlaw.optimize_mixture(fits, N=7e9, D=1.4e11, prior=runs, kl=0.02, bounds={"c4": (0.0, 0.15)})
    assert r.success
    which, mult = r.binding["c4"]
    assert which == "upper bound" and mult > 0
    # KKT in NumPy: the free weights share one value of the full gradient mu, and the
    # multiplier of c4's upper bound is mu - G_c4.
    prior = np.array(list(r.prior.values()))
    W = np.full(len(fits), 1 / len(fits))
    _, G = regularised_value_grad(list(fits.values()), 7e9, 1.4e11, W, r.x, 0.02, prior)
    c4 = list(r.h).index("c4")
    free = np.array([d != "c4" for d in r.h])
    mu = np.median(G[free])
    np.testing.assert_allclose(G[free], mu, rtol=0, atol=1e-7)
    assert mult == pytest.approx(mu - G[c4], rel=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(kl=0.1), "prior: needed when kl > 0"),
    (dict(kl=-1.0, prior="uniform"), "kl: must be finite and >= 0"),
    (dict(kl=np.nan, prior="uniform"), "kl: must be finite and >= 0"),
    (dict(kl=0.1, prior=np.full(6, 1 / 6)), r"prior: expected 7 weights"),
    (dict(kl=0.1, prior=np.full(7, 1.0)), "prior: the weights sum to 7"),
    (dict(kl=0.1, prior=np.array([0, .2, .2, .2, .2, .1, .1])), "prior: domain 'arxiv' has weight 0"),
    (dict(kl=0.1, prior=np.array([np.nan, .2, .2, .2, .2, .1, .1])), "prior: must be finite"),
    (dict(kl=0.1, prior={"arxiv": 1.0}), r"prior: no weight for domain\(s\)"),
    (dict(kl=0.1, prior={"nope": 1.0}), r"prior: unknown domain\(s\) \['nope'\]"),
    (dict(kl=np.ones(3), prior="uniform", N=np.ones(2) * 7e9), "kl: shape"),
])
def test_bad_regularisation_arguments_name_the_argument(sp, kwargs, match):
    runs, fits = sp
    kwargs = dict(kwargs)
    if isinstance(kwargs.get("prior"), str):
        kwargs["prior"] = np.full(7, 1 / 7)
    kwargs.setdefault("N", 7e9)
    with pytest.raises(ValueError, match=match):
        mixlaw.optimize_mixture(fits, D=1.4e11, **kwargs)


def test_runs_prior_with_other_domains_is_refused(sp):
    runs, fits = sp
    other = mixlaw.Runs(runs.N, runs.D, runs.H, domains=[f"x{i}" for i in range(7)], targets=dict(runs.targets))
    with pytest.raises(ValueError, match="prior: the runs' domains"):
        mixlaw.optimize_mixture(fits, N=7e9, D=1.4e11, prior=other, kl=0.1)


def test_core_refuses_bad_priors():
    law = mixlaw.law("additive", 3)
    laws = core_laws([synthetic_fit(law, law.init_lower)])
    one = dict(N=np.ones(1) * 1e9, D=np.ones(1) * 1e10, weights=np.ones((1, 1)), lo=np.zeros((1, 3)),
               hi=np.ones((1, 3)))
    for prior, match in ((np.array([[0.5, 0.5, 0.0]]), "prior: every weight must be finite and > 0"),
                         (np.array([[0.5, 0.6, 0.1]]), "prior: the weights must sum to 1"),
                         (None, "prior: needed when kl > 0")):
        with pytest.raises(ValueError, match=match):
            _core.optimize_mixtures(laws, one["N"], one["D"], one["weights"], one["lo"], one["hi"],
                                    kl=np.ones(1), prior=prior)
    with pytest.raises(ValueError, match="kl: must be finite and >= 0"):
        _core.optimize_mixtures(laws, one["N"], one["D"], one["weights"], one["lo"], one["hi"],
                                kl=-np.ones(1), prior=np.full((1, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"prior: expected shape \(1, 3\)"):
        _core.optimize_mixtures(laws, one["N"], one["D"], one["weights"], one["lo"], one["hi"],
                                kl=np.ones(1), prior=np.full((1, 2), 0.5))
