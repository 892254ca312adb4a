"""Plots: every plot renders to a PNG with the Agg renderer, on the bundled data.

Fits use 2 starts and 2 targets to stay fast; checks read back what was drawn (points,
lines, bars, labels) and compare it with numbers computed here from the data.
"""
from __future__ import annotations

import re
import sys

import numpy as np
import pytest

import mixlaw

matplotlib = pytest.importorskip("matplotlib")
from mixlaw import plots  # noqa: E402

TARGETS = ["c4", "openhermes"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data():
    runs = mixlaw.datasets.slimpajama()
    train, test = mixlaw.protocols.slimpajama_paper_split(runs)
    fits = mixlaw.fit(train, "additive", targets=TARGETS, n_starts=2, seed=0)
    return runs, train, test, fits


def _bars(ax):
    from matplotlib.container import BarContainer

    return [c for c in ax.containers if isinstance(c, BarContainer)]


def _png(ax, path):
    plots.save(ax, path)
    raw = path.read_bytes()
    assert raw[:8] == PNG_MAGIC
    width, height = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    assert width > 300 and height > 300
    return raw


def test_observed_vs_predicted(data, tmp_path):
    _, train, test, fits = data
    ax = plots.observed_vs_predicted(fits["c4"], train, test)
    _png(ax, tmp_path / "ovp.png")
    fit_pts, eval_pts = (c.get_offsets() for c in ax.collections)
    _, _, _, y_train = train.target("c4")
    _, _, _, y_test = test.target("c4")
    np.testing.assert_array_equal(np.asarray(fit_pts)[:, 1], y_train)
    np.testing.assert_array_equal(np.asarray(eval_pts)[:, 1], y_test)
    # x = the law's prediction: its relative error against y gives the MRE
    mre_eval = 100 * np.mean(np.abs(np.asarray(eval_pts)[:, 0] - y_test) / y_test)
    assert mre_eval == pytest.approx(fits["c4"].score(test)["mre"])
    assert f"evaluation MRE {mre_eval:.2f}%" in ax.get_title()
    assert f"fit MRE {fits['c4'].train['mre']:.2f}%" in ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:2] == [f"fit ({y_train.size} points)", f"evaluation ({y_test.size} points)"]
    assert "y = x" in labels
    assert ax.get_xlabel().startswith("predicted loss") and ax.get_ylabel() == "observed loss"
    # only evaluation records; into a given Axes
    from matplotlib.figure import Figure

    ax2 = Figure().add_subplot()
    assert plots.observed_vs_predicted(fits["openhermes"], eval_runs=test, ax=ax2) is ax2
    assert "fit MRE" not in ax2.get_title()
    assert len(ax2.figure.axes) == 1  # a given Axes gets no residual panel unless asked
    # the residual panel: relative error (%) of each record against its N
    res = ax.figure.axes[1]
    assert res.get_xscale() == "log" and res.get_xlabel().startswith("model size N")
    r_fit, r_eval = (np.asarray(c.get_offsets()) for c in res.collections)
    N_train, _, _, _ = train.target("c4")
    N_test, _, _, _ = test.target("c4")
    np.testing.assert_array_equal(r_fit[:, 0], N_train)
    np.testing.assert_allclose(r_eval[:, 0], N_test)
    np.testing.assert_allclose(r_eval[:, 1], 100 * (np.asarray(eval_pts)[:, 0] - y_test) / y_test, rtol=1e-12)
    with pytest.raises(ValueError, match="residual_ax"):
        plots.observed_vs_predicted(fits["c4"], train, ax=Figure().add_subplot(), residuals=True)


def test_loss_vs_tokens(data, tmp_path):
    runs, train, test, fits = data
    ax = plots.loss_vs_tokens(fits["c4"], test)
    _png(ax, tmp_path / "lvt.png")
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "training tokens D"
    n_mix = np.unique(test.H, axis=0).shape[0]
    lines = ax.get_lines()
    points, curves = lines[0::2], lines[1::2]
    assert len(points) == len(curves) == n_mix
    # the points are the observed checkpoints of 2.718B, every one of them
    shown = sorted(float(v) for p in points for v in p.get_ydata())
    assert shown == sorted(test.target("c4")[3].tolist())
    # each curve is the law along that mixture's token range
    for p, c in zip(points, curves):
        d = np.asarray(p.get_xdata())
        assert c.get_xdata()[0] == pytest.approx(d.min()) and c.get_xdata()[-1] == pytest.approx(d.max())
    assert "2.718B" in ax.get_title()
    # a smaller size with many mixtures: at most max_mixtures, including the best and worst
    ax = plots.loss_vs_tokens(fits["openhermes"], train, model_size=310e6, max_mixtures=3)
    _png(ax, tmp_path / "lvt2.png")
    lines = ax.get_lines()
    assert len(lines) == 6
    sel = train.where(model_size=310e6)
    N, D, H, y = sel.target("openhermes")
    finals = [y[(H == h).all(axis=1)][np.argmax(D[(H == h).all(axis=1)])] for h in np.unique(H, axis=0)]
    shown_last = [p.get_ydata()[np.argmax(p.get_xdata())] for p in lines[0::2]]
    assert min(shown_last) == min(finals) and max(shown_last) == max(finals)
    assert re.search(r"3 of \d+ mixtures", ax.get_title())
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert all("%" in t for t in legend) and any(d in legend[0] for d in runs.domains)
    with pytest.raises(ValueError, match=r"^model_size: no record .*available"):
        plots.loss_vs_tokens(fits["c4"], test, model_size=1e6)
    with pytest.raises(ValueError, match=r"^max_mixtures"):
        plots.loss_vs_tokens(fits["c4"], test, max_mixtures=0)


def test_mixture_bars_with_bootstrap_intervals(data, tmp_path):
    runs, train, _, fits = data
    N, D = 2.7e9, 5.4e10
    bs = mixlaw.bootstrap(train, "additive", targets=TARGETS, n_boot=4, n_starts=2, seed=0)
    iv = bs.mixture_interval(N=N, D=D)
    ax = plots.mixture_bars(intervals=iv)
    _png(ax, tmp_path / "bars.png")
    (bars,) = _bars(ax)
    est = iv["estimate"]
    widths = [r.get_width() for r in bars.patches]
    np.testing.assert_allclose(widths, [100 * est[d] for d in runs.domains])
    # error bars span the bootstrap interval (clipped to contain the estimate)
    segs = bars.errorbar.lines[2][0].get_segments()
    for d, seg in zip(runs.domains, segs):
        lo, hi = iv[d]
        assert seg[0][0] == pytest.approx(100 * min(lo, est[d]))
        assert seg[1][0] == pytest.approx(100 * max(hi, est[d]))
    assert [t.get_text() for t in ax.get_yticklabels()] == list(runs.domains)
    assert "%" in ax.get_xlabel()
    # several mixtures side by side, with a reference
    r1 = mixlaw.optimize_mixture(fits, N=N, D=D)
    r2 = mixlaw.optimize_mixture(fits, N=N, D=D, weights={"openhermes": 1.0})
    title = plots.mixture_bars(r2).get_title()  # titled with the law, the budget and the target weights
    assert "additive law" in title and "N = 2.7B" in title and "openhermes 1" in title
    ax = plots.mixture_bars({"average": r1, "openhermes": r2}, reference={d: 1 / 7 for d in runs.domains},
                            reference_label="uniform")
    _png(ax, tmp_path / "bars2.png")
    assert len(_bars(ax)) == 2
    np.testing.assert_allclose([r.get_width() for r in _bars(ax)[1].patches], 100 * r2.x)
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"average", "openhermes", "uniform"}
    assert "N = 2.7B" in ax.get_title()
    with pytest.raises(ValueError, match=r"^intervals: no interval for domain"):
        plots.mixture_bars(r1, intervals={"c4": (0.1, 0.2)})
    with pytest.raises(ValueError, match=r"^mixture: needed"):
        plots.mixture_bars()
    with pytest.raises(ValueError, match=r"^reference: unknown domain"):
        plots.mixture_bars(r1, reference={"pile": 1.0})


def test_mixture_path(data, tmp_path):
    runs, train, _, _ = data
    jf = mixlaw.fit(train, "joint", targets=TARGETS, n_starts=2, seed=0)
    C = np.geomspace(1e19, 1e23, 12)
    ax = plots.mixture_path(jf, compute=C)
    _png(ax, tmp_path / "path.png")
    assert ax.get_xscale() == "log" and "FLOPs" in ax.get_xlabel()
    # the stacked bands are h* of optimize_mixture at N = sqrt(C / 120), D = 20 N, in %
    N = np.sqrt(C / 120.0)
    ref = mixlaw.optimize_mixture(jf, N=N, D=20 * N)
    tops = [np.asarray(p.get_paths()[0].vertices) for p in ax.collections]
    assert len(tops) == len(runs.domains)
    cum = np.cumsum(100 * ref.h, axis=1)
    for i, v in enumerate(tops):  # upper edge of band i = cumulative share up to domain i
        upper = [v[np.isclose(v[:, 0], c, rtol=1e-12), 1].max() for c in C]
        np.testing.assert_allclose(upper, cum[:, i], atol=1e-9)
    # lines against N, from a solved grid
    ax = plots.mixture_path(ref, x="N", kind="lines")
    _png(ax, tmp_path / "path2.png")
    for line, i in zip(ax.get_lines(), range(len(runs.domains))):
        np.testing.assert_allclose(line.get_ydata(), 100 * ref.h[:, i])
        np.testing.assert_allclose(line.get_xdata(), N)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(runs.domains)
    with pytest.raises(ValueError, match=r"^x: expected"):
        plots.mixture_path(ref, x="flops")
    with pytest.raises(ValueError, match=r"^compute: give either"):
        plots.mixture_path(jf, compute=C, N=N, D=N)
    with pytest.raises(ValueError, match=r"^N, D: give the path"):
        plots.mixture_path(jf)


def test_without_matplotlib_the_error_says_how_to_install(data, monkeypatch):
    _, train, test, fits = data
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'mixlaw\[plot\]'"):
        plots.observed_vs_predicted(fits["c4"], train, test)
