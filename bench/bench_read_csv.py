"""Reading a runs table from CSV: mixlaw.load_runs against what it is built from.

Times (CPU seconds, min over --repeats, calls interleaved) on a synthetic wide table of
``--records`` records and ``--k`` weight columns (3,000 Dirichlet mixtures x 20 records for
the defaults, written once by pandas):

- ``mixlaw.load_runs(path)``: pandas' C reader plus mixlaw's checks (one csv-module pass
  for duplicated names and short rows, then every column validated);
- ``pandas.read_csv(path)`` alone: the parser without any check;
- the csv module with one ``float()`` per cell: how mixlaw read CSV files before f3d8468.

Run:  python bench/bench_read_csv.py [--records 60000] [--k 256] [--repeats 2]
"""
from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
import warnings

import numpy as np
import pandas as pd

import mixlaw


def csv_module_floats(path: str) -> dict:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        cols: list = [[] for _ in header]
        for row in reader:
            for c, cell in zip(cols, row):
                c.append(cell)
    return {h: np.array([float(x) if x.strip() else np.nan for x in c]) for h, c in zip(header, cols)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=60000)
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    n, k = args.records - args.records % 20, args.k
    rng = np.random.default_rng(0)
    H = rng.dirichlet(np.ones(k), n // 20).repeat(20, axis=0)
    frame = pd.DataFrame({"model_size": np.tile(np.repeat([1e8, 2e8, 4e8, 8e8], 5), n // 20),
                          "n_tokens": np.tile(np.tile([1e9, 2e9, 4e9, 8e9, 1.6e10], 4), n // 20)})
    frame = pd.concat([frame, pd.DataFrame(H, columns=[f"weight_d{i}" for i in range(k)]),
                       pd.DataFrame({"val_loss": 2 + rng.random(n)})], axis=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "runs.csv")
        frame.to_csv(path, index=False)
        print(f"{n} records x {frame.shape[1]} columns, {os.path.getsize(path) / 1e6:.0f} MB; "
              f"load average {os.getloadavg()[0]:.2f}")
        calls = {"mixlaw.load_runs(path)": lambda: mixlaw.load_runs(path),
                 "pandas.read_csv(path) alone": lambda: pd.read_csv(path),
                 "csv module + float() per cell": lambda: csv_module_floats(path)}
        best = dict.fromkeys(calls, np.inf)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(args.repeats):
                for name, call in calls.items():
                    t0 = time.process_time()
                    call()
                    best[name] = min(best[name], time.process_time() - t0)
        for name, t in best.items():
            print(f"  {name:32s} {t:7.2f} s CPU")


if __name__ == "__main__":
    main()
