"""Law evaluation: predictions + parameter gradient (issue 2).

1. additive law on the SlimPajama training split (k = 7, 1,374 records): mixlaw vs the
   same computation in vectorised NumPy (bench/scipy_reference.NumpyLaw.value_and_grad),
   single thread.
2. additive law, k = 64, 100,000 synthetic records with distinct mixtures: ns per
   (record x domain) term on 1 and 2 threads, next to the scalar exp() floor measured in
   the same run (mixlaw._core.exp_floor_ns).
3. per-call overhead of Law.predict on 10 records from Python.

Run:  python bench/bench_laws.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import mixlaw
from scipy_reference import NumpyLaw


def median_time(fn, repeats: int, inner: int = 1) -> float:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        ts.append((time.perf_counter() - t0) / inner)
    return float(np.median(ts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    R = args.repeats

    train, _ = mixlaw.protocols.slimpajama_paper_split(mixlaw.datasets.slimpajama())
    law = mixlaw.law("additive", 7)
    rng = np.random.default_rng(0)
    p = rng.uniform(law.init_lower, law.init_upper)
    w = rng.standard_normal(len(train))
    rec = law.records(train.N, train.D, train.H)
    ref = NumpyLaw("additive", train.N, train.D, train.H)
    a = law.value_and_grad(p, w, rec, threads=1)
    b = ref.value_and_grad(p, w)
    err = max(np.max(np.abs(a[0] - b[0]) / b[0]), np.max(np.abs(a[1] - b[1])) / np.max(np.abs(b[1])))
    t_ours = median_time(lambda: law.value_and_grad(p, w, rec, threads=1), R, 200)
    t_raw = median_time(lambda: law.value_and_grad(p, w, train.N, train.D, train.H, threads=1), R, 50)
    t_np = median_time(lambda: ref.value_and_grad(p, w), R, 20)
    print(f"1. additive, SlimPajama train split ({len(train)} records, {rec.n_mixtures} mixtures, k=7), "
          f"predictions + J^T w, median of {R}")
    print(f"   numpy {t_np * 1e6:8.1f} us | mixlaw (prepared records) {t_ours * 1e6:7.1f} us -> "
          f"{t_np / t_ours:5.1f}x | mixlaw (raw arrays, prepared per call) {t_raw * 1e6:7.1f} us -> "
          f"{t_np / t_raw:5.1f}x | max rel. difference {err:.1e}")

    n, k = 100_000, 64
    H = rng.dirichlet(np.ones(k), n)
    N, D = 10 ** rng.uniform(8, 10, n), 10 ** rng.uniform(9, 11, n)
    law64 = mixlaw.law("additive", k)
    p64 = rng.uniform(law64.init_lower, law64.init_upper)
    w64 = rng.standard_normal(n)
    rec64 = law64.records(N, D, H)
    floor = float(np.median([mixlaw._core.exp_floor_ns() for _ in range(R)]))
    t1 = median_time(lambda: law64.value_and_grad(p64, w64, rec64, threads=1), R)
    t2 = median_time(lambda: law64.value_and_grad(p64, w64, rec64, threads=2), R)
    ns1, ns2 = t1 / (n * k) * 1e9, t2 / (n * k) * 1e9
    print(f"2. additive, k={k}, {n} distinct mixtures, predictions + J^T w, median of {R}")
    print(f"   scalar exp() floor {floor:.2f} ns | threads=1 {ns1:.2f} ns/term ({ns1 / floor:.2f}x floor) | "
          f"threads=2 {ns2:.2f} ns/term (speed-up {t1 / t2:.2f}x)")

    p10, N10, D10, H10 = p, train.N[:10].copy(), train.D[:10].copy(), train.H[:10].copy()
    t_call = median_time(lambda: law.predict(p10, N10, D10, H10), R, 20000)
    print(f"3. Law.predict on 10 records from Python: {t_call * 1e6:.2f} us per call (median of {R})")


if __name__ == "__main__":
    main()
