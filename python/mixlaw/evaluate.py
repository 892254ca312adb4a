"""Evaluation: protocols (how to split runs into fitting and evaluation sets), law
comparison tables, and bootstrap uncertainty over whole runs.

Protocols are small immutable objects with a ``splits(runs)`` method returning
``[(name, fit_runs, eval_runs), ...]``:

- :class:`SizeSplit` — fit on smaller models, evaluate on larger ones (extrapolation in N);
- :class:`HeldOutMixtures` — fit on q random mixtures, evaluate on the others (the paper's
  "how many runs" study);
- :class:`TokenSplit` — fit on early checkpoints, evaluate on later ones;
- :class:`LeaveOneSizeOut` — one split per model size;
- :class:`PaperSplit` — the paper's SlimPajama protocol (its Table 1).
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

from . import _core, _progress
from ._domains import columns_by_name
from .data import Runs
from .fit import Fits, _fit_box, _solver_options, _target_seed, fit, random_starts
from .laws import Law
from .laws import law as make_law
from .protocols import slimpajama_paper_split

__all__ = ["SizeSplit", "HeldOutMixtures", "TokenSplit", "LeaveOneSizeOut", "PaperSplit",
           "compare", "bootstrap", "BootstrapResult"]


def _sizes_match(N: np.ndarray, sizes: Sequence[float]) -> np.ndarray:
    sizes = np.asarray(list(sizes), dtype=float)
    return np.any(np.isclose(N[:, None], sizes[None, :], rtol=1e-9, atol=0), axis=1)


@dataclass(frozen=True)
class SizeSplit:
    """Fit on ``fit_sizes`` (default: every size but the largest), evaluate on
    ``eval_sizes`` (default: the largest)."""

    fit_sizes: Optional[tuple] = None
    eval_sizes: Optional[tuple] = None

    def splits(self, runs: Runs) -> list:
        runs._require("N", "runs", "a size split")
        sizes = np.unique(runs.N)
        if sizes.size < 2:
            raise ValueError("runs: a size split needs at least two model sizes")
        ev = tuple(self.eval_sizes) if self.eval_sizes is not None else (float(sizes[-1]),)
        ft = tuple(self.fit_sizes) if self.fit_sizes is not None else tuple(float(s) for s in sizes if s < min(ev))
        fm, em = _sizes_match(runs.N, ft), _sizes_match(runs.N, ev)
        if not fm.any() or not em.any():
            raise ValueError(f"fit_sizes, eval_sizes: no records at sizes {ft if not fm.any() else ev}")
        # A size that matches no record would be dropped from the split without a word (1.2e9 for
        # 1.235e9), and a size in both sets would evaluate on records the fit has seen.
        for name, given in (("fit_sizes", ft), ("eval_sizes", ev)):
            lost = [s for s in given if not _sizes_match(runs.N, [s]).any()]
            if lost:
                raise ValueError(f"{name}: no records at size(s) {', '.join(f'{s:.6g}' for s in lost)}; the runs "
                                 f"have sizes {', '.join(f'{s:.6g}' for s in sizes)}")
        both = fm & em
        if both.any():
            raise ValueError(f"fit_sizes, eval_sizes: size {runs.N[both][0]:.6g} is in both; the evaluation would "
                             "use records the fit has seen")
        return [(f"size:{'+'.join(f'{s:.4g}' for s in ev)}", runs.select(fm), runs.select(em))]


@dataclass(frozen=True)
class HeldOutMixtures:
    """Fit on ``n_fit`` mixtures drawn at random (``seed``), evaluate on the others."""

    n_fit: int
    seed: int = 0

    def splits(self, runs: Runs) -> list:
        mixes, inverse = np.unique(runs.H, axis=0, return_inverse=True)
        inverse = np.asarray(inverse).ravel()
        if not 1 <= self.n_fit < mixes.shape[0]:
            raise ValueError(f"n_fit: must be between 1 and {mixes.shape[0] - 1} (runs have "
                             f"{mixes.shape[0]} mixtures)")
        rng = np.random.default_rng(self.seed)
        chosen = np.zeros(mixes.shape[0], dtype=bool)
        chosen[rng.choice(mixes.shape[0], self.n_fit, replace=False)] = True
        m = chosen[inverse]
        return [(f"mixtures:{self.n_fit}/seed{self.seed}", runs.select(m), runs.select(~m))]


@dataclass(frozen=True)
class TokenSplit:
    """Fit on checkpoints with ``D <= max_fit_fraction * D_max(run)``, evaluate on the rest."""

    max_fit_fraction: float = 0.5

    def splits(self, runs: Runs) -> list:
        if not 0 < self.max_fit_fraction < 1:
            raise ValueError("max_fit_fraction: must be in (0, 1)")
        runs._require("D", "runs", "a token split")
        dmax = np.zeros(len(runs))
        for r in np.unique(runs.run):
            m = runs.run == r
            dmax[m] = runs.D[m].max()
        fm = runs.D <= self.max_fit_fraction * dmax * (1 + 1e-12)
        return [(f"tokens<={self.max_fit_fraction:g}", runs.select(fm), runs.select(~fm))]


@dataclass(frozen=True)
class LeaveOneSizeOut:
    """One split per model size: fit on all others, evaluate on it."""

    def splits(self, runs: Runs) -> list:
        runs._require("N", "runs", "leave-one-size-out")
        sizes = np.unique(runs.N)
        if sizes.size < 3:
            raise ValueError("runs: leave-one-size-out needs at least three model sizes")
        out = []
        for s in sizes:
            m = _sizes_match(runs.N, [s])
            out.append((f"without:{s:.4g}", runs.select(~m), runs.select(m)))
        return out


@dataclass(frozen=True)
class PaperSplit:
    """Shukor et al.'s Table 1 protocol on the SlimPajama runs: fit on the 60 fitting mixtures
    at 310M-1.235B parameters, evaluate on the 4 evaluation mixtures at 2.718B.

    With ``n_fit_mixtures``, only that many of the fitting mixtures (drawn with ``seed``)
    are kept for fitting, the evaluation set is unchanged: the "how many small runs do I
    need?" study.
    """

    n_fit_mixtures: Optional[int] = None
    seed: int = 0

    def splits(self, runs: Runs) -> list:
        train, test = slimpajama_paper_split(runs)
        if self.n_fit_mixtures is None:
            return [("paper", train, test)]
        return [(f"paper:{self.n_fit_mixtures} mixtures/seed{self.seed}",
                 _keep_mixtures(train, self.n_fit_mixtures, self.seed, "n_fit_mixtures"), test)]


def _keep_mixtures(runs: Runs, n: int, seed: int, arg: str) -> Runs:
    """The records of ``n`` of the distinct mixtures of ``runs``, drawn with ``seed``."""
    mixes, inverse = np.unique(runs.H, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).ravel()
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= mixes.shape[0]:
        raise ValueError(f"{arg}: must be an int between 1 and {mixes.shape[0]} (the runs have "
                         f"{mixes.shape[0]} mixtures)")
    rng = np.random.default_rng(seed)
    chosen = np.zeros(mixes.shape[0], dtype=bool)
    chosen[rng.choice(mixes.shape[0], n, replace=False)] = True
    return runs.select(chosen[inverse])


Protocol = Union[SizeSplit, HeldOutMixtures, TokenSplit, LeaveOneSizeOut, PaperSplit]


def compare(runs: Runs, laws: Sequence[Union[str, Law]], protocol: Protocol, *,
            targets: Union[None, str, Sequence[str]] = None, n_starts: int = 64, seed: int = 0, nest: bool = True,
            threads: Optional[int] = None, progress: Any = "auto", **fit_options: Any) -> Any:
    """Fit several laws on the same split(s) and tabulate train and evaluation metrics.

    Returns a pandas DataFrame, one row per (split, law, target): ``split, law, target,
    n_params, train_mre, train_r2, eval_mre, eval_r2, n_fit, n_eval, objective, converged,
    fit_seconds`` (solver thread-seconds of that fit). All fits are solved in one batched
    parallel call (see :func:`mixlaw.grid` for larger searches); ``fit_options`` are
    those of :func:`mixlaw.fit`, ``progress`` as there.
    """
    _, _, rows, _ = _compare_cells(runs, laws, protocol, targets=targets, n_starts=n_starts, seed=seed, nest=nest,
                                    threads=threads, fit_options=fit_options, progress=progress)
    return compare_table(rows)


def _compare_cells(runs: Runs, laws: Sequence[Union[str, Law]], protocol: Protocol, *,
                   targets: Union[None, str, Sequence[str]], n_starts: int, seed: int, nest: bool,
                   threads: Optional[int], fit_options: Mapping[str, Any],
                   progress: Any = None) -> tuple[list, list, list, list]:
    """The batched job behind :func:`compare`: (laws with labels, cells, result rows, the
    :class:`Fit` of each cell), so that callers that also need the fits (the CLI's plots)
    run the same path."""
    from .grid_search import _check_grid_names, _make_cells, _resolve_laws, _run_cells

    if not hasattr(protocol, "splits"):
        raise TypeError("protocol: expected a protocol object (SizeSplit, HeldOutMixtures, ...)")
    law_list = _resolve_laws(laws, int(runs.H.shape[1]))
    target_list = list(runs.target_names) if targets is None else ([targets] if isinstance(targets, str) else list(targets))
    unknown = [t for t in target_list if t not in runs.target_names]
    if unknown:
        raise ValueError(f"targets: unknown target(s) {unknown}; available: {list(runs.target_names)}")
    cells, _ = _make_cells(runs, law_list, target_list, [protocol])
    _check_grid_names(cells, fit_options.get("bounds"), None, tuple(getattr(runs, "domains", ())))
    _progress.check(progress)
    rows, fits = _run_cells(runs, cells, fit_options, n_starts=n_starts, seed=seed, nest=nest, threads=threads,
                            progress=progress)
    return law_list, cells, rows, fits


def compare_table(rows: Sequence[Mapping[str, Any]]) -> Any:
    """:func:`compare`'s DataFrame of grid result rows."""
    import pandas as pd

    columns = ["split", "law", "target", "n_params", "train_mre", "train_r2", "eval_mre", "eval_r2", "n_fit",
               "n_eval", "objective", "converged", "fit_seconds"]
    renamed = {"converged": "success"}
    return pd.DataFrame([{c: r[renamed.get(c, c)] for c in columns} for r in rows], columns=columns)


@dataclass(frozen=True)
class BootstrapResult:
    """Bootstrap over whole runs.

    Attributes
    ----------
    fits : Fits
        The fit on the full data (the point estimate).
    samples : dict target -> ndarray (n_boot, n_params)
        Best parameters of every resample.
    level : float
        Coverage of the intervals.
    """

    fits: Fits
    samples: dict
    level: float
    seed: int
    runs_resampled: int = 0
    extras: dict = field(default_factory=dict)

    def _repr_html_(self) -> str:
        from . import _html

        B = len(next(iter(self.samples.values()))) if self.samples else 0
        out = _html.summary(f"Bootstrap over runs: {B} resamples, {100 * self.level:g}% intervals", [])
        for t, f in self.fits.items():
            iv = self.intervals(t)
            names = f.law.named_params(f.domains)
            rows = [(n, v, iv[flat][0], iv[flat][1]) for n, flat, v in zip(names, f.law.param_names, f.x)]
            out += f"<p>target {_html.fmt(t)}</p>" + _html.table(["parameter", "estimate", "low", "high"], rows)
        return out

    def _q(self) -> tuple[float, float]:
        a = (1 - self.level) / 2
        return a, 1 - a

    def intervals(self, target: str) -> dict:
        """Percentile intervals ``{name: (low, high)}`` of the parameters of ``target``."""
        s = self.samples[target]
        lo, hi = np.nanquantile(s, self._q(), axis=0)
        names = self.fits[target].law.param_names
        return {n: (float(a), float(b)) for n, a, b in zip(names, lo, hi)}

    def predict_interval(self, target: str, runs: Any = None, *, N: Any = None, D: Any = None,
                         H: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval of the predicted loss at each record of ``runs`` (or arrays;
        scalars and one mixture broadcast, and one point gives two floats). Domains are
        matched by name, as in :meth:`mixlaw.Fit.predict`."""
        f0 = self.fits[target]
        law = f0.law
        if runs is not None:
            (N, D), H = runs._N_D, f0._runs_H(runs.H, runs)
        elif H is not None:
            H = columns_by_name(H, f0.domains, arg="H", want_arg="fit")
        preds = np.array([law.predict(x, N, D, H if law.k else None) for x in self.samples[target]
                          if np.all(np.isfinite(x))])
        lo, hi = np.quantile(preds, self._q(), axis=0)
        return lo, hi

    def mixture_interval(self, *, N: Any = None, D: Any = None, weights: Any = None, losses: bool = False,
                         **options: Any) -> dict:
        """Percentile interval of the optimal mixture: the mixture is re-optimised for
        every resample's fitted laws (one small solve each). Returns ``{domain: (low, high)}``, the point
        estimate under key ``"estimate"`` and the coverage under ``"level"``; with ``losses=True``
        also ``"losses"``: ``{target: (low, high)}``, the interval of each target's predicted loss
        at the estimated mixture (:meth:`predict_interval` there)."""
        from .fit import Fit
        from .mixture import optimize_mixture

        targets = list(self.fits)
        B = len(next(iter(self.samples.values())))
        law = self.fits[targets[0]].law
        if law.k == 0:
            raise ValueError("fits: the law has no mixture term")
        Hs = []
        for b in range(B):
            flist = []
            for t in targets:
                f0 = self.fits[t]
                x = self.samples[t][b]
                if not np.all(np.isfinite(x)):
                    break
                flist.append(Fit(law=f0.law, target=t, x=x, fun=math.nan, success=True, status=1, message="",
                                 nit=0, nfev=0, njev=0, starts_fun=np.zeros(0), starts_status=np.zeros(0, int),
                                 n_records=0, train={}, domains=f0.domains))
            else:
                Hs.append(optimize_mixture(flist, N=N, D=D, weights=weights, **options).x)
        Hs = np.array(Hs)
        lo, hi = np.quantile(Hs, self._q(), axis=0)
        est = optimize_mixture(self.fits, N=N, D=D, weights=weights, **options)
        domains = list(est.h)
        out = {d: (float(a), float(b)) for d, a, b in zip(domains, lo, hi)}
        out["estimate"] = est.h
        out["level"] = self.level
        if losses:
            out["losses"] = {t: tuple(float(v) for v in self.predict_interval(t, N=N, D=D, H=est.h))
                             for t in targets}
        return out


def bootstrap(runs: Runs, law: Union[str, Law] = "additive", *, targets: Union[None, str, Sequence[str]] = None,
              n_boot: int = 100, level: float = 0.9, seed: int = 0, n_starts: int = 8,
              threads: Optional[int] = None, progress: Any = "auto", **fit_options: Any) -> BootstrapResult:
    """Bootstrap the fit over whole runs (a run = all checkpoints of one model size and
    mixture), so that correlated checkpoints are resampled together.

    The full-data fit (``n_starts`` random starts plus ``fit_options``) gives the point
    estimate; each of the ``n_boot`` resamples is then refitted from that estimate plus
    ``n_starts - 1`` random starts. All ``n_boot x targets`` refits are solved in one
    parallel C++ call; results do not depend on ``threads``. ``progress`` as in
    :func:`mixlaw.fit`.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 2:
        raise ValueError("n_boot: must be an int >= 2")
    if not 0 < level < 1:
        raise ValueError("level: must be in (0, 1)")
    if n_starts < 1:
        raise ValueError("n_starts: must be >= 1")
    _progress.check(progress)
    base = fit(runs, law, targets=targets, n_starts=n_starts, seed=seed, threads=threads, progress=progress,
               **fit_options)
    opts = next(iter(base.values())).options
    # The refits weigh their records as the estimate did (validated by that fit).
    w_all = None if fit_options.get("weights") is None else np.asarray(fit_options["weights"], dtype=float)
    run_ids = np.unique(runs.run)
    rng = np.random.default_rng([seed, 2])
    resamples = [rng.choice(run_ids, run_ids.size, replace=True) for _ in range(n_boot)]
    rows_of = {r: np.flatnonzero(runs.run == r) for r in run_ids}

    problems, starts, seeds, keys, lows, highs, ties = [], [], [], [], [], [], []
    for t in base:
        L = base[t].law  # per target: bimix describes each target through its own domain
        y_all = np.asarray(runs.targets[t], dtype=float)
        lo, hi, tie_labels = _fit_box(L, opts)  # refits bounded and tied as the estimate
        for b, sample in enumerate(resamples):
            idx = np.concatenate([rows_of[r] for r in sample])
            idx = idx[np.isfinite(y_all[idx])]
            N, D = (None if v is None else v[idx] for v in runs._N_D)
            H, y = runs.H[idx], y_all[idx]
            rec = L.records(N, D, H if L.k else None)
            problems.append((L._core, rec, y, None if w_all is None else np.ascontiguousarray(w_all[idx])))
            srng = np.random.default_rng([_target_seed(seed, t), 3, b])
            extra = random_starts(L, n_starts - 1, srng, L.lower, L.upper) if n_starts > 1 else np.zeros((0, L.n_params))
            starts.append(np.ascontiguousarray(np.vstack([base[t].x[None, :], extra])))
            seeds.append(_target_seed(seed, t) + b + 1)
            keys.append((t, b))
            lows.append(lo)
            highs.append(hi)
            ties.append(tie_labels)
    with _progress.reporter(progress, f"bootstrap: {n_boot} resamples") as report:
        res = _core.fit_many(problems, starts, lows, highs, seeds, threads=threads,
                             tie=None if all(x is None for x in ties) else ties, progress=report,
                             **_solver_options(opts))
    samples = {t: np.full((n_boot, base[t].law.n_params), np.nan) for t in base}
    for (t, b), r in zip(keys, res):
        fun = np.where(np.isfinite(r["fun"]), r["fun"], np.inf)
        i = int(np.argmin(fun))
        if np.isfinite(fun[i]):
            samples[t][b] = r["x"][i]
    return BootstrapResult(fits=base, samples=samples, level=level, seed=seed, runs_resampled=int(run_ids.size))
