"""The matrix-free Gauss-Newton operator (objective_gauss_newton_operator): B x and diag(B)
against the dense B of `_core.objective(..., gauss_newton=True)` and against NumPy's
J^T W J x from a finite-difference Jacobian of `law.predict`; value and gradient as the
dense path's, bit for bit."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

import mixlaw
from mixlaw import _core

DELTA = 1e-3

# (name, k, options): every law, the reduced forms (absent slots), chinchilla without domains.
LAWS = [
    ("chinchilla", 0, {}),
    ("chinchilla", 0, {"n_term": False}),
    ("additive", 3, {}),
    ("additive", 4, {"n_term": False}),
    ("joint", 5, {}),
    ("joint", 3, {"d_term": False}),
    ("simple", 4, {}),
    ("full", 3, {}),
    ("full", 4, {"n_term": False}),
    ("dml_exp", 4, {}),
    ("dml_sum", 3, {}),
    ("bimix", 3, {"target_domain": 1}),
    ("linear", 5, {}),
]
# (loss, curvature, residual): raw residuals take the segmented fast path (all laws but `full`,
# whose exponents are mixture features), log residuals the general one.
PATHS = [("huber", "exact", "raw"), ("huber", "irls", "raw"), ("mse", "exact", "raw"),
         ("huber", "exact", "log"), ("huber", "irls", "log"), ("mse", "exact", "log")]


def make_law(name, k, options):
    return mixlaw.law(name, k if k else None, **options)


def random_records(law, rng, n_mix, sizes=(1e8, 3e8, 1e9), tokens=(2e9, 6e9, 2e10, 6e10)):
    """Run-shaped records (each mixture trained at a few sizes, several token counts each),
    shuffled; mixtures from a Dirichlet with some exact zeros (never the bimix target)."""
    k = law.k
    H0 = None
    if k:
        H0 = rng.dirichlet(np.full(k, 0.7), n_mix)
        zero = rng.random(H0.shape) < 0.25
        if law.target_domain is not None:
            zero[:, law.target_domain] = False
        H0[zero] = 0.0
        H0[:, law.target_domain if law.target_domain is not None else 0] += 0.05
        H0 /= H0.sum(axis=1, keepdims=True)
    rows = [(n, d, m) for m in range(n_mix) for n in sizes for d in tokens if rng.random() < 0.8]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    N = np.array([r[0] for r in rows])
    D = np.array([r[1] for r in rows])
    H = H0[[r[2] for r in rows]] if k else None
    return N, D, H


def random_problem(law, rng, residual, n_mix):
    N, D, H = random_records(law, rng, n_mix)
    theta = rng.uniform(law.init_lower, law.init_upper)
    pred = law.predict(theta, N, D, H)
    # noise of about delta on the residual's scale: records both in and outside the Huber band
    noise = rng.normal(0, 1.5 * DELTA, N.size)
    y = pred + noise * (pred if residual == "log" else 1.0)
    c = rng.uniform(0.5, 2.0, N.size)
    return N, D, H, theta, pred, y, c


def fd_jacobian(law, theta, N, D, H):
    """Five-point central differences of law.predict, one parameter at a time (error O(h^4):
    a step large enough that rounding stays small for parameters with a small derivative)."""
    J = np.empty((N.size, theta.size))
    for p in range(theta.size):
        h = 1e-3 * max(0.1, abs(theta[p]))

        def at(s):
            t = theta.copy()
            t[p] += s * h
            return law.predict(t, N, D, H)

        J[:, p] = (at(-2) - 8 * at(-1) + 8 * at(1) - at(2)) / (12 * h)
    return J


def numpy_curvature(pred, y, c, loss, curvature, residual):
    """Residual Jacobian factor dr/dL and Gauss-Newton weights c_j omega_j (dr/dL)^2, c normalised."""
    w = c / c.sum()
    if residual == "log":
        r, drdL = np.log(pred) - np.log(y), 1.0 / pred
    else:
        r, drdL = pred - y, np.ones_like(pred)
    inside = np.abs(r) <= DELTA if loss == "huber" else np.ones(r.size, dtype=bool)
    outside_weight = 1.0 if curvature == "irls" else 0.0
    omega = np.where(inside, 1.0, outside_weight * DELTA / np.abs(r))
    return drdL, w * omega, inside


def operator_and_dense(law, N, D, H, y, c, theta, x, loss, curvature, residual):
    rec = _core.Records(N, D, H)
    kw = dict(loss=loss, delta=DELTA, residual=residual, mean=True, curvature=curvature)
    f, g, B = _core.objective(law._core, rec, y, c, theta, gauss_newton=True, **kw)
    fo, go, Bx, dB = _core.objective(law._core, rec, y, c, theta, product=x, **kw)
    return (f, g, B), (fo, go, Bx, dB)


def assert_operator_matches_dense(dense, op, x):
    f, g, B = dense
    fo, go, Bx, dB = op
    # one code path for the sums: the same value and gradient bits, and diag(B) summed alike
    assert fo == f or (np.isnan(f) and np.isnan(fo))
    np.testing.assert_array_equal(go, g)
    np.testing.assert_array_equal(dB, np.diag(B))
    scale = np.abs(B) @ np.abs(x) + 1e-300  # the size of the terms summed into each entry
    np.testing.assert_allclose((Bx - B @ x) / scale, 0.0, rtol=0, atol=1e-13)


@pytest.mark.parametrize("name,k,options", LAWS, ids=[f"{n}-{k}-{'-'.join(o)}" for n, k, o in LAWS])
@pytest.mark.parametrize("loss,curvature,residual", PATHS)
def test_operator_matches_dense_and_finite_differences(name, k, options, loss, curvature, residual):
    rng = np.random.default_rng(zlib.crc32(repr((name, k, options, loss, curvature, residual)).encode()))
    law = make_law(name, k, options)
    N, D, H, theta, pred, y, c = random_problem(law, rng, residual, n_mix=9 if law.k else 1)
    x = rng.normal(size=law.n_params)
    dense, op = operator_and_dense(law, N, D, H, y, c, theta, x, loss, curvature, residual)
    assert_operator_matches_dense(dense, op, x)

    # An independent oracle: J^T W J x with J from finite differences of the predictions.
    drdL, wc, inside = numpy_curvature(pred, y, c, loss, curvature, residual)
    assert inside.any() and (loss == "mse" or not inside.all())
    Jr = fd_jacobian(law, theta, N, D, H) * drdL[:, None]
    ref = Jr.T @ (wc * (Jr @ x))
    scale = np.abs(Jr).T @ (wc * (np.abs(Jr) @ np.abs(x))) + 1e-300
    Bx, dB = op[2], op[3]
    np.testing.assert_allclose((Bx - ref) / scale, 0.0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(dB, np.einsum("jp,j,jp->p", Jr, wc, Jr), rtol=1e-6, atol=1e-300)


@pytest.mark.parametrize("name,k,n_mix", [("additive", 3, 1100), ("additive", 150, 260), ("joint", 41, 700),
                                          ("full", 7, 600), ("linear", 2, 515)])
@pytest.mark.parametrize("residual", ["raw", "log"])
def test_operator_over_many_mixtures(name, k, n_mix, residual):
    # Mixtures go through the operator in blocks (whose length depends on the number of
    # feature parameters) and feature rows four at a time: several blocks with a short last
    # one, and row counts that are not multiples of four.
    rng = np.random.default_rng(k * 1000 + n_mix)
    law = make_law(name, k, {})
    N, D, H = random_records(law, rng, n_mix, sizes=(3e8,), tokens=(2e9, 2e10))
    theta = rng.uniform(law.init_lower, law.init_upper)
    pred = law.predict(theta, N, D, H)
    y = pred + rng.normal(0, 1.5 * DELTA, N.size) * (pred if residual == "log" else 1.0)
    c = rng.uniform(0.5, 2.0, N.size)
    for curvature in ("exact", "irls"):
        x = rng.normal(size=law.n_params)
        dense, op = operator_and_dense(law, N, D, H, y, c, theta, x, "huber", curvature, residual)
        assert_operator_matches_dense(dense, op, x)


def test_operator_is_linear_and_symmetric():
    rng = np.random.default_rng(5)
    law = make_law("joint", 6, {})
    N, D, H, theta, pred, y, c = random_problem(law, rng, "raw", n_mix=30)
    rec = _core.Records(N, D, H)
    P = law.n_params
    x, z = rng.normal(size=P), rng.normal(size=P)
    Bx = _core.objective(law._core, rec, y, c, theta, product=x)[2]
    Bz = _core.objective(law._core, rec, y, c, theta, product=z)[2]
    Bxz = _core.objective(law._core, rec, y, c, theta, product=2.0 * x - z)[2]
    e = _core.objective(law._core, rec, y, c, theta, product=np.eye(P)[3])[2]
    scale = np.abs(Bx).max() + np.abs(Bz).max()
    np.testing.assert_allclose(Bxz, 2.0 * Bx - Bz, rtol=0, atol=1e-13 * scale)
    assert z @ Bx == pytest.approx(x @ Bz, rel=1e-12)
    assert x @ Bx >= 0 and z @ Bz >= 0  # B = J^T W J with W >= 0
    assert e[3] == _core.objective(law._core, rec, y, c, theta, product=x)[3][3]


def test_product_argument_is_checked():
    rng = np.random.default_rng(0)
    law = make_law("additive", 2, {})
    N, D, H, theta, pred, y, c = random_problem(law, rng, "raw", n_mix=3)
    rec = _core.Records(N, D, H)
    with pytest.raises(ValueError, match="product"):
        _core.objective(law._core, rec, y, c, theta, product=np.zeros(law.n_params + 1))
    with pytest.raises(ValueError, match="product"):
        _core.objective(law._core, rec, y, c, theta, product=np.zeros((law.n_params, 1)))
    with pytest.raises(ValueError, match="product"):
        _core.objective(law._core, rec, y, c, theta, product=np.zeros(law.n_params), gauss_newton=True)
