"""One point where one point is meant (issue 22): scalars N, D and one mixture (k,) broadcast
in predictions and loss intervals; expected values from tests/numpy_oracle.py on explicit
arrays, and from per-resample predictions for intervals."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import mixlaw
from mixlaw import datasets
from numpy_oracle import oracle_predict


@pytest.fixture(scope="module")
def law_x():
    L = mixlaw.law("joint", 4)
    x = np.random.default_rng(0).uniform(L.init_lower, L.init_upper)
    return L, x


def test_one_point_is_a_float_equal_to_the_oracle(law_x):
    L, x = law_x
    h = np.array([0.1, 0.2, 0.3, 0.4])
    got = L.predict(x, 7e9, 1.4e11, h)
    assert isinstance(got, float)
    want = oracle_predict(L, x, np.array([7e9]), np.array([1.4e11]), h[None, :])[0]
    np.testing.assert_allclose(got, want, rtol=1e-13)


@pytest.mark.parametrize("case", ["N array", "D array", "H rows", "N and H"])
def test_scalars_and_one_mixture_broadcast_against_arrays(law_x, case):
    L, x = law_x
    N = np.array([1e8, 1e9, 1e10])
    D = np.array([2e9, 2e10, 2e11])
    Hm = np.random.default_rng(1).dirichlet(np.ones(4), 3)
    given, explicit = {
        "N array": ((N, 3e10, Hm[0]), (N, np.full(3, 3e10), np.tile(Hm[0], (3, 1)))),
        "D array": ((5e8, D, Hm[0]), (np.full(3, 5e8), D, np.tile(Hm[0], (3, 1)))),
        "H rows": ((5e8, 3e10, Hm), (np.full(3, 5e8), np.full(3, 3e10), Hm)),
        "N and H": ((N, 3e10, Hm), (N, np.full(3, 3e10), Hm)),
    }[case]
    got = L.predict(x, *given)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, oracle_predict(L, x, *explicit), rtol=1e-13)


@pytest.mark.parametrize("kwargs, match", [
    (dict(N=[1e9, 2e9], D=[1e10, 1e10, 1e10], H=[0.25] * 4), "D: expected 2 values"),
    (dict(N=1e9, D=1e10, H=[0.5, 0.5]), "H: expected 4 columns"),
    (dict(N=None, D=1e10, H=[0.25] * 4), "N: the .* law has a model-size term, so it needs N"),
    (dict(N="many", D=1e10, H=[0.25] * 4), "N: cannot be converted"),
    (dict(N=1e9, D=1e10, H=[0.5, 0.6, 0.0, 0.0]), "H"),
])
def test_bad_points_still_name_the_argument(law_x, kwargs, match):
    L, x = law_x
    with pytest.raises(ValueError, match=match):
        L.predict(x, **kwargs)


@pytest.fixture(scope="module")
def boot():
    runs = datasets.slimpajama()
    return mixlaw.bootstrap(runs, "additive", targets=["c4", "book"], n_boot=5, n_starts=2, threads=2)


def test_loss_interval_at_one_point(boot):
    f = boot.fits["c4"]
    h = dict(zip(f.domains, np.full(7, 1 / 7)))
    lo, hi = boot.predict_interval("c4", N=7e9, D=1.4e11, H=dict(reversed(list(h.items()))))
    preds = [oracle_predict(f.law, s, np.array([7e9]), np.array([1.4e11]), np.full((1, 7), 1 / 7))[0]
             for s in boot.samples["c4"]]
    want = np.quantile(preds, boot._q())
    np.testing.assert_allclose([lo, hi], want, rtol=1e-12)
    assert np.ndim(lo) == 0 and np.ndim(hi) == 0


def test_mixture_interval_with_the_losses_at_the_estimate(boot):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixlaw.ExtrapolationWarning)
        out = boot.mixture_interval(N=7e9, D=1.4e11, losses=True)
        plain = boot.mixture_interval(N=7e9, D=1.4e11)
    assert "losses" not in plain and set(out["losses"]) == {"c4", "book"}
    for t, (lo, hi) in out["losses"].items():
        np.testing.assert_allclose((lo, hi), boot.predict_interval(t, N=7e9, D=1.4e11, H=out["estimate"]), rtol=0)
        assert lo <= hi

