"""Screening of starts (issue 3, ``mixlaw.fit(screen_iter=...)``): speed against safety.

For each law and seed: all 8 SlimPajama targets (paper training split), 64 random starts
per target drawn by mixlaw's sampler, fitted once to the end (the default) and once with
screening, same starts, threads=1, nesting off. Reports the time ratio, how many starts per
target were solved to the end, and per target whether the screened fit reached the same
best objective (relative 1e-6) or how much higher it ended.

Run:  python bench/bench_screening.py [--laws additive,joint] [--seeds 0-6] [--screen 30]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import mixlaw
from mixlaw.fit import _target_seed, random_starts


def seed_range(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--laws", default="additive,joint")
    ap.add_argument("--seeds", default="0-6", help="additive seeds, e.g. 0-6 (the joint law runs the first two)")
    ap.add_argument("--screen", type=int, default=30)
    ap.add_argument("--ratio", type=float, default=1.5)
    ap.add_argument("--keep", type=int, default=8)
    args = ap.parse_args()

    train, _ = mixlaw.protocols.slimpajama_paper_split(mixlaw.datasets.slimpajama())
    targets = list(train.target_names)
    print(f"screen_iter={args.screen} screen_ratio={args.ratio} screen_keep={args.keep}; 8 targets x 64 starts, "
          "threads=1; '.' = same best objective (1e-6), else how much higher")
    for name in args.laws.split(","):
        law = mixlaw.law(name, train.k)
        seeds = seed_range(args.seeds) if name == "additive" else seed_range(args.seeds)[:2]
        same = total = 0
        ratios = []
        for seed in seeds:
            starts = []
            for t in targets:
                y = train.target(t)[3]
                ilo, ihi = law.init_lower.copy(), law.init_upper.copy()
                ilo[0], ihi[0] = 0.0, float(y.min())
                rng = np.random.default_rng([_target_seed(seed, t), 1])
                starts.append(random_starts(law, 64, rng, law.lower, law.upper, ilo, ihi))
            starts = np.array(starts)
            t0 = time.perf_counter()
            full = mixlaw.fit(train, law, starts=starts, threads=1)
            t_full = time.perf_counter() - t0
            t0 = time.perf_counter()
            scr = mixlaw.fit(train, law, starts=starts, threads=1, screen_iter=args.screen,
                             screen_ratio=args.ratio, screen_keep=args.keep)
            t_scr = time.perf_counter() - t0
            rel = [scr[t].fun / full[t].fun - 1 for t in targets]
            kept = 64 - np.mean([scr[t].spread["n_screened"] for t in targets])
            marks = " ".join("." if r <= 1e-6 else f"{r:+.1e}" for r in rel)
            same += sum(r <= 1e-6 for r in rel)
            total += len(rel)
            ratios.append(t_full / t_scr)
            print(f"{name:8s} seed {seed}: full {t_full:6.2f} s, screened {t_scr:6.2f} s ({t_full / t_scr:4.2f}x), "
                  f"{kept:4.1f} of 64 starts run to the end | {marks}", flush=True)
        print(f"{name:8s}: same best objective on {same} of {total} (target, seed) pairs; speed-up median "
              f"{np.median(ratios):.2f}x (min {min(ratios):.2f}x, max {max(ratios):.2f}x)\n", flush=True)


if __name__ == "__main__":
    main()
