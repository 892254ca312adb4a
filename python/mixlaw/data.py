"""Training-run records: the :class:`Runs` table and :func:`load_runs`.

A *record* is one evaluated checkpoint: model size ``N`` (parameters), tokens seen ``D``,
the mixture ``h`` it was trained on (``k`` domain weights on the simplex) and the loss on
one or more *targets*. Records of the same training run (same ``N``, same mixture) share a
``run`` id so that resampling can be done over whole runs.

Tables are read by this module's own readers (CSV, Parquet through pyarrow, the ``parquet``
extra), DataFrames and dicts of arrays; :meth:`Runs.to_pandas` gives a DataFrame back.
"""
from __future__ import annotations

import csv
import fnmatch
import gzip
import io
import math
import os
import re
import types
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from . import _core
from ._warnings import user_stacklevel

__all__ = ["Runs", "load_runs", "UnitsWarning"]

#: Tolerance on the row sums of ``H``.
SIMPLEX_TOL = 1e-6
#: Relative tolerance used to match model sizes in :meth:`Runs.where`.
SIZE_RTOL = 1e-9
#: Relative token-count tolerance under which two equal-loss records of a run are duplicates.
DEDUP_RTOL = 1e-3

ColumnSpec = Union[str, Sequence[str], Mapping[str, str], None]

#: Below these largest values, model sizes and token counts look like they were given in
#: millions or billions (real runs have at least ~1e4 parameters and ~1e6 tokens).
_PLAUSIBLE_MAX = {"N": 1e4, "D": 1e6}


class UnitsWarning(UserWarning):
    """Model sizes or token counts that look like they were given in millions or billions
    (laws take raw counts: a fit in billions of tokens extrapolates wrongly)."""


def _check_units(N: np.ndarray, D: np.ndarray, hint: str) -> None:
    for name, v in (("N", N), ("D", D)):
        if v.size and float(v.max()) < _PLAUSIBLE_MAX[name]:  # False for a missing (NaN) column
            what = "model sizes" if name == "N" else "token counts"
            warnings.warn(
                f"{name}: the {what} are {_fmt_range(v)}, which looks like millions or billions, not raw "
                f"counts; laws take raw counts, so later predictions at raw sizes would be wrong. Rescale: "
                f"{hint.format(name=name)}", UnitsWarning, stacklevel=user_stacklevel())


def _fmt_range(v: np.ndarray) -> str:
    return f"{float(v.min()):.4g}..{float(v.max()):.4g}"


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _fmt_size(x: float) -> str:
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.4g}{unit}"
    return f"{x:.4g}"


def _budget_text(N: float, D: float, fmt: Callable[[float], str] = lambda v: f"{v:.4g}", sep: str = " = ",
                 tokens: str = "") -> str:
    """"N = .., D = ..": the budget of a mixture, without a value that is NaN (a law
    without that term was optimised without it)."""
    parts = [f"{name}{sep}{fmt(v)}{unit}" for name, v, unit in (("N", N, ""), ("D", D, tokens)) if not math.isnan(v)]
    return ", ".join(parts) if parts else "any N and D"


def _first_appearance_ids(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label the distinct rows of a 2-D array 0, 1, ... in order of first appearance.

    Returns ``(ids, first)`` where ``ids[j]`` is the label of row ``j`` and ``first[g]``
    the index of the first row with label ``g``. Rows are equal when every entry is
    (``-0.0 == 0.0``), as the core groups mixtures, which it does here too: by hashing,
    O(rows x columns), where sorting the rows (``np.unique(axis=0)``) costs
    O(rows log rows x columns) and dominated fits with many domains (bench/README.md,
    section 6)."""
    return _core.first_appearance_ids(rows)


def _known(v: np.ndarray) -> np.ndarray:
    """A column of model sizes or token counts for grouping rows: zeros when the table has
    none (all NaN), so that rows group by their other columns."""
    return np.zeros_like(v) if v.size and np.isnan(v[0]) else v


def _distinct_rows(H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of ``H`` in order of first appearance (``-0.0`` stored as ``0.0``)
    and each row's index among them: the mixtures as the core groups them."""
    H = np.asarray(H, dtype=float)
    ids, first = _first_appearance_ids(H)
    return np.ascontiguousarray(H[first] + 0.0), ids


class Runs:
    """Immutable table of training-run records.

    Parameters
    ----------
    N : array_like, shape (n,), or None
        Model sizes (raw parameter counts), finite and > 0. ``None``: the table has no
        model sizes (e.g. every run has the same one); it can then only be fitted by laws
        without a model-size term (``n_term=False`` and the baseline laws).
    D : array_like, shape (n,), or None
        Training tokens seen by each record (raw counts), finite and > 0. ``None``: no
        token counts (e.g. final checkpoints of one budget), for laws without a token term.
    H : array_like, shape (n, k), optional
        Mixture weights, finite, >= 0, each row summing to 1 within ``1e-6``
        (not checked when ``k == 0``). ``None`` means no mixture (``k = 0``).
    domains : sequence of str, optional
        The ``k`` domain names; defaults to ``"d0", "d1", ...``.
    targets : mapping of str to array_like, optional
        Target name -> observed loss per record, shape (n,). NaN marks a missing value;
        infinities are rejected.
    run : array_like of int, shape (n,), optional
        Training-run id of each record. Defaults to one id per distinct
        ``(N, mixture row)`` pair, numbered in order of first appearance.

    Attributes
    ----------
    N, D : ndarray of float64, shape (n,)
        All NaN when not given (see :attr:`has_N`, :attr:`has_D`).
    H : ndarray of float64, shape (n, k), C-contiguous
    domains : tuple of str
    targets : read-only mapping of str to ndarray of float64, shape (n,)
    run : ndarray of int64, shape (n,)

    Notes
    -----
    All arrays are private copies flagged read-only, and attributes cannot be rebound,
    so a ``Runs`` can be shared freely (e.g. cached, or sent to worker processes).

    Raises
    ------
    ValueError
        If an argument has the wrong shape or invalid values; the message names the
        argument and, for row-wise checks, the first offending row (0-based).
    """

    __slots__ = ("N", "D", "H", "domains", "targets", "run")

    N: np.ndarray
    D: np.ndarray
    H: np.ndarray
    domains: tuple[str, ...]
    targets: Mapping[str, np.ndarray]
    run: np.ndarray

    def __init__(
        self,
        N: Any,
        D: Any,
        H: Any = None,
        *,
        domains: Sequence[str] | None = None,
        targets: Mapping[str, Any] | None = None,
        run: Any = None,
    ) -> None:
        n = self._length(N, D, H, targets, run)
        N_ = np.full(n, np.nan) if N is None else self._vector(N, "N", n)
        D_ = np.full(n, np.nan) if D is None else self._vector(D, "D", n)
        for name, v, given in (("N", N_, N is not None), ("D", D_, D is not None)):
            if not given:
                continue
            bad = np.flatnonzero(~(np.isfinite(v) & (v > 0)))
            if bad.size:
                raise ValueError(
                    f"{name}: row {bad[0]} is {v[bad[0]]!r}, expected a finite value > 0"
                )

        if H is None:
            H_ = np.zeros((n, 0), dtype=np.float64)
        else:
            try:
                H_ = np.array(H, dtype=np.float64, order="C", copy=True)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"H: cannot convert to a float64 array ({exc})") from None
            if H_.ndim == 1 and n == 0 and H_.size == 0:
                H_ = H_.reshape(0, 0 if domains is None else len(domains))
            if H_.ndim != 2 or H_.shape[0] != n:
                raise ValueError(f"H: expected shape (n, k) with n = {n}, got {H_.shape}")
        k = H_.shape[1]
        bad_rows = np.flatnonzero(~np.isfinite(H_).all(axis=1))
        if bad_rows.size:
            raise ValueError(f"H: row {bad_rows[0]} has a non-finite weight")
        bad_rows = np.flatnonzero((H_ < 0).any(axis=1))
        if bad_rows.size:
            raise ValueError(f"H: row {bad_rows[0]} has a negative weight")
        if k:
            sums = H_.sum(axis=1)
            bad_rows = np.flatnonzero(np.abs(sums - 1.0) > SIMPLEX_TOL)
            if bad_rows.size:
                r = bad_rows[0]
                percent = bool(np.all(np.abs(sums - 100.0) <= 100.0 * SIMPLEX_TOL))
                raise ValueError(
                    f"H: row {r} sums to {sums[r]:.6g}, expected 1 within {SIMPLEX_TOL:g}"
                    + ("; every row sums to 100: these look like percentages, divide the weights by 100"
                       if percent else "")
                )

        if domains is None:
            doms = tuple(f"d{i}" for i in range(k))
        else:
            if isinstance(domains, str):
                raise ValueError("domains: expected a sequence of names, got a single string")
            doms = tuple(domains)
            if len(doms) != k:
                raise ValueError(f"domains: expected {k} names (columns of H), got {len(doms)}")
            self._check_names(doms, "domains")

        tg: dict[str, np.ndarray] = {}
        if targets is not None:
            if not isinstance(targets, Mapping):
                raise ValueError("targets: expected a mapping of name -> array")
            self._check_names(tuple(targets), "targets")
            for name, values in targets.items():
                y = self._vector(values, f"targets[{name!r}]", n)
                bad = np.flatnonzero(np.isinf(y))
                if bad.size:
                    raise ValueError(
                        f"targets[{name!r}]: row {bad[0]} is {y[bad[0]]!r}; "
                        "use NaN for a missing value"
                    )
                tg[name] = y

        if run is None:
            run_ = _first_appearance_ids(np.column_stack([_known(N_), H_]))[0]
        else:
            r = np.asarray(run)
            if r.shape != (n,):
                raise ValueError(f"run: expected shape ({n},), got {r.shape}")
            if r.size and r.dtype.kind not in "iu":
                if r.dtype.kind == "f" and np.all(np.isfinite(r)) and np.all(r == np.round(r)):
                    r = r.astype(np.int64)
                else:
                    raise ValueError(f"run: expected integer ids, got dtype {r.dtype}")
            run_ = np.array(r, dtype=np.int64, copy=True)

        self._init(N_, D_, H_, doms, tg, run_)
        _check_units(N_, D_, "Runs({name}=values * 1e9, ...) for billions, or load_runs(..., {name}_unit=1e9)")

    # -- construction helpers -------------------------------------------------------
    @staticmethod
    def _length(N: Any, D: Any, H: Any, targets: Any, run: Any) -> int:
        """The number of records: the length of the first of N, D, H, run, targets given."""
        given = [N, D, H, run] + (list(targets.values())[:1] if isinstance(targets, Mapping) else [])
        for v in given:
            if v is not None:
                try:
                    shape = np.shape(v)
                except ValueError:  # ragged: the conversion below names the argument
                    return 0
                return int(shape[0]) if shape else 0
        raise ValueError("N: give the model sizes, or with N=None at least one of D, H, run or targets "
                         "(the number of records is their length)")

    @staticmethod
    def _vector(values: Any, name: str, n: int | None = None) -> np.ndarray:
        try:
            v = np.array(values, dtype=np.float64, copy=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: cannot convert to a float64 array ({exc})") from None
        if v.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D array, got shape {v.shape}")
        if n is not None and v.shape[0] != n:
            raise ValueError(f"{name}: expected length {n} (the number of records), got {v.shape[0]}")
        return v

    @staticmethod
    def _check_names(names: tuple, arg: str) -> None:
        for nm in names:
            if not isinstance(nm, str) or not nm:
                raise ValueError(f"{arg}: names must be non-empty strings, got {nm!r}")
        if len(set(names)) != len(names):
            dup = sorted({x for x in names if names.count(x) > 1})
            raise ValueError(f"{arg}: duplicated names {dup}")

    def _init(
        self,
        N: np.ndarray,
        D: np.ndarray,
        H: np.ndarray,
        domains: tuple[str, ...],
        targets: dict[str, np.ndarray],
        run: np.ndarray,
    ) -> None:
        # Attributes are set once here, bypassing the __setattr__ guard.
        s = object.__setattr__
        s(self, "N", _readonly(N))
        s(self, "D", _readonly(D))
        s(self, "H", _readonly(np.ascontiguousarray(H)))
        s(self, "domains", domains)
        s(self, "targets", types.MappingProxyType({t: _readonly(y) for t, y in targets.items()}))
        s(self, "run", _readonly(run))

    @classmethod
    def _unchecked(cls, N, D, H, domains, targets, run) -> "Runs":
        """Build from arrays already validated (subsets of a valid table)."""
        self = object.__new__(cls)
        self._init(N, D, H, domains, targets, run)
        return self

    # -- immutability and pickling --------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Runs is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Runs is immutable; cannot delete {name!r}")

    def __reduce__(self):
        # MappingProxyType does not pickle; rebuild through the validating constructor.
        return (
            _rebuild_runs,
            (self.N if self.has_N else None, self.D if self.has_D else None, self.H, self.domains,
             dict(self.targets), self.run),
        )

    # -- basic properties -----------------------------------------------------------
    def __len__(self) -> int:
        return int(self.N.shape[0])

    @property
    def k(self) -> int:
        """Number of domains (columns of ``H``)."""
        return int(self.H.shape[1])

    @property
    def has_N(self) -> bool:
        """Whether the table has model sizes (False when built with ``N=None``)."""
        return not (len(self) and bool(np.isnan(self.N[0])))

    @property
    def has_D(self) -> bool:
        """Whether the table has token counts (False when built with ``D=None``)."""
        return not (len(self) and bool(np.isnan(self.D[0])))

    def _require(self, column: str, arg: str, why: str, fix: str = "") -> None:
        """ValueError naming ``arg`` when the table has no ``column`` ("N" or "D")."""
        if not (self.has_N if column == "N" else self.has_D):
            what = "model sizes" if column == "N" else "token counts"
            raise ValueError(f"{arg}: {why} needs the {what} {column}, and these runs have none "
                             f"(built or loaded with {column}=None){fix}")

    @property
    def target_names(self) -> tuple[str, ...]:
        """Names of the targets, in column order."""
        return tuple(self.targets)

    @property
    def model_sizes(self) -> np.ndarray:
        """Sorted distinct model sizes (empty when the table has none)."""
        return _readonly(np.unique(self.N) if self.has_N else np.empty(0))

    @property
    def mixtures(self) -> np.ndarray:
        """Distinct rows of ``H`` in order of first appearance, shape (m, k)."""
        _, first = _first_appearance_ids(self.H)
        return _readonly(np.ascontiguousarray(self.H[first]))

    def __repr__(self) -> str:
        ms = self.model_sizes
        if not self.has_N:
            sizes = "no N"
        elif ms.size <= 8:
            sizes = "sizes [" + ", ".join(_fmt_size(s) for s in ms) + "]"
        else:  # e.g. digitised data with a different N for nearly every run
            sizes = f"{ms.size} sizes {_fmt_size(ms[0])}..{_fmt_size(ms[-1])}"
        doms = ", ".join(self.domains)
        if not self.has_D:
            tokens = "no D"
        else:
            tokens = f"D {_fmt_size(float(self.D.min()))}..{_fmt_size(float(self.D.max()))}" if len(self) else "D -"
        return (
            f"Runs(n={len(self)}, runs={np.unique(self.run).size}, k={self.k} domains [{doms}], "
            f"{sizes}, {tokens}, targets [{', '.join(self.target_names)}])"
        )

    def _repr_html_(self) -> str:
        from . import _html

        ms = self.model_sizes
        sizes = ", ".join(_fmt_size(v) for v in ms[:8]) + (" ..." if ms.size > 8 else "") if self.has_N else "none"
        head = _html.summary(f"Runs: {len(self)} records of {np.unique(self.run).size} runs",
                             [("domains", ", ".join(self.domains)), ("model sizes", sizes),
                              ("targets", ", ".join(self.target_names))])
        n_show = min(len(self), 10)
        return head + self.to_pandas().head(n_show)._repr_html_()

    def to_pandas(self) -> Any:
        """The table as a DataFrame, one row per record, with the columns of :meth:`to_dict`
        (``load_runs(runs.to_pandas(), run="run")`` rebuilds an equal table; add ``N=None``
        or ``D=None`` for a table without them)."""
        import pandas as pd

        return pd.DataFrame({name: np.array(col) for name, col in self.to_dict().items()})

    def to_dict(self) -> dict[str, np.ndarray]:
        """Column arrays, named like the default columns of :func:`load_runs`.

        Returns
        -------
        dict
            ``"model_size"``, ``"n_tokens"`` (each only when the table has it),
            ``"weight_<domain>"`` for each domain, ``"<target>_loss"`` for each target and
            ``"run"``, so that ``load_runs(runs.to_dict(), run="run")`` rebuilds an equal
            table (with ``N=None`` or ``D=None`` for a table without them).
            Arrays are read-only views.
        """
        out: dict[str, np.ndarray] = {}
        if self.has_N:
            out["model_size"] = self.N
        if self.has_D:
            out["n_tokens"] = self.D
        for i, d in enumerate(self.domains):
            out[f"weight_{d}"] = self.H[:, i]
        for t, y in self.targets.items():
            out[f"{t}_loss"] = y
        out["run"] = self.run
        return out

    # -- subsetting -----------------------------------------------------------------
    def select(self, mask_or_indices: Any) -> "Runs":
        """Records picked by a boolean mask of length n or by integer indices.

        Parameters
        ----------
        mask_or_indices : array_like of bool, shape (n,), or array_like of int
            Boolean mask, or indices (negative allowed, repeats allowed, order kept).

        Returns
        -------
        Runs
            A new table; run ids are kept.
        """
        n = len(self)
        sel = np.asarray(mask_or_indices)
        if sel.dtype == bool:
            if sel.shape != (n,):
                raise ValueError(
                    f"mask_or_indices: boolean mask must have shape ({n},), got {sel.shape}"
                )
            idx = np.flatnonzero(sel)
        else:
            if sel.size == 0:
                sel = sel.astype(np.int64)
            if sel.ndim != 1 or sel.dtype.kind not in "iu":
                raise ValueError(
                    "mask_or_indices: expected a boolean mask or a 1-D array of integer "
                    f"indices, got dtype {sel.dtype} and shape {sel.shape}"
                )
            if sel.size and (sel.min() < -n or sel.max() >= n):
                raise ValueError(f"mask_or_indices: index out of range for {n} records")
            if n > 2 and sel.shape == (n,) and np.all((sel == 0) | (sel == 1)):
                # Read as indices, a 0/1 mask would give n copies of records 0 and 1.
                raise ValueError("mask_or_indices: n integers that are all 0 or 1 look like a mask; pass it as "
                                 "booleans (mask.astype(bool)), or indices of the records to keep")
            idx = sel.astype(np.int64)
        return self._take(idx)

    def _take(self, idx: np.ndarray) -> "Runs":
        return Runs._unchecked(
            self.N[idx],
            self.D[idx],
            np.ascontiguousarray(self.H[idx]),
            self.domains,
            {t: y[idx] for t, y in self.targets.items()},
            self.run[idx],
        )

    def _size_mask(self, size: float, arg: str) -> np.ndarray:
        self._require("N", arg, "selecting by model size")
        m = np.abs(self.N - size) <= SIZE_RTOL * abs(size)
        if not m.any():
            avail = ", ".join(f"{s:g}" for s in self.model_sizes)
            raise ValueError(f"{arg}: no record has model size {size:g} (available: {avail})")
        return m

    def _token_bound(self, bound: Any, arg: str) -> np.ndarray:
        """Per-record bound from a scalar or a {model_size: bound} mapping (NaN = none)."""
        if isinstance(bound, Mapping):
            out = np.full(len(self), np.nan)
            for size, b in bound.items():
                out[self._size_mask(float(size), arg)] = float(b)
        else:
            try:
                out = np.full(len(self), float(bound))
            except (TypeError, ValueError):
                raise ValueError(
                    f"{arg}: expected a number or a mapping model_size -> number, got {bound!r}"
                ) from None
        given = list(bound.values()) if isinstance(bound, Mapping) else [bound]
        if any(math.isnan(float(b)) for b in given):  # NaN would quietly mean "no bound"
            raise ValueError(f"{arg}: NaN is not a token count; leave the bound out for none")
        return out

    def where(
        self,
        *,
        model_size: float | Iterable[float] | None = None,
        min_tokens: float | Mapping[float, float] | None = None,
        max_tokens: float | Mapping[float, float] | None = None,
    ) -> "Runs":
        """Records filtered by model size and token range (bounds inclusive).

        Parameters
        ----------
        model_size : float or collection of float, optional
            Keep records whose ``N`` equals one of these values within a relative
            tolerance of 1e-9. A value matching no record raises ``ValueError``.
        min_tokens, max_tokens : float or mapping, optional
            Keep records with ``min_tokens <= D <= max_tokens``. A mapping
            ``{model_size: bound}`` sets a bound per size; sizes absent from it are
            unbounded, and a key matching no record raises ``ValueError``.

        Returns
        -------
        Runs
        """
        keep = np.ones(len(self), dtype=bool)
        if model_size is not None:
            sizes = (
                [model_size]
                if np.ndim(model_size) == 0
                else list(model_size)  # type: ignore[arg-type]
            )
            m = np.zeros(len(self), dtype=bool)
            for s in sizes:
                try:
                    s = float(s)
                except (TypeError, ValueError):
                    raise ValueError(f"model_size: expected numbers, got {s!r}") from None
                m |= self._size_mask(s, "model_size")
            keep &= m
        if min_tokens is not None or max_tokens is not None:
            self._require("D", "min_tokens" if min_tokens is not None else "max_tokens",
                          "selecting by token count")
        if min_tokens is not None:
            lo = self._token_bound(min_tokens, "min_tokens")
            keep &= np.isnan(lo) | (self.D >= np.nan_to_num(lo, nan=-np.inf))
        if max_tokens is not None:
            hi = self._token_bound(max_tokens, "max_tokens")
            keep &= np.isnan(hi) | (self.D <= np.nan_to_num(hi, nan=np.inf))
            if min_tokens is not None and np.any(lo > hi):  # NaN compares False
                raise ValueError("min_tokens, max_tokens: the minimum is above the maximum; nothing would be kept")
        return self._take(np.flatnonzero(keep))

    def target(self, name: str) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray, np.ndarray]:
        """Arrays ``(N, D, H, y)`` for one target, without the records where it is NaN;
        ``N`` (``D``) is None when the table has no model sizes (token counts).

        Parameters
        ----------
        name : str
            A target name (see :attr:`target_names`).

        Raises
        ------
        ValueError
            If ``name`` is not a target of this table.
        """
        if name not in self.targets:
            raise ValueError(
                f"target: unknown target {name!r}; available: {', '.join(self.target_names)}"
            )
        y = self.targets[name]
        ok = ~np.isnan(y)
        N, D = self._N_D
        if ok.all():
            return N, D, self.H, y
        return tuple(  # type: ignore[return-value]
            None if a is None else _readonly(np.ascontiguousarray(a[ok])) for a in (N, D, self.H, y)
        )

    @property
    def _N_D(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(N, D)`` as laws take them: None for a column the table does not have."""
        return (self.N if self.has_N else None, self.D if self.has_D else None)


def _rebuild_runs(N, D, H, domains, targets, run) -> Runs:
    return Runs(N, D, H, domains=domains, targets=targets, run=run)


# ----------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------

# A bracket set may start with "!" and then "]" as a literal member, as in fnmatch.
_WILDCARD = re.compile(r"\*|\?|\[!?\]?[^\]]*\]")


def _glob_to_regex(pattern: str) -> re.Pattern:
    """fnmatch-style pattern -> regex whose groups capture the wildcard parts."""
    parts, pos = [], 0
    for m in _WILDCARD.finditer(pattern):
        parts.append(re.escape(pattern[pos : m.start()]))
        tok = m.group()
        if tok == "*":
            parts.append("(.*)")
        elif tok == "?":
            parts.append("(.)")
        else:
            body = tok[1:-1]
            neg = body.startswith("!")
            # Escape what a regex set would read as nesting or set operations.
            body = re.sub(r"([\\\[&~|^])", r"\\\1", body[1:] if neg else body)
            parts.append(f"([{'^' if neg else ''}{body}])")
        pos = m.end()
    parts.append(re.escape(pattern[pos:]))
    return re.compile("".join(parts) + r"\Z", re.DOTALL)


def _resolve_columns(
    spec: ColumnSpec, columns: Sequence[str], arg: str, kind: str = "column"
) -> list[tuple[str, str]]:
    """Resolve a glob / list / mapping into ``[(column, derived name), ...]``.

    ``kind`` is the word for what is matched in error messages ("column", or "target name"
    for the values of a long table's target column).
    """
    if spec is None:
        return []
    avail = ", ".join(columns)
    if isinstance(spec, str):
        if _WILDCARD.search(spec) is None:
            if spec not in columns:
                raise ValueError(f"{arg}: no {kind} {spec!r}; available {kind}s: {avail}")
            return [(spec, spec)]
        rx = _glob_to_regex(spec)
        out = []
        for c in columns:
            if fnmatch.fnmatchcase(c, spec):
                m = rx.match(c)
                name = "".join(m.groups()) if m else c
                out.append((c, name or c))
        if not out:
            raise ValueError(f"{arg}: pattern {spec!r} matches no {kind}; available {kind}s: {avail}")
        names = [nm for _, nm in out]
        if len(set(names)) != len(names):
            raise ValueError(f"{arg}: pattern {spec!r} gives duplicated names {names}")
        return out
    if isinstance(spec, Mapping):
        pairs = list(spec.items())
    elif isinstance(spec, Iterable):
        pairs = [(c, c) for c in spec]
    else:
        raise ValueError(
            f"{arg}: expected a glob pattern, a list of columns or a mapping column -> name, "
            f"got {spec!r}"
        )
    for c, nm in pairs:
        if not isinstance(c, str) or not isinstance(nm, str) or not nm:
            raise ValueError(f"{arg}: column and domain/target names must be strings, got {c!r}")
        if c not in columns:
            raise ValueError(f"{arg}: no {kind} {c!r}; available {kind}s: {avail}")
    names = [nm for _, nm in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"{arg}: duplicated names {names}")
    return pairs


def _parse_cells(
    values: Any, column: str, arg: str, *, allow_missing: bool, row_note: Callable[[int], str]
) -> np.ndarray:
    """Convert one column to float64; missing cells -> NaN or ValueError."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{arg}: column {column!r} is not 1-D (shape {arr.shape})")
    if arr.dtype.kind in "biuf":
        out = arr.astype(np.float64)
    else:
        out = np.empty(arr.shape[0], dtype=np.float64)
        for i, cell in enumerate(arr.tolist()):
            if cell is None or (isinstance(cell, str) and not cell.strip()):
                out[i] = np.nan
                continue
            try:
                out[i] = float(cell)
            except (TypeError, ValueError):
                if str(cell) in ("<NA>", "NaT", "nan"):  # pandas NA / NaT, NaN-like objects
                    out[i] = np.nan
                    continue
                raise ValueError(
                    f"{arg}: column {column!r}, {row_note(i)}: cannot parse {cell!r} as a number"
                ) from None
    if not allow_missing:
        bad = np.flatnonzero(np.isnan(out))
        if bad.size:
            raise ValueError(f"{arg}: column {column!r}, {row_note(bad[0])}: empty or missing value")
    return out


def _read_csv(path: Path) -> tuple[list[str], Any]:
    """The header and the DataFrame of a CSV file, parsed by pandas' C reader (faster than
    the csv module on large tables: bench/README.md, "Reading CSV files through pandas").
    One pass of the csv module checks what pandas would let through: duplicated column names
    (pandas renames them) and rows with another number of fields than the header (pandas
    fills short rows with missing values, a silently truncated row); rows of blank cells are
    skipped, as blank lines are."""
    import pandas as pd

    opener = gzip.open if path.name.endswith(".gz") else open
    blank_lines = []
    with opener(path, "rt", newline="", encoding="utf-8-sig") as fh:  # type: ignore[operator]
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"source: {path} is empty") from None
        header = [h.strip() for h in header]
        if len(set(header)) != len(header):
            raise ValueError(f"source: {path} has duplicated column names")
        for row in reader:
            if not row or all(not c.strip() for c in row):
                blank_lines.append(reader.line_num - 1)  # 0-based line of this record
            elif len(row) != len(header):
                raise ValueError(
                    f"source: {path}, line {reader.line_num} has {len(row)} fields, header has {len(header)}"
                )
    frame = pd.read_csv(path, encoding="utf-8-sig", keep_default_na=False, na_values=[""],
                        skiprows=blank_lines or None, low_memory=False)
    frame.columns = header
    return header, frame


def _read_parquet(path: Path) -> tuple[list[str], dict[str, list]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            "reading Parquet needs pyarrow (pip install 'mixlaw[parquet]'); "
            "alternatively pass a CSV path, a DataFrame or a dict of arrays"
        ) from None
    table = pq.read_table(path)
    header = list(table.column_names)
    return header, {c: table.column(c).to_pylist() for c in header}


def _frame_column(frame: Any, c: str) -> Any:
    col = frame[c]
    to_numpy = getattr(col, "to_numpy", None)
    if to_numpy is None:
        return np.asarray(col)
    try:  # pandas: nullable numeric columns -> float with NaN
        return to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        return to_numpy()


def _open_source(source: Any) -> tuple[list[str], Callable[[str], Any], Callable[[int], str]]:
    """Return (column names, column getter, row description) for any supported source."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"source: no such file {str(path)!r}")
        name = path.name.lower()
        if name.endswith((".parquet", ".pq")):
            header, cols = _read_parquet(path)
            return header, cols.__getitem__, lambda i: f"row {i}"
        header, frame = _read_csv(path)
        # Blank lines are skipped, so the line number is only exact for files without them.
        return header, lambda c: _frame_column(frame, c), lambda i: f"row {i} (line {i + 2})"
    if isinstance(source, Mapping):
        header = [str(c) for c in source]
        return header, source.__getitem__, lambda i: f"row {i}"
    if hasattr(source, "columns") and hasattr(source, "__getitem__"):
        header = [str(c) for c in list(source.columns)]
        return header, lambda c: _frame_column(source, c), lambda i: f"row {i}"
    if isinstance(source, (bytes, io.IOBase)):
        raise ValueError("source: pass a file path, not an open file or bytes")
    raise ValueError(
        "source: expected a CSV/Parquet path, a DataFrame or a mapping of column -> array, "
        f"got {type(source).__name__}"
    )


class _DefaultTargets(str):
    """The default ``targets`` of :func:`load_runs`: ``"*_loss"`` for a wide table, every
    target name for a long one. A distinct type, so that an explicit ``"*_loss"`` keeps its
    glob meaning in a long table."""

    __slots__ = ()


_DEFAULT_TARGETS = _DefaultTargets("*_loss")


def load_runs(
    source: Any,
    *,
    weights: ColumnSpec = "weight_*",
    N: str | None = "model_size",
    D: str | None = "n_tokens",
    targets: ColumnSpec = _DEFAULT_TARGETS,
    run: str | None = None,
    dedup: bool = False,
    renormalize: bool = False,
    target_column: str | None = None,
    loss_column: str | None = None,
    N_unit: float = 1.0,
    D_unit: float = 1.0,
) -> Runs:
    """Load training-run records from a table.

    Two layouts are read. *Wide* (the default): one row per checkpoint, one loss column per
    target. *Long* (``target_column`` given): one row per (run, checkpoint, target), with
    the target's name in ``target_column`` and its loss in ``loss_column``; the rows are
    pivoted into the same table, one record per (run, ``D``) and one loss per target, with
    NaN where a target has no row.

    Parameters
    ----------
    source : str, path, DataFrame or mapping
        A CSV file (optionally ``.gz``; read by pandas, ``#`` in cells is harmless), a
        Parquet file (``.parquet``/``.pq``; needs pyarrow), a pandas-like DataFrame, or a
        mapping of column name -> 1-D array.
    weights : str, list of str, mapping or None
        Mixture-weight columns. A glob pattern (:func:`fnmatch.fnmatchcase`) names each
        domain by what the wildcards matched (``"weight_*"``: ``weight_arxiv`` ->
        ``"arxiv"``); a list uses the column names as domain names; a mapping
        ``{column: name}`` gives names explicitly. ``None`` or ``[]`` means no mixture
        (``k = 0``). Domain order is column order (glob) or the given order.
    N, D : str or None
        Columns holding the model size and the token count. ``None``: the table has no
        such column (e.g. runs of one model size, or final checkpoints only); the runs can
        then be fitted by laws without that term only (``n_term=False`` / ``d_term=False``,
        the baseline laws), which :func:`mixlaw.fit` checks.
    targets : str, list of str, mapping or None
        Target-loss columns, resolved like ``weights`` (``"*_loss"``: ``arxiv_loss``
        -> ``"arxiv"``). Empty cells become NaN. In a long table, the same kinds of
        selection apply to the target *names* found in ``target_column`` (``"val_*"``:
        ``val_c4`` -> ``"c4"``), and the default keeps every target under its own name.
    run : str, optional
        Column of run ids: integers, or any labels (e.g. strings, numbered 0, 1, ... in
        order of first appearance; in a wide table integer ids are kept as they are). By
        default records with the same ``N`` and the same mixture row belong to the same
        run. Every row of a run must have the same ``N`` and weights.
    dedup : bool
        Drop duplicated checkpoints: within a run, a record whose token count is within
        a relative 1e-3 of the previous record (in order of ``D``) and whose target
        values all equal that record's (NaN equals NaN) is dropped, so of a group of
        such copies the one with the *smallest* token count is kept. In the SlimPajama file every run ends
        with such a pair, e.g. 19.998e9 and 20.0e9 tokens for 122M/310M, where
        19.998e9 continues the run's checkpoint grid (1.998e9, 3.998e9, ...) and 20.0e9
        is the nominal budget; both carry bit-identical losses. The pair differs by
        < 1e-4 in D, so the choice does not change fits materially.
    renormalize : bool
        Divide each weight row by its sum (public tables round weights). Otherwise a
        row off the simplex by more than 1e-6 raises ``ValueError``.
    target_column : str, optional
        Long table: the column naming the target of each row. Records are the distinct
        (run, ``D``) pairs in order of first appearance (one record per run with
        ``D=None``); a target missing at a checkpoint is NaN there (and dropped for that
        target only, as in a wide table). Rows of targets not selected by ``targets`` are
        ignored.
    loss_column : str, optional
        Long table: the column of losses (default ``"loss"``). Empty cells are missing
        values. Only valid together with ``target_column``.
    N_unit, D_unit : float
        What one unit of the ``N`` and ``D`` columns is, in parameters and tokens: e.g.
        ``D_unit=1e9`` for a column of billions of tokens. Laws take raw counts; a table
        whose largest N is below 1e4 or largest D below 1e6 gives a
        :class:`UnitsWarning` that names these options.

    Returns
    -------
    Runs

    Raises
    ------
    ValueError
        Unknown column (message names the argument and lists the columns); empty or
        non-numeric cell in ``N``, ``D``, ``run`` or a weight column (message gives the
        row and column); invalid values (see :class:`Runs`). Long tables: an empty
        target name (``target_column``), two rows giving the same (run, ``D``, target)
        different losses (``loss_column``, both rows named), rows of one run with
        different ``N`` or weights (``N`` / ``weights``, both rows named).
    ImportError
        Parquet source without pyarrow installed.

    Examples
    --------
    A long table with columns ``run, params, tokens, w_web, w_code, metric, value``::

        runs = load_runs("evals.csv", target_column="metric", loss_column="value",
                         run="run", N="params", D="tokens", weights="w_*")
    """
    units = (_unit_option(N_unit, "N_unit"), _unit_option(D_unit, "D_unit"))
    for arg, c in (("N", N), ("D", D)):
        if c is not None and not isinstance(c, str):
            raise ValueError(f"{arg}: expected a column name or None, got {c!r}")
    if dedup and D is None:
        raise ValueError("dedup: dropping duplicated checkpoints needs the token counts (D=None given)")
    header, get, row_note = _open_source(source)
    if target_column is not None or loss_column is not None:
        if target_column is None:
            raise ValueError("loss_column: only used with target_column (a long table)")
        runs = _load_long(
            header, get, row_note, weights=weights, N=N, D=D, targets=targets, run=run,
            renormalize=renormalize, target_column=target_column,
            loss_column="loss" if loss_column is None else loss_column, units=units,
        )
    else:
        runs = _load_wide(header, get, row_note, weights=weights, N=N, D=D,
                          targets=str(targets) if isinstance(targets, _DefaultTargets) else targets,
                          run=run, renormalize=renormalize, units=units)
    return runs.select(~_duplicate_checkpoints(runs)) if dedup else runs


def _unit_option(value: Any, arg: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{arg}: expected a number (e.g. 1e9 for billions), got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{arg}: must be finite and > 0, got {value!r}")
    return float(value)


def _require_columns(header: list[str], columns: Sequence[tuple[str, str | None]]) -> None:
    """Each ``(argument, column)`` names an existing column (None: not used)."""
    for arg, c in columns:
        if c is not None and c not in header:
            raise ValueError(f"{arg}: no column {c!r}; available columns: {', '.join(header)}")


def _column_reader(get: Callable[[str], Any], row_note: Callable[[int], str], n: int,
                   ref: str) -> Callable[[str, str, bool], np.ndarray]:
    """``read(column, arg, allow_missing)``: the parsed cells of a column, which must have
    ``n`` rows like column ``ref``."""
    def read(c: str, arg: str, missing: bool) -> np.ndarray:
        v = _parse_cells(get(c), c, arg, allow_missing=missing, row_note=row_note)
        if v.shape[0] != n:
            raise ValueError(f"{arg}: column {c!r} has {v.shape[0]} rows, column {ref!r} has {n}")
        return v
    return read


def _renormalized(H: np.ndarray, row_note: Callable[[int], str], rows: np.ndarray | None = None) -> np.ndarray:
    """``H`` with every row divided by its sum; ``rows[i]`` is the source row of ``H[i]``
    (default ``i``) for the error when a row cannot be rescaled."""
    s = H.sum(axis=1)
    bad = np.flatnonzero(~(s > 0) | ~np.isfinite(s))
    if bad.size:
        i = int(bad[0] if rows is None else rows[bad[0]])
        raise ValueError(f"weights: {row_note(i)} sums to {s[bad[0]]!r}, cannot renormalize")
    return H / s[:, None]


def _load_wide(header: list[str], get: Callable[[str], Any], row_note: Callable[[int], str], *,
               weights: ColumnSpec, N: str, D: str, targets: ColumnSpec, run: str | None,
               renormalize: bool, units: tuple[float, float] = (1.0, 1.0)) -> Runs:
    """One row per checkpoint, one loss column per target."""
    _require_columns(header, (("N", N), ("D", D), ("run", run)))
    wcols = _resolve_columns(weights, header, "weights")
    tcols = _resolve_columns(targets, header, "targets")
    ref = next((c for c in (N, D, *(c for c, _ in wcols + tcols), run) if c is not None), None)
    if ref is None:
        raise ValueError("N: with N=None and D=None the table needs weight, target or run columns")
    n = len(get(ref))
    read = _column_reader(get, row_note, n, ref)
    N_ = None if N is None else read(N, "N", False)
    D_ = None if D is None else read(D, "D", False)
    H = np.empty((n, len(wcols)), dtype=np.float64)
    for j, (c, _) in enumerate(wcols):
        H[:, j] = read(c, "weights", False)
    if renormalize and wcols:
        H = _renormalized(H, row_note)
    tg = {name: read(c, "targets", True) for c, name in tcols}
    run_ = None
    if run is not None:  # labels: integers are kept as ids, other labels (strings) numbered
        run_ = _run_ids(_labels(get(run), run, "run", row_note, ids=True), N_, H, row_note, keep_integers=True)
    return _runs_from_columns(N_, D_, H, units, domains=[nm for _, nm in wcols], targets=tg, run=run_)


def _runs_from_columns(N: np.ndarray | None, D: np.ndarray | None, H: np.ndarray,
                       units: tuple[float, float], **kwargs: Any) -> Runs:
    """:class:`Runs` of loaded columns (``N`` and ``D`` times their units; None: no such
    column). Runs names its own argument H; here the weights come from the ``weights``
    columns, so errors name that argument."""
    N = None if N is None else N * units[0]
    D = None if D is None else D * units[1]
    try:
        with warnings.catch_warnings():  # warned below, naming load_runs' options
            warnings.simplefilter("ignore", UnitsWarning)
            runs = Runs(N, D, H, **kwargs)
        _check_units(runs.N, runs.D, "load_runs(..., {name}_unit=1e9) for billions (on the command line "
                                     "--{name}-unit 1e9)")
        return runs
    except ValueError as exc:
        msg = str(exc)
        if not msg.startswith("H: "):
            raise
        hint = " (renormalize=True rescales each row to sum to 1)" if "sums to" in msg else ""
        raise ValueError(f"weights: {msg[3:]}{hint}") from None


def _run_ids(labels: list, N: np.ndarray | None, H: np.ndarray, row_note: Callable[[int], str], *,
             keep_integers: bool) -> np.ndarray:
    """Integer run ids of a run column's labels (:func:`_labels`): the integers themselves
    when ``keep_integers`` and every label is one, else 0, 1, ... in order of first
    appearance. Every row of a run must have the same ``N`` (None: no model sizes) and
    weights (a ValueError names both rows)."""
    index: dict = {}
    order = np.array([index.setdefault(r, len(index)) for r in labels], dtype=np.int64)
    # numbered by first appearance, so first[id] is the first row of run id
    f = np.unique(order, return_index=True)[1][order]
    checks = ([] if N is None else [("N", N != N[f])]) + [("weights", (H != H[f]).any(axis=1))]
    for arg, differs in checks:
        rows = np.flatnonzero(differs)
        if rows.size:
            i = int(rows[0])
            raise ValueError(
                f"{arg}: {row_note(i)} and {row_note(int(f[i]))} belong to the same run "
                f"{labels[i]!r} but have different "
                f"{'model sizes' if arg == 'N' else 'mixture weights'}"
            )
    if keep_integers and all(isinstance(r, int) for r in labels):
        return np.array(labels, dtype=np.int64)
    return order


def _labels(values: Any, column: str, arg: str, row_note: Callable[[int], str], *, ids: bool = False) -> list:
    """Cells of a label column (target names, run ids) as hashable Python values.

    Integral floats become ints (a DataFrame hands integer ids over as floats), strings
    are stripped; with ``ids`` (run ids), strings that spell a whole number become ints
    too, so a CSV file and the same table as a DataFrame give the same ids ("7" and
    "7.0" are one run). A missing cell raises ``ValueError`` naming ``arg`` and the row.
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{arg}: column {column!r} is not 1-D (shape {arr.shape})")
    out = []
    for i, cell in enumerate(arr.tolist()):
        if isinstance(cell, str):
            cell = cell.strip()
            if ids and cell:
                try:
                    v = float(cell)
                except ValueError:
                    pass
                else:
                    if math.isfinite(v) and v == round(v):
                        cell = int(v)
        elif isinstance(cell, float) and math.isfinite(cell) and cell == round(cell):
            cell = int(cell)
        if cell is None or cell == "" or (isinstance(cell, float) and math.isnan(cell)) or str(cell) in (
            "<NA>", "NaT", "nan"
        ):
            raise ValueError(f"{arg}: column {column!r}, {row_note(i)}: empty or missing value")
        out.append(cell)
    return out


def _load_long(
    header: list[str],
    get: Callable[[str], Any],
    row_note: Callable[[int], str],
    *,
    weights: ColumnSpec,
    N: str,
    D: str,
    targets: ColumnSpec,
    run: str | None,
    renormalize: bool,
    target_column: str,
    loss_column: str,
    units: tuple[float, float] = (1.0, 1.0),
) -> Runs:
    """Pivot a long table (one row per run, checkpoint and target) into a :class:`Runs`."""
    _require_columns(header, (("N", N), ("D", D), ("run", run), ("target_column", target_column),
                              ("loss_column", loss_column)))
    if target_column == loss_column:
        raise ValueError(f"loss_column: must differ from target_column ({target_column!r})")
    special = {N, D, run, target_column, loss_column}
    wcols = _resolve_columns(weights, [h for h in header if h not in special], "weights")

    names = _labels(get(target_column), target_column, "target_column", row_note)
    n = len(names)
    read = _column_reader(get, row_note, n, target_column)
    N_ = None if N is None else read(N, "N", False)
    D_ = None if D is None else read(D, "D", False)
    D_key = np.zeros(n) if D_ is None else D_  # records are (run, D) pairs: one per run without D
    H = np.empty((n, len(wcols)), dtype=np.float64)
    for j, (c, _) in enumerate(wcols):
        H[:, j] = read(c, "weights", False)
    loss = read(loss_column, "loss_column", True)
    bad = np.flatnonzero(np.isinf(loss))
    if bad.size:
        raise ValueError(
            f"loss_column: column {loss_column!r}, {row_note(bad[0])}: {float(loss[bad[0]])!r} is not "
            "finite; leave the cell empty for a missing value"
        )

    # Runs: given labels, or (N, mixture) pairs as in a wide table.
    run_labels: list | None = None
    if run is not None:
        run_labels = _labels(get(run), run, "run", row_note, ids=True)
        if len(run_labels) != n:
            raise ValueError(f"run: column {run!r} has {len(run_labels)} rows, column "
                             f"{target_column!r} has {n}")
        run_id = _run_ids(run_labels, N_, H, row_note, keep_integers=False)
    else:
        run_id = _first_appearance_ids(np.column_stack([np.zeros(n) if N_ is None else N_, H]))[0]

    # Targets: every name (default) or a selection, resolved like column names.
    distinct = list(dict.fromkeys(str(t) for t in names))
    if isinstance(targets, _DefaultTargets):
        tsel = [(t, t) for t in distinct]
    else:
        tsel = _resolve_columns(targets, distinct, "targets", kind="target name")
    if not tsel:
        raise ValueError(f"targets: selects none of the target names in column {target_column!r} "
                         f"({', '.join(distinct)})")
    tindex = {c: j for j, (c, _) in enumerate(tsel)}
    tcol = np.array([tindex.get(str(t), -1) for t in names], dtype=np.int64)
    rows = np.flatnonzero(tcol >= 0)

    # Records: distinct (run, D) among the selected rows, in order of first appearance.
    rec, first_rows = _first_appearance_ids(np.column_stack([run_id[rows], D_key[rows]]))
    Y = np.full((first_rows.size, len(tsel)), np.nan)
    source_row = np.full(Y.shape, -1, dtype=np.int64)
    for r, i in zip(rec.tolist(), rows.tolist()):
        v = loss[i]
        if np.isnan(v):
            continue
        j = tcol[i]
        prev = source_row[r, j]
        if prev >= 0 and Y[r, j] != v:
            lab = run_labels[i] if run_labels is not None else int(run_id[i])
            at = "" if D_ is None else f"D={D_[i]:g}, "
            raise ValueError(
                f"loss_column: {row_note(int(prev))} and {row_note(i)} give run {lab!r}, "
                f"{at}target {str(names[i])!r} different losses ({float(Y[r, j])!r} and {float(v)!r})"
            )
        if prev < 0:
            Y[r, j], source_row[r, j] = v, i

    pick = rows[first_rows]
    Hs = np.ascontiguousarray(H[pick])
    if renormalize and wcols:
        Hs = _renormalized(Hs, row_note, pick)
    if run_labels is not None and all(isinstance(run_labels[i], int) for i in pick.tolist()):
        run_out = np.array([run_labels[i] for i in pick.tolist()], dtype=np.int64)
    else:
        run_out = run_id[pick]
    return _runs_from_columns(
        None if N_ is None else N_[pick], None if D_ is None else D_[pick], Hs, units,
        domains=[nm for _, nm in wcols],
        targets={nm: Y[:, j] for j, (_, nm) in enumerate(tsel)},
        run=run_out,
    )


def _has_losses(runs: Runs | None, target: str) -> bool:
    """Whether ``runs`` has at least one finite loss of ``target`` (something to score)."""
    return runs is not None and len(runs) > 0 and target in runs.target_names and \
        bool(np.isfinite(np.asarray(runs.targets[target], dtype=float)).any())


def _duplicate_checkpoints(runs: Runs, *, rtol: float = DEDUP_RTOL) -> np.ndarray:
    """Mask of records that duplicate an earlier checkpoint of the same run.

    See ``dedup`` in :func:`load_runs` for the rule.
    """
    n = len(runs)
    dup = np.zeros(n, dtype=bool)
    if n == 0:
        return dup
    Y = (
        np.column_stack(list(runs.targets.values()))
        if runs.targets
        else np.zeros((n, 0), dtype=np.float64)
    )
    order = np.lexsort((np.arange(n), runs.D, runs.run))  # by run, then D, then row
    prev = -1
    for j in order:
        if (
            prev >= 0
            and runs.run[j] == runs.run[prev]
            and abs(runs.D[j] - runs.D[prev]) <= rtol * max(runs.D[j], runs.D[prev])
            and np.array_equal(Y[j], Y[prev], equal_nan=True)
        ):
            dup[j] = True  # a chain of near-equal copies keeps only its first
        prev = j
    return dup
