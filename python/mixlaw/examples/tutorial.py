# %% [markdown]
# # mixlaw in a notebook: from your own evaluation log to the mixture of your big run
#
# A notebook in percent format (open it in Jupyter with jupytext, or in VS Code; or run it:
# `python -m mixlaw.examples.tutorial`). It starts from the kind of file an evaluation
# pipeline writes — one row per (run, checkpoint, metric), string run names, tokens in
# billions, weights in percent — and goes through fit, compare, bootstrap, decide and plot.
# Here the log is written from the bundled SlimPajama runs, so the tutorial runs anywhere.

# %%
import os
import tempfile
import warnings

import numpy as np
import pandas as pd

import mixlaw
from mixlaw import evaluate

workdir = tempfile.mkdtemp(prefix="mixlaw_tutorial_")
source = mixlaw.datasets.slimpajama().to_pandas()
domains = ["arxiv", "book", "c4", "github", "commoncrawl", "stackexchange", "wikipedia"]
rows = []
for r in source.itertuples(index=False):
    for target in ("c4", "book", "github"):
        rows.append({"run": f"run-{int(r.run):03d}", "params": r.model_size, "tokens_B": r.n_tokens / 1e9,
                     **{f"pct_{d}": 100 * getattr(r, f"weight_{d}") for d in domains},
                     "metric": f"val/{target}", "value": getattr(r, f"{target}_loss")})
log = pd.DataFrame(rows).dropna(subset=["value"])
log_path = os.path.join(workdir, "evals.csv")
log.to_csv(log_path, index=False)
log.head()

# %% [markdown]
# ## 1. Load: name the columns, say the units
# Weights in percent are rescaled with `renormalize=True` (without it, the error says the
# rows look like percentages); tokens in billions with `D_unit=1e9`.

# %%
runs = mixlaw.load_runs(log_path, target_column="metric", loss_column="value", run="run",
                        N="params", D="tokens_B", D_unit=1e9, weights="pct_*", targets="val/*",
                        renormalize=True)
runs  # in a notebook: a summary and the first rows

# %% [markdown]
# ## 2. Fit, and read the parameters by domain

# %%
fits = mixlaw.fit(runs, "additive", n_starts=8, seed=0)
table = fits.to_pandas()          # one row per target: metrics, status, C[arxiv], gamma[arxiv], ...
table[["success", "train_mre", "C[c4]", "gamma[c4]"]]

# %% [markdown]
# ## 3. How well does it extrapolate? Hold out the largest models

# %%
comparison = mixlaw.compare(runs, ["additive", "joint"], evaluate.SizeSplit(), n_starts=8)
comparison[["law", "target", "train_mre", "eval_mre"]]

# %% [markdown]
# ## 4. Decide: the mixture of a 7B model trained on 140B tokens, with its uncertainty

# %%
with warnings.catch_warnings():
    warnings.simplefilter("ignore", mixlaw.ExtrapolationWarning)  # the optimum leaves the runs' weights
    best = mixlaw.optimize_mixture(fits, N=7e9, D=1.4e11, bounds={"wikipedia": (0.02, 0.3)})
    boot = mixlaw.bootstrap(runs, "additive", n_boot=8, n_starts=4, seed=0)
    interval = boot.mixture_interval(N=7e9, D=1.4e11, bounds={"wikipedia": (0.02, 0.3)}, losses=True)
pd.DataFrame({"h*": best.h, "low": {d: interval[d][0] for d in domains},
              "high": {d: interval[d][1] for d in domains}})

# %%
best.binding, interval["losses"]   # which constraint holds a weight, and the loss intervals at h*

# %% [markdown]
# ## 5. Plot (needs matplotlib: `pip install "mixlaw[plot]"`)

# %%
try:
    from mixlaw import plots
except ImportError:  # pragma: no cover - matplotlib missing
    plots = None
if plots is not None:
    split = evaluate.SizeSplit().splits(runs)[0]
    ax = plots.observed_vs_predicted(mixlaw.fit(split[1], "additive", n_starts=8)["c4"], split[1], split[2])
    plots.save(ax, os.path.join(workdir, "c4.png"))
    ax = plots.mixture_bars(best, intervals={d: interval[d] for d in domains})
    plots.save(ax, os.path.join(workdir, "mixture.png"))
print(f"tutorial finished; files in {workdir}")
