"""Which runs to train next: mixlaw.design.next_runs against random selection, in retrospect (issue 25).

Retrospective simulation. A pool of runs whose losses are known; every strategy starts from
the same few runs, then adds runs in batches: mixlaw's `next_runs` (the runs that most
reduce the uncertainty of the decision per unit of compute) or random runs of the pool
(uniform over runs). After every batch the law is refitted (`mixlaw.fit`, the default fit)
and scored against the decision of the fit on the whole pool:

- eval MRE (%): the fit's mean relative error on the evaluation runs at the target scale,
  averaged over the targets;
- h* distance (points): the largest difference, over the domains, between the optimal
  mixture at the target scale and the whole pool's, in percentage points.

A strategy reaches the goal at the compute (FLOPs, 6 N D of each run's last checkpoint,
the starting runs included) from which both hold at every later batch: eval MRE within
--mre-gap points of the whole pool's (0.05) and h* within --h-gap points (1). Reported per
seed and as medians over seeds; also the curves (medians over seeds at each batch).

Data sets:
- slimpajama: the bundled runs, the paper's split (mixlaw.protocols): pool = the 160
  fitting runs (60 mixtures at 310M-1.235B, 1,374 records, 8 targets), evaluation = the 4
  runs at 2.718B (36 records); the decision at N = 2.718B, D = the evaluation runs' last
  token count (1.04e11), average loss over the 8 targets, plus the losses at the 4
  evaluation mixtures.
- synthetic k = 16 or 64 (--data synth16, synth64): one target, the additive law with
  known parameters (bench_domains.py's generator: 4 sizes 20M-300M x 5 checkpoints, 0.1%
  noise); pool = 3 k mixtures x 4 sizes; evaluation = 8 fresh mixtures at N = 1.2B
  (5 checkpoints); the decision at N = 1.2B, D = 1.9e11. The truth's h* is reported too.

Run:  python bench/bench_design.py --data slimpajama --seeds 16 --optimum-only [--batch 8] [--init 10] [--procs 2]
      python bench/bench_design.py --timing   # one batch of 10 from 1,000 candidate runs at k = 7
      python bench/bench_design.py --by-size  # SlimPajama: fits on the runs of some model sizes only
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import mixlaw  # noqa: E402  (imported before the workers fork, so that every seed runs the same code)
import mixlaw.design  # noqa: E402,F401


def load(data: str, law: str = "additive") -> dict:
    if data == "slimpajama":
        train, ev = mixlaw.protocols.slimpajama_paper_split(mixlaw.datasets.slimpajama())
        first = np.unique(ev.run, return_index=True)[1]
        return {"pool": train, "eval": ev, "law": law, "N": 2.718e9, "D": float(ev._N_D[1].max()),
                "H": ev.H[first], "truth_h": None}
    import bench_domains as bd

    k = {"synth16": 16, "synth64": 64}[data]
    rng = np.random.default_rng([25, k])
    pool_d = bd.Design(bd._mixtures(rng, 3 * k, k))
    theta = bd._truth("additive", k, rng, pool_d)
    y = bd.np_predict("additive", k, theta, pool_d)
    y = y * (1 + bd.NOISE * rng.standard_normal(y.size))
    Hm_eval = bd._mixtures(rng, 8, k)
    Nt = 1.2e9
    tpp = bd.TOKENS_PER_PARAM
    NN = np.full(8 * tpp.size, Nt)
    DD = np.tile(Nt * tpp, 8)
    HH = np.repeat(Hm_eval, tpp.size, axis=0)
    ev_d = bd.Design(Hm_eval)  # for np_predict's per-mixture terms, then overwrite sizes
    ev_d.idx = np.repeat(np.arange(8), tpp.size)
    ev_d.N, ev_d.D = NN, DD
    ev_d.lnN, ev_d.lnD = np.log(NN / 1e6), np.log(DD / 1e9)
    ye = bd.np_predict("additive", k, theta, ev_d)
    ye = ye * (1 + bd.NOISE * rng.standard_normal(ye.size))
    domains = [f"d{i + 1}" for i in range(k)]
    pool = mixlaw.Runs(pool_d.N, pool_d.D, pool_d.H(), domains=domains, targets={"y": y}, run=pool_d.run)
    ev = mixlaw.Runs(NN, DD, HH, domains=domains, targets={"y": ye}, run=np.repeat(np.arange(8), tpp.size))
    L = mixlaw.law("additive", k)
    return {"pool": pool, "eval": ev, "law": "additive", "N": Nt, "D": float(DD.max()), "H": Hm_eval,
            "truth_x": theta, "truth_law": L, "domains": domains}


FIT_OPTIONS: dict = {}


def _fit(runs, law):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mixlaw.fit(runs, law, threads=1, progress=False, **FIT_OPTIONS)


def _score(fits, prob) -> tuple[float, np.ndarray]:
    ev = prob["eval"]
    mres = []
    for t, f in fits.items():
        _, _, _, y = ev.target(t)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = f.predict(ev)
        ok = ~np.isnan(ev.targets[t])
        mres.append(float(np.mean(np.abs(p[ok] - y) / y) * 100))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = mixlaw.optimize_mixture(fits, N=prob["N"], D=prob["D"])
    return float(np.mean(mres)), np.array(list(r.h.values()))


def _compute(runs) -> float:
    N, D = runs._N_D
    total = 0.0
    for r in np.unique(runs.run):
        m = runs.run == r
        total += 6.0 * float(N[m].max()) * float(D[m].max())
    return total


def simulate(args_tuple) -> dict:
    """One seed: both strategies from the same starting runs, to the whole pool."""
    data, seed, n_init, batch, ref, law, with_h, random_curve, run_noise = args_tuple
    from mixlaw.design import next_runs

    prob = load(data, law)
    pool = prob["pool"]
    ids = np.unique(pool.run)
    rng = np.random.default_rng([seed, 7])
    init = rng.choice(ids, n_init, replace=False)
    out = {"seed": seed}
    for strategy in ("mixlaw", "random"):
        if strategy == "random" and random_curve is not None:
            out["random"] = random_curve  # the same seed's random strategy, from an earlier run
            continue
        srng = np.random.default_rng([seed, 8])
        have = list(init)
        curve = []
        select_seconds = []
        while True:
            cur = pool.select(np.isin(pool.run, have))
            fits = _fit(cur, prob["law"])
            mre, h = _score(fits, prob)
            curve.append({"runs": len(have), "compute": _compute(cur), "eval_mre": mre,
                          "h_dist": float(np.max(np.abs(h - ref["h"])) * 100), "h": h.tolist()})
            left = np.setdiff1d(ids, have)
            if left.size == 0:
                break
            b = min(batch, left.size)
            if strategy == "random":
                have += list(srng.choice(left, b, replace=False))
            else:
                cand = pool.select(np.isin(pool.run, left))
                t0 = time.process_time()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    nr = next_runs(cur, cand, N=prob["N"], D=prob["D"], fits=fits, batch=b,
                                   H=prob["H"] if with_h else None, run_noise=run_noise)
                select_seconds.append(time.process_time() - t0)
                have += list(nr.runs["run"])
        out[strategy] = curve
        if select_seconds:
            out["select_seconds"] = select_seconds
    return out


def reach(curve: list, ref: dict, mre_gap: float, h_gap: float) -> float:
    """Compute from which both goals hold at every later batch (inf if never)."""
    ok = [c["eval_mre"] <= ref["eval_mre"] + mre_gap and c["h_dist"] <= h_gap for c in curve]
    for i in range(len(curve)):
        if all(ok[i:]):
            return curve[i]["compute"]
    return math.inf


def timing() -> None:
    """CPU of one next_runs call (the fit excluded): the 8 SlimPajama targets fitted on all
    160 runs (additive law, k = 7), 1,000 candidate runs from initial_design (334 mixtures x
    3 sizes), each with 1 record (its last checkpoint) or 10 (checkpoints at 0.1-1 x D)."""
    from mixlaw.design import initial_design, next_runs

    train, _ = mixlaw.protocols.slimpajama_paper_split(mixlaw.datasets.slimpajama())
    fits = _fit(train, "additive")
    cand = initial_design(334, list(train.domains), N=[3.1e8, 6.8e8, 1.235e9], seed=1).iloc[:1000]
    for c in (1, 10):
        df = cand if c == 1 else cand.loc[cand.index.repeat(c)].assign(
            D=lambda t: t["D"] * np.tile(np.geomspace(0.1, 1, c), len(cand)))
        cpu, wall = [], []
        for _ in range(5):
            t0, w0 = time.process_time(), time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                next_runs(train, df, N=2.718e9, D=1.04e11, fits=fits, batch=10)
            cpu.append(time.process_time() - t0)
            wall.append(time.perf_counter() - w0)
        print(f"batch of 10 from {len(cand)} candidate runs x {c} records (k = 7, 8 targets, P = 19): CPU "
              f"{np.median(cpu):.3f} s, wall {np.median(wall):.3f} s (median of 5); load {os.getloadavg()[0]:.2f}")


def by_size(law: str) -> None:
    """The goal's two measures for fits on every pool run of some model sizes only (SlimPajama):
    how much the eval MRE at the target scale and h* depend on which sizes are in the fit."""
    prob = load("slimpajama", law)
    pool = prob["pool"]
    N = pool._N_D[0]
    sizes = np.unique(N)
    mre_all, h_all = _score(_fit(pool, law), prob)
    print(f"whole pool: eval MRE {mre_all:.3f} %, {_compute(pool):.3g} FLOPs; load {os.getloadavg()[0]:.2f}")
    print("| model sizes in the fit | runs | compute (FLOPs) | eval MRE % | h* distance from the whole pool's (points) |")
    print("|---|---|---|---|---|")
    for drop in range(sizes.size):
        for keep in (np.delete(sizes, drop), sizes[[drop, (drop + 1) % sizes.size]]):
            cur = pool.select(np.isin(N, keep))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mre, h = _score(_fit(cur, law), prob)
            print(f"| {', '.join(f'{n / 1e6:.0f}M' for n in np.sort(keep))} | {np.unique(cur.run).size} | "
                  f"{_compute(cur):.3g} | {mre:.3f} | {np.max(np.abs(h - h_all)) * 100:.2f} |")


def _at(results: list, strategy: str, g: float, key: str) -> list:
    """Each seed's value of `key` after the last batch whose compute is at most g."""
    out = []
    for r in results:
        c = [p for p in r[strategy] if p["compute"] <= g]
        if c:
            out.append(c[-1][key])
    return out


def report(results: list, ref: dict, mre_gap: float, h_gap: float, plot: str | None = None,
           title: str = "") -> None:
    """Compute to the goal (medians over seeds) and the curves at equal compute: medians and
    interquartile ranges over seeds, and whether mixlaw is worse than random by more than the
    seed-to-seed spread (random's interquartile range) there."""
    rm = np.array([reach(r["mixlaw"], ref, mre_gap, h_gap) for r in results])
    rr = np.array([reach(r["random"], ref, mre_gap, h_gap) for r in results])
    print(f"\n{len(results)} seeds; median compute to the goal: mixlaw {np.median(rm):.3g}, random "
          f"{np.median(rr):.3g} FLOPs: ratio {np.median(rm) / np.median(rr):.3f} (of the whole pool: "
          f"{np.median(rm) / ref['compute']:.3f} / {np.median(rr) / ref['compute']:.3f}); per-seed ratios: median "
          f"{np.median(rm / rr):.3f}, "
          f"{int(np.sum(rm <= 0.5 * rr))} of {len(rm)} seeds <= 0.5")
    grid = np.geomspace(min(r["mixlaw"][0]["compute"] for r in results), ref["compute"], 12)
    print("\n| compute (FLOPs) | eval MRE % mixlaw (median, IQR) | eval MRE % random | worse by > spread | "
          "h* dist. mixlaw (points) | h* dist. random | worse by > spread |")
    print("|---|---|---|---|---|---|---|")

    def q(v):
        return f"{np.median(v):.3f} ({np.quantile(v, 0.25):.3f}-{np.quantile(v, 0.75):.3f})" if v else "-"

    def worse(m, r):
        if not m or not r:
            return "-"
        spread = np.quantile(r, 0.75) - np.quantile(r, 0.25)
        return "**yes**" if np.median(m) - np.median(r) > spread else "no"

    for g in grid:
        mm, mr = _at(results, "mixlaw", g, "eval_mre"), _at(results, "random", g, "eval_mre")
        hm, hr = _at(results, "mixlaw", g, "h_dist"), _at(results, "random", g, "h_dist")
        print(f"| {g:.3g} | {q(mm)} | {q(mr)} | {worse(mm, mr)} | {q(hm)} | {q(hr)} | {worse(hm, hr)} |")
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fine = np.geomspace(grid[0], grid[-1], 60)
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for ax, key, label, goal in ((axes[0], "eval_mre", "eval MRE at the target scale (%)",
                                      ref["eval_mre"] + mre_gap),
                                     (axes[1], "h_dist", "h* distance from the whole pool's (points)", h_gap)):
            for s, color in (("mixlaw", "C0"), ("random", "C1")):
                vals = [_at(results, s, g, key) for g in fine]
                med = [np.median(v) for v in vals]
                lo = [np.quantile(v, 0.25) for v in vals]
                hi = [np.quantile(v, 0.75) for v in vals]
                ax.plot(fine, med, color=color, label=f"{s} (median over {len(results)} seeds)")
                ax.fill_between(fine, lo, hi, color=color, alpha=0.2)
            ax.axhline(goal, color="k", ls=":", lw=1, label="goal")
            ax.set_xscale("log")
            ax.set_xlabel("compute spent (FLOPs)")
            ax.set_ylabel(label)
        axes[1].set_yscale("log")
        axes[0].legend(fontsize=8)
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(plot, dpi=110)
        print(f"wrote {plot}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="slimpajama", choices=("slimpajama", "synth16", "synth64"))
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--init", type=int, default=10, help="starting runs (random, the same for both strategies)")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--mre-gap", type=float, default=0.05)
    ap.add_argument("--h-gap", type=float, default=1.0)
    ap.add_argument("--law", default="additive", choices=("additive", "joint"), help="slimpajama only")
    ap.add_argument("--n-starts", type=int, default=None, help="starts per fit (default: mixlaw.fit's)")
    ap.add_argument("--optimum-only", action="store_true",
                    help="the decision is the optimal mixture and its loss only (not also the losses at the "
                         "evaluation mixtures)")
    ap.add_argument("--timing", action="store_true", help="only time one batch of 10 from 1,000 candidates")
    ap.add_argument("--by-size", action="store_true",
                    help="only fit every SlimPajama pool run of some model sizes (all but one; two) and score them")
    ap.add_argument("--run-noise", default="auto",
                    help="next_runs' run_noise: 'auto' (default) or the sd shared by a run's records (a float)")
    ap.add_argument("--random-from", metavar="JSON",
                    help="take the random strategy's curves from an earlier --json run of the same data, seeds, "
                         "batch and starting runs instead of running it again (it does not depend on mixlaw)")
    ap.add_argument("--json", help="write every seed's curves to this file")
    ap.add_argument("--report", metavar="JSON", help="only print the summary of a --json file (with its goals)")
    ap.add_argument("--plot", metavar="PNG", help="plot the curves (medians and interquartile ranges)")
    args = ap.parse_args()
    if args.timing:
        timing()
        return
    if args.by_size:
        by_size(args.law)
        return
    if args.report:
        with open(args.report) as fh:
            doc = json.load(fh)
        report(doc["results"], doc["ref"], args.mre_gap, args.h_gap, args.plot,
               f"{doc['args']['data']}, {doc['args'].get('law', 'additive')} law")
        return
    if args.n_starts is not None:
        FIT_OPTIONS["n_starts"] = args.n_starts

    t_start = time.time()
    prob = load(args.data, args.law)
    fits_all = _fit(prob["pool"], prob["law"])
    mre_all, h_all = _score(fits_all, prob)
    ref = {"eval_mre": mre_all, "h": h_all, "compute": _compute(prob["pool"])}
    print(f"{args.data}, {prob['law']} law: pool {np.unique(prob['pool'].run).size} runs, {ref['compute']:.3g} "
          f"FLOPs; whole-pool fit: eval MRE {mre_all:.4f} %, h* {np.round(h_all, 4).tolist()}; load {os.getloadavg()[0]:.2f}", flush=True)
    if "truth_x" in prob:
        from mixlaw.fit import Fit, Fits

        L = prob["truth_law"]
        tf = Fit(law=L, target="y", x=prob["truth_x"], fun=math.nan, success=True, status=1, message="", nit=0,
                 nfev=0, njev=0, starts_fun=np.zeros(0), starts_status=np.zeros(0, int), n_records=0, train={},
                 domains=tuple(prob["domains"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            th = np.array(list(mixlaw.optimize_mixture(Fits({"y": tf}), N=prob["N"], D=prob["D"]).h.values()))
        print(f"  truth's h*: distance of the whole-pool h* from it {np.max(np.abs(th - h_all)) * 100:.3f} points")
        ref["truth_h_dist"] = float(np.max(np.abs(th - h_all)) * 100)
    earlier = {}
    if args.random_from:
        with open(args.random_from) as fh:
            old = json.load(fh)
        same = all(old["args"][a] == getattr(args, a) for a in ("data", "batch", "init", "law"))
        if not same:
            sys.exit(f"--random-from: {args.random_from} was run with other data, batch, starting runs or law")
        earlier = {r["seed"]: r["random"] for r in old["results"]}
    jobs = [(args.data, s, args.init, args.batch, ref, args.law, not args.optimum_only, earlier.get(s),
             args.run_noise if args.run_noise == "auto" else float(args.run_noise))
            for s in range(args.seeds)]
    with mp.get_context("fork").Pool(args.procs) as pool:
        results = []
        for r in pool.imap_unordered(simulate, jobs):
            results.append(r)
            rm, rr = (reach(r[s], ref, args.mre_gap, args.h_gap) for s in ("mixlaw", "random"))
            print(f"  seed {r['seed']:2d}: goal reached at {rm:.3g} FLOPs (mixlaw) / {rr:.3g} (random): ratio "
                  f"{rm / rr:.2f}; selection {np.median(r.get('select_seconds', [math.nan])):.3f} s per batch "
                  f"(median)", flush=True)
    results.sort(key=lambda r: r["seed"])
    report(results, ref, args.mre_gap, args.h_gap, args.plot, args.data)
    sel = [x for r in results for x in r.get("select_seconds", [])]
    print(f"\nselection CPU per batch: median {np.median(sel):.3f} s, max {np.max(sel):.3f} s; wall "
          f"{time.time() - t_start:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "ref": {k: (v.tolist() if isinstance(v, np.ndarray) else v)
                                                   for k, v in ref.items()},
                       "results": results}, fh)


if __name__ == "__main__":
    main()
