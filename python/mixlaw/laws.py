"""The scaling laws of Shukor et al. (2025), evaluated by mixlaw's C++ core.

Every law predicts the loss of a model with ``N`` parameters trained on ``D`` tokens
drawn with domain weights ``h`` (a point of the simplex, ``k`` entries). Internally
``N' = N / n_scale`` and ``D' = D / d_scale`` (defaults 1e6 and 1e9, as in the peer
library released with the paper); parameters are expressed in those units, while
``predict`` always takes raw ``N`` and ``D``. With ``S(h) = sum_i C_i h_i**gamma_i``:

============  ===========================================================  =========
name          formula                                                      count
============  ===========================================================  =========
chinchilla    E + A/N'^alpha + B/D'^beta                                   5
additive      E + 1/S(h) + A/N'^alpha + B/D'^beta                          5 + 2k
joint         E + 1/S(h) + A_h/N'^alpha + B_h/D'^beta                      5 + 4k
simple        E + (sum_i C_i h_i)^-gamma + A/N'^alpha + B/D'^beta          6 + k
full          E + 1/S(h) + A_h/N'^alpha_h + B_h/D'^beta_h                  5 + 6k
============  ===========================================================  =========

with ``A_h = (sum_i CA_i h_i)^gA``, ``B_h = (sum_i CB_i h_i)^gB``,
``alpha_h = (sum_i Calpha_i h_i)^galpha`` and ``beta_h = (sum_i Cbeta_i h_i)^gbeta``.
Parameter order (names are 1-based: ``C_1 .. C_k``):

- chinchilla: E, A, B, alpha, beta
- additive:   E, A, B, alpha, beta, C_1..k, gamma_1..k
- joint:      E, alpha, beta, C_1..k, gamma_1..k, CA_1..k, gA, CB_1..k, gB
- simple:     E, A, B, alpha, beta, gamma, C_1..k
- full:       E, C_1..k, gamma_1..k, CA_1..k, gA, CB_1..k, gB, Calpha_1..k, galpha,
  Cbeta_1..k, gbeta

Baseline laws of other papers, for comparison tables; they have no
model-size term (``n_term`` is always False) and only ``bimix`` has a token term:

============  ===========================================================  =========
name          formula                                                      count
============  ===========================================================  =========
dml_exp       E + exp(sum_i t_i h_i)   (Data Mixing Laws, Ye et al. 2024)  1 + k
dml_sum       E + sum_i C_i exp(t_i h_i)   (Ye et al.'s per-domain form)   1 + 2k
bimix         E + C / h_t^gamma + B/D'^beta   (BiMix, Ge et al. 2024)      5
linear        sum_i c_i h_i                                                k
============  ===========================================================  =========

Ye et al. write ``E + C exp(sum_i t_i h_i)``; on the simplex ``C`` is ``exp(sum_i log(C) h_i)``,
so it is absorbed into the ``t_i`` (a separate ``C`` would make the parameters not
identifiable). Likewise the linear model's ``E`` is absorbed into the ``c_i``. ``bimix``
describes a target that is one of the training domains, ``t = target_domain`` (0-based;
:func:`mixlaw.fit` sets it from the target's name); its loss is infinite where
``h_t == 0``, so such records cannot be fitted. Parameter order: dml_exp: E, t_1..k;
dml_sum: E, C_1..k, t_1..k; bimix: E, C, gamma, B, beta; linear: c_1..k.

Reduced forms: ``n_term=False`` drops the model-size term (A and alpha, or CA, gA and
for ``full`` Calpha, galpha), ``d_term=False`` the token term. Use them when every
record has the same N (or the same D): those terms are then not identifiable. A law
without a term does not need its column: ``N`` (``D``) may then be omitted in every
evaluation, and runs loaded without it (``load_runs(..., N=None)``) can be fitted.

A domain with ``h_i == 0`` contributes nothing to ``S(h)`` for every ``gamma_i >= 0``;
values and parameter derivatives stay finite there.

Default bounds (overridable by name when fitting): E in [0, inf); A, B, C_i, CA_i, CB_i,
Calpha_i, Cbeta_i in [0, inf) and moved in log space by optimisers; alpha, beta in
[0, 2]; gamma_i in [0, 5]; the simple law's gamma in [0, 10]; gA, gB, galpha, gbeta in
[-5, 5]. Random starts are drawn in each parameter's init range (``Law.init_lower``,
``Law.init_upper``); for gA, gB, galpha, gbeta it is [-1, 1.5], both signs: on the
SlimPajama targets most of the best joint-law minima have gA, gB < 0 (with some CA_i,
CB_i near 0), and local solvers rarely cross gA = 0, where the CA_i directions are flat.

Threads: every evaluation takes ``threads=None`` (the OpenMP default, which honours
``OMP_NUM_THREADS``) or a count from 1 to ``mixlaw._core.thread_limit()`` (max(64, 4 x the
CPUs); more, or a larger ``OMP_NUM_THREADS`` with None, raises ValueError); results are
bit-identical for any count. The GIL is released while the core runs, so Python threads may
call these concurrently, and Ctrl-C stops an evaluation of millions of records.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np

from . import _core

__all__ = ["LAW_NAMES", "BASELINE_LAWS", "ALL_LAWS", "Law", "law", "Records", "embed", "NESTED_IN"]

#: Names of the laws of Shukor et al. (2025).
LAW_NAMES = ("chinchilla", "additive", "joint", "simple", "full")

#: Baseline laws of other papers (Data Mixing Laws, BiMix, linear).
BASELINE_LAWS = ("dml_exp", "dml_sum", "bimix", "linear")

#: Every law mixlaw knows.
ALL_LAWS = LAW_NAMES + BASELINE_LAWS

#: Records validated and prepared once (logs, grouping by mixture); pass one in place of
#: ``N`` to skip preparation when the same records are evaluated many times.
Records = _core.Records

ParamsLike = Union[np.ndarray, Mapping[str, float], "list[float]"]


def _broadcast_points(N: Any, D: Any, H: Any, k: int) -> tuple[Any, Any, Any, bool]:
    """``(N, D, H)`` as records: scalar ``N`` and ``D`` and one mixture ``H`` of shape (k,)
    repeated to the length of the arrays among them (one record when there are none); the
    flag says every argument was one point. Prepared records, arrays of mismatched lengths
    and values that are not numbers pass through unchanged, for the core's checks (their
    errors name the argument)."""
    if isinstance(N, _core.Records):
        return N, D, H, False
    one = {"N": N is not None and np.ndim(N) == 0, "D": D is None or np.ndim(D) == 0,
           "H": H is None or (k > 0 and np.ndim(H) == 1)}
    if not (one["N"] or (D is not None and one["D"]) or (H is not None and one["H"])):
        return N, D, H, False  # arrays only
    lengths = {len(v) for v, single in ((N, one["N"]), (D, one["D"]), (H, one["H"])) if not single and np.ndim(v)}
    if len(lengths) > 1:
        return N, D, H, False
    n = lengths.pop() if lengths else 1
    try:
        N2 = np.full(n, N, dtype=float) if one["N"] else N
        D2 = np.full(n, D, dtype=float) if D is not None and one["D"] else D
        H2 = np.broadcast_to(np.asarray(H, dtype=float), (n, len(H))) if H is not None and one["H"] else H
    except (TypeError, ValueError):
        return N, D, H, False
    return N2, D2, H2, n == 1 and all(one.values())


def domain_parameter(name: str, k: int) -> Optional[tuple[str, int]]:
    """``(stem, domain index from 0)`` of a per-domain parameter ``stem_i`` (``1 <= i <= k``),
    e.g. ``("gamma", 2)`` for ``gamma_3``; None for the others (``E``, ``gA``, ...)."""
    stem, _, num = name.rpartition("_")
    if stem and num.isdigit() and 1 <= int(num) <= k:
        return stem, int(num) - 1
    return None


class Law:
    """A scaling law for ``k`` domains.

    Parameters
    ----------
    name : str
        One of :data:`ALL_LAWS`.
    k : int
        Number of domains (0 is allowed, and the default, for ``chinchilla``).
    n_term, d_term : bool, keyword-only
        Keep the model-size / token term (see the module docstring for reduced forms).
    n_scale, d_scale : float, keyword-only
        Units of N and D inside the law (``N' = N / n_scale``).
    target_domain : int, keyword-only
        ``bimix`` only: 0-based index of the target's own domain (required for it).
    repetition : bool or str, keyword-only
        The data-constrained option (laws with a token term): domain i with ``U_i`` unique
        tokens contributes ``D'_i = U_i g(h_i D / U_i)`` effective tokens, ``g(x) = x`` up
        to one epoch and ``1 + R (1 - exp(-(x - 1) / R))`` beyond (Muennighoff et al.
        2023), and the law is evaluated at ``D' = sum_i D'_i`` and ``h'_i = D'_i / D'``;
        exactly the plain law when no domain repeats. ``True`` (or ``"shared"``) adds one
        parameter ``R_D`` (bounds [0.01, 1e4] epochs, starts in [2, 50]),
        ``"per_domain"`` one per domain. Every evaluation then needs ``unique_tokens``.

    Parameters of the law are accepted everywhere either as an array in
    :attr:`param_names` order or as a mapping from name to value.
    """

    __slots__ = ("_core", "param_names", "_index", "lower", "upper", "init_lower", "init_upper",
                 "log_scale")

    def __init__(self, name: str, k: Optional[int] = None, *, n_term: bool = True, d_term: bool = True,
                 n_scale: float = 1e6, d_scale: float = 1e9, target_domain: Optional[int] = None,
                 repetition: Union[bool, str] = False) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name: expected a law name (str), got {type(name).__name__}")
        if name not in ALL_LAWS:
            raise ValueError(f"name: unknown law {name!r}; expected one of {', '.join(ALL_LAWS)}")
        if name == "bimix":
            if target_domain is None:
                raise ValueError("target_domain: the bimix law needs the index of the target's own domain")
            if isinstance(target_domain, bool) or not isinstance(target_domain, (int, np.integer)):
                raise TypeError(f"target_domain: expected an int, got {type(target_domain).__name__}")
        elif target_domain is not None:
            raise ValueError(f"target_domain: only the bimix law has a target domain, not {name}")
        if k is None:
            if name != "chinchilla":
                raise ValueError(f"k: the {name} law needs the number of domains k")
            k = 0
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"k: expected an int, got {type(k).__name__}")
        if name == "chinchilla" and k != 0:
            k = 0  # chinchilla ignores the mixture; accept k for uniform call sites
        kinds = {False: "none", True: "shared", "shared": "shared", "per_domain": "per_domain"}
        if not isinstance(repetition, (bool, np.bool_, str)) or repetition not in kinds:
            raise TypeError(f"repetition: expected False, True (one R_D), 'shared' or 'per_domain' (one R_D per "
                            f"domain), got {repetition!r}")
        core = _core.Law(name, int(k), bool(n_term), bool(d_term), float(n_scale), float(d_scale),
                         -1 if target_domain is None else int(target_domain), kinds[repetition])
        self._init_from_core(core)

    def _init_from_core(self, core: Any) -> None:
        self._core = core
        self.param_names: tuple[str, ...] = tuple(core.param_names)
        self._index = {n: i for i, n in enumerate(self.param_names)}
        lo, hi, ilo, ihi, logs = core.defaults
        for a in (lo, hi, ilo, ihi, logs):
            a.setflags(write=False)
        self.lower, self.upper, self.init_lower, self.init_upper, self.log_scale = lo, hi, ilo, ihi, logs

    # -- description -------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self._core.name)

    @property
    def k(self) -> int:
        return int(self._core.k)

    @property
    def n_term(self) -> bool:
        return bool(self._core.n_term)

    @property
    def d_term(self) -> bool:
        return bool(self._core.d_term)

    @property
    def n_scale(self) -> float:
        return float(self._core.n_scale)

    @property
    def d_scale(self) -> float:
        return float(self._core.d_scale)

    @property
    def target_domain(self) -> Optional[int]:
        """``bimix``: 0-based index of the target's own domain; None for other laws."""
        t = int(self._core.target_domain)
        return None if t < 0 else t

    @property
    def repetition(self) -> Union[bool, str]:
        """The data-constrained option: repeated tokens count less. False without it,
        ``"shared"`` with one parameter ``R_D`` (``repetition=True``), ``"per_domain"`` with
        ``R_D_1 .. R_D_k`` (``R_D[<domain>]``). Evaluation needs each record's unique tokens
        (``unique_tokens=``)."""
        kind = str(self._core.repetition)
        return False if kind == "none" else kind

    @property
    def n_repetition_params(self) -> int:
        """The ``R_D`` parameters at the end of :attr:`param_names` (0 without the option)."""
        return repetition_param_count(self.repetition, self.k)

    @property
    def n_params(self) -> int:
        return int(self._core.n_params)

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Default ``(lower, upper)`` bounds in parameter order."""
        return self.lower, self.upper

    def _key(self) -> tuple:
        return (self.name, self.k, self.n_term, self.d_term, self.n_scale, self.d_scale, self.target_domain,
                self.repetition)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Law) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        has = {"n_term": self.name not in BASELINE_LAWS, "d_term": self.name not in ("dml_exp", "dml_sum", "linear")}
        extra = "".join(f", {t}=False" for t, v in (("n_term", self.n_term), ("d_term", self.d_term))
                        if not v and has[t])
        if self.target_domain is not None:
            extra += f", target_domain={self.target_domain}"
        if self.repetition:
            extra += ", repetition=True" if self.repetition == "shared" else f", repetition={self.repetition!r}"
        scales = "" if (self.n_scale, self.d_scale) == (1e6, 1e9) else \
            f", n_scale={self.n_scale:g}, d_scale={self.d_scale:g}"
        return f"Law({self.name!r}, k={self.k}{extra}{scales})"

    def __reduce__(self) -> tuple:
        return (_rebuild, self._key())

    # -- parameters ----------------------------------------------------------------------
    def params(self, values: ParamsLike, *, arg: str = "params") -> np.ndarray:
        """Parameters as a float64 array in :attr:`param_names` order.

        ``values`` is an array of length :attr:`n_params` or a mapping with exactly the
        law's parameter names.
        """
        if isinstance(values, Mapping):
            unknown = [n for n in values if n not in self._index]
            if unknown:
                raise ValueError(f"{arg}: unknown parameter name(s) {unknown} for {self!r}; "
                                 f"expected {list(self.param_names)}")
            missing = [n for n in self.param_names if n not in values]
            if missing:
                raise ValueError(f"{arg}: missing parameter(s) {missing} for {self!r}")
            out = np.empty(self.n_params)
            for n, v in values.items():
                out[self._index[n]] = v
        else:
            out = np.asarray(values, dtype=float)
            if out.ndim != 1 or out.shape[0] != self.n_params:
                raise ValueError(f"{arg}: expected {self.n_params} values for {self!r}, got shape {out.shape}")
        if not np.all(np.isfinite(out)):
            bad = [self.param_names[i] for i in np.flatnonzero(~np.isfinite(out))]
            raise ValueError(f"{arg}: non-finite value(s) for {bad}")
        return out

    def as_dict(self, params: ParamsLike) -> dict[str, float]:
        """Parameters as a ``{name: value}`` dict."""
        arr = self.params(params)
        return {n: float(v) for n, v in zip(self.param_names, arr)}

    def named_params(self, domains: Sequence[str] = ()) -> tuple[str, ...]:
        """Parameter names with each per-domain parameter named by its domain:
        ``C_2`` -> ``C[book]`` for ``domains[1] == "book"`` (the flat names when
        ``domains`` is empty). Flat names stay the names every function accepts
        (:meth:`flat_name` maps these back)."""
        domains = tuple(domains)
        if not domains:
            return self.param_names
        if len(domains) != self.k:
            raise ValueError(f"domains: {self!r} has {self.k} domains, got {len(domains)} names")
        out = []
        for name in self.param_names:
            per = domain_parameter(name, self.k)
            out.append(name if per is None else f"{per[0]}[{domains[per[1]]}]")
        return tuple(out)

    def flat_name(self, name: str, domains: Sequence[str] = ()) -> str:
        """The flat name of a domain-named parameter (``C[book]`` -> ``C_2`` when ``book``
        is the second of ``domains``); any other name, or glob, unchanged."""
        stem, bracket, rest = name.partition("[")
        if not bracket or not rest.endswith("]") or rest[:-1] not in domains or len(tuple(domains)) != self.k:
            return name
        flat = f"{stem}_{tuple(domains).index(rest[:-1]) + 1}"
        return flat if flat in self._index else name

    def index(self, name: str) -> int:
        """Position of parameter ``name``."""
        try:
            return self._index[name]
        except KeyError:
            raise ValueError(f"name: {self!r} has no parameter {name!r}") from None

    # -- evaluation ----------------------------------------------------------------------
    @staticmethod
    def _positional(H: Any) -> Any:
        """A Law has no domain names: a table with named columns could only be read by
        position, silently wrong when its columns come in another order."""
        if hasattr(H, "columns"):
            raise ValueError("H: a Law has no domain names, so the columns of a table cannot be matched by name; "
                             "use Fit.predict (which matches them to the fit's domains), or pass H.to_numpy() with "
                             "the columns in the law's domain order")
        return H

    def _p(self, params: ParamsLike) -> Any:
        # Arrays go straight to the core, which checks length and finiteness itself:
        # this keeps per-call overhead low for small batches.
        return params if isinstance(params, np.ndarray) else self.params(params)

    def _points(self, N: Any, D: Any, H: Any) -> tuple[Any, Any, Any, bool]:
        """``(N, D, H, single)`` as records (see :func:`_broadcast_points`); a model size or
        token count the law does not use may be omitted (None, filled with 1), one it uses
        may not."""
        if N is None or (D is None and not isinstance(N, _core.Records)):
            for arg, used, v, what, opt in (("N", self.n_term, N, "a model-size term", "n_term"),
                                            ("D", self.d_term, D, "a token term", "d_term")):
                if v is None and used:
                    raise ValueError(f"{arg}: the {self.name} law has {what}, so it needs {arg}; "
                                     f"a law without that term ({opt}=False) does not")
            N = 1.0 if N is None else N
            D = 1.0 if D is None else D
        return _broadcast_points(N, D, self._positional(H), self.k)

    def _data(self, N: Any, D: Any, H: Any, unique_tokens: Any) -> tuple[Any, Any, Any, bool]:
        """:meth:`_points`, then for a data-constrained law prepared records carrying the
        unique tokens (every evaluation of such a law needs them)."""
        if unique_tokens is not None and not self.repetition:
            raise ValueError(f"unique_tokens: {self!r} has no repetition option (repetition=True adds it)")
        N, D, H, single = self._points(N, D, H)
        if not self.repetition or isinstance(N, _core.Records):
            return N, D, H, single
        if unique_tokens is None:
            raise ValueError(f"unique_tokens: {self!r} is data-constrained; it needs the unique tokens of each "
                             "record (and domain)")
        n = int(np.shape(N)[0]) if np.ndim(N) else 1
        return _core.Records(N, D, H, unique_tokens=unique_tokens_array(unique_tokens, n, self.k)), None, None, single

    def records(self, N: Any = None, D: Any = None, H: Any = None, *, unique_tokens: Any = None) -> Records:
        """Validate and prepare records once, for repeated evaluation (``N`` or ``D`` may be
        omitted when the law does not use it; ``unique_tokens`` as in :meth:`predict`)."""
        N, D, H, _ = self._data(N, D, H, unique_tokens)
        rec = N if isinstance(N, _core.Records) else _core.Records(N, D, H)
        if rec.k != self.k:
            raise ValueError(f"H: expected {self.k} columns (domains), got {rec.k}")
        return rec

    def predict(self, params: ParamsLike, N: Any = None, D: Any = None, H: Any = None, *,
                unique_tokens: Any = None, threads: Optional[int] = None) -> np.ndarray:
        """Predicted loss at each record.

        Parameters
        ----------
        params : array (n_params,) or mapping
        N, D : arrays (n,) or scalars
            Raw parameter and token counts (> 0); omit (None) the ones the law does not use
            (:attr:`n_term`, :attr:`d_term`). ``N`` may instead be a prepared
            :class:`Records`, with ``D`` and ``H`` omitted.
        H : array (n, k), or one mixture (k,)
            Domain weights, rows on the simplex (within 1e-6). Omit for chinchilla.
            Scalars and one mixture broadcast against the other arguments.
        unique_tokens : number, array (n,), (k,) or (n, k)
            Data-constrained laws (:attr:`repetition`) only, and required there: the unique
            tokens available to each record (per domain; ``inf``: unlimited). A number or a
            (k,) array applies to every record; (n,) gives one per record when the law has
            at most one domain.

        Returns
        -------
        ndarray (n,), or a float when every argument was one point
        """
        N, D, H, single = self._data(N, D, H, unique_tokens)
        out = _core.predict(self._core, self._p(params), N, D, H, threads)
        return float(out[0]) if single else out

    def value_and_grad(self, params: ParamsLike, w: Any, N: Any = None, D: Any = None, H: Any = None, *,
                       unique_tokens: Any = None, threads: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
        """Predictions and the parameter gradient ``J^T w`` (``J = dL/dparams``, n x n_params);
        points as in :meth:`predict`."""
        N, D, H, _ = self._data(N, D, H, unique_tokens)
        return _core.predict_grad(self._core, self._p(params), w, N, D, H, threads)

    def jacobian(self, params: ParamsLike, N: Any = None, D: Any = None, H: Any = None, *,
                 unique_tokens: Any = None, threads: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
        """Predictions and the Jacobian ``dL_j/dparams`` (n x n_params); points as in
        :meth:`predict`."""
        N, D, H, _ = self._data(N, D, H, unique_tokens)
        return _core.jacobian(self._core, self._p(params), N, D, H, threads)

    def grad_h(self, params: ParamsLike, N: Any = None, D: Any = None, H: Any = None, *,
               unique_tokens: Any = None, threads: Optional[int] = None) -> np.ndarray:
        """``dL_j/dh_ji`` (n x k), each weight treated as an independent variable.

        At ``h_i == 0`` the one-sided derivative is returned, which is ``-inf`` when
        ``0 < gamma_i < 1`` (the law is not differentiable there). Data-constrained laws:
        the weights enter through the effective token count and mixture, which normalise
        them, so the gradient differs from the plain law's by a vector with equal entries
        even where no domain repeats (the same along the simplex).
        """
        N, D, H, _ = self._data(N, D, H, unique_tokens)
        return _core.grad_h(self._core, self._p(params), N, D, H, threads)


def _rebuild(name: str, k: int, n_term: bool, d_term: bool, n_scale: float, d_scale: float,
             target_domain: Optional[int] = None, repetition: Union[bool, str] = False) -> Law:
    return Law(name, k, n_term=n_term, d_term=d_term, n_scale=n_scale, d_scale=d_scale,
               target_domain=target_domain, repetition=repetition)


def repetition_param_count(repetition: Union[bool, str], k: int) -> int:
    """How many ``R_D`` parameters the data-constrained option adds: none without it, one
    shared, or one per domain (one for a law without a mixture), as law.cpp lays them out."""
    if not repetition:
        return 0
    return k if repetition == "per_domain" and k >= 1 else 1


def unique_tokens_array(value: Any, n: int, k: int) -> np.ndarray:
    """Unique tokens as the (n, max(k, 1)) array of the core: a number or a (k,) array for
    every record, (n,) one per record (k <= 1), or (n, k). Values > 0 (inf: unlimited)."""
    cols = max(k, 1)
    try:
        U = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ValueError("unique_tokens: expected numbers") from None
    if U.ndim == 0:
        U = np.full((n, cols), float(U))
    elif U.ndim == 1 and k > 1:
        if U.shape[0] != k:
            raise ValueError(f"unique_tokens: expected {k} values (one per domain) or an ({n}, {k}) array, "
                             f"got shape {U.shape}")
        U = np.tile(U, (n, 1))
    elif U.ndim == 1:
        if U.shape[0] != n:
            raise ValueError(f"unique_tokens: expected {n} values (one per record), got shape {U.shape}")
        U = U[:, None]
    elif U.shape != (n, cols):
        raise ValueError(f"unique_tokens: expected shape ({n}, {cols}), got {U.shape}")
    if np.any(np.isnan(U)) or np.any(U <= 0):
        raise ValueError("unique_tokens: must be > 0 (inf for a domain without limit)")
    return np.ascontiguousarray(U)


def law(name: Union[str, Law], k: Optional[int] = None, **options: Any) -> Law:
    """Return the :class:`Law` ``name`` for ``k`` domains (a Law is returned unchanged)."""
    if isinstance(name, Law):
        return name
    return Law(name, k, **options)


def _bimix_for_target(target: str, domains: Sequence[str], k: int, **options: Any) -> Optional[Law]:
    """The bimix law describing ``target`` through the training domain of the same name
    (None when the target is not one of ``domains``)."""
    domains = list(domains)
    return law("bimix", k, target_domain=domains.index(target), **options) if target in domains else None


def embed(params: ParamsLike, source: Law, target: Law) -> np.ndarray:
    """Map parameters of ``source`` into ``target``, a richer law that contains it.

    The nestings of the paper's laws: ``additive`` is ``joint`` with ``gA = gB = 1``,
    ``CA_i = A`` and ``CB_i = B`` (because ``sum_i h_i = 1``); ``joint`` is ``full`` with
    ``Calpha_i = alpha``, ``galpha = 1``, ``Cbeta_i = beta`` and ``gbeta = 1``. The
    returned parameters give ``target`` the same predictions as ``source`` on the simplex,
    which makes them a start from which a fit of ``target`` can only improve.
    """
    if source.repetition or target.repetition:  # R_D (last) carries over; the rest nests as usual
        if source.repetition != target.repetition:
            raise ValueError(f"target: {target!r} and {source!r} differ in the repetition option")
        x = source.params(params)
        r = source.n_repetition_params

        def plain(law_: Law) -> Law:
            return Law(law_.name, law_.k, n_term=law_.n_term, d_term=law_.d_term, n_scale=law_.n_scale,
                       d_scale=law_.d_scale, target_domain=law_.target_domain)

        return np.append(embed(x[:-r], plain(source), plain(target)), x[-r:])
    src = source.as_dict(params)
    if (source.k, source.n_term, source.d_term, source.n_scale, source.d_scale) != \
            (target.k, target.n_term, target.d_term, target.n_scale, target.d_scale):
        raise ValueError(f"target: {target!r} does not have the same domains, terms and units as {source!r}")
    if source.name == target.name:
        return source.params(src)
    if (source.name, target.name) == ("additive", "full"):
        mid = Law("joint", source.k, n_term=source.n_term, d_term=source.d_term,
                  n_scale=source.n_scale, d_scale=source.d_scale)
        return embed(embed(params, source, mid), mid, target)
    k = source.k
    out = dict(src)
    if (source.name, target.name) == ("additive", "joint"):
        if source.n_term:
            out.update({f"CA_{i}": src["A"] for i in range(1, k + 1)}, gA=1.0)
            del out["A"]
        if source.d_term:
            out.update({f"CB_{i}": src["B"] for i in range(1, k + 1)}, gB=1.0)
            del out["B"]
    elif (source.name, target.name) == ("joint", "full"):
        if source.n_term:
            out.update({f"Calpha_{i}": src["alpha"] for i in range(1, k + 1)}, galpha=1.0)
            del out["alpha"]
        if source.d_term:
            out.update({f"Cbeta_{i}": src["beta"] for i in range(1, k + 1)}, gbeta=1.0)
            del out["beta"]
    else:
        raise ValueError(f"target: {target.name} does not contain {source.name} "
                         "(nestings: additive < joint < full)")
    return target.params(out)


#: The simpler law each law contains (used to start fits from the nested solution).
NESTED_IN = {"joint": "additive", "full": "joint"}
