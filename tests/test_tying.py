"""Parameter tying (issue 20, part 5): ``fit(..., tie={shared: glob})`` fits tied parameters
as one value. Checked against independent NumPy/SciPy computations on the reduced parameter
vector (one entry per group), on both Levenberg-Marquardt step solvers."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import mixlaw
from test_convergence import additive_terms, draw_additive_runs, numpy_stationarity

GTOL = 1e-6  # fit()'s default
DELTA = 1e-3


def additive_runs(k: int, n_mix: int, seed: int, common_gamma=None, noise: float = 1e-3):
    """Additive-law runs with known parameters: 4 sizes x 5 token counts per mixture,
    Dirichlet mixtures with 20% of the weights zero (as test_convergence.synthetic_additive),
    the exponents drawn per domain in 0.2-0.8 or all equal to ``common_gamma``. Returns the
    truth and a function drawing runs on ``n`` new mixtures (training or held-out)."""
    rng = np.random.default_rng(seed)
    gamma = np.full(k, common_gamma) if common_gamma is not None else rng.uniform(0.2, 0.8, k)
    truth = np.concatenate([[1.8, 400.0, 400.0, 0.35, 0.3], np.exp(rng.uniform(np.log(0.5), np.log(5), k)), gamma])

    def draw(n: int) -> mixlaw.Runs:
        return draw_additive_runs(rng, truth, k, n, noise)

    return truth, draw


def fit_quiet(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixlaw.ConvergenceWarning)
        return mixlaw.fit(*args, **kw)


# -- the reduced problem in NumPy ---------------------------------------------------------------
def membership(law, groups: dict) -> np.ndarray:
    """M (P x Z): parameter p belongs to reduced coordinate j; untied parameters first in law
    order, a group's coordinate at its first member (the solver's numbering)."""
    names = list(law.param_names)
    label = np.arange(len(names))
    for members in groups.values():
        idx = sorted(names.index(n) for n in members)
        label[idx] = idx[0]
    cols = sorted(set(label.tolist()))
    return (label[:, None] == np.array(cols)[None, :]).astype(float)


def huber(r):
    a = np.abs(r)
    return np.where(a <= DELTA, 0.5 * r * r, DELTA * (a - 0.5 * DELTA))


TIE = {"gamma": "gamma_*"}


@pytest.fixture(scope="module")
def k6():
    truth, draw = additive_runs(6, 30, seed=11, common_gamma=0.5)
    return mixlaw.law("additive", 6), truth, draw(30)


@pytest.fixture(scope="module")
def tied_fits(k6):
    law, _, runs = k6
    return {ls: fit_quiet(runs, "additive", n_starts=16, seed=3, tie=TIE, linear_solver=ls, threads=2)["loss"]
            for ls in ("dense", "cg")}


# -- (1) the tied optimum against an independent reference --------------------------------------
def test_tied_fit_is_a_minimum_of_the_reduced_problem_by_scipy(k6, tied_fits):
    from scipy.optimize import least_squares

    law, _, runs = k6
    f = tied_fits["dense"]
    assert f.success
    M = membership(law, f.options["tie"])
    assert M.shape == (law.n_params, law.n_params - law.k + 1)
    N, D, H, y = runs.target("loss")
    first = M.argmax(axis=0)  # first member of each reduced coordinate
    u0, lo, hi = f.x[first], law.lower[first], law.upper[first]  # the reduced vector and its box
    assert np.array_equal(M @ u0, f.x)  # tied values are equal: the reduced vector is exact

    def resid(u):
        return additive_terms(M @ u, law.k, N, D, H)[0] - y

    # The NumPy objective at mixlaw's optimum is mixlaw's.
    assert float(np.mean(huber(resid(u0)))) == pytest.approx(f.fun, rel=1e-10)
    # SciPy's Huber (f_scale = delta) is the summed Huber loss: n * the mean one.
    ls = least_squares(resid, u0, bounds=(lo, hi), loss="huber", f_scale=DELTA, x_scale="jac", max_nfev=2000)
    assert ls.cost / y.size >= f.fun * (1 - 1e-6), (ls.cost / y.size, f.fun)
    # The NumPy gradient in the reduced coordinates is ~0 relative to the objective.
    stat, fn = numpy_stationarity(law, f.x, runs, law.lower, law.upper, M=M)
    assert fn == pytest.approx(f.fun, rel=1e-10)
    assert stat <= GTOL
    assert f.stationarity <= GTOL


# -- (5) both linear solvers give stationary results ----------------------------------------------
@pytest.mark.parametrize("ls", ["dense", "cg"])
def test_both_step_solvers_are_stationary_by_numpy(k6, tied_fits, ls):
    law, _, runs = k6
    f = tied_fits[ls]
    M = membership(law, f.options["tie"])
    assert f.success and f.options["linear_solver"] == ls
    stat, fn = numpy_stationarity(law, f.x, runs, law.lower, law.upper, M=M)
    assert stat <= GTOL, (ls, stat)
    assert fn == pytest.approx(f.fun, rel=1e-10)
    # Same minimum from both step solvers.
    assert f.fun == pytest.approx(tied_fits["dense"].fun, rel=1e-8)


@pytest.mark.parametrize("ls", ["dense", "cg"])
@pytest.mark.parametrize("free, tie, value", [
    ("gamma_", TIE, 2.0),  # linear parameters
    ("C_", {"C": ["C_2", "C_3", "C_6"]}, 0.5),  # log-scaled ones (chain rule factor theta)
])
def test_reported_stationarity_uses_the_reduced_curvature(k6, ls, free, tie, value):
    # Only one tied group is free (every other parameter pinned by its bounds), and the point
    # is far from stationary (2 iterations, a hard limit): the stationarity the solver reports equals the
    # NumPy one in reduced coordinates, with the exact diagonal of B_z (cross terms of the
    # group included), not the sum of the members' diagonals.
    law, truth, runs = k6
    members = [n for g in tie.values() for n in g] if free == "C_" else [f"gamma_{i}" for i in range(1, 7)]
    pin = {n: (float(v), float(v)) for n, v in zip(law.param_names, truth) if n not in members}
    start = truth.copy()
    start[[law.index(n) for n in members]] = value
    f = fit_quiet(runs, "additive", starts=start[None], bounds=pin, tie=tie, max_iter=2, iterate=1,
                  linear_solver=ls, threads=1)["loss"]
    lo, hi = law.lower.copy(), law.upper.copy()
    for n, (a, b) in pin.items():
        lo[law.index(n)], hi[law.index(n)] = a, b
    M = membership(law, f.options["tie"])
    stat, _ = numpy_stationarity(law, f.x, runs, lo, hi, M=M)
    wrong, _ = numpy_stationarity(law, f.x, runs, lo, hi, M=M, diag="members")
    assert stat > 1e-4  # not stationary: the comparison is not rounding noise
    assert abs(wrong - stat) > 1e-2 * stat  # the diagonal matters here
    assert f.stationarity == pytest.approx(stat, rel=1e-9)
    assert len({f.params[n] for n in members}) == 1


# -- (2) tied values are exactly equal ------------------------------------------------------------
@pytest.mark.parametrize("kw", [dict(linear_solver="dense"), dict(linear_solver="cg"), dict(method="lbfgsb"),
                                dict(hops=2), dict(screen_iter=3, screen_keep=2)])
def test_tied_values_exactly_equal(k6, kw):
    law, _, runs = k6
    tie = {"gamma_code": ["gamma_3", "gamma_4"], "gamma_web": "gamma_[125]", "C": ["C_2", "C_6"]}
    f = fit_quiet(runs, "additive", n_starts=4, seed=1, tie=tie, max_iter=200, threads=2, **kw)["loss"]
    p = f.params
    assert f.options["tie"] == {"gamma_code": ["gamma_3", "gamma_4"], "gamma_web": ["gamma_1", "gamma_2", "gamma_5"],
                                "C": ["C_2", "C_6"]}
    assert p["gamma_3"] == p["gamma_4"]
    assert p["gamma_1"] == p["gamma_2"] == p["gamma_5"]
    assert p["C_2"] == p["C_6"]
    assert np.all(np.isfinite(f.x))


def test_group_starts_at_its_first_members_value(k6):
    # An explicit start with unequal tied values: the group starts at its first member's.
    law, truth, runs = k6
    start = truth.copy()
    g = law.index("gamma_1")
    start[g:] = [0.7, 0.1, 0.2, 0.3, 0.4, 0.5]
    a = fit_quiet(runs, "additive", starts=start[None], tie=TIE, max_iter=3, threads=1)["loss"]
    start[g + 1:] = 0.7
    b = fit_quiet(runs, "additive", starts=start[None], tie=TIE, max_iter=3, threads=1)["loss"]
    assert np.array_equal(a.x, b.x)


def test_singleton_groups_are_the_untied_fit_bit_for_bit(k6):
    law, _, runs = k6
    plain = fit_quiet(runs, "additive", n_starts=4, seed=2, threads=2)["loss"]
    for tie in (None, {}, {"g1": "gamma_1", "c": "C_3"}):
        f = fit_quiet(runs, "additive", n_starts=4, seed=2, tie=tie, threads=2)["loss"]
        assert np.array_equal(f.x, plain.x) and f.fun == plain.fun
        assert np.array_equal(f.starts_fun, plain.starts_fun)


# -- (3) validation ----------------------------------------------------------------------------
@pytest.mark.parametrize("tie, bounds, match", [
    ({"g": "zeta_*"}, None, "tie: 'zeta_\\*' \\(group 'g'\\) matches no parameter"),
    ({"g": ["gamma_1", "delta_*"]}, None, "matches no parameter"),
    ({"a": "gamma_[12]", "b": "gamma_2"}, None, "'gamma_2' is in two groups, 'a' and 'b'"),
    ({"g": ["C_1", "gamma_1"]}, None, "mixes log-scaled parameters \\['C_1'\\] with linear ones \\['gamma_1'\\]"),
    ({"g": "gamma_*"}, {"gamma_1": (0.0, 1.0)}, "group 'g' ties parameters with different bounds"),
    ({"g": ["E", "gamma_1"]}, None, "different bounds"),
    # A negative lower bound makes a scale coefficient linear (as the solver moves it).
    ({"C": "C_*"}, {"C_1": (-1.0, 1e9)}, "mixes log-scaled"),
])
def test_tie_validation(k6, tie, bounds, match):
    law, _, runs = k6
    with pytest.raises(ValueError, match="^tie: .*" + match if not match.startswith("tie") else "^" + match):
        mixlaw.fit(runs, "additive", n_starts=1, tie=tie, bounds=bounds)


@pytest.mark.parametrize("tie", ["gamma_*", {"g": []}, {"g": 3}, {1: "gamma_*"}, {"g": ["gamma_1", 2]}])
def test_tie_types(k6, tie):
    _, _, runs = k6
    with pytest.raises(TypeError, match="^tie: "):
        mixlaw.fit(runs, "additive", n_starts=1, tie=tie)


def test_equal_bounds_make_a_group_valid(k6):
    _, _, runs = k6
    f = fit_quiet(runs, "additive", n_starts=2, tie=TIE, bounds={"gamma_*": (0.1, 1.0)}, threads=1)["loss"]
    assert f.options["bounds"]["gamma_3"] == [0.1, 1.0]
    assert len(set(f.x[-6:].tolist())) == 1


def test_core_validates_labels(k6):
    law, _, runs = k6
    N, D, H, y = runs.target("loss")
    prob = [(law._core, law.records(N, D, H), y, None)]
    start = [law.init_upper[None, :] * 0.5]
    lab = np.arange(law.n_params)
    with pytest.raises(ValueError, match="tie: expected 17 labels"):
        mixlaw._core.fit_many(prob, start, [law.lower], [law.upper], [0], tie=[lab[:-1]])
    with pytest.raises(ValueError, match="tie: need one entry per problem"):
        mixlaw._core.fit_many(prob, start, [law.lower], [law.upper], [0], tie=[lab, lab])
    lab2 = lab.copy()
    lab2[law.index("gamma_2")] = law.index("C_1")
    with pytest.raises(ValueError, match="tie: C_1 and gamma_2 are tied but have different bounds or scaling"):
        mixlaw._core.fit_many(prob, start, [law.lower], [law.upper], [0], tie=[lab2])
    lab2[law.index("gamma_2")] = -1
    with pytest.raises(ValueError, match="tie: labels must be in"):
        mixlaw._core.fit_many(prob, start, [law.lower], [law.upper], [0], tie=[lab2])


# -- (4) JSON round trip -------------------------------------------------------------------------
def test_json_round_trip_and_refit(k6, tmp_path):
    _, _, runs = k6
    tie = {"gamma_code": ["gamma_3", "gamma_4"], "gamma_web": "gamma_[125]"}
    fits = fit_quiet(runs, "additive", n_starts=4, seed=5, tie=tie, threads=2)
    path = tmp_path / "fits.json"
    fits.to_json(path)
    back = mixlaw.load_fits(path)["loss"]
    f = fits["loss"]
    assert back.options["tie"] == f.options["tie"] == {"gamma_code": ["gamma_3", "gamma_4"],
                                                       "gamma_web": ["gamma_1", "gamma_2", "gamma_5"]}
    assert np.array_equal(back.x, f.x)
    # The recorded groups, given back as tie, are the same fit.
    again = fit_quiet(runs, "additive", n_starts=4, seed=5, tie=back.options["tie"], threads=2)["loss"]
    assert np.array_equal(again.x, f.x) and again.fun == f.fun
    assert fit_quiet(runs, "additive", n_starts=1, threads=1)["loss"].options["tie"] == {}


# -- nesting passes the ties on -----------------------------------------------------------------
def test_nesting_fits_the_simpler_law_with_its_share_of_the_ties():
    truth, draw = additive_runs(4, 20, seed=4, common_gamma=0.4)
    runs = draw(20)
    tie = {"gamma": "gamma_*", "CA": "CA_*"}  # CA_* exists only in the joint law
    nested = fit_quiet(runs, "joint", n_starts=4, seed=1, tie=tie, threads=2)["loss"]
    assert nested.options["nested_start"]
    simpler = fit_quiet(runs, "additive", n_starts=4, seed=1, tie={"gamma": "gamma_*"}, threads=2)
    assert simpler["loss"].options["tie"] == {"gamma": ["gamma_1", "gamma_2", "gamma_3", "gamma_4"]}
    given = fit_quiet(runs, "joint", n_starts=4, seed=1, tie=tie, nest=simpler, threads=2)["loss"]
    assert np.array_equal(nested.x, given.x) and nested.fun == given.fun
    untied = fit_quiet(runs, "additive", n_starts=4, seed=1, threads=2)
    other = fit_quiet(runs, "joint", n_starts=4, seed=1, tie=tie, nest=untied, threads=2)["loss"]
    assert not np.array_equal(other.starts_fun, nested.starts_fun)  # the nested start did differ
    p = nested.params
    assert len({p[f"gamma_{i}"] for i in range(1, 5)}) == 1 and len({p[f"CA_{i}"] for i in range(1, 5)}) == 1
    # Never above the simpler (tied) law's objective: its solution is one of the starts.
    assert nested.fun <= simpler["loss"].fun * (1 + 1e-12)


# -- (6) the k + 10 design -----------------------------------------------------------------------
def test_few_mixtures_many_domains_heldout(capsys):
    # k = 32 domains, k + 10 = 42 training mixtures (4 sizes x 5 token counts each), 200
    # held-out mixtures; the true exponents differ per domain (0.2-0.8). Reports the held-out
    # MRE of the untied and the tied fit (one shared gamma); asserts only that both fits run.
    k = 32
    truth, draw = additive_runs(k, k + 10, seed=32)
    train, heldout = draw(k + 10), draw(200)
    fits = {}
    for label, tie in (("untied", None), ("tied", {"gamma": "gamma_*"})):
        fits[label] = fit_quiet(train, "additive", n_starts=16, seed=0, tie=tie, threads=2)["loss"]
    mre = {label: f.score(heldout)["mre"] for label, f in fits.items()}
    with capsys.disabled():
        print(f"\nk={k}, {k + 10} mixtures: held-out MRE untied {mre['untied']:.3f}%, tied {mre['tied']:.3f}% "
              f"(train MRE {fits['untied'].train['mre']:.3f}% / {fits['tied'].train['mre']:.3f}%)")
    for f in fits.values():
        assert np.isfinite(f.fun) and np.all(np.isfinite(f.x))
    assert np.isfinite(mre["tied"])
    assert fits["tied"].success
    assert len(set(fits["tied"].x[-k:].tolist())) == 1


def test_bootstrap_refits_are_tied_like_the_estimate():
    # Every bootstrap refit keeps the ties of the full-data fit (all gammas equal).
    runs = mixlaw.datasets.slimpajama()
    res = mixlaw.evaluate.bootstrap(runs, "additive", targets="c4", n_boot=3, n_starts=2, tie={"gamma": "gamma_*"})
    law = res.fits["c4"].law
    g = [law.index(f"gamma_{i}") for i in range(1, law.k + 1)]
    for sample in res.samples["c4"]:
        assert np.all(np.isfinite(sample)) and np.all(sample[g] == sample[g[0]])
