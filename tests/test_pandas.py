"""pandas out (issue 22): ``Runs.to_pandas``, ``Fits.to_pandas`` with parameters named by
domain, ``Fits.predict`` as a DataFrame, ``MixtureGrid.to_pandas``; Parquet in. Expected
values come from the objects' own arrays by position, read independently of the naming."""
from __future__ import annotations

import sys
import warnings

import numpy as np
import pandas as pd
import pytest

import mixlaw
from mixlaw import datasets, load_runs


@pytest.fixture(scope="module")
def runs():
    return datasets.slimpajama()


@pytest.fixture(scope="module")
def fits(runs):
    return mixlaw.fit(runs, "additive", targets=["c4", "book"], n_starts=2, threads=2)


def test_runs_round_trip_through_a_dataframe(runs):
    df = runs.to_pandas()
    assert isinstance(df, pd.DataFrame) and len(df) == len(runs)
    assert list(df.columns[:2]) == ["model_size", "n_tokens"]
    back = load_runs(df, run="run")
    np.testing.assert_array_equal(back.N, runs.N)
    np.testing.assert_array_equal(back.D, runs.D)
    np.testing.assert_array_equal(back.H, runs.H)
    assert back.domains == runs.domains and back.target_names == runs.target_names
    for t in runs.target_names:
        np.testing.assert_array_equal(back.targets[t], runs.targets[t])


def test_parameters_are_named_by_domain(runs, fits):
    f = fits["c4"]
    named = f.domain_params
    assert list(named)[:5] == ["E", "A", "B", "alpha", "beta"]
    for i, d in enumerate(runs.domains):
        assert named[f"C[{d}]"] == f.x[f.law.param_names.index(f"C_{i + 1}")]
        assert named[f"gamma[{d}]"] == f.x[f.law.param_names.index(f"gamma_{i + 1}")]
    with pytest.raises(ValueError, match="domains: .* has 7 domains, got 2 names"):
        f.law.named_params(["a", "b"])
    assert f.law.named_params() == f.law.param_names


def test_names_follow_the_domains_when_the_columns_are_reordered(runs):
    # The same runs with the weight columns in reverse order: each domain's parameters
    # keep their values under their names (the flat C_i move with the columns).
    d = runs.to_dict()
    order = list(runs.domains)[::-1]
    cols = {"model_size": d["model_size"], "n_tokens": d["n_tokens"], "run": d["run"], "c4_loss": d["c4_loss"]}
    cols.update({f"weight_{x}": d[f"weight_{x}"] for x in order})
    rev = load_runs(cols, run="run")
    assert rev.domains == tuple(order)
    a = mixlaw.fit(runs, "additive", targets="c4", n_starts=2, threads=2)["c4"].domain_params
    b = mixlaw.fit(rev, "additive", targets="c4", n_starts=2, threads=2)["c4"].domain_params
    assert set(a) == set(b)
    np.testing.assert_allclose([b[n] for n in a], list(a.values()), rtol=1e-6)


def test_fits_to_pandas_one_row_per_target(runs, fits):
    df = fits.to_pandas()
    assert list(df.index) == ["c4", "book"] and df.index.name == "target"
    for t, f in fits.items():
        row = df.loc[t]
        assert row["law"] == "additive" and row["fun"] == f.fun and row["success"] == f.success
        assert row["status"] == f.status and row["train_mre"] == f.train["mre"]
        for name, v in f.domain_params.items():
            assert row[name] == v
    ev = fits.to_pandas(eval_runs=runs)
    np.testing.assert_allclose(ev["eval_mre"], [fits[t].score(runs)["mre"] for t in fits])


def test_fits_predict_is_aligned_to_the_runs(runs, fits):
    df = fits.predict(runs)
    assert list(df.columns) == ["c4", "book"] and len(df) == len(runs)
    for t, f in fits.items():
        np.testing.assert_array_equal(df[t].to_numpy(), f.law.predict(f.x, runs.N, runs.D, runs.H))


def test_mixture_grid_tidy_frame(fits):
    N = np.array([1e9, 7e9])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixlaw.ExtrapolationWarning)
        g = mixlaw.optimize_mixture(fits, N=N, D=20 * N)
    df = g.to_pandas()
    k = len(g.domains)
    assert len(df) == 2 * k
    wide = df.pivot(index="budget", columns="domain", values="weight")[list(g.domains)]
    np.testing.assert_array_equal(wide.to_numpy(), g.h)
    np.testing.assert_array_equal(df.groupby("budget")["N"].first().to_numpy(), N)
    for j, t in enumerate(g.targets):
        np.testing.assert_array_equal(df.groupby("budget")[f"loss[{t}]"].first().to_numpy(), g.losses[:, j])
    np.testing.assert_array_equal(df["outside_data"].to_numpy(dtype=bool), g.outside_data.reshape(-1))


def test_parquet_round_trip(tmp_path, runs):
    pytest.importorskip("pyarrow")
    p = tmp_path / "runs.parquet"
    runs.to_pandas().to_parquet(p)
    back = load_runs(p, run="run")
    np.testing.assert_array_equal(back.H, runs.H)
    np.testing.assert_array_equal(back.targets["c4"], runs.targets["c4"])


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    p = tmp_path / "runs.parquet"
    p.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"mixlaw\[parquet\]"):
        load_runs(p)


def test_domain_names_are_accepted_for_bounds_and_ties(runs):
    # gamma[book] is gamma_2 (book is the second domain): the same fit either way.
    assert runs.domains[1] == "book"
    L = mixlaw.law("additive", 7)
    assert L.flat_name("gamma[book]", runs.domains) == "gamma_2"
    assert L.flat_name("gamma_[12]", runs.domains) == "gamma_[12]"  # a glob stays a glob
    assert L.flat_name("gamma[nope]", runs.domains) == "gamma[nope]"
    kw = dict(targets="c4", n_starts=2, seed=4, threads=2, progress=False)
    a = mixlaw.fit(runs, "additive", bounds={"gamma[book]": (0.0, 0.3)}, tie={"g": ["gamma[c4]", "gamma[arxiv]"]},
                   **kw)["c4"]
    b = mixlaw.fit(runs, "additive", bounds={"gamma_2": (0.0, 0.3)}, tie={"g": ["gamma_3", "gamma_1"]}, **kw)["c4"]
    np.testing.assert_array_equal(a.x, b.x)
    assert a.domain_params["gamma[book]"] <= 0.3
    assert a.domain_params["gamma[c4]"] == a.domain_params["gamma[arxiv]"]
    with pytest.raises(ValueError, match="bounds"):
        mixlaw.fit(runs, "additive", bounds={"gamma[nope]": (0.0, 0.3)}, **kw)
