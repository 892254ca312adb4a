"""The fitting objective of the C++ core against NumPy built from the law's Jacobian:
value, gradient and the Gauss-Newton matrix B = J^T diag(c_j rho''_j) J (issue 3)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import mixlaw
from mixlaw import _core

LAWS = [("chinchilla", {}), ("additive", {}), ("joint", {}), ("simple", {}), ("full", {}),
        ("additive", {"n_term": False}), ("joint", {"n_term": False, "d_term": False})]


def random_case(name, options, k, rng, n=80):
    law = mixlaw.law(name, k if name != "chinchilla" else None, **options)
    N = np.exp(rng.uniform(np.log(1e8), np.log(3e9), n))
    D = np.exp(rng.uniform(np.log(1e9), np.log(1e11), n))
    H = rng.dirichlet(np.ones(k), n) if law.k else None
    if H is not None:
        H[rng.random(H.shape) < 0.2] = 0.0
        H[:, 0] += 1e-3
        H /= H.sum(axis=1, keepdims=True)
    theta = rng.uniform(law.init_lower, law.init_upper)
    pred, J = law.jacobian(theta, N, D, H)
    y = pred + rng.normal(0, 2e-3, n)  # about half the residuals fall outside the Huber band
    return law, N, D, H, theta, y, pred, J


def assert_matches_numpy_gauss_newton(f, g, B, r, Jr, w, loss, curvature="exact"):
    """f, g and B of `_core.objective(..., gauss_newton=True)` against NumPy: residuals r,
    their Jacobian Jr, normalised weights w, Huber(1e-3) or MSE."""
    inside = np.abs(r) <= 1e-3 if loss == "huber" else np.ones_like(r, dtype=bool)
    rho = np.where(inside, 0.5 * r * r, 1e-3 * (np.abs(r) - 0.5e-3))
    psi = np.where(inside, r, 1e-3 * np.sign(r))
    # exact rho'' (0 outside the band, the default) or the IRLS weight delta / |r|
    curv = np.where(inside, 1.0, 1e-3 / np.abs(r) if curvature == "irls" else 0.0)
    B_ref = Jr.T @ (Jr * (w * curv)[:, None])
    assert f == pytest.approx(np.sum(w * rho), rel=1e-12)
    np.testing.assert_allclose(g, Jr.T @ (w * psi), rtol=1e-10, atol=1e-12 * np.abs(Jr.T @ (w * np.abs(psi))).max())
    scale = np.sqrt(np.outer(np.diag(B_ref), np.diag(B_ref))) + 1e-300
    np.testing.assert_allclose(B / scale, B_ref / scale, rtol=0, atol=1e-11)
    np.testing.assert_array_equal(B, B.T)
    return inside


@pytest.mark.parametrize("name,options", LAWS)
@pytest.mark.parametrize("loss", ["huber", "mse"])
def test_gauss_newton_matrix_matches_numpy(name, options, loss):
    rng = np.random.default_rng(7)
    for k in (1, 3, 7):
        law, N, D, H, theta, y, pred, J = random_case(name, options, k, rng)
        c = rng.uniform(0.5, 2.0, y.size)
        rec = _core.Records(N, D, H)
        f, g, B = _core.objective(law._core, rec, y, c, theta, loss=loss, delta=1e-3, mean=True, gauss_newton=True)
        assert_matches_numpy_gauss_newton(f, g, B, pred - y, J, c / c.sum(), loss)


@pytest.mark.parametrize("name,options", LAWS)
@pytest.mark.parametrize("loss,curvature,residual", [("huber", "exact", "raw"), ("huber", "irls", "raw"),
                                                     ("mse", "exact", "raw"), ("huber", "exact", "log")])
def test_gauss_newton_on_run_shaped_records(name, options, loss, curvature, residual):
    # Real tables repeat N within a mixture (one run per size, many checkpoints) and D across
    # runs: the Gauss-Newton fast path sums over such (mixture, N) segments. Records are
    # shuffled so that a segment's records are not contiguous in the input.
    rng = np.random.default_rng(11)
    k = 1 if name == "chinchilla" else 4
    law = mixlaw.law(name, k if name != "chinchilla" else None, **options)
    sizes, tokens = np.array([1e8, 3e8, 1e9]), np.geomspace(2e9, 4e10, 6)
    mixes = rng.dirichlet(np.ones(k), 5) if law.k else [None]
    rows = [(n, d, h) for h in mixes for n in sizes for d in tokens[rng.random(tokens.size) < 0.8]]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    N = np.array([r[0] for r in rows])
    D = np.array([r[1] for r in rows])
    H = np.array([r[2] for r in rows]) if law.k else None
    theta = rng.uniform(law.init_lower, law.init_upper)
    pred, J = law.jacobian(theta, N, D, H)
    # noise of about delta on the residual's scale: about half the records fall outside the band
    y = pred + rng.normal(0, 1.5e-3, N.size) * (pred if residual == "log" else 1.0)
    c = rng.uniform(0.5, 2.0, y.size)
    rec = _core.Records(N, D, H)
    f, g, B = _core.objective(law._core, rec, y, c, theta, loss=loss, delta=1e-3, residual=residual, mean=True,
                              gauss_newton=True, curvature=curvature)
    if residual == "log":
        r, drdL = np.log(pred) - np.log(y), 1 / pred
    else:
        r, drdL = pred - y, np.ones_like(pred)
    inside = assert_matches_numpy_gauss_newton(f, g, B, r, J * drdL[:, None], c / c.sum(), loss, curvature)
    assert 0 < inside.sum() < r.size or loss == "mse"


_BUILD_CHECK = r"""
import hashlib, numpy as np, mixlaw
from mixlaw import _core, datasets, protocols
h = hashlib.sha256()
train, _ = protocols.slimpajama_paper_split(datasets.slimpajama())
N, D, H, y = train.target("c4")
rec = _core.Records(N, D, H)
rng = np.random.default_rng(0)
for name in ("additive", "joint", "full"):
    law = mixlaw.law(name, train.k)
    for _ in range(3):
        theta = rng.uniform(law.init_lower, law.init_upper)
        for a in _core.objective(law._core, rec, y, None, theta, gauss_newton=True):
            h.update(np.float64(a).tobytes())
fits = mixlaw.fit(train, "joint", targets=["c4", "github"], n_starts=4, seed=1)
for f in fits.values():
    h.update(np.asarray(f.x).tobytes())
r = mixlaw.optimize_mixture(list(fits.values()), N=[1e9, 3e9], D=[2e10, 1e11], n_starts=2)  # four per vector
h.update(np.asarray(r.h).tobytes())
r = mixlaw.optimize_mixture(list(fits.values()), N=1e9, D=2e10, n_starts=1)  # one at a time
h.update(np.asarray(r.x).tobytes())
print(_core.cpu_has_avx2(), h.hexdigest())
"""


def test_avx2_and_baseline_builds_give_the_same_bits():
    # The vectorised kernels (batched exp/log, the Gauss-Newton expansion, the mixture
    # evaluator) are compiled for the baseline and for AVX2 and chosen at run time; both must
    # round identically, so a fit or a mixture never depends on the machine's vector unit.
    def run(disable: str):
        env = dict(os.environ, MIXLAW_DISABLE_AVX2=disable)
        p = subprocess.run([sys.executable, "-c", _BUILD_CHECK], capture_output=True, text=True, timeout=300, env=env)
        assert p.returncode == 0, p.stderr
        avx2, digest = p.stdout.split()
        return avx2 == "True", digest

    if not _core.cpu_has_avx2():
        pytest.skip("this CPU (or MIXLAW_DISABLE_AVX2) runs the baseline build only")
    fast, base = run("0"), run("1")
    assert fast[0] and not base[0]
    assert fast[1] == base[1]
