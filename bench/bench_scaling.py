"""How one fit scales with records (1e3 .. 1e6) and domains (k = 3 .. 256) (issue 3).

Synthetic data from a planted additive law: runs at 4 model sizes x 10 checkpoints, with
as many distinct mixtures as needed to reach the record count (records = 40 x mixtures),
0.1% noise. One target, 8 starts, threads=1; wall time of mixlaw.fit (median of 3) and
the per-iteration cost.

Run:  python bench/bench_scaling.py [--quick] [--detail]
"""
from __future__ import annotations

import argparse
import importlib
import time

import numpy as np

import mixlaw


def synthetic(n_records: int, k: int, rng: np.random.Generator) -> "mixlaw.Runs":
    n_mix = max(2 * k + 5, n_records // 40)
    mixes = rng.dirichlet(np.ones(k), n_mix)
    sizes = np.array([1e8, 3e8, 1e9, 3e9])
    N = np.repeat(np.tile(sizes, n_mix), 10)
    D = N * 20 * np.tile(np.linspace(0.1, 1.0, 10), 4 * n_mix)
    H = np.repeat(mixes, 40, axis=0)
    law = mixlaw.law("additive", k)
    truth = {"E": 1.5, "A": 6.0, "B": 2.0, "alpha": 0.35, "beta": 0.3}
    truth.update({f"C_{i}": float(rng.uniform(1, 5)) for i in range(1, k + 1)})
    truth.update({f"gamma_{i}": float(rng.uniform(0.2, 0.8)) for i in range(1, k + 1)})
    y = law.predict(truth, N, D, H) * (1 + 1e-3 * rng.standard_normal(N.size))
    cols = {f"weight_d{i}": H[:, i] for i in range(k)}
    cols.update(model_size=N, n_tokens=D, sim_loss=y)
    return mixlaw.load_runs(cols)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller grid")
    ap.add_argument("--detail", action="store_true", help="also print every start's iterations and status")
    args = ap.parse_args()
    if args.detail:
        _capture_starts()
    rng = np.random.default_rng(0)
    records = [1_000, 10_000, 100_000] if args.quick else [1_000, 10_000, 100_000, 1_000_000]
    domains = [3, 16, 64] if args.quick else [3, 16, 64, 256]
    print("records    k  mixtures  params    fit s   ms per start   best-start iterations")
    for k in (7,):
        for n in records:
            report(synthetic(n, k, rng), k)
    for k in domains:
        report(synthetic(10_000, k, rng), k)


def report(runs, k: int) -> None:
    ts, f = [], None
    for _ in range(3):
        t0 = time.perf_counter()
        f = mixlaw.fit(runs, "additive", n_starts=8, threads=1)["sim"]
        ts.append(time.perf_counter() - t0)
    t = float(np.median(ts))
    print(f"{len(runs):8d} {k:4d} {np.unique(runs.H, axis=0).shape[0]:8d} {f.law.n_params:7d} {t:8.3f} "
          f"{t / 8 * 1e3:14.1f}   {f.nit:10d}")
    if _starts:
        r = _starts["sim"]
        print(f"    per start: iterations {r['nit'].tolist()}, status {r['status'].tolist()}, "
              f"objective / best {np.round(r['fun'] / np.nanmin(r['fun']), 4).tolist()}")


_starts: dict = {}


def _capture_starts() -> None:
    # Per-start results are not part of a Fit; keep the raw result of the last fit.
    fit_module = importlib.import_module("mixlaw.fit")
    assemble = fit_module._assemble_fit

    def keep(law, target, r, *args, **kwargs):
        _starts[target] = r
        return assemble(law, target, r, *args, **kwargs)

    fit_module._assemble_fit = keep


if __name__ == "__main__":
    main()
