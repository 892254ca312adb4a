"""Reference train/evaluation protocols on the bundled data."""
from __future__ import annotations

import numpy as np

from .data import Runs, _duplicate_checkpoints

__all__ = [
    "SLIMPAJAMA_TRAIN_MIN_TOKENS",
    "SLIMPAJAMA_EVAL_SIZE",
    "SLIMPAJAMA_EVAL_MIN_TOKENS",
    "slimpajama_paper_split",
    "chinchilla_epoch",
    "chinchilla_peer",
]

#: Training sizes of the paper's Table 1 protocol and the first token count used for each.
SLIMPAJAMA_TRAIN_MIN_TOKENS: dict[float, float] = {
    310e6: 3.9e9,
    680e6: 7e9,
    937e6: 7e9,
    1.235e9: 13e9,
}
#: Evaluation size (extrapolation in N) and its first token count.
SLIMPAJAMA_EVAL_SIZE = 2.718e9
SLIMPAJAMA_EVAL_MIN_TOKENS = 20e9


def slimpajama_paper_split(runs: Runs) -> tuple[Runs, Runs]:
    """Train / evaluation split of Shukor et al.'s Table 1 protocol.

    Train on model sizes 310M (D >= 3.9e9), 680M and 937M (D >= 7e9) and 1.235B
    (D >= 13e9); evaluate on 2.718B with D >= 20e9; 122M is not used. Empty loss cells
    stay NaN here and are dropped per target by :meth:`Runs.target`.

    Parameters
    ----------
    runs : Runs
        The SlimPajama table with duplicated checkpoints removed, i.e.
        ``mixlaw.datasets.slimpajama()`` (giving 1,374 training records on 60 mixtures
        and 36 evaluation records on 4 mixtures).

    Returns
    -------
    (train, eval) : tuple of Runs

    Raises
    ------
    ValueError
        If ``runs`` still holds duplicated checkpoints or lacks one of the sizes.
    """
    if _duplicate_checkpoints(runs).any():
        raise ValueError(
            "runs: contains duplicated last checkpoints; load with dedup=True "
            "(mixlaw.datasets.slimpajama() does)"
        )
    train = runs.where(
        model_size=list(SLIMPAJAMA_TRAIN_MIN_TOKENS), min_tokens=SLIMPAJAMA_TRAIN_MIN_TOKENS
    )
    evaluation = runs.where(model_size=SLIMPAJAMA_EVAL_SIZE, min_tokens=SLIMPAJAMA_EVAL_MIN_TOKENS)
    return train, evaluation


def _drop_highest_losses(runs: Runs, n_drop: int = 5) -> np.ndarray:
    if "loss" not in runs.targets:
        raise ValueError(
            f"runs: needs a target named 'loss' (has {', '.join(runs.target_names) or 'none'})"
        )
    y = runs.targets["loss"]
    if len(runs) < n_drop or np.isnan(y).any():
        raise ValueError(f"runs: needs at least {n_drop} records and no missing 'loss' value")
    # Epoch's rule: keep loss < sorted(loss)[-5] (ties with the 5th largest are dropped too).
    return y < np.sort(y)[-n_drop]


def chinchilla_epoch(runs: Runs) -> Runs:
    """Epoch AI's protocol on the Chinchilla runs: drop the 5 highest losses.

    Keeps the records with ``loss < sorted(loss)[-5]``: 240 of the 245 points of
    ``mixlaw.datasets.chinchilla()``.

    Parameters
    ----------
    runs : Runs
        A table with a target named ``"loss"`` and no missing value.

    Returns
    -------
    Runs
    """
    return runs.select(_drop_highest_losses(runs))


def chinchilla_peer(runs: Runs) -> Runs:
    """The peer library's (apple/ml-scalefit) protocol on the Chinchilla runs.

    The 5 highest losses dropped as in :func:`chinchilla_epoch`, then only compute
    ``C = 6 N D < 1e21`` kept: 217 points of ``mixlaw.datasets.chinchilla()``.

    Parameters
    ----------
    runs : Runs
        A table with a target named ``"loss"`` and no missing value.

    Returns
    -------
    Runs
    """
    keep = _drop_highest_losses(runs) & (6.0 * runs.N * runs.D < 1e21)
    return runs.select(keep)
