"""Reliability measurements (not a test; run by hand, numbers go into the closing note).

(a) Memory: resident set size before and after 10,000 repeated small ``mixlaw.fit`` calls
    (tiny data, n_starts=1, threads=1), 10,000 ``Law.predict`` and 10,000
    ``optimize_mixture`` calls. Each loop is warmed up first (100 calls) so one-time
    allocations (imports, caches, the OpenMP pool) are not counted as growth.
(b) Ctrl-C: a long fit runs in the main thread; a timer thread sends SIGINT after 1 s and
    the time from the signal to the caught KeyboardInterrupt is measured, 5 times, for
    many short starts (full law on SlimPajama, 2,000 starts) and for few very long starts
    (500 basin hops each).

Usage: python bench/reliability.py [--calls 10000] [--repeats 5]

Latest result (2-core machine shared with a sanitizer build running at the same time)::

    mixlaw 0.1.0, 2 CPUs, OMP_NUM_THREADS=None
    fit               10000 calls in  21.45 s: RSS before    40.1 MB, after    40.2 MB, growth +0.07 MB
    predict           10000 calls in   0.14 s: RSS before    40.2 MB, after    40.2 MB, growth +0.00 MB
    optimize_mixture  10000 calls in   0.66 s: RSS before    40.2 MB, after    40.2 MB, growth +0.00 MB
    Ctrl-C latency, full law on SlimPajama, 2000 starts: median 28.2 ms, max 48.1 ms (16.2, 28.2, 32.1, 48.1, 20.3 ms)
    Ctrl-C latency, full law on SlimPajama, 2 starts x 500 hops: median 28.1 ms, max 44.0 ms (44.0, 32.1, 28.1, 14.1, 16.3 ms)
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    print(f"mixlaw {mixlaw.__version__}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    memory(a.calls)
    for label, kw in (("2000 starts", dict(n_starts=2000)), ("2 starts x 500 hops", dict(n_starts=2, hops=500))):
        lat = interrupt_latency(a.repeats, **kw)
        print(f"Ctrl-C latency, full law on SlimPajama, {label}: median {1e3 * statistics.median(lat):.1f} ms, "
              f"max {1e3 * max(lat):.1f} ms ({', '.join(f'{1e3 * v:.1f}' for v in lat)} ms)", flush=True)


if __name__ == "__main__":
    main()
