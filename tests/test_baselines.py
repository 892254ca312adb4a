"""Baseline laws of other papers (Data Mixing Laws, BiMix, linear) through the whole API
(issue 7). Their gradients and NumPy oracle are tested with the paper's laws in
test_core_laws.py (they are part of FORMS there)."""
from __future__ import annotations

import json
import pickle
import warnings

import numpy as np
import pytest

import mixlaw
from mixlaw import evaluate
from numpy_oracle import oracle_predict

K = 4
DOMAINS = ("a", "b", "c", "d")


def synthetic_runs(law, params, n_mix=40, seed=0, tokens=(1e9, 2e9, 4e9, 8e9), noise=0.0):
    """Runs on a random mixture design at one model size, with losses from ``law``."""
    rng = np.random.default_rng(seed)
    H = rng.dirichlet(np.ones(K), n_mix)
    H = np.repeat(H, len(tokens), axis=0)
    D = np.tile(np.asarray(tokens, dtype=float), n_mix)
    N = np.full(D.size, 1e8)
    y = oracle_predict(law, params, N, D, H)
    y = y * (1 + noise * rng.standard_normal(y.size))
    cols = {"N": N, "D": D, **{f"w_{d}": H[:, i] for i, d in enumerate(DOMAINS)}, "loss_c": y}
    return mixlaw.load_runs(cols, weights="w_*", N="N", D="D", targets="loss_*")


PLANTED = {
    "dml_exp": {"E": 1.8, "t_1": 0.9, "t_2": -0.3, "t_3": 0.2, "t_4": 0.5},
    "dml_sum": {"E": 1.5, "C_1": 0.3, "C_2": 0.5, "C_3": 0.2, "C_4": 0.4,
                "t_1": -1.0, "t_2": -0.5, "t_3": -2.0, "t_4": 0.7},
    "linear": {"c_1": 3.1, "c_2": 2.7, "c_3": 2.9, "c_4": 3.4},
    "bimix": {"E": 1.7, "C": 0.4, "gamma": 0.35, "B": 0.8, "beta": 0.3},
}


def planted_law(name):
    # bimix describes target "c", the third domain
    return mixlaw.law(name, K, target_domain=2) if name == "bimix" else mixlaw.law(name, K)


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_planted_parameters_are_recovered(name):
    L = planted_law(name)
    runs = synthetic_runs(L, PLANTED[name], tokens=(1e9, 2e9, 4e9, 8e9) if name == "bimix" else (2e9,))
    fits = mixlaw.fit(runs, "bimix" if name == "bimix" else name, n_starts=16, loss="mse")
    f = fits["c"]
    assert f.law == L
    # noise-free data: the fitted law reproduces the losses
    assert f.train["mre"] < 1e-4, (name, f.train, f.message)
    if name in ("dml_exp", "linear", "bimix"):  # identifiable: the parameters themselves come back
        for p, v in PLANTED[name].items():
            assert f.params[p] == pytest.approx(v, rel=1e-3, abs=1e-4), (name, p)


def test_bimix_by_name_describes_each_target_through_its_own_domain():
    runs = mixlaw.datasets.slimpajama().where(model_size=[1.22e8])
    fits = mixlaw.fit(runs, "bimix", targets=["c4", "book"], n_starts=2)
    assert fits["c4"].law.target_domain == runs.domains.index("c4")
    assert fits["book"].law.target_domain == runs.domains.index("book")
    assert fits["c4"].law.param_names == ("E", "C", "gamma", "B", "beta")
    with pytest.raises(ValueError, match="law: .*openhermes"):
        mixlaw.fit(runs, "bimix", targets=["openhermes"], n_starts=2)
    # an explicit domain is the user's choice, for any target
    f = mixlaw.fit(runs, mixlaw.law("bimix", 7, target_domain=2), targets=["openhermes"], n_starts=2)["openhermes"]
    assert f.law.target_domain == 2


def test_bimix_rejects_runs_without_the_target_domain():
    L = planted_law("bimix")
    runs = synthetic_runs(L, PLANTED["bimix"])
    H = runs.H.copy()
    H[5] = [0.5, 0.5, 0.0, 0.0]  # domain c (the target's) absent: bimix's loss is infinite there
    bad = mixlaw.load_runs({"N": runs.N, "D": runs.D, **{f"w_{d}": H[:, i] for i, d in enumerate(DOMAINS)},
                            "loss_c": runs.targets["c"]}, weights="w_*", N="N", D="D", targets="loss_*")
    with pytest.raises(ValueError, match="H: record 5"):
        mixlaw.fit(bad, L, n_starts=2)
    assert np.isinf(L.predict(PLANTED["bimix"], [1e8], [1e9], [[0.5, 0.5, 0.0, 0.0]])[0])


def test_target_domain_is_validated():
    with pytest.raises(ValueError, match="target_domain"):
        mixlaw.law("bimix", 4)
    with pytest.raises(ValueError, match="target_domain"):
        mixlaw.law("bimix", 4, target_domain=4)
    with pytest.raises(ValueError, match="target_domain"):
        mixlaw.law("additive", 4, target_domain=1)
    with pytest.raises(TypeError, match="target_domain"):
        mixlaw.law("bimix", 4, target_domain="c")


def test_baseline_laws_pickle_and_round_trip_through_json():
    for name in PLANTED:
        L = planted_law(name)
        assert pickle.loads(pickle.dumps(L)) == L
    runs = synthetic_runs(planted_law("bimix"), PLANTED["bimix"])
    f = mixlaw.fit(runs, "bimix", n_starts=2)["c"]
    back = mixlaw.Fit.from_dict(json.loads(json.dumps(f.to_dict())))
    assert back.law == f.law and back.law.target_domain == 2
    np.testing.assert_array_equal(back.predict(runs), f.predict(runs))


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_optimal_mixtures_work_for_baselines(name):
    L = planted_law(name)
    runs = synthetic_runs(L, PLANTED[name], tokens=(1e9, 2e9, 4e9, 8e9) if name == "bimix" else (2e9,))
    fits = mixlaw.fit(runs, L, n_starts=4, loss="mse")
    res = mixlaw.optimize_mixture(fits, N=1e8, D=2e9, bounds={"a": (0.1, 0.6)})
    h = np.array([res.h[d] for d in DOMAINS])
    assert abs(h.sum() - 1) < 1e-12 and np.all(h >= 0) and 0.1 <= res.h["a"] <= 0.6
    assert res.gap < 1e-6, (name, res.gap, res.status)


def test_appendix_b_style_table_at_fixed_n_and_d():
    # One model size and token count, 25 mixtures to fit and 35 to evaluate: the additive
    # law's fixed-(N, D) form against the baselines, in one grid call.
    runs = mixlaw.datasets.slimpajama()
    fixed = runs.select(np.isclose(runs.N, 3.1e8) & np.isclose(runs.D, 2e10, rtol=1e-3))
    assert np.unique(fixed.H, axis=0).shape[0] == 60
    laws = {"additive[h]": {"name": "additive", "n_term": False, "d_term": False}, "dml_exp": "dml_exp",
            "dml_sum": "dml_sum", "bimix": {"name": "bimix", "d_term": False}, "linear": "linear"}
    with pytest.warns(UserWarning, match="openhermes"):
        table = mixlaw.grid(fixed, laws, evaluate.HeldOutMixtures(n_fit=25), seeds=[0, 1], n_starts=8)
    assert len(table) == 2 * (4 * 8 + 7)  # bimix has no cell for openhermes (not a training domain)
    assert set(table["n_fit"]) == {25} and set(table["n_eval"]) == {35}
    mean = table.groupby("law")[["train_mre", "eval_mre"]].mean()
    # The additive law's mixture term fits and predicts held-out mixtures better than the
    # linear model (as in the paper's Appendix B).
    assert mean.loc["additive[h]", "train_mre"] < mean.loc["linear", "train_mre"]
    assert mean.loc["additive[h]", "eval_mre"] < mean.loc["linear", "eval_mre"]
    assert np.all(np.isfinite(table["eval_mre"]))
