"""Units and range (issue 21): tables that look like millions or billions warn and say how
to rescale; fits record the range of their data; predictions and optimal mixtures far
outside it say so, and ``within_data=True`` keeps the mixture inside the weights seen."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import mixlaw
from mixlaw import datasets

pd = pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def runs():
    return datasets.slimpajama()


@pytest.fixture(scope="module")
def small(runs):
    return runs.select(runs.N < 2e9)


@pytest.fixture(scope="module")
def fits(small):
    return mixlaw.fit(small, "additive", targets=["c4", "wikipedia"], n_starts=8, seed=0)


def test_runs_repr_shows_the_token_range(runs):
    text = repr(runs)
    assert f"D {runs.D.min() / 1e9:.4g}B..{runs.D.max() / 1e9:.4g}B" in text


def test_tokens_in_billions_warn_and_D_unit_rescales(runs):
    frame = pd.read_csv(datasets.path("slimpajama"))
    raw = mixlaw.load_runs(frame)
    frame["n_tokens"] = frame["n_tokens"] / 1e9
    with pytest.warns(mixlaw.UnitsWarning, match=r"D: the token counts are 1\.998\.\.103\.7.*D_unit=1e9") as rec:
        mixlaw.load_runs(frame)
    assert rec[0].filename == __file__  # points at the user's call
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed = mixlaw.load_runs(frame, D_unit=1e9)
    np.testing.assert_allclose(fixed.D, raw.D, rtol=1e-12)
    with pytest.warns(mixlaw.UnitsWarning, match=r"N: the model sizes are 122\.\.2718"):
        mixlaw.Runs(raw.N / 1e6, raw.D, raw.H, domains=raw.domains)
    for bad in (0, -1e9, float("nan"), "1e9", True):
        with pytest.raises(ValueError, match=r"^D_unit: "):
            mixlaw.load_runs(frame, D_unit=bad)


def test_fit_records_the_range_of_its_data(small, fits):
    f = fits["c4"]
    N, D, H, _ = small.target("c4")
    assert f.ranges["N"] == (N.min(), N.max())
    assert f.ranges["D"] == (D.min(), D.max())
    assert f.ranges["h"] == tuple((H[:, j].min(), H[:, j].max()) for j in range(small.k))


def test_predictions_far_outside_the_fitted_range_warn(small, fits):
    f = fits["c4"]
    H = small.H[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f.predict(N=np.array([7e9, 7e10]), D=np.array([1.4e11, 1.4e12]), H=H)  # ordinary extrapolation
    with pytest.warns(mixlaw.ExtrapolationWarning, match=r"D up to 1\.43e\+07x outside the fitted.*units"):
        f.predict(N=np.array([7e9, 7e9]), D=np.array([140.0, 140.0]), H=H)
    with pytest.warns(mixlaw.ExtrapolationWarning, match=r"N up to"):
        mixlaw.optimize_mixture(fits, N=7e15, D=1.4e11)


def test_optimal_mixture_reports_where_it_leaves_the_data(small, fits):
    lo, hi = small.H.min(axis=0), small.H.max(axis=0)  # independent: the table itself
    with pytest.warns(mixlaw.ExtrapolationWarning, match=r"leaves the range of weights seen"):
        free = mixlaw.optimize_mixture(fits, N=7e9, D=1.4e11)
    h = free.x
    outside = {d for j, d in enumerate(small.domains) if h[j] < lo[j] - 1e-6 or h[j] > hi[j] + 1e-6}
    assert outside and set(free.outside_data) == outside
    for d, (w, a, b) in free.outside_data.items():
        j = small.domains.index(d)
        assert (w, a, b) == (h[j], lo[j], hi[j])
    with warnings.catch_warnings():
        warnings.simplefilter("error", mixlaw.ExtrapolationWarning)
        kept = mixlaw.optimize_mixture(fits, N=7e9, D=1.4e11, within_data=True)
    assert kept.success and not kept.outside_data
    assert np.all(kept.x >= lo - 1e-9) and np.all(kept.x <= hi + 1e-9)
    assert kept.x.sum() == pytest.approx(1.0, abs=1e-12)
    assert kept.fun >= free.fun  # a smaller feasible set cannot do better
    # batched: the same per problem
    grid = mixlaw.optimize_mixture(fits, N=np.array([7e9, 7e9]), D=np.array([1.4e11, 1.4e11]), within_data=True)
    np.testing.assert_array_equal(grid.h[0], kept.x)
    assert not grid.outside_data.any()


def test_within_data_needs_fits_that_carry_their_range(fits):
    bare = mixlaw.Fit(**{**fits["c4"].__dict__, "ranges": {}})
    with pytest.raises(ValueError, match=r"^within_data: needs the weight range"):
        mixlaw.optimize_mixture(bare, N=7e9, D=1.4e11, within_data=True)
    with pytest.raises(ValueError, match=r"^within_data: expected True or False"):
        mixlaw.optimize_mixture(fits, N=7e9, D=1.4e11, within_data="yes")
    with pytest.raises(ValueError, match=r"^within_data, bounds: no mixture"):
        mixlaw.optimize_mixture(fits, N=7e9, D=1.4e11, within_data=True, bounds={"c4": (0.5, 1.0)})


def run_cli(*args):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "mixlaw.cli", *args], capture_output=True, text=True, timeout=600)


def test_cli_D_unit_and_within_data(tmp_path):
    frame = pd.read_csv(datasets.path("slimpajama"))
    frame = frame[frame["model_size"] < 2e9]
    frame["n_tokens"] = frame["n_tokens"] / 1e9
    csv = tmp_path / "billions.csv"
    frame.to_csv(csv, index=False)
    p = run_cli("fit", str(csv), "--target", "c4", "--n-starts", "4", "--out", str(tmp_path / "a.json"), "-q")
    assert p.returncode == 0 and "UnitsWarning" in p.stderr and "--D-unit 1e9" in p.stderr
    p = run_cli("fit", str(csv), "--D-unit", "1e9", "--target", "c4", "--n-starts", "4",
                "--out", str(tmp_path / "b.json"), "-q")
    assert p.returncode == 0 and "Warning" not in p.stderr, p.stderr
    fits = mixlaw.load_fits(tmp_path / "b.json")
    assert fits["c4"].ranges["D"][1] == pytest.approx(frame["n_tokens"].max() * 1e9)
    p = run_cli("optimize", str(tmp_path / "b.json"), "--N", "7e9", "--D", "1.4e11")
    assert p.returncode == 0 and "outside the fitting runs'" in p.stdout and "--within-data" in p.stdout
    p = run_cli("optimize", str(tmp_path / "b.json"), "--N", "7e9", "--D", "1.4e11", "--within-data", "--json")
    import json
    out = json.loads(p.stdout)
    assert p.returncode == 0 and out["outside_data"] == {} and out["success"]
    lo = frame[[c for c in frame.columns if c.startswith("weight_")]].min().to_numpy()
    assert min(out["h"].values()) >= lo.min() - 1e-9
