"""Appendix-B-style comparison at one fixed (N, D): the additive law's fixed-(N, D) form
against the baselines of other papers (Data Mixing Laws, BiMix, linear).

Shukor et al. (Appendix B) compare mixture laws in the Pile-style setting of Data Mixing
Laws: every run has the same model size and token count, some mixtures are used to fit and
the others to evaluate. Here: the bundled SlimPajama runs at N = 310M parameters and
D = 20B tokens (60 mixtures), 25 mixtures drawn at random to fit, the other 35 to evaluate,
several draws (seeds), one grid call.

    python bench/appendix_b.py [--seeds 10] [--n-starts 32] [--threads N] [--json out.json]

Prints train / test MRE (%) per law and target, mean over seeds.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

import mixlaw
from mixlaw import evaluate

LAWS = {
    "additive (fixed N, D)": {"name": "additive", "n_term": False, "d_term": False},
    "DML exp(sum t h)": "dml_exp",
    "DML sum C exp(t h)": "dml_sum",
    "BiMix C/h_t^gamma": {"name": "bimix", "d_term": False},
    "linear": "linear",
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=float, default=3.1e8, help="model size N of the runs kept")
    ap.add_argument("--tokens", type=float, default=2e10, help="token count D of the checkpoints kept")
    ap.add_argument("--n-fit", type=int, default=25, help="mixtures used to fit")
    ap.add_argument("--seeds", type=int, default=10, help="random draws of the fitting mixtures")
    ap.add_argument("--n-starts", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", help="write the per-cell table here")
    args = ap.parse_args(argv)

    runs = mixlaw.datasets.slimpajama()
    fixed = runs.select(np.isclose(runs.N, args.size, rtol=1e-3) & np.isclose(runs.D, args.tokens, rtol=1e-3))
    n_mix = np.unique(fixed.H, axis=0).shape[0]
    print(f"runs at N={args.size:.3g}, D={args.tokens:.3g}: {len(fixed)} records, {n_mix} mixtures; "
          f"{args.n_fit} to fit, {n_mix - args.n_fit} to evaluate, {args.seeds} seeds, {args.n_starts} starts")
    t0 = time.perf_counter()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bimix has no cell for openhermes (not a training domain)
        table = mixlaw.grid(fixed, LAWS, evaluate.HeldOutMixtures(n_fit=args.n_fit), seeds=range(args.seeds),
                            n_starts=args.n_starts, threads=args.threads)
    wall = time.perf_counter() - t0
    print(f"{len(table)} fits in one grid call: {wall:.2f} s wall\n")

    summary = table.groupby(["target", "law"], sort=False)[["train_mre", "eval_mre"]].mean()
    targets = list(dict.fromkeys(table["target"]))
    laws = list(LAWS)
    width = max(map(len, laws)) + 2
    print("train / test MRE (%), mean over seeds")
    print(f"{'target':<14}" + "".join(f"{lab:>{width + 4}}" for lab in laws))
    for t in targets:
        cells = []
        for lab in laws:
            if (t, lab) in summary.index:
                r = summary.loc[(t, lab)]
                cells.append(f"{r.train_mre:6.3f} / {r.eval_mre:6.3f}")
            else:
                cells.append("-")
        print(f"{t:<14}" + "".join(f"{c:>{width + 4}}" for c in cells))
    means = table.groupby("law", sort=False)[["train_mre", "eval_mre"]].mean()
    print(f"{'mean':<14}" + "".join(f"{means.loc[lab].train_mre:6.3f} / {means.loc[lab].eval_mre:6.3f}".rjust(width + 4)
                                    for lab in laws))
    failed = table[~table["success"]]
    by_law = ", ".join(f"{lab} {n}" for lab, n in failed.groupby("law", sort=False).size().items())
    print(f"\nfits not converged (reported in status): {len(failed)} of {len(table)}" + (f" ({by_law})" if by_law else ""))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(json.loads(table.drop(columns=["params"]).to_json(orient="records")), fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
