"""Progress of long calls (``progress=`` of fit, compare and bootstrap): a tqdm bar
(``tqdm.auto``, so a widget in notebooks) or the caller's own callable.

``progress`` is ``"auto"`` (default: a bar that appears only once a call has run for
:data:`AUTO_DELAY` seconds, so short calls print nothing), ``True`` (a bar at once),
``False`` or ``None`` (silent), or a callable ``progress(done, total)``. Reports never
change a result.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Optional, Union

#: Seconds before an ``"auto"`` bar appears.
AUTO_DELAY = 2.0

ProgressLike = Union[bool, str, None, Callable[[int, int], Any]]


def check(progress: Any, arg: str = "progress") -> None:
    """ValueError naming ``arg`` unless ``progress`` is one of the accepted values."""
    if progress is None or isinstance(progress, bool) or progress == "auto" or callable(progress):
        return
    raise ValueError(f"{arg}: expected 'auto', True, False, None or a callable progress(done, total), "
                     f"got {progress!r}")


@contextlib.contextmanager
def reporter(progress: ProgressLike, desc: str, unit: str = "starts") -> Iterator[Optional[Callable[[int, int], None]]]:
    """The ``progress(done, total)`` callable for one call (None when silent); a bar is closed
    when the block ends, also on an exception."""
    check(progress)
    if progress is None or progress is False:
        yield None
        return
    if callable(progress):
        yield progress
        return
    from tqdm.auto import tqdm

    bar: list = []

    def update(done: int, total: int) -> None:
        if not bar:
            bar.append(tqdm(total=total, desc=desc, unit=f" {unit}", delay=AUTO_DELAY if progress == "auto" else 0.0,
                            leave=progress is True))
        b = bar[0]
        b.total = total
        b.update(done - b.n)

    try:
        yield update
    finally:
        if bar:
            bar[0].close()
