"""Which small runs to train: initial designs of mixtures on the simplex (issue 25, first part).

Every law is only as good as the runs it is fitted to, and the runs are what users pay for.
:func:`initial_mixtures` draws mixtures that cover the simplex well: candidates from a
(hierarchical) Dirichlet distribution, a share of exact zeros (real mixtures leave domains
out, and the laws' behaviour at ``h_i = 0`` is only identified by runs that do), per-domain
bounds, then a greedy maximin selection (farthest-point sampling in total-variation
distance), which spreads the chosen mixtures far more evenly than independent draws.
:func:`initial_design` lays them out over model sizes and token counts as a table of runs to
train, with the compute of each (``6 N D``).

:func:`next_runs` chooses the next batch from a pool of candidate runs, given the runs
trained so far: the runs that most reduce the uncertainty of the decision (the optimal mixture
at a target scale and its loss, or the losses at given mixtures) per unit of compute, with the
decision's current uncertainty, so users know when to stop training small runs.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

from . import _core
from .data import _PLAUSIBLE_MAX
from .fit import _fit_box, _floats, _int_option, _present
from .mixture import _bounds

__all__ = ["initial_mixtures", "initial_design", "next_runs", "NextRuns"]

#: The selection compares every chosen mixture with every candidate: at most this many
#: (chosen x candidates x domains) operations, fewer candidates beyond.
_SELECTION_WORK = 2e9


def _domain_names(domains: Union[int, Sequence[str]]) -> tuple:
    if isinstance(domains, (int, np.integer)) and not isinstance(domains, bool):
        k = int(domains)
        if not 1 <= k <= 100_000:
            raise ValueError(f"domains: expected 1 to 100,000 domains, got {k}")
        return tuple(f"d{i + 1}" for i in range(k))
    if isinstance(domains, str) or not isinstance(domains, Sequence):
        raise ValueError("domains: expected a number of domains or a sequence of domain names")
    names = tuple(str(d) for d in domains)
    if not names:
        raise ValueError("domains: no domain given")
    if len(set(names)) != len(names):
        raise ValueError(f"domains: {next(d for d in names if names.count(d) > 1)!r} appears twice")
    return names


def _candidate_draws(rng: np.random.Generator, m: int, k: int, groups: Optional[list], zeros: float,
                     alpha: float) -> np.ndarray:
    """m mixtures: Dirichlet(alpha) over the domains, or over the groups and then within each
    group; each weight set to exactly 0 with probability ``zeros`` (at least one kept)."""
    if groups is None:
        H = rng.gamma(alpha, size=(m, k))
    else:
        H = np.zeros((m, k))
        G = rng.gamma(alpha, size=(m, len(groups)))
        G /= G.sum(axis=1, keepdims=True)
        for g, idx in enumerate(groups):
            inner = rng.gamma(alpha, size=(m, len(idx)))
            H[:, idx] = G[:, g, None] * inner / inner.sum(axis=1, keepdims=True)
    if zeros > 0 and k > 1:
        drop = rng.random((m, k)) < zeros
        keep = rng.integers(0, k, m)  # one domain of each mixture always stays
        drop[np.arange(m), keep] = False
        H = np.where(drop, 0.0, H)
    return H / H.sum(axis=1, keepdims=True)


def initial_mixtures(n: int, domains: Union[int, Sequence[str]], *, zeros: float = 0.2, alpha: float = 1.0,
                     bounds: Any = None, groups: Optional[Mapping[str, Sequence[str]]] = None,
                     candidates: int = 20, seed: int = 0) -> np.ndarray:
    """``n`` mixtures over the domains that cover the simplex well.

    Parameters
    ----------
    n : int
        Number of mixtures.
    domains : int or sequence of str
        The number of domains, or their names.
    zeros : float
        Probability that a candidate's weight is exactly 0 (at least one domain of each
        mixture stays), in [0, 1). Default 0.2. The maximin selection prefers spread-out
        candidates, which have more zeros: about 30% of the chosen weights at k = 7.
    alpha : float
        Concentration of the Dirichlet candidates (> 0): 1 is uniform on the simplex, larger
        values keep mixtures away from the corners (the selection still spreads them).
    bounds : mapping domain -> (min, max), optional
        Per-domain limits (fractions of the mixture); every mixture is projected onto them
        (the exact Euclidean projection onto the capped simplex), zeros included where
        ``min > 0``.
    groups : mapping group -> list of domains, optional
        A hierarchy (e.g. topic -> quality buckets): group weights are drawn first, then the
        weights within each group (hierarchical Dirichlet, as Olmix's swarms). Every domain
        in exactly one group.
    candidates : int
        Candidates per chosen mixture for the maximin selection (default 20; fewer when
        ``n x candidates x n x k`` would exceed 2e9 operations).
    seed : int

    Returns
    -------
    ndarray (n, k)
        Rows on the simplex, in the order chosen (every prefix is itself spread out: the
        first m rows are a good design of m mixtures).

    Notes
    -----
    Selection: the first mixture is the candidate closest to the candidates' mean; each
    next one is the candidate farthest, in total-variation distance, from all chosen so far
    (greedy maximin). Cost O(n x candidates x n x k).
    """
    n = _int_option(n, "n", lo=1, hi=10_000_000)
    names = _domain_names(domains)
    k = len(names)
    candidates = _int_option(candidates, "candidates", lo=1, hi=10_000)
    seed = _int_option(seed, "seed", hi=2 ** 63)
    z = float(_floats(zeros, "zeros"))
    if not 0 <= z < 1:
        raise ValueError(f"zeros: expected a probability in [0, 1), got {z}")
    concentration = float(_floats(alpha, "alpha"))
    if not (math.isfinite(concentration) and concentration > 0):
        raise ValueError(f"alpha: expected a concentration > 0, got {concentration}")
    group_idx = None
    if groups is not None:
        if not isinstance(groups, Mapping) or not groups:
            raise ValueError("groups: expected {group: [domains]}")
        group_idx, seen = [], set()
        for g, members in groups.items():
            if isinstance(members, str) or not isinstance(members, Sequence) or not members:
                raise ValueError(f"groups: {g!r} must map to a non-empty list of domains")
            unknown = [d for d in members if d not in names]
            if unknown:
                raise ValueError(f"groups: {g!r} has unknown domain(s) {unknown}; domains: {list(names)}")
            twice = [d for d in members if d in seen]
            if twice:
                raise ValueError(f"groups: domain {twice[0]!r} is in more than one group")
            seen.update(members)
            group_idx.append([names.index(d) for d in members])
        missing = [d for d in names if d not in seen]
        if missing:
            raise ValueError(f"groups: domain(s) {missing} in no group")
    if bounds is not None and not isinstance(bounds, Mapping):
        raise ValueError("bounds: expected {domain: (min, max)}")
    lo, hi = _bounds(bounds, names, k)  # the checks of optimize_mixture's bounds
    m = max(n, min(n * candidates, int(_SELECTION_WORK / max(1.0, float(n) * k))))
    rng = np.random.default_rng([seed, 25])
    C = _candidate_draws(rng, m, k, group_idx, z, concentration)
    if bounds is not None:
        C = np.array([_core.project_simplex(row, lo, hi) for row in C])
    # Greedy maximin in total-variation distance, starting near the centre of the candidates.
    chosen = np.empty(n, dtype=np.intp)
    dist = 0.5 * np.abs(C - C.mean(axis=0)).sum(axis=1)
    chosen[0] = int(np.argmin(dist))
    nearest = 0.5 * np.abs(C - C[chosen[0]]).sum(axis=1)
    for i in range(1, n):
        chosen[i] = int(np.argmax(nearest))
        nearest = np.minimum(nearest, 0.5 * np.abs(C - C[chosen[i]]).sum(axis=1))
    return np.ascontiguousarray(C[chosen])


def initial_design(n_mixtures: int, domains: Union[int, Sequence[str]], *, N: Any,
                   tokens_per_param: Optional[float] = 20.0, D: Any = None, **options: Any) -> Any:
    """A table of runs to train: :func:`initial_mixtures` at every model size.

    Parameters
    ----------
    n_mixtures : int
    domains : int or sequence of str
    N : sequence of float
        Model sizes (parameters); every mixture is trained at each.
    tokens_per_param : float, optional
        Training tokens per parameter (D = tokens_per_param x N; 20 is Chinchilla's
        compute-optimal ratio). Ignored when ``D`` is given.
    D : sequence of float, optional
        Training tokens per model size instead (same length as ``N``).
    **options
        Passed to :func:`initial_mixtures` (``zeros``, ``bounds``, ``groups``, ``seed``, ...).

    Returns
    -------
    pandas.DataFrame
        One row per run: ``run``, ``mixture`` (its index), ``N``, ``D``, ``compute`` (6 N D
        FLOPs) and one weight column ``w_<domain>`` per domain, ready for
        ``mixlaw.load_runs(..., weights="w_*", N="N", D="D")`` once losses are added.
    """
    import pandas as pd

    names = _domain_names(domains)
    sizes = _floats(N, "N").reshape(-1)
    if sizes.size == 0 or not np.all(np.isfinite(sizes)) or np.any(sizes <= 0):
        raise ValueError("N: expected one or more finite model sizes > 0")
    # A plan of runs is made here, so sizes in millions or billions are an error, not a warning
    # (the thresholds of load_runs' units check).
    if float(sizes.max()) < _PLAUSIBLE_MAX["N"]:
        raise ValueError(f"N: model sizes {sizes.min():g}..{sizes.max():g} look like millions or billions; give "
                         "raw parameter counts (1e8 for 100M)")
    if np.unique(sizes).size != sizes.size:
        raise ValueError(f"N: a model size is given twice ({sizes.tolist()}); every mixture is trained once at each")
    if D is not None:
        tokens = _floats(D, "D").reshape(-1)
        if tokens.shape != sizes.shape:
            raise ValueError(f"D: expected {sizes.size} token counts (one per model size), got {tokens.size}")
    else:
        r = float(_floats(tokens_per_param, "tokens_per_param"))
        if not (math.isfinite(r) and r > 0):
            raise ValueError("tokens_per_param: must be finite and > 0")
        tokens = r * sizes
    if not np.all(np.isfinite(tokens)) or np.any(tokens <= 0):
        raise ValueError("D: token counts must be finite and > 0")
    if float(tokens.max()) < _PLAUSIBLE_MAX["D"]:
        raise ValueError(f"D: token counts {tokens.min():g}..{tokens.max():g} look like millions or billions; give "
                         "raw token counts (2e9 for 2B)")
    H = initial_mixtures(n_mixtures, names, **options)
    nm, ns = H.shape[0], sizes.size
    cols: dict = {"run": np.arange(nm * ns), "mixture": np.tile(np.arange(nm), ns),
                  "N": np.repeat(sizes, nm), "D": np.repeat(tokens, nm)}
    cols["compute"] = 6.0 * cols["N"] * cols["D"]
    for j, d in enumerate(names):
        cols[f"w_{d}"] = np.tile(H[:, j], ns)
    return pd.DataFrame(cols)


# ---------------------------------------------------------------------------------------------
# Next runs: active selection for a decision
# ---------------------------------------------------------------------------------------------

#: The selection keeps, per target, the candidates' Jacobian (rows x parameters) and a few
#: arrays of that size: at most this many doubles in all, checked before allocating.
_SELECTION_DOUBLES = 2.5e8

#: Relative noise floor: the residual scale of a fit is never taken below this fraction of the
#: typical loss (run-to-run noise of real losses is ~0.1-0.5%; a fit that interpolates its
#: few records would otherwise claim to know them exactly).
_NOISE_FLOOR = 1e-4


@dataclass(frozen=True)
class NextRuns:
    """The next runs to train, and what they are expected to buy (:func:`next_runs`).

    Attributes
    ----------
    runs : pandas.DataFrame
        The chosen runs in the order chosen: ``run`` (the candidate's id), ``N``, ``D`` (its
        last token count), ``compute`` (FLOPs), ``n_records`` (the candidate's rows: its
        checkpoints), one ``w_<domain>`` column per domain, ``reduction`` (the share of the
        decision's remaining variance this run removes, given the runs chosen before it) and
        ``criterion`` (the decision's variance, in tolerance units, once it is added).
    h : dict
        The decision's current optimal mixture (empty for ``decision="losses"``).
    loss : float
        Its predicted weighted loss at (``N``, ``D``) (NaN for ``decision="losses"``).
    uncertainty, expected : dict
        Standard deviations of the decision now, and expected once the chosen runs are
        trained (the same linearisation, with the chosen runs' information added):
        ``"h"`` {domain: sd of the optimal weight}, ``"loss"`` (sd of the loss at the
        optimum, relative), ``"losses"`` {target: array of relative sds at the mixtures
        ``H``}.
    criterion, criterion_after : float
        The decision's variance in tolerance units, sum of (sd / tolerance)^2 over its
        components (the losses at ``H`` as one: their mean), now and expected after the batch.
    settled : bool
        True when every component's sd is already within its tolerance: more small runs
        are not expected to change the decision by more than the tolerance.
    noise : dict
        The noise of one record's loss, per target (loss units), used for the runs'
        information.
    run_noise : dict
        The part of it that the records of one run share, per target (an sd, loss units; 0
        when checkpoints are taken as independent).
    fits : Fits
        The fits the decision and its uncertainty are computed from.
    N, D : float
        The target scale of the decision.
    tolerance : (float, float)
        The tolerances the criterion and ``settled`` use (an optimal weight, absolute; a
        loss, relative).
    """

    runs: Any
    h: dict
    loss: float
    uncertainty: dict
    expected: dict
    criterion: float
    criterion_after: float
    settled: bool
    noise: dict
    fits: Any
    N: float = math.nan
    D: float = math.nan
    tolerance: tuple = (0.01, 5e-4)
    run_noise: dict = field(default_factory=dict)

    def _repr_html_(self) -> str:
        from . import _html

        head = _html.summary(
            f"Next {len(self.runs)} runs for the optimal mixture at N = {self.N:.4g}, D = {self.D:.4g}",
            [("compute", float(self.runs["compute"].sum()) if len(self.runs) else 0.0),
             ("criterion now", self.criterion), ("expected after", self.criterion_after),
             ("settled", self.settled)])
        mix = ""
        if self.h:
            mix = _html.table(["domain", "h*", "sd now", "sd after the batch"],
                              [(d, v, self.uncertainty["h"][d], self.expected["h"][d]) for d, v in self.h.items()])
        cols = [c for c in ("run", "N", "D", "compute", "reduction") if c in self.runs.columns]
        return head + mix + _html.table(cols, self.runs[cols].itertuples(index=False))

    def __repr__(self) -> str:
        top = ", ".join(f"{d}={v:.3f}" for d, v in self.h.items())
        sd_h = max(self.uncertainty["h"].values(), default=math.nan)
        return (f"NextRuns({len(self.runs)} runs, {float(self.runs['compute'].sum()) if len(self.runs) else 0.0:.3g} "
                f"FLOPs; criterion {self.criterion:.3g} -> {self.criterion_after:.3g}; largest sd of h* "
                f"{sd_h:.4f}; settled={self.settled}; h*: {top})")


def _candidate_table(candidates: Any, domains: tuple) -> tuple:
    """(N, D, H, run ids, compute per record) of the candidate records, H in ``domains``
    order. A Runs table (its checkpoints are the candidate runs' records) or a DataFrame with
    ``N``, ``D``, optional ``run`` and ``compute``, and one weight column per domain
    (``w_<domain>`` as :func:`initial_design` writes, or ``<domain>``)."""
    from ._domains import domain_order

    k = len(domains)
    if hasattr(candidates, "H") and hasattr(candidates, "_N_D"):
        N, D = candidates._N_D
        if N is None or D is None:
            raise ValueError("candidates: the runs table needs model sizes and token counts")
        idx = domain_order(tuple(candidates.domains), domains, have_arg="candidates", want_arg="fits")
        H = candidates.H if idx is None else candidates.H[:, idx]
        run = np.asarray(candidates.run)
        compute = None
    elif hasattr(candidates, "columns") and hasattr(candidates, "to_numpy"):
        cols = [str(c) for c in candidates.columns]
        for c in ("N", "D"):
            if c not in cols:
                raise ValueError(f"candidates: no column {c!r}; columns: {cols}")
        wcols = [c for c in cols if c.startswith("w_")]
        named = [c[2:] for c in wcols] if wcols else [c for c in cols if c in domains]
        src = wcols if wcols else named
        missing = [d for d in domains if d not in named]
        unknown = [d for d in named if d not in domains]
        if missing or unknown:
            raise ValueError(f"candidates: weight columns do not match the fits' domains {list(domains)}: "
                             + (f"missing {missing}" if missing else "") + (" " if missing and unknown else "")
                             + (f"unknown {unknown}" if unknown else ""))
        H = candidates[[src[named.index(d)] for d in domains]].to_numpy(dtype=float)
        N = _floats(candidates["N"].to_numpy(), "candidates")
        D = _floats(candidates["D"].to_numpy(), "candidates")
        run = candidates["run"].to_numpy() if "run" in cols else np.arange(len(candidates))
        compute = _floats(candidates["compute"].to_numpy(), "candidates") if "compute" in cols else None
    else:
        raise ValueError("candidates: expected a runs table (mixlaw.Runs) or a pandas DataFrame of runs")
    N, D, H = (np.asarray(a, dtype=float) for a in (N, D, H))
    n = N.shape[0]
    if n == 0:
        raise ValueError("candidates: no candidate run")
    if H.shape != (n, k):
        raise ValueError(f"candidates: expected {k} weight columns, got shape {H.shape}")
    for name, a in (("N", N), ("D", D)):
        if not np.all(np.isfinite(a)) or np.any(a <= 0):
            raise ValueError(f"candidates: column {name} must be finite and > 0")
    if not np.all(np.isfinite(H)) or np.any(H < 0) or np.any(np.abs(H.sum(axis=1) - 1) > 1e-6):
        raise ValueError("candidates: every row's weights must be finite, >= 0 and sum to 1 (within 1e-6)")
    if compute is not None and (not np.all(np.isfinite(compute)) or np.any(compute <= 0)):
        raise ValueError("candidates: column compute must be finite and > 0")
    return N, D, H, run, compute


def _per_target(value: Any, target: str, arg: str) -> Any:
    """A per-target option: the value itself, or its entry for ``target`` in a mapping."""
    if not isinstance(value, Mapping):
        return value
    if target not in value:
        raise ValueError(f"{arg}: no value for target {target!r} (given for: {', '.join(map(str, value))})")
    return value[target]


def _shared_fraction(e: np.ndarray, run: np.ndarray, J: Optional[np.ndarray] = None) -> float:
    """The fraction of the noise's variance that the records of one run share,
    ``sigma_b^2 / (sigma_b^2 + sigma_w^2)``, from residuals ``e`` grouped by run, by the
    method of moments (as in the one-way random-effects analysis of variance): the sums of
    squares within runs and between runs against their expectations under
    ``V = sigma_w^2 I + sigma_b^2 Z Z^T`` (Z: records x runs, 0/1). With the fit's Jacobian
    ``J`` the residuals are taken as ``e = M y``, ``M = I - Q Q^T`` (Q an orthonormal basis of
    J's columns: what the fitted parameters absorb), so the expectations are
    ``tr(S M V M)`` for each sum's projector S; every trace is formed from P x P and P x runs
    products, O(records x P^2 + runs x P^2), never an n x n matrix. sigma_b^2 is floored at 0;
    0 also when no run has two records (the two parts cannot be told apart)."""
    ids, inv, m = np.unique(run, return_inverse=True, return_counts=True)
    n, R = e.size, ids.size
    if R < 2 or n - R < 1:
        return 0.0
    mf = m.astype(float)

    def run_means(X: np.ndarray) -> np.ndarray:  # (R, cols): the mean of each run's rows
        out = np.zeros((R, X.shape[1]))
        np.add.at(out, inv, X)
        return out / mf[:, None]

    em = run_means(e[:, None])[:, 0]
    ssw = float(np.sum((e - em[inv]) ** 2))               # e^T W e, W = I - Z (Z^T Z)^-1 Z^T
    ssb = float(np.sum(mf * (em - e.mean()) ** 2))         # e^T B e, B = Z (Z^T Z)^-1 Z^T - 1 1^T / n
    a1, b1 = float(n - R), float(R - 1)                   # tr(W), tr(B)
    a2, b2 = 0.0, float(n - np.sum(mf ** 2) / n)          # tr(W Z Z^T), tr(B Z Z^T)
    if J is not None and J.shape[1]:
        Q, _ = np.linalg.qr(J)
        Qm = run_means(Q)
        WQ = Q - Qm[inv]                                   # W Q
        BQ = Qm[inv] - Q.mean(axis=0)                      # B Q
        QWQ, QBQ = WQ.T @ WQ, BQ.T @ BQ
        C = (Qm * mf[:, None]).T                          # Q^T Z (P x runs)
        CC = C @ C.T
        s1 = Q.sum(axis=0)                                 # Q^T 1
        # tr(S M) = tr(S) - tr(Q^T S Q); tr(S M Z Z^T M) = ||S M Z||_F^2 with M Z = Z - Q C.
        a1 -= float(np.trace(QWQ))
        b1 -= float(np.trace(QBQ))
        a2 = float(np.sum(QWQ * CC))                       # ||W Q C||^2 (W Z = 0)
        b2 += -2 * (float(np.sum(C * C)) - float(s1 @ C @ mf) / n) + float(np.sum(QBQ * CC))
    det = a1 * b2 - a2 * b1
    if not (a1 > 0 and det > 0):
        return 0.0
    sw2 = (ssw * b2 - ssb * a2) / det
    sb2 = (a1 * ssb - b1 * ssw) / det
    if sb2 <= 0 or sw2 <= 0:
        return 0.0 if sb2 <= 0 else 1.0
    return sb2 / (sb2 + sw2)


def _solver_coords(law: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per parameter: the factor taking a derivative to the solver's coordinates (log for a
    scale parameter, so d/dlog x = x d/dx; 1 otherwise) and the prior precision there, from
    the law's range of starting values (half that range is one standard deviation): a weak
    prior that keeps directions the runs do not inform finite and large."""
    logs = np.asarray(law.log_scale, dtype=bool)
    ilo, ihi = np.asarray(law.init_lower, float), np.asarray(law.init_upper, float)
    scale = np.where(logs, np.abs(x), 1.0)
    with np.errstate(divide="ignore"):
        sd = np.where(logs, 0.5 * (np.log(np.maximum(ihi, 1e-300)) - np.log(np.maximum(ilo, 1e-300))),
                      0.5 * (ihi - ilo))
    sd = np.where(np.isfinite(sd) & (sd > 0), sd, 1.0)
    return scale, 1.0 / sd ** 2


def _free_coords(law: Any, options: Mapping[str, Any]) -> np.ndarray:
    """The map T (P x P_free) from the fit's free coordinates to the law's parameters: a
    parameter held fixed by ``bounds`` (min == max) has no column, parameters tied by ``tie``
    share one (they move together), every other parameter has its own. Jacobians and
    sensitivities are taken to the free coordinates by ``@ T``."""
    lo, hi, labels = _fit_box(law, options)
    labels = np.arange(law.n_params) if labels is None else labels
    free = lo != hi
    groups = np.unique(labels[free])
    return ((labels[:, None] == groups[None, :]) & free[:, None]).astype(float)


def _gradient_solver_coords(law: Any, x: np.ndarray, fn: Any, step: float = 1e-6) -> np.ndarray:
    """d fn(params)/du by central differences in the solver's coordinates u (``fn`` returns
    an array: here the law's h-gradient at one point, which is analytic)."""
    logs = np.asarray(law.log_scale, dtype=bool)
    cols = []
    for j in range(x.size):
        xp, xm = x.copy(), x.copy()
        if logs[j]:
            xp[j], xm[j] = x[j] * math.exp(step), x[j] * math.exp(-step)
            du = 2 * step
        else:
            h = step * max(1.0, abs(x[j]))
            xp[j], xm[j] = x[j] + h, x[j] - h
            du = 2 * h
        cols.append((fn(xp) - fn(xm)) / du)
    return np.stack(cols, axis=-1)


def _optimum_sensitivity(flist: list, w: np.ndarray, h: np.ndarray, lo: np.ndarray, hi: np.ndarray, N: float,
                         D: float) -> list:
    """dh*/du_t (k x P_t) for each target t: the optimal mixture's first-order change with
    each fit's parameters, by the implicit function theorem on the face of the simplex where
    it lies (its weights strictly inside their bounds move, the others stay): with Z a basis
    of the face's directions, Z^T grad_h L(h*) = 0 gives dh* = -Z (Z^T Hess Z)^-1 Z^T dgrad."""
    k = h.size
    free = np.flatnonzero((h > lo + 1e-9) & (h < hi - 1e-9))
    if free.size <= 1:
        return [np.zeros((k, f.law.n_params)) for f in flist]
    ref = free[np.argmax(h[free])]
    others = free[free != ref]
    Z = np.zeros((k, others.size))
    Z[others, np.arange(others.size)] = 1.0
    Z[ref, :] = -1.0
    eps = 1e-4 * float(h[free].min())
    Hp = h[None, :] + eps * Z.T
    Hm = h[None, :] - eps * Z.T
    Hess = np.zeros((others.size, others.size))
    for f, wt in zip(flist, w):
        gp = f.law.grad_h(f.x, np.full(others.size, N), np.full(others.size, D), Hp)
        gm = f.law.grad_h(f.x, np.full(others.size, N), np.full(others.size, D), Hm)
        Hess += wt * (Z.T @ ((gp - gm) / (2 * eps)).T)
    Hess = 0.5 * (Hess + Hess.T)
    lam, V = np.linalg.eigh(Hess)
    # A flat or non-convex direction of the face: the optimum is (locally) undetermined there,
    # which the floor turns into a very large variance rather than a division by zero.
    lam = np.maximum(lam, 1e-12 * max(float(np.abs(lam).max()), 1e-300))
    inv = (V / lam) @ V.T
    out = []
    for f, wt in zip(flist, w):
        M = _gradient_solver_coords(f.law, f.x, lambda xx, f=f: Z.T @ np.ravel(f.law.grad_h(xx, N, D, h[None, :])))
        out.append(-Z @ (inv @ (wt * M)))
    return out


def next_runs(runs: Any, candidates: Any, *, N: float, D: float, fits: Any = None, law: Any = None,
              batch: int = 10, decision: str = "optimum", H: Any = None, weights: Any = None,
              bounds: Any = None, tolerance: tuple = (0.01, 5e-4), noise: Any = None, run_noise: Any = "auto",
              checkpoints: int = 1,
              threads: Optional[int] = None, **fit_options: Any) -> NextRuns:
    """The next ``batch`` runs to train: those of ``candidates`` that most reduce the
    uncertainty of a decision per unit of compute.

    Parameters
    ----------
    runs : Runs
        The runs trained so far.
    candidates : Runs or pandas.DataFrame
        The pool of runs one could train next. A runs table (losses, if any, are ignored) or
        a DataFrame as :func:`initial_design` writes it: ``N``, ``D``, weight columns
        ``w_<domain>`` (or ``<domain>``), optional ``run`` (rows with the same id are the
        checkpoints of one run) and ``compute`` (FLOPs of the run; default ``6 N D`` at its
        last checkpoint).
    N, D : float
        The target scale of the decision (raw parameters and tokens).
    fits : Fits, optional
        Fits of ``runs`` to use; by default ``fit(runs, law, threads=threads, **fit_options)``.
    law : str or Law
        The law to fit when ``fits`` is not given (default ``"additive"``); not with ``fits``.
    batch : int
        How many runs to choose (default 10).
    decision : {"optimum", "losses"}
        ``"optimum"`` (default): the optimal mixture at (N, D) (``weights`` over the targets
        and ``bounds`` as in :func:`mixlaw.optimize_mixture`) and its predicted loss, plus the
        losses at ``H`` if given. ``"losses"``: the predicted loss of every target at each
        mixture of ``H`` (required).
    H : array (m, k), DataFrame or mapping, optional
        Mixtures at which the predicted losses at (N, D) are part of the decision (domains by
        name as in :meth:`mixlaw.Fit.predict`).
    tolerance : (float, float)
        The precision the decision needs: of an optimal weight (absolute, default 0.01 = 1
        point) and of a predicted loss (relative, default 5e-4 = 0.05%). The criterion is
        the sum over the decision's components of (sd / tolerance)^2: each optimal weight,
        the loss at the optimum, and the losses at ``H`` as one component (the mean of their
        (sd / tolerance)^2 over mixtures and targets, as an MRE averages its errors).
    noise : float or mapping target -> float, optional
        The noise of one record's loss (loss units; relative for fits of log residuals). By
        default it is estimated from each fit's residuals: their mean square times
        ``n / (n - P)``, at least 0.01% of the median loss. (With a Huber fit, outlying
        records raise it: the uncertainty errs on the large side.)
    run_noise : "auto", float or mapping target -> float
        The part of ``noise`` (an sd, same units, below ``noise``) that the records of one
        run share: the checkpoints of one training run are not independent draws (one seed,
        one data order), so its many records do not average its own deviation away, and a
        run with 10 checkpoints tells less than 10 runs. ``"auto"`` (default): the share of
        the residuals' variance common to the records of a run, by the one-way
        random-effects analysis of variance of the fit's residuals grouped by run (its
        method of moments, with the expectations of the sums of squares taken after the
        fit's parameters have absorbed their part); 0 when no trained run has two records.
        0: records are independent.
    checkpoints : int
        For candidate runs given as one row (their last checkpoint): the number of
        checkpoints at which their loss will be recorded, evenly spaced in tokens up to
        ``D`` (``D j / checkpoints``, j = 1..checkpoints), as most training loops evaluate.
        Default 1 (the last checkpoint only). Runs given with several rows keep them.
    threads : int, optional
        For the fit.

    Returns
    -------
    NextRuns

    Notes
    -----
    The uncertainty is the linearised (Laplace) one: each fit's parameters have covariance
    ``(sum_r J_r^T V_r^-1 J_r + prior)^-1`` in the solver's coordinates (log for scale
    parameters), with ``J_r`` the law's Jacobian at the records of trained run r, ``V_r`` their
    noise covariance (``sigma_w^2 I + sigma_b^2 1 1^T``: ``sigma_b`` = ``run_noise``,
    ``sigma_w^2 + sigma_b^2`` = ``noise^2``) and a weak prior from the law's range of starting
    values (parameters the fit held fixed by ``bounds`` have no uncertainty, and parameters it
    tied by ``tie`` share one coordinate); the optimal mixture moves with the parameters by
    the implicit function theorem on its face of the simplex. A candidate run with records
    ``J_c`` would add ``J_c^T V_c^-1 J_c``; the reduction of the decision's variance is exact
    for the linearisation (a rank-r update). Runs are chosen greedily by reduction per compute, and
    each choice updates the covariance before the next, so a batch does not repeat one
    informative run: a near-duplicate of a chosen run has little left to reduce.
    Cost per chosen run: O(targets x (candidate records x P^2 + candidate runs x r^3)), r the
    most records of one candidate run; the sensitivities of the optimum take O(targets x P)
    evaluations of the law's h-gradient at one point (O(k) each), and its face Hessian O(k)
    more. A batch of 10 from 1,000 candidate runs of 10 checkpoints at k = 7 (8 targets) takes
    under half a second (bench/README.md).
    """
    from ._domains import columns_by_name
    from .fit import Fits, fit as fit_runs
    from .mixture import optimize_mixture

    batch = _int_option(batch, "batch", lo=1, hi=1_000_000)
    if decision not in ("optimum", "losses"):
        raise ValueError(f"decision: expected 'optimum' or 'losses', got {decision!r}")
    try:
        tol_h, tol_l = (float(v) for v in tolerance)
    except (TypeError, ValueError):
        raise ValueError("tolerance: expected a pair (weight tolerance, relative loss tolerance)") from None
    if not (math.isfinite(tol_h) and tol_h > 0 and math.isfinite(tol_l) and tol_l > 0):
        raise ValueError("tolerance: both values must be finite and > 0")
    Nt, Dt = float(_floats(N, "N")), float(_floats(D, "D"))
    if not (math.isfinite(Nt) and Nt > 0):
        raise ValueError("N: expected one model size > 0")
    if not (math.isfinite(Dt) and Dt > 0):
        raise ValueError("D: expected one token count > 0")
    if decision == "losses" and H is None:
        raise ValueError("H: decision='losses' needs the mixtures H")
    if isinstance(run_noise, str) and run_noise != "auto":
        raise ValueError(f"run_noise: expected 'auto', a float or a mapping target -> float, got {run_noise!r}")
    if not (hasattr(runs, "target") and hasattr(runs, "_N_D")):
        raise ValueError("runs: expected the runs trained so far as a mixlaw.Runs table")
    if decision == "losses" and (bounds is not None or weights is not None):
        raise ValueError("bounds, weights: they shape the optimal mixture, which decision='losses' does not use")
    if fits is None:
        fits = fit_runs(runs, "additive" if law is None else law, threads=threads, **fit_options)
    elif not isinstance(fits, Fits):
        raise ValueError("fits: expected the Fits of mixlaw.fit")
    elif law is not None or fit_options:
        given = ", ".join((["law"] if law is not None else []) + sorted(fit_options))
        raise ValueError(f"{given}: they choose how next_runs fits the runs, but fits= are given (fitted already)")
    targets = list(fits)
    first = fits[targets[0]]
    domains = tuple(first.domains)
    k = first.law.k
    if k < 2:
        raise ValueError("fits: the law has no mixture of two or more domains to choose runs for")
    for t in targets:
        if fits[t].law.repetition:
            raise ValueError("fits: data-constrained laws (repetition) are not supported by next_runs")
    flist = [fits[t].with_domains(domains) for t in targets]
    for t, f in zip(targets, flist):
        # The uncertainty comes from these runs' records at these fits' parameters: fits of other
        # runs would give a plausible but wrong answer.
        if t not in runs.targets:
            raise ValueError(f"fits: target {t!r} is not a target of runs ({', '.join(runs.target_names)}); pass "
                             "the runs the fits were fitted to")
        n_t = int(np.sum(_present(runs, t)))
        if f.n_records and f.n_records != n_t:
            raise ValueError(f"fits: the fit of target {t!r} used {f.n_records} records, but runs has {n_t} for it; "
                             "pass the runs the fits were fitted to")
    Hd = None
    if H is not None:
        Hd = np.atleast_2d(_floats(columns_by_name(H, domains, arg="H", want_arg="fits"), "H"))
        if Hd.shape[1] != k or not np.all(np.isfinite(Hd)) or np.any(Hd < 0) or \
                np.any(np.abs(Hd.sum(axis=1) - 1) > 1e-6):
            raise ValueError(f"H: expected mixtures of {k} weights, >= 0, summing to 1")
    checkpoints = _int_option(checkpoints, "checkpoints", lo=1, hi=10_001)
    cN, cD, cH, crun, ccompute = _candidate_table(candidates, domains)
    if checkpoints > 1:
        ids, inverse = np.unique(crun, return_inverse=True)
        single = np.bincount(inverse)[inverse] == 1
        if single.any():
            rep = np.where(single, checkpoints, 1)
            frac = np.concatenate([np.arange(1, r + 1) / r for r in rep])
            cN, cH, crun = np.repeat(cN, rep), np.repeat(cH, rep, axis=0), np.repeat(crun, rep)
            cD = np.repeat(cD, rep) * frac
            ccompute = None if ccompute is None else np.repeat(ccompute, rep)
    ids, inverse = np.unique(crun, return_inverse=True)
    n_runs = ids.size
    counts = np.bincount(inverse, minlength=n_runs)
    r_max = int(counts.max())
    P_max = max(f.law.n_params for f in flist)
    # Each target keeps its candidates' Jacobian (runs x records x P); two more of that size
    # are live while a choice is scored, a few P x P matrices per target, and a few
    # runs x records x records arrays (the shared noise, the systems solved).
    need = float(n_runs) * r_max * P_max * (len(flist) + 2) + float(P_max) ** 2 * 4 * len(flist) \
        + float(n_runs) * r_max * (r_max + 1) * 3
    if need > _SELECTION_DOUBLES:
        raise ValueError(f"candidates: {n_runs} runs of up to {r_max} records at {P_max} parameters "
                         f"for {len(flist)} target(s) need "
                         f"~{need * 8 / 1e9:.1f} GB (limit {_SELECTION_DOUBLES * 8 / 1e9:.0f} GB); "
                         "pass fewer candidates")
    if batch > n_runs:
        raise ValueError(f"batch: {batch} runs asked for, but there are only {n_runs} candidate runs")
    first_row = np.full(n_runs, -1)
    first_row[inverse[::-1]] = np.arange(cN.size)[::-1]
    differ = (cN != cN[first_row[inverse]]) | np.any(cH != cH[first_row[inverse]], axis=1)
    if differ.any():
        bad = ids[inverse[np.argmax(differ)]]
        bad = bad.item() if hasattr(bad, "item") else bad
        raise ValueError(f"candidates: run {bad!r} has rows with different model sizes or weights; the rows "
                         "of one run are its checkpoints (same N and mixture, different D)")
    # Per run: its records (padded), its compute and its last token count.
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    slot = np.empty(cN.size, dtype=np.intp)
    slot[order] = np.arange(cN.size) - np.repeat(starts[:-1], counts)
    last_D = np.zeros(n_runs)
    np.maximum.at(last_D, inverse, cD)
    run_N = np.zeros(n_runs)
    np.maximum.at(run_N, inverse, cN)
    if ccompute is None:
        cost = 6.0 * run_N * last_D
    else:
        cost = np.zeros(n_runs)
        np.maximum.at(cost, inverse, ccompute)

    # The decision.
    w = np.zeros(len(flist))
    h_star, loss_star = np.zeros(0), math.nan
    if decision == "optimum":
        res = optimize_mixture(fits, N=Nt, D=Dt, weights=weights, bounds=bounds)
        h_star = np.array([res.h[d] for d in domains])
        w = np.array([float(res.weights.get(t, 0.0)) for t in targets])
        w = w / w.sum()
        loss_star = float(res.fun)
        lo, hi = _bounds(bounds, domains, k)
        dh = _optimum_sensitivity(flist, w, h_star, lo, hi, Nt, Dt)

    # The losses at H are one component of the decision: the mean of their (sd / tolerance)^2
    # (an MRE averages its errors), so that many mixtures or targets do not outweigh h*.
    n_losses = 0 if Hd is None else len(Hd) * len(flist)
    S_list, G_list, sig, sbs, rhos, Jc_list = [], [], {}, {}, [], []
    for ti, (t, f) in enumerate(zip(targets, flist)):
        law_t = f.law
        opts = f.options or {}
        T = _free_coords(law_t, opts)  # fixed parameters drop out, tied ones move together
        scale, prec = _solver_coords(law_t, f.x)
        prec = (prec @ T) / T.sum(axis=0)  # a tied group's prior: its members' (they are of one kind)
        tN, tD, tH, ty = runs.target(t)
        tH = f._runs_H(tH, runs)
        pred, J = law_t.jacobian(f.x, tN, tD, tH)
        log_res = opts.get("residual", "raw") == "log"
        resid = np.log(ty) - np.log(pred) if log_res else ty - pred
        J = (J * scale / (pred[:, None] if log_res else 1.0)) @ T
        P = T.shape[1]
        floor = _NOISE_FLOOR * (1.0 if log_res else float(np.median(np.abs(ty))))
        if noise is None:
            s = max(math.sqrt(float(np.mean(resid ** 2)) * resid.size / max(resid.size - P, 1)), floor)
        else:
            s = float(_floats(_per_target(noise, t, "noise"), "noise"))
            if not (math.isfinite(s) and s > 0):
                raise ValueError("noise: must be finite and > 0")
        sig[t] = s
        # The records of one run share part of the noise: V_r = sw^2 (I + rho 1 1^T).
        run_t = runs.run[_present(runs, t)]  # the records runs.target(t) gave
        if isinstance(run_noise, str):
            share = _shared_fraction(resid, run_t, J)
        else:
            sb = float(_floats(_per_target(run_noise, t, "run_noise"), "run_noise"))
            if not (math.isfinite(sb) and 0 <= sb < s):
                raise ValueError(f"run_noise: must be >= 0 and below the noise of one record ({s:.3g} for "
                                 f"target {t!r})")
            share = (sb / s) ** 2
        sbs[t] = s * math.sqrt(share)
        sw = max(s * math.sqrt(1.0 - share), floor)  # never all of it: the runs' records would be one
        rho = share * s ** 2 / sw ** 2
        rhos.append(rho)
        F = J.T @ J
        if rho > 0:
            ids_t, inv_t, m_t = np.unique(run_t, return_inverse=True, return_counts=True)
            U = np.zeros((ids_t.size, J.shape[1]))
            np.add.at(U, inv_t, J)  # per run, the sum of its rows
            F -= (U * (rho / (1 + m_t * rho))[:, None]).T @ U
        F = F / sw ** 2 + np.diag(prec)
        S = np.linalg.inv(0.5 * (F + F.T))
        rows = []
        if decision == "optimum":
            rows.append(dh[ti] @ T / tol_h)  # dh is already in the solver's coordinates
            _, jo = law_t.jacobian(f.x, Nt, Dt, h_star[None, :])
            rows.append(w[ti] * (jo * scale) @ T / (tol_l * loss_star))
        if Hd is not None:
            ph, jh = law_t.jacobian(f.x, np.full(len(Hd), Nt), np.full(len(Hd), Dt), Hd)
            rows.append((jh * scale) @ T / (tol_l * ph[:, None] * math.sqrt(n_losses)))
        G_list.append(np.vstack(rows))
        S_list.append(S)
        pc, Jc = law_t.jacobian(f.x, cN, cD, cH)
        Jp = np.zeros((n_runs, r_max, P))
        Jp[inverse, slot] = (Jc * scale) @ T / ((pc[:, None] if log_res else 1.0) * sw)
        Jc_list.append(Jp)

    def components(S_all: list) -> tuple[dict, float]:
        var_h = np.zeros(k)
        var_l = 0.0
        losses = {}
        total = 0.0
        for ti, (t, S, G) in enumerate(zip(targets, S_all, G_list)):
            v = np.einsum("ij,jk,ik->i", G, S, G)
            total += float(v.sum())
            i0 = 0
            if decision == "optimum":
                var_h += v[:k] * tol_h ** 2
                var_l += float(v[k]) * tol_l ** 2
                i0 = k + 1
            if Hd is not None:
                losses[t] = np.sqrt(v[i0:] * n_losses) * tol_l
        out = {"h": {d: float(np.sqrt(a)) for d, a in zip(domains, var_h)} if decision == "optimum" else {},
               "loss": math.sqrt(var_l) if decision == "optimum" else math.nan, "losses": losses}
        return out, total

    before, crit0 = components(S_list)
    chosen, reductions, crits = [], [], []
    alive = np.ones(n_runs, dtype=bool)
    crit = crit0
    eye = np.eye(r_max)
    # A candidate's records share rho (in units of sw^2) of their noise: the padding rows
    # (runs with fewer records) stay independent and carry no information.
    valid = np.zeros((n_runs, r_max))
    valid[inverse, slot] = 1.0
    shared = valid[:, :, None] * valid[:, None, :]
    for _ in range(batch):
        gain = np.zeros(n_runs)
        for S, G, Jp, rho in zip(S_list, G_list, Jc_list, rhos):
            W = S @ (G.T @ G) @ S
            A = Jp @ S                                   # (n, r, P)
            K = A @ Jp.transpose(0, 2, 1) + eye + rho * shared  # noise already divided out
            Bm = (Jp @ W) @ Jp.transpose(0, 2, 1)
            gain += np.trace(np.linalg.solve(K, Bm), axis1=1, axis2=2)
        score = np.where(alive, gain / cost, -np.inf)
        c = int(np.argmax(score))
        alive[c] = False
        for i, (S, Jp, rho) in enumerate(zip(S_list, Jc_list, rhos)):
            Jr = Jp[c]
            A = Jr @ S
            K = A @ Jr.T + eye + rho * shared[c]
            S_new = S - A.T @ np.linalg.solve(K, A)
            S_list[i] = 0.5 * (S_new + S_new.T)
        after, crit_new = components(S_list)
        reductions.append((crit - crit_new) / crit if crit > 0 else 0.0)
        crits.append(crit_new)
        crit = crit_new
        chosen.append(c)

    import pandas as pd

    rows_idx = first_row[chosen]
    table = {"run": ids[chosen], "N": run_N[chosen], "D": last_D[chosen], "compute": cost[chosen],
             "n_records": counts[chosen]}
    for j, d in enumerate(domains):
        table[f"w_{d}"] = cH[rows_idx, j]
    table["reduction"] = np.array(reductions)
    table["criterion"] = np.array(crits)
    ok = all(v <= tol_h for v in before["h"].values())
    if decision == "optimum":
        ok = ok and before["loss"] <= tol_l
    ok = ok and all(np.all(v <= tol_l) for v in before["losses"].values())
    return NextRuns(runs=pd.DataFrame(table), h={d: float(v) for d, v in zip(domains, h_star)}, loss=loss_star,
                    uncertainty=before, expected=after, criterion=crit0, criterion_after=crit, settled=bool(ok),
                    noise=sig, fits=fits, N=Nt, D=Dt, tolerance=(tol_h, tol_l), run_noise=sbs)
