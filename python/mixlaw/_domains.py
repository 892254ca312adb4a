"""Domain identity: mixture weights are matched by domain name, never by position alone.

Every fit, runs table and mixture result carries its domain names. Operations that
combine two of them call :func:`domain_order` to reorder one to the other when the names
are the same set, and raise a ``ValueError`` naming both lists when they differ. Bare
arrays (no names) keep their positional meaning.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np


def domain_order(have: Sequence[str], want: Sequence[str], *, have_arg: str, want_arg: str) -> Optional[np.ndarray]:
    """Indices ``idx`` such that ``have[idx] == want``: the columns of a table whose
    domains are ``have``, taken in ``want``'s order. ``None`` when no reordering is needed
    (same order, or one side carries no names: positional, the lengths must agree).

    Raises a ValueError naming both arguments and both lists when the names differ."""
    have, want = tuple(have), tuple(want)
    if have == want:
        return None
    if not have or not want:
        return None
    if len(have) != len(want) or set(have) != set(want):
        missing = [d for d in want if d not in have]
        extra = [d for d in have if d not in want]
        detail = "; ".join(part for part in (f"{have_arg} lacks {missing}" if missing else "",
                                             f"{want_arg} lacks {extra}" if extra else "") if part)
        raise ValueError(f"{have_arg}, {want_arg}: the domains differ: {have_arg} has {list(have)}, "
                         f"{want_arg} has {list(want)}" + (f" ({detail})" if detail else ""))
    pos = {d: i for i, d in enumerate(have)}
    return np.array([pos[d] for d in want], dtype=np.intp)


def labels_as_mapping(value: Any) -> Any:
    """A pandas Series as the mapping of its labels, so that it is matched by name and not by
    position (its index may be in another order than the domains or targets); anything else
    unchanged."""
    if hasattr(value, "index") and hasattr(value, "items") and hasattr(value, "dtype") \
            and not hasattr(value, "columns"):
        return {str(k): v for k, v in value.items()}
    return value


def columns_by_name(H: Any, want: Sequence[str], *, arg: str, want_arg: str) -> Any:
    """``H`` with its columns in ``want``'s order when ``H`` is a table with column names
    (a pandas DataFrame, or a mapping domain -> column; a mapping domain -> number is one
    mixture, returned as a 1-D array); a bare array is returned as it is (positional).
    Unknown or missing columns are a ValueError naming ``arg``."""
    H = labels_as_mapping(H)  # one mixture as a Series: by its labels
    one = isinstance(H, dict) and bool(H) and all(np.ndim(v) == 0 for v in H.values())
    if hasattr(H, "columns") and hasattr(H, "to_numpy"):
        names = [str(c) for c in H.columns]
        values = H.to_numpy(dtype=float)
    elif isinstance(H, dict):
        names = [str(c) for c in H]
        try:
            values = np.column_stack([np.asarray(v, dtype=float) for v in H.values()]) if H else np.zeros((0, 0))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{arg}: columns must be numeric arrays of one length ({exc})") from None
    else:
        return H
    if len(set(names)) != len(names):
        raise ValueError(f"{arg}: duplicate column names {names}")
    if want:
        idx = domain_order(names, want, have_arg=arg, want_arg=want_arg)
        values = values if idx is None else np.ascontiguousarray(values[:, idx])
    # else: the other side has no names: positional
    return values[0] if one else values
