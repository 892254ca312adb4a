"""The laws of the C++ core against a NumPy oracle and finite differences (issue 2)."""
from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mixlaw
from numpy_oracle import oracle_predict

# Every law, with both terms, without the N term and without the D term.
FORMS = [(name, n, d) for name in mixlaw.LAW_NAMES for n, d in ((True, True), (False, True), (True, False))]
# Baselines of other papers: no model-size term; bimix alone has a token term.
FORMS += [("dml_exp", False, False), ("dml_sum", False, False), ("linear", False, False),
          ("bimix", False, True), ("bimix", False, False)]


def make_law(name, k, n_term=True, d_term=True):
    # bimix's target is domain 0, which random_case never zeroes (its loss is infinite there).
    extra = {"target_domain": 0} if name == "bimix" else {}
    return mixlaw.law(name, None if name == "chinchilla" else k, n_term=n_term, d_term=d_term, **extra)


def random_case(rng, law, n, zeros=True):
    lo, hi = law.init_lower.copy(), law.init_upper.copy()
    p = lo + rng.random(law.n_params) * (hi - lo)
    N = 10 ** rng.uniform(5, 13, n)
    D = 10 ** rng.uniform(6, 14, n)
    H = None
    if law.k:
        H = rng.dirichlet(np.ones(law.k), n)
        if zeros and law.k > 1:
            mask = rng.random((n, law.k)) < 0.25
            mask[:, 0] = False  # keep every row on the simplex
            H[mask] = 0.0
            H /= H.sum(axis=1, keepdims=True)
    return p, N, D, H


def central_difference(f, x, i, h):
    e = np.zeros_like(x)
    e[i] = h
    # Richardson extrapolation of central differences: O(h^4) truncation error.
    d1 = (f(x + e) - f(x - e)) / (2 * h)
    d2 = (f(x + e / 2) - f(x - e / 2)) / h
    return (4 * d2 - d1) / 3


def assert_close_scale_aware(analytic, numeric, scale, rtol, what, noise=0.0):
    # Relative to the derivative's magnitude (and its column's), plus the rounding noise
    # of the finite difference itself (about eps * |L| / step).
    err = np.abs(analytic - numeric)
    bound = rtol * (np.abs(analytic) + scale) + noise
    worst = np.argmax(err - bound)
    assert np.all(err <= bound), (what, analytic.flat[worst], numeric.flat[worst], scale)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(FORMS), st.integers(1, 16), st.integers(0, 2**32 - 1))
def test_parameter_gradients_match_finite_differences(form, k, seed):
    name, n_term, d_term = form
    law = make_law(name, k, n_term, d_term)
    rng = np.random.default_rng(seed)
    p, N, D, H = random_case(rng, law, 6)
    pred, J = law.jacobian(p, N, D, H)
    w = rng.standard_normal(N.size)
    pred2, g = law.value_and_grad(p, w, N, D, H)
    np.testing.assert_array_equal(pred, pred2)
    # Log-scaled parameters are differenced in log space (as optimisers move them), the
    # others with a step relative to their magnitude.
    Lmax = np.max(np.abs(pred))
    for i in range(law.n_params):
        if law.log_scale[i]:
            z = np.log(np.where(law.log_scale, p, 1.0))  # only entry i (log-scaled) is used
            f = lambda zz: law.predict(np.where(np.arange(law.n_params) == i, np.exp(zz), p), N, D, H)
            num = central_difference(f, z, i, 1e-3) / p[i]
            noise = 100 * np.finfo(float).eps * Lmax / (1e-3 * p[i])
        else:
            h = 1e-4 * max(abs(p[i]), 1e-2)
            num = central_difference(lambda x: law.predict(x, N, D, H), p, i, h)
            noise = 100 * np.finfo(float).eps * Lmax / h
        scale = np.max(np.abs(J[:, i]))
        assert_close_scale_aware(J[:, i], num, scale, 1e-6, (name, law.param_names[i]), noise)
    np.testing.assert_allclose(g, J.T @ w, rtol=1e-12, atol=1e-12 * np.max(np.abs(J.T @ np.abs(w))))


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([f for f in FORMS if f[0] != "chinchilla"]), st.integers(1, 16), st.integers(0, 2**32 - 1))
def test_h_gradient_matches_finite_differences_of_the_oracle(form, k, seed):
    # grad_h treats the weights as independent variables, so it is differenced off the
    # simplex through the NumPy oracle (the core only accepts rows on the simplex).
    name, n_term, d_term = form
    law = make_law(name, k, n_term, d_term)
    rng = np.random.default_rng(seed)
    p, N, D, H = random_case(rng, law, 5, zeros=False)
    G = law.grad_h(p, N, D, H)
    Lmax = np.max(np.abs(law.predict(p, N, D, H)))
    for i in range(k):
        h = 1e-4 * H[:, i]
        num = np.empty(N.size)
        for j in range(N.size):
            def f(x, j=j):
                Hj = H[j:j + 1].copy()
                Hj[0, i] = x[0]
                return oracle_predict(law, p, N[j:j + 1], D[j:j + 1], Hj)[0]
            num[j] = central_difference(f, np.array([H[j, i]]), 0, h[j])
        noise = 100 * np.finfo(float).eps * Lmax / h
        assert_close_scale_aware(G[:, i], num, np.max(np.abs(G[:, i])), 1e-6, (name, "h", i), noise)


@pytest.mark.parametrize("k", [1, 2, 7, 64, 256])
@pytest.mark.parametrize("form", FORMS)
def test_core_matches_numpy_oracle(form, k):
    name, n_term, d_term = form
    law = make_law(name, k, n_term, d_term)
    rng = np.random.default_rng(k)
    p, N, D, H = random_case(rng, law, 200)
    np.testing.assert_allclose(law.predict(p, N, D, H), oracle_predict(law, p, N, D, H), rtol=1e-12)


def test_zero_weights_give_finite_values_and_derivatives():
    law = mixlaw.law("full", 4)
    rng = np.random.default_rng(0)
    p, N, D, _ = random_case(rng, law, 3)
    H = np.array([[1.0, 0, 0, 0], [0.5, 0.5, 0, 0], [0.25, 0.25, 0.25, 0.25]])
    pred, J = law.jacobian(p, N, D, H)
    assert np.all(np.isfinite(pred)) and np.all(np.isfinite(J))


@pytest.mark.parametrize("k", [3, 7])
def test_nesting_joint_contains_additive_and_full_contains_joint(k):
    rng = np.random.default_rng(1)
    add, joint, full = (mixlaw.law(n, k) for n in ("additive", "joint", "full"))
    p, N, D, H = random_case(rng, add, 50)
    pj = mixlaw.laws.embed(p, add, joint)
    pa = add.as_dict(p)
    dj = joint.as_dict(pj)
    assert dj["gA"] == 1 and dj["gB"] == 1 and dj["CA_1"] == pa["A"] and dj["CB_2"] == pa["B"]
    np.testing.assert_allclose(joint.predict(pj, N, D, H), add.predict(p, N, D, H), rtol=1e-12)
    pf = mixlaw.laws.embed(pj, joint, full)
    np.testing.assert_allclose(full.predict(pf, N, D, H), joint.predict(pj, N, D, H), rtol=1e-12)


def test_threads_give_bit_identical_results_on_a_chunked_problem():
    law = mixlaw.law("additive", 64)
    rng = np.random.default_rng(2)
    p, N, D, H = random_case(rng, law, 50_000, zeros=False)
    rec = law.records(N, D, H)
    assert rec.n_mixtures == 50_000
    w = rng.standard_normal(N.size)
    a = law.value_and_grad(p, w, rec, threads=1)
    b = law.value_and_grad(p, w, rec, threads=2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert np.array_equal(law.jacobian(p, N[:2000], D[:2000], H[:2000], threads=1)[1],
                          law.jacobian(p, N[:2000], D[:2000], H[:2000], threads=2)[1])


def test_two_python_threads_predict_concurrently():
    law = mixlaw.law("joint", 16)
    rng = np.random.default_rng(3)
    cases = [random_case(rng, law, 20_000, zeros=False) for _ in range(2)]
    expected = [oracle_predict(law, p, N, D, H) for p, N, D, H in cases]
    barrier = threading.Barrier(2)
    results = [None, None]

    def run(i):
        barrier.wait()
        for _ in range(5):
            results[i] = law.predict(*cases[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r, e in zip(results, expected):
        np.testing.assert_allclose(r, e, rtol=1e-12)


def test_records_are_grouped_and_reusable():
    law = mixlaw.law("additive", 3)
    rng = np.random.default_rng(4)
    p, N, D, _ = random_case(rng, law, 1)
    mixes = rng.dirichlet(np.ones(3), 4)
    H = np.repeat(mixes, 25, axis=0)
    N = np.tile([1e8, 2e8, 4e8, 8e8, 1.6e9], 20)
    D = np.repeat(np.geomspace(1e9, 1e11, 10), 10)
    rec = law.records(N, D, H)
    assert (rec.n, rec.n_mixtures, rec.n_sizes, rec.n_token_counts) == (100, 4, 5, 10)
    np.testing.assert_array_equal(law.predict(p, rec), law.predict(p, N, D, H))


def test_params_by_name_equal_params_as_array():
    law = mixlaw.law("simple", 3)
    rng = np.random.default_rng(5)
    p, N, D, H = random_case(rng, law, 10)
    np.testing.assert_array_equal(law.predict(law.as_dict(p), N, D, H), law.predict(p, N, D, H))
    with pytest.raises(ValueError, match="params"):
        law.predict({**law.as_dict(p), "Z": 1.0}, N, D, H)
    with pytest.raises(ValueError, match="params"):
        law.predict({n: 1.0 for n in law.param_names[1:]}, N, D, H)


def test_law_pickles_and_compares():
    law = mixlaw.law("joint", 5, d_term=False)
    back = pickle.loads(pickle.dumps(law))
    assert back == law and hash(back) == hash(law) and back.param_names == law.param_names
    assert law != mixlaw.law("joint", 5)
    assert "beta" not in law.param_names and "CB_1" not in law.param_names


def test_parameter_counts():
    for k in (1, 7, 20):
        counts = {n: make_law(n, k).n_params for n in mixlaw.ALL_LAWS}
        assert counts == {"chinchilla": 5, "additive": 5 + 2 * k, "joint": 5 + 4 * k, "simple": 6 + k,
                          "full": 5 + 6 * k, "dml_exp": 1 + k, "dml_sum": 1 + 2 * k, "bimix": 5, "linear": k}
    assert mixlaw.law("additive", 7, n_term=False, d_term=False).n_params == 1 + 14
    assert mixlaw.law("additive", 7, n_term=False).n_params == 3 + 14


def test_bad_input_names_the_argument():
    law = mixlaw.law("additive", 3)
    rng = np.random.default_rng(6)
    p, N, D, H = random_case(rng, law, 4, zeros=False)
    bad = [
        (dict(N=N.reshape(2, 2)), "N"),
        (dict(D=D[:3]), "D"),
        (dict(H=H[:, :2]), "H"),
        (dict(H=H[:, 0]), "H"),
        (dict(H=H[:3]), "H"),
        (dict(N=np.where(np.arange(4) == 1, np.nan, N)), "N"),
        (dict(D=np.where(np.arange(4) == 1, np.inf, D)), "D"),
        (dict(N=-N), "N"),
        (dict(D=np.zeros(4)), "D"),
        (dict(H=np.where(np.arange(12).reshape(4, 3) == 4, np.nan, H)), "H"),
        (dict(H=H * 1.01), "H"),
        (dict(H=np.array([[1.2, -0.2, 0.0]] * 4)), "H"),
        (dict(p=p[:-1]), "params"),
        (dict(p=np.where(np.arange(p.size) == 2, np.nan, p)), "params"),
        (dict(threads=0), "threads"),
        (dict(threads=-2), "threads"),
        (dict(N=np.array(["a", "b", "c", "d"], dtype=object)), "N"),
    ]
    for change, arg in bad:
        kw = {"p": p, "N": N, "D": D, "H": H, "threads": None, **change}
        with pytest.raises(ValueError, match=arg):
            law.predict(kw["p"], kw["N"], kw["D"], kw["H"], threads=kw["threads"])
    with pytest.raises(ValueError, match="name"):
        mixlaw.law("quadratic", 3)
    with pytest.raises(ValueError, match="k"):
        mixlaw.law("additive", 0)
    with pytest.raises(ValueError, match="k"):
        mixlaw.law("joint")


def test_accepts_other_dtypes_and_layouts():
    law = mixlaw.law("additive", 4)
    rng = np.random.default_rng(7)
    p, N, D, H = random_case(rng, law, 8, zeros=False)
    ref = law.predict(p, N, D, H)
    np.testing.assert_allclose(law.predict(p.astype(np.float32).astype(float), N.astype(np.float32),
                                           D.astype(np.float32), H.astype(np.float32) / H.astype(np.float32).sum(1, keepdims=True)),
                               ref, rtol=1e-5)
    np.testing.assert_array_equal(law.predict(p, N, D, np.asfortranarray(H)), ref)
    big = np.zeros((8, 8))
    big[:, ::2] = H
    np.testing.assert_array_equal(law.predict(p, N, D, big[:, ::2]), ref)
    np.testing.assert_array_equal(law.predict(list(p), list(N), list(D), H.tolist()), ref)


def test_records_grouping_by_hash_handles_interleaved_rows_many_values_and_signed_zeros():
    # Mixtures interleaved (not contiguous), -0.0 and 0.0 weights (equal, so one mixture),
    # and far more distinct N and D values than the interner's initial table.
    law = mixlaw.law("additive", 3)
    rng = np.random.default_rng(8)
    p = rng.uniform(law.init_lower, law.init_upper)
    mixes = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    n = 6000
    H = mixes[np.arange(n) % 3].copy()
    H[::6, 2] = -0.0  # rows of mixture 0 with a negative zero
    N = rng.uniform(1e7, 1e9, n)
    D = np.repeat(rng.uniform(1e9, 1e11, n // 2), 2)
    rec = law.records(N, D, H)
    assert (rec.n_mixtures, rec.n_sizes, rec.n_token_counts) == (3, n, n // 2)
    np.testing.assert_allclose(law.predict(p, rec), oracle_predict(law, p, N, D, np.abs(H)), rtol=1e-12)
