"""Grid searches (issue 7): one batched job, identical to single fits, to any chunking, to a
spawn process pool and to a Dask cluster; incremental results and resume."""
from __future__ import annotations

import concurrent.futures
import json
import multiprocessing

import numpy as np
import pytest

import mixlaw
from mixlaw import evaluate
from mixlaw import grid

pd = pytest.importorskip("pandas")

COLUMNS = ["law", "target", "seed", "split", "train_mre", "eval_mre", "objective", "status", "nit"]


@pytest.fixture(scope="module")
def runs():
    return mixlaw.datasets.slimpajama()


@pytest.fixture(scope="module")
def small_grid(runs):
    return grid(runs, ["additive", "joint"], evaluate.HeldOutMixtures(n_fit=20), seeds=[0, 1], targets=["c4", "book"],
                n_starts=4)


def same(a, b):
    pd.testing.assert_frame_equal(a[COLUMNS].reset_index(drop=True), b[COLUMNS].reset_index(drop=True))
    assert [list(p.values()) for p in a["params"]] == [list(p.values()) for p in b["params"]]


def test_rows_are_the_single_fits(runs, small_grid):
    assert len(small_grid) == 2 * 2 * 2
    assert set(small_grid.columns) >= {"law", "target", "protocol", "seed", "train_mre", "eval_mre", "train_r2",
                                        "n_params", "params", "objective", "fit_seconds"}
    for _, row in small_grid.iterrows():
        (_, fit_runs, eval_runs), = evaluate.HeldOutMixtures(n_fit=20, seed=row["seed"]).splits(runs)
        f = mixlaw.fit(fit_runs, row["law"], targets=[row["target"]], n_starts=4)[row["target"]]
        assert f.params == row["params"]
        assert f.fun == row["objective"]
        assert f.score(eval_runs)["mre"] == row["eval_mre"]
    # the nesting guarantee holds cell by cell
    g = small_grid.set_index(["law", "target", "seed"])
    for t in ("c4", "book"):
        for s in (0, 1):
            assert g.loc[("joint", t, s), "objective"] <= g.loc[("additive", t, s), "objective"]


def test_screening_options_reach_the_fits(runs):
    # the issue-3 screening of starts is a fit option like the others
    kw = dict(n_starts=12, screen_iter=15, screen_keep=3)
    df = grid(runs, ["additive"], evaluate.PaperSplit(), targets=["c4"], **kw)
    (_, fit_runs, _), = evaluate.PaperSplit().splits(runs)
    f = mixlaw.fit(fit_runs, "additive", targets=["c4"], **kw)["c4"]
    assert f.params == df["params"][0] and f.fun == df["objective"][0]
    plain = mixlaw.fit(fit_runs, "additive", targets=["c4"], n_starts=12)["c4"]
    assert np.any(f.starts_status == -3) and not np.array_equal(f.starts_fun, plain.starts_fun)


def test_chunking_and_resume_do_not_change_results(runs, small_grid, tmp_path):
    chunked = grid(runs, ["additive", "joint"], evaluate.HeldOutMixtures(n_fit=20), seeds=[0, 1],
                   targets=["c4", "book"], n_starts=4, chunk_size=1)
    same(small_grid, chunked)
    out = tmp_path / "grid.jsonl"
    calls = []
    part = grid(runs, ["additive", "joint"], evaluate.HeldOutMixtures(n_fit=20), seeds=[0], targets=["c4", "book"],
                n_starts=4, out=out, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (4, 4) and len(out.read_text().splitlines()) == 4
    calls.clear()
    full = grid(runs, ["additive", "joint"], evaluate.HeldOutMixtures(n_fit=20), seeds=[0, 1], targets=["c4", "book"],
                n_starts=4, out=out, progress=lambda done, total: calls.append((done, total)))
    # the 4 finished cells were read back, not recomputed (with out=, local jobs are small: the
    # first reports at least 4 + 1 cells)
    assert calls[-1] == (8, 8) and calls[0][0] > 4
    assert len(out.read_text().splitlines()) == 8
    same(small_grid, full)
    assert all(json.loads(line)["cell_key"] for line in out.read_text().splitlines())
    same(part, full[full["seed"] == 0])


def test_spawn_process_pool_gives_the_same_table(runs, small_grid):
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=2, mp_context=ctx) as ex:
        pooled = grid(runs, ["additive", "joint"], evaluate.HeldOutMixtures(n_fit=20), seeds=[0, 1],
                      targets=["c4", "book"], n_starts=4, executor=ex, threads=1)
    same(small_grid, pooled)


def test_dask_local_cluster_gives_the_same_table(runs, small_grid):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        on_dask = grid(runs, ["additive", "joint"], evaluate.HeldOutMixtures(n_fit=20), seeds=[0, 1],
                       targets=["c4", "book"], n_starts=4, executor=client, threads=1)
    same(small_grid, on_dask)


def test_budgets_give_optimal_mixtures_per_group(runs):
    df = grid(runs, {"additive": "additive"}, evaluate.PaperSplit(), n_starts=4, budgets=[(1e9, 2e10), (3e9, 6e10)])
    mixes = df["mixtures"].iloc[0]
    assert len(mixes) == 2 and all(abs(sum(m["h"].values()) - 1) < 1e-12 and m["gap"] < 1e-8 for m in mixes)
    # additive law: the optimal mixture does not move with the budget
    np.testing.assert_allclose(list(mixes[0]["h"].values()), list(mixes[1]["h"].values()), atol=1e-7)
    assert all(len(m) == 2 for m in df["mixtures"])  # every target of the group shares it
    # the same mixtures as plain columns, h[<domain>]@<budget>
    for b in range(2):
        for d, v in mixes[b]["h"].items():
            assert (df[f"h[{d}]@{b}"] == v).all()
        assert (df[f"objective@{b}"] == mixes[b]["objective"]).all() and (df[f"gap@{b}"] == mixes[b]["gap"]).all()


def test_bad_arguments_are_named(runs):
    with pytest.raises(ValueError, match="targets"):
        grid(runs, ["additive"], evaluate.PaperSplit(), targets=["nope"])
    with pytest.raises(ValueError, match="laws"):
        grid(runs, ["nope"], evaluate.PaperSplit())
    with pytest.raises(ValueError, match="fit_options"):
        grid(runs, ["additive"], evaluate.PaperSplit(), n_start=3)
    with pytest.raises(ValueError, match="chunk_size"):
        grid(runs, ["additive"], evaluate.PaperSplit(), chunk_size=0)
    with pytest.raises(ValueError, match="budgets"):
        grid(runs, ["additive"], evaluate.PaperSplit(), budgets=[(1e9, -1)])
    with pytest.raises(TypeError, match="protocols"):
        grid(runs, ["additive"], [object()])
    with pytest.raises(ValueError, match="loss"):
        grid(runs, ["additive"], evaluate.PaperSplit(), loss="l1")


def test_many_domain_cells_fit_like_fit_with_auto_curvature():
    # The additive law at k = 48 has 101 parameters: fit's default curvature="auto" uses IRLS
    # there (the exact Huber curvature up to 100); grid resolves it per law the same way, so
    # its cells are the standalone fits.
    from test_convergence import synthetic_additive

    _, _, many = synthetic_additive(48, 120, seed=3)
    g = grid(many, ["additive"], evaluate.HeldOutMixtures(n_fit=100), seeds=[0], n_starts=2)
    (_, fit_runs, eval_runs), = evaluate.HeldOutMixtures(n_fit=100, seed=0).splits(many)
    f = mixlaw.fit(fit_runs, "additive", n_starts=2)["loss"]
    assert f.options["curvature"] == "irls"
    row = g.iloc[0]
    assert (row["objective"], row["status"], row["params"]) == (f.fun, f.status, f.params)
    assert row["eval_mre"] == f.score(eval_runs)["mre"]
