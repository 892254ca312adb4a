"""Pareto fronts: the trade-off between several targets' predicted losses.

A mixture is judged on many evaluations. Instead of one weighted sum, :func:`pareto_front`
solves ``min_h sum_t w_t L_t(N, D, h)`` for a sweep of target weights ``w`` on the simplex
of the chosen targets, all in one batched call of :func:`mixlaw.optimize_mixture`, and
returns every solution with its predicted losses and which of them are non-dominated.

Every minimiser of a weighted sum with all ``w_t > 0`` is Pareto optimal when it is the
global minimum; the solver certifies stationarity (the Frank-Wolfe gap), not global
optimality, so the front marks points another point of the sweep dominates
(``efficient == False``) instead of assuming none is. Weighted sums only reach the convex
part of a front (the supported points); a non-convex stretch shows up as a gap between
neighbouring points.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from .data import _budget_text
from .fit import _floats, _int_option
from .mixture import MixtureGrid, _as_fits, optimize_mixture

__all__ = ["ParetoFront", "pareto_front", "simplex_lattice", "non_dominated"]


@dataclass(frozen=True)
class ParetoFront:
    """Solutions of the weighted problems of a sweep (one row per weight vector).

    Attributes
    ----------
    targets : tuple
        The targets spanning the front (the columns of ``target_weights``).
    target_weights : ndarray (n, T)
        The weights of each problem (rows sum to 1).
    h : ndarray (n, k)
        The optimal mixture of each problem.
    losses : ndarray (n, T)
        The predicted losses of the front's targets at ``h``.
    efficient : ndarray (n,) bool
        Not dominated by another point of the sweep: no other point is at least as good on
        every target and better on one (beyond a relative 1e-12, the rounding of a loss).
    N, D : float
    grid : MixtureGrid
        The full results (certificates ``gap``, ``status``, the losses of every target of the
        fits, including those not on the front).
    """

    targets: tuple
    target_weights: np.ndarray
    h: np.ndarray
    losses: np.ndarray
    efficient: np.ndarray
    N: float
    D: float
    grid: MixtureGrid

    @property
    def domains(self) -> tuple:
        return self.grid.domains

    @property
    def success(self) -> bool:
        """Every problem of the sweep certified (Frank-Wolfe gap below ``gap_tol``)."""
        return bool(np.all(self.grid.status == 1))

    def __len__(self) -> int:
        return int(self.h.shape[0])

    def to_pandas(self) -> Any:
        """One row per point: ``w[<target>]``, ``loss[<target>]``, ``efficient``, ``gap``,
        ``status`` and one column per domain (its weight)."""
        import pandas as pd

        cols: dict = {}
        for j, t in enumerate(self.targets):
            cols[f"w[{t}]"] = self.target_weights[:, j]
        for j, t in enumerate(self.targets):
            cols[f"loss[{t}]"] = self.losses[:, j]
        cols["efficient"] = self.efficient
        cols["gap"], cols["status"] = self.grid.gap, self.grid.status
        for j, d in enumerate(self.domains):
            cols[d] = self.h[:, j]
        return pd.DataFrame(cols)

    def __repr__(self) -> str:
        return (f"ParetoFront({_budget_text(self.N, self.D, sep='=')}, targets={list(self.targets)}, "
                f"points={len(self)}, efficient={int(self.efficient.sum())}, success={self.success})")

    def _repr_html_(self) -> str:
        from . import _html

        head = _html.summary(f"Pareto front of {', '.join(self.targets)} at {_budget_text(self.N, self.D)}",
                             [("points", len(self)), ("efficient", int(self.efficient.sum())),
                              ("certified", f"{int(np.sum(self.grid.status == 1))} of {len(self)}")])
        idx = np.linspace(0, len(self) - 1, min(len(self), 12)).round().astype(int)
        rows = [(*self.target_weights[i], *self.losses[i], bool(self.efficient[i]), *(100 * self.h[i])) for i in idx]
        return head + _html.table([*(f"w[{t}]" for t in self.targets), *(f"loss[{t}]" for t in self.targets),
                                   "efficient", *(f"{d} %" for d in self.domains)], rows)

    def plot(self, **kwargs: Any) -> Any:
        """:func:`mixlaw.plots.pareto_front` of this front."""
        from . import plots

        return plots.pareto_front(self, **kwargs)


def simplex_lattice(n_targets: int, n_points: int) -> np.ndarray:
    """Weight vectors on the simplex of ``n_targets`` targets: for two, ``n_points``
    evenly spaced ``(w, 1 - w)`` from ``(0, 1)`` to ``(1, 0)``; for more, every point
    ``a / m`` with non-negative integers ``a`` summing to ``m``, the smallest ``m`` giving at
    least ``n_points`` of them (``C(m + T - 1, T - 1)``)."""
    T = _int_option(n_targets, "n_targets", lo=1)
    n = _int_option(n_points, "n_points", lo=1)
    if T == 1:
        return np.ones((1, 1))
    if T == 2:
        w = np.linspace(0.0, 1.0, n) if n > 1 else np.array([0.5])
        return np.column_stack([1.0 - w, w])
    m = 1
    while math.comb(m + T - 1, T - 1) < n:
        m += 1
    if math.comb(m + T - 1, T - 1) > 1_000_000:
        raise ValueError(f"n_points: {n} points on the simplex of {T} targets need a lattice of "
                         f"{math.comb(m + T - 1, T - 1):,} points; pass target_weights instead")
    rows: list = []

    def compose(prefix: list, left: int, parts: int) -> None:
        if parts == 1:
            rows.append(prefix + [left])
            return
        for a in range(left, -1, -1):
            compose(prefix + [a], left - a, parts - 1)

    compose([], m, T)
    return np.array(rows, dtype=float) / m


def non_dominated(losses: Any, rtol: float = 1e-12) -> np.ndarray:
    """(n,) bool: the rows of ``losses`` (n, T) that no other row dominates. Row j dominates
    row i when ``L_j <= L_i`` on every target and ``L_j < L_i`` on at least one, both beyond
    ``rtol |L_i|`` (so rows equal to rounding do not dominate each other). O(n^2 T) work,
    vectorised over blocks of rows of about 1e6 comparisons."""
    L = _floats(losses, "losses")
    if L.ndim != 2:
        raise ValueError(f"losses: expected a 2-D array (points, targets), got shape {L.shape}")
    n = L.shape[0]
    hi, lo = L + rtol * np.abs(L), L - rtol * np.abs(L)  # row i: L_j <= hi_i is "no worse", L_j < lo_i "better"
    out = np.ones(n, dtype=bool)
    step = max(1, 1_000_000 // max(1, L.size))
    for a in range(0, n, step):
        no_worse = np.all(L[None, :, :] <= hi[a:a + step, None, :], axis=2)
        better = np.any(L[None, :, :] < lo[a:a + step, None, :], axis=2)
        out[a:a + step] = ~np.any(no_worse & better, axis=1)
    return out


def pareto_front(fits: Any, *, N: Any = None, D: Any = None, targets: Optional[Sequence[str]] = None,
                 n_points: int = 101, target_weights: Any = None, **options: Any) -> ParetoFront:
    """The Pareto front of several targets' predicted losses at one budget.

    Parameters
    ----------
    fits : Fits, Fit list
        Fitted mixture laws, as for :func:`mixlaw.optimize_mixture`.
    N, D : float
        The budget (one model size and token count).
    targets : sequence of str, optional
        The targets spanning the front (at least two; default: every target of ``fits``).
        The other targets get weight 0; their losses are in ``front.grid.losses``.
    n_points : int
        Points of the sweep (:func:`simplex_lattice`; with three or more targets the
        lattice may have a few more).
    target_weights : array (n, T), optional
        The weight vectors instead (rows >= 0, normalised to sum 1), columns in the order
        of ``targets``.
    **options
        Passed to :func:`mixlaw.optimize_mixture` (``bounds``, ``available_tokens``,
        ``max_epochs``, ``method``, ``n_starts``, ``gap_tol``, ``prior``, ``kl``, ``threads``,
        ...). Every point is solved in the same batched call.

    Returns
    -------
    ParetoFront
    """
    if "weights" in options:
        raise ValueError("weights: pareto_front sets the target weights itself (use target_weights)")
    if isinstance(targets, str):
        raise ValueError("targets: expected a sequence of target names, got one string")
    flist = _as_fits(fits)
    names = tuple(f.target for f in flist)
    front = tuple(names) if targets is None else tuple(targets)
    unknown = [t for t in front if t not in names]
    if unknown:
        raise ValueError(f"targets: unknown target(s) {unknown}; targets: {list(names)}")
    if len(set(front)) != len(front):
        raise ValueError("targets: duplicate target names")
    if len(front) < 2:
        raise ValueError(f"targets: a front needs at least two targets, got {list(front)}")
    for arg, v in (("N", N), ("D", D)):
        if v is not None and np.ndim(v) != 0:
            raise ValueError(f"{arg}: pareto_front takes one budget (a number); loop over budgets for several")
    if target_weights is None:
        Wf = simplex_lattice(len(front), n_points)
    else:
        if hasattr(target_weights, "columns"):  # a DataFrame: its columns by target name, not by position
            cols = [str(c) for c in target_weights.columns]
            if sorted(cols) != sorted(front):
                raise ValueError(f"target_weights: columns {cols} are not the front's targets {list(front)}")
            target_weights = target_weights[[c for t in front for c in target_weights.columns if str(c) == t]]
        Wf = _floats(target_weights, "target_weights")
        if Wf.ndim != 2 or Wf.shape[1] != len(front) or Wf.shape[0] < 1:
            raise ValueError(f"target_weights: expected shape (n, {len(front)}), got {Wf.shape}")
        if not np.all(np.isfinite(Wf)) or np.any(Wf < 0) or np.any(Wf.sum(axis=1) <= 0):
            raise ValueError("target_weights: every row must be finite, >= 0 and not all zero")
        Wf = Wf / Wf.sum(axis=1, keepdims=True)
    n = Wf.shape[0]
    W = np.zeros((n, len(names)))
    cols = [names.index(t) for t in front]
    W[:, cols] = Wf
    # kl as an array of the sweep's length makes the call a batch even for laws without N
    # and D (whose budgets are omitted).
    kl = _floats(options.pop("kl", 0.0), "kl")
    if kl.ndim != 0 and kl.shape != (n,):
        raise ValueError(f"kl: expected one number or {n} (one per point), got shape {kl.shape}")
    grid = optimize_mixture(flist, N=None if N is None else np.full(n, float(N)),
                            D=None if D is None else np.full(n, float(D)), weights=W,
                            kl=np.broadcast_to(kl, (n,)), **options)
    losses = np.ascontiguousarray(grid.losses[:, cols])
    return ParetoFront(targets=front, target_weights=Wf, h=grid.h, losses=losses,
                       efficient=non_dominated(losses), N=math.nan if N is None else float(N),
                       D=math.nan if D is None else float(D), grid=grid)
