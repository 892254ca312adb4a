"""Optimal mixtures: the domain weights to train with.

``h*(N, D, w) = argmin_{h in C} sum_t w_t L_t(N, D, h)`` for fitted laws ``L_t``, over
the feasible mixtures ``C = {h : sum h = 1, lo <= h <= hi}``, where the upper bounds
include data availability (domain i has ``U_i`` unique tokens that may be repeated at
most ``e_i`` times, so ``h_i D <= e_i U_i``).

Solvers (``method``): ``"mirror"`` — exponentiated gradient, the paper's method and the
default — and ``"projected"`` — Euclidean projected gradient (exact projection onto
``C``); both with Barzilai-Borwein trial steps and an Armijo line search. Prefer
``"mirror"`` when an optimal weight may be tiny: near ``h_i = 0`` the laws' curvature
grows like ``h_i^(gamma_i - 2)``, which makes Euclidean steps crawl (and they cannot
represent a weight below ~1e-16 next to weights of order 1), while multiplicative steps
are unaffected. ``"projected"`` keeps its iterates 1e-12 inside the lower bounds. Every result carries a Frank-Wolfe certificate
``gap = max_{s in C} grad F(h) . (h - s)``: 0 exactly at a stationary point, and an upper
bound on ``F(h) - min F`` when ``F`` is convex (e.g. the additive law with every
``gamma_i`` in (0, 1]).

Regularised toward a prior mixture ``p`` (``prior=``, ``kl=``): the objective gains
``lambda KL(h || p)`` (Olmix's proposer), which keeps the optimum near mixtures one
trusts; mirror descent handles the term exactly (its gradient
``lambda (log(h_i / p_i) + 1)`` is the KL geometry's own), and the result reports the
unregularised optimum next to it.

Batched: pass arrays for ``N`` and ``D`` (and optionally per-problem weights) and all
problems are solved in one parallel C++ call. Threads as everywhere in mixlaw:
``threads=None`` uses the OpenMP default; results do not depend on the count.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Union

import numpy as np

from . import _core
from ._domains import labels_as_mapping
from ._warnings import user_stacklevel
from .data import _budget_text
from .fit import ExtrapolationWarning, Fit, Fits, _far_message, _float_option, _floats, _int_option
from .laws import Law

__all__ = ["MixtureResult", "MixtureGrid", "optimize_mixture", "optimal_allocation"]


@dataclass(frozen=True)
class MixtureResult:
    """The optimal mixture at one budget.

    Attributes
    ----------
    h : dict
        Weight per domain (sums to 1, satisfies every constraint).
    x : ndarray (k,)
        The same weights as an array, in domain order.
    losses : dict
        Predicted loss per target at ``h``.
    fun : float
        Objective ``sum_t w_t L_t`` at ``h``: the weighted mean of the predicted losses
        (the weights normalised to sum to 1).
    gap : float
        Frank-Wolfe certificate (>= 0; 0 at a stationary point).
    nit, nfev : int
    status : int
        1: gap below ``gap_tol``; 4: no further decrease possible in floating point;
        0: ``max_iter`` reached.
    success : bool
    message : str
    N, D : float
    weights : dict
        Importance weight per target.
    outside_data : dict
        Domains whose optimal weight lies outside the range of weights seen in the fitting
        runs (:attr:`mixlaw.Fit.ranges`), as ``{domain: (weight, seen_min, seen_max)}``:
        there the law extrapolates in ``h``. ``within_data=True`` keeps ``h`` inside.
    law : str
        Name of the law(s) of the fits (comma-separated when they differ).
    kl, prior : float, dict or None
        The regularisation: strength ``lambda`` and prior mixture (``optimize_mixture``'s
        ``kl`` and ``prior``; 0 and None without).
    kl_divergence : float
        ``KL(h || prior)`` in nats (NaN without a prior); ``fun`` includes
        ``kl * kl_divergence``.
    distance_prior, distance_runs : float
        Total-variation distance ``0.5 sum_i |h_i - q_i|`` (0 to 1) from the prior, and from
        the nearest mixture of the fitting runs when the prior was given as those runs
        (NaN otherwise).
    unregularised : MixtureResult or None
        The optimum of the same problem without the KL term (when ``kl > 0``): its ``h``,
        ``losses`` and ``fun`` show what the regularisation costs in predicted loss.
    binding : dict
        The constraints that hold ``h`` where it is, ``{domain: (which, multiplier)}``:
        ``which`` is ``"lower bound"``, ``"upper bound"``, ``"available tokens"`` or
        ``"fitting range"`` (``within_data``), and ``multiplier`` the Lagrange multiplier:
        how much ``fun`` falls per unit the constraint is relaxed (>= 0 at an optimum; NaN
        when no domain is free to tell the simplex's own multiplier).
    """

    h: dict
    x: np.ndarray
    losses: dict
    fun: float
    gap: float
    nit: int
    nfev: int
    status: int
    success: bool
    message: str
    N: float
    D: float
    weights: dict
    outside_data: dict = field(default_factory=dict)
    law: str = ""  #: the fitted law(s) the mixture was optimised for, e.g. "joint"
    kl: float = 0.0
    prior: Optional[dict] = None
    kl_divergence: float = math.nan
    distance_prior: float = math.nan
    distance_runs: float = math.nan
    unregularised: Optional["MixtureResult"] = field(default=None, repr=False)
    _row: Optional[tuple] = field(default=None, repr=False, compare=False)  # (MixtureGrid, index)

    @property
    def binding(self) -> dict:
        """``{domain: (constraint, multiplier)}`` (see the class docstring)."""
        if self._row is None:
            return {}
        grid, i = self._row
        kind, mult = grid.binding, grid.multipliers
        if kind is None:
            return {}
        return {d: (str(kind[i, j]), float(mult[i, j])) for j, d in enumerate(grid.domains) if kind[i, j]}

    def _repr_html_(self) -> str:
        from . import _html

        head = _html.summary(f"Optimal mixture at {_budget_text(self.N, self.D)}",
                             [("objective", self.fun), ("gap", self.gap), ("success", self.success)],
                             note="" if self.success else self.message)
        notes = {d: f"at its {w} (multiplier {m:.3g})" for d, (w, m) in self.binding.items()}
        for d in self.outside_data:
            notes[d] = "; ".join(filter(None, [notes.get(d, ""), "outside the fitting runs' weights"]))
        u = self.unregularised
        if u is None:
            rows = [(d, 100 * v, notes.get(d, "")) for d, v in self.h.items()]
            losses = [(t, v) for t, v in self.losses.items()]
            return (head + _html.table(["domain", "weight %", "note"], rows)
                    + _html.table(["target", "predicted loss"], losses))
        prior = self.prior or {}
        rows = [(d, 100 * v, 100 * prior.get(d, math.nan), 100 * u.h[d], notes.get(d, "")) for d, v in self.h.items()]
        losses = [(t, v, u.losses[t]) for t, v in self.losses.items()]
        return (head + f"<p>regularised toward the prior: kl = {self.kl:.3g}, KL(h || prior) = "
                f"{self.kl_divergence:.4g} nats, distance from the prior {self.distance_prior:.3f}</p>"
                + _html.table(["domain", "weight %", "prior %", "unregularised %", "note"], rows)
                + _html.table(["target", "predicted loss", "unregularised"], losses))

    def __repr__(self) -> str:
        hs = ", ".join(f"{d}={v:.4f}" for d, v in self.h.items())
        out = f", outside_data={sorted(self.outside_data)}" if self.outside_data else ""
        return (f"MixtureResult({_budget_text(self.N, self.D, sep='=')}, fun={self.fun:.6g}, gap={self.gap:.2e}, "
                f"h=[{hs}]{out})")


@dataclass(frozen=True)
class MixtureGrid:
    """Optimal mixtures for many budgets (arrays over problems, domains last)."""

    N: np.ndarray
    D: np.ndarray
    h: np.ndarray        # (P, k)
    fun: np.ndarray      # (P,)
    gap: np.ndarray      # (P,)
    losses: np.ndarray   # (P, T)
    nit: np.ndarray
    status: np.ndarray
    domains: tuple
    targets: tuple
    nfev: Optional[np.ndarray] = None
    #: (P, k) bool: the weight lies outside the range seen in the fitting runs.
    outside_data: Optional[np.ndarray] = None
    #: (k, 2): the range of weights seen in the fitting runs, per domain (None if unknown).
    data_range: Optional[np.ndarray] = None
    #: The regularisation (see :attr:`MixtureResult.kl`): (P,) strengths, (k,) prior or None,
    #: (P,) KL(h || prior), (P,) distances from the prior and the fitting runs, and the
    #: unregularised optima (a MixtureGrid; None when no problem has kl > 0).
    kl: Optional[np.ndarray] = None
    prior: Optional[np.ndarray] = None
    kl_divergence: Optional[np.ndarray] = None
    distance_prior: Optional[np.ndarray] = None
    distance_runs: Optional[np.ndarray] = None
    unregularised: Optional["MixtureGrid"] = field(default=None, repr=False)
    #: The arguments of _binding, evaluated on first use of binding / multipliers (the
    #: gradients it needs cost a few tenths of a millisecond per call: not on every solve).
    _constraints: Optional[tuple] = field(default=None, repr=False, compare=False)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def binding(self) -> Optional[np.ndarray]:
        """(P, k) str: the constraint holding each weight ('' when free; see
        :attr:`MixtureResult.binding`); None when unknown."""
        return self._binding_arrays()[0]

    @property
    def multipliers(self) -> Optional[np.ndarray]:
        """(P, k): the Lagrange multiplier of that constraint (0 when free)."""
        return self._binding_arrays()[1]

    def _binding_arrays(self) -> tuple:
        if self._constraints is None:
            return None, None
        if "binding" not in self._cache:
            self._cache["binding"] = _binding(*self._constraints)
        return self._cache["binding"]

    def __len__(self) -> int:
        return int(self.N.shape[0])

    def _repr_html_(self) -> str:
        from . import _html

        head = _html.summary(f"Optimal mixtures at {len(self)} budgets",
                             [("certified", f"{int(np.sum(self.status == 1))} of {len(self)}")])
        rows = [(self.N[i], self.D[i], *(100 * self.h[i]), *self.losses[i], self.gap[i])
                for i in range(min(len(self), 20))]
        more = f"<p>... {len(self) - 20} more (to_pandas() has them all)</p>" if len(self) > 20 else ""
        return head + _html.table(["N", "D", *(f"{d} %" for d in self.domains),
                                   *(f"loss[{t}]" for t in self.targets), "gap"], rows) + more

    def to_pandas(self) -> Any:
        """A tidy DataFrame, one row per (budget, domain): ``budget`` (the problem's index),
        ``N``, ``D``, ``domain``, ``weight``, ``outside_data`` (None when unknown), the
        objective ``fun``, the certificate ``gap``, ``status`` and one ``loss[<target>]``
        column per target (the predicted losses at the budget's mixture, repeated on its
        rows). ``df.pivot(index="budget", columns="domain", values="weight")`` gives the
        budgets-by-domains table of weights."""
        import pandas as pd

        P, k = self.h.shape
        rep = lambda a: np.repeat(np.asarray(a), k)  # noqa: E731 - per budget, on each domain row
        cols = {"budget": rep(np.arange(P)), "N": rep(self.N), "D": rep(self.D),
                "domain": np.tile(np.asarray(self.domains, dtype=object), P), "weight": self.h.reshape(-1),
                "outside_data": (self.outside_data.reshape(-1) if self.outside_data is not None
                                 else np.full(P * k, None, dtype=object)),
                "fun": rep(self.fun), "gap": rep(self.gap), "status": rep(self.status)}
        for t, name in enumerate(self.targets):
            cols[f"loss[{name}]"] = rep(self.losses[:, t])
        if self.prior is not None:
            cols["prior"] = np.tile(self.prior, P)
            cols["kl"], cols["kl_divergence"] = rep(self.kl), rep(self.kl_divergence)
        if self.unregularised is not None:
            cols["unregularised_weight"] = self.unregularised.h.reshape(-1)
            for t, name in enumerate(self.targets):
                cols[f"unregularised_loss[{name}]"] = rep(self.unregularised.losses[:, t])
        return pd.DataFrame(cols)

    def __getitem__(self, i: int) -> MixtureResult:
        st = int(self.status[i])
        outside = {}
        if self.outside_data is not None and self.data_range is not None:
            outside = {d: (float(self.h[i, j]), float(self.data_range[j, 0]), float(self.data_range[j, 1]))
                       for j, d in enumerate(self.domains) if self.outside_data[i, j]}
        reg: dict = {}
        if self.prior is not None:
            reg = dict(kl=float(self.kl[i]), prior=dict(zip(self.domains, self.prior.tolist())),
                       kl_divergence=float(self.kl_divergence[i]), distance_prior=float(self.distance_prior[i]),
                       distance_runs=float(self.distance_runs[i]))
            if self.unregularised is not None and self.kl[i] > 0:
                reg["unregularised"] = self.unregularised[i]
        return MixtureResult(h=dict(zip(self.domains, self.h[i].tolist())), x=self.h[i].copy(),
                             losses=dict(zip(self.targets, self.losses[i].tolist())), fun=float(self.fun[i]),
                             gap=float(self.gap[i]), nit=int(self.nit[i]),
                             nfev=int(self.nfev[i]) if self.nfev is not None else 0, status=st, success=st == 1,
                             message=_MESSAGES.get(st, "?"), N=float(self.N[i]), D=float(self.D[i]), weights={},
                             outside_data=outside, _row=(self, i), **reg)


_MESSAGES = {
    0: "maximum number of iterations reached",
    1: "converged: Frank-Wolfe gap below gap_tol",
    4: "stopped: no further decrease possible in floating point (see gap)",
}


def _as_fits(fits: Any) -> list[Fit]:
    if isinstance(fits, Fit):
        return [fits]
    if isinstance(fits, (Fits, Mapping)):
        out = list(fits.values())
    elif isinstance(fits, Sequence):
        out = list(fits)
    else:
        raise TypeError("fits: expected the result of mixlaw.fit, a Fit, or a list of Fit")
    if not out or not all(isinstance(f, Fit) for f in out):
        raise ValueError("fits: need at least one Fit")
    return out


def _aligned(flist: list[Fit]) -> list[Fit]:
    """The fits with their domains in the first named fit's order (fits from tables whose
    weight columns came in another order describe the same domains); fits without names
    are taken by position."""
    ref = next((f for f in flist if f.domains), None)
    if ref is None:
        return flist
    out = []
    for f in flist:
        if f.domains and set(f.domains) != set(ref.domains):
            raise ValueError(f"fits: the domains differ: target {ref.target!r} has {list(ref.domains)}, "
                             f"target {f.target!r} has {list(f.domains)}")
        out.append(f.with_domains(ref.domains))
    return out


#: A weight further than this outside the seen range is "outside the data".
_SEEN_TOL = 1e-6


def _seen_range(flist: list[Fit], k: int) -> Optional[np.ndarray]:
    """(k, 2) range of each domain's weight over the fitting runs of all fits (their union),
    or None when a fit does not carry it."""
    spans = [f.ranges.get("h") for f in flist]
    if any(s is None or len(s) != k for s in spans):
        return None
    a = np.array(spans, dtype=float)  # (T, k, 2)
    return np.column_stack([a[:, :, 0].min(axis=0), a[:, :, 1].max(axis=0)])


def _budgets(N: Any, D: Any) -> tuple[np.ndarray, np.ndarray]:
    """``N`` and ``D`` as float arrays broadcast together (errors name the arguments)."""
    try:
        return np.broadcast_arrays(_floats(N, "N"), _floats(D, "D"))
    except ValueError as exc:
        if str(exc).startswith(("N:", "D:")):
            raise
        raise ValueError("N, D: shapes do not broadcast") from None


def _per_domain(value: Any, domains: tuple, k: int, arg: str, default: float) -> np.ndarray:
    if value is None:
        return np.full(k, default)
    value = labels_as_mapping(value)  # a Series by its labels, not by position
    if isinstance(value, Mapping):
        unknown = [d for d in value if d not in domains]
        if unknown:
            raise ValueError(f"{arg}: unknown domain(s) {unknown}; domains: {list(domains)}")
        out = np.full(k, default)
        for d, v in value.items():
            x = _floats(v, arg)
            if x.ndim != 0:
                raise ValueError(f"{arg}: {d!r}: expected one number, got shape {x.shape}")
            out[domains.index(d)] = float(x)
        return out
    arr = _floats(value, arg)
    if arr.ndim == 0:
        return np.full(k, float(arr))
    if arr.shape != (k,):
        raise ValueError(f"{arg}: expected {k} values (one per domain), got shape {arr.shape}")
    return arr.copy()


def _bounds(bounds: Any, domains: tuple, k: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.zeros(k), np.ones(k)
    if bounds is None:
        return lo, hi
    if isinstance(bounds, Mapping):
        for d, pair in bounds.items():
            if d not in domains:
                raise ValueError(f"bounds: unknown domain {d!r}; domains: {list(domains)}")
            try:
                a, b = (float(v) for v in pair)
            except (TypeError, ValueError):
                raise ValueError(f"bounds: {d!r} must map to a (min, max) pair") from None
            lo[domains.index(d)], hi[domains.index(d)] = a, b
    else:
        try:
            a, b = bounds
        except (TypeError, ValueError):
            raise ValueError("bounds: expected {domain: (min, max)} or a pair (min array, max array)") from None
        lo, hi = _per_domain(a, domains, k, "bounds", 0.0), _per_domain(b, domains, k, "bounds", 1.0)
    if np.any(~np.isfinite(lo)) or np.any(np.isnan(hi)):
        raise ValueError("bounds: must be finite numbers")
    if np.any(lo < 0):
        raise ValueError("bounds: minimum weights must be >= 0")
    bad = np.flatnonzero(lo > hi)
    if bad.size:
        raise ValueError(f"bounds: domain {domains[bad[0]]!r} has min {lo[bad[0]]} > max {hi[bad[0]]}")
    big = np.flatnonzero(lo > 1)
    if big.size:
        raise ValueError(f"bounds: the minimum weight of domain {domains[big[0]]!r} is {lo[big[0]]:g} > 1; bounds "
                         f"are fractions of the mixture (0.05 for 5%)")
    over = np.flatnonzero(np.isfinite(hi) & (hi > 1 + 1e-9))
    if over.size:  # a percentage would otherwise be capped at 1 and the bound silently dropped
        raise ValueError(f"bounds: the maximum weight of domain {domains[over[0]]!r} is {hi[over[0]]:g} > 1; bounds "
                         f"are fractions of the mixture (0.2 for 20%; inf for no maximum)")
    if lo.sum() > 1 + 1e-12:
        raise ValueError(f"bounds: the minimum weights sum to {lo.sum():.6g} > 1")
    if np.minimum(hi, 1).sum() < 1 - 1e-12:
        raise ValueError(f"bounds: the maximum weights sum to {np.minimum(hi, 1).sum():.6g} < 1")
    return lo, hi


def optimize_mixture(fits: Any, *, N: Any = None, D: Any = None, weights: Any = None, bounds: Any = None,
                     available_tokens: Any = None, max_epochs: Any = None, method: str = "mirror",
                     n_starts: int = 4, seed: int = 0, gap_tol: float = 1e-10, max_iter: int = 20000,
                     line_search_memory: int = 10, within_data: bool = False, prior: Any = None,
                     kl: Any = 0.0, unique_tokens: Any = None, repetition_halflife: float = 15.4,
                     threads: Optional[int] = None) -> Union[MixtureResult, MixtureGrid]:
    """The mixture minimising the (weighted) predicted loss at a training budget.

    Parameters
    ----------
    fits : Fits, Fit or list of Fit
        Fitted mixture laws (all on the same domains).
    N, D : float or array
        Model size and training tokens (raw units). Arrays (broadcast together) give one
        problem per entry, solved in one parallel call, and a :class:`MixtureGrid`. Laws
        without a model-size (token) term do not need ``N`` (``D``): omitted, it is NaN in
        the result.
    weights : mapping target -> weight, or array (T,) or (P, T), optional
        Relative importance of each target (default: equal, i.e. the average loss); normalised
        to sum to 1 per budget, so ``fun`` is always a weighted mean of the predicted losses.
    bounds : mapping domain -> (min, max), or (min array, max array), optional
        Per-domain limits on the weights, as fractions of the mixture (``(0.05, 0.5)``:
        between 5% and 50%).
    available_tokens : mapping domain -> U_i, or array (k,), optional
        Unique tokens per domain; with ``max_epochs`` (default 1) this adds
        ``h_i <= max_epochs_i * U_i / D``.
    max_epochs : float, mapping or array, optional
        How often each domain may be repeated.
    unique_tokens : mapping domain -> U_i, or array (k,), optional
        Unique tokens per domain (domains not named: unlimited), for repetition-aware
        mixtures: every law is evaluated with the data-constrained option
        (:mod:`mixlaw.laws`, ``repetition=True``) at each budget's ``D``, so tokens repeated
        beyond ``U_i`` count less and ``h*`` moves away from scarce domains smoothly as
        ``D`` grows (a soft alternative to the hard caps ``available_tokens`` and
        ``max_epochs``, which may be combined with it). Required for fits of
        data-constrained laws. The laws see the effective mixture and token count only:
        once a domain is repeated far beyond ``repetition_halflife`` epochs its effective
        tokens saturate at ``U_i (1 + R_D)``, and an optimum that keeps its effective share
        may put surplus nominal weight on a saturated domain (tokens that count for
        nothing, a flat direction of the objective); ``max_epochs`` bounds that
        (bench/README.md, section 7).
    repetition_halflife : float
        ``R_D`` for fits without their own (fits of data-constrained laws use theirs):
        the default 15.4 is Muennighoff et al.'s fitted value.
    method : {"mirror", "projected"}
    n_starts : int
        Start 0 is the centre of the feasible set; the others are seeded Dirichlet draws.
    gap_tol : float
        Stop when the Frank-Wolfe gap (in loss units) is below this.
    max_iter : int
    line_search_memory : int
        The Armijo test compares a trial step with the largest objective of this many
        last iterates (non-monotone line search, as in spectral projected gradient);
        1 gives the monotone test. An uncertified run returns its best iterate.
    within_data : bool
        Keep every weight inside the range seen in the fitting runs (the union over the
        fits of :attr:`mixlaw.Fit.ranges`), intersected with ``bounds``. By default the
        optimum may leave it; the result then lists those domains in ``outside_data``
        and an :class:`mixlaw.ExtrapolationWarning` says so: there the law extrapolates.
    prior : mapping domain -> weight, array (k,) or Runs, optional
        A mixture to stay close to: every domain's weight > 0, summing to 1; a
        :class:`mixlaw.Runs` gives the mean of its distinct mixtures (e.g. the fitting
        runs), matched to the fits' domains by name. With ``kl > 0`` the objective gains
        ``kl * KL(h || prior)``; the result reports ``KL(h || prior)`` and the distances from
        the prior (and from the runs, when given) in any case.
    kl : float or array, optional
        Strength ``lambda`` of the KL term (>= 0; default 0: none), in loss units per nat;
        an array is broadcast with ``N`` and ``D`` like a budget (``kl=np.geomspace(1e-4, 1,
        9)`` at one budget: a sweep, returned as a MixtureGrid). Each
        problem with ``kl > 0`` is also solved without the term (in the same call), as
        ``unregularised``.
    threads : int, optional
        OpenMP threads over problems and starts (default: OpenMP's, ``OMP_NUM_THREADS``).
        Results do not depend on it.

    Returns
    -------
    MixtureResult (scalar N and D) or MixtureGrid (arrays).

    Notes
    -----
    Batches are fastest with ``method="mirror"``, no ``bounds``, token limits, ``kl`` or
    ``unique_tokens`` and laws with a fast evaluator (chinchilla, additive, joint, simple):
    four problems (or starts) then share every vector operation, one per lane. A problem
    gets the same result to the last bit whether its batch is solved four per vector or one
    at a time. Its random starts (``n_starts > 1``) depend on its position in the batch, so
    solved alone it may end at another certified point; with ``n_starts=1`` (the centre of
    the feasible set) it gets the same bits alone or in any batch.
    """
    for name, value in (("n_starts", n_starts), ("max_iter", max_iter), ("line_search_memory", line_search_memory)):
        _int_option(value, name)  # values < 1 are named by the core
    _int_option(seed, "seed", hi=2 ** 64)
    flist = _as_fits(fits)
    law0 = flist[0].law
    k = law0.k
    if k < 1:
        raise ValueError("fits: the laws have no mixture term (k = 0)")
    for f in flist:
        if f.law.k != k:
            raise ValueError("fits: all fits must have the same number of domains")
    flist = _aligned(flist)
    domains = tuple(flist[0].domains) or tuple(f"domain_{i + 1}" for i in range(k))
    targets = tuple(f.target for f in flist)
    if len(set(targets)) != len(targets):
        raise ValueError("fits: duplicate target names")
    omitted = {"N": N is None, "D": D is None}
    for arg, used, what in (("N", any(f.law.n_term for f in flist), "a model-size"),
                            ("D", any(f.law.d_term for f in flist), "a token")):
        if omitted[arg] and used:
            raise ValueError(f"{arg}: the {flist[0].law.name} law has {what} term, so the budget needs {arg}")
    if omitted["D"] and (available_tokens is not None or max_epochs is not None):
        raise ValueError("D: token caps (available_tokens, max_epochs) need the training tokens D")
    N, D = (1.0 if v is None else v for v in (N, D))  # not read by these laws
    KL = _floats(kl, "kl")
    scalar = np.ndim(N) == 0 and np.ndim(D) == 0 and KL.ndim == 0
    Nb, Db = _budgets(N, D)
    try:  # a sweep over kl at one budget is a batch too
        Nb, Db, KL = np.broadcast_arrays(Nb, Db, KL)
    except ValueError:
        raise ValueError(f"kl: shape {KL.shape} does not broadcast with the budgets' {Nb.shape}") from None
    Nb, Db = np.ascontiguousarray(Nb.ravel()), np.ascontiguousarray(Db.ravel())
    KL = np.array(KL.ravel(), dtype=float)
    if Nb.size == 0:
        raise ValueError("N: no budget given")
    for name, arr in (("N", Nb), ("D", Db)):
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ValueError(f"{name}: must be finite and > 0")
    P, T = Nb.size, len(flist)

    weights = labels_as_mapping(weights)  # a Series by its labels, not by position
    if weights is None:
        W = np.full((P, T), 1.0 / T)
    elif isinstance(weights, Mapping):
        unknown = [t for t in weights if t not in targets]
        if unknown:
            raise ValueError(f"weights: unknown target(s) {unknown}; targets: {list(targets)}")
        w = _floats([weights.get(t, 0.0) for t in targets], "weights")
        W = np.tile(w, (P, 1))
    else:
        w = _floats(weights, "weights")
        if w.shape == (T,):
            W = np.tile(w, (P, 1))
        elif w.shape == (P, T):
            W = w.copy()
        else:
            raise ValueError(f"weights: expected shape ({T},) or ({P}, {T}), got {w.shape}")
    if not np.all(np.isfinite(W)) or np.any(W < 0):
        raise ValueError("weights: must be finite and >= 0")
    if np.any(W.sum(axis=1) <= 0):
        raise ValueError("weights: must not all be zero")
    if weights is not None:  # relative importances: fun is a weighted mean
        total = W.sum(axis=1)
        off = np.abs(total - 1.0) > 1e-12  # rows that already sum to 1 keep their bits
        W[off] /= total[off, None]

    if not isinstance(within_data, (bool, np.bool_)):
        raise ValueError(f"within_data: expected True or False, got {within_data!r}")
    seen = _seen_range(flist, k)
    far = [(f, f.far_outside(None if omitted["N"] else Nb, None if omitted["D"] else Db)) for f in flist]
    far = [(f, v) for f, v in far if v]
    if far:
        f, v = far[0]
        warnings.warn(f"optimize_mixture: target {f.target!r}" + (f" (and {len(far) - 1} more)" if len(far) > 1 else "")
                      + f": predicting at {_far_message(f, v)}", ExtrapolationWarning, stacklevel=user_stacklevel())
    lo, hi = _bounds(bounds, domains, k)
    user_lo, user_hi = lo, hi
    if within_data:
        if seen is None:
            raise ValueError("within_data: needs the weight range of the fitting runs, which these fits do not "
                             "carry (fits built by hand or loaded from an old file); refit them")
        lo, hi = np.maximum(lo, seen[:, 0]), np.minimum(hi, seen[:, 1])
        bad = np.flatnonzero(lo > hi)
        if bad.size or lo.sum() > 1 + 1e-12 or hi.sum() < 1 - 1e-12:
            raise ValueError("within_data, bounds: no mixture satisfies both the bounds and the range of weights "
                             "seen in the fitting runs" + (f" (domain {domains[bad[0]]!r})" if bad.size else ""))
    LO, HI = np.tile(lo, (P, 1)), np.tile(hi, (P, 1))
    cap = None
    if available_tokens is not None or max_epochs is not None:
        if available_tokens is None:
            raise ValueError("available_tokens: needed when max_epochs is given")
        U = _per_domain(available_tokens, domains, k, "available_tokens", math.inf)
        if np.any(np.isnan(U)) or np.any(U < 0):
            raise ValueError("available_tokens: must be >= 0")
        e = _per_domain(max_epochs, domains, k, "max_epochs", 1.0)
        if np.any(~np.isfinite(e)) or np.any(e <= 0):
            raise ValueError("max_epochs: must be finite and > 0")
        cap = (e * U)[None, :] / Db[:, None]
        HI = np.minimum(HI, cap)
        short = np.minimum(HI, 1).sum(axis=1) < 1 - 1e-12
        if np.any(short):
            i = int(np.flatnonzero(short)[0])
            raise ValueError(f"available_tokens, max_epochs: at D={Db[i]:.4g} the domains can supply at most "
                             f"{np.minimum(HI[i], 1).sum():.4g} of the tokens (with the maximum weights): "
                             "no mixture is feasible")
        if np.any(LO > HI):
            i, j = (int(v[0]) for v in np.nonzero(LO > HI))
            raise ValueError(f"bounds, available_tokens: domain {domains[j]!r} needs at least {LO[i, j]:.4g} "
                             f"of D={Db[i]:.4g} tokens but can supply only {HI[i, j]:.4g}")

    prior_h, run_mixtures = _regulariser(KL, prior, domains, k)
    needs_u = [f.target for f in flist if f.law.repetition]
    if unique_tokens is None and needs_u:
        raise ValueError(f"unique_tokens: the fits of {needs_u} are data-constrained (repetition=True); give the "
                         "unique tokens of each domain")
    if omitted["D"] and unique_tokens is not None:
        raise ValueError("D: unique_tokens needs the training tokens D")
    UT = None
    if unique_tokens is not None:
        UT = _per_domain(unique_tokens, domains, k, "unique_tokens", math.inf)
        if np.any(np.isnan(UT)) or np.any(UT <= 0):
            raise ValueError("unique_tokens: must be > 0 (inf for a domain without limit)")
    halflife = _float_option(repetition_halflife, "repetition_halflife")
    if not (math.isfinite(halflife) and halflife > 0):
        raise ValueError("repetition_halflife: must be finite and > 0")
    # The regularised problems and, for those with kl > 0, the same problems without the
    # term: one call.
    again = np.flatnonzero(KL > 0) if prior_h is not None else np.zeros(0, dtype=np.intp)
    rows = np.concatenate([np.arange(P), again])
    kl_rows = np.concatenate([KL, np.zeros(again.size)])
    core_laws = [(f.law._core, np.ascontiguousarray(f.x)) for f in flist]
    both = _core.optimize_mixtures(core_laws, Nb[rows], Db[rows], np.ascontiguousarray(W[rows]),
                                   np.ascontiguousarray(LO[rows]), np.ascontiguousarray(HI[rows]), method=method,
                                   max_iter=int(max_iter), gap_tol=float(gap_tol), n_starts=int(n_starts),
                                   seed=int(seed), threads=threads, line_search_memory=int(line_search_memory),
                                   kl=None if prior_h is None else kl_rows,
                                   prior=None if prior_h is None else np.tile(prior_h, (rows.size, 1)),
                                   unique_tokens=None if UT is None else np.tile(UT, (rows.size, 1)),
                                   repetition_halflife=halflife)
    r = {key: v[:P] for key, v in both.items()}

    def outside_of(h: np.ndarray) -> Optional[np.ndarray]:
        return None if seen is None else (h < seen[:, 0] - _SEEN_TOL) | (h > seen[:, 1] + _SEEN_TOL)

    outside = outside_of(r["h"])
    if outside is not None and outside.any():
        cols = np.flatnonzero(outside.any(axis=0))
        where = "" if scalar else f" in {int(outside.any(axis=1).sum())} of {P} problems"
        detail = ", ".join(f"{domains[j]} {r['h'][:, j][outside[:, j]][0]:.3g} (seen {seen[j, 0]:.3g}.."
                           f"{seen[j, 1]:.3g})" for j in cols[:5])
        warnings.warn(f"optimize_mixture: the optimal mixture leaves the range of weights seen in the fitting "
                      f"runs{where}: {detail}{', ...' if cols.size > 5 else ''}; there the laws extrapolate. "
                      "within_data=True keeps the weights inside that range", ExtrapolationWarning,
                      stacklevel=user_stacklevel())
    lowers = [("lower bound", user_lo)] + ([("fitting range", seen[:, 0])] if within_data else [])
    uppers = [("upper bound", np.minimum(user_hi, 1.0))] + ([("available tokens", cap)] if cap is not None else []) \
        + ([("fitting range", seen[:, 1])] if within_data else [])
    shown = [np.full(P, np.nan) if omitted[arg] else v for arg, v in (("N", Nb), ("D", Db))]

    def make_grid(res: dict, out: Optional[np.ndarray], kl_of: Optional[np.ndarray],
                  unregularised: Optional[MixtureGrid]) -> MixtureGrid:
        reg: dict = {}
        if prior_h is not None:
            reg = dict(kl=kl_of, prior=prior_h, kl_divergence=_kl_divergence(res["h"], prior_h),
                       distance_prior=0.5 * np.abs(res["h"] - prior_h).sum(axis=1),
                       distance_runs=_nearest_distance(res["h"], run_mixtures), unregularised=unregularised)
        return MixtureGrid(N=shown[0], D=shown[1], h=res["h"], fun=res["fun"], gap=res["gap"],
                           losses=res["per_target"], nit=res["nit"], status=res["status"], domains=domains,
                           targets=targets, nfev=res["nfev"], outside_data=out, data_range=seen,
                           _constraints=(flist, Nb, Db, W, res["h"], LO, HI, lowers, uppers, threads,
                                         kl_of, prior_h, UT, halflife), **reg)

    unreg = None
    if again.size:
        ru = {key: v.copy() for key, v in r.items()}
        for key, v in both.items():
            ru[key][again] = v[P:]
        unreg = make_grid(ru, outside_of(ru["h"]), np.zeros(P), None)
    grid = make_grid(r, outside, KL if prior_h is not None else None, unreg)
    law_names = ", ".join(dict.fromkeys(f.law.name for f in flist))
    return replace(grid[0], weights=dict(zip(targets, W[0].tolist())), law=law_names) if scalar else grid


def _regulariser(KL: np.ndarray, prior: Any, domains: tuple, k: int) -> tuple:
    """``(prior (k,) or None, the runs' distinct mixtures (m, k) or None)`` from
    optimize_mixture's ``prior``, checked with the strengths ``KL`` (one per problem);
    errors name the argument."""
    if not np.all(np.isfinite(KL)) or np.any(KL < 0):
        raise ValueError("kl: must be finite and >= 0")
    if prior is None:
        if np.any(KL > 0):
            raise ValueError("prior: needed when kl > 0 (the mixture KL(h || prior) pulls toward)")
        return None, None
    mixtures = None
    if hasattr(prior, "mixtures") and hasattr(prior, "domains"):  # a Runs
        names = tuple(prior.domains)
        if set(names) != set(domains):
            raise ValueError(f"prior: the runs' domains {list(names)} differ from the fits' {list(domains)}")
        mixtures = np.asarray(prior.mixtures, dtype=float)[:, [names.index(d) for d in domains]]
        p = mixtures.mean(axis=0)
    elif isinstance(labels_as_mapping(prior), Mapping):
        prior = labels_as_mapping(prior)
        unknown = [d for d in prior if d not in domains]
        if unknown:
            raise ValueError(f"prior: unknown domain(s) {unknown}; domains: {list(domains)}")
        missing = [d for d in domains if d not in prior]
        if missing:
            raise ValueError(f"prior: no weight for domain(s) {missing} (every domain needs a weight > 0)")
        p = _per_domain(prior, domains, k, "prior", math.nan)
    else:
        p = _floats(prior, "prior")
        if p.shape != (k,):
            raise ValueError(f"prior: expected {k} weights (one per domain), got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("prior: must be finite")
    bad = np.flatnonzero(p <= 0)
    if bad.size:
        raise ValueError(f"prior: domain {domains[bad[0]]!r} has weight {p[bad[0]]:g}; every weight must be > 0 "
                         "(KL(h || prior) is infinite where the prior is 0; keep a domain out with bounds instead)")
    if abs(p.sum() - 1.0) > 1e-6:
        raise ValueError(f"prior: the weights sum to {p.sum():.6g}, not 1 (fractions of the mixture: 0.05 for 5%)")
    return np.ascontiguousarray(p / p.sum()), mixtures


def _kl_divergence(h: np.ndarray, p: np.ndarray) -> np.ndarray:
    """KL(h || p) per row of h (P, k), in nats; a weight h_i = 0 adds 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(h > 0, h * (np.log(h) - np.log(p)), 0.0).sum(axis=1)


def _nearest_distance(h: np.ndarray, mixtures: Optional[np.ndarray]) -> np.ndarray:
    """Total-variation distance from each row of h (P, k) to the nearest of ``mixtures``
    (m, k), NaN without them; O(P m k) in chunks of about 1e7 numbers."""
    if mixtures is None or len(mixtures) == 0:
        return np.full(h.shape[0], math.nan)
    out = np.empty(h.shape[0])
    step = max(1, int(1e7 // max(1, mixtures.size)))
    for a in range(0, h.shape[0], step):
        out[a:a + step] = 0.5 * np.abs(h[a:a + step, None, :] - mixtures[None, :, :]).sum(axis=2).min(axis=1)
    return out


#: A weight within this of a bound is held by it.
_BINDING_TOL = 1e-9


def _binding(flist: list[Fit], N: np.ndarray, D: np.ndarray, W: np.ndarray, h: np.ndarray, LO: np.ndarray,
             HI: np.ndarray, lowers: list, uppers: list, threads: Optional[int], kl: Optional[np.ndarray] = None,
             prior: Optional[np.ndarray] = None, unique_tokens: Optional[np.ndarray] = None,
             halflife: float = 15.4) -> tuple[np.ndarray, np.ndarray]:
    """Which constraint holds each weight of the solutions ``h`` (P, k), and its Lagrange
    multiplier from the KKT conditions of min_h sum_t W_t L_t(h) (+ kl KL(h || prior)) on
    {sum h = 1, LO <= h <= HI}:
    G_i = mu + a_i - b_i with G the gradient, mu the simplex multiplier (the median of G over
    the free weights), a_i = G_i - mu at a lower limit and b_i = mu - G_i at an upper one.
    ``lowers``/``uppers``: (name, (P, k) limits) in order of precedence; a weight at LO (HI)
    is named after the first whose limit is LO (HI). Cost: one gradient in h per target and
    budget, O(P T k)."""
    P, k = h.shape
    G = np.zeros((P, k))
    for t, f in enumerate(flist):
        if np.any(W[:, t] != 0):
            law, x, extra = f.law, f.x, {}
            if unique_tokens is not None:  # the data-constrained law the solver minimised
                if not law.repetition:
                    law = Law(law.name, k, n_term=law.n_term, d_term=law.d_term, n_scale=law.n_scale,
                              d_scale=law.d_scale, target_domain=law.target_domain, repetition=True)
                    x = np.append(x, halflife)
                extra = {"unique_tokens": unique_tokens}
            with np.errstate(invalid="ignore"):
                G += W[:, t, None] * law.grad_h(x, N, D, h, threads=threads, **extra)
    if kl is not None and prior is not None and np.any(kl > 0):
        with np.errstate(divide="ignore"):
            G += kl[:, None] * (np.log(h) - np.log(prior) + 1.0)
    at_lo = h <= LO + _BINDING_TOL
    at_hi = (h >= HI - _BINDING_TOL) & ~at_lo
    free = ~(at_lo | at_hi)
    with warnings.catch_warnings():  # a problem without a free weight has no mu (NaN): "All-NaN slice"
        warnings.simplefilter("ignore", RuntimeWarning)
        mu = np.nanmedian(np.where(free, G, np.nan), axis=1)
    with np.errstate(invalid="ignore"):
        mult = np.where(at_lo, G - mu[:, None], np.where(at_hi, mu[:, None] - G, 0.0))
    kind = np.full((P, k), "", dtype=object)
    for limits, at, bound in ((reversed(lowers), at_lo, LO), (reversed(uppers), at_hi, HI)):
        for name, value in limits:  # the first in precedence is written last
            kind[at & (np.abs(np.broadcast_to(value, (P, k)) - bound) <= _BINDING_TOL)] = name
    mult = np.where(kind == "", 0.0, np.where(np.isfinite(mult), mult, np.nan))
    return kind, mult


def optimal_allocation(fits: Any, *, compute: float, flops_per_token: Optional[float] = None,
                       N_range: tuple = (1e7, 1e13), n_grid: int = 65, refine: int = 3,
                       **options: Any) -> MixtureResult:
    """Jointly optimal (N, D, h) for a compute budget ``C = 6 N D`` (beyond the paper).

    ``D = C / (flops_per_token * N)`` with ``flops_per_token = 6 N`` by default, i.e.
    ``D = C / (6 N)``. The mixture is optimised exactly at every N of a log-spaced grid
    (one parallel call per round); the grid is then refined ``refine`` times around the
    best N. Meaningful for laws whose optimal mixture depends on scale (joint, full).
    Other options go to :func:`optimize_mixture`.
    """
    if not (compute > 0 and math.isfinite(compute)):
        raise ValueError("compute: must be finite and > 0")
    lo, hi = (float(v) for v in N_range)
    if not (0 < lo < hi and math.isfinite(hi)):
        raise ValueError("N_range: expected 0 < min < max")
    if n_grid < 3:
        raise ValueError("n_grid: must be >= 3")

    def tokens(n: np.ndarray) -> np.ndarray:
        return compute / (6.0 * n) if flops_per_token is None else compute / (flops_per_token * n)

    grid = np.geomspace(lo, hi, n_grid)
    best = None
    with warnings.catch_warnings():
        # The scan's own grid reaches far beyond the data; only the answer is checked below.
        warnings.simplefilter("ignore", ExtrapolationWarning)
        for _ in range(refine + 1):
            res = optimize_mixture(fits, N=grid, D=tokens(grid), **options)
            i = int(np.argmin(res.fun))
            best = res[i]
            a, b = grid[max(i - 1, 0)], grid[min(i + 1, n_grid - 1)]
            grid = np.geomspace(a, b, n_grid)
    assert best is not None
    flist = _as_fits(fits)
    far = [(f, v) for f in flist if (v := f.far_outside(best.N, best.D))]
    if far:
        warnings.warn(f"optimal_allocation: target {far[0][0].target!r}: the optimum is at "
                      f"{_far_message(*far[0])}", ExtrapolationWarning,
                      stacklevel=user_stacklevel())
    if best.outside_data:
        warnings.warn(f"optimal_allocation: the optimal mixture leaves the range of weights seen in the fitting "
                      f"runs for {sorted(best.outside_data)}; within_data=True keeps it inside",
                      ExtrapolationWarning, stacklevel=user_stacklevel())
    return best
