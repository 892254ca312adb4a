"""Progress of long calls (issue 22): ``progress=`` of fit, bootstrap and compare reports
finished starts from the C++ batch (``_core.fit_many(progress=)``), never changes a result,
and a callback that raises stops the call with its exception."""
from __future__ import annotations

import numpy as np
import pytest

import mixlaw
from mixlaw import datasets, evaluate


@pytest.fixture(scope="module")
def runs():
    return datasets.slimpajama()


def phases(calls):
    """Split the (done, total) reports into phases (a new phase starts when total changes
    or done goes back)."""
    out, cur = [], []
    for d, t in calls:
        if cur and (t != cur[-1][1] or d < cur[-1][0]):
            out.append(cur)
            cur = []
        cur.append((d, t))
    if cur:
        out.append(cur)
    return out


@pytest.mark.parametrize("screen_iter", [0, 5])
def test_reports_reach_every_start_and_change_nothing(runs, screen_iter):
    calls = []
    kw = dict(targets=["c4", "book"], n_starts=12, seed=1, threads=2, screen_iter=screen_iter, screen_keep=3)
    a = mixlaw.fit(runs, "additive", progress=lambda d, t: calls.append((d, t)), **kw)
    b = mixlaw.fit(runs, "additive", progress=False, **kw)
    n_starts = sum(f.starts_fun.size for f in a.values())  # the two-stage start + 12 random, per target
    first = phases(calls)[0]
    assert first[-1] == (n_starts, n_starts)
    assert all(0 < d <= t == n_starts for d, t in first)
    assert [d for d, _ in first] == sorted(d for d, _ in first)
    for t in a:
        np.testing.assert_array_equal(a[t].x, b[t].x)
        np.testing.assert_array_equal(a[t].starts_fun, b[t].starts_fun)


def test_a_bar_on_stderr(runs, capfd):
    mixlaw.fit(runs, "additive", targets="c4", n_starts=4, threads=1, progress=True)
    err = capfd.readouterr().err
    assert "fit additive" in err and "100%" in err and "5/5" in err


def test_bad_progress_is_refused_before_any_work(runs):
    with pytest.raises(ValueError, match="progress: expected 'auto', True, False, None or a callable"):
        mixlaw.fit(runs, "additive", targets="c4", progress="yes")
    with pytest.raises(ValueError, match="progress: expected None or a callable"):
        L = mixlaw.law("additive", 7)
        N, D, H, y = runs.target("c4")
        mixlaw._core.fit_many([(L._core, mixlaw._core.Records(N, D, H), y, None)], [L.init_lower[None, :]],
                              [L.lower], [L.upper], [0], progress=3)


def test_a_raising_callback_stops_the_call(runs):
    seen = []

    def stop(done, total):
        seen.append(done)
        raise RuntimeError("enough")

    with pytest.raises(RuntimeError, match="enough"):
        mixlaw.fit(runs, "additive", targets=["c4", "book"], n_starts=64, threads=2, progress=stop)
    assert len(seen) == 1
    # nothing left behind: the same small fit gives the same bits as before
    a = mixlaw.fit(runs, "additive", targets="c4", n_starts=2, progress=False)
    b = mixlaw.fit(runs, "additive", targets="c4", n_starts=2, progress=False)
    np.testing.assert_array_equal(a["c4"].x, b["c4"].x)


def test_bootstrap_and_compare_report(runs):
    calls = []
    boot = mixlaw.bootstrap(runs, "additive", targets="c4", n_boot=3, n_starts=2, threads=2,
                            progress=lambda d, t: calls.append((d, t)))
    assert (3 * 2, 3 * 2) in calls  # every resample's starts
    assert boot.samples["c4"].shape[0] == 3
    calls.clear()
    table = mixlaw.compare(runs, ["additive"], evaluate.PaperSplit(), targets=["c4"], n_starts=2,
                           progress=lambda d, t: calls.append((d, t)))
    assert calls and calls[-1][0] == calls[-1][1] and len(table) == 1
