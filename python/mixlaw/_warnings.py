"""Where mixlaw's warnings point: at the user's call, however deep inside mixlaw they arise."""
from __future__ import annotations

import os
import sys


def user_stacklevel() -> int:
    """``stacklevel`` for a ``warnings.warn`` in the caller that points at the first frame
    outside the mixlaw package (the user's call)."""
    pkg = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == pkg:
        frame, level = frame.f_back, level + 1
    return level
