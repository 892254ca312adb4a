"""Goodness-of-fit metrics comparing predicted and observed losses."""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["mre", "r2", "mae", "rmse", "metrics"]


def _pair(pred: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for name, v in (("pred", pred), ("y", y)):
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
        raise ValueError(f"pred: shape {p.shape} does not match y shape {t.shape}")
    return p, t


def mre(pred: Any, y: Any) -> float:
    """Mean relative error in percent: ``100 * mean(|pred - y| / |y|)``.

    Parameters
    ----------
    pred, y : array_like, shape (n,)
        Predictions and observed values (finite; ``y`` nonzero).

    Returns
    -------
    float
    """
    p, t = _pair(pred, y)
    if np.any(t == 0):
        raise ValueError(f"y: element {np.flatnonzero(t == 0)[0]} is 0; relative error undefined")
    return float(100.0 * np.mean(np.abs(p - t) / np.abs(t)))


def mae(pred: Any, y: Any) -> float:
    """Mean absolute error ``mean(|pred - y|)``."""
    p, t = _pair(pred, y)
    return float(np.mean(np.abs(p - t)))


def rmse(pred: Any, y: Any) -> float:
    """Root mean squared error ``sqrt(mean((pred - y)**2))``."""
    p, t = _pair(pred, y)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def r2(pred: Any, y: Any) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot``.

    Returns NaN when ``y`` is constant (``SS_tot = 0``), where R^2 is undefined.
    """
    p, t = _pair(pred, y)
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    if ss_tot == 0.0:
        return float("nan")
    return float(1.0 - np.sum((p - t) ** 2) / ss_tot)


def metrics(pred: Any, y: Any) -> dict[str, float]:
    """All metrics at once.

    Returns
    -------
    dict
        ``{"mre": percent, "r2": ..., "mae": ..., "rmse": ..., "n": number of points}``
        (``n`` is an int).
    """
    p, t = _pair(pred, y)
    return {"mre": mre(p, t), "r2": r2(p, t), "mae": mae(p, t), "rmse": rmse(p, t), "n": int(p.size)}
