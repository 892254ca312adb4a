"""Pareto fronts: mixlaw.pareto_front against the same computation in NumPy (issue 24).

Workload: the joint law fitted to the 8 SlimPajama targets (k = 7, paper split, as
bench_mixture.py), one budget (N = 7e9, D = 1.4e11); a front of 100 points over two targets
(github, openhermes: weights (1 - w, w), w evenly spaced), and 100 points over all 8 targets
(Dirichlet(1) weight vectors). Every point solved to a Frank-Wolfe gap below 1e-10 from the
uniform mixture (one start), then the non-dominated points flagged. References, from
bench_mixture.py: the same exponentiated-gradient solver vectorised over the 100 problems
(the strongest form a NumPy user writes), and a loop over the points (one problem at a
time), both keeping weights at or above 1e-300 as the C++ does (an optimal weight of ~0
otherwise makes log h and the step NaN); both followed by the same dominance test in
NumPy (all pairs at once).

Run:  python bench/bench_pareto.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
from bench_mixture import joint_params, numpy_mirror_descent, numpy_mirror_descent_one, stack_params

import mixlaw
from mixlaw.pareto import non_dominated


def numpy_losses(params, N, D, H):
    """Each target's loss at the rows of H (the joint law's formula)."""
    lnN, lnD = np.log(N / 1e6), np.log(D / 1e9)
    out = []
    for p in params:
        S = np.exp(p["gamma"] * np.log(H)) @ p["C"]
        out.append(p["E"] + 1 / S + (H @ p["CA"]) ** p["gA"] * np.exp(-p["alpha"] * lnN)
                   + (H @ p["CB"]) ** p["gB"] * np.exp(-p["beta"] * lnD))
    return np.column_stack(out)


def numpy_non_dominated(L):
    """All pairs at once (n^2 T numbers: fine for a front of 100)."""
    tol = 1e-12 * np.abs(L)
    no_worse = np.all(L[None, :, :] <= (L + tol)[:, None, :], axis=2)
    better = np.any(L[None, :, :] < (L - tol)[:, None, :], axis=2)
    return ~np.any(no_worse & better, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    train, _ = mixlaw.protocols.slimpajama_paper_split(mixlaw.datasets.slimpajama())
    fits = mixlaw.fit(train, "joint", n_starts=8, seed=0, progress=False)
    targets = list(fits)
    k = fits[targets[0]].law.k
    params = joint_params(fits, targets, k)
    q = stack_params(params)
    N, D = 7e9, 1.4e11
    n = 100
    w = np.linspace(0.0, 1.0, n)
    two = np.zeros((n, len(targets)))
    two[:, targets.index("github")], two[:, targets.index("openhermes")] = 1 - w, w
    every = np.random.default_rng(0).dirichlet(np.ones(len(targets)), n)
    print(f"joint law, k = {k}, {len(targets)} targets, one budget N = {N:.3g}, D = {D:.3g}; {n} points per front, "
          f"gap_tol 1e-10, one start (uniform); median of {args.repeats}; load {os.getloadavg()[0]:.2f}")
    for name, W, front_targets in (("2 targets", two, ["github", "openhermes"]), ("8 targets", every, targets)):
        cols = [targets.index(t) for t in front_targets]
        tw = W[:, cols]
        times: dict[str, list] = {"mixlaw threads=1": [], "mixlaw threads=2": [], "numpy vectorised": [],
                                  "numpy loop": []}
        Nv, Dv = np.full(n, N), np.full(n, D)
        for _ in range(args.repeats):  # interleaved
            for th in (1, 2):
                t0 = time.process_time() if th == 1 else time.perf_counter()
                front = mixlaw.pareto_front(fits, N=N, D=D, targets=front_targets, target_weights=tw, n_starts=1,
                                            threads=th)
                times[f"mixlaw threads={th}"].append((time.process_time() if th == 1 else time.perf_counter()) - t0)
            t0 = time.process_time()
            Hn, Fn, gapn, nitn, _ = numpy_mirror_descent(params, Nv, Dv, W, k, floor=1e-300)
            effn = numpy_non_dominated(numpy_losses(params, Nv, Dv, Hn)[:, cols])
            times["numpy vectorised"].append(time.process_time() - t0)
            t0 = time.process_time()
            lnN, lnD = np.log(N / 1e6), np.log(D / 1e9)
            loop = [numpy_mirror_descent_one(q, lnN, lnD, W[i], floor=1e-300) for i in range(n)]
            Hl = np.array([r[0] for r in loop])
            numpy_non_dominated(numpy_losses(params, Nv, Dv, Hl)[:, cols])
            times["numpy loop"].append(time.process_time() - t0)
        med = {key: float(np.median(v)) for key, v in times.items()}
        print(f"\n{name}: front of {n} points")
        for key, v in med.items():
            unit = "s wall" if key == "mixlaw threads=2" else "s CPU "
            print(f"  {key:18s} {v * 1e3:9.2f} m{unit}  numpy vectorised / this = {med['numpy vectorised'] / v:7.1f}x  "
                  f"numpy loop / this = {med['numpy loop'] / v:7.1f}x")
        Lm = front.grid.losses
        fm = (W * Lm).sum(axis=1)
        print(f"  certified: mixlaw {int(np.sum(front.grid.status == 1))} of {n}, numpy {int(np.sum(gapn <= 1e-10))} "
              f"of {n}; max |F_mixlaw - F_numpy| / F = {np.max(np.abs(fm - Fn) / Fn):.2e}; "
              f"max |h_mixlaw - h_numpy| = {np.max(np.abs(front.h - Hn)):.2e}")
        print(f"  non-dominated: mixlaw {int(front.efficient.sum())}, numpy {int(effn.sum())}, same flags: "
              f"{bool(np.array_equal(front.efficient, effn))}; mixlaw's flags = non_dominated() of its losses: "
              f"{bool(np.array_equal(front.efficient, non_dominated(front.losses)))}")


if __name__ == "__main__":
    main()
