"""Domains are matched by name in every operation that combines fits, runs tables and
mixtures (issue 21): reordered weight columns give the same answer, different names a
ValueError naming both sides; bare arrays keep their positional meaning."""
from __future__ import annotations

import numpy as np
import pytest

import mixlaw
from mixlaw import datasets
from mixlaw.fit import Fit

pd = pytest.importorskip("pandas")

PERM = [6, 5, 4, 3, 2, 1, 0]  # reversed column order


@pytest.fixture(scope="module")
def runs():
    return datasets.slimpajama()


def reorder(runs, perm):
    """The same records with the weight columns (and their names) permuted."""
    return mixlaw.Runs(runs.N, runs.D, runs.H[:, perm], domains=[runs.domains[i] for i in perm],
                       targets=dict(runs.targets), run=runs.run)


@pytest.fixture(scope="module")
def fits(runs):
    small = runs.select(runs.N < 2e9)
    return mixlaw.fit(small, "additive", targets=["c4", "wikipedia"], n_starts=8, seed=0)


def test_score_on_reordered_runs_is_unchanged(runs, fits):
    big = runs.select(runs.N > 2e9)
    big_reordered = reorder(big, PERM)
    expected = fits["c4"].score(big)
    # independent: the law evaluated on the original column order
    y = big.targets["c4"]
    pred = fits["c4"].law.predict(fits["c4"].x, big.N, big.D, big.H)
    assert expected["mre"] == pytest.approx(mixlaw.metrics.mre(y, pred), rel=1e-12)
    assert fits["c4"].score(big_reordered)["mre"] == pytest.approx(expected["mre"], rel=1e-12)
    np.testing.assert_allclose(fits["c4"].predict(big_reordered), pred, rtol=1e-13)
    table = mixlaw.Fits({"c4": fits["c4"]}).table(big_reordered)
    assert table[0]["eval_mre"] == pytest.approx(expected["mre"], rel=1e-12)


def test_runs_with_other_domains_are_refused(runs, fits):
    big = runs.select(runs.N > 2e9)
    renamed = mixlaw.Runs(big.N, big.D, big.H, domains=[*big.domains[:-1], "wiki"], targets=dict(big.targets),
                          run=big.run)
    with pytest.raises(ValueError, match=r"runs, fit: the domains differ.*wiki"):
        fits["c4"].score(renamed)
    with pytest.raises(ValueError, match=r"runs, fit: the domains differ"):
        fits["c4"].predict(renamed)


def test_dataframe_H_is_matched_by_column_name(runs, fits):
    big = runs.select(runs.N > 2e9)
    N, D, H = big.N[:5], big.D[:5], big.H[:5]
    expected = fits["c4"].law.predict(fits["c4"].x, N, D, H)
    frame = pd.DataFrame(H, columns=list(big.domains))
    np.testing.assert_allclose(fits["c4"].predict(N=N, D=D, H=frame[frame.columns[::-1]]), expected, rtol=1e-13)
    np.testing.assert_allclose(fits["c4"].predict(N=N, D=D, H={d: frame[d].to_numpy() for d in reversed(big.domains)}),
                               expected, rtol=1e-13)
    # a bare array is positional, in the fit's domain order
    np.testing.assert_allclose(fits["c4"].predict(N=N, D=D, H=H), expected, rtol=1e-13)
    bad = frame.rename(columns={"c4": "C4"})
    with pytest.raises(ValueError, match=r"^H, fit: the domains differ.*'C4'"):
        fits["c4"].predict(N=N, D=D, H=bad)
    dup = pd.DataFrame(H, columns=["a", "a", "b", "c", "d", "e", "f"])
    with pytest.raises(ValueError, match=r"^H: duplicate column names"):
        fits["c4"].predict(N=N, D=D, H=dup)


def _hand_permuted(f: Fit, perm: list[int]) -> Fit:
    """``f`` with its domains in the order ``perm``, built by hand from the documented
    parameter layout of the additive law (E, A, B, alpha, beta, C_1..k, gamma_1..k)."""
    k = f.law.k
    x = np.array(f.x)
    C, g = x[5:5 + k], x[5 + k:5 + 2 * k]
    x2 = np.concatenate([x[:5], C[perm], g[perm]])
    return Fit(law=f.law, target=f.target, x=x2, fun=f.fun, success=f.success, status=f.status, message="",
               nit=0, nfev=0, njev=0, starts_fun=f.starts_fun, starts_status=f.starts_status,
               n_records=f.n_records, train=f.train, domains=tuple(f.domains[i] for i in perm))


def test_optimize_mixture_aligns_fits_by_domain_name(fits):
    ref = mixlaw.optimize_mixture([fits["c4"], fits["wikipedia"]], N=7e9, D=1.4e11)
    wiki_rev = _hand_permuted(fits["wikipedia"], PERM)
    # the hand-permuted fit predicts like the original when the weights are permuted alike
    H = np.random.default_rng(0).dirichlet(np.ones(7), 4)
    np.testing.assert_allclose(wiki_rev.predict(N=np.full(4, 7e9), D=np.full(4, 1.4e11), H=H[:, PERM]),
                               fits["wikipedia"].predict(N=np.full(4, 7e9), D=np.full(4, 1.4e11), H=H), rtol=1e-13)
    got = mixlaw.optimize_mixture([fits["c4"], wiki_rev], N=7e9, D=1.4e11)
    assert got.success and ref.success
    for d in ref.h:
        assert got.h[d] == pytest.approx(ref.h[d], abs=1e-9)
    assert got.fun == pytest.approx(ref.fun, rel=1e-12)
    # the first fit's order is the result's order
    got2 = mixlaw.optimize_mixture([wiki_rev, fits["c4"]], N=7e9, D=1.4e11)
    assert list(got2.h) == list(wiki_rev.domains)
    for d in ref.h:
        assert got2.h[d] == pytest.approx(ref.h[d], abs=1e-9)


def test_optimize_mixture_refuses_fits_on_other_domains(fits):
    other = _hand_permuted(fits["wikipedia"], list(range(7)))
    other = Fit(**{**other.__dict__, "domains": (*other.domains[:-1], "wiki")})
    with pytest.raises(ValueError, match=r"^fits: the domains differ.*'wiki'"):
        mixlaw.optimize_mixture([fits["c4"], other], N=7e9, D=1.4e11)


@pytest.mark.parametrize("name", mixlaw.laws.ALL_LAWS)
def test_with_domains_keeps_every_prediction(name):
    k = 5
    kwargs = {"target_domain": 1} if name == "bimix" else {}
    L = mixlaw.law(name, None if name == "chinchilla" else k, **kwargs)
    if L.k == 0:
        pytest.skip("no mixture term")
    rng = np.random.default_rng(3)
    x = rng.uniform(L.init_lower, L.init_upper)
    doms = ("a", "b", "c", "d", "e")
    f = Fit(law=L, target="t", x=x, fun=0.0, success=True, status=1, message="", nit=0, nfev=0, njev=0,
            starts_fun=np.zeros(1), starts_status=np.ones(1, int), n_records=0, train={}, domains=doms,
            ranges={"N": (1.0, 2.0), "D": (1.0, 2.0), "h": tuple((0.0, 0.1 * (i + 1)) for i in range(k))})
    perm = [3, 0, 4, 1, 2]
    g = f.with_domains([doms[i] for i in perm])
    H = rng.dirichlet(np.ones(k), 6) * 0.9 + 0.1 / k  # every weight > 0 (bimix is infinite at h_t = 0)
    N, D = np.geomspace(1e8, 1e9, 6), np.geomspace(1e9, 1e11, 6)
    np.testing.assert_allclose(g.predict(N=N, D=D, H=H[:, perm]), f.predict(N=N, D=D, H=H), rtol=1e-13)
    assert g.ranges["h"] == tuple(f.ranges["h"][i] for i in perm)
    assert f.with_domains(doms) is f
    with pytest.raises(ValueError, match=r"fit, domains: the domains differ"):
        f.with_domains(["a", "b", "c", "d", "x"])


def test_bootstrap_predict_interval_matches_domains_by_name(runs):
    small = runs.select(runs.N < 2e9)
    boot = mixlaw.evaluate.bootstrap(small, "additive", targets="c4", n_boot=4, n_starts=2, seed=1)
    big = runs.select(runs.N > 2e9)
    lo, hi = boot.predict_interval("c4", big)
    lo2, hi2 = boot.predict_interval("c4", reorder(big, PERM))
    np.testing.assert_allclose(lo2, lo, rtol=1e-13)
    np.testing.assert_allclose(hi2, hi, rtol=1e-13)
    frame = pd.DataFrame(big.H[:, PERM], columns=[big.domains[i] for i in PERM])
    lo3, _ = boot.predict_interval("c4", N=big.N, D=big.D, H=frame)
    np.testing.assert_allclose(lo3, lo, rtol=1e-13)


def test_law_refuses_a_table_it_cannot_match_by_name(runs):
    L = mixlaw.law("additive", 7)
    x = (L.init_lower + L.init_upper) / 2
    frame = pd.DataFrame(runs.H[:3], columns=list(runs.domains))
    for call in (lambda: L.predict(x, runs.N[:3], runs.D[:3], frame),
                 lambda: L.grad_h(x, runs.N[:3], runs.D[:3], frame),
                 lambda: L.jacobian(x, runs.N[:3], runs.D[:3], frame),
                 lambda: L.value_and_grad(x, np.ones(3), runs.N[:3], runs.D[:3], frame)):
        with pytest.raises(ValueError, match=r"^H: a Law has no domain names"):
            call()
    np.testing.assert_array_equal(L.predict(x, runs.N[:3], runs.D[:3], frame.to_numpy()),
                                  L.predict(x, runs.N[:3], runs.D[:3], runs.H[:3]))
