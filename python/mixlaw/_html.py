"""Notebook reprs (``_repr_html_``): small HTML tables built from the objects' own values,
every text escaped. One helper per shape (a title with key figures, a table), used by the
result classes of every module."""
from __future__ import annotations

import html
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def fmt(v: Any) -> str:
    """A cell: numbers to 6 significant digits, NaN as a dash, text escaped."""
    if isinstance(v, (bool, np.bool_, str)) or v is None:
        return html.escape(str(v))
    if isinstance(v, numbers.Integral):
        return str(int(v))
    try:
        x = float(v)
    except (TypeError, ValueError):
        return html.escape(str(v))
    return "&ndash;" if math.isnan(x) else f"{x:.6g}"


def summary(title: str, items: Iterable[tuple[str, Any]], note: str = "") -> str:
    """A bold title, then ``name: value`` pairs on one line, then an optional note."""
    pairs = ", ".join(f"{html.escape(k)} = {fmt(v)}" for k, v in items)
    out = f"<p><b>{html.escape(title)}</b><br>{pairs}</p>"
    if note:
        out += f"<p style='color:#a33'>{html.escape(note)}</p>"
    return out


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An HTML table of the rows (cells formatted by :func:`fmt`)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
