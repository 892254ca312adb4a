"""Concurrency (reliability issue): Python threads calling fit / predict /
optimize_mixture at once, a spawn-based process pool, and the fork-after-OpenMP hazard;
results identical to serial calls under all of them."""
from __future__ import annotations

import multiprocessing
import os
import sys
import threading

import numpy as np
import pytest

import mixlaw

LAW = mixlaw.law("additive", 3)
P = np.array([1.8, 3.0, 2.0, 0.3, 0.35, 1.0, 2.0, 3.0, 0.5, 0.6, 0.7])


def small_runs(seed: int = 0):
    rng = np.random.default_rng(seed)
    mix = np.array([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6], [1 / 3, 1 / 3, 1 / 3]])
    rows = [(n, d, h) for n in (2e7, 6e7, 2e8, 6e8) for h in mix for d in (1e9, 3e9, 1e10)]
    N = np.array([r[0] for r in rows])
    D = np.array([r[1] for r in rows])
    H = np.array([r[2] for r in rows])
    y = LAW.predict(P, N, D, H) * (1 + 1e-3 * rng.normal(size=N.size))
    cols = {"model_size": N, "n_tokens": D, "a_loss": y, "b_loss": 1.1 * y}
    cols.update({f"weight_d{i}": H[:, i] for i in range(3)})
    return mixlaw.load_runs(cols)


def work(kind: str, i: int, threads=None):
    """One unit of work; returns plain arrays so results can be compared exactly."""
    runs = small_runs(i % 3)
    if kind == "fit":
        fits = mixlaw.fit(runs, "additive", n_starts=4, seed=i % 2, threads=threads)
        return np.concatenate([np.concatenate([f.x, f.starts_fun]) for f in fits.values()])
    if kind == "predict":
        rng = np.random.default_rng(i)
        N = 10 ** rng.uniform(7, 12, 5000)
        H = rng.dirichlet(np.ones(3), 5000)
        return LAW.predict(P, N, 20 * N, H, threads=threads)
    fits = mixlaw.fit(runs, "additive", n_starts=2, threads=1)
    r = mixlaw.optimize_mixture(fits, N=np.geomspace(1e8, 1e11, 4), D=np.geomspace(2e9, 2e12, 4), threads=threads)
    return np.concatenate([r.h.ravel(), r.fun])


JOBS = [(kind, i) for i in range(4) for kind in ("fit", "predict", "optimize")]


@pytest.fixture(scope="module")
def serial():
    return {job: work(*job, threads=1) for job in JOBS}


def test_eight_python_threads_give_the_serial_results(serial):
    results: dict = {}
    errors: list = []
    barrier = threading.Barrier(8)

    def run(jobs):
        barrier.wait()  # start together
        try:
            for _ in range(3):
                for job in jobs:
                    out = work(*job)  # threads=None: OpenMP inside every Python thread
                    results.setdefault(job, []).append(out)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(JOBS[t::8],)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors
    for job, outs in results.items():
        for out in outs:
            np.testing.assert_array_equal(out, serial[job], err_msg=str(job))
    assert len(results) == len(JOBS)


def _pool_work(job):
    return work(*job, threads=1)


def test_spawn_pool_gives_the_serial_results(serial):
    ctx = multiprocessing.get_context("spawn")
    jobs = [j for j in JOBS if j[0] != "predict"][:4]
    with ctx.Pool(2) as pool:
        outs = pool.map(_pool_work, jobs, chunksize=1)
    for job, out in zip(jobs, outs):
        np.testing.assert_array_equal(out, serial[job], err_msg=str(job))


def _forked_child(conn):
    try:
        conn.send(work("fit", 0, threads=1))
    finally:
        conn.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork start method and GNU OpenMP: Linux only")
def test_forked_child_after_openmp_in_the_parent_completes_with_one_thread(serial):
    # The hazard (README, "Threads and processes"): GNU OpenMP's thread pool does not
    # survive fork(), so a forked child that starts a *parallel* region may hang. With
    # threads=1 the core never enters a parallel region and the child is safe.
    work("fit", 1, threads=2)  # the parent has an OpenMP thread pool now
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_forked_child, args=(child,))
    proc.start()
    child.close()
    got = parent.recv() if parent.poll(60) else None
    proc.join(10)
    if proc.is_alive():  # a hang fails the test instead of hanging CI
        proc.kill()
        proc.join()
        pytest.fail("forked child hung after OpenMP in the parent")
    assert proc.exitcode == 0 and got is not None
    np.testing.assert_array_equal(got, serial[("fit", 0)])


def test_thread_count_from_the_environment_does_not_change_results(serial):
    # threads=None honours OMP_NUM_THREADS; a subprocess with OMP_NUM_THREADS=1 and one
    # with 2 give the serial results.
    import subprocess

    code = ("import sys, numpy as np; sys.path.insert(0, %r); import test_concurrency as t; "
            "sys.stdout.buffer.write(t.work('fit', 0).tobytes())" % os.path.dirname(__file__))
    for n in ("1", "2"):
        env = dict(os.environ, OMP_NUM_THREADS=n)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=120, check=True)
        np.testing.assert_array_equal(np.frombuffer(out.stdout, dtype=float), serial[("fit", 0)])
