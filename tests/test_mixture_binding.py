"""Binding constraints of optimal mixtures (issue 22): which bound, token cap or fitting range
holds each weight, and its Lagrange multiplier, checked against the envelope theorem: the
optimal objective's finite-difference change when that one constraint is relaxed."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import mixlaw
from mixlaw import datasets


@pytest.fixture(scope="module")
def fits():
    return mixlaw.fit(datasets.slimpajama(), "additive", targets=["c4", "book"], n_starts=4, seed=0, threads=2,
                      progress=False)


def solve(fits, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixlaw.ExtrapolationWarning)
        return mixlaw.optimize_mixture(fits, N=7e9, D=1.4e11, gap_tol=1e-13, max_iter=20000, **kw)


def test_bounds_bind_with_the_envelope_multiplier(fits):
    bounds = {"wikipedia": (0.1, 0.3), "c4": (0.0, 0.2)}
    r = solve(fits, bounds=bounds)
    assert set(r.binding) == {"c4", "wikipedia"}
    assert r.binding["c4"][0] == "upper bound" and r.binding["wikipedia"][0] == "lower bound"
    eps = 1e-5
    up = solve(fits, bounds={**bounds, "c4": (0.0, 0.2 + eps)})
    down = solve(fits, bounds={**bounds, "wikipedia": (0.1 - eps, 0.3)})
    assert r.binding["c4"][1] == pytest.approx((r.fun - up.fun) / eps, rel=1e-3)
    assert r.binding["wikipedia"][1] == pytest.approx((r.fun - down.fun) / eps, rel=1e-3)
    assert r.binding["c4"][1] > 0 and r.binding["wikipedia"][1] > 0


def test_token_caps_and_fitting_ranges_are_named(fits):
    # A token cap at half of commoncrawl's free optimal weight binds, with its multiplier.
    free = solve(fits)
    U = 0.5 * free.h["commoncrawl"] * 1.4e11
    r = solve(fits, available_tokens={"commoncrawl": U})
    assert r.binding["commoncrawl"][0] == "available tokens"
    assert r.h["commoncrawl"] == pytest.approx(0.5 * free.h["commoncrawl"], abs=1e-9)
    eps = 1e-5
    more = solve(fits, available_tokens={"commoncrawl": U + eps * 1.4e11})
    assert r.binding["commoncrawl"][1] == pytest.approx((r.fun - more.fun) / eps, rel=1e-3)
    inside = solve(fits, within_data=True)
    assert inside.binding and {w for w, _ in inside.binding.values()} == {"fitting range"}
    assert "commoncrawl" not in free.binding or free.binding["commoncrawl"][0] != "available tokens"


def test_grid_carries_the_same_per_budget(fits):
    bounds = {"c4": (0.0, 0.2)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixlaw.ExtrapolationWarning)
        g = mixlaw.optimize_mixture(fits, N=[1e9, 7e9], D=[2e10, 1.4e11], bounds=bounds, gap_tol=1e-13,
                                    max_iter=20000)
    j = g.domains.index("c4")
    assert list(g.binding[:, j]) == ["upper bound", "upper bound"]
    assert g[1].binding["c4"][1] == pytest.approx(solve(fits, bounds=bounds).binding["c4"][1], rel=1e-9)
    free = [d for d in g.domains if d not in g[0].binding]
    assert all(g.multipliers[0, g.domains.index(d)] == 0 for d in free)
