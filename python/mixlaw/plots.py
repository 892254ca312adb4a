"""Plots of fits and mixtures (needs matplotlib: ``pip install 'mixlaw[plot]'``).

Every function draws into ``ax`` when given (any matplotlib Axes, e.g. from
``plt.subplots()``), and otherwise into a new standalone :class:`~matplotlib.figure.Figure`
that is not registered with pyplot, so nothing pops up and no global state changes; save
it with :func:`save` (PNG files are written by the Agg renderer) or ``ax.figure.savefig``.
Each returns the Axes it drew into.

- :func:`observed_vs_predicted` — observed against predicted loss of one fitted target,
  fitting and evaluation records distinguished, the line ``y = x``, MRE in the title;
- :func:`loss_vs_tokens` — loss against training tokens at one model size, one colour per
  mixture: observed points and the law's curves;
- :func:`mixture_bars` — optimal mixture(s) by domain, with bootstrap intervals
  (:meth:`mixlaw.evaluate.BootstrapResult.mixture_interval`) as error bars;
- :func:`mixture_path` — the optimal mixture ``h*(N, D)`` along a scaling path, against
  compute, ``N`` or ``D``;
- :func:`pareto_front` — the predicted losses of two targets along a Pareto front
  (:func:`mixlaw.pareto.pareto_front`), dominated points marked.

matplotlib is imported on first use only: ``import mixlaw`` never needs it.
"""
from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np

from ._domains import domain_order
from .data import _budget_text, _fmt_size
from .metrics import mre as _mre

__all__ = ["observed_vs_predicted", "loss_vs_tokens", "mixture_bars", "mixture_path", "pareto_front", "save"]

_INSTALL_HINT = "plotting needs matplotlib: pip install 'mixlaw[plot]'"


def _mpl() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError(_INSTALL_HINT) from None
    return matplotlib


def _new_axes(ax: Any, figsize: tuple[float, float]) -> Any:
    if ax is not None:
        return ax
    _mpl()
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig.add_subplot()


def subplots(n: int, *, ncols: int = 4, panel: tuple[float, float] = (3.6, 3.4)) -> tuple[Any, list]:
    """A standalone figure with ``n`` panels on a grid of ``ncols`` columns; returns
    ``(figure, axes)`` with the unused panels hidden."""
    if n < 1:
        raise ValueError("n: need at least one panel")
    _mpl()
    from matplotlib.figure import Figure

    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    axes = list(np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel())
    for a in axes[n:]:
        a.set_visible(False)
    return fig, axes[:n]


def save(obj: Any, path: Any, *, dpi: int = 130) -> str:
    """Write the figure of ``obj`` (an Axes or a Figure) to ``path`` (format from the
    suffix, e.g. ``.png``); returns the path as a string."""
    fig = getattr(obj, "figure", None) or obj
    if not hasattr(fig, "savefig"):
        raise ValueError(f"obj: expected a matplotlib Axes or Figure, got {type(obj).__name__}")
    path = os.fspath(path)
    fig.savefig(path, dpi=dpi)
    return path


def _domain_colors(domains: Sequence[str]) -> dict:
    cmap = _mpl().colormaps["tab10" if len(domains) <= 10 else "tab20"]
    return {d: cmap(i % cmap.N) for i, d in enumerate(domains)}


def _log_axis(axis: Any, lo: float, hi: float, *, sizes: bool = True) -> None:
    """Log-scale ticks labelled 20B, 50B, 100B (``sizes``) or as powers of ten, with
    intermediate ticks when the range spans few decades."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    decades = math.log10(hi / lo) if hi > lo > 0 else 0.0
    subs = (1.0, 2.0, 3.0, 5.0, 7.0) if decades < 1.3 else (1.0, 2.0, 5.0) if decades < 3.5 else (1.0,)
    if not sizes and subs == (1.0,):
        return  # matplotlib's 10^k labels
    axis.set_major_locator(LogLocator(base=10.0, subs=subs))
    if sizes:
        axis.set_major_formatter(FuncFormatter(lambda v, _: _fmt_size(v)))
    axis.set_minor_formatter(NullFormatter())


def _check_fit(fit: Any) -> None:
    if not (hasattr(fit, "law") and hasattr(fit, "x") and hasattr(fit, "target")):
        raise TypeError("fit: expected one fitted target (a mixlaw.Fit, e.g. fits['c4'])")


def _target_arrays(fit: Any, runs: Any, arg: str) -> tuple:
    if not hasattr(runs, "target"):
        raise TypeError(f"{arg}: expected a runs table")
    if fit.target not in runs.target_names:
        raise ValueError(f"{arg}: has no target {fit.target!r} (targets: {', '.join(runs.target_names)})")
    N, D, H, y = runs.target(fit.target)
    idx = domain_order(tuple(getattr(runs, "domains", ())), tuple(getattr(fit, "domains", ())), have_arg=arg,
                       want_arg="fit")
    if idx is not None:
        H = np.ascontiguousarray(H[:, idx])  # the fit's domain order, matched by name
    pred = fit.law.predict(fit.x, N, D, H if fit.law.k else None)
    return N, D, H, np.asarray(y), np.asarray(pred)


# ------------------------------------------------------------------------------------
# (a) observed vs predicted
# ------------------------------------------------------------------------------------
def observed_vs_predicted(fit: Any, fit_runs: Any = None, eval_runs: Any = None, *, ax: Any = None,
                          title: Optional[str] = None, residuals: Optional[bool] = None,
                          residual_ax: Any = None) -> Any:
    """Observed loss against the law's prediction for one target, and below it the
    relative error (%) against the model size N, where extrapolation shows.

    Parameters
    ----------
    fit : Fit
        One fitted target (``fits["c4"]``).
    fit_runs, eval_runs : Runs, optional
        Records the law was fitted to (blue dots) and held-out records (orange diamonds);
        records where the target is missing are skipped. At least one is needed.
    ax : matplotlib Axes, optional
    title : str, optional
        Default: target, law and the MRE (%) of each group.
    residuals : bool, optional
        Draw the residual panel: ``100 (predicted - observed) / observed`` against N (log
        scale; against the predicted loss for runs without model sizes). Default: when the
        figure is made here (``ax`` None) or ``residual_ax`` is given.
    residual_ax : matplotlib Axes, optional
        Where to draw the residual panel when ``ax`` is given.

    Returns
    -------
    matplotlib Axes
        The main panel (the residual panel is ``ax.figure.axes[1]`` when made here).
    """
    _check_fit(fit)
    if fit_runs is None and eval_runs is None:
        raise ValueError("fit_runs, eval_runs: give at least one runs table to plot")
    if residuals is None:
        residuals = ax is None or residual_ax is not None
    if residuals and ax is None:
        _mpl()
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5.0, 6.6), layout="constrained")
        ax, residual_ax = fig.subplots(2, 1, height_ratios=[3, 1.3])
    elif residuals and residual_ax is None:
        raise ValueError("residual_ax: needed for the residual panel when ax is given (or residuals=False)")
    ax = _new_axes(ax, (5.0, 4.8))
    groups = []
    if fit_runs is not None:
        groups.append(("fit", _target_arrays(fit, fit_runs, "fit_runs"),
                       dict(marker="o", s=10, color="tab:blue", alpha=0.45, linewidths=0)))
    if eval_runs is not None:
        groups.append(("evaluation", _target_arrays(fit, eval_runs, "eval_runs"),
                       dict(marker="D", s=22, color="tab:orange", alpha=0.9, edgecolors="black",
                            linewidths=0.4)))
    lo, hi, parts = math.inf, -math.inf, []
    by_size = all(arrays[0] is not None for _, arrays, _ in groups)  # else: runs without N
    for label, (N, _, _, y, pred), style in groups:
        if y.size == 0:
            parts.append(f"{label}: no records")
            continue
        m = _mre(y, pred)
        parts.append(f"{label} MRE {m:.2f}%")
        ax.scatter(pred, y, label=f"{label} ({y.size} points)", zorder=3, **style)
        if residuals:
            residual_ax.scatter(N if by_size else pred, 100 * (pred - y) / y, zorder=3, **style)
        lo, hi = min(lo, y.min(), pred.min()), max(hi, y.max(), pred.max())
    if math.isfinite(lo):
        pad = 0.04 * (hi - lo or abs(hi) or 1.0)
        lo, hi = lo - pad, hi + pad
        ax.plot([lo, hi], [lo, hi], color="0.35", lw=1, ls="--", label="y = x", zorder=2)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(f"predicted loss ({fit.law.name} law)")
    ax.set_ylabel("observed loss")
    ax.set_title(title if title is not None else f"{fit.target}\n" + ", ".join(parts), fontsize=10)
    ax.grid(True, alpha=0.3)
    # points hug the diagonal; the upper-left triangle (observed far above predicted) is
    # the emptiest place, while extrapolated (evaluation) points sit at the low end
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    if residuals:
        residual_ax.axhline(0.0, color="0.35", lw=1, ls="--", zorder=2)
        if by_size:
            residual_ax.set_xscale("log")
        residual_ax.set_xlabel("model size N (parameters)" if by_size else "predicted loss")
        residual_ax.set_ylabel("error %\n(predicted - observed)")
        residual_ax.grid(True, alpha=0.3)
    return ax


# ------------------------------------------------------------------------------------
# (b) loss vs tokens per mixture
# ------------------------------------------------------------------------------------
def _mixture_label(h: np.ndarray, domains: Sequence[str], top: int = 3) -> str:
    order = np.argsort(-h, kind="stable")
    parts = [f"{domains[i]} {100 * h[i]:.0f}%" for i in order[:top] if h[i] >= 0.005]
    rest = 1.0 - sum(h[i] for i in order[:top])
    if rest >= 0.005:
        parts.append(f"other {100 * rest:.0f}%")
    return ", ".join(parts)


def loss_vs_tokens(fit: Any, runs: Any, *, model_size: Optional[float] = None, max_mixtures: int = 6,
                   ax: Any = None, title: Optional[str] = None) -> Any:
    """Loss against training tokens at one model size: each mixture's observed checkpoints
    (points) and the fitted law's prediction along the same token range (line).

    Parameters
    ----------
    fit : Fit
    runs : Runs
        Records to plot (e.g. the evaluation set, to see the extrapolation).
    model_size : float, optional
        Which ``N`` (default: the largest size with a value of the target).
    max_mixtures : int
        At most this many mixtures, picked evenly across the range of final losses so that
        the best, the worst and some in between are shown.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    _check_fit(fit)
    if isinstance(max_mixtures, bool) or not isinstance(max_mixtures, numbers.Integral) or max_mixtures < 1:
        raise ValueError("max_mixtures: must be an int >= 1")
    N, D, H, y, _ = _target_arrays(fit, runs, "runs")
    if y.size == 0:
        raise ValueError(f"runs: no record has a value of target {fit.target!r}")
    if model_size is None:
        size = float(N.max())
    else:
        try:
            size = float(model_size)
        except (TypeError, ValueError):
            raise ValueError(f"model_size: expected a number, got {model_size!r}") from None
    at = np.abs(N - size) <= 1e-9 * abs(size)
    if not at.any():
        avail = ", ".join(f"{s:g}" for s in np.unique(N))
        raise ValueError(f"model_size: no record of target {fit.target!r} has N = {size:g} (available: {avail})")
    D, H, y = D[at], H[at], y[at]
    mixes, inv = np.unique(H, axis=0, return_inverse=True)
    inv = np.asarray(inv).ravel()
    # final loss of each mixture, to pick a spread of them
    final = np.array([y[inv == g][np.argmax(D[inv == g])] for g in range(mixes.shape[0])])
    order = np.argsort(final)
    if order.size > max_mixtures:
        order = order[np.unique(np.round(np.linspace(0, order.size - 1, max_mixtures)).astype(int))]
    domains = tuple(getattr(fit, "domains", ()) or getattr(runs, "domains", ())) or tuple(
        f"d{i}" for i in range(H.shape[1]))
    ax = _new_axes(ax, (7.2, 5.6))
    cmap = _mpl().colormaps["tab10"]
    for c, g in enumerate(order):
        m = inv == g
        d = np.sort(D[m])
        grid = np.geomspace(d[0], d[-1], 100) if d[-1] > d[0] else d
        Hg = np.repeat(mixes[g][None, :], grid.size, axis=0)
        pred = fit.law.predict(fit.x, np.full(grid.size, size), grid, Hg if fit.law.k else None)
        color = cmap(c % cmap.N)
        label = _mixture_label(mixes[g], domains) if H.shape[1] else "data"
        # one legend entry per mixture showing both the points and the line
        ax.plot(D[m], y[m], ls="none", marker="o", ms=4, color=color, zorder=3)
        ax.plot(grid, pred, color=color, lw=1.4, zorder=2, marker="o", ms=4, markevery=[], label=label)
    ax.set_xscale("log")
    _log_axis(ax.xaxis, float(D.min()), float(D.max()))
    ax.set_xlabel("training tokens D")
    ax.set_ylabel(f"loss on {fit.target}")
    shown = f"{order.size} of {mixes.shape[0]} mixtures" if order.size < mixes.shape[0] else \
        f"{mixes.shape[0]} mixture{'s' if mixes.shape[0] > 1 else ''}"
    ax.set_title(title if title is not None else
                 f"{fit.target} at N = {_fmt_size(size)} parameters ({shown})\n"
                 f"points: observed checkpoints; lines: {fit.law.name} law", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(title="mixture (largest weights)", fontsize=8, title_fontsize=8, loc="upper center",
              bbox_to_anchor=(0.5, -0.13), ncol=2 if order.size > 1 else 1, frameon=False)
    return ax


# ------------------------------------------------------------------------------------
# (c) optimal mixture bars
# ------------------------------------------------------------------------------------
def _as_weights(m: Any, arg: str) -> tuple[dict, Optional[str]]:
    """(weights by domain, default title) of a MixtureResult or a mapping domain -> weight."""
    if hasattr(m, "h") and hasattr(m, "N") and hasattr(m, "D") and isinstance(m.h, Mapping):
        law = f"{m.law} law, " if getattr(m, "law", "") else ""
        w = getattr(m, "weights", None) or {}
        targets = ""
        if w:
            total = sum(w.values())
            shown = ", ".join(f"{t} {v / total:.2g}" for t, v in list(w.items())[:4]) + (", ..." if len(w) > 4 else "")
            targets = f"\ntargets weighted {shown}"
        return dict(m.h), f"{law}{_budget_text(m.N, m.D, _fmt_size, tokens=' tokens')}{targets}"
    if isinstance(m, Mapping) and m and all(isinstance(v, numbers.Real) for v in m.values()):
        return {str(k): float(v) for k, v in m.items()}, None
    raise ValueError(f"{arg}: expected a MixtureResult or a mapping domain -> weight")


def mixture_bars(mixture: Any = None, *, intervals: Any = None, ax: Any = None, title: Optional[str] = None,
                 reference: Optional[Mapping[str, float]] = None, reference_label: str = "reference") -> Any:
    """Optimal mixture(s) as horizontal bars, one row per domain, in percent.

    Parameters
    ----------
    mixture : MixtureResult, mapping domain -> weight, or mapping label -> either
        One mixture, or several side by side (e.g. ``{"average": r1, "openhermes": r2}``).
        May be omitted when ``intervals`` carries an ``"estimate"``.
    intervals : mapping, optional
        Bootstrap intervals as returned by
        :meth:`~mixlaw.evaluate.BootstrapResult.mixture_interval`: ``{domain: (low, high)}``
        (weights in [0, 1]), drawn as error bars; for several mixtures, a mapping
        label -> such intervals (labels may be missing).
    reference : mapping domain -> weight, optional
        A mixture to compare with (e.g. a published one), drawn as black ticks.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib Axes
    """
    if mixture is None:
        if not isinstance(intervals, Mapping) or "estimate" not in intervals:
            raise ValueError("mixture: needed unless intervals has an 'estimate'")
        mixture = intervals["estimate"]
    subtitle = None
    try:
        single, subtitle = _as_weights(mixture, "mixture")
        mixtures = {"": single}
        ints = {"": intervals} if intervals is not None else {}
    except ValueError:
        if not isinstance(mixture, Mapping) or not mixture:
            raise
        mixtures = {}
        for label, m in mixture.items():
            mixtures[str(label)], sub = _as_weights(m, f"mixture[{label!r}]")
            subtitle = subtitle or sub
        if intervals is not None and not isinstance(intervals, Mapping):
            raise ValueError("intervals: expected a mapping label -> {domain: (low, high)}")
        ints = dict(intervals or {})
        unknown = [k for k in ints if k not in mixtures]
        if unknown:
            raise ValueError(f"intervals: unknown mixture label(s) {unknown}; labels: {list(mixtures)}")
    domains = list(next(iter(mixtures.values())))
    for label, w in mixtures.items():
        if list(w) != domains:
            raise ValueError(f"mixture: {label!r} has domains {list(w)}, expected {domains}")
    for label, iv in ints.items():
        if iv is None:
            continue
        if not isinstance(iv, Mapping):
            raise ValueError("intervals: expected {domain: (low, high)}")
        missing = [d for d in domains if d not in iv]
        if missing:
            raise ValueError(f"intervals: no interval for domain(s) {missing}")
    if reference is not None:
        unknown = [d for d in reference if d not in domains]
        if unknown:
            raise ValueError(f"reference: unknown domain(s) {unknown}; domains: {domains}")

    k, M = len(domains), len(mixtures)
    ax = _new_axes(ax, (6.4, 0.45 * k * max(1, 0.7 * M) + 1.6))
    height = 0.8 / M
    ypos = np.arange(k)[::-1].astype(float)  # first domain on top
    cmap = _mpl().colormaps["tab10"]
    xmax = 0.0
    rv = None
    if reference is not None:
        rv = 100 * np.array([float(reference.get(d, np.nan)) for d in domains])
    for j, (label, w) in enumerate(mixtures.items()):
        vals = 100 * np.array([w[d] for d in domains])
        yj = ypos + (M - 1) / 2 * height - j * height
        iv = ints.get(label)
        xerr = None
        if iv is not None:
            lo = 100 * np.array([float(iv[d][0]) for d in domains])
            hi = 100 * np.array([float(iv[d][1]) for d in domains])
            xerr = np.vstack([np.clip(vals - lo, 0, None), np.clip(hi - vals, 0, None)])
            xmax = max(xmax, float(hi.max()))
        color = cmap(j % cmap.N) if M > 1 else "tab:blue"
        bar_label = label if label else "optimal mixture"
        if iv is not None:
            bar_label += f" ({_interval_level(iv)} interval)"
        ax.barh(yj, vals, height=height * 0.9, color=color, alpha=0.85, label=bar_label,
                xerr=xerr, error_kw=dict(ecolor="black", elinewidth=1, capsize=3))
        right = vals if xerr is None else vals + xerr[1]
        if rv is not None:  # keep the numbers clear of the reference ticks
            right = np.fmax(right, rv)
        for yy, v, r in zip(yj, vals, right):
            ax.text(r + 0.6, yy, f"{v:.1f}", va="center", ha="left", fontsize=8)
        xmax = max(xmax, float(vals.max()))
    if rv is not None:
        ax.scatter(rv, ypos, marker="|", s=300, color="black", linewidths=2, zorder=4, label=reference_label)
        xmax = max(xmax, float(np.nanmax(rv)))
    ax.set_yticks(ypos)
    ax.set_yticklabels(domains)
    ax.set_xlim(0, xmax * 1.18 + 1)
    ax.set_xlabel("weight in the training mixture (%)")
    ax.grid(True, axis="x", alpha=0.3)
    default = "Optimal mixture h*" + (f"\n{subtitle}" if subtitle else "")
    ax.set_title(title if title is not None else default, fontsize=10)
    if M > 1 or ints or reference is not None:
        ax.legend(loc="best", fontsize=8, framealpha=0.9)
    return ax


def _interval_level(iv: Mapping) -> str:
    level = iv.get("level") if isinstance(iv, Mapping) else None
    return f"{100 * float(level):.0f}%" if isinstance(level, numbers.Real) else "bootstrap"


# ------------------------------------------------------------------------------------
# (d) h* along a scaling path
# ------------------------------------------------------------------------------------
_X_LABELS = {"compute": "training compute C = 6 N D (FLOPs)", "N": "model size N (parameters)",
             "D": "training tokens D"}


def mixture_path(fits: Any, *, N: Any = None, D: Any = None, compute: Any = None, tokens_per_param: float = 20.0,
                 weights: Any = None, x: str = "compute", kind: str = "area", ax: Any = None,
                 title: Optional[str] = None, **options: Any) -> Any:
    """The optimal mixture along a scaling path, one band (or line) per domain.

    Parameters
    ----------
    fits : Fits, list of Fit, or MixtureGrid
        Fitted laws (the path is solved with :func:`mixlaw.optimize_mixture` in one batched
        call), or an already solved :class:`~mixlaw.MixtureGrid`.
    N, D : array_like, optional
        The path's model sizes and token counts (broadcast together).
    compute : array_like, optional
        Instead of ``N, D``: compute budgets ``C`` (FLOPs), split as ``D = tokens_per_param * N``
        with ``C = 6 N D`` (the Chinchilla rule with the default 20 tokens per parameter).
    weights : optional
        Target importance, as in :func:`mixlaw.optimize_mixture` (default: equal).
    x : {"compute", "N", "D"}
        Horizontal axis (log scale).
    kind : {"area", "lines"}
        Stacked areas (shares add up to 100 %) or one line per domain.
    options :
        Passed to :func:`mixlaw.optimize_mixture` (``bounds``, ``method``, ...).

    Returns
    -------
    matplotlib Axes
    """
    from .fit import _floats
    from .mixture import MixtureGrid, _budgets, optimize_mixture

    if x not in _X_LABELS:
        raise ValueError(f"x: expected one of {', '.join(_X_LABELS)}, got {x!r}")
    if kind not in ("area", "lines"):
        raise ValueError(f"kind: expected 'area' or 'lines', got {kind!r}")
    if isinstance(fits, MixtureGrid):
        if N is not None or D is not None or compute is not None:
            raise ValueError("N, D, compute: not used when fits is a solved MixtureGrid")
        if weights is not None or options:
            raise ValueError("weights, options: not used when fits is a solved MixtureGrid (pass them to "
                             "optimize_mixture, or pass the fits here)")
        grid = fits
    else:
        if compute is not None:
            if N is not None or D is not None:
                raise ValueError("compute: give either compute or N and D, not both")
            if not (isinstance(tokens_per_param, numbers.Real) and tokens_per_param > 0):
                raise ValueError("tokens_per_param: must be a number > 0")
            C = np.atleast_1d(_floats(compute, "compute"))
            if C.ndim != 1 or C.size < 2 or not np.all(np.isfinite(C)) or np.any(C <= 0):
                raise ValueError("compute: expected at least two finite budgets > 0")
            N = np.sqrt(C / (6.0 * tokens_per_param))
            D = tokens_per_param * N
        elif N is None or D is None:
            raise ValueError("N, D: give the path as N and D arrays, or give compute")
        Nb, Db = (np.atleast_1d(a) for a in _budgets(N, D))
        if Nb.size < 2:
            raise ValueError("N, D: a path needs at least two budgets")
        grid = optimize_mixture(fits, N=Nb.ravel(), D=Db.ravel(), weights=weights, **options)
    xs = {"compute": 6.0 * grid.N * grid.D, "N": grid.N, "D": grid.D}[x]
    order = np.argsort(xs, kind="stable")
    xs, h = xs[order], 100 * np.asarray(grid.h)[order]
    domains = list(grid.domains)
    colors = _domain_colors(domains)
    ax = _new_axes(ax, (7.8, 4.4))
    if kind == "area":
        ax.stackplot(xs, h.T, labels=domains, colors=[colors[d] for d in domains], alpha=0.85,
                     edgecolor="white", linewidth=0.5)
        ax.set_ylim(0, 100)
    else:
        for i, d in enumerate(domains):
            ax.plot(xs, h[:, i], color=colors[d], lw=1.8, label=d)
        ax.set_ylim(0, max(5.0, float(h.max()) * 1.1))
    ax.set_xscale("log")
    ax.set_xlim(xs[0], xs[-1])
    _log_axis(ax.xaxis, float(xs[0]), float(xs[-1]), sizes=x != "compute")
    ax.set_xlabel(_X_LABELS[x])
    ax.set_ylabel("optimal weight h* (%)")
    law = getattr(getattr(fits, "law", None), "name", None)
    if title is None:
        names = " + ".join(grid.targets) if len(grid.targets) <= 3 else f"{len(grid.targets)} targets"
        how = "weighted" if weights is not None else ("equal weights" if len(grid.targets) > 1 else "")
        path = ""
        if compute is not None:
            path = f"; D = {tokens_per_param:g} N"
        title = (f"Optimal mixture along a scaling path{path}\n"
                 f"loss on {names}" + (f" ({how})" if how else "") + (f", {law} law" if law else ""))
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if kind == "area":  # legend in stacking order, top band first
        handles, labels = handles[::-1], labels[::-1]
    ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              borderaxespad=0.0, title="domain", title_fontsize=8)
    return ax


def pareto_front(front: Any, *, x: Optional[str] = None, y: Optional[str] = None, ax: Any = None,
                 title: Optional[str] = None) -> Any:
    """Predicted loss of target ``y`` against target ``x`` (default: the front's first two
    targets) at each point of a :class:`mixlaw.pareto.ParetoFront`: the non-dominated
    points joined in order of ``x``'s loss and coloured by ``x``'s weight, dominated points
    as grey crosses, the two single-target optima labelled."""
    from .pareto import ParetoFront

    if not isinstance(front, ParetoFront):
        raise TypeError("front: expected the result of mixlaw.pareto.pareto_front")
    names = list(front.targets)
    x = names[0] if x is None else x
    y = (names[1] if names[0] == x else names[0]) if y is None else y
    for arg, t in (("x", x), ("y", y)):
        if t not in names:
            raise ValueError(f"{arg}: {t!r} is not a target of the front; targets: {names}")
    if x == y:
        raise ValueError("x, y: need two different targets")
    i, j = names.index(x), names.index(y)
    ax = _new_axes(ax, (5.2, 4.2))
    eff = front.efficient
    order = np.argsort(front.losses[eff, i], kind="stable")
    lx, ly, wx = front.losses[eff, i][order], front.losses[eff, j][order], front.target_weights[eff, i][order]
    ax.plot(lx, ly, "-", color="0.6", lw=1, zorder=1)
    sc = ax.scatter(lx, ly, c=wx, cmap="viridis", vmin=0, vmax=1, s=18, zorder=2, label="non-dominated")
    if np.any(~eff):
        ax.scatter(front.losses[~eff, i], front.losses[~eff, j], marker="x", color="0.5", s=20, zorder=2,
                   label="dominated")
    for t, col in ((x, i), (y, j)):
        best = int(np.argmax(front.target_weights[:, col]))
        ax.annotate(f"{t} only", (front.losses[best, i], front.losses[best, j]), textcoords="offset points",
                    xytext=(6, 6), fontsize=8)
    ax.figure.colorbar(sc, ax=ax, label=f"weight of {x}")
    ax.set_xlabel(f"predicted loss, {x}")
    ax.set_ylabel(f"predicted loss, {y}")
    ax.set_title(title if title is not None else f"Pareto front at {_budget_text(front.N, front.D)}", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    return ax
