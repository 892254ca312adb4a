"""Data-constrained laws (issue 24, item 1): ``repetition=True`` evaluates a law at the
effective token count and mixture of Muennighoff et al.'s repeated-token rule.

Expected values come from an independent NumPy implementation of the rule (written from
the issue's formulas) feeding the NumPy oracle of the laws (tests/numpy_oracle.py), and
every derivative from finite differences (Richardson-extrapolated central differences)."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from numpy_oracle import oracle_predict

import mixlaw
from mixlaw import _core


def g_numpy(x, R):
    """g(x) = x for x <= 1, 1 + R (1 - exp(-(x - 1) / R)) beyond."""
    x = np.asarray(x, dtype=float)
    return np.where(x <= 1, x, 1 + R * (1 - np.exp(-(np.maximum(x, 1) - 1) / R)))


def effective(D, H, U, R):
    """(D', H') of the rule: D'_i = U_i g(h_i D / U_i) (h_i D for an unlimited domain); R
    one number or one per domain."""
    H = np.atleast_2d(H) if H is not None else np.ones((len(D), 1))
    U = np.asarray(U, dtype=float)
    U = np.broadcast_to(U if U.ndim != 1 or H.shape[1] > 1 else U[:, None], H.shape)
    with np.errstate(invalid="ignore"):
        Di = np.where(np.isinf(U), H * D[:, None], U * g_numpy(H * D[:, None] / U, R))
    Dp = Di.sum(axis=1)
    return Dp, Di / Dp[:, None]


def oracle(law, params, N, D, H, U):
    plain = mixlaw.law(law.name, law.k or None, n_term=law.n_term, d_term=law.d_term)
    x = law.params(params)
    r = law.n_repetition_params
    Dp, Hp = effective(D, H, U, x[-r:] if r > 1 else x[-1])
    return oracle_predict(plain, x[:-r], N, Dp, Hp if law.k else None)


def richardson(f, x, step):
    """df/dx along ``step`` (a vector), error O(|step|^4)."""
    t = float(np.abs(step).max())
    u = step / t

    def c(s):
        return (f(x + s * u) - f(x - s * u)) / (2 * s)

    return (4 * c(t / 2) - c(t)) / 3


def case(name, k, seed=0, n=40):
    rng = np.random.default_rng(seed)
    law = mixlaw.law(name, k or None, repetition=True)
    base = rng.uniform(law.init_lower[:-1], law.init_upper[:-1])
    x = np.append(base, rng.uniform(3, 30))
    N = 10 ** rng.uniform(7, 9.5, n)
    D = 10 ** rng.uniform(9, 11.5, n)
    H = rng.dirichlet(np.ones(k), n) if k else None
    U = 10 ** rng.uniform(8.5, 10.5, (n, max(k, 1)))
    if k:
        H[0, 0] = 0.0  # a zero weight
        H[0] /= H[0].sum()
        U[1, -1] = np.inf  # an unlimited domain
        U[2, 0] = H[2, 0] * D[2]  # exactly one epoch: x = 1
    else:
        U[2, 0] = D[2]
    return law, x, N, D, H, U


LAWS = [("chinchilla", 0), ("additive", 3), ("joint", 3), ("simple", 3), ("full", 2)]


@pytest.mark.parametrize("name, k", LAWS)
def test_predictions_match_the_numpy_rule(name, k):
    law, x, N, D, H, U = case(name, k)
    Dp, _ = effective(D, H, U if k else U[:, 0], x[-1])
    assert np.sum(Dp < D * (1 - 1e-9)) >= 10  # many records repeat
    got = law.predict(x, N, D, H, unique_tokens=U if k else U[:, 0])
    np.testing.assert_allclose(got, oracle(law, x, N, D, H, U if k else U[:, 0]), rtol=1e-12)


def test_g_at_and_around_one_epoch():
    law = mixlaw.law("chinchilla", repetition=True)
    x = np.array([1.8, 400.0, 400.0, 0.3, 0.3, 5.0])
    D = np.full(5, 1e10)
    epochs = np.array([0.5, 1.0, 1.0 + 1e-12, 4.0, 1e6])
    got = law.predict(x, np.full(5, 1e8), D, unique_tokens=D / epochs)
    want = oracle(law, x, np.full(5, 1e8), D, None, D / epochs)
    np.testing.assert_allclose(got, want, rtol=1e-13)
    # Far beyond R epochs the effective tokens saturate at U (1 + R).
    sat = law.predict(x, 1e8, 1e10 * 1e6, unique_tokens=1e10)
    plain = mixlaw.law("chinchilla")
    assert sat == pytest.approx(plain.predict(x[:-1], 1e8, 1e10 * (1 + 5.0)), rel=1e-12)


@pytest.mark.parametrize("name, k", LAWS)
def test_jacobian_matches_finite_differences(name, k):
    law, x, N, D, H, U = case(name, k, seed=1)
    U = U if k else U[:, 0]
    L, J = law.jacobian(x, N, D, H, unique_tokens=U)
    for q in range(law.n_params):
        e = np.zeros(law.n_params)
        e[q] = 1.0
        t = 1e-4 * max(abs(x[q]), 1e-2)
        num = richardson(lambda v: law.predict(v, N, D, H, unique_tokens=U), x, t * e)
        # Rounding of the differences: about eps |L| / t (100x margin).
        np.testing.assert_allclose(J[:, q], num, rtol=1e-7, atol=100 * np.finfo(float).eps * np.abs(L).max() / t,
                                   err_msg=law.param_names[q])


@pytest.mark.parametrize("name, k", [("additive", 3), ("joint", 3), ("simple", 3)])
def test_grad_h_matches_finite_differences_along_the_simplex(name, k):
    law, x, N, D, H, U = case(name, k, seed=2)
    H = 0.9 * H + 0.1 / k  # interior points (the one-sided slopes at 0 are tested elsewhere)
    G = law.grad_h(x, N, D, H, unique_tokens=U)
    for i, j in ((0, 1), (1, 2), (2, 0)):
        e = np.zeros(k)
        e[i], e[j] = 1.0, -1.0
        num = richardson(lambda Hv: law.predict(x, N, D, Hv, unique_tokens=U), H, 1e-5 * e[None, :])
        np.testing.assert_allclose(G @ e, num, rtol=1e-6, atol=1e-9 * np.abs(num).max())


@pytest.mark.parametrize("name, k", LAWS)
def test_without_repetition_the_law_is_the_plain_law_exactly(name, k):
    law, x, N, D, H, _ = case(name, k, seed=3)
    if k:  # rows that sum to 1 only within 1e-7, as records allow (e.g. weights published rounded)
        H = H.copy()
        H[:, -1] += 5e-8
    plain = mixlaw.law(name, k or None)
    U = np.full((N.size, max(k, 1)), np.inf)
    U[:, 0] = 1e30  # finite but never repeated
    U = U if k else U[:, 0]
    np.testing.assert_array_equal(law.predict(x, N, D, H, unique_tokens=U), plain.predict(x[:-1], N, D, H))
    _, J = law.jacobian(x, N, D, H, unique_tokens=U)
    _, Jp = plain.jacobian(x[:-1], N, D, H)
    np.testing.assert_array_equal(J[:, :-1], Jp)
    assert np.all(J[:, -1] == 0)
    if k:  # the h-gradient: the same along the simplex (differs by a constant per record)
        G, Gp = law.grad_h(x, N, D, H, unique_tokens=U), plain.grad_h(x[:-1], N, D, H)
        np.testing.assert_array_equal(np.isfinite(G), np.isfinite(Gp))  # -inf at h_i = 0 with gamma_i < 1
        rows = np.isfinite(Gp).all(axis=1)
        diff = G[rows] - Gp[rows]
        np.testing.assert_allclose(diff - diff.mean(axis=1, keepdims=True), 0, atol=1e-12 * np.abs(Gp[rows]).max())


def test_objective_gradient_and_gauss_newton_matrix():
    law, x, N, D, H, U = case("additive", 3, seed=4, n=60)
    y = oracle(law, x, N, D, H, U) * (1 + 0.01 * np.random.default_rng(0).standard_normal(N.size))
    rec = law.records(N, D, H, unique_tokens=U)
    x0 = x * 1.05
    f, g, B = _core.objective(law._core, rec, y, None, x0, loss="mse", gauss_newton=True)
    _, J = law.jacobian(x0, N, D, H, unique_tokens=U)
    r = law.predict(x0, N, D, H, unique_tokens=U) - y
    n = N.size
    assert f == pytest.approx(0.5 * np.mean(r ** 2), rel=1e-12)
    np.testing.assert_allclose(g, J.T @ r / n, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(B, J.T @ J / n, rtol=1e-10, atol=1e-14 * np.abs(B).max())


def test_fit_recovers_a_known_repetition_rule():
    rng = np.random.default_rng(5)
    law = mixlaw.law("chinchilla", repetition=True)
    truth = np.array([1.9, 300.0, 800.0, 0.32, 0.36, 12.0])
    N = np.repeat(10 ** np.linspace(7.5, 9.5, 5), 24)
    D = np.tile(np.repeat(10 ** np.linspace(9.5, 11.5, 6), 4), 5)
    U = np.tile(10 ** np.array([8.5, 9.0, 9.5, 12.0]), 30)  # 0.03 to 2,000 epochs
    y = oracle(law, truth, N, D, None, U) * (1 + 1e-4 * rng.standard_normal(N.size))
    runs = mixlaw.Runs(N, D, None, targets={"loss": y})
    f = mixlaw.fit(runs, law, unique_tokens=U, n_starts=32, progress=False)["loss"]
    assert f.success
    truth_obj = _core.objective(law._core, law.records(N, D, unique_tokens=U), y, None, truth)
    truth_obj = truth_obj[0] if isinstance(truth_obj, tuple) else truth_obj
    assert f.fun <= truth_obj * (1 + 1e-6)
    assert f.params["R_D"] == pytest.approx(12.0, rel=0.05)
    assert f.train["mre"] < 0.02
    # The plain law cannot follow the repeated runs.
    plain = mixlaw.fit(runs, "chinchilla", n_starts=32, progress=False)["loss"]
    assert plain.train["mre"] > 5 * f.train["mre"]
    # Scores and predictions need the unique tokens, and use them.
    assert f.score(runs, unique_tokens=U)["mre"] == pytest.approx(f.train["mre"], rel=1e-12)
    with pytest.raises(ValueError, match="unique_tokens"):
        f.predict(runs)


def test_fit_with_mixtures_and_per_domain_unique_tokens():
    rng = np.random.default_rng(6)
    law = mixlaw.law("additive", 3, repetition=True)
    truth = law.params({"E": 1.7, "A": 200.0, "B": 600.0, "alpha": 0.3, "beta": 0.35, "C_1": 2.0, "C_2": 3.0,
                        "C_3": 1.5, "gamma_1": 0.4, "gamma_2": 0.6, "gamma_3": 0.5, "R_D": 8.0})
    M = rng.dirichlet(np.ones(3), 20)
    N = np.repeat(10 ** np.linspace(7.5, 9, 3), 20 * 5)
    D = np.tile(np.repeat(10 ** np.linspace(9.5, 11, 5), 20), 3)
    H = np.tile(M, (15, 1))
    U = {"web": np.inf, "code": 3e9, "math": 5e8}
    Ua = np.tile([np.inf, 3e9, 5e8], (N.size, 1))
    y = oracle(law, truth, N, D, H, Ua) * (1 + 1e-4 * rng.standard_normal(N.size))
    runs = mixlaw.Runs(N, D, H, targets={"loss": y}, domains=["web", "code", "math"])
    fits = mixlaw.fit(runs, law, unique_tokens=U, n_starts=16, progress=False)
    f = fits["loss"]
    assert f.success and f.params["R_D"] == pytest.approx(8.0, rel=0.1)
    assert f.train["mre"] < 0.03
    # Domains matched by name: a reordered table gives the same predictions.
    order = [2, 0, 1]
    other = mixlaw.Runs(N, D, H[:, order], targets={"loss": y}, domains=["math", "web", "code"])
    np.testing.assert_allclose(f.predict(other, unique_tokens=U), f.predict(runs, unique_tokens=U), rtol=1e-14)
    np.testing.assert_array_equal(fits.predict(runs, unique_tokens=U)["loss"], f.predict(runs, unique_tokens=U))
    # JSON and pickle keep the option.
    back = mixlaw.load_fits(fits.to_json())
    assert back["loss"].law.repetition and back["loss"].law == f.law
    np.testing.assert_array_equal(back["loss"].predict(runs, unique_tokens=U), f.predict(runs, unique_tokens=U))
    assert pickle.loads(pickle.dumps(f.law)) == f.law
    doc = json.loads(fits.to_json())
    assert doc["fits"][0]["law"]["repetition"] is True


def test_nested_fit_carries_the_repetition_parameter():
    law, x, N, D, H, U = case("joint", 3, seed=7, n=300)
    y = oracle(law, x, N, D, H, U)
    runs = mixlaw.Runs(N, D, H, targets={"loss": y}, domains=["a", "b", "c"])
    f = mixlaw.fit(runs, "joint", repetition=True, unique_tokens=U, n_starts=4, progress=False)["loss"]
    assert f.law.repetition and f.options["nested_start"]
    assert np.isfinite(f.fun)


@pytest.mark.parametrize("call, match", [
    (lambda: mixlaw.law("chinchilla", repetition=True).predict(np.ones(6), 1e8, 1e10),
     "unique_tokens: .* is data-constrained"),
    (lambda: mixlaw.law("chinchilla").predict(np.ones(5), 1e8, 1e10, unique_tokens=1e9),
     "unique_tokens: .* has no repetition option"),
    (lambda: mixlaw.law("chinchilla", repetition=True).predict(np.ones(6), 1e8, 1e10, unique_tokens=0.0),
     "unique_tokens: must be > 0"),
    (lambda: mixlaw.law("chinchilla", repetition=True).predict(np.ones(6), 1e8, 1e10, unique_tokens=np.nan),
     "unique_tokens: must be > 0"),
    (lambda: mixlaw.law("additive", 3, repetition=True).predict(np.ones(12), 1e8, 1e10, [0.2, 0.3, 0.5],
                                                                 unique_tokens=[1e9, 1e9]),
     r"unique_tokens: expected 3 values"),
    (lambda: mixlaw.law("dml_exp", 3, repetition=True), "repetition: the data-constrained option needs"),
    (lambda: mixlaw.law("additive", 3, d_term=False, repetition=True), "repetition: the data-constrained option"),
    (lambda: mixlaw.law("chinchilla", repetition="yes"), "repetition: expected False, True"),
])
def test_bad_use_is_refused_naming_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_fit_refuses_what_it_cannot_do():
    law, x, N, D, H, U = case("additive", 3, seed=8, n=200)
    runs = mixlaw.Runs(N, D, H, targets={"loss": oracle(law, x, N, D, H, U)}, domains=["a", "b", "c"])
    with pytest.raises(ValueError, match="unique_tokens: .* is data-constrained"):
        mixlaw.fit(runs, law)
    with pytest.raises(ValueError, match="unique_tokens: .* has no repetition option"):
        mixlaw.fit(runs, "additive", unique_tokens={"a": 1e9})
    with pytest.raises(ValueError, match=r"unique_tokens: unknown domain\(s\) \['z'\]"):
        mixlaw.fit(runs, law, unique_tokens={"z": 1e9})
    f = mixlaw.fit(runs, law, unique_tokens=U, n_starts=2, progress=False)
    with pytest.raises(ValueError, match="unique_tokens: the fits of .* are data-constrained"):
        mixlaw.optimize_mixture(f, N=1e9, D=1e11)
    with pytest.raises(ValueError, match="unique_tokens: the fits are data-constrained"):
        _core.optimize_mixtures([(law._core, f["loss"].x)], np.ones(1) * 1e9, np.ones(1) * 1e11, np.ones((1, 1)),
                                np.zeros((1, 3)), np.ones((1, 3)))


# -- optimal mixtures with unique tokens (issue 24, item 3) ------------------------------
def mixture_case(seed=0, k=4):
    from test_mixture import synthetic_fit

    rng = np.random.default_rng(seed)
    fits = []
    for t, name in enumerate(["additive", "joint"]):
        law = mixlaw.law(name, k)
        fits.append(synthetic_fit(law, rng.uniform(law.init_lower, law.init_upper), f"t{t}"))
    return fits, np.array([1e9, 3e9, np.inf, 2e8])


def numpy_mixture_value(fits, w, N, D, h, U, halflife):
    total = 0.0
    for wt, f in zip(w, fits):
        law = mixlaw.law(f.law.name, f.law.k, repetition=True)
        total += wt * oracle(law, np.append(f.x, halflife), np.array([N]), np.array([D]), h[None, :], U[None, :])[0]
    return total


@pytest.mark.parametrize("generic", [False, True], ids=["solver's evaluator", "generic"])
def test_mixture_objective_with_unique_tokens_matches_numpy(generic):
    fits, U = mixture_case()
    laws = [(f.law._core, np.ascontiguousarray(f.x)) for f in fits]
    w, N, D = np.array([0.3, 0.7]), 1e9, 2e10
    h = np.random.default_rng(1).dirichlet(np.ones(4))
    f, g, per = _core.mixture_objective(laws, N, D, w, h, generic=generic, unique_tokens=U, repetition_halflife=10.0)
    assert f == pytest.approx(numpy_mixture_value(fits, w, N, D, h, U, 10.0), rel=1e-12)
    for i, j in ((0, 1), (1, 2), (2, 3), (3, 0)):
        e = np.zeros(4)
        e[i], e[j] = 1.0, -1.0
        num = richardson(lambda v: numpy_mixture_value(fits, w, N, D, v, U, 10.0), h, 1e-5 * e)
        assert g @ e == pytest.approx(num, rel=1e-7)


def test_repetition_aware_mixtures_are_certified_by_a_numpy_gradient():
    fits, U = mixture_case(seed=2)
    P = 6
    D = np.geomspace(1e9, 1e12, P)
    g = mixlaw.optimize_mixture(fits, N=np.full(P, 1e9), D=D, unique_tokens=dict(zip(fits[0].domains, U)),
                                repetition_halflife=10.0, weights=[0.5, 0.5])
    assert np.all(g.status == 1)
    for p in range(P):
        h = g.h[p]
        G = numpy_gradient(fits, 1e9, D[p], h, U)
        gap = G @ h - G.min()
        assert gap <= 1e-7 * np.abs(G).max()  # the reported gap is 1e-10; FD differences are good to ~1e-8
        assert g.fun[p] == pytest.approx(numpy_mixture_value(fits, [0.5, 0.5], 1e9, D[p], h, U, 10.0), rel=1e-12)
        for t in range(2):  # each target's reported loss is the data-constrained one
            e = np.eye(2)[t]
            assert g.losses[p, t] == pytest.approx(numpy_mixture_value(fits, e, 1e9, D[p], h, U, 10.0), rel=1e-12)


def numpy_gradient(fits, N, D, h, U, R=10.0, w=(0.5, 0.5)):
    """dF/dh in NumPy: the laws' analytic h-gradient (test_mixture_certificates.oracle_grad_h)
    at the effective mixture h', dL/dlog D' by differences in D' alone (smooth), and the
    chain rule through the rule: dL/dh_i = a_i (dL/dlog D' + dL/dh'_i - sum_j h'_j dL/dh'_j),
    a_i = D g'(x_i) / D'. Finite differences in h itself cannot resolve weights of ~1e-12,
    which these optima have."""
    from test_mixture_certificates import oracle_grad_h

    x = np.where(np.isinf(U), 0.0, h * D / U)
    gp = np.where(x > 1, np.exp(-(np.maximum(x, 1) - 1) / R), 1.0)
    Dp, Hp = effective(np.array([D]), h[None, :], U, R)
    Dp, Hp = float(Dp[0]), Hp[0]
    a = D * gp / Dp
    G = np.zeros(h.size)
    for wt, f in zip(w, fits):
        gh = oracle_grad_h(f.law, f.x, [N], [Dp], Hp[None, :])[0]
        dlnD = richardson(lambda v: oracle_predict(f.law, f.x, [N], [np.exp(v[0])], Hp[None, :])[0],
                          np.array([np.log(Dp)]), np.array([1e-3]))
        G += wt * a * (dlnD + gh - Hp @ gh)
    return G


def test_unlimited_unique_tokens_give_the_plain_optimum():
    fits, _ = mixture_case(seed=3)
    plain = mixlaw.optimize_mixture(fits, N=1e9, D=1e11, n_starts=1)
    unlimited = mixlaw.optimize_mixture(fits, N=1e9, D=1e11, n_starts=1, unique_tokens=np.full(4, np.inf))
    np.testing.assert_allclose(unlimited.x, plain.x, rtol=1e-6, atol=1e-9)
    assert unlimited.fun == pytest.approx(plain.fun, rel=1e-12)


def test_binding_multipliers_of_repetition_aware_mixtures():
    fits, U = mixture_case(seed=4)
    capped = fits[0].domains[2]  # 86% of the unconstrained optimum
    r = mixlaw.optimize_mixture(fits, N=1e9, D=1e11, unique_tokens=U, repetition_halflife=10.0,
                                bounds={capped: (0.0, 0.5)}, weights=[0.5, 0.5])
    assert r.success
    which, mult = r.binding[capped]
    assert which == "upper bound" and mult > 0
    G = numpy_gradient(fits, 1e9, 1e11, r.x, U)
    free = np.arange(4) != 2
    mu = np.median(G[free])
    np.testing.assert_allclose(G[free], mu, atol=1e-6 * np.abs(G).max())
    assert mult == pytest.approx(mu - G[2], rel=1e-5)


def test_runs_without_repetition_cannot_identify_R_D():
    law, x, N, D, H, _ = case("chinchilla", 0, seed=9, n=60)
    U = D * 2.0  # half an epoch everywhere
    runs = mixlaw.Runs(N, D, None, targets={"loss": oracle(law, x, N, D, None, U)})
    with pytest.warns(mixlaw.IdentifiabilityWarning, match="R_D is not identifiable"):
        mixlaw.fit(runs, law, unique_tokens=U, n_starts=2, progress=False)


# -- one R_D per domain ----------------------------------------------------------------
def per_domain_case(name="additive", k=3, seed=10, n=40):
    law, x, N, D, H, U = case(name, k, seed=seed, n=n)
    per = mixlaw.law(name, k, repetition="per_domain")
    xr = np.concatenate([x[:-1], np.random.default_rng(seed).uniform(3, 30, k)])
    return per, xr, N, D, H, U


def test_per_domain_halflives_match_numpy_and_finite_differences():
    law, x, N, D, H, U = per_domain_case()
    assert law.param_names[-3:] == ("R_D_1", "R_D_2", "R_D_3") and law.n_repetition_params == 3
    assert law.named_params(["web", "code", "math"])[-3:] == ("R_D[web]", "R_D[code]", "R_D[math]")
    np.testing.assert_allclose(law.predict(x, N, D, H, unique_tokens=U), oracle(law, x, N, D, H, U), rtol=1e-12)
    L, J = law.jacobian(x, N, D, H, unique_tokens=U)
    for q in range(law.n_params - 3, law.n_params):
        e = np.zeros(law.n_params)
        e[q] = 1.0
        t = 1e-4 * x[q]
        num = richardson(lambda v: law.predict(v, N, D, H, unique_tokens=U), x, t * e)
        np.testing.assert_allclose(J[:, q], num, rtol=1e-7, atol=100 * np.finfo(float).eps * np.abs(L).max() / t)
    # Equal half-lives: the shared law, its R_D column the sum of the per-domain ones.
    shared = mixlaw.law("additive", 3, repetition=True)
    xs = np.append(x[:-3], 12.0)
    xp = np.concatenate([x[:-3], [12.0] * 3])
    np.testing.assert_array_equal(law.predict(xp, N, D, H, unique_tokens=U), shared.predict(xs, N, D, H, unique_tokens=U))
    _, Jp = law.jacobian(xp, N, D, H, unique_tokens=U)
    _, Js = shared.jacobian(xs, N, D, H, unique_tokens=U)
    np.testing.assert_allclose(Jp[:, -3:].sum(axis=1), Js[:, -1], rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(law.grad_h(xp, N, D, H, unique_tokens=U), shared.grad_h(xs, N, D, H, unique_tokens=U))


def test_per_domain_fit_and_file():
    rng = np.random.default_rng(11)
    law = mixlaw.law("additive", 2, repetition="per_domain")
    truth = law.params({"E": 1.7, "A": 200.0, "B": 600.0, "alpha": 0.3, "beta": 0.35, "C_1": 2.0, "C_2": 3.0,
                        "gamma_1": 0.4, "gamma_2": 0.6, "R_D_1": 5.0, "R_D_2": 30.0})
    M = rng.dirichlet(np.ones(2), 16)
    N = np.repeat(10 ** np.linspace(7.5, 9, 3), 16 * 6)
    D = np.tile(np.repeat(10 ** np.linspace(9.5, 11.5, 6), 16), 3)
    H = np.tile(M, (18, 1))
    U = np.tile([2e9, 5e8], (N.size, 1))
    y = oracle(law, truth, N, D, H, U) * (1 + 1e-5 * rng.standard_normal(N.size))
    runs = mixlaw.Runs(N, D, H, targets={"loss": y}, domains=["web", "code"])
    fits = mixlaw.fit(runs, law, unique_tokens={"web": 2e9, "code": 5e8}, n_starts=16, progress=False)
    f = fits["loss"]
    assert f.success
    assert f.params["R_D_1"] == pytest.approx(5.0, rel=0.05) and f.params["R_D_2"] == pytest.approx(30.0, rel=0.1)
    assert set(f.domain_params) >= {"R_D[web]", "R_D[code]"}
    back = mixlaw.load_fits(fits.to_json())["loss"]
    assert back.law.repetition == "per_domain" and back.law == f.law
    assert json.loads(fits.to_json())["fits"][0]["law"]["repetition"] == "per_domain"
    with pytest.raises(ValueError, match="repetition"):
        doc = json.loads(fits.to_json())
        doc["fits"][0]["law"]["repetition"] = "sometimes"
        mixlaw.load_fits(json.dumps(doc))


def test_a_fit_too_large_for_memory_is_refused_before_allocating():
    import os

    limit = 0.75 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # the core's limit
    k, threads = 1000, 64
    P = 2 * k + 6
    # Enough records that 64 running starts' Jacobians (records x P doubles each) exceed it.
    n = int(1.3 * limit / (threads * 8 * P)) // 8 * 8 + 8
    if n > 200_000:
        pytest.skip("this machine's memory would need a table too large for a test")
    rng = np.random.default_rng(12)
    H = np.zeros((n, k))
    H[np.arange(n), rng.integers(0, k, n)] = 1.0
    runs = mixlaw.Runs(np.repeat([1e8, 2e8, 3e8, 4e8], n // 4), np.tile(10 ** np.linspace(9, 11, 8), n // 8), H,
                       targets={"y": 3.0 + 0.1 * rng.random(n)})
    law = mixlaw.law("additive", k, repetition=True)
    with pytest.raises(ValueError, match=r"starts: the dense Levenberg-Marquardt solve needs about .* GiB per running "
                                         r"start \(2006 parameters\).*fewer threads, or a law"):
        mixlaw.fit(runs, law, unique_tokens=1e9, n_starts=threads, threads=threads, progress=False)


def test_one_domain_mixture_law_takes_a_mapping():
    # k = 1: a mapping {domain: U} is per domain, not per record.
    rng = np.random.default_rng(13)
    law = mixlaw.law("additive", 1, repetition=True)
    x = np.append(rng.uniform(law.init_lower[:-1], law.init_upper[:-1]), 10.0)
    N = np.repeat(10 ** np.linspace(7.5, 9, 3), 8)
    D = np.tile(10 ** np.linspace(9, 11, 8), 3)
    H = np.ones((N.size, 1))
    y = oracle(law, x, N, D, H, np.full((N.size, 1), 3e9))
    from dataclasses import replace

    from test_mixture import synthetic_fit

    runs = mixlaw.Runs(N, D, H, targets={"loss": y}, domains=["web"])
    f = replace(synthetic_fit(law, x, "loss"), domains=("web",))
    np.testing.assert_allclose(f.predict(runs, unique_tokens={"web": 3e9}), y, rtol=1e-12)
    np.testing.assert_array_equal(f.predict(runs, unique_tokens={"web": 3e9}), f.predict(runs, unique_tokens=3e9))
    with pytest.raises(ValueError, match="unique_tokens: expected"):
        f.predict(runs, unique_tokens={"web": "many"})
