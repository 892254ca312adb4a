"""Goodness-of-fit metrics comparing observed and predicted losses.

Every function takes ``(y_true, y_pred)`` in that order, as scikit-learn's metrics do
(``sklearn.metrics.r2_score(y_true, y_pred)``): the relative error and R^2 are not
symmetric, so the order matters. Pass them by keyword when in doubt.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["mre", "r2", "mae", "rmse", "metrics"]


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(y_pred, y_true)`` as validated float arrays."""
    arrays = []
    for name, v in (("y_pred", y_pred), ("y_true", y_true)):
        try:
            a = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: cannot convert to a float64 array ({exc})") from None
        if a.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D array, got shape {a.shape}")
        if a.size == 0:
            raise ValueError(f"{name}: is empty")
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            raise ValueError(f"{name}: element {bad[0]} is {a[bad[0]]!r}, expected finite")
        arrays.append(a)
    p, t = arrays
    if p.shape != t.shape:
        raise ValueError(f"y_pred: shape {p.shape} does not match y_true shape {t.shape}")
    return p, t


def mre(y_true: Any, y_pred: Any) -> float:
    """Mean relative error in percent: ``100 * mean(|y_pred - y_true| / |y_true|)``.

    Parameters
    ----------
    y_true, y_pred : array_like, shape (n,)
        Observed values (finite, nonzero) and predictions (finite).

    Returns
    -------
    float
    """
    p, t = _pair(y_true, y_pred)
    if np.any(t == 0):
        raise ValueError(f"y_true: element {np.flatnonzero(t == 0)[0]} is 0; relative error undefined")
    return float(100.0 * np.mean(np.abs(p - t) / np.abs(t)))


def mae(y_true: Any, y_pred: Any) -> float:
    """Mean absolute error ``mean(|y_pred - y_true|)``."""
    p, t = _pair(y_true, y_pred)
    return float(np.mean(np.abs(p - t)))


def rmse(y_true: Any, y_pred: Any) -> float:
    """Root mean squared error ``sqrt(mean((y_pred - y_true)**2))``."""
    p, t = _pair(y_true, y_pred)
    with np.errstate(over="ignore"):  # errors beyond 1e154 are inf, as they should read
        return float(np.sqrt(np.mean((p - t) ** 2)))


def r2(y_true: Any, y_pred: Any) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot`` (``SS_tot`` about the mean of
    ``y_true``), as ``sklearn.metrics.r2_score(y_true, y_pred)``.

    Returns NaN when ``y_true`` is constant (``SS_tot = 0``), where R^2 is undefined.
    """
    p, t = _pair(y_true, y_pred)
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    if ss_tot == 0.0:
        return float("nan")
    with np.errstate(over="ignore"):  # see rmse: -inf for predictions beyond 1e154
        return float(1.0 - np.sum((p - t) ** 2) / ss_tot)


def metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """All metrics at once.

    Returns
    -------
    dict
        ``{"mre": percent, "r2": ..., "mae": ..., "rmse": ..., "n": number of points}``
        (``n`` is an int).
    """
    p, t = _pair(y_true, y_pred)
    return {"mre": mre(t, p), "r2": r2(t, p), "mae": mae(t, p), "rmse": rmse(t, p), "n": int(p.size)}
