"""Evaluation protocols, comparison tables and the bootstrap (issue 5)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mixlaw
from mixlaw import datasets, evaluate


@pytest.fixture(scope="module")
def runs():
    return datasets.slimpajama()


def test_protocols_split_as_documented(runs):
    (name, fit_runs, eval_runs), = evaluate.SizeSplit().splits(runs)
    assert set(np.unique(eval_runs.N)) == {2.718e9} and 2.718e9 not in set(np.unique(fit_runs.N))
    (_, a, b), = evaluate.HeldOutMixtures(n_fit=25, seed=1).splits(runs)
    assert np.unique(a.H, axis=0).shape[0] == 25
    assert not set(map(tuple, np.unique(a.H, axis=0))) & set(map(tuple, np.unique(b.H, axis=0)))
    (_, a, b), = evaluate.TokenSplit(0.5).splits(runs)
    assert len(a) + len(b) == len(runs) and a.D.max() <= b.D.max()
    loso = evaluate.LeaveOneSizeOut().splits(runs)
    assert len(loso) == 6 and all(len(f) + len(e) == len(runs) for _, f, e in loso)
    (_, tr, ev), = evaluate.PaperSplit().splits(runs)
    assert (len(tr), len(ev)) == (1374, 36)
    with pytest.raises(ValueError, match="n_fit"):
        evaluate.HeldOutMixtures(n_fit=0).splits(runs)


def test_compare_gives_a_tidy_table(runs):
    table = evaluate.compare(runs, ["additive", "simple"], evaluate.PaperSplit(), targets=["c4", "book"],
                             n_starts=8)
    assert isinstance(table, pd.DataFrame) and len(table) == 4
    assert list(table.columns[:4]) == ["split", "law", "target", "n_params"]
    assert set(table["law"]) == {"additive", "simple"}
    for r in table.to_dict("records"):
        assert r["n_fit"] > 1000 and r["n_eval"] == 36 and r["train_mre"] < 1 and r["eval_mre"] < 3
        assert r["n_params"] == mixlaw.law(r["law"], 7).n_params


def simulated_runs(rng, truth, law):
    # 32 runs (one per model size) of 5 checkpoints: the bootstrap resamples whole runs, so it
    # needs enough of them for its percentiles to mean something.
    sizes = np.geomspace(3e7, 1e9, 32)
    N = np.repeat(sizes, 5)
    D = N * np.tile(np.geomspace(5, 80, 5), sizes.size)
    y = law.predict(truth, N, D) * (1 + 0.002 * rng.standard_normal(N.size))
    return mixlaw.load_runs({"model_size": N, "n_tokens": D, "sim_loss": y}, weights=[])


def test_bootstrap_intervals_cover_planted_parameters():
    # 100 simulated data sets from a planted law; a 90% interval should cover the truth in
    # roughly 90% of them (80-97% accepted: finite-sample bootstrap, 100 repetitions).
    law = mixlaw.law("chinchilla", n_scale=1, d_scale=1)  # the truth is in natural units
    truth = {"E": 1.8, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.37}
    rng = np.random.default_rng(123)
    covered = {n: 0 for n in truth}
    reps = 100
    for rep in range(reps):
        runs = simulated_runs(rng, truth, law)
        res = evaluate.bootstrap(runs, "chinchilla", n_boot=100, seed=rep, n_starts=2, loss="mse",
                                 n_scale=1, d_scale=1)
        ci = res.intervals("sim")
        for n, v in truth.items():
            covered[n] += ci[n][0] <= v <= ci[n][1]
    rates = {n: c / reps for n, c in covered.items()}
    assert all(0.80 <= r <= 0.97 for r in rates.values()), rates


def test_bootstrap_is_thread_invariant_and_gives_mixture_intervals(runs):
    train, _ = mixlaw.protocols.slimpajama_paper_split(runs)
    a = evaluate.bootstrap(train, "additive", targets=["c4", "book"], n_boot=6, n_starts=2, threads=1)
    b = evaluate.bootstrap(train, "additive", targets=["c4", "book"], n_boot=6, n_starts=2, threads=2)
    assert np.array_equal(a.samples["c4"], b.samples["c4"], equal_nan=True)
    ci = a.intervals("c4")
    assert ci["E"][0] <= ci["E"][1]
    lo, hi = a.predict_interval("c4", N=np.array([2.7e9]), D=np.array([5e10]), H=train.H[:1])
    assert lo[0] <= hi[0]
    mix = a.mixture_interval(N=2.7e9, D=5e10)
    assert set(mix) == set(train.domains) | {"estimate", "level"} and mix["level"] == a.level
    for d in train.domains:
        assert 0 <= mix[d][0] <= mix[d][1] <= 1
    with pytest.raises(ValueError, match="n_boot"):
        evaluate.bootstrap(train, "additive", targets="c4", n_boot=1)
