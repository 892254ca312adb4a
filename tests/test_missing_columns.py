"""Tables without model sizes or token counts (issue 22): reduced and baseline laws are
fitted, evaluated and optimised without N or D, and a law that needs a missing column
says so instead of reading a placeholder."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

import mixlaw
from mixlaw import evaluate
from numpy_oracle import oracle_predict

DOMAINS = ["web", "code", "books", "wiki"]
T_TRUE = np.array([0.3, -0.5, 0.1, 0.2])


def _mixtures(n: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(len(DOMAINS)), n)


def _runs_without_N_D() -> mixlaw.Runs:
    H = _mixtures()
    noise = np.random.default_rng(1).normal(0.0, 1e-3, H.shape[0])
    y = 2.0 + np.exp(H @ T_TRUE) + noise  # Ye et al.'s law, dml_exp
    return mixlaw.Runs(None, None, H, domains=DOMAINS, targets={"val": y})


def _runs_without_D(N_given: bool = True) -> mixlaw.Runs:
    H = np.tile(_mixtures(10), (4, 1))
    N = np.repeat([1e8, 2e8, 4e8, 8e8], 10)
    y = 2.0 + 5.0 * (N / 1e6) ** -0.3 + 1.0 / (H @ np.array([1.0, 2.0, 0.5, 1.5]))
    return mixlaw.Runs(N if N_given else None, None, H, domains=DOMAINS, targets={"val": y})


def test_runs_without_N_and_D_say_so_and_round_trip():
    runs = _runs_without_N_D()
    assert not runs.has_N and not runs.has_D and len(runs) == 40
    assert np.isnan(runs.N).all() and np.isnan(runs.D).all()
    assert "no N" in repr(runs) and "no D" in repr(runs)
    assert runs.model_sizes.size == 0
    cols = runs.to_dict()
    assert "model_size" not in cols and "n_tokens" not in cols
    again = mixlaw.load_runs(runs.to_pandas(), N=None, D=None, run="run")
    assert not again.has_N and not again.has_D
    np.testing.assert_array_equal(again.H, runs.H)
    np.testing.assert_array_equal(again.targets["val"], runs.targets["val"])
    copy = pickle.loads(pickle.dumps(runs))
    assert not copy.has_N and len(copy) == len(runs)
    N, D, H, y = runs.target("val")
    assert N is None and D is None and H.shape == (40, 4)
    # a table with N keeps it
    assert _runs_without_D().has_N and not _runs_without_D().has_D


def test_loaders_read_tables_without_the_columns(tmp_path):
    runs = _runs_without_N_D()
    path = tmp_path / "mixtures.csv"
    runs.to_pandas().to_csv(path, index=False)
    wide = mixlaw.load_runs(path, N=None, D=None)
    assert not wide.has_N and len(wide) == 40
    np.testing.assert_allclose(wide.H, runs.H, rtol=1e-15)
    with pytest.raises(ValueError, match="N: no column 'model_size'"):
        mixlaw.load_runs(path)  # the default still asks for the column
    # long table without D: one record per run and target
    rows = [{"run": f"r{i}", **{f"weight_{d}": h for d, h in zip(DOMAINS, runs.H[i])}, "metric": t, "loss": v}
            for i in range(len(runs)) for t, v in (("val", runs.targets["val"][i]), ("other", 1.0 + i))]
    import pandas as pd

    long = mixlaw.load_runs(pd.DataFrame(rows), N=None, D=None, run="run", target_column="metric")
    assert len(long) == 40 and set(long.target_names) == {"val", "other"}
    np.testing.assert_array_equal(long.targets["val"], runs.targets["val"])
    with pytest.raises(ValueError, match="dedup: .*token counts"):
        mixlaw.load_runs(path, N=None, D=None, dedup=True)
    with pytest.raises(ValueError, match="N: expected a column name or None"):
        mixlaw.load_runs(path, N=3, D=None)


def test_a_baseline_law_fits_without_N_and_D_and_matches_the_numpy_formula():
    runs = _runs_without_N_D()
    f = mixlaw.fit(runs, "dml_exp", progress=False)["val"]
    assert f.success
    assert "N" not in f.ranges and "D" not in f.ranges and "h" in f.ranges
    H = runs.H
    ones = np.ones(len(runs))
    expected = oracle_predict(f.law, f.x, ones, ones, H)  # the law reads neither N nor D
    np.testing.assert_allclose(f.predict(runs), expected, rtol=1e-12)
    np.testing.assert_allclose(f.law.predict(f.x, H=H), expected, rtol=1e-12)
    assert f.predict(H=dict(zip(DOMAINS, H[3]))) == pytest.approx(expected[3], rel=1e-12)
    np.testing.assert_allclose(np.asarray(f.x)[1:], T_TRUE, atol=0.02)  # close to the truth
    # saved and loaded without N and D ranges
    fits = mixlaw.fit(runs, "dml_exp", progress=False)
    again = mixlaw.load_fits(fits.to_json())
    assert "N" not in again["val"].ranges


def test_a_reduced_law_fits_the_same_without_the_column_it_drops():
    with_N = _runs_without_D(N_given=True)
    without_N = _runs_without_D(N_given=False)
    a = mixlaw.fit(with_N, "additive", n_term=False, d_term=False, progress=False)["val"]
    b = mixlaw.fit(without_N, "additive", n_term=False, d_term=False, progress=False)["val"]
    np.testing.assert_array_equal(np.asarray(a.x), np.asarray(b.x))  # the law never reads N
    assert a.fun == b.fun
    c = mixlaw.fit(with_N, "additive", d_term=False, progress=False)["val"]
    assert c.train["mre"] < 0.05 and "D" not in c.ranges and "N" in c.ranges
    np.testing.assert_allclose(c.law.predict(c.x, N=with_N.N, H=with_N.H),
                               oracle_predict(c.law, c.x, with_N.N, np.ones(len(with_N)), with_N.H), rtol=1e-12)


def test_a_law_that_needs_a_missing_column_names_it():
    runs = _runs_without_N_D()
    with pytest.raises(ValueError, match=r"runs: the additive law needs the model sizes N.*n_term=False"):
        mixlaw.fit(runs, "additive", progress=False)
    with pytest.raises(ValueError, match=r"runs: the additive law needs the token counts D.*d_term=False"):
        mixlaw.fit(runs, "additive", n_term=False, progress=False)
    law = mixlaw.law("additive", 4)
    p = np.ones(law.n_params)
    with pytest.raises(ValueError, match="N: the .* law has a model-size term"):
        law.predict(p, D=1e9, H=runs.H)
    with pytest.raises(ValueError, match="D: the .* law has a token term"):
        law.jacobian(p, N=1e8, H=runs.H)
    for split, col in ((evaluate.SizeSplit(), "model sizes N"), (evaluate.LeaveOneSizeOut(), "model sizes N"),
                       (evaluate.TokenSplit(), "token counts D")):
        with pytest.raises(ValueError, match=f"runs: .* needs the {col}"):
            split.splits(runs)
    with pytest.raises(ValueError, match="model_size: selecting by model size needs the model sizes"):
        runs.where(model_size=1e8)
    with pytest.raises(ValueError, match="min_tokens: selecting by token count needs the token counts"):
        runs.where(min_tokens=1e9)


def test_mixtures_without_a_budget_for_laws_without_those_terms():
    fits = mixlaw.fit(_runs_without_N_D(), "dml_exp", progress=False)
    with pytest.warns(mixlaw.ExtrapolationWarning):
        r = mixlaw.optimize_mixture(fits)
    assert np.isnan(r.N) and np.isnan(r.D) and "any N and D" in repr(r)
    assert r.success
    # the optimum of E + exp(t . h) on the simplex is the vertex of the smallest t
    assert max(r.h, key=r.h.get) == DOMAINS[int(np.argmin(np.asarray(fits["val"].x)[1:]))]
    with pytest.raises(ValueError, match="D: token caps"):
        mixlaw.optimize_mixture(fits, available_tokens={"web": 1e9})
    fits_N = mixlaw.fit(_runs_without_D(), "additive", d_term=False, progress=False)
    with pytest.raises(ValueError, match="N: the additive law has a model-size term"):
        mixlaw.optimize_mixture(fits_N)
    with pytest.warns(mixlaw.ExtrapolationWarning):
        r = mixlaw.optimize_mixture(fits_N, N=7e9)
    assert r.N == 7e9 and np.isnan(r.D) and "N=7e+09" in repr(r) and "D=" not in repr(r)
    boot = mixlaw.bootstrap(_runs_without_N_D(), "dml_exp", n_boot=4, progress=False)
    with pytest.warns(mixlaw.ExtrapolationWarning):
        iv = boot.mixture_interval(losses=True)
    lo, hi = iv["losses"]["val"]
    assert lo <= hi


def test_residual_panel_without_model_sizes():
    pytest.importorskip("matplotlib")
    from mixlaw import plots

    runs = _runs_without_N_D()
    f = mixlaw.fit(runs, "dml_exp", progress=False)["val"]
    ax = plots.observed_vs_predicted(f, runs)
    assert ax.figure.axes[1].get_xlabel() == "predicted loss"


def test_cli_fits_and_optimizes_a_table_without_N_and_D(tmp_path):
    path = tmp_path / "mixtures.csv"
    _runs_without_N_D().to_pandas().to_csv(path, index=False)
    out = tmp_path / "fits.json"
    cli = [sys.executable, "-m", "mixlaw.cli"]
    p = subprocess.run(cli + ["fit", str(path), "--law", "dml_exp", "--n-column", "none", "--d-column", "none",
                              "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(cli + ["optimize", str(out), "--json"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    mix = json.loads(p.stdout)
    assert mix["N"] is None and mix["D"] is None and abs(sum(mix["h"].values()) - 1) < 1e-12
    p = subprocess.run(cli + ["fit", str(path), "--law", "additive", "--n-column", "none", "--d-column", "none",
                              "--quiet"], capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "n_term=False" in p.stderr
