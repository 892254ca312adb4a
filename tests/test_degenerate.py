"""Degenerate data (reliability issue): what the data cannot identify is refused with a
ValueError or reported with an IdentifiabilityWarning that says what is not identifiable
and what to do; never a silent arbitrary fit."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import mixlaw
from mixlaw import IdentifiabilityWarning, datasets, protocols

TRUE = {"E": 1.8, "A": 3.0, "B": 2.0, "alpha": 0.3, "beta": 0.35}


def make_runs(mixtures, sizes=(2e7, 6e7, 2e8, 6e8), tokens=(1e9, 3e9, 1e10), law="additive", y=None, seed=0):
    """Records on a grid sizes x mixtures x tokens, losses from a planted law (+ small noise)."""
    mixtures = np.asarray(mixtures, dtype=float)
    k = mixtures.shape[1]
    rows = [(n, d, h) for n in sizes for h in mixtures for d in tokens]
    N = np.array([r[0] for r in rows])
    D = np.array([r[1] for r in rows])
    H = np.array([r[2] for r in rows])
    if y is None:
        L = mixlaw.law(law, k)
        p = dict(TRUE, **{f"C_{i}": 1.0 + i for i in range(1, k + 1)}, **{f"gamma_{i}": 0.5 for i in range(1, k + 1)})
        y = L.predict(p, N, D, H) * (1 + 1e-3 * np.random.default_rng(seed).normal(size=N.size))
    cols = {"model_size": N, "n_tokens": D, "x_loss": np.broadcast_to(y, N.shape).copy()}
    cols.update({f"weight_d{i}": H[:, i] for i in range(k)})
    return mixlaw.load_runs(cols)


GOOD_MIXTURES = [[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6], [1 / 3, 1 / 3, 1 / 3]]


def fit_quietly(runs, law="additive", **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the call
        return mixlaw.fit(runs, law, **{"n_starts": 4, **kw})


def test_well_posed_data_fit_without_warnings():
    fits = fit_quietly(make_runs(GOOD_MIXTURES), n_starts=16)
    assert fits["x"].train["mre"] < 0.5
    train, _ = protocols.slimpajama_paper_split(datasets.slimpajama())
    fit_quietly(train, targets="c4", n_starts=1)


def test_warning_class_is_public_and_a_user_warning():
    assert issubclass(mixlaw.IdentifiabilityWarning, UserWarning)
    assert "IdentifiabilityWarning" in mixlaw.__all__


def test_one_model_size_is_refused_and_says_what_to_do():
    runs = make_runs(GOOD_MIXTURES, sizes=(1e8,))
    with pytest.raises(ValueError, match=r"^law: .*same N.*model-size term is not identifiable.*n_term=False"):
        mixlaw.fit(runs, "additive", n_starts=1)
    f = fit_quietly(runs, n_term=False)["x"]
    assert "A" not in f.params and f.train["mre"] < 1


def test_one_token_count_is_refused_and_says_what_to_do():
    runs = make_runs(GOOD_MIXTURES, tokens=(5e9,))
    with pytest.raises(ValueError, match=r"^law: .*same D.*token term is not identifiable.*d_term=False"):
        mixlaw.fit(runs, "chinchilla", n_starts=1)
    assert "B" not in fit_quietly(runs, "chinchilla", d_term=False)["x"].params


@pytest.mark.parametrize("law", ["additive", "joint", "simple", "full"])
def test_one_mixture_is_refused_for_every_mixture_law(law):
    runs = make_runs([[0.5, 0.3, 0.2]], tokens=np.geomspace(1e9, 2e10, 8))  # more records than parameters
    with pytest.raises(ValueError, match=r"^law: .*same mixture.*mixture term is not identifiable.*chinchilla"):
        mixlaw.fit(runs, law, n_starts=1)
    fit_quietly(runs, "chinchilla")  # the law without a mixture term is fine


def test_mixtures_equal_up_to_rounding_count_as_one():
    h = np.array([0.5, 0.3, 0.2])
    jitter = np.array([[0, 0, 0], [1e-13, -1e-13, 0], [0, 2e-13, -2e-13]])
    runs = make_runs(h + jitter)
    assert runs.mixtures.shape[0] == 3  # distinct bit patterns ...
    with pytest.raises(ValueError, match="same mixture"):  # ... but one mixture
        mixlaw.fit(runs, "additive", n_starts=1)


def test_a_single_domain_has_no_mixture_to_identify():
    runs = make_runs([[1.0]])
    with pytest.raises(ValueError, match="mixture term is not identifiable"):
        mixlaw.fit(runs, "additive", n_starts=1)


def test_fewer_records_than_parameters_names_runs():
    runs = make_runs(GOOD_MIXTURES).select(np.arange(8))  # additive k=3 has 11 parameters
    with pytest.raises(ValueError, match=r"^runs: target 'x' has 8 records, fewer than the 11 parameters.*add runs"):
        mixlaw.fit(runs, "additive", n_starts=1)


def test_a_target_with_no_loss_at_all_names_runs():
    runs = make_runs(GOOD_MIXTURES, y=np.nan)
    with pytest.raises(ValueError, match=r"^runs: target 'x' has 0 records"):
        mixlaw.fit(runs, "additive", n_starts=1)


def test_constant_losses_warn_that_only_E_is_identifiable():
    runs = make_runs(GOOD_MIXTURES, y=3.25)
    with pytest.warns(IdentifiabilityWarning, match=r"every loss of target 'x' equals 3\.25.*only E is identifiable"
                                                    r".*check the target column"):
        f = mixlaw.fit(runs, "additive", n_starts=2)["x"]
    # The fit itself is still the constant (its parameters other than E are arbitrary).
    np.testing.assert_allclose(f.predict(runs), 3.25, rtol=1e-3)


def test_mixtures_on_a_line_warn_that_domains_are_not_identifiable():
    # k = 3 but every mixture lies on the segment between two mixtures: a 1-D affine set.
    a, b = np.array([0.7, 0.2, 0.1]), np.array([0.1, 0.3, 0.6])
    line = [t * a + (1 - t) * b for t in (0.0, 0.3, 0.6, 1.0)]
    with pytest.warns(IdentifiabilityWarning, match=r"4 distinct mixtures of target 'x' span only a 1-dimensional "
                                                    r"affine set of the 2-dimensional simplex.*not separately "
                                                    r"identifiable.*at least 3 affinely independent"):
        mixlaw.fit(make_runs(line), "additive", n_starts=2)


def test_a_domain_whose_weight_never_varies_is_named():
    mixes = [[0.5, 0.3, 0.2, 0.0], [0.2, 0.5, 0.3, 0.0], [0.3, 0.2, 0.5, 0.0], [0.4, 0.4, 0.2, 0.0]]
    with pytest.warns(IdentifiabilityWarning, match=r"the weight of \['d3'\] never varies"):
        mixlaw.fit(make_runs(mixes), "simple", n_starts=1)


def test_fewer_mixtures_than_domains_warn_in_held_out_mixture_splits():
    runs = datasets.slimpajama().where(model_size=[310e6, 680e6, 937e6])
    five = runs.mixtures[:5]  # 5 mixtures for 7 domains: at most a 4-dimensional affine set
    keep = (np.abs(runs.H[:, None, :] - five[None]).max(axis=2) == 0).any(axis=1)
    with pytest.warns(IdentifiabilityWarning, match=r"5 distinct mixtures .* span at most a 4-dimensional affine set .*not separately identifiable"):
        mixlaw.fit(runs.select(keep), "additive", targets="c4", n_starts=1)


def test_bimix_warns_only_about_its_own_domain():
    # bimix uses only the target domain's weight: mixtures on a line are fine for it as long
    # as that weight varies ...
    a, b = np.array([0.7, 0.2, 0.1]), np.array([0.1, 0.3, 0.6])
    line = [t * a + (1 - t) * b for t in (0.0, 0.3, 0.6, 1.0)]
    law = mixlaw.law("bimix", 3, target_domain=0)
    fit_quietly(make_runs(line), law)
    # ... and a constant target-domain weight is reported even when the mixtures span the simplex.
    fixed = [[0.2, 0.7, 0.1], [0.2, 0.1, 0.7], [0.2, 0.4, 0.4], [0.2, 0.5, 0.3]]
    with pytest.warns(IdentifiabilityWarning, match=r"weight of domain 'd0' never varies.*bimix"):
        mixlaw.fit(make_runs(fixed), law, n_starts=2)


def test_warnings_point_at_the_callers_line():
    a, b = np.array([0.7, 0.2, 0.1]), np.array([0.1, 0.3, 0.6])
    runs = make_runs([t * a + (1 - t) * b for t in (0.0, 0.3, 0.6, 1.0)])
    for call in (lambda: mixlaw.fit(runs, "joint", n_starts=1),  # nested: warns from the inner additive fit too
                 lambda: mixlaw.compare(runs, ["additive"], mixlaw.evaluate.SizeSplit(), n_starts=1)):
        with pytest.warns(IdentifiabilityWarning) as record:
            call()
        assert {w.filename for w in record} == {__file__}


# ---------------------------------------------------------------------------------
# Options that make the objective degenerate (issue 21): refused before any work, or
# reported with success=False; never success=True on garbage.
# ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def slim_small():
    runs = datasets.slimpajama()
    return runs.select(runs.N < 2e9)


@pytest.mark.parametrize("delta", [5e-324, 1e-300, 1e-13])
def test_huber_threshold_below_rounding_is_refused(slim_small, delta):
    # At delta = 1e-300 the objective is ~1e-301 everywhere and every start looked stationary.
    with pytest.raises(ValueError, match=r"^delta: .* is below 1e-12"):
        mixlaw.fit(slim_small, "additive", targets="c4", delta=delta, n_starts=2)


def test_smallest_allowed_huber_threshold_still_fits(slim_small):
    # the same fit as at the default delta (train MRE within 1% of it), reported stationary
    ref = mixlaw.fit(slim_small, "additive", targets="c4", n_starts=4)["c4"]
    f = mixlaw.fit(slim_small, "additive", targets="c4", delta=1e-12, n_starts=4)["c4"]
    assert f.success and f.train["mre"] == pytest.approx(ref.train["mre"], rel=0.01)


@pytest.mark.parametrize("scale", [1e308, 1e101, 1e-101, 0.0])
def test_record_weights_that_overflow_or_vanish_are_refused(slim_small, scale):
    with pytest.raises(ValueError, match=r"^weights: the largest weight is .*rescale"):
        mixlaw.fit(slim_small, "additive", targets="c4", weights=np.full(len(slim_small), scale), n_starts=2)


def test_scaled_record_weights_give_the_same_fit(slim_small):
    # only ratios matter with reduction='mean': 1e90 x the weights is the same problem
    w = np.linspace(1.0, 2.0, len(slim_small))
    a = mixlaw.fit(slim_small, "additive", targets="c4", weights=w, n_starts=2)["c4"]
    b = mixlaw.fit(slim_small, "additive", targets="c4", weights=w * 1e90, n_starts=2)["c4"]
    assert a.success and b.success
    np.testing.assert_allclose(b.x, a.x, rtol=1e-6)


def test_absurd_starts_and_tiny_losses_are_not_a_success(slim_small):
    L = mixlaw.law("additive", slim_small.k)
    f = mixlaw.fit(slim_small, L, targets="c4", starts=np.full((2, L.n_params), 1e300))["c4"]
    assert not f.success and f.status != 1
    tiny = mixlaw.Runs(slim_small.N, slim_small.D, slim_small.H, domains=slim_small.domains,
                       targets={"c4": slim_small.targets["c4"] * 1e-200}, run=slim_small.run)
    g = mixlaw.fit(tiny, "additive", targets="c4", residual="log", n_starts=4)["c4"]
    assert not (g.success and g.train["mre"] > 10)  # success only if the fit is real
