"""How many small runs do I need? (README worked example, issue 7)

The paper's SlimPajama protocol (fit on 310M-1.235B, evaluate at 2.718B), keeping only q of
the 60 fitting mixtures (drawn at random, 5 seeds per q), for each mixture law: mean eval
MRE over the 7 domain targets at the largest size against q. The whole study is one call
of ``mixlaw.grid`` (laws x targets x q x seeds).

Run:  python bench/how_many_runs.py [--starts 16] [--plot bench/how_many_runs.png]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import mixlaw
from mixlaw import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--starts", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--laws", default="additive,simple,joint")
    ap.add_argument("--plot", default=None, help="write the figure to this PNG")
    args = ap.parse_args()

    runs = mixlaw.datasets.slimpajama()
    domains = list(runs.domains)
    qs = [8, 12, 16, 24, 32, 48, 60]
    protocols = [evaluate.PaperSplit(n_fit_mixtures=q) for q in qs]
    t0 = time.perf_counter()
    df = mixlaw.grid(runs, args.laws.split(","), protocols, seeds=range(args.seeds), targets=domains,
                     n_starts=args.starts, progress=True)
    seconds = time.perf_counter() - t0
    df["q"] = [int(s.split(":")[1].split()[0]) if ":" in s else 60 for s in df["split"]]
    table = df.groupby(["law", "q"])["eval_mre"].agg(["mean", "std"]).reset_index()
    per_seed = df.groupby(["law", "q", "seed"])["eval_mre"].mean().reset_index()
    summary = per_seed.groupby(["law", "q"])["eval_mre"].agg(["median", "min", "max"]).reset_index()
    print(f"{len(df)} fits in {seconds:.1f} s (one mixlaw.grid call, {args.starts} starts each)")
    print("mean eval MRE (%) at 2.718B over the 7 domain targets; median [min, max] over seeds")
    laws = args.laws.split(",")
    print(f"{'q':>4s} " + " ".join(f"{law:>22s}" for law in laws))
    for q in qs:
        cells = []
        for law in laws:
            r = summary[(summary.law == law) & (summary.q == q)].iloc[0]
            cells.append(f"{r['median']:6.2f} [{r['min']:5.2f}, {r['max']:5.2f}]")
        print(f"{q:4d} " + " ".join(f"{c:>22s}" for c in cells))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
        for law in laws:
            s = summary[summary.law == law]
            ax.plot(s.q, s["median"], marker="o", label=law)
            ax.fill_between(s.q, s["min"], s["max"], alpha=0.15)
        ax.set_xlabel("fitting mixtures q (of 60; sizes 310M-1.235B)")
        ax.set_ylabel("eval MRE at 2.718B (%)\nmean of 7 domain targets")
        ax.set_title("How many small runs do I need? (SlimPajama, median and range over 5 draws)", fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(title="law")
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
