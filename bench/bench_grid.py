"""Grid search: one batched call vs the same fits one by one vs a Dask LocalCluster (issue 7).

Workload: laws x 8 SlimPajama targets x 10 seeds of the paper's protocol with 30 of the 60
fitting mixtures drawn per seed (PaperSplit(n_fit_mixtures=30, seed=s)), 16 starts per
fit. Three ways, same seeds:
  1. mixlaw.grid(...) here: one job, one parallel C++ call per nesting level;
  2. a Python loop over the cells calling the public single-fit API mixlaw.fit(...) per
     (law, target, seed) (nested laws refit their simpler law, as fit() does by default);
  3. mixlaw.grid(..., executor=distributed.Client(LocalCluster(2 workers x 1 thread))).
Reports wall times (median of --repeats for 1) and whether the three tables are identical.

Run:  python bench/bench_grid.py [--laws additive,simple,joint,full] [--repeats 3]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import mixlaw
from mixlaw import evaluate

COLS = ["law", "target", "seed", "train_mre", "eval_mre", "objective"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--laws", default="additive,simple,joint,full")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--starts", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    runs = mixlaw.datasets.slimpajama()
    laws = args.laws.split(",")
    protocol = evaluate.PaperSplit(n_fit_mixtures=30)
    seeds = list(range(args.seeds))
    targets = list(runs.target_names)
    n_cells = len(laws) * len(targets) * len(seeds)

    times = {}
    for th in (1, 2):
        ts = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            df = mixlaw.grid(runs, laws, protocol, seeds=seeds, n_starts=args.starts, threads=th)
            ts.append(time.perf_counter() - t0)
        times[f"grid, one call, threads={th}"] = float(np.median(ts))
    ref = df

    t0 = time.perf_counter()
    rows = []
    for law in laws:
        for s in seeds:
            (_, fit_runs, eval_runs), = evaluate.PaperSplit(n_fit_mixtures=30, seed=s).splits(runs)
            for t in targets:
                f = mixlaw.fit(fit_runs, law, targets=[t], n_starts=args.starts)[t]
                rows.append({"law": law, "target": t, "seed": s, "train_mre": f.train["mre"],
                             "eval_mre": f.score(eval_runs)["mre"], "objective": f.fun})
    times["one by one, mixlaw.fit per cell (threads=2)"] = time.perf_counter() - t0
    import pandas as pd

    loop = pd.DataFrame(rows)

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.submit(sum, [1]).result()  # workers up before timing
        t0 = time.perf_counter()
        dask_df = mixlaw.grid(runs, laws, protocol, seeds=seeds, n_starts=args.starts, executor=client, threads=1)
        times["Dask LocalCluster, 2 workers x 1 thread"] = time.perf_counter() - t0

    key = ["law", "target", "seed"]
    a = ref[COLS].sort_values(key).reset_index(drop=True)
    b = loop[COLS].sort_values(key).reset_index(drop=True)
    c = dask_df[COLS].sort_values(key).reset_index(drop=True)
    print(f"{n_cells} fits ({len(laws)} laws x {len(targets)} targets x {len(seeds)} seeds), {args.starts} starts each")
    base = times["grid, one call, threads=2"]
    for name, v in times.items():
        print(f"  {name:45s} {v:8.2f} s   {v / base:5.2f}x the grid call (threads=2)")
    print(f"  identical to the grid call: one-by-one {a.equals(b)}, Dask {a.equals(c)}")
    print("  mean train / eval MRE (%) by law:")
    for law, g in ref.groupby("law", sort=False):
        print(f"    {law:10s} {g.train_mre.mean():.3f} / {g.eval_mre.mean():.3f}")


if __name__ == "__main__":
    main()
