"""The notebook-style tutorial (python/mixlaw/examples/tutorial.py, issue 22) runs from start
to end, as test_readme.py runs the README: from an evaluation log written with string run
names, tokens in billions and weights in percent, to plots of the decision."""
from __future__ import annotations

import os
import runpy

import numpy as np
import pandas as pd
import pytest

import mixlaw
import mixlaw.examples


@pytest.mark.filterwarnings("ignore::mixlaw.ConvergenceWarning")  # few starts, to keep the tutorial short
def test_tutorial_runs_and_reaches_a_decision(capsys):
    path = os.path.join(os.path.dirname(mixlaw.examples.__file__), "tutorial.py")
    ns = runpy.run_path(path, run_name="__main__")
    runs, source = ns["runs"], ns["source"]
    assert runs.target_names == ("c4", "book", "github") and runs.k == 7
    # the percent weights and billions of tokens came back as the bundled table's values
    np.testing.assert_allclose(np.sort(runs.D), np.sort(source["n_tokens"].to_numpy()), rtol=1e-12)
    assert np.allclose(runs.H.sum(axis=1), 1.0)
    assert isinstance(ns["table"], pd.DataFrame) and "C[c4]" in ns["table"].columns
    assert isinstance(ns["comparison"], pd.DataFrame) and set(ns["comparison"]["law"]) == {"additive", "joint"}
    best, interval = ns["best"], ns["interval"]
    assert abs(sum(best.h.values()) - 1) < 1e-12 and best.h["wikipedia"] >= 0.02 - 1e-12
    assert set(interval["losses"]) == {"c4", "book", "github"}
    if ns["plots"] is not None:
        for name in ("c4.png", "mixture.png"):
            assert os.path.getsize(os.path.join(ns["workdir"], name)) > 1000
    assert "tutorial finished" in capsys.readouterr().out
