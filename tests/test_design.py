"""Initial designs of mixtures (issue 25, first part): rows on the simplex, the constraints
they were asked to meet, and spread measured against independent Dirichlet draws."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import mixlaw
from mixlaw.design import initial_design, initial_mixtures


def min_distance(H: np.ndarray) -> float:
    """The smallest total-variation distance between two rows."""
    D = 0.5 * np.abs(H[:, None, :] - H[None, :, :]).sum(axis=2)
    np.fill_diagonal(D, np.inf)
    return float(D.min())


@pytest.mark.parametrize("k, n", [(3, 10), (7, 24), (17, 64), (64, 40)])
def test_rows_are_mixtures_and_spread_more_than_independent_draws(k, n):
    H = initial_mixtures(n, k, seed=1)
    assert H.shape == (n, k)
    assert np.all(H >= 0) and np.abs(H.sum(axis=1) - 1).max() <= 1e-12
    # Maximin: the closest pair is farther apart than in any of 20 independent Dirichlet(1) designs.
    rng = np.random.default_rng(0)
    independent = [min_distance(rng.dirichlet(np.ones(k), n)) for _ in range(20)]
    assert min_distance(H) > max(independent)
    # Every prefix is itself a design: the first half is at least as spread as the whole.
    assert min_distance(H[: n // 2]) >= min_distance(H)


def test_seed_determinism_and_zero_share():
    a, b = initial_mixtures(50, 7, seed=3), initial_mixtures(50, 7, seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, initial_mixtures(50, 7, seed=4))
    none = initial_mixtures(50, 7, zeros=0.0, seed=3)
    assert np.all(none > 0)
    # A larger Dirichlet concentration keeps the mixtures away from the corners.
    assert initial_mixtures(50, 7, zeros=0.0, alpha=20.0).max() < initial_mixtures(50, 7, zeros=0.0).max()
    some = initial_mixtures(200, 7, zeros=0.3, seed=3)
    assert 0.2 < np.mean(some == 0) < 0.6 and np.all((some > 0).any(axis=1))


def test_bounds_and_groups():
    names = ["a", "b", "c", "d"]
    H = initial_mixtures(30, names, bounds={"a": (0.1, 0.4), "d": (0.0, 0.2)}, seed=5)
    assert np.all(H[:, 0] >= 0.1 - 1e-12) and np.all(H[:, 0] <= 0.4 + 1e-12) and np.all(H[:, 3] <= 0.2 + 1e-12)
    np.testing.assert_allclose(H.sum(axis=1), 1.0, atol=1e-12)
    # Groups: with zeros off, each group's share follows a Dirichlet(1) over 2 groups, so
    # both groups get every share from ~0 to ~1 across the design.
    G = initial_mixtures(40, names, groups={"x": ["a", "b"], "y": ["c", "d"]}, zeros=0.0, seed=6)
    share = G[:, :2].sum(axis=1)
    assert share.min() < 0.1 and share.max() > 0.9


def test_design_table():
    table = initial_design(5, ["web", "code"], N=[1e8, 4e8], tokens_per_param=20, seed=2)
    assert list(table.columns) == ["run", "mixture", "N", "D", "compute", "w_web", "w_code"]
    assert len(table) == 10
    np.testing.assert_allclose(table["D"], 20 * table["N"])
    np.testing.assert_allclose(table["compute"], 6 * table["N"] * table["D"])
    # The same five mixtures at each size, and the table loads as runs once losses are added.
    w = table[["w_web", "w_code"]].to_numpy()
    np.testing.assert_array_equal(w[:5], w[5:])
    runs = mixlaw.load_runs(table.assign(loss=3.0), weights="w_*", N="N", D="D", targets="loss")
    assert runs.domains == ("web", "code") and len(runs) == 10
    explicit = initial_design(3, 2, N=[1e8, 2e8], D=[1e9, 5e9])
    np.testing.assert_array_equal(explicit["D"], np.repeat([1e9, 5e9], 3))


@pytest.mark.parametrize("call, match", [
    (lambda: initial_mixtures(0, 3), "n"),
    (lambda: initial_mixtures(5, 0), "domains"),
    (lambda: initial_mixtures(5, ["a", "a"]), "domains: 'a' appears twice"),
    (lambda: initial_mixtures(5, 3, zeros=1.0), r"zeros: expected a probability in \[0, 1\)"),
    (lambda: initial_mixtures(5, 3, alpha=0.0), "alpha"),
    (lambda: initial_mixtures(5, ["a", "b"], bounds={"z": (0, 1)}), "bounds: unknown domain 'z'"),
    (lambda: initial_mixtures(5, ["a", "b"], bounds={"a": (0.7, 1), "b": (0.6, 1)}),
     "bounds: the minimum weights sum to 1.3 > 1"),
    (lambda: initial_mixtures(5, ["a", "b"], bounds={"a": (0.6, 0.5)}), "bounds: domain 'a' has min 0.6 > max 0.5"),
    (lambda: initial_mixtures(5, ["a", "b"], groups={"x": ["a"]}), r"groups: domain\(s\) \['b'\] in no group"),
    (lambda: initial_mixtures(5, ["a", "b"], groups={"x": ["a", "b"], "y": ["b"]}), "more than one group"),
    (lambda: initial_design(5, 3, N=[]), "N: expected one or more"),
    (lambda: initial_design(5, 3, N=[1e8], D=[1e9, 2e9]), "D: expected 1 token counts"),
])
def test_bad_arguments_are_refused_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_command_line(tmp_path):
    out = tmp_path / "runs.csv"
    p = subprocess.run([sys.executable, "-m", "mixlaw.cli", "design", "initial", "--domains", "web,code,math",
                        "--mixtures", "6", "--sizes", "1e8,3e8", "--bounds", "code=0.05:0.5", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    table = pd.read_csv(out)
    assert len(table) == 12 and table["w_code"].between(0.05 - 1e-12, 0.5 + 1e-12).all()
    want = initial_design(6, ["web", "code", "math"], N=[1e8, 3e8], bounds={"code": (0.05, 0.5)})
    np.testing.assert_allclose(table[["w_web", "w_code", "w_math"]].to_numpy(),
                               want[["w_web", "w_code", "w_math"]].to_numpy(), rtol=1e-14)
    bad = subprocess.run([sys.executable, "-m", "mixlaw.cli", "design", "initial", "--mixtures", "6", "--sizes",
                          "1e8"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "--domains or --k" in bad.stderr
