"""Reliability measurements (not a test; run by hand, numbers go into the closing note).

(a) Memory: resident set size before and after 10,000 repeated small ``mixlaw.fit`` calls
    (tiny data, n_starts=1, threads=1), 10,000 ``Law.predict`` and 10,000
    ``optimize_mixture`` calls. Each loop is warmed up first (100 calls) so one-time
    allocations (imports, caches, the OpenMP pool) are not counted as growth.
(b) Ctrl-C: a long fit runs in the main thread; a timer thread sends SIGINT after 1 s and
    the time from the signal to the caught KeyboardInterrupt is measured, 5 times, for
    many short starts (full law on SlimPajama, 2,000 starts) and for few very long starts
    (500 basin hops each).
(c) SIGINT latency of every long call (issue 21), each in a child process: the parent sends
    SIGINT at a given time after the child entered the call and the child prints when it
    caught KeyboardInterrupt; both read CLOCK_MONOTONIC, so phases that hold the GIL count
    (a timer thread inside the process would itself wait for the GIL, and measure ~0 ms
    there). Repetition i signals at 0.5 + 0.3 i s (predict: 0.1 + 0.2 i s), so the
    repetitions land in different phases of the call. Calls: a fit at P = 2,053 (additive
    law, 1,024 domains, 400 mixtures; the signal counted from the start of fit, and from its
    solver call), one with dense steps at P = 605 (linear_solver="dense"), a batch
    of 200,000 optimal mixtures (plain simplex: four per vector; bounded: one at a time),
    bootstrap (200 resamples), grid (2 laws x 8 targets x 10 seeds), compare (3 laws) and
    predict on 3,000,000 records with distinct mixtures.

Usage: python bench/reliability.py [--calls 10000] [--repeats 5] [--only latency]

Latest result (2-core machine shared with a sanitizer build running at the same time)::

    mixlaw 0.1.0, 2 CPUs, OMP_NUM_THREADS=None
    fit               10000 calls in  21.45 s: RSS before    40.1 MB, after    40.2 MB, growth +0.07 MB
    predict           10000 calls in   0.14 s: RSS before    40.2 MB, after    40.2 MB, growth +0.00 MB
    optimize_mixture  10000 calls in   0.66 s: RSS before    40.2 MB, after    40.2 MB, growth +0.00 MB
    Ctrl-C latency, full law on SlimPajama, 2000 starts: median 28.2 ms, max 48.1 ms (16.2, 28.2, 32.1, 48.1, 20.3 ms)
    Ctrl-C latency, full law on SlimPajama, 2 starts x 500 hops: median 28.1 ms, max 44.0 ms (44.0, 32.1, 28.1, 14.1, 16.3 ms)

(c) is in bench/README.md, section 5.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np

import mixlaw


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    import resource  # not Linux: peak RSS only

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tiny_runs():
    law = mixlaw.law("additive", 2)
    p = [1.8, 3.0, 2.0, 0.3, 0.35, 1.0, 2.0, 0.5, 0.6]
    mix = np.array([[0.7, 0.3], [0.4, 0.6], [0.1, 0.9]])
    rows = [(n, d, h) for n in (2e7, 1e8, 5e8) for h in mix for d in (1e9, 4e9)]
    N, D, H = (np.array([r[i] for r in rows]) for i in range(3))
    y = law.predict(p, N, D, H)
    return mixlaw.load_runs({"model_size": N, "n_tokens": D, "weight_a": H[:, 0], "weight_b": H[:, 1], "x_loss": y})


def memory(calls: int) -> None:
    runs = tiny_runs()
    fits = mixlaw.fit(runs, "additive", n_starts=1, threads=1)
    law = fits["x"].law
    x = fits["x"].x
    rng = np.random.default_rng(0)
    N = 10 ** rng.uniform(7, 10, 100)
    H = rng.dirichlet(np.ones(2), 100)
    loops = {
        "fit": lambda: mixlaw.fit(runs, "additive", n_starts=1, threads=1),
        "predict": lambda: law.predict(x, N, 20 * N, H, threads=1),
        "optimize_mixture": lambda: mixlaw.optimize_mixture(fits, N=1e9, D=2e10, threads=1),
    }
    for name, fn in loops.items():
        for _ in range(100):
            fn()
        before = rss_mb()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        dt = time.perf_counter() - t0
        after = rss_mb()
        print(f"{name:17s} {calls} calls in {dt:6.2f} s: RSS before {before:7.1f} MB, after {after:7.1f} MB, "
              f"growth {after - before:+.2f} MB", flush=True)


def interrupt_latency(repeats: int, **fit_kw) -> list[float]:
    runs = mixlaw.datasets.slimpajama()
    train, _ = mixlaw.protocols.slimpajama_paper_split(runs)
    out = []
    # A shell's background job starts with SIGINT ignored, and Python then installs no
    # handler: restore the default one so the signal becomes a KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for _ in range(repeats):
        sent: list = []

        def fire():
            sent.append(time.perf_counter())
            os.kill(os.getpid(), signal.SIGINT)

        timer = threading.Timer(1.0, fire)
        timer.start()
        try:
            mixlaw.fit(train, "full", nest=False, **fit_kw)
            timer.cancel()
            raise RuntimeError("the fit ended before the signal; make it longer")
        except KeyboardInterrupt:
            out.append(time.perf_counter() - sent[0])
    return out


# -- (c) SIGINT latency of every long call, measured from outside --------------------------
_CHILD = """
import os, signal, sys, time, warnings
warnings.simplefilter("ignore")
import numpy as np
import mixlaw
from mixlaw import _core, evaluate
signal.signal(signal.SIGINT, signal.default_int_handler)
{setup}
marker = {marker!r}
if marker:
    _orig = getattr(_core, marker)
    def _marked(*a, **kw):
        print("in core", flush=True)
        return _orig(*a, **kw)
    setattr(_core, marker, _marked)
print("start", flush=True)
try:
    call()
    print("finished", flush=True)
except KeyboardInterrupt:
    print("caught", repr(time.clock_gettime(time.CLOCK_MONOTONIC)), flush=True)
"""

_ADDITIVE = """
rng = np.random.default_rng(3)
k, n_mix = {k}, 400
law = mixlaw.law("additive", k)
truth = np.concatenate([[1.8, 400.0, 400.0, 0.35, 0.3], np.exp(rng.uniform(np.log(0.5), np.log(5), k)),
                        rng.uniform(0.2, 0.8, k)])
Hm = rng.dirichlet(np.ones(k), n_mix)
Hm[rng.random(Hm.shape) < 0.2] = 0
Hm[Hm.sum(1) == 0, 0] = 1
Hm /= Hm.sum(1, keepdims=True)
NN, DD = np.meshgrid([50e6, 100e6, 200e6, 400e6], np.array([1, 2, 4, 8, 16]) * 1e9, indexing="ij")
N, D, H = np.tile(NN.ravel(), n_mix), np.tile(DD.ravel(), n_mix), np.repeat(Hm, NN.size, axis=0)
y = law.predict(truth, N, D, H) * (1 + 1e-3 * rng.standard_normal(N.size))
runs = mixlaw.Runs(N, D, H, targets={{"loss": y}})
def call():
    mixlaw.fit(runs, "additive", n_starts=4, threads=2{extra})
"""

_MIXTURES = """
law = mixlaw.law("joint", 7)
rng = np.random.default_rng(3)
p = rng.uniform(law.init_lower, law.init_upper)
fit = mixlaw.Fit(law=law, target="t", x=law.params(p), fun=0.0, success=True, status=1, message="", nit=0,
                 nfev=0, njev=0, starts_fun=np.zeros(1), starts_status=np.ones(1, dtype=int), n_records=0,
                 train={{}}, domains=tuple(f"d{{i}}" for i in range(7)))
N = np.geomspace(1e8, 1e11, 200_000)
def call():
    mixlaw.optimize_mixture(fit, N=N, D=20 * N, threads=2{extra})
"""

_SLIMPAJAMA = """
runs = mixlaw.datasets.slimpajama()
train, _ = mixlaw.protocols.slimpajama_paper_split(runs)
def call():
    {call}
"""

_PREDICT = """
law = mixlaw.law("joint", 3)
rng = np.random.default_rng(0)
p = rng.uniform(law.init_lower, law.init_upper)
N = 10 ** rng.uniform(7, 11, 3_000_000)
H = rng.dirichlet(np.ones(3), N.size)
def call():
    law.predict(p, N, 20 * N, H, threads=2)
"""

LATENCY_CASES = [  # (label, setup, marker, seconds to the first signal, seconds between signals)
    ("fit, additive k=1024 (P=2053), from the start of fit", _ADDITIVE.format(k=1024, extra=""), None),
    ("fit, additive k=1024 (P=2053), from its solver call", _ADDITIVE.format(k=1024, extra=""), "fit_many"),
    ("fit, additive k=300 (P=605), linear_solver='dense', from its solver call",
     _ADDITIVE.format(k=300, extra=", linear_solver='dense'"), "fit_many"),
    ("optimize_mixture, 200,000 budgets, plain simplex", _MIXTURES.format(extra=""), None),
    ("optimize_mixture, 200,000 budgets, bounded", _MIXTURES.format(extra=", bounds={'d0': (0.01, 1.0)}"), None),
    ("bootstrap, additive, 200 resamples x 8 starts",
     _SLIMPAJAMA.format(call='evaluate.bootstrap(train, "additive", n_boot=200, n_starts=8, threads=2)'), None),
    ("grid, additive+joint x 8 targets x 10 seeds, 16 starts",
     _SLIMPAJAMA.format(call='mixlaw.grid(runs, ["additive", "joint"], evaluate.PaperSplit(n_fit_mixtures=30), '
                             'seeds=range(10), n_starts=16, threads=2)'), None),
    ("compare, additive+joint+full, 64 starts",
     _SLIMPAJAMA.format(call='mixlaw.compare(runs, ["additive", "joint", "full"], evaluate.PaperSplit(), n_starts=64, '
                             'threads=2)'), None),
    ("predict, 3,000,000 records, distinct mixtures", _PREDICT, None, 0.1, 0.2),
]


def child_latency(setup: str, marker, delay: float) -> float:
    """Seconds from SIGINT (sent `delay` s after the child entered call(), or its first call
    of _core.<marker>) to the child's KeyboardInterrupt; nan if the call ended first."""
    script = _CHILD.format(setup=textwrap.dedent(setup), marker=marker)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        want = "in core" if marker else "start"
        while True:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"child ended early: {proc.stderr.read()}")
            if line.strip() == want:
                break
        time.sleep(delay)
        sent = time.clock_gettime(time.CLOCK_MONOTONIC)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=3600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for line in out.splitlines():
        if line.startswith("caught "):
            return float(line.split()[1]) - sent
    if "finished" in out:
        return float("nan")
    raise RuntimeError(f"child failed: {err}")


def latency_table(repeats: int) -> None:
    print(f"SIGINT latency, {repeats} repetitions (signal at 0.5 + 0.3 i s; predict 0.1 + 0.2 i s); load average before: "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    print(f"| call | median (ms) | max (ms) | all (ms) |\n|---|---:|---:|---|")
    for label, setup, marker, *when in LATENCY_CASES:
        first, step = when or (0.5, 0.3)
        lat = [child_latency(setup, marker, first + step * i) for i in range(repeats)]
        ok = [v for v in lat if v == v]
        med = f"{1e3 * statistics.median(ok):.1f}" if ok else "-"
        mx = f"{1e3 * max(ok):.1f}" if ok else "-"
        print(f"| {label} | {med} | {mx} | {', '.join('ended first' if v != v else f'{1e3 * v:.1f}' for v in lat)} |",
              flush=True)
    print(f"load average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", choices=["memory", "ctrl-c", "latency"], default=None,
                    help="run one part: (a) memory, (b) ctrl-c, (c) latency (default: all)")
    a = ap.parse_args()
    print(f"mixlaw {mixlaw.__version__}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    if a.only in (None, "memory"):
        memory(a.calls)
    if a.only in (None, "ctrl-c"):
        for label, kw in (("2000 starts", dict(n_starts=2000)), ("2 starts x 500 hops", dict(n_starts=2, hops=500))):
            lat = interrupt_latency(a.repeats, **kw)
            print(f"Ctrl-C latency, full law on SlimPajama, {label}: median {1e3 * statistics.median(lat):.1f} ms, "
                  f"max {1e3 * max(lat):.1f} ms ({', '.join(f'{1e3 * v:.1f}' for v in lat)} ms)", flush=True)
    if a.only in (None, "latency"):
        latency_table(a.repeats)


if __name__ == "__main__":
    main()
