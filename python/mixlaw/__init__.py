"""mixlaw: scaling laws for optimal pre-training data mixtures (Shukor et al. 2025), fast."""
from __future__ import annotations

from . import _core, laws
from .laws import Law, law

__version__ = "0.1.0"
__all__ = ["Law", "law", "laws", "__version__"]
