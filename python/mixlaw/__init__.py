"""mixlaw: scaling laws for optimal pre-training data mixtures, fast.

Implements Shukor et al., "Scaling Laws for Optimal Data Mixtures" (arXiv 2507.09404):
fit laws L(N, D, h) to a table of small training runs, check how well they extrapolate,
and find the mixture h* to train a large model with. The numerics (laws, exact
gradients, robust multi-start fitting, simplex optimisation) run in a C++ core with
OpenMP; this package loads data, orchestrates, evaluates and reports.

Quick start::

    import mixlaw
    runs = mixlaw.datasets.slimpajama()
    train, test = mixlaw.protocols.slimpajama_paper_split(runs)
    fits = mixlaw.fit(train, law="additive", n_starts=32)
    fits["c4"].score(test)["mre"]
"""
from __future__ import annotations

from . import _core, datasets, design, evaluate, grid_search, laws, metrics, pareto, protocols
from .data import Runs, UnitsWarning, load_runs
from .evaluate import bootstrap, compare
from .fit import ConvergenceWarning, ExtrapolationWarning, Fit, Fits, IdentifiabilityWarning, fit, load_fits
from .grid_search import grid
from .laws import ALL_LAWS, BASELINE_LAWS, LAW_NAMES, Law, law
from .mixture import MixtureGrid, MixtureResult, optimal_allocation, optimize_mixture
from .pareto import ParetoFront, pareto_front

__version__ = "0.1.0"
__all__ = [
    "LAW_NAMES", "BASELINE_LAWS", "ALL_LAWS", "Law", "law", "laws",
    "Runs", "load_runs", "datasets", "protocols", "metrics", "evaluate", "compare", "bootstrap",
    "Fit", "Fits", "fit", "load_fits", "IdentifiabilityWarning", "ConvergenceWarning", "ExtrapolationWarning", "UnitsWarning", "grid",
    "optimize_mixture", "optimal_allocation", "MixtureResult", "MixtureGrid", "pareto", "pareto_front", "ParetoFront",
    "design",
    "__version__",
]
