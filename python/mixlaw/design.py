"""Which small runs to train: initial designs of mixtures on the simplex (issue 25, first part).

Every law is only as good as the runs it is fitted to, and the runs are what users pay for.
:func:`initial_mixtures` draws mixtures that cover the simplex well: candidates from a
(hierarchical) Dirichlet distribution, a share of exact zeros (real mixtures leave domains
out, and the laws' behaviour at ``h_i = 0`` is only identified by runs that do), per-domain
bounds, then a greedy maximin selection (farthest-point sampling in total-variation
distance), which spreads the chosen mixtures far more evenly than independent draws.
:func:`initial_design` lays them out over model sizes and token counts as a table of runs to
train, with the compute of each (``6 N D``).

Choosing the *next* runs from the ones already trained (active selection) is not here yet.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np

from . import _core
from .fit import _floats, _int_option
from .mixture import _bounds

__all__ = ["initial_mixtures", "initial_design"]

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
    H = initial_mixtures(n_mixtures, names, **options)
    nm, ns = H.shape[0], sizes.size
    cols: dict = {"run": np.arange(nm * ns), "mixture": np.tile(np.arange(nm), ns),
                  "N": np.repeat(sizes, nm), "D": np.repeat(tokens, nm)}
    cols["compute"] = 6.0 * cols["N"] * cols["D"]
    for j, d in enumerate(names):
        cols[f"w_{d}"] = np.tile(H[:, j], ns)
    return pd.DataFrame(cols)
