"""The ``mixlaw`` command line.

``mixlaw reproduce`` runs the paper's SlimPajama protocol on the bundled data; ``fit``,
``optimize`` and ``laws`` work on your own CSV files. Every command prints a readable
table, or JSON with ``--json``. Exit codes: 0 success, 1 bad data or options (the
message says which), 2 usage error, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from typing import Any, Optional, Sequence, Union

import numpy as np

from . import __version__, datasets, protocols
from .data import _budget_text, _fmt_size, _has_losses, load_runs
from .fit import Fits, fit, load_fits
from .laws import ALL_LAWS, Law
from .mixture import optimize_mixture

PAPER_MRE = {  # SPEC 6.1: train / eval MRE (%) of Shukor et al. 2025, Tables 2 and 8
    "additive": {"arxiv": (0.50, 2.09), "book": (0.29, 0.80), "c4": (0.29, 0.31), "github": (0.65, 1.17),
                 "commoncrawl": (0.29, 0.58), "stackexchange": (0.51, 0.36), "wikipedia": (0.92, 4.45)},
    "joint": {"arxiv": (0.39, 1.62), "book": (0.24, 1.19), "c4": (0.24, 0.34), "github": (0.54, 2.51),
              "commoncrawl": (0.24, 0.90), "stackexchange": (0.38, 0.47), "wikipedia": (0.57, 2.09)},
    "simple": {"arxiv": (0.55, 2.40), "book": (0.38, 1.11), "c4": (0.35, 0.47), "github": (0.81, 2.05),
               "commoncrawl": (0.34, 0.65), "stackexchange": (0.57, 0.68), "wikipedia": (0.97, 4.53)},
    "full": {"arxiv": (0.39, 1.83), "book": (0.24, 1.14), "c4": (0.23, 0.41), "github": (0.52, 1.97),
             "commoncrawl": (0.23, 0.74), "stackexchange": (0.36, 0.42), "wikipedia": (0.56, 1.98)},
}
PAPER_MIXTURE = {  # Table 15 (github 8.8: see SPEC 6.1), in %
    "average": {"arxiv": 9.6, "book": 9.5, "c4": 25.1, "github": 8.8, "commoncrawl": 12.1, "stackexchange": 17.9,
                "wikipedia": 17.0},
    "openhermes": {"arxiv": 9.4, "book": 4.8, "c4": 27.8, "github": 6.6, "commoncrawl": 36.9, "stackexchange": 13.5,
                   "wikipedia": 0.0},
}
LAW_ORDER = ("additive", "joint", "simple", "full")
SEED_HELP = "seed of the random starts (results are reproducible for a given seed and any --threads)"


def _plot_dir(args: argparse.Namespace) -> Optional[str]:
    """The --plot directory, created; checks first that matplotlib is importable, so that a
    missing optional dependency fails before any fitting."""
    if getattr(args, "plot", None) is None:
        return None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError("--plot: needs matplotlib; install it with: pip install 'mixlaw[plot]'") from None
    if os.path.exists(args.plot) and not os.path.isdir(args.plot):
        raise ValueError(f"--plot: {args.plot!r} exists and is not a directory")
    os.makedirs(args.plot, exist_ok=True)
    return args.plot


def _plot_name(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", "_".join(p for p in parts if p)).strip("_") + ".png"


def _write_plot(obj: Any, directory: str, *parts: str, written: list) -> None:
    from . import plots

    written.append(plots.save(obj, os.path.join(directory, _plot_name(*parts))))


def _observed_panels(fits: Any, fit_runs: Any, eval_runs: Any, title: str) -> Any:
    """One figure, one observed-vs-predicted panel per target."""
    from . import plots

    fig, axes = plots.subplots(len(fits), ncols=4, panel=(4.2, 4.2))
    for ax, f in zip(axes, fits.values() if hasattr(fits, "values") else fits):
        ev = eval_runs if _has_losses(eval_runs, f.target) else None
        plots.observed_vs_predicted(f, fit_runs, ev, ax=ax)
    fig.suptitle(title, fontsize=11)
    return fig


def _progress(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _bar(args: argparse.Namespace) -> Any:
    """The fits' progress option: a bar on stderr for calls longer than 2 s, none with --quiet."""
    return False if getattr(args, "quiet", False) else "auto"


def _fmt(v: Optional[float], nd: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def cmd_reproduce(args: argparse.Namespace) -> int:
    plot_dir = _plot_dir(args)
    t0 = time.perf_counter()
    runs = datasets.slimpajama()
    train, test = protocols.slimpajama_paper_split(runs)
    _progress(args.quiet, f"SlimPajama, paper protocol: {len(train)} training records "
                          f"({train.model_sizes.size} sizes), {len(test)} evaluation records at 2.718B")
    fits: dict[str, Fits] = {}
    for law in LAW_ORDER:
        t = time.perf_counter()
        nest: Any = True
        if law == "joint":
            nest = fits["additive"]
        elif law == "full":
            nest = fits["joint"]
        fits[law] = fit(train, law, n_starts=args.n_starts, seed=args.seed, threads=args.threads, nest=nest,
                        progress=_bar(args))
        _progress(args.quiet, f"  fitted {law:8s} x {len(fits[law])} targets, {args.n_starts} starts each "
                              f"({time.perf_counter() - t:.1f} s)")
    table = []
    for law in LAW_ORDER:
        for target, f in fits[law].items():
            ev = f.score(test)
            paper = PAPER_MRE[law].get(target, (None, None))
            table.append({"law": law, "target": target, "train_mre": f.train["mre"], "eval_mre": ev["mre"],
                          "paper_train_mre": paper[0], "paper_eval_mre": paper[1], "objective": f.fun,
                          "converged": f.success, "n_params": f.law.n_params})
    domains = list(train.domains)
    N, D = 2.718e9, float(test.D.max())
    avg = optimize_mixture(fits["additive"], N=N, D=D, weights={d: 1.0 for d in domains}, threads=args.threads)
    hermes = optimize_mixture(fits["additive"], N=N, D=D, weights={"openhermes": 1.0}, threads=args.threads)
    mixtures = {}
    for name, r in (("average", avg), ("openhermes", hermes)):
        mixtures[name] = {"h": {d: 100 * r.h[d] for d in domains}, "paper": PAPER_MIXTURE[name], "gap": r.gap,
                          "converged": r.success}
    if plot_dir is not None:
        _reproduce_plots(plot_dir, fits, train, test, avg, hermes, N, D, args)
    elapsed = time.perf_counter() - t0
    if args.json:
        json.dump({"protocol": "slimpajama_paper_split", "n_train": len(train), "n_eval": len(test),
                   "n_starts": args.n_starts, "seed": args.seed, "mre": table,
                   "optimal_mixture_percent": mixtures, "budget": {"N": N, "D": D}, "seconds": elapsed},
                  sys.stdout, indent=1)
        print()
        return 0
    print(f"\nMRE (%) train / eval at 2.718B, next to the paper (Shukor et al. 2025, Tables 2 and 8)\n")
    header = f"{'target':14s}" + "".join(f"| {law:^22s}  " for law in LAW_ORDER)
    print(header)
    print(f"{'':14s}" + f"| {'mixlaw':10s} {'paper':10s}  " * len(LAW_ORDER))
    print("-" * len(header))
    targets = list(fits["additive"])
    by = {(r["law"], r["target"]): r for r in table}
    means: dict = {law: [] for law in LAW_ORDER}
    for target in targets:
        line = f"{target:14s}"
        for law in LAW_ORDER:
            r = by[(law, target)]
            if r["paper_train_mre"] is not None:
                means[law].append(r)
            ours = f"{_fmt(r['train_mre'])}/{_fmt(r['eval_mre'])}"
            paper = f"{_fmt(r['paper_train_mre'])}/{_fmt(r['paper_eval_mre'])}"
            line += f"| {ours:10s} {paper:10s}  "
        print(line)
    line = f"{'mean (7)':14s}"
    for law in LAW_ORDER:
        rs = means[law]
        ours = f"{_fmt(np.mean([r['train_mre'] for r in rs]))}/{_fmt(np.mean([r['eval_mre'] for r in rs]))}"
        paper = (f"{_fmt(np.mean([r['paper_train_mre'] for r in rs]))}/"
                 f"{_fmt(np.mean([r['paper_eval_mre'] for r in rs]))}")
        line += f"| {ours:10s} {paper:10s}  "
    print(line)
    print(f"\nOptimal mixture (%), additive law at N={N:.4g}, D={D:.4g}, next to the paper (Table 15)\n")
    print(f"{'domain':14s}| {'average':>8s} {'paper':>6s} | {'openhermes':>10s} {'paper':>6s}")
    for d in domains:
        print(f"{d:14s}| {mixtures['average']['h'][d]:8.1f} {PAPER_MIXTURE['average'][d]:6.1f} | "
              f"{mixtures['openhermes']['h'][d]:10.1f} {PAPER_MIXTURE['openhermes'][d]:6.1f}")
    print(f"{'certificate':14s}| gap {mixtures['average']['gap']:.1e}    | gap {mixtures['openhermes']['gap']:.1e}")
    print(f"\n{len(table)} fits, 2 mixtures in {elapsed:.1f} s")
    return 0


def _reproduce_plots(plot_dir: str, fits: dict, train: Any, test: Any, avg: Any, hermes: Any, N: float, D: float,
                     args: argparse.Namespace) -> None:
    from . import plots

    written: list = []
    for law in LAW_ORDER:
        fig = _observed_panels(fits[law], train, test, f"{law} law: fitted on 310M-1.235B, evaluated at 2.718B")
        _write_plot(fig, plot_dir, "observed_vs_predicted", law, written=written)
    for target, f in fits["additive"].items():
        ax = plots.loss_vs_tokens(f, test)
        _write_plot(ax, plot_dir, "loss_vs_tokens", "additive", target, written=written)
    fig, axes = plots.subplots(2, ncols=2, panel=(5.6, 4.6))
    for ax, name, r in zip(axes, ("average", "openhermes"), (avg, hermes)):
        plots.mixture_bars({"mixlaw": r}, reference={d: v / 100 for d, v in PAPER_MIXTURE[name].items()},
                           reference_label="paper (Table 15)", ax=ax,
                           title=f"{'average of 7 domains' if name == 'average' else 'OpenHermes'}: "
                                 f"additive law, N = {_fmt_size(N)}, D = {_fmt_size(D)}")
    _write_plot(fig, plot_dir, "optimal_mixture", written=written)
    domains = list(train.domains)
    ax = plots.mixture_path(fits["joint"], compute=np.geomspace(1e19, 1e24, 26),
                            weights={d: 1.0 for d in domains}, threads=args.threads,
                            title="Optimal mixture for the average loss of the 7 domains along a scaling path\n"
                                  "joint law, D = 20 N")
    _write_plot(ax, plot_dir, "mixture_path", "joint", written=written)
    _progress(args.quiet, f"wrote {len(written)} plots to {plot_dir}")


def _number(text: str, option: str, value: str, form: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{option}: expected {form} with numbers, got {value!r}") from None


def _domain_numbers(value: Optional[str], option: str, form: str) -> dict[str, float]:
    """'a=1e9,b=2' as {'a': 1e9, 'b': 2.0}; None -> {}."""
    return {d: _number(v, option, value or "", form) for d, v in _domain_items(value, option, form).items()}


def _number_or_domain_numbers(value: str, option: str, form: str) -> Any:
    """One number for all ('4'), or 'a=4,b=2' per domain."""
    if "=" in value:
        return _domain_numbers(value, option, form)
    return _number(value, option, value, f"a number or {form}")


def _domain_items(value: Optional[str], option: str, form: str) -> dict[str, str]:
    """'a=1,b=2' as {'a': '1', 'b': '2'} (values parsed by the caller); None -> {}."""
    out: dict[str, str] = {}
    for item in _parse_list(value) or []:
        name, eq, v = item.partition("=")
        if not eq or not name.strip() or not v.strip():
            raise ValueError(f"{option}: expected {form}, got {value!r}")
        if name.strip() in out:  # the last would win silently
            raise ValueError(f"{option}: {name.strip()!r} is given twice in {value!r}")
        out[name.strip()] = v.strip()
    return out


def _in_tokens(value: Any, unit: float) -> Any:
    """Token counts given in the unit of --D-unit (a number or {domain: number}), in tokens."""
    if isinstance(value, dict):
        return {d: v * unit for d, v in value.items()}
    return None if value is None else value * unit


def _domain_bounds(value: Optional[str]) -> dict[str, tuple[float, float]]:
    """--bounds 'code=0.05:0.5,...' as {'code': (0.05, 0.5), ...}; None -> {}."""
    out = {}
    for d, text in _domain_items(value, "--bounds", "DOMAIN=MIN:MAX,...").items():
        lo, colon, hi = text.partition(":")
        if not colon:
            raise ValueError(f"--bounds: expected DOMAIN=MIN:MAX,... (fractions, e.g. code=0.05:0.5), got {value!r}")
        out[d] = (_number(lo, "--bounds", value, "DOMAIN=MIN:MAX,..."), _number(hi, "--bounds", value,
                                                                                "DOMAIN=MIN:MAX,..."))
    return out


def _n_starts_arg(value: str) -> Union[int, str]:
    """--n-starts: 'auto' or a non-negative integer."""
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer >= 0, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer >= 0, got {value!r}")
    return n


def _parse_list(value: Optional[str]) -> Optional[list[str]]:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _load(args: argparse.Namespace) -> Any:
    """The runs table of a data file, wide or long (--target-column), or the bundled
    SlimPajama runs for DATA 'slimpajama'."""
    if args.data == "slimpajama" and not os.path.exists(args.data):
        return datasets.slimpajama()
    kw: dict = {}
    if args.targets is not None:
        kw["targets"] = _parse_columns(args.targets)
    if args.target_column is not None or args.loss_column is not None:
        kw.update(target_column=args.target_column, loss_column=args.loss_column)
    none = {"none", "None", ""}
    return load_runs(args.data, weights=None if args.weights in none else _parse_columns(args.weights),
                     N=None if args.n_column in none else args.n_column,
                     D=None if args.d_column in none else args.d_column,
                     run=args.run_column, dedup=args.dedup, renormalize=args.renormalize, N_unit=args.N_unit,
                     D_unit=args.D_unit, **kw)


def _parse_columns(value: str) -> Any:
    """A glob stays a string; 'a,b' is a list of names."""
    return _parse_list(value) if "," in value else value


def _fit_plots(plot_dir: str, fits: Fits, runs: Any, args: argparse.Namespace) -> None:
    from . import plots

    written: list = []
    fig = _observed_panels(fits, runs, None, f"{fits.law.name} law fitted to {args.data}")
    _write_plot(fig, plot_dir, "observed_vs_predicted", written=written)
    for target, f in fits.items():
        ax = plots.loss_vs_tokens(f, runs)
        _write_plot(ax, plot_dir, "loss_vs_tokens", target, written=written)
    _progress(args.quiet, f"wrote {len(written)} plots to {plot_dir}")


def cmd_fit(args: argparse.Namespace) -> int:
    plot_dir = _plot_dir(args)
    runs = _load(args)
    _progress(args.quiet, f"loaded {runs!r}")
    bounds = None
    if args.bound:
        bounds = {}
        for b in args.bound:
            name, _, rng = b.partition("=")
            lo, _, hi = rng.partition(":")
            if name in bounds:  # the last would win silently
                raise ValueError(f"--bound: {name!r} is given twice")
            bounds[name] = (_number(lo, "--bound", b, "NAME=LO:HI"), _number(hi, "--bound", b, "NAME=LO:HI"))
    unique = None if args.unique_tokens is None else \
        _in_tokens(_number_or_domain_numbers(args.unique_tokens, "--unique-tokens", "DOMAIN=TOKENS,..."), args.D_unit)
    if args.repetition and plot_dir is not None:
        raise ValueError("--plot: the plots do not take unique tokens yet; fit data-constrained laws without --plot")
    fits = fit(runs, args.law, targets=_parse_list(args.target), n_starts=args.n_starts, seed=args.seed,
               loss=args.loss, residual=args.residual, bounds=bounds, threads=args.threads,
               n_term=not args.no_n_term, d_term=not args.no_d_term, init=args.init, progress=_bar(args),
               repetition=args.repetition or False, unique_tokens=unique)
    if args.out:
        fits.to_json(args.out)
        _progress(args.quiet, f"wrote {args.out}")
    if plot_dir is not None:
        _fit_plots(plot_dir, fits, runs, args)
    if args.json:
        print(fits.to_json())
        return 0
    print(f"{'target':16s} {'train MRE %':>11s} {'R^2':>8s} {'objective':>12s} {'n':>6s}  status")
    for f in fits.values():
        print(f"{f.target:16s} {f.train['mre']:11.3f} {f.train['r2']:8.5f} {f.fun:12.5e} {f.n_records:6d}  "
              f"{f.message}")
        if args.params:
            for k, v in f.params.items():
                print(f"    {k:12s} {v:.6g}")
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    # The fits file is validated first (load_fits: every problem a ValueError naming its key
    # path, reported by main() as one line, exit 1), before anything is created or computed.
    fits = load_fits(args.fits)
    plot_dir = _plot_dir(args)
    weights = None
    if args.weights:
        weights = {}
        for item in args.weights.split(","):
            name, _, w = item.partition("=")
            if name.strip() in weights:  # the last would win silently
                raise ValueError(f"--weights: {name.strip()!r} is given twice in {args.weights!r}")
            weights[name.strip()] = _number(w, "--weights", args.weights, "TARGET=W,...") if w else 1.0
    bounds = _domain_bounds(args.bounds)
    tokens = _in_tokens(_domain_numbers(args.available_tokens, "--available-tokens", "DOMAIN=TOKENS,..."),
                        args.D_unit)
    epochs = None if args.max_epochs is None else \
        _number_or_domain_numbers(args.max_epochs, "--max-epochs", "DOMAIN=EPOCHS,...")
    unique = _in_tokens(_domain_numbers(args.unique_tokens, "--unique-tokens", "DOMAIN=TOKENS,..."), args.D_unit)
    prior = _domain_numbers(args.prior, "--prior", "DOMAIN=WEIGHT,...")
    N = None if args.N is None else args.N * args.N_unit
    D = None if args.D is None else args.D * args.D_unit
    r = optimize_mixture(fits, N=N, D=D, weights=weights, method=args.method,
                         threads=args.threads, within_data=args.within_data, bounds=bounds or None,
                         available_tokens=tokens or None, max_epochs=epochs, unique_tokens=unique or None,
                         repetition_halflife=args.repetition_halflife, prior=prior or None, kl=args.kl)
    if plot_dir is not None:
        _optimize_plots(plot_dir, fits, r, weights, args)
    if args.json:
        regularised = {} if r.unregularised is None else {
            "kl": r.kl, "kl_divergence": r.kl_divergence, "distance_prior": r.distance_prior,
            "unregularised": {"h": r.unregularised.h, "losses": r.unregularised.losses, "fun": r.unregularised.fun}}
        json.dump({"h": r.h, "losses": r.losses, "fun": r.fun, "gap": r.gap, "success": r.success, **regularised,
                   "message": r.message, "N": None if math.isnan(r.N) else r.N,
                   "D": None if math.isnan(r.D) else r.D,
                   "binding": {d: {"constraint": w, "multiplier": m} for d, (w, m) in r.binding.items()},
                   "outside_data": {d: {"weight": w, "seen_min": a, "seen_max": b}
                                    for d, (w, a, b) in r.outside_data.items()}}, sys.stdout, indent=1)
        print()
        return 0
    print(f"optimal mixture at {_budget_text(r.N, r.D, sep='=')} ({r.message}; gap {r.gap:.1e})")
    for d, v in r.h.items():
        note = ""
        if d in r.binding:
            which, m = r.binding[d]
            note = f"   at its {which} (objective falls {m:.3g} per unit relaxed)"
        if d in r.outside_data:
            _, a, b = r.outside_data[d]
            note += f"   outside the fitting runs' {100 * a:.2f}..{100 * b:.2f} %"
        print(f"  {d:16s} {100 * v:6.2f} %{note}")
    for t, v in r.losses.items():
        extra = "" if r.unregularised is None else f"   (unregularised {r.unregularised.losses[t]:.4f})"
        print(f"  predicted loss {t}: {v:.4f}{extra}")
    if r.unregularised is not None:
        print(f"  KL(h || prior) {r.kl_divergence:.4g} nats at --kl {r.kl:g}; unregularised h: "
              + ", ".join(f"{d} {100 * v:.2f} %" for d, v in r.unregularised.h.items()))
    if r.outside_data:
        print("  (outside: the laws extrapolate there; --within-data keeps the weights inside)")
    return 0


def _optimize_plots(plot_dir: str, fits: Fits, r: Any, weights: Any, args: argparse.Namespace) -> None:
    from . import plots

    written: list = []
    ax = plots.mixture_bars(r, title=f"Optimal mixture h* ({fits.law.name} law)\n"
                                     + _budget_text(r.N, r.D, _fmt_size, tokens=" tokens"))
    _write_plot(ax, plot_dir, "optimal_mixture", written=written)
    if not (math.isnan(r.N) or math.isnan(r.D)):  # a law without a model-size or token term has no path
        # the path through (N, D) at a constant token-per-parameter ratio, 1/30x to 30x the model size
        Ns = r.N * np.geomspace(1 / 30, 30, 25)
        note = " (its h* does not depend on N, D)" if fits.law.name in ("additive", "simple") else ""
        ax = plots.mixture_path(fits, N=Ns, D=Ns * (r.D / r.N), weights=weights, method=args.method,
                                threads=args.threads,
                                title=f"Optimal mixture along the scaling path D = {r.D / r.N:.3g} N, "
                                      f"{fits.law.name} law{note}\ndotted line: N = {_fmt_size(r.N)}, "
                                      f"D = {_fmt_size(r.D)} tokens")
        ax.axvline(6 * r.N * r.D, color="black", ls=":", lw=1.2)
        _write_plot(ax, plot_dir, "mixture_path", written=written)
    _progress(args.quiet, f"wrote {len(written)} plots to {plot_dir}")


def _protocol(args: argparse.Namespace) -> Any:
    from . import evaluate

    if args.protocol == "size":
        ev = (tuple(_number(v, "--eval-sizes", args.eval_sizes, "a comma list of model sizes")
                    for v in args.eval_sizes.split(",")) if args.eval_sizes else None)
        return evaluate.SizeSplit(eval_sizes=ev)
    if args.protocol == "mixtures":
        if args.n_fit is None:
            raise ValueError("--n-fit: needed with --protocol mixtures")
        return evaluate.HeldOutMixtures(n_fit=args.n_fit, seed=args.seed)
    if args.protocol == "tokens":
        return evaluate.TokenSplit(args.fit_fraction)
    if args.protocol == "loso":
        return evaluate.LeaveOneSizeOut()
    return evaluate.PaperSplit()


def cmd_compare(args: argparse.Namespace) -> int:
    from . import evaluate

    plot_dir = _plot_dir(args)
    runs = _load(args)
    laws = _parse_list(args.laws) or ["additive"]
    for law in laws:
        if law not in ALL_LAWS:
            raise ValueError(f"--laws: unknown law {law!r}; expected some of {', '.join(ALL_LAWS)}")
    _progress(args.quiet, f"comparing {', '.join(laws)} on {runs!r}")
    protocol = _protocol(args)
    if plot_dir is None:
        table = evaluate.compare(runs, laws, protocol, targets=_parse_list(args.target),
                                 n_starts=args.n_starts, seed=args.seed, threads=args.threads, progress=_bar(args))
    else:
        table = _compare_and_plot(plot_dir, runs, laws, protocol, args)
    rows = table.to_dict("records")
    if args.json:
        json.dump(rows, sys.stdout, indent=1, default=_json_scalar)
        print()
        return 0
    print(f"{'split':18s} {'law':10s} {'target':16s} {'params':>6s} {'train MRE%':>10s} {'eval MRE%':>10s} "
          f"{'eval R^2':>9s} {'n fit':>6s} {'n eval':>6s}")
    for r in rows:
        print(f"{r['split']:18s} {r['law']:10s} {r['target']:16s} {r['n_params']:6d} {r['train_mre']:10.3f} "
              f"{r['eval_mre']:10.3f} {r['eval_r2']:9.4f} {r['n_fit']:6d} {r['n_eval']:6d}")
    return 0


def _json_scalar(v: Any) -> Any:
    """NumPy scalars (from DataFrame records) as JSON numbers and booleans."""
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    return float(v)


def _compare_and_plot(plot_dir: str, runs: Any, laws: list, protocol: Any, args: argparse.Namespace) -> Any:
    """:func:`mixlaw.compare`'s table, from the same batched job, keeping each cell's fit
    to draw observed against predicted loss per (split, law)."""
    from . import evaluate

    law_list, cells, rows, cell_fits = evaluate._compare_cells(
        runs, laws, protocol, targets=_parse_list(args.target), n_starts=args.n_starts, seed=args.seed, nest=True,
        threads=args.threads, fit_options={}, progress=_bar(args))
    written: list = []
    for s, (split_name, fit_runs, eval_runs) in enumerate(protocol.splits(runs)):
        for label, _ in law_list:
            fits = {c.target: f for c, f in zip(cells, cell_fits) if c.split == s and c.law_label == label}
            if not fits:
                continue
            fig = _observed_panels(fits, fit_runs, eval_runs, f"{label} law, split {split_name}")
            _write_plot(fig, plot_dir, "observed_vs_predicted", split_name, label, written=written)
    _progress(args.quiet, f"wrote {len(written)} plots to {plot_dir}")
    return evaluate.compare_table(rows)


def cmd_laws(args: argparse.Namespace) -> int:
    out = {name: list(Law(name, None if name == "chinchilla" else args.k,
                          **({"target_domain": 0} if name == "bimix" else {})).param_names) for name in ALL_LAWS}
    if args.json:
        json.dump(out, sys.stdout, indent=1)
        print()
        return 0
    for name, params in out.items():
        print(f"{name:11s} {len(params):3d} parameters: {', '.join(params)}")
    return 0


def cmd_design_next(args: argparse.Namespace) -> int:
    import pandas as pd

    from .design import next_runs

    runs = _load(args)
    _progress(args.quiet, f"loaded {runs!r}")
    try:
        parquet = str(args.candidates).lower().endswith((".parquet", ".pq"))  # as load_runs tells them
        candidates = pd.read_parquet(args.candidates) if parquet else pd.read_csv(args.candidates)
    except (OSError, ValueError) as exc:
        raise ValueError(f"--candidates: cannot read {args.candidates!r} ({exc})") from None
    tol = [_number(v, "--tolerance", args.tolerance, "WEIGHT,LOSS") for v in _parse_list(args.tolerance) or []]
    if len(tol) != 2:
        raise ValueError(f"--tolerance: expected two numbers WEIGHT,LOSS, got {args.tolerance!r}")
    bounds = _domain_bounds(args.bounds)
    run_noise = args.run_noise if args.run_noise == "auto" else _number(args.run_noise, "--run-noise",
                                                                       args.run_noise, "'auto' or a number")
    if args.fits and args.law is not None:
        raise ValueError("--law: the fits given with --fits are fitted already; give one of the two")
    fits = load_fits(args.fits) if args.fits else fit(runs, args.law or "additive", seed=args.seed,
                                                      threads=args.threads, progress=_bar(args))
    r = next_runs(runs, candidates, N=args.N, D=args.D, fits=fits, batch=args.batch, tolerance=tuple(tol),
                  bounds=bounds or None, checkpoints=args.checkpoints, run_noise=run_noise, threads=args.threads)
    if args.out:
        r.runs.to_csv(args.out, index=False)
    if args.json:
        json.dump({"h": r.h, "loss": r.loss, "uncertainty": {"h": r.uncertainty["h"], "loss": r.uncertainty["loss"]},
                   "expected": {"h": r.expected["h"], "loss": r.expected["loss"]}, "criterion": r.criterion,
                   "criterion_after": r.criterion_after, "settled": r.settled,
                   "noise": r.noise, "run_noise": r.run_noise,
                   "runs": json.loads(r.runs.to_json(orient="records")),
                   "compute": float(r.runs["compute"].sum()), "out": args.out}, sys.stdout, indent=1)
        print()
        return 0
    # The table goes to stdout unless written to --out; the summary then goes to stderr.
    summary = sys.stdout if args.out else sys.stderr
    if not args.out:
        r.runs.to_csv(sys.stdout, index=False)
    else:
        _progress(args.quiet, f"wrote {len(r.runs)} runs ({r.runs['compute'].sum():.3g} FLOPs in all) to {args.out}")
    print(f"optimal mixture at {_budget_text(r.N, r.D, sep='=')}: predicted loss {r.loss:.4f} "
          f"(sd {100 * r.uncertainty['loss']:.3f}% now, {100 * r.expected['loss']:.3f}% expected after the batch)",
          file=summary)
    print(f"  {'domain':16s} {'weight':>7s}  sd now -> after the batch", file=summary)
    for d, v in r.h.items():
        print(f"  {d:16s} {v:7.4f}  {r.uncertainty['h'][d]:.4f} -> {r.expected['h'][d]:.4f}", file=summary)
    verdict = ("settled: every sd is within the tolerance; more small runs are not expected to change the decision"
               if r.settled else "not settled: train the chosen runs, then run 'mixlaw design next' again")
    print(verdict, file=summary)
    return 0


def cmd_design(args: argparse.Namespace) -> int:
    from .design import initial_design

    if args.domains and args.k is not None and len(_parse_list(args.domains) or []) != args.k:
        raise ValueError(f"--k: {args.k} domains, but --domains names {len(_parse_list(args.domains) or [])}; "
                         "give one of the two")
    domains = _parse_list(args.domains) if args.domains else args.k
    if domains is None:
        raise ValueError("--domains or --k: give the domains (names, or how many)")
    sizes = [_number(v, "--sizes", args.sizes, "a comma list of model sizes") for v in _parse_list(args.sizes) or []]
    bounds = _domain_bounds(args.bounds)
    table = initial_design(args.mixtures, domains, N=sizes, tokens_per_param=args.tokens_per_param,
                           zeros=args.zeros, alpha=args.alpha, bounds=bounds or None, seed=args.seed)
    if args.out:
        table.to_csv(args.out, index=False)
    if args.json:
        json.dump({"runs": len(table), "compute": float(table["compute"].sum()), "out": args.out}, sys.stdout)
        print()
        return 0
    if not args.out:
        table.to_csv(sys.stdout, index=False)
        return 0
    _progress(args.quiet, f"wrote {len(table)} runs ({args.mixtures} mixtures x {len(sizes)} sizes, "
                          f"{table['compute'].sum():.3g} FLOPs in all) to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mixlaw", description=(
        "Scaling laws for optimal data mixtures (Shukor et al. 2025): fit laws L(N, D, h) to small runs, "
        "check how they extrapolate, and find the mixture to train with."),
        epilog="Examples:\n  mixlaw reproduce                 # the paper's SlimPajama table and mixtures\n"
               "  mixlaw fit runs.csv --law joint --out fits.json\n"
               "  mixlaw optimize fits.json --N 3e9 --D 6e10\n"
               "  mixlaw compare slimpajama --laws additive,joint --protocol paper\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"mixlaw {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--json", action="store_true", help="print JSON on stdout instead of tables")
        sp.add_argument("--threads", type=int, default=None, help="OpenMP threads (default: all cores)")
        sp.add_argument("--quiet", "-q", action="store_true", help="no progress messages on stderr")
        sp.add_argument("--plot", metavar="DIR", default=None,
                        help="also write PNG plots to DIR (created if needed; needs pip install 'mixlaw[plot]')")

    def data_columns(sp: argparse.ArgumentParser) -> None:
        g = sp.add_argument_group("columns of the data file")
        g.add_argument("--weights", default="weight_*",
                       help="weight columns: glob or comma list (default weight_*); 'none' for runs without a mixture")
        g.add_argument("--n-column", default="model_size",
                       help="model-size column (default model_size); 'none' for a table without model sizes, "
                            "fitted with --no-n-term or a baseline law")
        g.add_argument("--d-column", default="n_tokens",
                       help="token column (default n_tokens); 'none' for a table without token counts, fitted "
                            "with --no-d-term or a law without a token term")
        g.add_argument("--targets", default=None,
                       help="target loss columns: glob or comma list (default *_loss); with --target-column, "
                            "the target names to keep (default: all)")
        g.add_argument("--run-column", default=None, help="column of run ids (default: one run per size and mixture)")
        g.add_argument("--target-column", default=None, metavar="NAME",
                       help="long table: one row per (run, checkpoint, target), the target's name in this column")
        g.add_argument("--loss-column", default=None, metavar="NAME",
                       help="long table: the column of losses (default loss)")
        g.add_argument("--dedup", action="store_true", help="drop duplicated checkpoints")
        g.add_argument("--renormalize", action="store_true", help="rescale weight rows to sum to 1")
        g.add_argument("--N-unit", type=float, default=1.0, metavar="X",
                       help="parameters per unit of the model-size column, e.g. 1e6 for millions (default 1)")
        g.add_argument("--D-unit", type=float, default=1.0, metavar="X",
                       help="tokens per unit of the token column, e.g. 1e9 for billions (default 1)")

    r = sub.add_parser("reproduce", help="the paper's SlimPajama protocol on the bundled data",
                       description="Fit the additive, joint, simple and full laws to the 8 SlimPajama targets "
                                   "(train 310M-1.235B, evaluate 2.718B), print train/eval MRE next to the "
                                   "paper, and the optimal mixtures for the average loss and for OpenHermes.")
    r.add_argument("--n-starts", type=int, default=64, help="random starts per target (default 64)")
    r.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    common(r)
    r.set_defaults(func=cmd_reproduce)

    f = sub.add_parser("fit", help="fit a law to your runs table",
                       description="Fit a law to a CSV/Parquet runs table. Columns: weights (glob or list), "
                                   "model size, tokens, targets (glob or list).")
    f.add_argument("data", help="CSV or Parquet file, or 'slimpajama' for the bundled runs")
    f.add_argument("--law", default="additive", choices=ALL_LAWS)
    data_columns(f)
    f.add_argument("--target", default=None, help="fit only these targets (comma list of names)")
    f.add_argument("--n-starts", type=_n_starts_arg, default="auto",
                   help="random starts per target, or 'auto' (default: 64 up to 100 parameters, none beyond "
                        "when the two-stage start exists); more if fits report non-convergence")
    f.add_argument("--init", default="auto", choices=("auto", "random"),
                   help="auto (default): the first start is computed from the data in two stages of least "
                        "squares (laws with the additive mixture term); random: random starts only")
    f.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    f.add_argument("--loss", default="huber", choices=("huber", "mse"),
                   help="huber (default, robust to a few bad checkpoints, as the paper) or mse")
    f.add_argument("--residual", default="raw", choices=("raw", "log"),
                   help="fit residuals of the loss (raw, default) or of its logarithm (log)")
    f.add_argument("--bound", action="append", metavar="NAME=LO:HI", help="override a bound (repeatable)")
    f.add_argument("--no-n-term", action="store_true", help="drop the model-size term (one model size)")
    f.add_argument("--no-d-term", action="store_true", help="drop the token term (one token count)")
    f.add_argument("--repetition", choices=("shared", "per_domain"),
                   help="the data-constrained option: repeated tokens count less (one R_D, or one per domain); "
                        "needs --unique-tokens")
    f.add_argument("--unique-tokens", help="with --repetition: unique tokens per domain, e.g. 'code=2e10,books=5e9' "
                                           "(domains not named: unlimited), or one number for every record; in the "
                                           "unit of --D-unit")
    f.add_argument("--out", help="write the fits as JSON to this file")
    f.add_argument("--params", action="store_true", help="print the fitted parameters")
    common(f)
    f.set_defaults(func=cmd_fit)

    o = sub.add_parser("optimize", help="optimal mixture from saved fits")
    o.add_argument("fits", help="fits JSON written by `mixlaw fit --out`")
    o.add_argument("--N", type=float, help="model size (parameters; see --N-unit); needed unless the law has no "
                                           "model-size term")
    o.add_argument("--D", type=float, help="training tokens (see --D-unit); needed unless the law has no token term")
    o.add_argument("--N-unit", type=float, default=1.0, metavar="X",
                   help="parameters per unit of --N, e.g. 1e9 for --N 7 meaning 7B (default 1)")
    o.add_argument("--D-unit", type=float, default=1.0, metavar="X",
                   help="tokens per unit of --D, --available-tokens and --unique-tokens, e.g. 1e9 for billions "
                        "(default 1)")
    o.add_argument("--bounds", help="per-domain limits as fractions of the mixture, e.g. 'code=0.05:0.5,web=0:0.6'")
    o.add_argument("--available-tokens", help="unique tokens per domain, e.g. 'code=2e10,books=5e9': caps each "
                                              "weight at max-epochs x tokens / D")
    o.add_argument("--max-epochs", help="how often a domain may be repeated with --available-tokens: a number for "
                                        "all, or 'code=4,books=2' (default 1)")
    o.add_argument("--unique-tokens", help="unique tokens per domain for repetition-aware mixtures, e.g. "
                                           "'code=2e10,books=5e9': repeated tokens count less (Muennighoff's rule; "
                                           "needed for fits of data-constrained laws)")
    o.add_argument("--repetition-halflife", type=float, default=15.4, metavar="R",
                   help="R_D for fits without their own, with --unique-tokens (default 15.4)")
    o.add_argument("--prior", help="a mixture to stay close to, e.g. 'web=0.6,code=0.3,books=0.1' (every domain, "
                                   "weights > 0 summing to 1), with --kl")
    o.add_argument("--kl", type=float, default=0.0, help="strength of the KL(h || prior) term (default 0: none)")
    o.add_argument("--weights", help="target importance, e.g. 'c4=1,openhermes=2' (default: equal)")
    o.add_argument("--within-data", action="store_true",
                   help="keep every weight inside the range seen in the fitting runs")
    o.add_argument("--method", default="mirror", choices=("mirror", "projected"),
                   help="mirror descent (default, the paper's exponentiated gradient) or projected gradient")
    common(o)
    o.set_defaults(func=cmd_optimize)

    c = sub.add_parser("compare", help="compare laws on a train/evaluation protocol",
                       description="Fit several laws on the same split and tabulate train and evaluation "
                                   "MRE. DATA is a CSV/Parquet file or 'slimpajama' for the bundled runs.")
    c.add_argument("data", help="CSV or Parquet file, or 'slimpajama'")
    c.add_argument("--laws", default="additive,joint", help="comma list (default additive,joint)")
    c.add_argument("--protocol", default="size", choices=("size", "mixtures", "tokens", "loso", "paper"),
                   help="size: fit small models, evaluate the largest (default); mixtures: fit N_FIT random "
                        "mixtures; tokens: fit early checkpoints; loso: leave one size out; paper: the paper's protocol "
                        "on the bundled SlimPajama runs (fit 60 mixtures at 310M-1.235B, evaluate 4 at 2.718B)")
    c.add_argument("--eval-sizes", help="model sizes to evaluate on (size protocol), comma list")
    c.add_argument("--n-fit", type=int, help="mixtures to fit on (mixtures protocol)")
    c.add_argument("--fit-fraction", type=float, default=0.5, help="tokens protocol: fraction of each run")
    data_columns(c)
    c.add_argument("--target", default=None, help="only these targets (comma list)")
    c.add_argument("--n-starts", type=int, default=64, help="random starts per fit (default 64, as "
                                                             "mixlaw.compare)")
    c.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    common(c)
    c.set_defaults(func=cmd_compare)

    dg = sub.add_parser("design", help="runs to train: initial mixtures, or the next runs given those trained",
                        description="Which small runs to train. 'initial': mixtures that cover the simplex "
                                    "(Dirichlet candidates with exact zeros, greedy maximin selection), each trained "
                                    "at every model size. 'next': the runs of a candidate pool that most reduce the "
                                    "uncertainty of the decision (the optimal mixture at a target scale and its "
                                    "loss) per unit of compute, given the runs trained so far. Both write a CSV of "
                                    "runs (run, N, D, compute, w_<domain>, ...).")
    dsub = dg.add_subparsers(dest="what", required=True, metavar="{initial,next}")
    di = dsub.add_parser("initial", help="the first runs to train",
                         description="An initial design: mixtures spread over the simplex at every model size.")
    di.add_argument("--domains", help="comma list of domain names")
    di.add_argument("--k", type=int, help="number of domains (names d1, d2, ...) instead of --domains")
    di.add_argument("--mixtures", type=int, required=True, help="number of mixtures")
    di.add_argument("--sizes", required=True, help="model sizes, comma list, e.g. 1e8,3e8,1e9")
    di.add_argument("--tokens-per-param", type=float, default=20.0, help="D = this x N (default 20)")
    di.add_argument("--zeros", type=float, default=0.2, help="probability of an exact zero weight (default 0.2)")
    di.add_argument("--alpha", type=float, default=1.0, help="Dirichlet concentration of the candidates (default 1)")
    di.add_argument("--bounds", help="per-domain limits, e.g. 'code=0.05:0.5'")
    di.add_argument("--seed", type=int, default=0)
    di.add_argument("--out", help="CSV file to write (default: print the table)")
    di.add_argument("--json", action="store_true", help="print a JSON summary")
    di.add_argument("--quiet", "-q", action="store_true")
    di.set_defaults(func=cmd_design)
    dn = dsub.add_parser("next", help="the next runs to train, given the runs trained so far",
                         description="Fit the runs trained so far (or read --fits), then choose --batch runs of "
                                     "the candidate pool (a CSV or Parquet table as 'design initial' writes: N, D, "
                                     "w_<domain>, optional run and compute) that most reduce the uncertainty of the "
                                     "optimal mixture at (--N, --D) and of its loss, per unit of compute. Prints the "
                                     "decision's uncertainty now and expected after the batch.")
    dn.add_argument("data", help="CSV or Parquet file of the runs trained so far, or 'slimpajama'")
    dn.add_argument("--candidates", required=True,
                    help="CSV (or Parquet: .parquet, .pq) of candidate runs, as 'mixlaw design initial' writes them")
    dn.add_argument("--N", type=float, required=True, help="model size of the decision (parameters)")
    dn.add_argument("--D", type=float, required=True, help="training tokens of the decision")
    dn.add_argument("--batch", type=int, default=10, help="runs to choose (default 10)")
    dn.add_argument("--checkpoints", type=int, default=1,
                    help="checkpoints recorded per candidate run given as one row, evenly spaced up to its D "
                         "(default 1: the last only)")
    dn.add_argument("--run-noise", default="auto",
                    help="sd of the noise the records (checkpoints) of one run share, loss units: 'auto' (default: "
                         "estimated from the fit's residuals) or a number (0: records independent)")
    dn.add_argument("--law", default=None, choices=ALL_LAWS, help="law to fit (default additive; not with --fits)")
    dn.add_argument("--fits", help="fits JSON of the runs (mixlaw fit --out) instead of fitting them here")
    dn.add_argument("--tolerance", default="0.01,0.0005",
                    help="precision the decision needs: of an optimal weight (absolute) and of a loss "
                         "(relative); default 0.01,0.0005")
    dn.add_argument("--bounds", help="per-domain limits of the optimal mixture, e.g. 'code=0.05:0.5'")
    data_columns(dn)
    dn.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    dn.add_argument("--out", help="CSV file to write (default: print the table)")
    dn.add_argument("--json", action="store_true", help="print JSON on stdout instead of tables")
    dn.add_argument("--threads", type=int, default=None, help="OpenMP threads for the fit (default: all cores)")
    dn.add_argument("--quiet", "-q", action="store_true", help="no progress messages on stderr")
    dn.set_defaults(func=cmd_design_next)

    lw = sub.add_parser("laws", help="list the laws and their parameters")
    lw.add_argument("--k", type=int, default=7, help="number of domains (default 7)")
    lw.add_argument("--json", action="store_true")
    lw.set_defaults(func=cmd_laws)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, TypeError, OSError, ImportError) as exc:  # OSError: unreadable data, unwritable --out/--plot
        print(f"mixlaw {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mixlaw {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
