"""Optimal mixtures when scarce domains repeat (issue 24, item 3).

The additive law fitted to the 8 SlimPajama targets (all runs), the mixture minimising the
average predicted loss at N = 7e9 for token budgets D from 1e11 to 1e13, three ways:
  - plain:      no data limits (today's default);
  - repetition: unique_tokens = SlimPajama-627B's tokens per domain, every law evaluated with
                Muennighoff's repeated-token rule at R_D = 15.4 (optimize_mixture's default
                for fits without their own R_D);
  - hard caps:  available_tokens = the same U_i, max_epochs = 4 (a cap used in practice).
The table gives each optimum's mean predicted loss under the law it was optimised for and
under the repetition-aware law (the common yardstick), the epochs of the most repeated
domain, and for the repetition-aware optimum the effective mixture h' (the law's view:
D'_i / D').

U_i: SlimPajama-627B's composition as its dataset card states it (CommonCrawl 52.2%, C4 26.7%,
GitHub 5.2%, Book 4.2%, ArXiv 4.6%, Wikipedia 3.8%, StackExchange 3.3% of 627B tokens).

Run:  python bench/bench_repetition_mixture.py [--plot repetition_mixture.png]
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import mixlaw

SHARE = {"arxiv": 4.6, "book": 4.2, "c4": 26.7, "github": 5.2, "commoncrawl": 52.2, "stackexchange": 3.3,
         "wikipedia": 3.8}


def effective(h, D, U, R=15.4):
    x = h * D / U
    g = np.where(x <= 1, x, 1 + R * (1 - np.exp(-(np.maximum(x, 1) - 1) / R)))
    Di = U * g
    return Di / Di.sum(), x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plot", default="")
    args = ap.parse_args()
    warnings.simplefilter("ignore", mixlaw.ExtrapolationWarning)
    runs = mixlaw.datasets.slimpajama()
    fits = mixlaw.fit(runs, "additive", n_starts=32, progress=False)
    domains = list(runs.domains)
    U = {d: SHARE[d] / 100 * 627e9 for d in domains}
    Ua = np.array([U[d] for d in domains])
    D = np.geomspace(1e11, 1e13, 9)
    N = np.full(D.size, 7e9)
    t0 = time.perf_counter()
    plain = mixlaw.optimize_mixture(fits, N=N, D=D)
    t1 = time.perf_counter()
    rep = mixlaw.optimize_mixture(fits, N=N, D=D, unique_tokens=U)
    t2 = time.perf_counter()
    feasible = D * 1.0 <= 4 * sum(U.values())  # four epochs of everything: the caps' limit
    cap = mixlaw.optimize_mixture(fits, N=N[feasible], D=D[feasible], available_tokens=U, max_epochs=4)
    t3 = time.perf_counter()
    short = {"arxiv": "arxiv", "book": "book", "c4": "c4", "github": "github", "commoncrawl": "cc",
             "stackexchange": "se", "wikipedia": "wiki"}
    head = " ".join(f"{short[d]:>6s}" for d in domains)
    print(f"N = 7e9; weights in %; U_i in billions: " + ", ".join(f"{short[d]} {U[d] / 1e9:.1f}" for d in domains))
    print(f"certified: plain {int(np.sum(plain.status == 1))}/{D.size}, repetition {int(np.sum(rep.status == 1))}/"
          f"{D.size}, caps {int(np.sum(cap.status == 1))}/{int(feasible.sum())} (infeasible beyond D = 4 x 627B); "
          f"seconds {t1 - t0:.3f}, {t2 - t1:.3f}, {t3 - t2:.3f}")
    core = [(f.law._core, np.ascontiguousarray(f.x)) for f in fits.values()]
    w = np.full(len(core), 1.0 / len(core))

    def with_repetition(h, Dp):
        """The mean predicted loss at h under the repetition-aware laws (R_D = 15.4)."""
        return mixlaw._core.mixture_objective(core, 7e9, Dp, w, h, unique_tokens=Ua)[0]

    print(f"\n{'D':>8s} {'way':>11s} {head}  {'mean loss':>9s} {'w/ repetition':>13s} {'max epochs':>10s}")
    for p in range(D.size):
        for name, g in (("plain", plain), ("repetition", rep), ("caps x4", cap)):
            if name == "caps x4":
                if not feasible[p]:
                    print(f"{D[p]:8.2g} {name:>11s} infeasible: the domains hold fewer than D / 4 tokens")
                    continue
                g_p = int(np.sum(feasible[:p]))
                h, mean_loss = g.h[g_p], g.losses[g_p].mean()
            else:
                h, mean_loss = g.h[p], g.losses[p].mean()
            hp, x = effective(h, D[p], Ua)
            print(f"{D[p]:8.2g} {name:>11s} " + " ".join(f"{100 * v:6.1f}" for v in h)
                  + f"  {mean_loss:9.4f} {with_repetition(h, D[p]):13.4f} {x.max():10.2f}")
            if name == "repetition":
                print(f"{'':8s} {'effective':>11s} " + " ".join(f"{100 * v:6.1f}" for v in hp))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), sharey=True, layout="constrained")
        colors = plt.get_cmap("tab10").colors
        for ax, (name, g, Ds) in zip(axes, (("no data limits", plain, D), ("repetition-aware (R_D = 15.4)", rep, D),
                                            ("hard caps (4 epochs)", cap, D[feasible]))):
            for j, d in enumerate(domains):
                ax.plot(Ds, 100 * g.h[:, j], "-o", ms=3, color=colors[j], label=d)
            ax.set_xscale("log")
            ax.set_xlabel("training tokens D")
            ax.set_title(name, fontsize=10)
        axes[0].set_ylabel("optimal weight h* (%)")
        axes[-1].legend(fontsize=8)
        fig.suptitle("Optimal SlimPajama mixture at N = 7e9 (additive law, mean of 8 target losses); "
                     "unique tokens of SlimPajama-627B", fontsize=10)
        fig.savefig(args.plot, dpi=110)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
