"""Fitting scaling laws to runs: robust multi-start fits, all targets in one parallel call.

What to use when
----------------
- Default (``loss="huber", delta=1e-3, method="lm"``): the paper's objective, solved by a
  bounded Levenberg-Marquardt method on the Huber-reweighted residuals. Robust to a few
  bad checkpoints.
- ``loss="mse"``: plain least squares, when every record is trustworthy.
- ``residual="log"``: residuals on log-loss (Epoch AI's Chinchilla protocol); use with
  ``n_scale=1, d_scale=1`` to report parameters in natural units directly.
- ``n_starts``: the objective has many local minima; 10 starts land in different minima,
  ~64-100 are needed for the richer laws. Starts are cheap: they run in parallel in C++.
  With the additive mixture term the first start is computed from the data (``init``);
  with many domains (over 100 parameters) it is the only one by default.
- ``hops > 0``: basin hopping (the paper's global strategy) from every start.
- ``method="lbfgsb"``: projected L-BFGS, slower on these problems; kept for comparison.
- ``nest=True`` (default) for ``joint`` and ``full``: the simpler law they contain is fitted
  first and its solution, mapped through the nesting, is one of the starts; the richer law
  then never reports a higher training objective than the simpler one.

Threads: all (target, start) pairs of one call are solved in one OpenMP loop with the
GIL released; ``threads=None`` uses the OpenMP default (honours ``OMP_NUM_THREADS``).
Results are bit-identical for any thread count. In multiprocessing workers use the
"spawn" or "forkserver" start method (or ``threads=1``): forking a process after OpenMP
has started its threads is unsafe with GNU OpenMP.

Ctrl-C stops a running fit: starts not yet begun are skipped, running ones stop at their
next solver iteration (or basin hop), and KeyboardInterrupt is raised (within tens of ms).
"""
from __future__ import annotations

import fnmatch
import json
import math
import os
import time
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Union

import numpy as np

from . import _core, _html, _progress
from ._domains import columns_by_name, domain_order
from ._warnings import user_stacklevel as _user_stacklevel
from .laws import (NESTED_IN, Law, _bimix_for_target, domain_parameter, embed, repetition_param_count,
                   unique_tokens_array)
from .laws import law as make_law
from ._two_stage import two_stage_start
from .data import _distinct_rows, _fmt_size
from .metrics import metrics as compute_metrics

__all__ = ["Fit", "Fits", "fit", "load_fits", "IdentifiabilityWarning", "ConvergenceWarning"]

BoundsLike = Mapping[str, "tuple[float, float]"]


class IdentifiabilityWarning(UserWarning):
    """The data cannot determine some parameters of the law: the fit runs, but those
    parameters are arbitrary (the message says which, and what to do)."""


class ConvergenceWarning(UserWarning):
    """A fit's result is not to be trusted as it is: its best start is not a stationary
    point (``Fit.success`` is False), or few starts reached the best objective, so a lower
    minimum may exist. The message says which target and what to do; filter it with
    ``warnings.filterwarnings("ignore", category=mixlaw.ConvergenceWarning)``."""


class ExtrapolationWarning(UserWarning):
    """A prediction or an optimal mixture far outside the data the law was fitted on: model
    sizes or token counts more than :data:`FAR_FACTOR` times beyond the fitted range (often
    a unit mistake), or mixture weights outside the range seen in the fitting runs. The
    numbers are the law's extrapolation, not something the data supports."""


#: Sizes or token counts more than this factor beyond the fitted range are "far outside".
FAR_FACTOR = 1000.0


#: Status of a start (``Fit.status``, ``Fit.starts_status``); only 1 is a success.
STATUS_CONVERGED, STATUS_MAX_ITER, STATUS_STALLED, STATUS_SCREENED, STATUS_COLLAPSED = 1, 0, -4, -3, -5
#: At least this many starts must end for the "few starts reached the best" warning, and
#: fewer than this fraction of them (or one start) reaching the best objective triggers it.
_FEW_AT_BEST_MIN_STARTS, _FEW_AT_BEST_FRACTION = 8, 0.05
#: Record weights: the largest must lie in this range (ratios are what matter; beyond it
#: the weighted objective overflows, or underflows to 0, and any point looks stationary).
_WEIGHT_MAX_RANGE = (1e-100, 1e100)
#: Smallest Huber threshold: far below it the objective sinks under the solver's rounding
#: floor, where every point looks stationary.
_DELTA_MIN = 1e-12
#: A parameter within this relative distance of a finite bound is at its limit; a
#: log-scaled coefficient below this fraction of its start range's lower end is ~0.
_AT_LIMIT_RTOL, _DEGENERATE_FRACTION = 1e-6, 1e-6


@dataclass(frozen=True)
class Fit:
    """A fitted law for one target (immutable, picklable, JSON round-trippable).

    Attributes
    ----------
    law : Law
    target : str
    x : ndarray
        Best parameters in :attr:`Law.param_names` order (units N/n_scale, D/d_scale).
    fun : float
        Objective at ``x`` (mean Huber by default).
    success, status, message :
        Convergence of the best start. ``success`` is True only when it is first-order
        stationary (``status == 1``: its projected gradient, relative to the objective, is
        below ``gtol``; see :attr:`stationarity`). Other statuses: 0 iteration limit, -4
        stalled (the steps stopped decreasing the objective before it was stationary), -5
        collapsed (stationary in the solver's log coordinates, but a scale coefficient was
        driven to ~0 although raising it lowers the objective: not a minimum), -1
        objective not finite at the start, -2 cancelled, -3 screened out
        (:func:`mixlaw._core.status_message`). Non-convergence is reported in the result and
        by a :class:`ConvergenceWarning`, never raised.
    stationarity : float
        The best start's stationarity: the largest first-order change of the objective,
        relative to it, from moving one free parameter by one unit in the solver's
        coordinates (a factor e for a scale parameter, max(1, |value|) for another, shorter
        where the Gauss-Newton curvature says a shorter move already changes the objective
        by its size). ``success`` means ``stationarity <= gtol``.
    at_limit : dict
        Parameters that ended at a bound (``"lower"``, ``"upper"``) or, for scale
        coefficients, at a degenerate value ~0 (``"~0"``), by name, as iminuit flags a
        parameter at its limit. Such a fit is a boundary solution: the law may be too rich
        for the data, or the bounds too tight.
    nit, nfev, njev : int
        Iterations and evaluations of the best start (summed over its basin hops).
    starts_fun, starts_status, starts_stationarity : ndarray
        Objective, status and stationarity of every start, in start order (status -3:
        screened out, see ``screen_iter`` in :func:`fit`).
    n_records : int
        Records used for this target (rows with a missing loss are dropped).
    train : dict
        Training metrics: ``mre`` (%), ``r2``, ``mae``, ``rmse``, ``n``.
    options : dict
        The settings of the fit (loss, delta, residual, reduction, method, seed, ...).
    domains : tuple of str
        Domain names of the mixture weights (when the runs table has them).
    seconds : float
        Solver time of this target summed over its starts (thread-seconds; timing only,
        it never affects results).
    ranges : dict
        The range of the fitting records: ``"N"`` and ``"D"`` as ``(min, max)`` in raw units
        (each only when the runs have it), and ``"h"`` one ``(min, max)`` weight per domain
        (in :attr:`domains` order). Predictions and mixtures outside it are extrapolations,
        and say so.
    """

    law: Law
    target: str
    x: np.ndarray
    fun: float
    success: bool
    status: int
    message: str
    nit: int
    nfev: int
    njev: int
    starts_fun: np.ndarray
    starts_status: np.ndarray
    n_records: int
    train: dict
    options: dict = field(default_factory=dict)
    domains: tuple = ()
    seconds: float = math.nan
    stationarity: float = math.nan
    starts_stationarity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    at_limit: dict = field(default_factory=dict)
    ranges: dict = field(default_factory=dict)

    @property
    def params(self) -> dict[str, float]:
        """Best parameters by name (internal units)."""
        return self.law.as_dict(self.x)

    @property
    def domain_params(self) -> dict[str, float]:
        """:attr:`params` with each per-domain parameter named by its domain (``C[web]``,
        ``gamma[web]`` for ``C_i``, ``gamma_i``; the flat names when the fit has no domain
        names). Every function takes the flat names; ``fit``'s ``bounds`` and ``tie`` take
        these too."""
        return dict(zip(self.law.named_params(self.domains), self.x.tolist()))

    def natural_params(self) -> dict[str, float]:
        """Parameters with N and D in raw units (A/N^alpha instead of A/(N/1e6)^alpha).

        Defined for laws whose N and D exponents do not depend on the mixture
        (all but ``full``).
        """
        p = self.params
        ns, ds = self.law.n_scale, self.law.d_scale
        name = self.law.name
        if name == "full" and (self.law.n_term or self.law.d_term):
            raise ValueError("law: the full law's exponents depend on h; natural units are not a reparametrisation")
        out = dict(p)
        if name in ("chinchilla", "additive", "simple"):
            if self.law.n_term:
                out["A"] = p["A"] * ns ** p["alpha"]
            if self.law.d_term:
                out["B"] = p["B"] * ds ** p["beta"]
        elif name == "joint":
            k = self.law.k
            if self.law.n_term:
                f = ns ** (p["alpha"] / p["gA"]) if p["gA"] != 0 else float("nan")
                out.update({f"CA_{i}": p[f"CA_{i}"] * f for i in range(1, k + 1)})
            if self.law.d_term:
                f = ds ** (p["beta"] / p["gB"]) if p["gB"] != 0 else float("nan")
                out.update({f"CB_{i}": p[f"CB_{i}"] * f for i in range(1, k + 1)})
        return out

    @property
    def spread(self) -> dict[str, float]:
        """How the starts ended: best, median and worst finite objective, how many starts
        reached the best objective within 1e-6 relative, and how many were screened out
        (``screen_iter``; their objective is the one they had when they stopped)."""
        n_screened = int(np.sum(self.starts_status == -3))
        f = self.starts_fun[np.isfinite(self.starts_fun)]
        if f.size == 0:
            return {"best": math.nan, "median": math.nan, "worst": math.nan, "n_at_best": 0,
                    "n_screened": n_screened}
        best = float(f.min())
        return {"best": best, "median": float(np.median(f)), "worst": float(f.max()),
                "n_at_best": int(np.sum(f <= best * (1 + 1e-6) + 1e-300)), "n_screened": n_screened}

    def predict(self, runs: Any = None, D: Any = None, H: Any = None, *, N: Any = None,
                unique_tokens: Any = None, threads: Optional[int] = None) -> np.ndarray:
        """Predicted loss on a runs table, or on arrays ``(N, D, H)``.

        Domains are matched by name: a runs table's weight columns, and the columns of a
        DataFrame (or a mapping domain -> weights) given as ``H``, are reordered to this
        fit's :attr:`domains`; different names are a ValueError. A bare array ``H`` is
        read by position, in :attr:`domains` order. Data-constrained laws need
        ``unique_tokens`` (as :func:`fit` takes them with a runs table; with arrays, as
        :meth:`mixlaw.Law.predict`)."""
        if runs is not None and hasattr(runs, "H") and hasattr(runs, "targets"):
            rN, rD = runs._N_D
            self.warn_if_far(rN, rD)
            U = _runs_unique_tokens(unique_tokens, runs, self.law, self.domains or None)
            return self.law.predict(self.x, rN, rD, self._runs_H(runs.H, runs) if self.law.k else None,
                                    unique_tokens=U, threads=threads)
        n = runs if N is None else N
        if H is not None:
            H = columns_by_name(H, self.domains, arg="H", want_arg="fit")
        out = self.law.predict(self.x, n, D, H, unique_tokens=unique_tokens, threads=threads)
        if D is not None:  # not prepared Records: N and D are arrays the core accepted
            self.warn_if_far(n, D)
        return out

    def far_outside(self, N: Any, D: Any) -> dict:
        """How far sizes ``N`` and token counts ``D`` go beyond the fitted range
        (:attr:`ranges`): ``{"N": factor, "D": factor}`` for those more than
        :data:`FAR_FACTOR` times above the largest or below the smallest fitted value."""
        out = {}
        for name, v in (("N", N), ("D", D)):
            span = self.ranges.get(name)
            if v is None:
                continue
            a = np.asarray(v, dtype=float)
            if span is None or a.size == 0 or not np.all(np.isfinite(a)) or np.any(a <= 0):
                continue
            factor = max(float(a.max()) / span[1], span[0] / float(a.min()))
            if factor > FAR_FACTOR:
                out[name] = factor
        return out

    def warn_if_far(self, N: Any, D: Any) -> None:
        """An :class:`ExtrapolationWarning` when ``N`` or ``D`` is far outside the fitted range."""
        far = self.far_outside(N, D)
        if far:
            warnings.warn(f"target {self.target!r}: predicting at {_far_message(self, far)}", ExtrapolationWarning,
                          stacklevel=_user_stacklevel())

    def score(self, runs: Any, *, unique_tokens: Any = None, threads: Optional[int] = None) -> dict:
        """Metrics (``mre`` in %, ``r2``, ``mae``, ``rmse``, ``n``) on a runs table, using
        the records where this target's loss is present (domains matched by name;
        ``unique_tokens`` as :func:`fit` takes them, for data-constrained laws)."""
        N, D, H, y = runs.target(self.target)
        U = _runs_unique_tokens(unique_tokens, runs, self.law, self.domains or None)
        if U is not None:
            U = U[_present(runs, self.target)]
        pred = self.law.predict(self.x, N, D, self._runs_H(H, runs) if self.law.k else None, unique_tokens=U,
                                threads=threads)
        return compute_metrics(y, pred)

    def _runs_H(self, H: np.ndarray, runs: Any) -> np.ndarray:
        """The weight columns of ``runs`` in this fit's domain order."""
        idx = domain_order(tuple(getattr(runs, "domains", ())), self.domains, have_arg="runs", want_arg="fit")
        return H if idx is None else np.ascontiguousarray(H[:, idx])

    def with_domains(self, domains: Sequence[str]) -> "Fit":
        """The same fit with its domains in the order ``domains`` (the same names): per-domain
        parameters (``C_i``, ``gamma_i``, ...), ranges and the bimix target domain are
        permuted, so every prediction is unchanged when the weights are permuted alike."""
        idx = domain_order(self.domains, tuple(domains), have_arg="fit", want_arg="domains")
        if idx is None:
            if self.domains or len(tuple(domains)) != self.law.k:
                return self
            return replace(self, domains=tuple(domains))
        L, k = self.law, self.law.k
        x = np.array(self.x, dtype=float)
        names = L.param_names
        for i, name in enumerate(names):
            per = domain_parameter(name, k)
            if per is not None:
                x[i] = self.x[L.index(f"{per[0]}_{idx[per[1]] + 1}")]
        law = L
        if L.target_domain is not None:
            law = Law(L.name, k, n_term=L.n_term, d_term=L.d_term, n_scale=L.n_scale, d_scale=L.d_scale,
                      target_domain=int(np.flatnonzero(idx == L.target_domain)[0]), repetition=L.repetition)
        ranges = dict(self.ranges)
        if "h" in ranges and len(ranges["h"]) == k:
            ranges["h"] = tuple(ranges["h"][j] for j in idx)
        return replace(self, law=law, x=_frozen(x), domains=tuple(domains), ranges=ranges)

    def __repr__(self) -> str:
        limit = f", at_limit={sorted(self.at_limit)}" if self.at_limit else ""
        return (f"Fit({self.law!r}, target={self.target!r}, fun={self.fun:.6g}, "
                f"train MRE={self.train.get('mre', math.nan):.3f}%, success={self.success}{limit})")

    def _repr_html_(self) -> str:
        sp = self.spread
        head = _html.summary(
            f"Fit of {self.law!r} to target {self.target!r}",
            [("objective", self.fun), ("train MRE %", self.train.get("mre", math.nan)),
             ("train R2", self.train.get("r2", math.nan)), ("success", self.success),
             ("stationarity", self.stationarity), ("iterations", self.nit),
             ("starts at the best", f"{sp['n_at_best']} of {self.starts_fun.size}")],
            note="" if self.success else self.message)
        lo, hi = self.law.lower.copy(), self.law.upper.copy()
        for name, (a, b) in self.options.get("bounds", {}).items():  # the fit's own, by flat name
            lo[self.law.index(name)], hi[self.law.index(name)] = a, b
        names = self.law.named_params(self.domains)
        rows = [(n, v, a, b, self.at_limit.get(flat, "")) for n, flat, v, a, b in
                zip(names, self.law.param_names, self.x, lo, hi)]
        return head + _html.table(["parameter", "value", "lower bound", "upper bound", "at a limit"], rows)

    # -- serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-serialisable dict: one entry of the ``fits`` list of a fits document (the
        schema is in :func:`load_fits`)."""
        law = self.law
        return {
            "law": {"name": law.name, "k": law.k, "n_term": law.n_term, "d_term": law.d_term,
                    "n_scale": law.n_scale, "d_scale": law.d_scale,
                    **({"target_domain": law.target_domain} if law.target_domain is not None else {}),
                    **({"repetition": True if law.repetition == "shared" else law.repetition}
                       if law.repetition else {})},
            "target": self.target, "params": self.params, "fun": self.fun, "success": self.success,
            "status": self.status, "message": self.message, "nit": self.nit, "nfev": self.nfev,
            "njev": self.njev, "starts_fun": [None if not math.isfinite(v) else v for v in self.starts_fun.tolist()],
            "starts_status": self.starts_status.tolist(), "n_records": self.n_records,
            "train": self.train, "options": self.options, "domains": list(self.domains),
            "seconds": None if not math.isfinite(self.seconds) else self.seconds,
            "stationarity": None if not math.isfinite(self.stationarity) else self.stationarity,
            "starts_stationarity": [None if not math.isfinite(v) else v for v in self.starts_stationarity.tolist()],
            "at_limit": dict(self.at_limit),
            "ranges": {key: [[float(a), float(b)] for a, b in v] if key == "h" else [float(a) for a in v]
                       for key, v in self.ranges.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Fit":
        """The fit of a :meth:`to_dict` dict (one entry of a fits document, as parsed from
        JSON), validated as :func:`load_fits` validates each fit: every problem is a
        ValueError naming its key path, e.g. ``fit.params.C_1: -5 is below the law's lower
        bound 0``."""
        return _fit_from_json(d, "fit", _FITS_VERSION)


class Fits(Mapping[str, Fit]):
    """Fits by target name, in the order the targets were requested."""

    def __init__(self, fits: Mapping[str, Fit], *, elapsed: float = math.nan) -> None:
        self._fits = dict(fits)
        self.elapsed = elapsed  #: wall time of the call, seconds

    def __getitem__(self, target: str) -> Fit:
        try:
            return self._fits[target]
        except KeyError:
            raise KeyError(f"no fit for target {target!r}; fitted: {list(self._fits)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._fits)

    def __len__(self) -> int:
        return len(self._fits)

    def __repr__(self) -> str:
        return "Fits(\n" + "".join(f"  {f!r},\n" for f in self._fits.values()) + ")"

    @property
    def law(self) -> Law:
        return next(iter(self._fits.values())).law

    def _repr_html_(self) -> str:
        n_ok = sum(f.success for f in self._fits.values())
        head = _html.summary(f"{len(self)} fits of {self.law!r}", [("successful", f"{n_ok} of {len(self)}"),
                                                                   ("seconds", self.elapsed)])
        return head + self.to_pandas()._repr_html_()

    def table(self, eval_runs: Any = None) -> list[dict]:
        """One row per target: objective, success, train metrics and, given an evaluation
        runs table, ``eval_mre`` and ``eval_r2``."""
        rows = []
        for t, f in self._fits.items():
            row = {"target": t, "law": f.law.name, "fun": f.fun, "success": f.success,
                   "train_mre": f.train["mre"], "train_r2": f.train["r2"], "n": f.n_records}
            if eval_runs is not None:
                m = f.score(eval_runs)
                row.update(eval_mre=m["mre"], eval_r2=m["r2"], eval_n=m["n"])
            rows.append(row)
        return rows

    def to_pandas(self, eval_runs: Any = None) -> Any:
        """One row per target (the index): ``law``, the objective ``fun``, ``success``,
        ``status``, ``stationarity``, the train metrics (``train_mre`` in %, ``train_r2``),
        ``n`` records, ``eval_mre``, ``eval_r2`` and ``eval_n`` given ``eval_runs``, then
        the parameters named by domain (:attr:`Fit.domain_params`; a target whose law lacks
        a parameter has NaN there)."""
        import pandas as pd

        rows = []
        for row, f in zip(self.table(eval_runs), self._fits.values()):
            row = dict(row, status=f.status, stationarity=f.stationarity)
            row.update(f.domain_params)
            rows.append(row)
        first = ["target", "law", "fun", "success", "status", "stationarity", "train_mre", "train_r2", "n",
                 "eval_mre", "eval_r2", "eval_n"]
        df = pd.DataFrame(rows)
        order = [c for c in first if c in df.columns] + [c for c in df.columns if c not in first]
        return df[order].set_index("target")

    def predict(self, runs: Any, *, unique_tokens: Any = None, threads: Optional[int] = None) -> Any:
        """Every target's predicted loss on a runs table, as a DataFrame with one column per
        target and one row per record of ``runs``, in its order (domains matched by name, as
        :meth:`Fit.predict`; ``unique_tokens`` for data-constrained laws, as :func:`fit`)."""
        import pandas as pd

        return pd.DataFrame({t: f.predict(runs, unique_tokens=unique_tokens, threads=threads)
                             for t, f in self._fits.items()})

    def to_json(self, path: Any = None) -> str:
        """JSON text of all fits (a fits document, version ``"mixlaw_fits": 2``; schema in
        :func:`load_fits`); written to ``path`` too when given. The document is validated as
        :func:`load_fits` validates it before it is returned or written: a ValueError naming
        the key path, rather than a file that cannot be read back."""
        text = json.dumps({"mixlaw_fits": _FITS_VERSION, "fits": [f.to_dict() for f in self._fits.values()]},
                          indent=1)
        _fits_from_json(_parse_fits_json(text))
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        return text

    def __reduce__(self) -> tuple:
        return (Fits, (self._fits,), {"elapsed": self.elapsed})

    def __setstate__(self, state: dict) -> None:
        self.elapsed = state.get("elapsed", math.nan)


def load_fits(source: Any) -> Fits:
    """Read fits written by :meth:`Fits.to_json` (a path, or the JSON text itself).

    The document is validated before any law is built: every problem is a ValueError whose
    message starts with the key path, e.g. ``fits[0].params.C_1: -5 is below the law's lower
    bound 0`` or ``fits[2].law.k: expected an integer, got "300000000"``; text that is not
    JSON is a ValueError naming ``source`` with the line and column.

    Schema (``"mixlaw_fits": 2``; version 1, written before ``ranges`` existed, still reads):

    - top level: an object with exactly ``mixlaw_fits`` (the integer 1 or 2; anything else is
      a ValueError naming ``mixlaw_fits``) and ``fits``, a non-empty list of fits. JSON
      objects must not repeat a key. ``NaN``/``Infinity`` are read (``to_json`` writes them
      where a value may be non-finite) but refused wherever a finite number is required.
    - each fit: an object with the required keys ``law``, ``target``, ``params``, ``fun``,
      ``success``, ``status``, ``message``, ``nit``, ``nfev``, ``njev``, ``starts_fun``,
      ``starts_status``, ``n_records``, ``train``, ``options`` and the optional keys
      ``domains``, ``seconds``, ``stationarity``, ``starts_stationarity``, ``at_limit`` and
      (version 2) ``ranges``; any other key is refused.
    - ``law``: ``name`` a known law; ``k`` an integer (not a boolean), 0 for chinchilla and
      1..100,000 otherwise, checked before any law is built; ``n_term``, ``d_term`` JSON
      booleans, false where the law has no such term (baselines: no model-size term; dml_exp,
      dml_sum, linear: no token term), not both false for chinchilla; ``n_scale``,
      ``d_scale`` finite numbers > 0; ``target_domain`` an integer in [0, k), for bimix only
      (and required there). The law is built only when ``params`` lists as many parameters
      as it has, or it has at most 1,000 (to name the missing ones): loading never costs
      more than the file's size warrants.
    - ``target``: a non-empty string, unique across the document.
    - ``params``: an object with exactly the law's parameter names (missing or unknown names
      are named), each a finite JSON number within the law's bounds (``Law.lower``,
      ``Law.upper``), or within ``options.bounds`` for the parameters it overrides.
    - ``domains``: unique non-empty strings; k of them, or none (older files), for a law
      with a mixture term; for chinchilla (k = 0) the runs table's domains, any number. All
      fits of a document that name domains name the same set (the order may differ: mixture
      code aligns fits by domain name).
    - ``fun`` a number (NaN when every start failed); ``success`` a boolean, true exactly
      when ``status`` is 1 (version-1 fits without ``stationarity`` come from the solver
      before issue 20, whose statuses -3..4 counted as success when > 0); ``status`` and
      every ``starts_status`` a known status; ``message`` a string; ``nit``, ``nfev``,
      ``njev``, ``n_records`` integers >= 0; ``starts_fun`` and ``starts_stationarity``
      lists of numbers or null, as long as ``starts_status`` (``starts_stationarity`` may
      be empty); ``seconds`` a number >= 0 or null; ``stationarity`` a number or null;
      ``train`` an object of numbers or null (``n`` an integer >= 0); ``options`` an object whose
      known settings have their types (strings, integers, numbers, booleans; ``bounds``
      ``{parameter: [lower, upper]}`` with lower <= upper; ``tie`` ``{group: [parameter,
      ...]}``; settings it does not know are kept as they are, so that new options of
      :func:`fit` round-trip); ``at_limit`` ``{parameter: "lower" | "upper" | "~0"}``.
    - ``ranges`` (optional; ``{}`` when missing): ``N`` and ``D`` ``[min, max]`` finite, > 0,
      min <= max; ``h`` (laws with a mixture term) k ``[min, max]`` pairs in ``domains``
      order, weights in [0, 1] (within 1e-6) with min <= max.
    """
    return _fits_from_json(_parse_fits_json(_fits_text(source)))


# -- the fits document: limits and strict validation ----------------------------------------
#: Version of the fits document :meth:`Fits.to_json` writes, and the versions
#: :func:`load_fits` reads (version 2 added the optional ``ranges`` of each fit).
_FITS_VERSION, _FITS_VERSIONS = 2, (1, 2)
#: Most domains a law of a fits document may have, checked before any law is built: every
#: law then has at most 6k + 5 = 600,005 parameters (the full law).
_MAX_K = 100_000
#: A law whose parameter count differs from the document's ``params`` is built (to name the
#: missing or unknown parameters) only up to this many parameters.
_NAMED_PARAMS = 1_000
#: Mixture weights are on the simplex within this (mixlaw.data.SIMPLEX_TOL).
_WEIGHT_TOL = 1e-6
_FIT_REQUIRED = ("law", "target", "params", "fun", "success", "status", "message", "nit", "nfev", "njev",
                 "starts_fun", "starts_status", "n_records", "train", "options")
_FIT_OPTIONAL = {1: ("domains", "seconds", "stationarity", "starts_stationarity", "at_limit"),
                 2: ("domains", "seconds", "stationarity", "starts_stationarity", "at_limit", "ranges")}
_LAW_REQUIRED = ("name", "k", "n_term", "d_term", "n_scale", "d_scale")
#: Types of the known settings of ``Fit.options`` (other keys are kept as they are).
_OPTION_TYPES = {**dict.fromkeys(("loss", "residual", "reduction", "method", "curvature", "linear_solver"), "str"),
                 **dict.fromkeys(("seed", "hops", "max_iter", "iterate", "screen_iter", "screen_keep"), "int"),
                 "n_starts": "int or auto", "init": "str",
                 **dict.fromkeys(("delta", "hop_step", "hop_temperature", "ftol", "xtol", "gtol", "max_step",
                                  "screen_ratio"), "number"),
                 **dict.fromkeys(("nest", "nested_start", "two_stage_start"), "bool")}


def _fits_text(source: Any) -> str:
    """The text of a fits document: ``source`` itself when it is JSON text, else the file."""
    import os

    if isinstance(source, str) and source.lstrip()[:1] in ("{", "["):
        return source
    if not isinstance(source, (str, bytes, os.PathLike)):
        raise TypeError(f"source: expected a path or JSON text, got {type(source).__name__}")
    with open(source, "rb") as fh:
        raw = fh.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"source: {os.fsdecode(source)!r} is not UTF-8 text (byte {exc.start}); "
                         "not a mixlaw fits document") from None


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"source: the key {_show(key)} appears twice in one JSON object")
        out[key] = value
    return out


def _parse_fits_json(text: str) -> Any:
    """The parsed JSON of ``text``; a ValueError naming ``source`` when it is not JSON."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise ValueError(f"source: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except _DuplicateKey:
        raise
    except RecursionError:
        raise ValueError("source: JSON nested too deeply; not a mixlaw fits document") from None
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise ValueError(f"source: not readable JSON ({str(exc).split(';')[0]})") from None


def _fits_from_json(data: Any) -> Fits:
    """The :class:`Fits` of a parsed fits document, validated (see :func:`load_fits`)."""
    if not isinstance(data, dict):
        raise ValueError(f"source: expected a JSON object (a mixlaw fits document), got {_show(data)}")
    if "mixlaw_fits" not in data:
        raise ValueError("mixlaw_fits: missing; source is not a mixlaw fits document")
    version = data["mixlaw_fits"]
    if isinstance(version, bool) or not isinstance(version, int) or version not in _FITS_VERSIONS:
        raise ValueError(f"mixlaw_fits: unsupported version {_show(version)}; this mixlaw reads versions "
                         f"{', '.join(map(str, _FITS_VERSIONS))}")
    _check_keys(data, "", ("mixlaw_fits", "fits"))
    items = data["fits"]
    if not isinstance(items, list):
        raise ValueError(f"fits: expected a list of fits, got {_show(items)}")
    if not items:
        raise ValueError("fits: the document has no fit")
    out: dict = {}
    where: dict = {}
    named: Optional[tuple] = None  # (path, domains) of the first fit that names domains
    for i, d in enumerate(items):
        path = f"fits[{i}]"
        if isinstance(d, dict) and isinstance(d.get("target"), str) and d["target"] in where:
            raise ValueError(f"{path}.target: duplicate target {_show(d['target'])} (also {where[d['target']]})")
        f = _fit_from_json(d, path, version)
        where[f.target] = path
        if f.domains:
            if named is None:
                named = (path, f.domains)
            elif set(f.domains) != set(named[1]):
                raise ValueError(f"{path}.domains: {_names(f.domains)} are not the domains of {named[0]} "
                                 f"({_names(named[1])}); the fits of one document describe one set of domains")
        out[f.target] = f
    return Fits(out)


def _fit_from_json(d: Any, path: str, version: int) -> Fit:
    """One fit of a fits document (``path`` prefixes every error message)."""
    if not isinstance(d, Mapping):
        raise ValueError(f"{path}: expected a JSON object (one fit), got {_show(d)}")
    _check_keys(d, path, _FIT_REQUIRED, _FIT_OPTIONAL[version])
    target = d["target"]
    if not isinstance(target, str) or not target:
        raise ValueError(f"{path}.target: expected a non-empty string, got {_show(target)}")
    spec = _law_spec(d["law"], f"{path}.law")
    k = spec["k"]
    params = d["params"]
    if not isinstance(params, Mapping):
        raise ValueError(f"{path}.params: expected an object {{parameter: value}}, got {_show(params)}")
    domains = _json_list(d.get("domains", []), f"{path}.domains")
    for j, name in enumerate(domains):
        if not isinstance(name, str) or not name:
            raise ValueError(f"{path}.domains[{j}]: expected a non-empty string, got {_show(name)}")
    if len(set(domains)) != len(domains):
        raise ValueError(f"{path}.domains: {_show(next(n for n in domains if domains.count(n) > 1))} appears twice")
    if k and domains and len(domains) != k:
        raise ValueError(f"{path}.domains: {len(domains)} names for a law with k = {k} domains")
    n_params = _law_n_params(spec["name"], k, spec["n_term"], spec["d_term"])
    if n_params is not None:
        n_params += repetition_param_count(spec["repetition"], k)
    if n_params is not None and len(params) != n_params and n_params > _NAMED_PARAMS:
        raise ValueError(f"{path}.params: the {spec['name']} law with k = {k} has {n_params} parameters, "
                         f"the document lists {len(params)}")
    try:
        law = Law(spec["name"], k, n_term=spec["n_term"], d_term=spec["d_term"], n_scale=spec["n_scale"],
                  d_scale=spec["d_scale"], target_domain=spec["target_domain"], repetition=spec["repetition"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}.law: {exc}") from None
    names = law.param_names
    known = set(names)
    unknown = [n for n in params if n not in known]
    missing = [n for n in names if n not in params]
    if unknown or missing:
        detail = "; ".join(part for part in (f"unknown parameter(s) {_names(unknown)}" if unknown else "",
                                             f"missing parameter(s) {_names(missing)}" if missing else "") if part)
        raise ValueError(f"{path}.params: {detail} for {law!r}, whose parameters are {_names(names)}")
    options, bounds = _options_from_json(d["options"], f"{path}.options", law)
    x = np.empty(len(names))
    for i, name in enumerate(names):
        p = f"{path}.params.{name}"
        v = _json_number(params[name], p)
        lo, hi, whose = float(law.lower[i]), float(law.upper[i]), "the law's"
        if name in bounds:
            (lo, hi), whose = bounds[name], f"its (options.bounds.{name})"
        if v < lo:
            raise ValueError(f"{p}: {_show(params[name])} is below {whose} lower bound {lo:g}")
        if v > hi:
            raise ValueError(f"{p}: {_show(params[name])} is above {whose} upper bound {hi:g}")
        x[i] = v
    legacy = version == 1 and "stationarity" not in d  # written by the solver before issue 20
    status = _json_status(d["status"], f"{path}.status", legacy)
    success = _json_bool(d["success"], f"{path}.success")
    if success != (status > 0 if legacy else status == STATUS_CONVERGED):
        raise ValueError(f"{path}.success: {_show(success)} contradicts status {status} ("
                         + ("success is status > 0 in this version-1 fit)" if legacy else "success is status 1)"))
    message = d["message"]
    if not isinstance(message, str):
        raise ValueError(f"{path}.message: expected a string, got {_show(message)}")
    starts_status = [_json_status(v, f"{path}.starts_status[{j}]", legacy)
                     for j, v in enumerate(_json_list(d["starts_status"], f"{path}.starts_status"))]
    starts_fun = _json_numbers(d["starts_fun"], f"{path}.starts_fun", len(starts_status), "starts_status")
    stat = d.get("starts_stationarity", [])
    starts_stationarity = _json_numbers(stat, f"{path}.starts_stationarity",
                                        len(starts_status) if stat else 0, "starts_status")
    seconds = _json_number(d.get("seconds"), f"{path}.seconds", finite=False, null=True)
    if seconds < 0:
        raise ValueError(f"{path}.seconds: {_show(d['seconds'])} is negative")
    at_limit = d.get("at_limit", {})
    if not isinstance(at_limit, Mapping):
        raise ValueError(f"{path}.at_limit: expected an object {{parameter: where}}, got {_show(at_limit)}")
    for name, where in at_limit.items():
        p = _key_path(f"{path}.at_limit", name)
        if name not in known:
            raise ValueError(f"{p}: not a parameter of {law!r}")
        if where not in ("lower", "upper", "~0"):
            raise ValueError(f"{p}: expected \"lower\", \"upper\" or \"~0\", got {_show(where)}")
    return Fit(law=law, target=target, x=_frozen(x),
               fun=_json_number(d["fun"], f"{path}.fun", finite=False), success=success, status=status,
               message=message, nit=_json_int(d["nit"], f"{path}.nit", lo=0),
               nfev=_json_int(d["nfev"], f"{path}.nfev", lo=0), njev=_json_int(d["njev"], f"{path}.njev", lo=0),
               starts_fun=_frozen(starts_fun), starts_status=_frozen(np.array(starts_status, dtype=int)),
               n_records=_json_int(d["n_records"], f"{path}.n_records", lo=0),
               train=_train_from_json(d["train"], f"{path}.train"), options=options, domains=tuple(domains),
               seconds=seconds, stationarity=_json_number(d.get("stationarity"), f"{path}.stationarity",
                                                          finite=False, null=True),
               starts_stationarity=_frozen(starts_stationarity), at_limit=dict(at_limit),
               ranges=_ranges_from_json(d.get("ranges", {}), f"{path}.ranges", law))


def _law_spec(spec: Any, path: str) -> dict:
    """The arguments of :class:`Law` in a fit's ``law`` object, checked without building it."""
    from .laws import ALL_LAWS, BASELINE_LAWS

    if not isinstance(spec, Mapping):
        raise ValueError(f"{path}: expected an object, got {_show(spec)}")
    _check_keys(spec, path, _LAW_REQUIRED, ("target_domain", "repetition"))
    name = spec["name"]
    if not isinstance(name, str) or name not in ALL_LAWS:
        raise ValueError(f"{path}.name: unknown law {_show(name)}; expected one of {', '.join(ALL_LAWS)}")
    k = _json_int(spec["k"], f"{path}.k")
    if name == "chinchilla":
        if k != 0:
            raise ValueError(f"{path}.k: the chinchilla law has no domains, expected 0, got {k}")
    elif not 1 <= k <= _MAX_K:
        raise ValueError(f"{path}.k: {k} is " + ("below 1" if k < 1 else f"above the limit {_MAX_K:,}")
                         + f" (the {name} law needs 1 <= k <= {_MAX_K:,} domains)")
    n_term = _json_bool(spec["n_term"], f"{path}.n_term")
    d_term = _json_bool(spec["d_term"], f"{path}.d_term")
    if n_term and name in BASELINE_LAWS:
        raise ValueError(f"{path}.n_term: the {name} law has no model-size term; expected false")
    if d_term and name in ("dml_exp", "dml_sum", "linear"):
        raise ValueError(f"{path}.d_term: the {name} law has no token term; expected false")
    if name == "chinchilla" and not (n_term or d_term):
        raise ValueError(f"{path}.d_term: the chinchilla law without both terms is a constant; "
                         "n_term or d_term must be true")
    scales = {}
    for key in ("n_scale", "d_scale"):
        scales[key] = _json_number(spec[key], f"{path}.{key}")
        if scales[key] <= 0:
            raise ValueError(f"{path}.{key}: {_show(spec[key])} is not > 0")
    target_domain = None
    if name == "bimix":
        if "target_domain" not in spec:
            raise ValueError(f"{path}.target_domain: missing (the bimix law needs the index of the target's "
                             "own domain)")
        target_domain = _json_int(spec["target_domain"], f"{path}.target_domain", lo=0, hi=k - 1)
    elif "target_domain" in spec:
        raise ValueError(f"{path}.target_domain: only the bimix law has a target domain, not {name}")
    repetition = spec.get("repetition", False)
    if not (isinstance(repetition, bool) or repetition in ("shared", "per_domain")):
        raise ValueError(f"{path}.repetition: expected true, false or \"per_domain\", got {_show(repetition)}")
    return dict(name=name, k=k, n_term=n_term, d_term=d_term, target_domain=target_domain, repetition=repetition,
                **scales)


def _law_n_params(name: str, k: int, n_term: bool, d_term: bool) -> Optional[int]:
    """Parameters of a law (the table of :mod:`mixlaw.laws`) without building it; None for a
    law this table does not know."""
    n, d = int(n_term), int(d_term)
    return {"chinchilla": 1 + 2 * (n + d), "additive": 1 + 2 * k + 2 * (n + d),
            "joint": 1 + 2 * k + (k + 2) * (n + d), "simple": 2 + k + 2 * (n + d),
            "full": 1 + 2 * k + (2 * k + 2) * (n + d), "dml_exp": 1 + k, "dml_sum": 1 + 2 * k,
            "bimix": 3 + 2 * d, "linear": k}.get(name)


def _options_from_json(options: Any, path: str, law: Law) -> tuple[dict, dict]:
    """``Fit.options`` and its parameter bounds ``{name: (lower, upper)}``, type-checked."""
    if not isinstance(options, Mapping):
        raise ValueError(f"{path}: expected an object, got {_show(options)}")
    for key, kind in _OPTION_TYPES.items():
        if key not in options:
            continue
        v, p = options[key], f"{path}.{key}"
        if kind == "str" and not isinstance(v, str):
            raise ValueError(f"{p}: expected a string, got {_show(v)}")
        if kind == "int" or (kind == "int or auto" and v != "auto"):
            _json_int(v, p)
        elif kind == "number":
            _json_number(v, p, finite=False)
        elif kind == "bool":
            _json_bool(v, p)
    bounds: dict = {}
    raw = options.get("bounds", {})
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}.bounds: expected an object {{parameter: [lower, upper]}}, got {_show(raw)}")
    for name, pair in raw.items():
        p = _key_path(f"{path}.bounds", name)
        if name not in law.param_names:
            raise ValueError(f"{p}: not a parameter of {law!r}")
        if not isinstance(pair, list) or len(pair) != 2:
            raise ValueError(f"{p}: expected [lower, upper], got {_show(pair)}")
        lo, hi = (_json_number(v, f"{p}[{j}]", finite=False) for j, v in enumerate(pair))
        if not lo <= hi:  # also NaN
            raise ValueError(f"{p}: lower {_show(pair[0])} is not <= upper {_show(pair[1])}")
        bounds[name] = (lo, hi)
    tie = options.get("tie", {})
    if not isinstance(tie, Mapping):
        raise ValueError(f"{path}.tie: expected an object {{group: [parameter, ...]}}, got {_show(tie)}")
    for group, members in tie.items():
        p = _key_path(f"{path}.tie", group)
        for j, name in enumerate(_json_list(members, p)):
            if not isinstance(name, str) or name not in law.param_names:
                raise ValueError(f"{p}[{j}]: {_show(name)} is not a parameter of {law!r}")
    return dict(options), bounds


def _train_from_json(train: Any, path: str) -> dict:
    """``Fit.train``: metrics by name, numbers (``n`` an integer >= 0)."""
    if not isinstance(train, Mapping):
        raise ValueError(f"{path}: expected an object {{metric: value}}, got {_show(train)}")
    out = {}
    for key, v in train.items():
        p = _key_path(path, key)
        out[key] = _json_int(v, p, lo=0) if key == "n" else _json_number(v, p, finite=False, null=True)
    return out


def _ranges_from_json(ranges: Any, path: str, law: Law) -> dict:
    """``Fit.ranges``: ``{}`` or ``N`` and ``D`` (each when the runs had it; always for a law
    with that term) and ``h`` (laws with a mixture term)."""
    k = law.k
    if not isinstance(ranges, Mapping):
        raise ValueError(f"{path}: expected an object, got {_show(ranges)}")
    if not ranges:
        return {}
    # A law's own terms had their column (fit refuses runs without it); other columns only
    # when the runs had them.
    need = tuple(c for c, used in (("N", law.n_term), ("D", law.d_term)) if used)
    _check_keys(ranges, path, need, tuple(c for c in ("N", "D") if c not in need) + (("h",) if k else ()))

    def span(v: Any, p: str, lo: float, hi: float, what: str) -> tuple[float, float]:
        if not isinstance(v, list) or len(v) != 2:
            raise ValueError(f"{p}: expected [min, max], got {_show(v)}")
        a, b = (_json_number(x, f"{p}[{j}]") for j, x in enumerate(v))
        for j, x in enumerate((a, b)):
            if not lo <= x <= hi:
                raise ValueError(f"{p}[{j}]: {_show(v[j])} is not {what}")
        if a > b:
            raise ValueError(f"{p}: min {_show(v[0])} is above max {_show(v[1])}")
        return a, b

    out: dict = {key: span(ranges[key], f"{path}.{key}", 5e-324, math.inf, "> 0") for key in ("N", "D")
                 if key in ranges}  # a fit of runs without N (D) has no range for it
    if "h" in ranges:
        h = _json_list(ranges["h"], f"{path}.h")
        if len(h) != k:
            raise ValueError(f"{path}.h: {len(h)} [min, max] pairs for a law with k = {k} domains")
        out["h"] = tuple(span(v, f"{path}.h[{j}]", 0.0, 1.0 + _WEIGHT_TOL, "a weight in [0, 1]")
                         for j, v in enumerate(h))
    return out


def _check_keys(d: Mapping, path: str, required: Sequence[str], optional: Sequence[str] = ()) -> None:
    missing = [key for key in required if key not in d]
    if missing:
        also = f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise ValueError(f"{_key_path(path, missing[0])}: missing{also}")
    for key in d:
        if key not in required and key not in optional:
            raise ValueError(f"{_key_path(path, key)}: unknown key; expected {', '.join([*required, *optional])}")


def _key_path(path: str, key: Any) -> str:
    """``path.key`` (``path["odd key"]`` when the key is not a plain name)."""
    if isinstance(key, str) and key.replace("_", "a").isalnum() and key.isascii():
        return f"{path}.{key}" if path else key
    return f"{path}[{_show(key)}]"


def _show(v: Any) -> str:
    """``v`` as JSON for a message, on one line and short."""
    if isinstance(v, Mapping):
        return "an object"
    if isinstance(v, (list, tuple)):
        return f"an array of {len(v)} item" + ("" if len(v) == 1 else "s")
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 128:
        return "an integer of more than 38 digits"
    try:
        s = json.dumps(v)
    except (TypeError, ValueError):
        s = f"a {type(v).__name__}"
    return s if len(s) <= 60 else s[:57] + "..."


def _names(names: Sequence[Any], limit: int = 12) -> str:
    shown = ", ".join(n if isinstance(n, str) and n.isidentifier() else _show(n) for n in list(names)[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _json_list(v: Any, path: str) -> list:
    if not isinstance(v, list):
        raise ValueError(f"{path}: expected a list, got {_show(v)}")
    return v


def _json_bool(v: Any, path: str) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"{path}: expected true or false, got {_show(v)}")
    return v


def _json_int(v: Any, path: str, lo: Optional[int] = None, hi: Optional[int] = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{path}: expected an integer, got {_show(v)}")
    if lo is not None and v < lo:
        raise ValueError(f"{path}: {_show(v)} is below the minimum {lo}")
    if hi is not None and v > hi:
        raise ValueError(f"{path}: {_show(v)} is above the maximum {hi}")
    return v


def _json_number(v: Any, path: str, *, finite: bool = True, null: bool = False) -> float:
    """A JSON number (not a string, not a boolean) as a float; null is NaN when allowed."""
    if v is None and null:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{path}: expected a {'finite ' if finite else ''}number{' or null' if null else ''}, "
                         f"got {_show(v)}")
    try:
        x = float(v)
    except OverflowError:  # an integer beyond the float range
        x = math.copysign(math.inf, v)
    if finite and not math.isfinite(x):
        raise ValueError(f"{path}: expected a finite number, got {_show(v)}")
    return x


def _json_numbers(v: Any, path: str, n: int, length_of: str) -> np.ndarray:
    """A list of ``n`` numbers or nulls (non-finite) as a float array."""
    items = _json_list(v, path)
    if len(items) != n:
        raise ValueError(f"{path}: {len(items)} values, but {length_of} has {n}")
    return np.array([_json_number(x, f"{path}[{j}]", finite=False, null=True) for j, x in enumerate(items)],
                    dtype=float)


def _json_status(v: Any, path: str, legacy: bool) -> int:
    """A solver status the core knows (statuses -3..4 of the solver before issue 20 for
    ``legacy`` fits)."""
    s = _json_int(v, path)
    known = -3 <= s <= 4 if legacy else (-1000 < s < 1000 and _core.status_message(s) != "unknown status")
    if not known:
        raise ValueError(f"{path}: {s} is not a solver status")
    return s


def _floats(value: Any, arg: str) -> np.ndarray:
    """``value`` as a float array; a ValueError naming ``arg`` when it is not numeric."""
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{arg}: expected numbers ({exc})") from None


def _int_option(value: Any, arg: str, lo: Optional[int] = 0, hi: int = 2 ** 31) -> int:
    """An integer option: a TypeError naming ``arg`` unless it is an int, a ValueError unless
    ``lo <= value < hi`` (by default the range of the C++ core's int; seeds go to 2**64)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{arg}: expected an int, got {type(value).__name__}")
    if (lo is not None and value < lo) or value >= hi:
        raise ValueError(f"{arg}: must be " + (f">= {lo} and " if lo is not None else "") + f"< {hi}")
    return int(value)


def _float_option(value: Any, arg: str) -> float:
    """A real-valued option: a TypeError naming ``arg`` unless it is a real number (its range
    is checked where it is used)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{arg}: expected a number, got {type(value).__name__}")
    return float(value)


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def _resolve_bounds(law: Law, bounds: Optional[BoundsLike]) -> tuple[np.ndarray, np.ndarray, set]:
    lo, hi = law.lower.copy(), law.upper.copy()
    touched: set = set()
    if bounds is None:
        return lo, hi, touched
    if not isinstance(bounds, Mapping):
        raise TypeError("bounds: expected a mapping {parameter name or glob: (lower, upper)}")
    for key, pair in bounds.items():
        names = [n for n in law.param_names if fnmatch.fnmatchcase(n, key)]
        if not names:
            raise ValueError(f"bounds: {key!r} matches no parameter of {law!r}; parameters: {list(law.param_names)}")
        try:
            a, b = (float(v) for v in pair)
        except (TypeError, ValueError):
            raise ValueError(f"bounds: {key!r} must map to a (lower, upper) pair of numbers") from None
        if math.isnan(a) or math.isnan(b) or a > b:
            raise ValueError(f"bounds: {key!r} has lower {a} > upper {b} (or NaN)")
        for n in names:
            i = law.index(n)
            lo[i], hi[i] = a, b
            touched.add(n)
    return lo, hi, touched


def _fit_box(law: Law, options: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """The bounds and tie labels a fit was made with, from its :attr:`Fit.options` (whose
    ``bounds`` and ``tie`` list parameter names): for refits as the fit (bootstrap) and for
    its free coordinates (``mixlaw.design``)."""
    lo, hi, _ = _resolve_bounds(law, options.get("bounds") or None)
    labels, _ = _resolve_tie(law, options.get("tie") or None, lo, hi)
    return lo, hi, labels


def _resolve_tie(law: Law, tie: Any, lo: np.ndarray, hi: np.ndarray) -> tuple[Optional[np.ndarray], dict]:
    """The solver's labels of ``tie`` (one per parameter: the index of its group's first
    member, or its own; None without ties) and the groups as ``{shared name: [parameter
    names in law order]}`` for ``Fit.options``."""
    if tie is None:
        return None, {}
    if not isinstance(tie, Mapping):
        raise TypeError("tie: expected a mapping {shared name: glob or list of globs}")
    names = law.param_names
    log_scale = np.asarray(law.log_scale, dtype=bool) & (lo >= 0)  # as the solver moves them
    owner: dict = {}
    groups: dict = {}
    labels = np.arange(law.n_params, dtype=np.int64)
    for shared, globs in tie.items():
        if not isinstance(shared, str) or not shared:
            raise TypeError(f"tie: shared names must be non-empty strings, got {shared!r}")
        pats = [globs] if isinstance(globs, str) else globs
        if not isinstance(pats, Sequence) or not pats or not all(isinstance(g, str) for g in pats):
            raise TypeError(f"tie: group {shared!r} must map to a glob or a non-empty list of globs, got {globs!r}")
        idx: set = set()
        for pat in pats:
            hit = [i for i, n in enumerate(names) if fnmatch.fnmatchcase(n, pat)]
            if not hit:
                raise ValueError(f"tie: {pat!r} (group {shared!r}) matches no parameter of {law!r}; "
                                 f"parameters: {list(names)}")
            idx.update(hit)
        members = sorted(idx)
        for i in members:
            if names[i] in owner:
                raise ValueError(f"tie: parameter {names[i]!r} is in two groups, {owner[names[i]]!r} and {shared!r}")
            owner[names[i]] = shared
        logs = [names[i] for i in members if log_scale[i]]
        if logs and len(logs) < len(members):
            raise ValueError(f"tie: group {shared!r} mixes log-scaled parameters {logs} with linear ones "
                             f"{[names[i] for i in members if not log_scale[i]]}; tie parameters of one kind")
        if any(lo[i] != lo[members[0]] or hi[i] != hi[members[0]] for i in members):
            detail = ", ".join(f"{names[i]} [{lo[i]:g}, {hi[i]:g}]" for i in members)
            raise ValueError(f"tie: group {shared!r} ties parameters with different bounds ({detail}); give them "
                             "the same bounds with bounds=")
        labels[members] = members[0]
        groups[shared] = [names[i] for i in members]
    return (labels if groups else None), groups


def random_starts(law: Law, n_starts: int, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray,
                  init_lo: Optional[np.ndarray] = None, init_hi: Optional[np.ndarray] = None) -> np.ndarray:
    """Starts drawn in the law's init ranges (log-uniform for log-scaled parameters),
    intersected with the bounds."""
    ilo = np.maximum(law.init_lower if init_lo is None else init_lo, lo)
    ihi = np.minimum(law.init_upper if init_hi is None else init_hi, hi)
    # An init range outside user bounds collapses onto the nearest bound.
    ihi = np.maximum(ihi, ilo)
    u = rng.random((n_starts, law.n_params))
    logs = law.log_scale & (ilo > 0)
    out = ilo + u * (ihi - ilo)
    if np.any(logs):
        llo, lhi = np.log(ilo[logs]), np.log(ihi[logs])
        out[:, logs] = np.exp(llo + u[:, logs] * (lhi - llo))
    return out


#: Mixture weights closer than this count as the same mixture (rounding in the inputs).
_MIXTURE_ATOL = 1e-9


def _identifiability(law: Law, N: Optional[np.ndarray], D: Optional[np.ndarray], H: np.ndarray,
                     target: str) -> None:
    n = H.shape[0]
    if n < law.n_params:
        raise ValueError(f"runs: target {target!r} has {n} records, fewer than the {law.n_params} "
                         f"parameters of {law!r}; add runs or fit a law with fewer parameters")
    if law.n_term and np.unique(N).size < 2:
        raise ValueError(f"law: every record of target {target!r} has the same N ({N[0]:g}), so the model-size "
                         "term is not identifiable; fit with n_term=False")
    if law.d_term and np.unique(D).size < 2:
        raise ValueError(f"law: every record of target {target!r} has the same D ({D[0]:g}), so the token term "
                         "is not identifiable; fit with d_term=False")
    if law.k and law.name != "chinchilla" and float(np.max(np.ptp(H, axis=0))) <= _MIXTURE_ATOL:
        raise ValueError(f"law: every record of target {target!r} has the same mixture, so the mixture term "
                         "is not identifiable; use the chinchilla law")


def _degenerate_warnings(law: Law, H: np.ndarray, y: np.ndarray, target: str, domains: Sequence[str] = ()) -> None:
    """Warn (:class:`IdentifiabilityWarning`) when the data leave parameters arbitrary
    although the fit itself is well defined: constant losses, or mixtures that do not
    vary every domain independently."""
    if y.size and float(np.max(y) - np.min(y)) <= 1e-12 * max(float(np.max(np.abs(y))), 1e-300):
        warnings.warn(f"targets: every loss of target {target!r} equals {float(y[0]):g}, so only E is "
                      f"identifiable and the other parameters of {law!r} are arbitrary; check the target "
                      "column (a constant loss usually means a broken evaluation)",
                      IdentifiabilityWarning, stacklevel=_user_stacklevel())
        return
    k = law.k
    if law.name == "bimix":  # only the target domain's weight enters the law
        t = law.target_domain
        if t is not None and H.shape[0] and float(np.ptp(np.asarray(H, dtype=float)[:, t])) <= _MIXTURE_ATOL:
            dom = domains[t] if len(domains) == k else f"d{t}"
            warnings.warn(f"runs: the weight of domain {dom!r} never varies in the records of target {target!r}, "
                          f"so the bimix law's C and gamma are not separately identifiable from E; add runs with "
                          "different weights on that domain", IdentifiabilityWarning, stacklevel=_user_stacklevel())
        return
    if not k or law.name == "chinchilla" or k < 2:
        return
    M = _distinct_rows(H)[0]
    if M.shape[0] < 2:
        return  # a single mixture is refused by _identifiability
    if M.shape[0] - 1 < k - 1:
        # Fewer mixtures than domains: deficient without a decomposition (which, at k = 1,024,
        # is a long uninterruptible LAPACK call on a loaded machine).
        span = f"at most a {M.shape[0] - 1}"
    else:
        sv = np.linalg.svd(M[1:] - M[0], compute_uv=False)
        rank = int(np.sum(sv > _MIXTURE_ATOL))
        if rank >= k - 1:
            return
        span = f"only a {rank}"
    names = list(domains) if len(domains) == k else [f"d{i}" for i in range(k)]
    fixed = [names[i] for i in range(k) if np.ptp(M[:, i]) == 0]
    detail = f"; the weight of {fixed} never varies" if fixed else ""
    warnings.warn(f"runs: the {M.shape[0]} distinct mixtures of target {target!r} span {span}-dimensional "
                  f"affine set of the {k - 1}-dimensional simplex{detail}, so the per-domain parameters of "
                  f"{law!r} are not separately identifiable (the fit is one of many equally good ones); add runs "
                  f"whose mixtures vary the domains independently (at least {k} affinely independent mixtures), "
                  "or merge or drop domains", IdentifiabilityWarning, stacklevel=_user_stacklevel())


def fit(runs: Any, law: Union[str, Law] = "additive", *, targets: Union[None, str, Sequence[str]] = None,
        n_starts: Union[int, str] = "auto", seed: int = 0, bounds: Optional[BoundsLike] = None,
        tie: Optional[Mapping[str, Union[str, Sequence[str]]]] = None, loss: str = "huber",
        delta: float = 1e-3, residual: str = "raw", reduction: str = "mean", weights: Any = None,
        method: str = "lm", curvature: str = "auto", linear_solver: str = "auto", hops: int = 0, hop_step: float = 0.5, hop_temperature: float = 0.05,
        max_iter: int = 1000, iterate: int = 5, ftol: float = 1e-10, xtol: float = 1e-10, gtol: float = 1e-6,
        max_step: float = 1.0, screen_iter: int = 0, screen_ratio: float = 1.5, screen_keep: int = 8, starts: Any = None,
        nest: Union[bool, "Fits"] = True, n_term: bool = True, d_term: bool = True, n_scale: float = 1e6,
        d_scale: float = 1e9, repetition: Union[bool, str] = False, unique_tokens: Any = None, reseat: bool = True,
        init: str = "auto", progress: Any = "auto", threads: Optional[int] = None) -> Fits:
    """Fit a scaling law to every requested target of a runs table.

    Minimises, per target, ``H = sum_j c_j rho(r_j)`` with ``r_j = L_j - y_j`` (or
    ``log L_j - log y_j`` for ``residual="log"``), ``rho`` the Huber loss with ``delta``
    (``loss="huber"``) or ``r^2/2`` (``loss="mse"``), and ``c_j`` the record weights
    divided by their sum (``reduction="mean"``, the paper's choice) or not (``"sum"``).
    The minimiser found does not depend on the reduction.

    Parameters
    ----------
    runs : Runs
        A runs table (:func:`mixlaw.load_runs`, :mod:`mixlaw.datasets`).
    law : str or Law
        A name of :data:`mixlaw.ALL_LAWS` (``"additive"``, ``"joint"``, ..., or a baseline
        such as ``"dml_exp"``, ``"bimix"``, ``"linear"``) or a :class:`Law` (then
        ``n_term``, ``d_term``, ``n_scale``, ``d_scale`` are its own). ``"bimix"`` by name
        describes each target through the training domain of the same name.
    targets : str or sequence of str, optional
        Target names (default: every target of ``runs``).
    n_starts : int or "auto"
        Random starts per target (drawn in the law's init ranges, log-uniform for scale
        parameters), after the two-stage start (``init``) and the nested start (``nest``);
        the best of all starts is kept (ties: the lowest start index). ``"auto"`` (default):
        64 when the law has at most 100 parameters (k <= 47 domains for ``additive``, k <= 23
        for ``joint``) or has no two-stage or nested start; beyond, none: with many domains
        random starts mostly end at poorer minima on edges of the parameter box after
        hundreds of iterations each, while the two-stage start reached the lowest objective
        found in every case benchmarked (bench/README.md, section 6). ``0`` is allowed when
        a two-stage or nested start exists.
    seed : int
        Starts and basin hops of target ``t`` depend only on ``(seed, t)``.
    bounds : mapping, optional
        ``{name or glob: (lower, upper)}`` overriding the law's defaults, e.g.
        ``{"E": (0, 2), "gamma_*": (0, 1)}``; a parameter may be named by its domain,
        ``{"gamma[web]": (0, 1)}`` (:attr:`Fit.domain_params`).
    tie : mapping, optional
        Parameter tying: ``{shared name: glob or list of globs}`` (a parameter may also be
        named by its domain, ``gamma[web]``, as in ``bounds``); the parameters a group
        matches take one common value during the fit, e.g. ``{"gamma": "gamma_*"}`` (one
        exponent shared by all domains) or ``{"gamma_code": ["gamma_3", "gamma_4"],
        "gamma_web": "gamma_[125]"}``. For designs with many domains and few mixtures, which
        cannot identify one exponent per domain. :attr:`Fit.x` still holds every parameter
        of the law (tied ones exactly equal), and ``Fit.options["tie"]`` records the groups
        as ``{shared name: [parameter names]}`` (``{}`` without ties; pass it back as ``tie``
        to refit). The solver works on one coordinate per group (gradients and
        Gauss-Newton matrices summed over its members). A group starts at its first
        member's (law order) value of each start, random or explicit. A glob that matches
        no parameter, a parameter in two groups, a group mixing log-scaled and linear
        parameters, or one whose members have different bounds (after ``bounds``): a
        ValueError naming ``tie``. With nesting, the simpler law is fitted with the groups
        restricted to its own parameters.
    weights : array (n,), optional
        Per-record weights (aligned with ``runs``).
    method : {"lm", "lbfgsb"}
    curvature : {"auto", "exact", "irls"}
        Gauss-Newton curvature of a residual outside the Huber band for ``method="lm"`` at the
        start of every local solve: the exact second derivative (0) or the IRLS weight
        ``delta/|r|`` (the solver switches between the two when one stalls). ``"auto"``
        (default): exact up to 100 parameters, IRLS beyond. With many domains almost no
        residual lies inside the band far from a fit, and exact-curvature steps drive many
        coefficients to ~0 on the way (a boundary minimum with their exponents at the bound):
        on the additive law at k = 64 (bench/README.md, section 6) IRLS-first starts reached
        the truth's objective where exact-first ones ended 7-16x above it.
    linear_solver : {"auto", "dense", "cg"}
        How a Levenberg-Marquardt step is solved: ``"dense"`` forms the P x P Gauss-Newton
        matrix and factors it (cost per iteration O(mixtures x P^2 + P^3)); ``"cg"`` solves
        the step by conjugate gradients on products with the per-mixture factors of that
        matrix (O(mixtures x P) per product, no P x P memory); ``"auto"`` (default) uses
        dense steps up to 100 parameters and conjugate gradients beyond (measured crossover: see
        bench/README.md, many domains).
    hops, hop_step, hop_temperature :
        Basin hopping after every local solve (0 hops: plain multi-start).
    max_iter, ftol, xtol, gtol :
        Local solver limits, all relative (scale-free). A start is converged only when it
        is first-order stationary, its stationarity (see :attr:`Fit.stationarity`) at most
        ``gtol``. Steps that decrease the objective by less than ``ftol`` (relative) or
        move by less than ``xtol`` are slow: a run of them, or a window of steps that
        together barely decrease the objective, ends a phase; the Levenberg-Marquardt
        solver then switches the curvature of the residuals outside the Huber band (exact
        <-> IRLS) and goes on, and a start whose phases stop making progress is stalled
        (status -4, not a success). A start that reaches ``max_iter`` is not a success
        either (status 0).
    iterate : int
        When a target's best start stops at ``max_iter``, it goes on from where it stopped
        for another ``max_iter`` iterations, until it stops otherwise, has been solved
        ``iterate`` times in all (as iminuit's ``migrad(iterate=...)``), or crawls: a round
        that lowers the objective by at most 1e-5 (relative) without halving the
        stationarity is the last. ``1``: ``max_iter`` is a hard limit. Its iterations add
        up in :attr:`Fit.nit`. Only the best start goes on, so the cost is at most
        ``iterate - 1`` more local solves per target.
    max_step :
        Initial trust radius of a Levenberg-Marquardt step in the solver's coordinates (log
        of a positive parameter, else the parameter): longer steps are shortened along their
        direction; the radius doubles while shortened steps keep succeeding. A log-scaled
        coordinate moves by at most 16 per step (a factor 9e6) whatever the radius: longer
        steps only led to degenerate coefficients (1e24 and beyond) where the fit stalls.
    screen_iter, screen_ratio, screen_keep :
        Screening of starts, a speed/safety trade-off (off with ``screen_iter=0``, the
        default). Every start first runs ``screen_iter`` local iterations; then only the
        ``screen_keep`` best starts of the target and those within ``screen_ratio`` times
        the best objective go on to convergence (and basin hopping); the others stop there
        with status -3 ("screened out") and keep that objective in ``starts_fun``. The
        fitted objective is never above the best objective seen at screening (so, with
        nesting, never above the simpler law's), and results do not depend on the thread
        count. The price: a start that would have reached a lower minimum is lost if it
        was not yet among the survivors. Measured on the SlimPajama paper split, 64
        starts, ``screen_iter=30`` (``bench/bench_screening.py``): additive law 2.5x to 2.9x
        faster, same best objective on 56 of 56 (target, seed) pairs (55 of 56 in an
        earlier run, the other 5.5e-4 higher); joint law, whose best minima are reached
        from starts that look poor for hundreds of iterations, 5.6x to 5.7x faster but
        higher on 14 of 16 pairs, by up to 18%. Use it for the additive law in large grid
        searches, not for the richer laws.
    starts : array (S, P) or (T, S, P), optional
        Explicit starts (parameter space) used instead of random ones.
    nest : bool or Fits
        Start ``joint`` from the fitted ``additive`` law and ``full`` from ``joint``. Pass
        the already fitted simpler law (a :class:`Fits`) to reuse it instead of refitting.
    repetition : bool or str
        The data-constrained option of a law given by name (``True``: one ``R_D``,
        ``"per_domain"``: one per domain; see :class:`mixlaw.Law`): repeated tokens count
        less. Needs ``unique_tokens``.
    unique_tokens : mapping, number or array, optional
        Data-constrained laws only: the unique tokens of each domain, ``{domain: U}``
        (domains not named are unlimited), or per record, an array (n,) for laws without a
        mixture or (n, k) in the runs' column order. The runs must repeat some domain
        (``D h_i > U_i``) for ``R_D`` to be identified (an IdentifiabilityWarning says so
        otherwise). Such fits take dense steps, O(records x P^2) per iteration, and no
        two-stage start.
    reseat : bool
        With many domains, starts often end at genuine minima on an edge of the parameter
        box: a mixture block ``(sum_i CA_i h_i)^gA`` whose exponent sits at a bound or ~0, or
        a domain with ``C_i`` ~0 or ``gamma_i`` at its bound; no first-order move leaves
        them. When only one start reached a target's best objective, up to max(4, 10%) of its
        lowest such starts are re-seated (the block at ``gA = 1`` with its present median
        value, the domain at ``gamma_i = 0.5``) and solved again, for up to two rounds; a
        solve is kept only when it ends lower (bench/README.md, section 6). Not with ``tie``.
    init : {"auto", "random"}
        ``"auto"`` (default): for laws with the additive mixture term ``1/S(h)``
        (``additive``; ``joint`` and ``full`` without nesting, through the nesting
        embedding) the first start is computed from the data in two stages of least
        squares: per-mixture offsets ``y = o_m + A N'^-alpha + B D'^-beta``, then
        ``o_m = E + 1/sum_i C_i h_i^gamma`` with a common gamma by non-negative least
        squares (:mod:`mixlaw._two_stage`). It needs mixtures trained at two or more sizes or
        token counts; ``Fit.options["two_stage_start"]`` says whether a target had one.
        ``"random"``: random (and nested) starts only.
    progress : "auto", bool, None or callable
        Progress of the solves (starts finished of all, with an ETA): ``"auto"`` (default) a
        ``tqdm`` bar (a widget in notebooks) that appears once the call has run for 2 s;
        ``True`` at once; ``False`` or None silent; a callable receives ``(done, total)``.
        Never changes a result.
    threads : int, optional
        OpenMP threads (None: default). Results do not depend on it.

    Returns
    -------
    Fits
        Mapping target name -> :class:`Fit`.
    """
    t0 = time.perf_counter()
    n_starts = _n_starts_option(n_starts, allow_negative=starts is not None)
    if init not in ("auto", "random"):
        raise ValueError(f"init: expected 'auto' or 'random', got {init!r}")
    _progress.check(progress)
    _int_option(max_iter, "max_iter", lo=None)  # the core names values < 1
    _int_option(iterate, "iterate", lo=1)
    _int_option(hops, "hops", lo=None)
    _int_option(screen_iter, "screen_iter", lo=None)  # the core names values < 0
    _int_option(screen_keep, "screen_keep", lo=None)
    _int_option(seed, "seed", hi=2 ** 64)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction: expected 'mean' or 'sum', got {reduction!r}")
    if not hasattr(runs, "target") or not hasattr(runs, "target_names"):
        raise TypeError("runs: expected a runs table (mixlaw.load_runs or mixlaw.datasets)")
    k = int(runs.H.shape[1])
    if targets is None:
        target_list = list(runs.target_names)
    elif isinstance(targets, str):
        target_list = [targets]
    else:
        target_list = list(targets)
    if not target_list:
        raise ValueError("targets: no target to fit")
    unknown = [t for t in target_list if t not in runs.target_names]
    if unknown:
        raise ValueError(f"targets: unknown target(s) {unknown}; available: {list(runs.target_names)}")
    if len(set(target_list)) != len(target_list):
        raise ValueError("targets: duplicate target names")
    laws = _target_laws(runs, law, target_list, k, n_term=n_term, d_term=d_term, n_scale=n_scale, d_scale=d_scale,
                        repetition=repetition)
    L = laws[0]
    U_all = _runs_unique_tokens(unique_tokens, runs, L)
    w_all = None
    if weights is not None:
        w_all = _floats(weights, "weights")
        if w_all.shape != (len(runs),):
            raise ValueError(f"weights: expected shape ({len(runs)},), got {w_all.shape}")
        if not np.all(np.isfinite(w_all)) or np.any(w_all < 0):
            raise ValueError("weights: must be finite and >= 0")
        w_max = float(w_all.max()) if w_all.size else 0.0
        if not _WEIGHT_MAX_RANGE[0] <= w_max <= _WEIGHT_MAX_RANGE[1]:
            raise ValueError(f"weights: the largest weight is {w_max:.3g}; it must lie in [{_WEIGHT_MAX_RANGE[0]:g}, "
                             f"{_WEIGHT_MAX_RANGE[1]:g}] (beyond, the weighted objective overflows or underflows to 0). "
                             "Only their ratios matter with reduction='mean': rescale them, e.g. weights / weights.max()")
    if 0 < _float_option(delta, "delta") < _DELTA_MIN:
        raise ValueError(f"delta: {delta!r} is below {_DELTA_MIN:g}: the Huber objective would be rounding noise "
                         "(the solver cannot tell a minimum from 0); use a larger delta, or loss='mse'")

    # Parameters may be named by domain (C[web]) as well as flat (C_1) in bounds and ties.
    run_domains = tuple(getattr(runs, "domains", ()))
    if isinstance(bounds, Mapping):
        bounds = {L.flat_name(str(n), run_domains): b for n, b in bounds.items()}
    if isinstance(tie, Mapping):  # (members of other types are refused by _resolve_tie, naming tie)
        tie = {g: (L.flat_name(m, run_domains) if isinstance(m, str) else
                   [L.flat_name(x, run_domains) if isinstance(x, str) else x for x in m]
                   if isinstance(m, (list, tuple)) else m) for g, m in tie.items()}
    lo, hi, touched = _resolve_bounds(L, bounds)
    tie_labels, tie_groups = _resolve_tie(L, tie, lo, hi)
    # "auto" is resolved per law (the nested simpler law resolves its own from `curvature`).
    used_curvature = resolved_curvature(L, curvature)
    options = dict(loss=loss, delta=_float_option(delta, "delta"), residual=residual, reduction=reduction,
                   method=method, curvature=used_curvature, linear_solver=linear_solver,
                   n_starts=n_starts, init=init, seed=int(seed),
                   hops=int(hops), hop_step=_float_option(hop_step, "hop_step"),
                   hop_temperature=_float_option(hop_temperature, "hop_temperature"), max_iter=int(max_iter),
                   iterate=int(iterate),
                   ftol=_float_option(ftol, "ftol"), xtol=_float_option(xtol, "xtol"),
                   gtol=_float_option(gtol, "gtol"),
                   max_step=_float_option(max_step, "max_step"), screen_iter=int(screen_iter),
                   screen_ratio=_float_option(screen_ratio, "screen_ratio"), screen_keep=int(screen_keep),
                   nest=bool(nest) if not isinstance(nest, Fits) else True,
                   bounds={n: [float(lo[L.index(n)]), float(hi[L.index(n)])] for n in sorted(touched)},
                   tie=tie_groups)

    # Per-target data, identifiability checks and starts.
    explicit = None if starts is None else _floats(starts, "starts")
    if explicit is not None and explicit.ndim not in (2, 3):
        raise ValueError("starts: expected an (S, P) or (T, S, P) array")
    if explicit is not None and explicit.shape[-1] != L.n_params:
        raise ValueError(f"starts: expected {L.n_params} columns for {L!r}, got {explicit.shape[-1]}")
    if explicit is not None and explicit.ndim == 3 and explicit.shape[0] != len(target_list):
        raise ValueError(f"starts: expected one block of starts per target ({len(target_list)}), got {explicit.shape[0]}")
    nesting = explicit is None and L.name in NESTED_IN and (isinstance(nest, Fits) or bool(nest))
    jobs = [_prepare_job(runs, laws[ti], t, n_starts=n_starts, seed=seed, lo=lo, hi=hi, touched=touched,
                         residual=residual, weights=w_all, unique_tokens=U_all,
                         starts=None if explicit is None else (explicit if explicit.ndim == 2 else explicit[ti]),
                         init=init, nested=nesting)
            for ti, t in enumerate(target_list)]
    problems = [j.problem for j in jobs]
    start_list = [j.starts for j in jobs]
    seeds = [j.seed for j in jobs]
    records_n = [j.records for j in jobs]

    # Nesting: start from the simpler law's solution, mapped into this one.
    nested_from: Optional[Fits] = None
    if isinstance(nest, Fits) and L.name in NESTED_IN and explicit is None:
        simpler = nest.law
        if simpler.name != NESTED_IN[L.name]:
            raise ValueError(f"nest: {L.name} nests {NESTED_IN[L.name]}, got fits of {simpler.name}")
        missing = [t for t in target_list if t not in nest]
        if missing:
            raise ValueError(f"nest: no fit for target(s) {missing}")
        nested_from = nest
    elif nest and L.name in NESTED_IN and explicit is None:
        simpler = Law(NESTED_IN[L.name], L.k, n_term=L.n_term, d_term=L.d_term, n_scale=L.n_scale,
                      d_scale=L.d_scale, repetition=L.repetition)
        nested_from = fit(runs, simpler, targets=target_list, n_starts=n_starts, seed=seed, loss=loss, delta=delta,
                          residual=residual, reduction=reduction, weights=weights, method=method,
                          curvature=curvature, linear_solver=linear_solver, hops=hops,
                          hop_step=hop_step, hop_temperature=hop_temperature, max_iter=max_iter,
                          iterate=iterate, ftol=ftol,
                          xtol=xtol, gtol=gtol, max_step=max_step, screen_iter=screen_iter, screen_ratio=screen_ratio,
                          screen_keep=screen_keep, nest=True, reseat=reseat, init=init, progress=progress,
                          threads=threads, unique_tokens=unique_tokens,
                          bounds={n: b for n, b in (bounds or {}).items()
                                  if any(fnmatch.fnmatchcase(p, n) for p in simpler.param_names)},
                          tie={g: kept for g, members in tie_groups.items()
                               if (kept := [n for n in members if n in simpler.param_names])})
    if nested_from is not None:
        for ti, t in enumerate(target_list):
            mapped = embed(nested_from[t].x, nested_from[t].law, L)
            start_list[ti] = np.vstack([mapped[None, :], start_list[ti]])

    with _progress.reporter(progress, f"fit {L.name}") as report:
        results = _core.fit_many(problems, start_list, [lo] * len(problems), [hi] * len(problems), seeds,
                                 threads=threads, tie=None if tie_labels is None else [tie_labels] * len(problems),
                                 progress=report, **_solver_options(options))
    if reseat and tie_labels is None:
        _reseat_degenerate(laws, problems, results, records_n, [lo] * len(problems), [hi] * len(problems), seeds,
                           options, threads, progress=progress)
    _revive_collapsed(laws, problems, results, lo, hi, seeds, options, threads, tie_labels, progress=progress)
    _continue_at_limit(problems, results, lo, hi, seeds, options, threads, tie_labels, progress=progress)
    domains = tuple(getattr(runs, "domains", ()))
    opts = dict(options, nested_start=nested_from is not None)
    fits = {t: _assemble_fit(laws[ti], t, results[ti], records_n[ti], dict(opts, two_stage_start=jobs[ti].two_stage),
                             domains, lo, hi, threads, unique_tokens=jobs[ti].unique_tokens)
            for ti, t in enumerate(target_list)}
    return Fits(fits, elapsed=time.perf_counter() - t0)


def _target_laws(runs: Any, law: Union[str, Law], targets: Sequence[str], k: int, **options: Any) -> list[Law]:
    """The law of each target. They are all ``law``, except that ``"bimix"`` given by name
    describes each target through its own training domain (the domain of the same name)."""
    if isinstance(law, str) and law == "bimix":
        domains = list(getattr(runs, "domains", ()))
        foreign = [t for t in targets if t not in domains]
        if foreign:
            raise ValueError(f"law: the bimix law describes a target that is one of the training domains "
                             f"{domains}; target(s) {foreign} are not (pick targets among the domains, or pass "
                             "mixlaw.law('bimix', k, target_domain=i) to choose the domain yourself)")
        return [_bimix_for_target(t, domains, k, **options) for t in targets]
    L = law if isinstance(law, Law) else make_law(law, k if law != "chinchilla" else None, **options)
    if L.name != "chinchilla" and L.k != k:
        raise ValueError(f"law: {L!r} has {L.k} domains but runs have {k}")
    return [L] * len(targets)


@dataclass
class _Job:
    """One (law, target, data) fitting problem ready for ``_core.fit_many``."""

    problem: tuple  # (law core, records, y, weights)
    starts: np.ndarray
    seed: int
    records: tuple  # (N, D, H, y) of the target
    two_stage: bool = False  # starts[0] is the two-stage start
    unique_tokens: Optional[np.ndarray] = None  # data-constrained laws: (records, max(k, 1))


def _prepare_job(runs: Any, L: Law, target: str, *, n_starts: Union[int, str], seed: int, lo: np.ndarray,
                 hi: np.ndarray, touched: set, residual: str, weights: Optional[np.ndarray] = None,
                 starts: Optional[np.ndarray] = None, init: str = "random", nested: bool = False,
                 unique_tokens: Optional[np.ndarray] = None) -> _Job:
    """Data, identifiability checks and starts of one target (random starts depend only on
    ``(seed, target)``, so a target's fit never depends on what else is in the call).

    Without explicit ``starts``: the two-stage start first (``init="auto"``, a law with the
    additive mixture term, unless ``nested``: the caller adds the nested start, the simpler
    law's fit, which starts it better), then the random starts (:func:`_random_start_count`)."""
    N, D, H, y = runs.target(target)
    for col, used, term, what in (("N", L.n_term, "n_term", "model-size"), ("D", L.d_term, "d_term", "token")):
        if used:
            runs._require(col, "runs", f"the {L.name} law", f"; fit with {term}=False, which drops its {what} term")
    w = None
    present = _present(runs, target)
    if weights is not None:
        w = weights[present]
    U = None if unique_tokens is None else np.ascontiguousarray(unique_tokens[present])
    _identifiability(L, N, D, H, target)
    _degenerate_warnings(L, H, y, target, tuple(getattr(runs, "domains", ())))
    if residual == "log" and np.any(y <= 0):
        raise ValueError(f"residual: log residuals need positive losses; target {target!r} has values <= 0")
    if U is not None:
        epochs = (H if L.k else np.ones((len(y), 1))) * np.asarray(D, dtype=float)[:, None] / U
        if not np.any(epochs > 1):
            warnings.warn(f"target {target!r}: no record repeats a domain (at most {np.max(epochs):.3g} epochs of "
                          "any), so the data-constrained law's R_D is not identifiable (it stays where a start put "
                          "it); fit the plain law, or add runs with repeated data", IdentifiabilityWarning,
                          stacklevel=_user_stacklevel())
    rec = L.records(N, D, H if L.k else None, unique_tokens=U)
    tseed = _target_seed(seed, target)
    two_stage = False
    if starts is None:
        first = None
        if init == "auto" and not nested and not L.repetition:  # (the two-stage start knows no R_D)
            first = two_stage_start(L, N, D, H, y, w, lo, hi)
        two_stage = first is not None
        n_random = _random_start_count(L, n_starts, two_stage or nested, target)
        rng = np.random.default_rng([tseed, 1])
        ilo = L.init_lower.copy()
        ihi = L.init_upper.copy()
        if "E" not in touched and residual == "raw" and "E" in L.param_names:
            ilo[L.index("E")], ihi[L.index("E")] = 0.0, float(np.min(y))  # E is below every observed loss
        starts = random_starts(L, n_random, rng, lo, hi, ilo, ihi)
        if two_stage:
            starts = np.vstack([first[None, :], starts])
    return _Job(problem=(L._core, rec, y, w), starts=np.ascontiguousarray(starts, dtype=float), seed=tseed,
                records=(N, D, H, y), two_stage=two_stage, unique_tokens=U)


def _present(runs: Any, target: str) -> np.ndarray:
    """The records of ``runs`` where ``target`` has a loss (those ``runs.target`` returns)."""
    return np.isfinite(np.asarray(runs.targets[target], dtype=float))


def _runs_unique_tokens(value: Any, runs: Any, L: Law, domains: Optional[Sequence[str]] = None) -> Optional[np.ndarray]:
    """``fit``'s ``unique_tokens`` for the records of ``runs`` as an (n, max(k, 1)) array,
    columns in ``domains`` order (default: the runs' own), or None without. A mapping
    ``{domain: U}`` (domains not named are unlimited, ``inf``), a number, an array (k,) per
    domain, (n,) per record (at most one domain) or (n, k) per record and domain (the runs'
    column order). Refused for a law without the repetition option, required with it."""
    if not L.repetition:
        if value is not None:
            raise ValueError(f"unique_tokens: {L!r} has no repetition option (repetition=True adds it)")
        return None
    if value is None:
        raise ValueError(f"unique_tokens: {L!r} is data-constrained; give the unique tokens of each domain "
                         "(a mapping domain -> U, or one value per record)")
    names = tuple(getattr(runs, "domains", ()))
    n, k = len(runs), L.k
    if isinstance(value, Mapping):
        if k == 0:
            raise ValueError("unique_tokens: a law without a mixture takes a number or one value per record")
        unknown = [d for d in value if d not in names]
        if unknown:
            raise ValueError(f"unique_tokens: unknown domain(s) {unknown}; domains: {list(names)}")
        try:
            per_domain = np.array([float(value.get(d, math.inf)) for d in names])
        except (TypeError, ValueError):
            raise ValueError("unique_tokens: expected {domain: number}") from None
        value = np.tile(per_domain, (n, 1))  # (n, k): unambiguous for k = 1 too
    U = unique_tokens_array(value, n, k)
    if domains is not None and k > 1:
        idx = domain_order(names, tuple(domains), have_arg="runs", want_arg="fit")
        if idx is not None:
            U = np.ascontiguousarray(U[:, idx])
    return U


#: n_starts="auto": random starts up to this many parameters (the dense-step range, where
#: they are cheap and find minima the structured starts miss); beyond, only the two-stage or
#: nested start when the law has one (random starts there mostly end on edges of the box at
#: hundreds of iterations each; bench/README.md, section 6).
_AUTO_RANDOM_PARAMS = 100
_AUTO_RANDOM_STARTS = 64


def _n_starts_option(n_starts: Any, allow_negative: bool = False) -> Union[int, str]:
    """``n_starts`` of fit and grid: ``"auto"`` or an int >= 0 (any int with explicit starts,
    which it does not count)."""
    if isinstance(n_starts, str):
        if n_starts == "auto":
            return n_starts
        raise ValueError(f"n_starts: expected 'auto' or an int >= 0, got {n_starts!r}")
    _int_option(n_starts, "n_starts", lo=None)
    if n_starts < 0 and not allow_negative:
        raise ValueError(f"n_starts: expected 'auto' or an int >= 0, got {n_starts!r}")
    return int(n_starts)


def _random_start_count(L: Law, n_starts: Union[int, str], structured: bool, target: str) -> int:
    """Random starts of one target: ``n_starts`` itself, or for ``"auto"``
    :data:`_AUTO_RANDOM_STARTS` up to :data:`_AUTO_RANDOM_PARAMS` parameters or when the
    law has no structured (two-stage or nested) start, else 0."""
    if n_starts == "auto":
        return _AUTO_RANDOM_STARTS if L.n_params <= _AUTO_RANDOM_PARAMS or not structured else 0
    if n_starts == 0 and not structured:
        raise ValueError(f"n_starts: 0 random starts need a two-stage or nested start, and target {target!r} has "
                         f"none ({L!r}; init='random', a law without the additive mixture term, or runs without "
                         "mixtures trained at several sizes or token counts); use n_starts >= 1")
    return int(n_starts)


_SOLVER_KEYS = ("loss", "delta", "residual", "curvature", "method", "linear_solver", "max_iter", "ftol", "xtol", "gtol", "max_step", "hops",
                "hop_step", "hop_temperature", "screen_iter", "screen_ratio", "screen_keep")


def _solver_options(options: Mapping[str, Any]) -> dict:
    """The keyword arguments of ``_core.fit_many`` from a fit's options dict."""
    out = {k: options[k] for k in _SOLVER_KEYS if k in options}
    out["mean"] = options.get("reduction", "mean") == "mean"
    return out


def _collapse_gain(L: Law, x: np.ndarray, problem: tuple, options: Mapping[str, Any], hi: np.ndarray) -> np.ndarray:
    """Per parameter, how far a converged start is from a minimum in parameter space through a
    coefficient collapsed to ~0: the solver moves scale coefficients in log space, where a
    coefficient driven to ~0 has a vanishing gradient even when raising it would lower the
    objective (a violated KKT condition at theta = 0 that no measure in log coordinates sees).
    The first-order decrease of f, relative to f, from raising such a coefficient to the bottom
    of the range random starts are drawn from; 0 for every other parameter."""
    low = L.log_scale & (x < _DEGENERATE_FRACTION * L.init_lower) & (x < hi)
    if not np.any(low):
        return np.zeros(x.shape)
    f, g = _core.objective(problem[0], problem[1], problem[2], problem[3], x, loss=options["loss"],
                           delta=options["delta"], residual=options["residual"],
                           mean=options.get("reduction", "mean") == "mean")
    if not (f > 0 and np.all(np.isfinite(g))):
        return np.zeros(x.shape)
    return np.where(low & (g < 0), -g * (L.init_lower - x), 0.0) / f


#: curvature="auto": IRLS first above this many parameters (as linear_solver="auto" turns to
#: matrix-free steps), exact below.
_AUTO_IRLS_PARAMS = 100


def resolved_curvature(L: Law, curvature: str) -> str:
    """``curvature="auto"``: exact Huber curvature up to :data:`_AUTO_IRLS_PARAMS` parameters,
    IRLS beyond (many domains: see :func:`fit`); other values as they are."""
    if curvature != "auto":
        return curvature
    return "exact" if L.n_params <= _AUTO_IRLS_PARAMS else "irls"

#: Rounds of reviving collapsed coefficients (see _revive_collapsed).
_REVIVE_ROUNDS = 3


def _continue_start(r: Mapping[str, Any], s: int, r2: Mapping[str, Any], j: int) -> bool:
    """Start ``s`` of result ``r`` went on as start ``j`` of ``r2``: its iterations and time
    add up, and the continuation replaces its end point only when it ends lower (True)."""
    for key in ("nit", "nfev", "njev"):
        r[key][s] += r2[key][j]
    if "seconds" in r:
        r["seconds"][s] += r2["seconds"][j]
    if not (np.isfinite(r2["fun"][j]) and r2["fun"][j] < r["fun"][s]):
        return False
    for key in ("x", "fun", "status", "stationarity"):
        if key in r:
            r[key][s] = r2[key][j]
    return True


def _continue_at_limit(problems: Sequence[tuple], results: list, lo: np.ndarray, hi: np.ndarray,
                       seeds: Sequence[int], options: Mapping[str, Any], threads: Optional[int],
                       tie_labels: Optional[np.ndarray] = None, progress: Any = None) -> None:
    """The best start of each target that stopped at the iteration limit goes on from its end
    point (``options["iterate"]``, see :func:`fit`), all such targets in one parallel call
    per round, without basin hopping. A target leaves when its start stops otherwise, or when
    a round neither lowers its objective by more than :data:`_CONTINUE_MIN_GAIN` (relative)
    nor halves its stationarity: a crawl gets one more round, not ``iterate - 1``. In place;
    independent of the thread count."""
    going = set(range(len(results)))
    for _ in range(int(options.get("iterate", 1)) - 1):
        todo = []
        for ti in sorted(going):
            fun = np.where(np.isfinite(results[ti]["fun"]), results[ti]["fun"], np.inf)
            b = int(np.argmin(fun))  # the fit's best start (the first minimum)
            if np.isfinite(fun[b]) and results[ti]["status"][b] == STATUS_MAX_ITER:
                todo.append((ti, b))
        if not todo:
            return
        with _progress.reporter(progress, "fit: best starts at the iteration limit, continued") as report:
            again = _core.fit_many([problems[ti] for ti, _ in todo],
                                   [np.array(results[ti]["x"][b])[None, :] for ti, b in todo],
                                   [lo] * len(todo), [hi] * len(todo), [seeds[ti] for ti, _ in todo],
                                   threads=threads, tie=None if tie_labels is None else [tie_labels] * len(todo),
                                   progress=report, **_solver_options(dict(options, hops=0)))
        for (ti, b), r2 in zip(todo, again):
            r = results[ti]
            f0, s0 = float(r["fun"][b]), float(r["stationarity"][b])
            if not _continue_start(r, b, r2, 0):
                going.discard(ti)
            elif f0 - float(r["fun"][b]) <= _CONTINUE_MIN_GAIN * f0 and not float(r["stationarity"][b]) <= 0.5 * s0:
                going.discard(ti)


#: A continued round (``iterate``) that lowers the objective by no more than this (relative)
#: and does not halve the stationarity is the last: the start crawls (1e-6 let the joint
#: k = 256 fit of bench/README.md, section 6, run all its rounds for nothing).
_CONTINUE_MIN_GAIN = 1e-5


def _revive_collapsed(laws: Sequence[Law], problems: Sequence[tuple], results: list, lo: np.ndarray,
                      hi: np.ndarray, seeds: Sequence[int], options: Mapping[str, Any],
                      threads: Optional[int], tie_labels: Optional[np.ndarray] = None,
                      rounds: Optional[int] = None, progress: Any = None) -> None:
    """Starts that converged in log coordinates with coefficients collapsed to ~0 that should
    grow (:func:`_collapse_gain` above gtol) go on from their end point with those coefficients
    raised to the bottom of their start range, all such starts in one parallel call, for up to
    ``rounds`` rounds (default _REVIVE_ROUNDS); a revived solve replaces the start's result only
    when it ends lower. Iterations and evaluations add up. Converged starts still collapsed
    after the last round get STATUS_COLLAPSED (``rounds=0``: marking only). Coefficients tied
    with others are never raised alone, but count for the status. In place on ``results``;
    depends only on the results, so never on the thread count."""
    rounds = _REVIVE_ROUNDS if rounds is None else rounds
    gtol = options.get("gtol", 1e-6)
    shared = np.zeros(laws[0].n_params, dtype=bool)  # tied with others: not raised alone
    if tie_labels is not None:
        labels, counts = np.unique(tie_labels, return_counts=True)
        shared = np.isin(tie_labels, labels[counts > 1])
    for round_ in range(rounds + 1):
        todo: dict = {}
        collapsed = []
        for ti, r in enumerate(results):
            L = laws[ti]
            for s in np.flatnonzero(np.asarray(r["status"]) == STATUS_CONVERGED):
                gain = _collapse_gain(L, r["x"][s], problems[ti], options, hi)
                if np.max(gain, initial=0.0) <= gtol:
                    continue
                collapsed.append((ti, s))
                raise_ = (gain > gtol) & ~shared
                if raise_.any():
                    start = r["x"][s].copy()
                    start[raise_] = L.init_lower[raise_]
                    todo.setdefault(ti, []).append((s, start))
        if round_ == rounds or not todo:
            for ti, s in collapsed:
                results[ti]["status"][s] = STATUS_COLLAPSED
            return
        order = sorted(todo)
        with _progress.reporter(progress, "fit: starts with coefficients raised from ~0") as report:
            again = _core.fit_many([problems[ti] for ti in order],
                                   [np.array([st for _, st in todo[ti]]) for ti in order],
                                   [lo for _ in order], [hi for _ in order], [seeds[ti] for ti in order],
                                   threads=threads, tie=None if tie_labels is None else [tie_labels] * len(order),
                                   progress=report, **_solver_options(options))
        for ti, r2 in zip(order, again):
            for j, (s, _) in enumerate(todo[ti]):
                _continue_start(results[ti], s, r2, j)


#: Rounds of re-seating degenerate blocks (:func:`_reseat_degenerate`), and how many
#: degenerate starts per target are re-seated per round (the lowest ones): one re-seated
#: start that reaches the basin suffices, and re-seating every start doubles the cost.
_RESEAT_ROUNDS, _RESEAT_MIN_STARTS, _RESEAT_FRACTION = 2, 4, 0.1
#: A mixture exponent this close to a bound, or this close to 0, marks a degenerate block.
_RESEAT_BOUND_GAP, _RESEAT_ZERO = 0.1, 0.05
#: Scale coefficients below this are collapsed for re-seating.
_RESEAT_COLLAPSED = 1e-6

#: (coefficients, exponent) of the mixture-dependent blocks S_A(h)^gA etc. (joint, full).
_MIXTURE_BLOCKS = (("CA", "gA"), ("CB", "gB"), ("Calpha", "galpha"), ("Cbeta", "gbeta"))


def _reseated(L: Law, x: np.ndarray, H: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> Optional[np.ndarray]:
    """``x`` with its degenerate blocks put back where the law is well-conditioned, or None.

    A start can end at a genuine minimum on an edge of the parameter box: a block
    ``(sum_i CA_i h_i)^gA`` with ``gA`` at a bound or ~0 (or all ``CA_i`` ~0) no longer varies
    with the mixture, and a domain with ``C_i`` ~0 or ``gamma_i`` at its bound drops out; no
    first-order move leaves such a point. The block goes back to the nesting embedding of the
    current point (``gA = 1``, every ``CA_i`` the median over the mixtures of the block's
    present value), the domain to ``gamma_i = 0.5`` and the geometric median of the other
    ``C_i``. Clipped to the bounds."""
    names = L.param_names
    pos = {n: i for i, n in enumerate(names)}
    k = L.k
    out = np.array(x, dtype=float)
    changed = False
    for c, g in _MIXTURE_BLOCKS:
        if g not in pos or f"{c}_1" not in pos:
            continue
        ci = np.array([pos[f"{c}_{i}"] for i in range(1, k + 1)])
        gi = pos[g]
        gv = float(x[gi])
        at_bound = (np.isfinite(hi[gi]) and gv >= hi[gi] - _RESEAT_BOUND_GAP) or \
                   (np.isfinite(lo[gi]) and gv <= lo[gi] + _RESEAT_BOUND_GAP)
        if not (at_bound or abs(gv) < _RESEAT_ZERO or np.all(x[ci] < _RESEAT_COLLAPSED)):
            continue
        with np.errstate(all="ignore"):
            v = float(np.median((_distinct_rows(H)[0] @ x[ci]) ** gv))
        out[ci] = min(max(v, 1e-3), 1e3) if np.isfinite(v) else 1.0
        out[gi] = 1.0
        changed = True
    if "C_1" in pos and "gamma_1" in pos:
        C = x[[pos[f"C_{i}"] for i in range(1, k + 1)]]
        gam_i = np.array([pos[f"gamma_{i}"] for i in range(1, k + 1)])
        bad = (C < _RESEAT_COLLAPSED) | (x[gam_i] >= hi[gam_i] - _RESEAT_BOUND_GAP)
        if bad.any() and (~bad).any():
            cm = float(np.exp(np.median(np.log(C[~bad]))))
            for i in np.flatnonzero(bad):
                out[pos[f"C_{i + 1}"]] = cm
                out[pos[f"gamma_{i + 1}"]] = 0.5
            changed = True
    if not changed:
        return None
    return np.clip(out, lo, hi)


def _reseat_degenerate(laws: Sequence[Law], problems: Sequence[tuple], results: list, records: Sequence[tuple],
                       lows: Sequence[np.ndarray], highs: Sequence[np.ndarray], seeds: Sequence[int],
                       options: Mapping[str, Any], threads: Optional[int], rounds: int = _RESEAT_ROUNDS,
                       progress: Any = None) -> None:
    """For targets whose best objective was reached by one start only, the lowest starts (up
    to max(4, 10%)) that ended with degenerate blocks (:func:`_reseated`) are solved again from the re-seated point, all of them in one
    parallel call per round, for up to ``rounds``
    rounds; a re-seated solve replaces the start's result only when it ends lower, so it
    never makes a start worse. Iterations add up. Bounds per problem. In place; independent
    of the thread count."""
    for _ in range(rounds):
        todo: dict = {}
        for ti, r in enumerate(results):
            H = records[ti][2]
            fin = np.asarray(r["fun"])[np.isfinite(r["fun"])]
            if fin.size and np.sum(fin <= fin.min() * (1 + 1e-6) + 1e-300) >= 2:
                continue  # two starts agree on the best minimum: nothing to re-seat for
            n_max = max(_RESEAT_MIN_STARTS, math.ceil(_RESEAT_FRACTION * len(r["fun"])))
            for s in np.argsort(np.where(np.isfinite(r["fun"]), r["fun"], np.inf), kind="stable"):
                if len(todo.get(ti, ())) >= n_max:
                    break
                if not np.isfinite(r["fun"][s]) or r["status"][s] == STATUS_SCREENED:
                    continue
                start = _reseated(laws[ti], r["x"][s], H, lows[ti], highs[ti])
                if start is not None:
                    todo.setdefault(ti, []).append((int(s), start))
        if not todo:
            return
        order = sorted(todo)
        with _progress.reporter(progress, "fit: re-seated starts") as report:
            again = _core.fit_many([problems[ti] for ti in order],
                                   [np.array([st for _, st in todo[ti]]) for ti in order],
                                   [lows[ti] for ti in order], [highs[ti] for ti in order],
                                   [seeds[ti] for ti in order], threads=threads, progress=report,
                                   **_solver_options(options))
        improved = False
        for ti, r2 in zip(order, again):
            for j, (s, _) in enumerate(todo[ti]):
                improved |= _continue_start(results[ti], s, r2, j)
        if not improved:
            return


def _assemble_fit(L: Law, target: str, r: Mapping[str, Any], records: tuple, options: dict, domains: tuple,
                  lo: Optional[np.ndarray] = None, hi: Optional[np.ndarray] = None,
                  threads: Optional[int] = None, unique_tokens: Optional[np.ndarray] = None) -> Fit:
    """The :class:`Fit` of one target from its ``fit_many`` result (best start: the first
    minimum in start order, so independent of the thread count). Warns
    (:class:`ConvergenceWarning`) when the best start is not stationary or when few starts
    reached the best objective."""
    fun = np.where(np.isfinite(r["fun"]), r["fun"], np.inf)
    best = int(np.argmin(fun))
    x = r["x"][best]
    N, D, H, y = records
    if not np.isfinite(fun[best]):
        train = {"mre": math.nan, "r2": math.nan, "mae": math.nan, "rmse": math.nan, "n": int(y.size)}
    else:
        train = compute_metrics(y, L.predict(x, N, D, H if L.k else None, unique_tokens=unique_tokens,
                                             threads=threads))
    status = int(r["status"][best])
    stationarity = r.get("stationarity", np.full(fun.shape, math.nan))
    f = Fit(law=L, target=target, x=_frozen(x), fun=float(r["fun"][best]), success=status == STATUS_CONVERGED,
            status=status, message=_core.status_message(status), nit=int(r["nit"][best]),
            nfev=int(r["nfev"][best]), njev=int(r["njev"][best]), starts_fun=_frozen(r["fun"]),
            starts_status=_frozen(r["status"]), n_records=int(y.size), train=train, options=dict(options),
            domains=domains, seconds=float(np.sum(r["seconds"])) if "seconds" in r else math.nan,
            stationarity=float(stationarity[best]), starts_stationarity=_frozen(stationarity),
            at_limit=_at_limit(L, x, L.lower if lo is None else lo, L.upper if hi is None else hi)
            if np.all(np.isfinite(x)) else {}, ranges=_data_ranges(N, D, H if L.k else None))
    _convergence_warnings(f)
    return f


def _far_message(f: Fit, far: dict) -> str:
    """What :meth:`Fit.far_outside` found, for a warning: ``"D up to 1e7x outside the fitted
    2B..46B; check the units ..."``."""
    parts = ", ".join(f"{n} up to {v:.3g}x outside the fitted {_fmt_size(f.ranges[n][0])}..{_fmt_size(f.ranges[n][1])}"
                      for n, v in far.items())
    return f"{parts}; check the units (laws take raw parameter and token counts)"


def _data_ranges(N: Optional[np.ndarray], D: Optional[np.ndarray], H: Optional[np.ndarray]) -> dict:
    """``Fit.ranges`` of the fitting records (None: the runs have no such column)."""
    def span(a: np.ndarray) -> tuple[float, float]:
        return (float(np.min(a)), float(np.max(a))) if a.size else (math.nan, math.nan)
    out = {name: span(np.asarray(v)) for name, v in (("N", N), ("D", D)) if v is not None}
    if H is not None and H.ndim == 2:
        out["h"] = tuple(span(H[:, j]) for j in range(H.shape[1]))
    return out


def _at_limit(L: Law, x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> dict:
    """Parameters at a finite bound, and scale coefficients at ~0 (far below the range
    random starts are drawn from), by name."""
    out = {}
    for i, name in enumerate(L.param_names):
        v = float(x[i])
        if math.isfinite(lo[i]) and abs(v - lo[i]) <= _AT_LIMIT_RTOL * max(1.0, abs(float(lo[i]))):
            out[name] = "lower"
        elif math.isfinite(hi[i]) and abs(v - hi[i]) <= _AT_LIMIT_RTOL * max(1.0, abs(float(hi[i]))):
            out[name] = "upper"
        elif L.log_scale[i] and v < _DEGENERATE_FRACTION * float(L.init_lower[i]):
            out[name] = "~0"
    return out


def _convergence_warnings(f: Fit) -> None:
    finished = f.starts_status[f.starts_status != STATUS_SCREENED]
    if not math.isfinite(f.fun):
        return  # every start failed: the status says why
    if not f.success:
        warnings.warn(f"fit: the best start of target {f.target!r} ({f.law!r}) is not a stationary point: "
                      f"{f.message} (stationarity {f.stationarity:.2g}); its parameters are not a minimum. Raise "
                      "max_iter or iterate, or try curvature='irls' or more starts", ConvergenceWarning,
                      stacklevel=_user_stacklevel())
        return
    n_best = f.spread["n_at_best"]
    if finished.size >= _FEW_AT_BEST_MIN_STARTS and n_best < max(2, _FEW_AT_BEST_FRACTION * finished.size):
        warnings.warn(f"fit: only {n_best} of {finished.size} starts of target {f.target!r} ({f.law!r}) reached "
                      f"the best objective {f.fun:.6g}, so a lower minimum may exist that no start found; raise "
                      "n_starts (or use hops) until the best objective stops falling", ConvergenceWarning,
                      stacklevel=_user_stacklevel())


def _target_seed(seed: int, target: str) -> int:
    # Depends on the target's name, not its position: adding targets to a call never
    # changes the starts of the others.
    return (int(seed) * 1_000_003 + zlib.crc32(target.encode("utf-8"))) % (2**63)
