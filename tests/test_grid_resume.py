"""grid(out=...) is resume safe (issue 21, "no silent wrong answers"): rows are reused only by
the call that wrote them (same data, same options), an interrupted grid keeps its finished
cells, and damaged files are reported, never returned. Expected tables are fresh grids run
without ``out``."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import mixlaw
from mixlaw import evaluate, grid, grid_search

pd = pytest.importorskip("pandas")

COLUMNS = ["law", "target", "seed", "split", "n_fit", "n_eval", "train_mre", "eval_mre", "objective", "status",
           "nit"]
# 8 cells: 2 laws (joint nests additive) x 2 targets x 2 random splits
BASE = dict(laws=["additive", "joint"], protocols=evaluate.HeldOutMixtures(n_fit=20), seeds=[0, 1],
            targets=["c4", "book"], n_starts=4)
# 2 cells, for the calls that differ in one thing
SMALL = dict(laws=["additive"], protocols=evaluate.HeldOutMixtures(n_fit=20), targets=["c4", "book"], n_starts=4)


@pytest.fixture(scope="module")
def runs():
    return mixlaw.datasets.slimpajama()


@pytest.fixture(scope="module")
def fresh(runs):
    return grid(runs, **BASE)


def same(a, b):
    """Same cells, same results (the bit-for-bit identity grids guarantee)."""
    assert list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(a[COLUMNS].reset_index(drop=True), b[COLUMNS].reset_index(drop=True))
    assert [p for p in a["params"]] == [p for p in b["params"]]
    if "mixtures" in b:
        assert list(a["mixtures"]) == list(b["mixtures"])


def call(runs, kw, **extra):
    kw = dict(kw, **extra)
    return grid(runs, kw.pop("laws"), kw.pop("protocols"), **kw)


@pytest.fixture
def count_cells(monkeypatch):
    """Cells computed by grid's jobs (run_cells is the unit of work of every job)."""
    computed: list = []
    real = grid_search.run_cells

    def counting(runs, cells, *args, **kwargs):
        computed.extend(c.key for c in cells)
        return real(runs, cells, *args, **kwargs)

    monkeypatch.setattr(grid_search, "run_cells", counting)
    return computed


def lines(path):
    return path.read_text().splitlines()


def test_same_call_twice_reads_everything_back(runs, fresh, tmp_path, count_cells):
    out = tmp_path / "grid.jsonl"
    first = call(runs, BASE, out=out)
    same(first, fresh)
    assert len(count_cells) == 8 and len(lines(out)) == 8
    count_cells.clear()
    again = call(runs, BASE, out=out)
    assert count_cells == []  # nothing refitted
    same(again, fresh)
    assert len(lines(out)) == 8
    # options that change no result are not part of the fingerprint
    same(call(runs, BASE, out=out, threads=1, chunk_size=1, progress=lambda *a: None), fresh)
    # nor is the choice of cells: a sub-grid of the same data and options is read back
    sub = call(runs, BASE, out=out, seeds=[1], targets=["book"])
    assert count_cells == []
    same(sub, fresh[(fresh["seed"] == 1) & (fresh["target"] == "book")])
    rows = [json.loads(line) for line in lines(out)]
    assert all(set(r["fingerprint"]) == {"data", "options", "cell"} and r["options"]["n_starts"] == 4 for r in rows)


class Cut:
    """A protocol whose repr hides its parameter: only the records tell two of them apart."""

    def __init__(self, fraction):
        self.fraction = fraction

    def __repr__(self):
        return "Cut()"

    def splits(self, runs):
        m = runs.D <= np.quantile(runs.D, self.fraction)
        return [("cut", runs.select(m), runs.select(~m))]


def _other_runs(runs):
    targets = dict(runs.targets)
    targets["c4"] = targets["c4"] * 1.01
    return mixlaw.Runs(runs.N, runs.D, runs.H, domains=runs.domains, targets=targets, run=runs.run)


# (first call's changes, second call's changes, what the message says)
OTHER_CALLS = {
    "data": ({}, {"runs": _other_runs}, "other data"),
    "n_starts": ({}, {"n_starts": 5}, r"n_starts=4 \(this call: 5\)"),
    "seed": ({}, {"seed": 1}, r"seed=0 \(this call: 1\)"),
    "fit option": ({}, {"delta": 2e-3}, r"delta=0\.001 \(this call: 0\.002\)"),
    "bounds": ({}, {"bounds": {"E": (0.5, 3.0)}}, "bounds="),
    "law under the same label": ({}, {"laws": {"additive": {"name": "additive", "d_term": False}}},
                                 "another law under the same label"),
    "protocol parameters": ({"protocols": Cut(0.5)}, {"protocols": Cut(0.7)}, "evaluation records"),
    "budgets": ({"budgets": [(1e9, 2e10)]}, {"budgets": [(2e9, 2e10)]}, "budgets="),
    "mixture group": ({"budgets": [(1e9, 2e10)]}, {"budgets": [(1e9, 2e10)], "targets": ["c4", "book", "arxiv"]},
                      "mixture group"),
}


@pytest.mark.parametrize("case", list(OTHER_CALLS))
def test_rows_of_another_call_are_refused_or_replaced(runs, tmp_path, case):
    first, second, says = OTHER_CALLS[case]
    out = tmp_path / "grid.jsonl"
    call(runs, SMALL, out=out, **first)
    written = out.read_text()
    kw = dict(SMALL, **first)
    kw.update(second)
    other = kw.pop("runs", lambda r: r)(runs)
    with pytest.raises(ValueError, match=re.escape(str(out))) as err:
        call(other, kw, out=out)
    msg = str(err.value)
    assert re.search(says, msg) and "another grid call" in msg and "if_exists='replace'" in msg, msg
    assert out.read_text() == written  # refused before any change
    replaced = call(other, kw, out=out, if_exists="replace")
    same(replaced, call(other, kw))
    assert len(lines(out)) == len(replaced)
    # ... and the replaced file is now this call's
    same(call(other, kw, out=out), replaced)


def test_rows_without_fingerprint_are_another_call(runs, tmp_path):
    out = tmp_path / "grid.jsonl"
    call(runs, SMALL, out=out)
    old = []
    for line in lines(out):  # the format before fingerprints
        row = json.loads(line)
        del row["fingerprint"], row["options"]
        old.append(json.dumps(row))
    out.write_text("\n".join(old) + "\n")
    with pytest.raises(ValueError, match="earlier version of mixlaw"):
        call(runs, SMALL, out=out)
    same(call(runs, SMALL, out=out, if_exists="replace"), call(runs, SMALL))


def test_if_exists_fail_and_bad_values(runs, tmp_path):
    out = tmp_path / "grid.jsonl"
    with pytest.raises(ValueError, match="if_exists"):
        call(runs, SMALL, out=out, if_exists="overwrite")
    call(runs, SMALL, out=out, if_exists="fail")  # no file yet: fine
    with pytest.raises(ValueError, match=re.escape(str(out)) + ".*if_exists='fail'"):
        call(runs, SMALL, out=out, if_exists="fail")


@pytest.mark.parametrize("cut", ["no newline", "invalid line"])
def test_cut_last_line_is_skipped_with_a_warning_and_recomputed(runs, fresh, tmp_path, count_cells, cut):
    out = tmp_path / "grid.jsonl"
    call(runs, BASE, out=out)
    text = lines(out)
    last = text[-1]
    broken = last[: len(last) // 2] if cut == "no newline" else last[: len(last) // 2] + "\n"
    out.write_text("\n".join(text[:-1]) + "\n" + broken)
    count_cells.clear()
    with pytest.warns(RuntimeWarning, match="line 8 of " + re.escape(repr(str(out))) + " is cut short"):
        resumed = call(runs, BASE, out=out)
    assert count_cells == [json.loads(last)["cell_key"]]  # only the cut cell is computed again
    same(resumed, fresh)
    assert lines(out)[:7] == text[:7] and len(lines(out)) == 8
    assert all(json.loads(line) for line in lines(out))  # the cut line is gone, the new one complete
    same(call(runs, BASE, out=out), fresh)  # and the file is clean: no warning (warnings are errors here)


@pytest.mark.parametrize("line", ['{"a": 1}', "[1, 2]", "42", '{"cell_key": 3}', '{"cell_key": "x", "fingerprint": 1}',
                                  "not json at all"])
def test_foreign_line_is_an_error_naming_file_and_line(runs, tmp_path, line):
    out = tmp_path / "grid.jsonl"
    call(runs, SMALL, out=out)
    text = lines(out)
    out.write_text("\n".join([text[0], line] + text[1:]) + "\n")
    with pytest.raises(ValueError, match=re.escape(str(out))) as err:
        call(runs, SMALL, out=out)
    assert "line 2 " in str(err.value)
    # a foreign line at the end is an error too when it is valid JSON
    if line != "not json at all":
        out.write_text("\n".join(text + [line]) + "\n")
        with pytest.raises(ValueError, match="line 3 .*not a mixlaw grid row"):
            call(runs, SMALL, out=out)


def test_interrupt_keeps_finished_cells(runs, fresh, tmp_path, monkeypatch):
    out = tmp_path / "grid.jsonl"
    real = grid_search.run_cells
    returned: list = []

    def interrupted_on_third_job(runs, cells, *args, **kwargs):
        if len(returned) == 2:
            raise KeyboardInterrupt
        rows = real(runs, cells, *args, **kwargs)
        returned.append([c.key for c in cells])
        return rows

    monkeypatch.setattr(grid_search, "run_cells", interrupted_on_third_job)
    with pytest.raises(KeyboardInterrupt):
        call(runs, BASE, out=out)  # default executor, default chunking
    kept = [json.loads(line)["cell_key"] for line in lines(out)]
    assert kept == returned[0] + returned[1] and 0 < len(kept) < 8
    monkeypatch.setattr(grid_search, "run_cells", real)
    same(call(runs, BASE, out=out), fresh)
    assert len(lines(out)) == 8


def test_budget_groups_are_recomputed_whole(runs, tmp_path, count_cells):
    # mixtures are optimised over all targets of a (law, split) group: a group missing a row
    # (cut between its rows) is computed again as a whole, not its missing cell alone
    kw = dict(SMALL, budgets=[(1e9, 2e10)], targets=["c4", "book", "arxiv"])
    expected = call(runs, kw)
    out = tmp_path / "grid.jsonl"
    call(runs, kw, out=out)
    out.write_text("\n".join(lines(out)[:-1]) + "\n")
    count_cells.clear()
    same(call(runs, kw, out=out), expected)
    assert len(count_cells) == 3


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
def test_real_sigint_keeps_finished_lines(runs, tmp_path):
    out = tmp_path / "grid.jsonl"
    script = textwrap.dedent("""
        import sys
        import mixlaw
        from mixlaw import evaluate
        runs = mixlaw.datasets.slimpajama()
        mixlaw.grid(runs, ["additive", "joint"], evaluate.HeldOutMixtures(n_fit=20), seeds=range(200),
                    targets=["c4", "book"], n_starts=4, out=sys.argv[1], threads=1)
        print("finished")
    """)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    child = subprocess.Popen([sys.executable, "-c", script, str(out)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and out.read_text().count("\n") >= 2):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "no line written in 120 s"
            time.sleep(0.05)
        t0 = time.monotonic()
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert time.monotonic() - t0 < 10
    assert child.returncode != 0 and "KeyboardInterrupt" in stderr and "finished" not in stdout
    text = out.read_text()
    kept = text.splitlines()
    assert 2 <= len(kept) < 800
    rows = [json.loads(line) for line in kept]  # every kept line is complete ...
    # ... and is a row of that call: the same grid on seed 0 reads them back and matches a fresh grid
    kw = dict(laws=["additive", "joint"], protocols=evaluate.HeldOutMixtures(n_fit=20), seeds=[0],
              targets=["c4", "book"], n_starts=4)
    assert any(r["seed"] == 0 for r in rows)
    same(call(runs, kw, out=out, threads=1), call(runs, kw))
