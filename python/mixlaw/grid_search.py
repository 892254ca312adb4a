"""Grid searches: laws x targets x evaluation protocols x seeds (x budgets) in one batched job.

A grid search is a list of *cells*. A cell is one law fitted to one target on the fitting
part of one split of one protocol, scored on the evaluation part, and optionally used to
find optimal mixtures at given budgets. :func:`grid` builds the cartesian product and runs
it as batched jobs: the cells of a job are prepared in Python, then every (cell, start)
pair is solved in **one** parallel C++ call (two or three when laws nest: ``joint`` starts
from the fitted ``additive`` and ``full`` from ``joint``, so a richer law never reports a
higher training objective than the simpler law it contains).

Jobs can run here, one after the other (``executor=None``), or on any
``concurrent.futures``-style executor (``submit(fn, *args)`` returning futures with
``.result()``): a ``ProcessPoolExecutor`` with the spawn start method, a Dask
``distributed.Client``, Ray's executor. Every cell depends only on its own inputs and
seeds, so the table is identical however the grid is cut into jobs and wherever they run.

With ``out=`` every finished job is appended to a JSON-lines file; rerunning the same
grid with the same file skips the cells already there, so an interrupted search keeps
what it finished. Every row carries fingerprints of the data and of every option that
changes its result, so rows of another call (other runs, ``n_starts``, ``seed``, fit
options, law specs, protocol parameters, budgets) are refused rather than returned as this
call's results; local grids with ``out=`` run in small jobs (the laws of one target on one
split) so that Ctrl-C keeps every finished job.

Fork safety: OpenMP (used by the C++ core) is not fork-safe; use process pools with the
"spawn" or "forkserver" start method, and ``threads=1`` per worker process when several
workers share a machine.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import numpy as np

from . import _core, _progress
from .data import _has_losses
from .fit import (_AUTO_RANDOM_STARTS, Fit, Fits, _assemble_fit, _continue_at_limit, _n_starts_option, _prepare_job,
                  _reseat_degenerate, _resolve_bounds, _revive_collapsed, _solver_options, _user_stacklevel,
                  resolved_curvature)
from .laws import NESTED_IN, Law, _bimix_for_target, embed
from .laws import law as make_law

__all__ = ["grid", "Cell", "run_cells"]

_FIT_DEFAULTS = dict(loss="huber", delta=1e-3, residual="raw", reduction="mean", method="lm", curvature="auto",
                     hops=0, hop_step=0.5, hop_temperature=0.05, max_iter=1000, iterate=5, ftol=1e-10,
                     xtol=1e-10, max_step=1.0, screen_iter=0, screen_ratio=1.5, screen_keep=8, reseat=True, init="auto")


@dataclass(frozen=True)
class Cell:
    """One grid cell: ``law`` (label and :class:`Law`) fitted to ``target`` on split number
    ``split`` of ``protocol``."""

    law_label: str
    law: Law
    target: str
    protocol: Any
    split: int

    @property
    def key(self) -> str:
        return json.dumps([self.law_label, self.target, _protocol_label(self.protocol), self.split])


def _protocol_label(p: Any) -> str:
    if dataclasses.is_dataclass(p):
        fields = ", ".join(f"{f.name}={getattr(p, f.name)!r}" for f in dataclasses.fields(p))
        return f"{type(p).__name__}({fields})"
    return repr(p)


def _resolve_laws(laws: Any, k: int) -> list[tuple[str, Law]]:
    if isinstance(laws, (str, Law)):
        laws = [laws]
    items = laws.items() if isinstance(laws, Mapping) else [(None, v) for v in laws]
    out = []
    for label, spec in items:
        try:
            if isinstance(spec, Law):
                L = spec
            elif isinstance(spec, str):
                L = _BimixByTarget(k, {}) if spec == "bimix" else make_law(spec, None if spec == "chinchilla" else k)
            elif isinstance(spec, Mapping):
                opts = dict(spec)
                name = opts.pop("name", None)
                if name is None:
                    raise ValueError("a law given as a dict needs a 'name'")
                if name == "bimix" and "target_domain" not in opts:
                    make_law(name, k, target_domain=0, **opts)  # validates the options
                    L = _BimixByTarget(k, opts)
                else:
                    L = make_law(name, None if name == "chinchilla" else k, **opts)
            else:
                raise TypeError(f"expected law names, Law objects or dicts, got {type(spec).__name__}")
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"laws: {exc}") from None
        if L.name != "chinchilla" and L.k != k:
            raise ValueError(f"laws: {L!r} has {L.k} domains but runs have {k}")
        lab = label if label is not None else (L.name if isinstance(L, _BimixByTarget) else _law_label(L))
        out.append((str(lab), L))
    labels = [lab for lab, _ in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"laws: duplicate labels {labels}; pass a dict {{label: law}}")
    return out


@dataclass(frozen=True)
class _BimixByTarget:
    """``"bimix"`` named without a domain: each target is described through the training
    domain of the same name (targets that are not domains have no bimix cell)."""

    k: int
    options: Mapping[str, Any]
    name: str = "bimix"

    def for_target(self, target: str, domains: Sequence[str]) -> Optional[Law]:
        return _bimix_for_target(target, domains, self.k, **self.options)


def _make_cells(runs: Any, law_list: Sequence[tuple[str, Any]], target_list: Sequence[str],
                protocol_list: Sequence[Any]) -> tuple[list[Cell], list[list[int]]]:
    """Cells of the product protocols x splits x laws x targets, and their groups (the cells
    of one law on one split, which share a batched call)."""
    domains = tuple(getattr(runs, "domains", ()))
    skipped = sorted({t for _, L in law_list if isinstance(L, _BimixByTarget) for t in target_list
                      if L.for_target(t, domains) is None})
    if skipped:
        warnings.warn(f"laws: bimix describes a target through its own training domain; no bimix cells for "
                      f"target(s) {skipped}, which are not domains", stacklevel=_user_stacklevel())
    cells: list[Cell] = []
    groups: list[list[int]] = []
    for p in protocol_list:
        n_splits = len(p.splits(runs))
        for s in range(n_splits):
            for label, L in law_list:
                if isinstance(L, _BimixByTarget):
                    new_cells = [Cell(label, Lt, t, p, s) for t in target_list
                                 if (Lt := L.for_target(t, domains)) is not None]
                else:
                    new_cells = [Cell(label, L, t, p, s) for t in target_list]
                groups.append(list(range(len(cells), len(cells) + len(new_cells))))
                cells.extend(new_cells)
    return cells, groups


def _law_label(L: Law) -> str:
    lab = L.name
    if not L.n_term and not L.d_term and L.name in ("additive", "joint", "simple", "full", "chinchilla"):
        lab += "[h]"
    elif not L.n_term:
        lab += "[h,D]"
    elif not L.d_term:
        lab += "[h,N]"
    return lab


def _expand_protocols(protocols: Any, seeds: Optional[Iterable[int]]) -> list:
    if protocols is None:
        raise ValueError("protocols: give at least one evaluation protocol (e.g. evaluate.SizeSplit())")
    if hasattr(protocols, "splits"):
        protocols = [protocols]
    out = []
    for p in protocols:
        if not hasattr(p, "splits"):
            raise TypeError(f"protocols: {p!r} is not a protocol (it has no splits(runs) method)")
        if seeds is not None and dataclasses.is_dataclass(p) and any(f.name == "seed" for f in dataclasses.fields(p)):
            out.extend(dataclasses.replace(p, seed=int(s)) for s in seeds)
        else:
            out.append(p)
    return out


def run_cells(runs: Any, cells: Sequence[Cell], fit_options: Mapping[str, Any], *, n_starts: Union[int, str] = "auto",
              seed: int = 0, nest: bool = True, budgets: Optional[Sequence[tuple[float, float]]] = None,
              mixture_weights: Optional[Mapping[str, float]] = None, threads: Optional[int] = None) -> list[dict]:
    """Fit and score ``cells`` in one batched job (one parallel C++ call per nesting level).

    This is the unit of work a grid sends to an executor; it is a plain module-level
    function of picklable arguments. Returns one row dict per cell, in cell order.
    """
    return _run_cells(runs, cells, fit_options, n_starts=n_starts, seed=seed, nest=nest, budgets=budgets,
                      mixture_weights=mixture_weights, threads=threads)[0]


def _run_cells(runs: Any, cells: Sequence[Cell], fit_options: Mapping[str, Any], *, n_starts: Union[int, str], seed: int,
               nest: bool, budgets: Optional[Sequence[tuple[float, float]]] = None,
               mixture_weights: Optional[Mapping[str, float]] = None,
               threads: Optional[int] = None, progress: Any = None) -> tuple[list[dict], list[Fit]]:
    """:func:`run_cells`, also returning the :class:`Fit` of every cell (for callers that
    plot or reuse them); ``progress`` reports each batched solve (:mod:`mixlaw._progress`)."""
    t_job = time.perf_counter()
    _check_fit_options(fit_options)
    options = dict(_FIT_DEFAULTS)
    options.update(fit_options)
    split_cache: dict = {}

    def split_of(protocol: Any, i: int) -> tuple:
        key = _protocol_label(protocol)
        if key not in split_cache:
            split_cache[key] = protocol.splits(runs)
        return split_cache[key][i]

    # Units: (protocol, split, law) with the targets asked for. Nested laws need the simpler
    # law on the same data; it is added (hidden) when the grid does not ask for it.
    units: dict = {}
    for c in cells:
        units.setdefault((_protocol_label(c.protocol), c.split, _law_key(c.law)), (c.protocol, c.split, c.law, set()))[3].add(c.target)
    if nest:
        pending = list(units.values())
        while pending:
            protocol, split, L, targets = pending.pop()
            if L.name in NESTED_IN:
                simpler = Law(NESTED_IN[L.name], L.k, n_term=L.n_term, d_term=L.d_term, n_scale=L.n_scale,
                              d_scale=L.d_scale)
                key = (_protocol_label(protocol), split, _law_key(simpler))
                if key not in units:
                    units[key] = (protocol, split, simpler, set())
                    pending.append(units[key])
                if not targets <= units[key][3]:
                    units[key][3].update(targets)
                    pending.append(units[key])

    def depth(L: Law) -> int:
        return 0 if not nest or L.name not in NESTED_IN else 1 + depth(Law(NESTED_IN[L.name], L.k))

    fitted: dict = {}  # (protocol label, split, law key, target) -> Fit
    for level in sorted({depth(u[2]) for u in units.values()}):
        jobs, meta = [], []
        for ukey, (protocol, split, L, targets) in units.items():
            if depth(L) != level:
                continue
            _, fit_runs, _ = split_of(protocol, split)
            lo, hi, touched = _resolve_bounds(L, _bounds_for(L, options.get("bounds"),
                                                              tuple(getattr(fit_runs, "domains", ()))))
            for t in sorted(targets):
                job = _prepare_job(fit_runs, L, t, n_starts=n_starts, seed=seed, lo=lo, hi=hi, touched=touched,
                                   residual=options["residual"], init=options["init"],
                                   nested=nest and L.name in NESTED_IN)
                starts = job.starts
                if nest and L.name in NESTED_IN:
                    simpler_fit = fitted[(ukey[0], split, _law_key(Law(NESTED_IN[L.name], L.k, n_term=L.n_term,
                                                                           d_term=L.d_term, n_scale=L.n_scale,
                                                                           d_scale=L.d_scale)), t)]
                    starts = np.vstack([embed(simpler_fit.x, simpler_fit.law, L)[None, :], starts])
                jobs.append((job, starts, lo, hi))
                meta.append((ukey, L, t, getattr(fit_runs, "domains", ())))
        if not jobs:
            continue
        # One batched call per curvature ("auto" resolves per law, as in fit).
        curv = [resolved_curvature(L, options["curvature"]) for _, L, _, _ in meta]
        results: list = [None] * len(jobs)
        for c in sorted(set(curv)):
            idx = [i for i, ci in enumerate(curv) if ci == c]
            sub = [jobs[i] for i in idx]
            with _progress.reporter(progress, f"fit {', '.join(sorted({meta[i][1].name for i in idx}))}") as report:
                out = _core.fit_many([j.problem for j, _, _, _ in sub], [s for _, s, _, _ in sub],
                                     [lo for _, _, lo, _ in sub], [hi for _, _, _, hi in sub],
                                     [j.seed for j, _, _, _ in sub], threads=threads, progress=report,
                                     **_solver_options(dict(options, curvature=c)))
            if options.get("reseat", True):
                _reseat_degenerate([meta[i][1] for i in idx], [j.problem for j, _, _, _ in sub], out,
                                   [j.records for j, _, _, _ in sub], [lo for _, _, lo, _ in sub],
                                   [hi for _, _, _, hi in sub], [j.seed for j, _, _, _ in sub],
                                   dict(options, curvature=c), threads)
            for i, r in zip(idx, out):
                results[i] = r
        fit_opts = {k: v for k, v in options.items() if k != "bounds"}
        fit_opts.update(n_starts=n_starts, seed=seed, nest=nest)
        for (job, _, lo, hi), (ukey, L, t, domains), r, c in zip(jobs, meta, results, curv):
            # Collapsed starts are revived and the best start continued at the iteration limit as
            # fit does it, so a cell is the standalone fit.
            _revive_collapsed([L], [job.problem], [r], lo, hi, [job.seed], dict(options, curvature=c), threads)
            _continue_at_limit([job.problem], [r], lo, hi, [job.seed], dict(options, curvature=c), threads)
            fitted[(ukey[0], ukey[1], ukey[2], t)] = _assemble_fit(
                L, t, r, job.records, dict(fit_opts, curvature=c, nested_start=nest and L.name in NESTED_IN,
                                           two_stage_start=job.two_stage),
                tuple(domains), lo, hi, threads)

    rows, cell_fits = [], []
    for c in cells:
        split_name, fit_runs, eval_runs = split_of(c.protocol, c.split)
        f = fitted[(_protocol_label(c.protocol), c.split, _law_key(c.law), c.target)]
        cell_fits.append(f)
        ev = f.score(eval_runs, threads=threads) if _has_losses(eval_runs, c.target) else {"mre": math.nan, "r2": math.nan, "n": 0}
        row = {"law": c.law_label, "target": c.target, "protocol": type(c.protocol).__name__,
               "protocol_spec": _protocol_label(c.protocol), "seed": getattr(c.protocol, "seed", None),
               "split": split_name, "n_params": c.law.n_params, "n_fit": f.n_records, "n_eval": ev["n"],
               "train_mre": f.train["mre"], "train_r2": f.train["r2"], "eval_mre": ev["mre"], "eval_r2": ev["r2"],
               "objective": f.fun, "success": f.success, "status": f.status, "nit": f.nit,
               "fit_seconds": f.seconds, "params": f.params}
        rows.append(row)

    if budgets is not None:
        _add_mixtures(rows, cells, fitted, budgets, mixture_weights, threads)
    job_seconds = time.perf_counter() - t_job
    for row in rows:
        row["job_seconds"] = job_seconds
    return rows, cell_fits


def _check_fit_options(fit_options: Mapping[str, Any]) -> None:
    unknown = set(fit_options) - set(_FIT_DEFAULTS) - {"bounds"}
    if unknown:
        raise ValueError(f"fit_options: unknown option(s) {sorted(unknown)}; allowed: {sorted(_FIT_DEFAULTS)} and bounds")
    for name in ("loss", "residual", "reduction", "method", "curvature"):
        allowed = {"loss": ("huber", "mse"), "residual": ("raw", "log"), "reduction": ("mean", "sum"),
                   "method": ("lm", "lbfgsb"), "curvature": ("auto", "exact", "irls")}[name]
        if name in fit_options and fit_options[name] not in allowed:
            raise ValueError(f"{name}: expected one of {allowed}, got {fit_options[name]!r}")


def _law_key(L: Law) -> tuple:
    return L._key()


def _bounds_for(L: Law, bounds: Optional[Mapping], domains: Sequence[str] = ()) -> Optional[dict]:
    """The part of a grid-wide ``bounds`` mapping that applies to law ``L``: its keys that name
    (or match, as globs) parameters of ``L``, domain-named ones (``gamma[c4]``) as in
    :func:`mixlaw.fit`."""
    import fnmatch

    if not bounds:
        return None
    flat = {L.flat_name(str(n), domains): b for n, b in bounds.items()}
    return {n: b for n, b in flat.items() if any(fnmatch.fnmatchcase(p, n) for p in L.param_names)} or None


def _check_grid_names(cells: Sequence[Cell], bounds: Optional[Mapping], mixture_weights: Optional[Mapping],
                      domains: Sequence[str]) -> None:
    """Names the grid would otherwise drop without a word: a ``bounds`` key that matches no
    parameter of any law of the grid (a typo would leave every fit unbounded), and a
    ``mixture_weights`` key that is not a target of the grid (its weight would be lost)."""
    import fnmatch

    laws = {_law_key(c.law): c.law for c in cells}.values()
    for key in bounds or {}:
        if not any(fnmatch.fnmatchcase(p, L.flat_name(str(key), domains)) for L in laws for p in L.param_names):
            names = sorted({p for L in laws for p in L.param_names})
            raise ValueError(f"bounds: {key!r} matches no parameter of the grid's laws; parameters: {names}")
    targets = {c.target for c in cells}
    unknown = sorted(set(mixture_weights or {}) - targets, key=str)
    if unknown:
        raise ValueError(f"mixture_weights: unknown target(s) {unknown}; the grid's targets: {sorted(targets)}")


def _add_mixtures(rows: list, cells: Sequence[Cell], fitted: dict, budgets: Sequence, weights: Optional[Mapping],
                  threads: Optional[int]) -> None:
    """h* for each (law, protocol, split) group over its fitted targets, at every budget."""
    from .mixture import optimize_mixture

    groups: dict = {}
    for i, c in enumerate(cells):
        groups.setdefault((_protocol_label(c.protocol), c.split, _law_key(c.law)), []).append(i)
    N = np.array([float(b[0]) for b in budgets])
    D = np.array([float(b[1]) for b in budgets])
    for (plabel, split, lkey), idx in groups.items():
        law = cells[idx[0]].law
        if law.k == 0 or law.name == "chinchilla":
            continue
        fits = Fits({cells[i].target: fitted[(plabel, split, lkey, cells[i].target)] for i in idx})
        w = {t: 1.0 for t in fits} if weights is None else {t: float(v) for t, v in weights.items() if t in fits}
        if not w or not any(v > 0 for v in w.values()):
            continue
        res = optimize_mixture(fits, N=N, D=D, weights=w, threads=threads)
        domains = res.domains if res.domains else tuple(f"h_{j + 1}" for j in range(res.h.shape[1]))
        mixes = [{"N": float(res.N[b]), "D": float(res.D[b]), "h": dict(zip(domains, res.h[b].tolist())),
                  "objective": float(res.fun[b]), "gap": float(res.gap[b])} for b in range(len(res))]
        for i in idx:
            rows[i]["mixtures"] = mixes


def grid(runs: Any, laws: Any, protocols: Any, *, targets: Union[None, str, Sequence[str]] = None,
         seeds: Optional[Iterable[int]] = None, n_starts: Union[int, str] = "auto", seed: int = 0, nest: bool = True,
         budgets: Optional[Sequence[tuple[float, float]]] = None, mixture_weights: Optional[Mapping[str, float]] = None,
         executor: Any = None, chunk_size: Optional[int] = None, out: Any = None, if_exists: str = "resume",
         progress: Union[bool, Callable] = False, threads: Optional[int] = None, **fit_options: Any) -> Any:
    """Run the grid ``laws x targets x protocols (x seeds)`` and return a tidy table.

    Parameters
    ----------
    runs : Runs
    laws : str, Law, list of them, or dict ``{label: law}``
        A law may also be a dict such as ``{"name": "additive", "n_term": False,
        "d_term": False}`` (the fixed-(N, D) form).
    protocols : protocol or list of protocols
        :mod:`mixlaw.evaluate` protocols (``SizeSplit()``, ``HeldOutMixtures(n_fit=q)``,
        ``TokenSplit()``, ``LeaveOneSizeOut()``, ``PaperSplit()``); every split of every
        protocol is a grid dimension.
    targets : optional
        Target names (default: all targets of ``runs``).
    seeds : iterable of int, optional
        Replaces the ``seed`` of every protocol that has one (random splits), one grid
        point per seed.
    n_starts, seed, nest, **fit_options
        As in :func:`mixlaw.fit` (``seed`` seeds the random starts, the same for every cell).
    budgets : sequence of (N, D), optional
        Also find the optimal mixture of each (law, split) group's fitted targets at these
        budgets, weighting targets by ``mixture_weights`` (default: equally); the rows get a
        ``mixtures`` column (a list of dicts, one per budget) and, as plain columns,
        ``h[<domain>]@<b>``, ``objective@<b>`` and ``gap@<b>`` for budget ``b`` (its index in
        ``budgets``).
    executor : optional
        Any ``concurrent.futures``-style executor (``ProcessPoolExecutor`` with the spawn
        start method, ``distributed.Client``, ...). Default: run here.
    chunk_size : int, optional
        Cells per job, packing whole (protocol, split, law) groups (the cells of a group always
        stay together). Default: on an executor one group per job; here, the whole grid in one
        job, or with ``out`` small jobs (the laws of one target on one split, or of all targets
        of one split with ``budgets``; joined until each job has at least 4 (cell, start)
        pairs per thread), so that an interruption loses at most one small job.
    out : path, optional
        JSON-lines file that every finished job's rows are appended to, one complete line
        per cell, so that an interrupted search (Ctrl-C, a killed job) keeps what it
        finished; rerunning the same call resumes it: cells already in the file are read
        back, not recomputed. Each row carries a ``fingerprint``: SHA-256 hashes of the
        runs (``N``, ``D``, ``H``, domain names, target values, run ids), of the fitting and
        evaluation records of its split (so protocol parameters count), of its law, and of
        every option that changes a result (``n_starts``, ``seed``, ``nest``, every fit
        option with its default, ``budgets``, ``mixture_weights``; the row also stores them
        readably under ``options``). ``threads``, ``executor``, ``chunk_size`` and
        ``progress`` change no result and are not part of it. A last line cut short by an
        interrupted write is ignored with a ``RuntimeWarning`` (and removed when the file is
        next written); its cell is computed again. A line that is not a mixlaw grid row
        raises a ``ValueError`` naming it.
    if_exists : {"resume", "replace", "fail"}
        What to do when ``out`` already holds rows (the names of pandas' ``to_sql``).
        ``"resume"`` (default): reuse the rows of this call's cells and compute the others;
        rows of another call (other runs, ``n_starts``, ``seed``, fit options, protocol
        parameters, law under the same label, budgets, or rows of an older mixlaw without
        fingerprints) raise a ``ValueError`` instead of being returned as this call's
        results. Rows of other cells of the same data and options (e.g. a larger grid) are
        kept and ignored. ``"replace"``: empty the file, then compute every cell.
        ``"fail"``: raise a ``ValueError`` if the file exists and is not empty.
    progress : bool or callable
        Report finished jobs on stderr, or call ``progress(done_cells, total_cells)``.
    threads : int, optional
        OpenMP threads of each job.

    Returns
    -------
    pandas.DataFrame
        One row per cell: ``law, target, protocol, protocol_spec, seed, split, n_params,
        n_fit, n_eval, train_mre, train_r2, eval_mre, eval_r2, objective, success, status,
        nit, fit_seconds`` (solver thread-seconds of the cell), ``job_seconds``, ``params``
        (dict) and, with ``budgets``, ``mixtures`` and its columns ``h[<domain>]@<b>``,
        ``objective@<b>``, ``gap@<b>``.
    """
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("grid: needs pandas (pip install 'mixlaw[pandas]')") from exc
    if not hasattr(runs, "target_names"):
        raise TypeError("runs: expected a runs table (mixlaw.load_runs or mixlaw.datasets)")
    try:
        n_starts = _n_starts_option(n_starts)
    except TypeError as exc:  # grid has always named a wrong type with a ValueError
        raise ValueError(str(exc)) from None
    _check_fit_options(fit_options)
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer))
                                   or chunk_size < 1):
        raise ValueError("chunk_size: must be an int >= 1")
    if not isinstance(if_exists, str) or if_exists not in _IF_EXISTS:
        raise ValueError(f"if_exists: expected one of {_IF_EXISTS}, got {if_exists!r}")
    if budgets is not None:
        budgets = [tuple(b) for b in budgets]
        if any(len(b) != 2 or not (float(b[0]) > 0 and float(b[1]) > 0) for b in budgets):
            raise ValueError("budgets: expected a sequence of (N, D) pairs with N, D > 0")
    k = int(runs.H.shape[1])
    law_list = _resolve_laws(laws, k)
    target_list = list(runs.target_names) if targets is None else ([targets] if isinstance(targets, str) else list(targets))
    missing = [t for t in target_list if t not in runs.target_names]
    if missing:
        raise ValueError(f"targets: unknown target(s) {missing}; available: {list(runs.target_names)}")
    protocol_list = _expand_protocols(protocols, seeds)

    cells, groups = _make_cells(runs, law_list, target_list, protocol_list)
    # Here, on the whole grid: a chunk of it has only some of its laws and targets.
    _check_grid_names(cells, fit_options.get("bounds"), mixture_weights, tuple(getattr(runs, "domains", ())))

    done: dict = {}
    stamp: Optional[_Stamp] = None
    if out is not None:
        out = os.fspath(out)
        stamp = _stamp(runs, cells, groups, protocol_list, n_starts=n_starts, seed=int(seed), nest=bool(nest),
                       fit_options=fit_options, budgets=budgets, mixture_weights=mixture_weights)
        if if_exists != "replace" and os.path.exists(out) and os.path.getsize(out) > 0:
            if if_exists == "fail":
                raise ValueError(f"out: {out!r} already exists and is not empty (if_exists='fail'); pass "
                                 f"if_exists='resume' to resume it, if_exists='replace' to start afresh, or "
                                 f"another out file")
            done = _read_out(out, cells, stamp)
    todo = [i for i in range(len(cells)) if cells[i].key not in done]
    if budgets is not None and todo:
        # A group's mixtures are optimised over all its targets: a group with a missing cell
        # (an interruption between its rows, a cut last line) is computed again as a whole.
        todo_set = set(todo)
        todo = sorted(i for g in groups if todo_set.intersection(g) for i in g)

    if out is not None and executor is None and chunk_size is None:
        n_threads = threads if threads is not None and threads > 0 else (os.cpu_count() or 1)
        jobs = _small_jobs(cells, todo, whole_splits=budgets is not None,
                           min_pairs=_PAIRS_PER_THREAD * n_threads,
                           n_starts=_AUTO_RANDOM_STARTS if n_starts == "auto" else max(n_starts, 1))
    else:
        # Jobs: whole groups, packed up to chunk_size cells.
        todo_set = set(todo)
        todo_groups = [[i for i in g if i in todo_set] for g in groups]
        todo_groups = [g for g in todo_groups if g]
        size = chunk_size if chunk_size is not None else (len(todo) if executor is None else 1)
        jobs = []
        for g in todo_groups:
            if jobs and len(jobs[-1]) + len(g) <= size:
                jobs[-1].extend(g)
            else:
                jobs.append(list(g))

    total = len(cells)
    finished = len(cells) - len(todo)
    report = progress if callable(progress) else (_stderr_progress if progress else None)
    args = dict(n_starts=n_starts, seed=int(seed), nest=bool(nest), budgets=budgets,
                mixture_weights=mixture_weights, threads=threads)
    results: dict = dict(done)

    if out is not None and (jobs or if_exists == "replace"):
        # Before any work: the file can be written, and a cut last line is removed.
        _prepare_out(out, replace=if_exists == "replace", truncate_at=stamp.truncate_at,
                     newline=stamp.needs_newline)

    def collect(job: list[int], rows: list[dict]) -> None:
        nonlocal finished
        for i, row in zip(job, rows):
            row["cell_key"] = cells[i].key
            if stamp is not None:
                row["fingerprint"] = {"data": stamp.data, "options": stamp.options, "cell": stamp.cells[i]}
                row["options"] = stamp.readable
            results[cells[i].key] = row
        if out is not None:
            with open(out, "a", encoding="utf-8", newline="") as fh:
                for row in rows:
                    fh.write(json.dumps(row, default=_json_default) + "\n")  # a whole line, then flush
                    fh.flush()
        finished += len(job)
        if report is not None:
            report(finished, total)

    if executor is None:
        for job in jobs:
            collect(job, run_cells(runs, [cells[i] for i in job], fit_options, **args))
    else:
        futures = [(job, executor.submit(run_cells, runs, [cells[i] for i in job], dict(fit_options), **args))
                   for job in jobs]
        for job, fut in futures:
            collect(job, fut.result())

    table = [results[c.key] for c in cells]
    df = pd.DataFrame(table)
    if "mixtures" in df.columns:
        df = pd.concat([df, _mixture_columns(df["mixtures"])], axis=1)
    return df.drop(columns=list(_ROW_META), errors="ignore")


def _mixture_columns(mixtures: Any) -> Any:
    """The ``mixtures`` lists as columns ``h[<domain>]@<b>``, ``objective@<b>``, ``gap@<b>``
    (NaN for rows without mixtures, e.g. a law without a mixture term)."""
    import pandas as pd

    rows = []
    for mixes in mixtures:
        row: dict = {}
        for b, m in enumerate(mixes if isinstance(mixes, list) else []):
            row.update({f"h[{d}]@{b}": v for d, v in m["h"].items()})
            row.update({f"objective@{b}": m["objective"], f"gap@{b}": m["gap"]})
        rows.append(row)
    return pd.DataFrame(rows, index=mixtures.index)


# -- resumable output files ------------------------------------------------------------------

_IF_EXISTS = ("resume", "replace", "fail")
_ROW_META = ("cell_key", "fingerprint", "options")
# Version of the fingerprint scheme; rows of another version are rows of another call.
_FINGERPRINT_VERSION = 1
# Local jobs with out=: at least this many (cell, start) pairs per thread in each job.
_PAIRS_PER_THREAD = 4


@dataclass
class _Stamp:
    """This call's fingerprints: of the data, of the options, of every cell (hex SHA-256),
    the options as stored readably in each row, and what reading ``out`` found."""

    data: str
    options: str
    readable: dict
    cells: list
    truncate_at: Optional[int] = None
    needs_newline: bool = False


def _canon(o: Any) -> Any:
    """``o`` as plain JSON values, the same for equal values given in different types
    (tuples and lists, numpy and Python numbers, 1 and 1.0; non-finite floats as strings)."""
    if o is None or isinstance(o, (str, bool, np.bool_)):
        return bool(o) if isinstance(o, np.bool_) else o
    if isinstance(o, (int, np.integer)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        f = float(o)
        if not math.isfinite(f):
            return repr(f)
        return int(f) if f.is_integer() and abs(f) < 2.0 ** 53 else f
    if isinstance(o, Mapping):
        return {str(k): _canon(v) for k, v in sorted(o.items(), key=lambda kv: str(kv[0]))}
    if isinstance(o, np.ndarray):
        return [_canon(v) for v in o.tolist()]
    if isinstance(o, (list, tuple)):
        return [_canon(v) for v in o]
    if isinstance(o, (set, frozenset)):
        return sorted((_canon(v) for v in o), key=lambda v: json.dumps(v, sort_keys=True))
    return repr(o)


def _sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _runs_digest(runs: Any) -> str:
    """SHA-256 of a runs table: N, D, H, domain names, target names and values, run ids
    (stable across processes and machines: fixed little-endian dtypes, one NaN)."""
    h = hashlib.sha256()

    def add(name: str, a: Any, dtype: str) -> None:
        a = np.ascontiguousarray(np.asarray(a, dtype=dtype))
        h.update(json.dumps([name, list(a.shape)]).encode("utf-8"))
        h.update(a.tobytes())

    add("N", runs.N, "<f8")
    add("D", runs.D, "<f8")
    add("H", runs.H, "<f8")
    h.update(json.dumps(["domains", [str(d) for d in getattr(runs, "domains", ())]]).encode("utf-8"))
    for t in runs.target_names:
        y = np.asarray(runs.targets[t], dtype="<f8")
        add(f"target:{t}", np.where(np.isnan(y), np.nan, y), "<f8")
    run = getattr(runs, "run", None)
    if run is not None:
        add("run", run, "<i8")
    return h.hexdigest()


def _law_spec(L: Law) -> list:
    return _canon([list(L._key()), list(getattr(L, "param_names", ())), getattr(L, "lower", None),
                   getattr(L, "upper", None), getattr(L, "init_lower", None), getattr(L, "init_upper", None),
                   getattr(L, "log_scale", None)])


def _stamp(runs: Any, cells: Sequence[Cell], groups: Sequence[Sequence[int]], protocol_list: Sequence[Any], *,
           n_starts: int, seed: int, nest: bool, fit_options: Mapping[str, Any], budgets: Optional[Sequence],
           mixture_weights: Optional[Mapping[str, float]]) -> _Stamp:
    """Fingerprints of this call. Every cell's covers the data, the options, its law, its
    split's fitting and evaluation records, and (with budgets) the targets of its mixture
    group."""
    options = dict(_FIT_DEFAULTS)
    options.update(fit_options)
    options.update(n_starts=n_starts, seed=seed, nest=nest, fingerprint_version=_FINGERPRINT_VERSION)
    if budgets is not None:  # mixture_weights only matter with budgets
        options.update(budgets=budgets, mixture_weights=mixture_weights)
    readable = _canon(options)
    data, opts = _runs_digest(runs), _sha(readable)
    split_digests: dict = {}
    for p in protocol_list:
        label = _protocol_label(p)
        if label not in split_digests:
            split_digests[label] = [(str(name), _runs_digest(fr), _runs_digest(ev)) for name, fr, ev in p.splits(runs)]
    group_targets: dict = {}
    if budgets is not None:
        for g in groups:
            ts = sorted(cells[i].target for i in g)
            for i in g:
                group_targets[i] = ts
    cell_fps = [_sha([data, opts, _law_spec(c.law), c.target, split_digests[_protocol_label(c.protocol)][c.split],
                      group_targets.get(i)])
                for i, c in enumerate(cells)]
    return _Stamp(data, opts, readable, cell_fps)


def _options_diff(theirs: Any, ours: dict) -> str:
    if not isinstance(theirs, dict):
        return ""
    unset = object()

    def show(v: Any) -> str:
        return "unset" if v is unset else repr(v)

    parts = [f"{name}={show(theirs.get(name, unset))} (this call: {show(ours.get(name, unset))})"
             for name in sorted(set(theirs) | set(ours)) if theirs.get(name, unset) != ours.get(name, unset)]
    return ", ".join(parts)


def _read_out(path: str, cells: Sequence[Cell], stamp: _Stamp) -> dict:
    """Rows of ``path`` that are this call's cells, by cell key. Raises ``ValueError`` on a
    line that is not a grid row, and on rows of another call; a last line that is not
    valid JSON (cut by an interrupted write) is skipped with a warning."""
    with open(path, "rb") as fh:
        content = fh.read()
    index = {c.key: i for i, c in enumerate(cells)}
    lines, pos = [], 0
    for raw in content.split(b"\n"):
        lines.append((pos, raw))
        pos += len(raw) + 1
    last = max((no for no, (_, raw) in enumerate(lines, 1) if raw.strip()), default=0)
    done: dict = {}
    mismatch: Optional[tuple[int, str]] = None
    n_rows = n_mismatch = 0
    for no, (offset, raw) in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            if no == last:
                warnings.warn(f"out: line {no} of {path!r} is cut short or not valid JSON (an interrupted write?); "
                              f"it is ignored, and its cell computed again", RuntimeWarning,
                              stacklevel=_user_stacklevel())
                stamp.truncate_at = offset
                continue
            raise ValueError(f"out: line {no} of {path!r} is not valid JSON, so the file is not a mixlaw grid file "
                             f"(or was edited); give another out file, or if_exists='replace' to overwrite it") from None
        fp = row.get("fingerprint") if isinstance(row, dict) else None
        if not (isinstance(row, dict) and isinstance(row.get("cell_key"), str) and
                (fp is None and "fingerprint" not in row or isinstance(fp, dict) and
                 all(isinstance(fp.get(n), str) for n in ("data", "options", "cell")))):
            raise ValueError(f"out: line {no} of {path!r} is not a mixlaw grid row (expected a JSON object with "
                             f"'cell_key' and 'fingerprint', got {raw[:60].decode('utf-8', 'replace')!r}); give "
                             f"another out file, or if_exists='replace' to overwrite it")
        n_rows += 1
        reason = None
        if fp is None:
            reason = "has no fingerprint of its data and options (written by an earlier version of mixlaw)"
        elif fp["data"] != stamp.data:
            reason = "was computed on other data (the runs' N, D, H, domains, target values or run ids differ)"
        elif fp["options"] != stamp.options:
            diff = _options_diff(row.get("options"), stamp.readable)
            reason = "was computed with other options" + (f": {diff}" if diff else "")
        elif row["cell_key"] in index:
            i = index[row["cell_key"]]
            if fp["cell"] != stamp.cells[i]:
                reason = (f"holds cell {row['cell_key']} computed with another law under the same label, other "
                          f"fitting or evaluation records (protocol parameters), or other targets in its mixture "
                          f"group")
            else:
                done[row["cell_key"]] = row
        if reason is not None:
            n_mismatch += 1
            if mismatch is None:
                mismatch = (no, reason)
    if mismatch is not None:
        no, reason = mismatch
        raise ValueError(f"out: {path!r} holds results of another grid call, not of this one: line {no} {reason} "
                         f"({n_mismatch} of its {n_rows} rows are not this call's). Pass if_exists='replace' to "
                         f"discard the file's rows and compute afresh, or give another out file (rerunning the "
                         f"call that wrote it resumes it)")
    stamp.needs_newline = stamp.truncate_at is None and bool(content) and not content.endswith(b"\n")
    return done


def _prepare_out(path: str, *, replace: bool, truncate_at: Optional[int], newline: bool) -> None:
    if replace:
        open(path, "w").close()
    elif truncate_at is not None:
        with open(path, "r+b") as fh:
            fh.truncate(truncate_at)
    else:
        with open(path, "ab") as fh:
            if newline:
                fh.write(b"\n")


def _small_jobs(cells: Sequence[Cell], todo: Sequence[int], *, whole_splits: bool, min_pairs: int,
                n_starts: int) -> list[list[int]]:
    """Local jobs for a grid written to ``out``: units of the laws of one target on one split
    (a nested law's simpler law is then fitted once per unit), or of all cells of a split when
    mixtures are optimised over the targets, joined until a job has ``min_pairs`` (cell, start)
    pairs."""
    units: dict = {}
    for i in todo:
        c = cells[i]
        key = (_protocol_label(c.protocol), c.split) + (() if whole_splits else (c.target,))
        units.setdefault(key, []).append(i)
    jobs: list[list[int]] = []
    pairs = 0
    for unit in units.values():
        if jobs and pairs < min_pairs:
            jobs[-1].extend(unit)
        else:
            jobs.append(list(unit))
            pairs = 0
        pairs += len(unit) * n_starts
    return [sorted(j) for j in jobs]


def _stderr_progress(done: int, total: int) -> None:
    print(f"mixlaw grid: {done}/{total} cells", file=sys.stderr, flush=True)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
