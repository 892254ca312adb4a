"""Real training-run data bundled with mixlaw (see ``README.md`` in this folder).

- :func:`slimpajama`: the LLM runs of Shukor et al. (2025) on 7 SlimPajama domains
  (6 model sizes, 61 mixtures, 8 target losses).
- :func:`chinchilla`: the Chinchilla runs of Hoffmann et al. (2022) as digitised by
  Epoch AI (N, D and one loss; no mixture).
- :func:`muennighoff`: the multi-epoch runs of Muennighoff et al. (2023) over limited
  unique tokens (N, D, unique tokens U, one loss), ScaleBench's train/test split.

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

__all__ = ["slimpajama", "chinchilla", "muennighoff", "path"]

_FILES = {
    "slimpajama": "dmsl_llm_slimpajama.csv",
    "chinchilla": "svg_extracted_data.csv",
    "muennighoff_train": "data_constrained_train.csv",
    "muennighoff_test": "data_constrained_test.csv",
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
        ``"slimpajama"``, ``"chinchilla"``, ``"muennighoff_train"``, ``"muennighoff_test"``,
        ``"readme"`` or one of the file names (``"dmsl_llm_slimpajama.csv"``, ...).

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


@functools.lru_cache(maxsize=None)
def _muennighoff(split: str) -> tuple:
    with open(path(f"muennighoff_{split}"), newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    cols = {key: np.array([float(r[key]) for r in rows]) for key in ("params", "tokens", "unique_tokens", "loss")}
    runs = load_runs({"params": cols["params"], "tokens": cols["tokens"], "loss": cols["loss"],
                      "run": np.arange(len(rows))}, weights=None, N="params", D="tokens", targets="loss", run="run")
    U = cols["unique_tokens"]
    U.setflags(write=False)
    return runs, U


def muennighoff(split: str = "train") -> tuple:
    """The data-constrained runs of Muennighoff et al. (2023), as packaged by ScaleBench.

    Models trained for up to thousands of epochs over a limited number of unique tokens.
    ``"train"``: 161 runs (N 7.1M-3.9B, D 1e8-3e11, U 1e8-1.74e11); ``"test"``: 21 runs at
    larger compute (N up to 8.7B, D up to 9e11), the benchmark's extrapolation set. Each
    record is one run's final validation loss (target ``"loss"``).

    Returns
    -------
    (Runs, ndarray)
        The runs (no mixture) and the unique tokens ``U`` of each record, for
        ``mixlaw.fit(runs, law, repetition=True, unique_tokens=U)``; ``D / U`` is the number
        of epochs.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    return _muennighoff(split)
