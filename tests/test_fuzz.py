"""Property / fuzz tests of the public API (reliability issue): load_runs, law predictions
and gradients, fit, optimize_mixture and the command line, on random shapes, dtypes
(int, float32, object, lists), layouts (non-contiguous, Fortran, negative strides),
NaN/inf, empty inputs, zero or negative N and D, weights off the simplex, unknown law /
target / parameter names and bounds with lower > upper.

Every case must either succeed with a correct result (predictions equal to the NumPy
oracle, finite fits, feasible mixtures) or raise ValueError / TypeError whose message
names the offending argument. ``CASES`` counts the cases run; the count is printed in the
terminal summary (see conftest.py).
"""
from __future__ import annotations

import collections
import contextlib
import io
import math
import os
import re
import tempfile
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mixlaw
from mixlaw import cli
from mixlaw.fit import Fit
from numpy_oracle import oracle_predict

CASES: collections.Counter = collections.Counter()  # cases run, by test (read by conftest.py)
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def count(test: str, outcome: str) -> None:
    CASES[test] += 1
    CASES[f"{test}:{outcome}"] += 1


def expect_error(exc: BaseException, args: tuple) -> None:
    """The error is a ValueError/TypeError whose message names one of ``args``."""
    assert isinstance(exc, (ValueError, TypeError)), f"{type(exc).__name__}: {exc}"
    msg = str(exc)
    assert any(re.search(rf"(^|[^A-Za-z_]){re.escape(a)}([^A-Za-z_]|$)", msg) for a in args), \
        f"message does not name {args}: {msg!r}"


def call(fn, *a, **kw):
    """(result, None) or (None, exception) for ValueError/TypeError; anything else propagates."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixlaw.IdentifiabilityWarning)
        try:
            return fn(*a, **kw), None
        except (ValueError, TypeError) as exc:
            return None, exc


# -- array variants -------------------------------------------------------------------------
LAYOUTS_1D = ("f64", "f32", "int", "object", "list", "strided", "reversed", "readonly")
LAYOUTS_2D = ("f64", "f32", "object", "list", "strided", "fortran", "readonly", "columns")


def as_layout(a: np.ndarray, kind: str):
    """``a`` in another dtype or memory layout (values as close as the dtype allows)."""
    if kind == "f64":
        return a
    if kind == "f32":
        return a.astype(np.float32)
    if kind == "int":
        return np.round(a).astype(np.int64)
    if kind == "object":
        return a.astype(object)
    if kind == "list":
        return a.tolist()
    if kind == "strided":
        big = np.zeros((2 * a.shape[0],) + a.shape[1:])
        big[::2] = a
        return big[::2]
    if kind == "reversed":
        return a[::-1].copy()[::-1]
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "readonly":
        b = a.copy()
        b.setflags(write=False)
        return b
    if kind == "columns":  # every other column of a wider array
        big = np.zeros((a.shape[0], 2 * a.shape[1]))
        big[:, ::2] = a
        return big[:, ::2]
    raise AssertionError(kind)


def float_values(a) -> np.ndarray:
    return np.asarray(np.asarray(a, dtype=object).tolist() if isinstance(a, list) else a, dtype=float)


def mixtures(rng: np.random.Generator, n: int, k: int, one_hot: bool = False) -> np.ndarray:
    if one_hot:
        return np.eye(k)[rng.integers(0, k, n)]
    H = rng.dirichlet(np.ones(k), n)
    if k > 1:
        mask = rng.random((n, k)) < 0.2
        mask[:, 0] = False
        H[mask] = 0.0
        H /= H.sum(axis=1, keepdims=True)
    return H


# -- load_runs --------------------------------------------------------------------------------
LOAD_BREAKS = ("none", "none", "none", "target_nan", "N_bad", "D_bad", "H_nan", "H_neg", "H_off_simplex",
               "target_inf", "length", "N_2d", "N_text", "unknown_N", "unknown_D", "unknown_weights",
               "unknown_targets", "empty")
LOAD_ARG = {"N_bad": ("N",), "D_bad": ("D",), "H_nan": ("weights",), "H_neg": ("weights",),
            "H_off_simplex": ("weights",), "target_inf": ("targets",), "length": ("D", "weights", "targets"),
            "N_2d": ("N",), "N_text": ("N",), "unknown_N": ("N",), "unknown_D": ("D",),
            "unknown_weights": ("weights",), "unknown_targets": ("targets",)}


@settings(FUZZ, max_examples=1000)
@given(n=st.integers(0, 12), k=st.integers(0, 5), seed=st.integers(0, 2**32 - 1),
       layouts=st.lists(st.sampled_from(LAYOUTS_1D), min_size=4, max_size=4),
       brk=st.sampled_from(LOAD_BREAKS), renorm=st.booleans())
def test_fuzz_load_runs(n, k, seed, layouts, brk, renorm):
    rng = np.random.default_rng(seed)
    N = np.round(10 ** rng.uniform(5, 12, n))
    D = np.round(10 ** rng.uniform(6, 14, n))
    H = mixtures(rng, n, k, one_hot=layouts[2] == "int") if k else np.zeros((n, 0))
    y = rng.uniform(0.5, 8.0, n)
    src = {"model_size": as_layout(N, layouts[0]), "n_tokens": as_layout(D, layouts[1]),
           "val_loss": as_layout(y, layouts[3] if layouts[3] != "int" else "f64")}
    for i in range(k):
        src[f"weight_d{i}"] = as_layout(np.ascontiguousarray(H[:, i]), layouts[2])
    kw = dict(weights="weight_*" if k else None, targets="*_loss", renormalize=renorm)
    row = int(rng.integers(0, max(n, 1)))
    if brk in ("N_bad", "D_bad", "H_nan", "H_neg", "H_off_simplex", "target_inf", "target_nan", "N_text") and \
            (n == 0 or (brk.startswith("H") and k == 0)):
        brk = "none"
    if brk == "H_off_simplex" and renorm:
        brk = "none"  # renormalize=True puts rows back on the simplex
    if brk in ("N_bad", "D_bad"):
        col = "model_size" if brk == "N_bad" else "n_tokens"
        v = np.asarray(float_values(src[col]), dtype=float).copy()
        v[row] = rng.choice([np.nan, np.inf, -np.inf, 0.0, -1e9])
        src[col] = v
    elif brk.startswith("H_"):
        Hb = H.copy()
        if brk == "H_nan":
            Hb[row, 0] = np.nan
        elif brk == "H_neg":
            Hb[row, 0] = -0.5
        else:
            Hb[row] *= 1.5
        for i in range(k):
            src[f"weight_d{i}"] = Hb[:, i].copy()
    elif brk in ("target_nan", "target_inf"):
        v = y.copy()
        v[row] = np.nan if brk == "target_nan" else np.inf
        src["val_loss"] = v
    elif brk == "length":
        src["n_tokens"] = np.append(D, 1e9)
    elif brk == "N_2d":
        src["model_size"] = np.stack([N, N], axis=1)
    elif brk == "N_text":
        v = N.astype(object)
        v[row] = "12 params"
        src["model_size"] = v
    elif brk == "unknown_N":
        kw["N"] = "params"
    elif brk == "unknown_D":
        kw["D"] = "tokens"
    elif brk == "unknown_weights":
        kw["weights"] = "w_*" if rng.random() < 0.5 else ["weight_zzz"]
    elif brk == "unknown_targets":
        kw["targets"] = ["nope_loss"]
    elif brk == "empty":
        src, kw = {}, {}
    runs, exc = call(mixlaw.load_runs, src, **kw)
    if brk in ("none", "target_nan"):
        assert exc is None, f"{type(exc).__name__}: {exc}"
        assert len(runs) == n and runs.k == k
        np.testing.assert_array_equal(runs.N, float_values(src["model_size"]))
        np.testing.assert_array_equal(runs.D, float_values(src["n_tokens"]))
        Hin = np.column_stack([float_values(src[f"weight_d{i}"]) for i in range(k)]) if k else np.zeros((n, 0))
        if renorm and k:
            Hin = Hin / Hin.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(runs.H, Hin, rtol=1e-15, atol=0)
        np.testing.assert_array_equal(runs.targets["val"], float_values(src["val_loss"]))
        assert runs.H.flags.c_contiguous and not runs.N.flags.writeable
        count("load_runs", "ok")
    else:
        assert exc is not None, f"{brk}: no error"
        expect_error(exc, LOAD_ARG.get(brk, ("N", "source")))
        count("load_runs", "error")


# -- laws: predict, value_and_grad, jacobian ----------------------------------------------
FORMS = [(name, n, d) for name in mixlaw.LAW_NAMES for n, d in ((True, True), (False, True), (True, False))]
PRED_BREAKS = ("none",) * 4 + ("N_bad", "D_bad", "H_nan", "H_neg", "H_off_simplex", "H_cols", "H_1d", "D_len",
                               "N_2d", "N_text", "params_nan", "params_len", "params_unknown", "params_missing",
                               "law_name", "law_k", "threads")
PRED_ARG = {"N_bad": ("N",), "D_bad": ("D",), "H_nan": ("H",), "H_neg": ("H",), "H_off_simplex": ("H",),
            "H_cols": ("H",), "H_1d": ("H",), "D_len": ("D", "N"), "N_2d": ("N",), "N_text": ("N",),
            "params_nan": ("params",), "params_len": ("params",), "params_unknown": ("params",),
            "params_missing": ("params",), "law_name": ("name",), "law_k": ("k",), "threads": ("threads",)}


@settings(FUZZ, max_examples=1000)
@given(form=st.sampled_from(FORMS), k=st.sampled_from([1, 2, 3, 5, 8, 33]), n=st.integers(0, 40),
       seed=st.integers(0, 2**32 - 1), layouts=st.lists(st.sampled_from(LAYOUTS_1D), min_size=2, max_size=2),
       hlayout=st.sampled_from(LAYOUTS_2D), brk=st.sampled_from(PRED_BREAKS), by_name=st.booleans(),
       threads=st.sampled_from([None, 1, 2]))
def test_fuzz_law_predict_and_gradients(form, k, n, seed, layouts, hlayout, brk, by_name, threads):
    name, n_term, d_term = form
    rng = np.random.default_rng(seed)
    law_k = None if name == "chinchilla" else k
    if brk == "law_name":
        _, exc = call(mixlaw.law, rng.choice(["quadratic", "Additive", "", "joint "]), law_k)
        expect_error(exc, PRED_ARG[brk])
        return count("law", "error")
    if brk == "law_k" and name != "chinchilla":
        _, exc = call(mixlaw.law, name, rng.choice([0, -3, 2.5, True, "7"]))
        expect_error(exc, PRED_ARG[brk])
        return count("law", "error")
    law = mixlaw.law(name, law_k, n_term=n_term, d_term=d_term)
    lo, hi = law.init_lower, law.init_upper
    p = lo + rng.random(law.n_params) * (hi - lo)
    N = 10 ** rng.uniform(5, 13, n)
    D = 10 ** rng.uniform(6, 15, n)
    H = mixtures(rng, n, law.k) if law.k else None
    row = int(rng.integers(0, max(n, 1)))
    if n == 0 and brk in ("N_bad", "D_bad", "H_nan", "H_neg", "H_off_simplex", "N_text"):
        brk = "none"
    if law.k == 0 and brk.startswith("H"):
        brk = "none"
    if law.k == 1 and brk == "H_cols":
        brk = "none"
    if brk == "law_k":
        brk = "none"
    params = law.as_dict(p) if by_name else p
    if n == 0 and hlayout == "list":
        hlayout = "f64"  # [] has no column count: a 1-D input, refused as such
    Nin, Din, Hin = as_layout(N, layouts[0]), as_layout(D, layouts[1]), None if H is None else as_layout(H, hlayout)
    if brk == "N_bad":
        Nin = N.copy()
        Nin[row] = rng.choice([np.nan, np.inf, 0.0, -1.0])
    elif brk == "D_bad":
        Din = D.copy()
        Din[row] = rng.choice([np.nan, -np.inf, 0.0, -5e9])
    elif brk in ("H_nan", "H_neg", "H_off_simplex"):
        Hin = H.copy()
        if brk == "H_nan":
            Hin[row, 0] = np.nan
        elif brk == "H_neg":
            Hin[row, 0] = -0.25
        else:
            Hin[row] *= 1.01
    elif brk == "H_cols":
        Hin = H[:, :-1]
    elif brk == "H_1d":
        Hin = H[:, 0] if law.k > 1 else H.ravel()[:max(n - 1, 0)]
        if law.k == 1 and n == 1:
            Hin = np.zeros(0)
    elif brk == "D_len":
        Din = np.append(D, 1e9)
    elif brk == "N_2d":
        Nin = np.stack([N, N])
    elif brk == "N_text":
        Nin = N.astype(object)
        Nin[row] = "1B"
    elif brk == "params_nan":
        q = p.copy()
        q[int(rng.integers(0, q.size))] = rng.choice([np.nan, np.inf])
        params = q
    elif brk == "params_len":
        params = np.append(p, 1.0) if rng.random() < 0.5 else p[:-1]
    elif brk == "params_unknown":
        params = dict(law.as_dict(p), zeta=1.0)
    elif brk == "params_missing":
        d = law.as_dict(p)
        d.pop(law.param_names[-1])
        params = d
    thr = threads if brk != "threads" else int(rng.choice([0, -1]))
    pred, exc = call(law.predict, params, Nin, Din, Hin, threads=thr)
    if brk != "none":
        assert exc is not None, f"{brk}: no error"
        expect_error(exc, PRED_ARG[brk])
        return count("predict", "error")
    assert exc is None, f"{type(exc).__name__}: {exc}"
    Nf, Df = float_values(Nin), float_values(Din)
    Hf = None if Hin is None else float_values(Hin)
    want = oracle_predict(law, p, Nf, Df, Hf)
    assert pred.shape == (n,) and pred.dtype == np.float64
    np.testing.assert_allclose(pred, want, rtol=1e-10, atol=0)
    # Gradients: J^T w from value_and_grad equals the Jacobian's, all finite.
    w = rng.normal(size=n)
    val, g = law.value_and_grad(params, w, Nin, Din, Hin, threads=threads)
    val2, J = law.jacobian(params, Nin, Din, Hin, threads=threads)
    np.testing.assert_array_equal(val, pred)
    np.testing.assert_array_equal(val2, pred)
    assert J.shape == (n, law.n_params) and np.all(np.isfinite(J)) and np.all(np.isfinite(g))
    assert np.all(np.abs(g - J.T @ w) <= 1e-9 * (np.abs(J).T @ np.abs(w)) + 1e-300)
    count("predict", "ok")


# -- fit ----------------------------------------------------------------------------------
def planted_runs(rng: np.random.Generator, law_name: str, k: int, n_sizes: int = 3, n_tokens: int = 4,
                 n_mix: int = 4, noise: float = 1e-3):
    law = mixlaw.law(law_name, k if law_name != "chinchilla" else None)
    lo, hi = law.init_lower, law.init_upper
    p = lo + rng.random(law.n_params) * (hi - lo)
    sizes = np.geomspace(2e7, 1e9, n_sizes)
    tokens = np.geomspace(1e9, 2e10, n_tokens)
    Hm = rng.dirichlet(np.ones(k), n_mix) if k else np.zeros((n_mix, 0))
    N, D, H = [], [], []
    for s in sizes:
        for h in Hm:
            for t in tokens:
                N.append(s), D.append(t), H.append(h)
    N, D, H = np.array(N), np.array(D), np.array(H).reshape(len(N), k)
    y = law.predict(p, N, D, H if law.k else None) * (1 + noise * rng.normal(size=N.size))
    cols = {"model_size": N, "n_tokens": D, "a_loss": y, "b_loss": y * 1.1}
    cols.update({f"weight_d{i}": H[:, i] for i in range(k)})
    return mixlaw.load_runs(cols, weights=[f"weight_d{i}" for i in range(k)] if k else None)


FIT_BREAKS = ("none",) * 5 + ("law", "targets", "bounds_lohi", "bounds_unknown", "bounds_nan", "bounds_type",
                              "n_starts_zero", "n_starts_text", "init", "n_starts_float", "n_starts_bool", "seed",
                              "weights_shape", "weights_neg", "weights_text", "loss", "residual", "method", "delta", "starts_shape",
                              "starts_nan", "threads", "runs", "max_iter", "screen_iter", "screen_ratio",
                              "screen_keep")
FIT_ARG = {"law": ("name", "law"), "targets": ("targets",), "bounds_lohi": ("bounds",), "bounds_unknown": ("bounds",),
           "bounds_nan": ("bounds",), "bounds_type": ("bounds",), "n_starts_zero": ("n_starts",),
           "n_starts_float": ("n_starts",), "n_starts_bool": ("n_starts",), "seed": ("seed",),
           "weights_shape": ("weights",), "weights_neg": ("weights",), "weights_text": ("weights",),
           "loss": ("loss",), "residual": ("residual",), "method": ("method",), "delta": ("delta",),
           "starts_shape": ("starts",), "starts_nan": ("starts",), "threads": ("threads",), "runs": ("runs",),
           "max_iter": ("max_iter",), "screen_iter": ("screen_iter",), "screen_ratio": ("screen_ratio",),
           "screen_keep": ("screen_keep",), "n_starts_text": ("n_starts",), "init": ("init",)}


@settings(FUZZ, max_examples=500)
@given(law_name=st.sampled_from(["chinchilla", "additive", "simple", "joint"]), k=st.integers(1, 3),
       seed=st.integers(0, 2**32 - 1), brk=st.sampled_from(FIT_BREAKS),
       loss=st.sampled_from(["huber", "mse"]), residual=st.sampled_from(["raw", "log"]),
       method=st.sampled_from(["lm", "lm", "lbfgsb"]), threads=st.sampled_from([None, 1, 2]),
       targets=st.sampled_from([None, "a", ["b", "a"]]), bounds=st.sampled_from([None, {"E": (0.0, 10.0)},
                                                                                 {"alpha": (0.05, 1.0)}]))
def test_fuzz_fit(law_name, k, seed, brk, loss, residual, method, threads, targets, bounds):
    rng = np.random.default_rng(seed)
    kk = 0 if law_name == "chinchilla" else max(k, 2)  # one domain: one mixture (test_degenerate.py)
    n_mix = 1 if kk == 0 else kk + 2
    runs = planted_runs(rng, law_name, kk, n_mix=n_mix)
    n = len(runs)
    # one start, or three screened down to one after 5 iterations (issue-3 screening)
    screened = bool(rng.integers(0, 2))
    n_starts = 3 if screened else 1
    kw = dict(law=law_name, n_starts=n_starts, seed=int(rng.integers(0, 100)), loss=loss, residual=residual,
              method=method, threads=threads, targets=targets, bounds=bounds, max_iter=200, nest=False,
              screen_iter=5 if screened else 0, screen_keep=1, init=str(rng.choice(["auto", "random"])))
    if bounds and "alpha" in bounds and law_name == "joint":
        kw["bounds"] = {"alpha": bounds["alpha"]}
    law = mixlaw.law(law_name, kk if kk else None)
    changes = {
        "law": dict(law=str(rng.choice(["quadratic", "Joint", ""]))),
        "targets": dict(targets=["a", "zzz"]),
        "bounds_lohi": dict(bounds={"E": (2.0, 1.0)}),
        "bounds_unknown": dict(bounds={"zeta*": (0.0, 1.0)}),
        "bounds_nan": dict(bounds={"E": (np.nan, 1.0)}),
        "bounds_type": dict(bounds=[("E", 0, 1)]),
        "n_starts_zero": dict(n_starts=int(rng.choice([0, -2])), init="random"),
        "n_starts_text": dict(n_starts=str(rng.choice(["64", "many", "Auto"]))),
        "init": dict(init=str(rng.choice(["two-stage", "", "Random"]))),
        "n_starts_float": dict(n_starts=2.0),
        "n_starts_bool": dict(n_starts=True),
        "seed": dict(seed=-1),
        "weights_shape": dict(weights=np.ones(n + 1)),
        "weights_neg": dict(weights=np.where(np.arange(n) == 0, float(rng.choice([-1.0, np.nan, np.inf])), 1.0)),
        "weights_text": dict(weights=np.array(["x"] * n, dtype=object)),
        "loss": dict(loss="l1"),
        "residual": dict(residual="exp"),
        "method": dict(method="newton"),
        "delta": dict(delta=float(rng.choice([0.0, -1.0, np.nan, np.inf]))),
        "starts_shape": dict(starts=np.ones((2, law.n_params + 1))),
        "starts_nan": dict(starts=np.full((1, law.n_params), np.nan)),
        "threads": dict(threads=int(rng.choice([0, -4]))),
        "runs": dict(),
        "max_iter": dict(max_iter=0),
        "screen_iter": dict(screen_iter=int(rng.choice([-1, 2**31]))),
        "screen_ratio": dict(screen_ratio=float(rng.choice([0.5, np.nan, np.inf]))),
        "screen_keep": dict(screen_keep=int(rng.choice([0, -3]))),
    }
    kw.update(changes.get(brk, {}))
    data = {"n": 3} if brk == "runs" else runs
    fits, exc = call(mixlaw.fit, data, **kw)
    if brk != "none":
        assert exc is not None, f"{brk}: no error"
        expect_error(exc, FIT_ARG[brk])
        return count("fit", "error")
    assert exc is None, f"{type(exc).__name__}: {exc}"
    want = ["a", "b"] if targets is None else ([targets] if isinstance(targets, str) else targets)
    assert list(fits) == want
    for t, f in fits.items():
        # the two-stage start (init="auto", laws with the additive mixture term) comes first
        n_all = n_starts + int(f.options["two_stage_start"])
        assert not f.options["two_stage_start"] or (kw["init"] == "auto" and law_name in ("additive", "joint"))
        assert f.starts_status.shape == (n_all,) and f.starts_fun.shape == (n_all,)
        assert set(f.starts_status) <= {-5, -4, -3, -1, 0, 1}
        assert f.status in (-5, -4, -1, 0, 1) and isinstance(f.message, str) and f.message
        if f.status >= 0:
            assert np.isfinite(f.fun) and np.all(np.isfinite(f.x))
            pred = f.predict(runs)
            assert np.all(np.isfinite(pred))
            np.testing.assert_allclose(pred, oracle_predict(f.law, f.x, runs.N, runs.D, runs.H if f.law.k else None),
                                       rtol=1e-10)
            lo, hi = f.law.bounds
            assert np.all(f.x >= lo) and np.all(f.x <= hi)
    count("fit", "ok")


# -- optimize_mixture ---------------------------------------------------------------------
def synthetic_fit(law: mixlaw.Law, x: np.ndarray, target: str) -> Fit:
    return Fit(law=law, target=target, x=x, fun=0.0, success=True, status=1, message="", nit=0, nfev=0, njev=0,
               starts_fun=np.zeros(1), starts_status=np.ones(1, dtype=int), n_records=0, train={},
               domains=tuple(f"d{i}" for i in range(law.k)))


MIX_BREAKS = ("none",) * 6 + ("N_bad", "D_bad", "N_empty", "N_shape", "N_text", "weights_unknown", "weights_neg",
                              "weights_zero", "weights_text", "tokens_text", "D_text", "weights_shape", "bounds_lohi", "bounds_unknown", "bounds_sum_lo",
                              "bounds_sum_hi", "bounds_neg", "bounds_nan", "tokens_short", "epochs_bad", "method",
                              "fits_empty", "fits_type", "threads")
MIX_ARG = {"N_bad": ("N", "D"), "D_bad": ("D",), "N_empty": ("N",), "N_shape": ("N", "D"), "N_text": ("N",),
           "weights_unknown": ("weights",), "weights_neg": ("weights",),
           "weights_text": ("weights",), "tokens_text": ("available_tokens",), "D_text": ("D",), "weights_zero": ("weights",),
           "weights_shape": ("weights",), "bounds_lohi": ("bounds",), "bounds_unknown": ("bounds",),
           "bounds_sum_lo": ("bounds",), "bounds_sum_hi": ("bounds",), "bounds_neg": ("bounds",),
           "bounds_nan": ("bounds",), "tokens_short": ("available_tokens",), "epochs_bad": ("max_epochs",),
           "method": ("method",), "fits_empty": ("fits",), "fits_type": ("fits",), "threads": ("threads",)}


@settings(FUZZ, max_examples=600)
@given(law_name=st.sampled_from(["additive", "joint", "simple"]), k=st.integers(1, 6), n_targets=st.integers(1, 3),
       seed=st.integers(0, 2**32 - 1), batched=st.booleans(), brk=st.sampled_from(MIX_BREAKS),
       method=st.sampled_from(["mirror", "projected"]), with_bounds=st.booleans())
def test_fuzz_optimize_mixture(law_name, k, n_targets, seed, batched, brk, method, with_bounds):
    rng = np.random.default_rng(seed)
    law = mixlaw.law(law_name, k)
    lo, hi = law.init_lower, law.init_upper
    fits = [synthetic_fit(law, lo + rng.random(law.n_params) * (hi - lo), f"t{j}") for j in range(n_targets)]
    doms = [f"d{i}" for i in range(k)]
    N = np.geomspace(1e8, 1e11, 3) if batched else float(10 ** rng.uniform(7, 12))
    D = 20 * np.asarray(N) if batched else float(10 ** rng.uniform(8, 13))
    kw = dict(N=N, D=D, method=method, n_starts=2, max_iter=2000)
    blo, bhi = np.zeros(k), np.ones(k)
    if with_bounds:
        c = rng.dirichlet(np.ones(k))
        blo, bhi = c * rng.uniform(0, 1, k), c + (1 - c) * rng.uniform(0, 1, k)
        kw["bounds"] = {d: (float(a), float(b)) for d, a, b in zip(doms, blo, bhi)}
    changes = {
        "N_bad": dict(N=float(rng.choice([0.0, -1e9, np.nan, np.inf]))),
        "D_bad": dict(D=float(rng.choice([0.0, -1.0, np.nan, -np.inf]))),
        "N_empty": dict(N=np.zeros(0), D=np.zeros(0)),
        "N_shape": dict(N=np.ones(3) * 1e9, D=np.ones(2) * 1e10),
        "N_text": dict(N="big"),
        "weights_unknown": dict(weights={"zzz": 1.0}),
        "weights_text": dict(weights=["a"] * n_targets if rng.random() < 0.5 else {"t0": "heavy"}),
        "tokens_text": dict(available_tokens={"d0": "lots"}),
        "D_text": dict(D=[1e9, "x"]),
        "weights_neg": dict(weights={"t0": -1.0}),
        "weights_zero": dict(weights=np.zeros(n_targets)),
        "weights_shape": dict(weights=np.ones(n_targets + 1)),
        "bounds_lohi": dict(bounds={"d0": (0.6, 0.4)}),
        "bounds_unknown": dict(bounds={"zzz": (0.0, 1.0)}),
        "bounds_sum_lo": dict(bounds={d: (0.9, 1.0) for d in doms}),
        "bounds_sum_hi": dict(bounds={d: (0.0, 0.5 / k) for d in doms}),
        "bounds_neg": dict(bounds={"d0": (-0.1, 1.0)}),
        "bounds_nan": dict(bounds={"d0": (np.nan, 1.0)}),
        "tokens_short": dict(available_tokens=np.full(k, 1.0)),
        "epochs_bad": dict(available_tokens=np.full(k, 1e15), max_epochs=float(rng.choice([0.0, -1.0, np.nan]))),
        "method": dict(method="newton"),
        "threads": dict(threads=0),
    }
    if brk == "bounds_sum_lo" and k == 1:
        changes[brk] = dict(bounds={"d0": (0.0, 0.5)})  # max below 1: infeasible too
    kw.update(changes.get(brk, {}))
    target = fits
    if brk == "fits_empty":
        target = []
    elif brk == "fits_type":
        target = 3.0
    res, exc = call(mixlaw.optimize_mixture, target, **kw)
    if brk != "none":
        assert exc is not None, f"{brk}: no error"
        expect_error(exc, MIX_ARG[brk])
        return count("optimize_mixture", "error")
    assert exc is None, f"{type(exc).__name__}: {exc}"
    H = np.atleast_2d(res.h if batched else res.x)
    assert H.shape == ((3, k) if batched else (1, k))
    np.testing.assert_allclose(H.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(H >= blo - 1e-15) and np.all(H <= bhi + 1e-15)
    fun, gap = np.atleast_1d(res.fun), np.atleast_1d(res.gap)
    assert np.all(np.isfinite(fun)) and np.all(np.isfinite(gap)) and np.all(gap >= 0)
    # The objective is the weighted predicted loss at the returned mixture.
    Ns, Ds = np.broadcast_to(N, (H.shape[0],)), np.broadcast_to(D, (H.shape[0],))
    pred = np.mean([oracle_predict(f.law, f.x, Ns, Ds, H) for f in fits], axis=0)
    np.testing.assert_allclose(fun, pred, rtol=1e-10)
    count("optimize_mixture", "ok")


# -- command line ---------------------------------------------------------------------------
_TMP = tempfile.mkdtemp(prefix="mixlaw-fuzz-")


def _cli_files() -> dict:
    rng = np.random.default_rng(0)
    runs = planted_runs(rng, "additive", 2, n_mix=4)
    csv = os.path.join(_TMP, "runs.csv")
    with open(csv, "w") as fh:
        fh.write("weight_a,weight_b,model_size,n_tokens,x_loss\n")
        for j in range(len(runs)):
            fh.write(",".join(repr(float(v)) for v in (runs.H[j, 0], runs.H[j, 1], runs.N[j], runs.D[j],
                                                       runs.targets["a"][j])) + "\n")
    junk = os.path.join(_TMP, "junk.csv")
    with open(junk, "w") as fh:
        fh.write("a,b\n1,x\n")
    fits_json = os.path.join(_TMP, "fits.json")
    r = mixlaw.load_runs(csv)
    mixlaw.fit(r, "additive", n_starts=2).to_json(fits_json)
    return {"csv": csv, "junk": junk, "fits": fits_json, "missing": os.path.join(_TMP, "nope.csv"),
            "out": os.path.join(_TMP, "out.json")}


FILES = _cli_files()
NUMBERS = ["1", "2", "0", "-1", "1.5", "x", "nan", "inf", "3e9", ""]
FIT_OPTS = [["--law", st.sampled_from(["additive", "joint", "chinchilla", "quad"])],
            ["--n-starts", st.sampled_from(["1", "2", "0", "-1", "x"])], ["--seed", st.sampled_from(NUMBERS)],
            ["--loss", st.sampled_from(["huber", "mse", "l1"])], ["--residual", st.sampled_from(["raw", "log", "x"])],
            ["--bound", st.sampled_from(["E=0:5", "E=2:1", "E", "zeta=0:1", "E=a:b", "alpha=0.1:0.9"])],
            ["--target", st.sampled_from(["x", "y", "x,y", ""])], ["--targets", st.sampled_from(["*_loss", "z*"])],
            ["--weights", st.sampled_from(["weight_*", "w_*"])], ["--n-column", st.sampled_from(["model_size", "N"])],
            ["--threads", st.sampled_from(["1", "2", "0", "-3", "x"])], ["--no-n-term"], ["--no-d-term"],
            ["--json"], ["--quiet"], ["--params"], ["--dedup"], ["--renormalize"], ["--out", st.just(FILES["out"])],
            ["--bogus"]]
OPT_OPTS = [["--N", st.sampled_from(NUMBERS)], ["--D", st.sampled_from(NUMBERS)],
            ["--weights", st.sampled_from(["x=1", "x=2,zz=1", "x=a", "x", "=", ""])],
            ["--method", st.sampled_from(["mirror", "projected", "x"])],
            ["--threads", st.sampled_from(["1", "0", "x"])], ["--json"], ["--bogus"]]
LAW_OPTS = [["--k", st.sampled_from(["1", "7", "0", "-2", "x", "600"])], ["--json"], ["--bogus"]]


@st.composite
def argv(draw):
    cmd = draw(st.sampled_from(["fit", "optimize", "laws", "compare", "reproduce", "nope", None]))
    if cmd is None:
        return draw(st.sampled_from([[], ["--version"], ["--help"], ["-x"]]))
    if cmd in ("reproduce", "compare"):
        # Only usage errors: a valid reproduce/compare is a long job (tested in test_cli.py).
        return [cmd, draw(st.sampled_from(["--n-starts", "--seed", "--threads", "--protocol"])),
                draw(st.sampled_from(["x", "1.5", ""]))] if cmd == "reproduce" else \
            [cmd, FILES["csv"], "--protocol", draw(st.sampled_from(["x", "mixtures"])), "--n-fit",
             draw(st.sampled_from(["x", "0", "-1"])), "--n-starts", "1", "--quiet"]
    if cmd == "nope":
        return ["nope"]
    out = [cmd]
    if cmd == "fit":
        out.append(FILES[draw(st.sampled_from(["csv", "csv", "csv", "junk", "missing"]))])
        opts = FIT_OPTS
    elif cmd == "optimize":
        out.append(FILES[draw(st.sampled_from(["fits", "fits", "csv", "missing"]))])
        opts = OPT_OPTS
    else:
        opts = LAW_OPTS
    for opt in draw(st.lists(st.sampled_from(range(len(opts))), max_size=4)):
        spec = opts[opt]
        out.append(spec[0])
        if len(spec) > 1:
            out.append(draw(spec[1]))
    if cmd == "fit" and "--n-starts" not in out:
        out += ["--n-starts", "1"]
    return out


@settings(FUZZ, max_examples=400)
@given(args=argv())
def test_fuzz_cli(args):
    out, err = io.StringIO(), io.StringIO()
    code = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            code = cli.main(args)
        except SystemExit as exc:  # argparse: usage errors (2), --help / --version (0)
            code = exc.code
    stderr = err.getvalue()
    assert "Traceback" not in stderr
    assert code in (0, 1, 2), (args, code, stderr)
    if code == 2:
        assert "usage:" in stderr and "error:" in stderr, (args, stderr)
    elif code == 1:
        first = stderr.strip().splitlines()[-1]
        assert first.startswith(f"mixlaw {args[0]}: error: ") and len(first) > 30, (args, stderr)
        assert "could not convert" not in first, (args, first)  # a bare NumPy/float() message names nothing
    else:
        assert out.getvalue(), args
    count("cli", f"exit{code}")
