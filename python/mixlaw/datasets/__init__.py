"""Real training-run data bundled with mixlaw (see ``README.md`` in this folder).

- :func:`slimpajama`: the LLM runs of Shukor et al. (2025) on 7 SlimPajama domains
  (6 model sizes, 61 mixtures, 8 target losses).
- :func:`chinchilla`: the Chinchilla runs of Hoffmann et al. (2022) as digitised by
  Epoch AI (N, D and one loss; no mixture).

Files are read through :mod:`importlib.resources`, so they work from an installed wheel.
Both loaders cache their result; the returned :class:`~mixlaw.data.Runs` is immutable.
"""
from __future__ import annotations

import atexit
import contextlib
import csv
import functools
from importlib.resources import as_file, files
from pathlib import Path

import numpy as np

from ..data import Runs, load_runs

__all__ = ["slimpajama", "chinchilla", "path"]

_FILES = {
    "slimpajama": "dmsl_llm_slimpajama.csv",
    "chinchilla": "svg_extracted_data.csv",
    "readme": "README.md",
}

# Keeps resources extracted from a zipped install alive until exit.
_extracted = contextlib.ExitStack()
atexit.register(_extracted.close)


def path(name: str) -> Path:
    """Filesystem path of a bundled file.

    Parameters
    ----------
    name : str
        ``"slimpajama"``, ``"chinchilla"``, ``"readme"`` or one of the file names
        (``"dmsl_llm_slimpajama.csv"``, ``"svg_extracted_data.csv"``, ``"README.md"``).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        If ``name`` is not a bundled file.
    """
    fname = _FILES.get(name, name)
    if fname not in _FILES.values():
        known = ", ".join(list(_FILES) + list(_FILES.values()))
        raise ValueError(f"name: unknown bundled file {name!r}; available: {known}")
    res = files(__name__).joinpath(fname)
    if isinstance(res, Path):
        return res
    # Not on the filesystem (e.g. zip import): extract once, keep until exit.
    return Path(_extracted.enter_context(as_file(res)))


@functools.lru_cache(maxsize=None)
def _slimpajama(dedup: bool) -> Runs:
    return load_runs(path("slimpajama"), dedup=dedup)


def slimpajama(*, dedup: bool = True) -> Runs:
    """The SlimPajama LLM runs of Shukor et al. (2025).

    2,452 records (224 runs: 6 model sizes from 122M to 2.718B, 61 mixtures of
    k = 7 domains: arxiv, book, c4, github, commoncrawl, stackexchange, wikipedia),
    each with up to 8 target losses (the 7 domains and ``"openhermes"``). 16 loss
    cells are empty (NaN).

    Parameters
    ----------
    dedup : bool
        Drop the duplicated last checkpoint of every run (SPEC 6.1), leaving 2,228
        records: each run's final model appears twice with identical losses (e.g. at
        19.998e9 and 20.0e9 tokens); the record on the run's checkpoint grid (the
        smaller token count) is kept. See :func:`mixlaw.data.load_runs`.

    Returns
    -------
    Runs
    """
    return _slimpajama(bool(dedup))


@functools.lru_cache(maxsize=None)
def chinchilla() -> Runs:
    """The Chinchilla runs (Hoffmann et al. 2022) digitised by Epoch AI.

    245 records with ``N`` (``Model Size``), ``D = C / (6 N)`` from the training
    FLOPs ``C``, no mixture (``H`` has shape (245, 0)) and one target, ``"loss"``.
    Every record is a separate training run (its final loss), so each gets its own
    run id even when two runs share a model size.

    Returns
    -------
    Runs
    """
    with open(path("chinchilla"), newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    N = np.array([float(r["Model Size"]) for r in rows])
    C = np.array([float(r["Training FLOP"]) for r in rows])
    cols = {
        "model_size": N,
        "n_tokens": C / (6.0 * N),
        "loss": np.array([float(r["loss"]) for r in rows]),
        "run": np.arange(len(rows)),
    }
    return load_runs(cols, weights=None, targets="loss", run="run")
