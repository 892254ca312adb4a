"""Pareto fronts over several targets (issue 24, item 5). Expected values come from NumPy:
a brute-force dominance check, the certificates recomputed with the NumPy oracles of the
laws, and the trade-off that weighted-sum scalarisation guarantees at global minima."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from test_mixture_certificates import linear_minimum, mixture_value_grad

import mixlaw
from mixlaw.pareto import non_dominated, simplex_lattice


def dominated_brute_force(L: np.ndarray) -> np.ndarray:
    """Row i is dominated when another row is <= on every column and < on one (exact)."""
    n = L.shape[0]
    out = np.zeros(n, dtype=bool)
    for i, j in itertools.permutations(range(n), 2):
        if all(L[j, c] <= L[i, c] for c in range(L.shape[1])) and any(L[j, c] < L[i, c] for c in range(L.shape[1])):
            out[i] = True
    return out


@pytest.mark.parametrize("seed", range(5))
def test_non_dominated_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    L = rng.integers(0, 6, (40, int(rng.integers(2, 4)))).astype(float)  # many ties and duplicates
    np.testing.assert_array_equal(non_dominated(L, rtol=0.0), ~dominated_brute_force(L))


def test_simplex_lattice():
    w = simplex_lattice(2, 5)
    np.testing.assert_allclose(w, [[1, 0], [0.75, 0.25], [0.5, 0.5], [0.25, 0.75], [0, 1]])
    for T, n in ((3, 100), (4, 30), (5, 7)):
        w = simplex_lattice(T, n)
        m = next(m for m in itertools.count(1) if math.comb(m + T - 1, T - 1) >= n)
        assert w.shape == (math.comb(m + T - 1, T - 1), T)
        np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-15)
        assert np.all(w >= 0)
        assert len({tuple(np.round(r * m).astype(int)) for r in w}) == len(w)  # distinct lattice points
    with pytest.raises(ValueError, match="n_points"):
        simplex_lattice(40, 10**6)


@pytest.fixture(scope="module")
def fits():
    runs = mixlaw.datasets.slimpajama()
    return mixlaw.fit(runs, "additive", n_starts=8, threads=2, progress=False)


def test_front_of_two_targets(fits):
    front = mixlaw.pareto_front(fits, N=7e9, D=1.4e11, targets=["github", "openhermes"], n_points=41)
    assert len(front) == 41 and front.success
    L = front.losses
    # No point of the front is dominated (NumPy, exact comparison), and the flags agree.
    assert not dominated_brute_force(L[front.efficient]).any()
    assert np.all(front.efficient >= ~dominated_brute_force(L))
    # Weighted sums at global minima: more weight on github never raises its loss nor
    # lowers openhermes'.
    order = np.argsort(front.target_weights[:, 0])
    assert np.all(np.diff(L[order, 0]) <= 1e-9)
    assert np.all(np.diff(L[order, 1]) >= -1e-9)
    # Each point: the certificate recomputed in NumPy for its own weights, and its losses
    # from the NumPy oracle.
    flist = list(fits.values())
    names = [f.target for f in flist]
    for p in range(len(front)):
        w = np.zeros(len(flist))
        w[names.index("github")], w[names.index("openhermes")] = front.target_weights[p]
        F, G = mixture_value_grad(flist, 7e9, 1.4e11, w, front.h[p])
        gap = float(G @ front.h[p]) - linear_minimum(G, np.zeros(7), np.ones(7))
        assert gap <= 1e-10 + 1e-13 * np.abs(G).max()
        for j, t in enumerate(front.targets):
            e = np.zeros(len(flist))
            e[names.index(t)] = 1.0
            assert front.losses[p, j] == pytest.approx(mixture_value_grad(flist, 7e9, 1.4e11, e, front.h[p])[0],
                                                       rel=1e-12)


def test_front_points_are_the_single_problems(fits):
    # One start: start 0 does not depend on the problem's index in the batch (the random
    # starts do), so a point is the problem solved alone to the last bit.
    front = mixlaw.pareto_front(fits, N=7e9, D=1.4e11, targets=["c4", "github", "arxiv"], n_points=10, n_starts=1)
    assert front.target_weights.shape == (10, 3)  # C(3 + 2, 2) = 10
    for p in range(10):
        w = dict(zip(front.targets, front.target_weights[p]))
        alone = mixlaw.optimize_mixture(fits, N=7e9, D=1.4e11, weights=w, n_starts=1)
        np.testing.assert_array_equal(front.h[p], alone.x)
    df = front.to_pandas()
    assert list(df.columns[:6]) == ["w[c4]", "w[github]", "w[arxiv]", "loss[c4]", "loss[github]", "loss[arxiv]"]
    assert len(df) == 10


def test_front_with_bounds_and_regularisation(fits):
    runs = mixlaw.datasets.slimpajama()
    front = mixlaw.pareto_front(fits, N=7e9, D=1.4e11, targets=["github", "openhermes"], n_points=7,
                                bounds={"github": (0.0, 0.3)}, prior=runs, kl=0.01)
    assert front.success
    assert np.all(front.h[:, list(front.domains).index("github")] <= 0.3 + 1e-12)
    assert front.grid.unregularised is not None


def test_explicit_target_weights_are_normalised(fits):
    front = mixlaw.pareto_front(fits, N=7e9, D=1.4e11, targets=["github", "openhermes"],
                                target_weights=[[2, 2], [1, 3]])
    np.testing.assert_allclose(front.target_weights, [[0.5, 0.5], [0.25, 0.75]])


@pytest.mark.parametrize("kwargs, match", [
    (dict(targets=["github"]), "targets: a front needs at least two targets"),
    (dict(targets=["github", "nope"]), r"targets: unknown target\(s\) \['nope'\]"),
    (dict(targets=["github", "github"]), "targets: duplicate"),
    (dict(targets="github"), "targets: expected a sequence"),
    (dict(target_weights=[[1, 0]]), r"target_weights: expected shape \(n, 8\)"),
    (dict(targets=["c4", "github"], target_weights=[[1, -1]]), "target_weights: every row"),
    (dict(weights={"c4": 1.0}), "weights: pareto_front sets the target weights"),
    (dict(n_points=0), "n_points"),
])
def test_bad_arguments_name_the_argument(fits, kwargs, match):
    with pytest.raises(ValueError, match=match):
        mixlaw.pareto_front(fits, N=7e9, D=1.4e11, **kwargs)


def test_one_budget_only(fits):
    with pytest.raises(ValueError, match="N: pareto_front takes one budget"):
        mixlaw.pareto_front(fits, N=[7e9, 1e10], D=1.4e11)


def test_plot(fits):
    pytest.importorskip("matplotlib")
    front = mixlaw.pareto_front(fits, N=7e9, D=1.4e11, targets=["github", "openhermes"], n_points=11)
    ax = front.plot()
    assert ax.get_xlabel() == "predicted loss, github" and ax.get_ylabel() == "predicted loss, openhermes"
    with pytest.raises(ValueError, match="x: 'c4' is not a target"):
        front.plot(x="c4")
