"""Next runs to train (issue 25): the decision's linearised uncertainty against independent
references (a Monte Carlo over noise realisations; finite differences of optimize_mixture;
a direct inverse of the information matrix), the selection's use of compute and domains
by name, the CLI, and the errors."""
from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

import mixlaw
from mixlaw import design
from mixlaw.design import initial_mixtures, next_runs
from mixlaw.fit import Fit, Fits

DOMAINS = ("a", "b", "c")
# additive law, k = 3: E, A, B, alpha, beta, C_1..3, gamma_1..3; the optimum is inside the simplex
TRUTH = np.array([1.8, 2.0, 0.5, 0.33, 0.3, 1.0, 2.0, 0.5, 0.4, 0.6, 0.3])
LAW = mixlaw.law("additive", 3)
SIGMA = 0.003
TARGET = dict(N=1e9, D=2e10)
HQ = np.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]])


def records(Hm, sizes=(20e6, 60e6, 180e6), tpp=(10, 20, 40, 80), first_run=0):
    N, D, H, run = [], [], [], []
    r = first_run
    for n in sizes:
        for h in Hm:
            for t in tpp:
                N.append(n)
                D.append(n * t)
                H.append(h)
                run.append(r)
            r += 1
    return np.array(N), np.array(D), np.array(H), np.array(run)


def noisy_runs(seed, Hm=None, truth=TRUTH, **kw):
    Hm = initial_mixtures(16, 3, zeros=0.0, seed=5) if Hm is None else Hm
    N, D, H, run = records(Hm, **kw)
    y = LAW.predict(truth, N, D, H) + SIGMA * np.random.default_rng(seed).standard_normal(N.size)
    return mixlaw.Runs(N, D, H, domains=DOMAINS, targets={"y": y}, run=run)


def quiet_fit(runs, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mixlaw.fit(runs, "additive", n_starts=8, progress=False, threads=1, **kw)


def fit_of(x):
    return Fit(law=LAW, target="y", x=np.asarray(x, float), fun=math.nan, success=True, status=1, message="", nit=0,
               nfev=0, njev=0, starts_fun=np.zeros(0), starts_status=np.zeros(0, int), n_records=0, train={},
               domains=DOMAINS)


def test_optimum_sensitivity_matches_finite_differences_of_optimize_mixture():
    """dh*/du by the implicit function theorem against re-optimising the mixture with one
    parameter moved (central differences, in the solver's coordinates: log for scales)."""
    def h_star(x):
        return mixlaw.optimize_mixture(Fits({"y": fit_of(x)}), gap_tol=1e-14, **TARGET).x

    h = h_star(TRUTH)
    assert np.all(h > 0.01)  # inside the simplex: every direction of the face moves
    dh = design._optimum_sensitivity([fit_of(TRUTH)], np.array([1.0]), h, np.zeros(3), np.ones(3),
                                     TARGET["N"], TARGET["D"])[0]
    logs = np.asarray(LAW.log_scale)
    for j in range(TRUTH.size):
        step = 1e-4
        xp, xm = TRUTH.copy(), TRUTH.copy()
        if logs[j]:
            xp[j], xm[j] = TRUTH[j] * math.exp(step), TRUTH[j] * math.exp(-step)
        else:
            xp[j], xm[j] = TRUTH[j] + step, TRUTH[j] - step
        fd = (h_star(xp) - h_star(xm)) / (2 * step)
        np.testing.assert_allclose(dh[:, j], fd, rtol=1e-4, atol=1e-7, err_msg=LAW.param_names[j])
    assert np.abs(dh).max() > 0.05  # the mixture parameters do move the optimum


def test_optimum_on_a_face_keeps_bounded_weights_fixed():
    """With an upper bound that binds, that weight does not move with the parameters, and the
    others still follow finite differences of the bounded optimisation."""
    bounds = {"b": (0.0, 0.5)}
    lo, hi = np.zeros(3), np.array([1.0, 0.5, 1.0])

    def h_star(x):
        return mixlaw.optimize_mixture(Fits({"y": fit_of(x)}), gap_tol=1e-14, bounds=bounds, **TARGET).x

    h = h_star(TRUTH)
    assert abs(h[1] - 0.5) < 1e-9
    dh = design._optimum_sensitivity([fit_of(TRUTH)], np.array([1.0]), h, lo, hi, TARGET["N"], TARGET["D"])[0]
    assert np.all(dh[1] == 0)
    j = LAW.param_names.index("gamma_1")
    xp, xm = TRUTH.copy(), TRUTH.copy()
    xp[j], xm[j] = TRUTH[j] + 1e-4, TRUTH[j] - 1e-4
    np.testing.assert_allclose(dh[:, j], (h_star(xp) - h_star(xm)) / 2e-4, rtol=1e-4, atol=1e-7)


def losses_oracle(x):
    """The NumPy re-computation's pieces at parameters x: the factors to the solver's
    coordinates (log for scale parameters), the prior's precision (half the law's range of
    starting values is one sd), the rows G of the relative losses at HQ, and their sds for a
    given information matrix."""
    logs = np.asarray(LAW.log_scale)
    scale = np.where(logs, x, 1.0)
    ilo, ihi = LAW.init_lower, LAW.init_upper
    prior = np.diag(1 / np.where(logs, 0.5 * np.log(ihi / ilo), 0.5 * (ihi - ilo)) ** 2)
    ph, jh = LAW.jacobian(x, np.full(2, TARGET["N"]), np.full(2, TARGET["D"]), HQ)
    G = jh * scale / ph[:, None]

    def sds(F):
        return np.sqrt(np.einsum("ij,jk,ik->i", G, np.linalg.inv(F), G))

    return scale, prior, G, sds


def test_uncertainty_matches_a_monte_carlo_over_noise():
    """The linearised standard deviations of h*, of the loss at h* and of the losses at H,
    against their spread over 60 refits of independent noise realisations (the Monte Carlo
    sd has ~9% relative error; the linearisation of a Huber fit is asymptotic)."""
    hs, ls, lh = [], [], []
    first = None
    for r in range(60):
        runs = noisy_runs(r)
        f = quiet_fit(runs)
        res = mixlaw.optimize_mixture(f, **TARGET)
        hs.append(res.x)
        ls.append(res.fun)
        lh.append(f["y"].predict(N=np.full(2, TARGET["N"]), D=np.full(2, TARGET["D"]), H=HQ))
        if first is None:
            first = next_runs(runs, runs, fits=f, batch=1, H=HQ, **TARGET)
    mc_h = np.std(hs, axis=0, ddof=1)
    mc_l = np.std(ls, ddof=1) / np.mean(ls)
    mc_lh = np.std(lh, axis=0, ddof=1) / np.mean(lh, axis=0)
    lin_h = np.array([first.uncertainty["h"][d] for d in DOMAINS])
    np.testing.assert_allclose(lin_h, mc_h, rtol=0.3)
    assert first.uncertainty["loss"] == pytest.approx(mc_l, rel=0.3)
    np.testing.assert_allclose(first.uncertainty["losses"]["y"], mc_lh, rtol=0.3)
    # The noise the fit implies is near the true one; the part it takes as shared by a run's
    # records is small (not always 0: the estimate is floored at 0, so by chance it is above).
    assert SIGMA * 0.9 < first.noise["y"] < SIGMA * 1.1
    assert first.run_noise["y"] < 0.4 * SIGMA


def test_expected_uncertainty_is_the_direct_inverse_with_the_chosen_runs():
    """The greedy rank updates (Woodbury) against adding the chosen runs' Jacobian rows to
    the information matrix and inverting it directly, in a NumPy re-computation of the
    losses-at-H decision (no optimum, so no sensitivities involved)."""
    runs = noisy_runs(0)
    f = quiet_fit(runs)
    pool = noisy_runs(1, Hm=initial_mixtures(12, 3, seed=9), sizes=(40e6, 120e6), first_run=100)
    r = next_runs(runs, pool, fits=f, batch=4, decision="losses", H=HQ, noise=SIGMA, run_noise=0.0, **TARGET)
    x = f["y"].x
    scale, prior, _, sds = losses_oracle(x)
    _, J = LAW.jacobian(x, *(runs.target("y")[:3]))
    F = (J * scale).T @ (J * scale) / SIGMA ** 2 + prior
    np.testing.assert_allclose(r.uncertainty["losses"]["y"], sds(F), rtol=1e-8)
    chosen = np.isin(pool.run, r.runs["run"].to_numpy())
    _, Jc = LAW.jacobian(x, pool._N_D[0][chosen], pool._N_D[1][chosen], pool.H[chosen])
    F_after = F + (Jc * scale).T @ (Jc * scale) / SIGMA ** 2
    np.testing.assert_allclose(r.expected["losses"]["y"], sds(F_after), rtol=1e-8)
    # Every choice lowered the criterion, by the share reported.
    crit = np.concatenate([[r.criterion], r.runs["criterion"].to_numpy()])
    assert np.all(np.diff(crit) < 0)
    np.testing.assert_allclose(r.runs["reduction"], -np.diff(crit) / crit[:-1], rtol=1e-12)
    assert r.criterion_after == pytest.approx(crit[-1], rel=1e-12)


def test_each_choice_is_the_best_reduction_per_compute():
    """Brute force: the first run chosen is the candidate whose addition (direct inverse)
    lowers the criterion most per FLOP; a copy of every candidate at twice the compute is
    never chosen first."""
    runs = noisy_runs(0)
    f = quiet_fit(runs)
    pool = noisy_runs(1, Hm=initial_mixtures(6, 3, seed=9), sizes=(40e6, 120e6), first_run=100)
    N, D = pool._N_D
    df = pd.DataFrame({"run": pool.run, "N": N, "D": D, **{f"w_{d}": pool.H[:, i] for i, d in enumerate(DOMAINS)}})
    df["compute"] = 6 * df.groupby("run")["N"].transform("max") * df.groupby("run")["D"].transform("max")
    # costs unrelated to the information (a user's own cost model), so that the most
    # informative run and the most informative per FLOP differ
    factor = np.random.default_rng(3).uniform(1, 30, df["run"].max() + 1)
    df["compute"] *= factor[df["run"]]
    dear = df.copy()
    dear["run"] += 1000
    dear["compute"] *= 2
    both = pd.concat([df, dear], ignore_index=True)
    r = next_runs(runs, both, fits=f, batch=3, decision="losses", H=HQ, noise=SIGMA, run_noise=0.0, **TARGET)
    assert r.runs["run"].iloc[0] < 1000
    # brute force over the cheap candidates
    x = f["y"].x
    scale, prior, G, _ = losses_oracle(x)
    G = G / 5e-4  # in units of the loss tolerance
    _, J = LAW.jacobian(x, *(runs.target("y")[:3]))
    F = (J * scale).T @ (J * scale) / SIGMA ** 2 + prior
    crit0 = np.trace(G @ np.linalg.inv(F) @ G.T) / len(HQ)  # the losses at H: one component, their mean
    gains, per = {}, {}
    for rid, g in df.groupby("run"):
        _, Jc = LAW.jacobian(x, g["N"].to_numpy(), g["D"].to_numpy(), g[[f"w_{d}" for d in DOMAINS]].to_numpy())
        Fc = F + (Jc * scale).T @ (Jc * scale) / SIGMA ** 2
        gains[rid] = crit0 - np.trace(G @ np.linalg.inv(Fc) @ G.T) / len(HQ)
        per[rid] = gains[rid] / g["compute"].iloc[0]
    best_id = max(per, key=per.get)
    assert best_id != max(gains, key=gains.get)  # the test can tell the two rules apart
    assert r.runs["run"].iloc[0] == best_id
    assert r.criterion == pytest.approx(crit0, rel=1e-8)


def test_domains_are_matched_by_name():
    runs = noisy_runs(0)
    f = quiet_fit(runs)
    pool = noisy_runs(1, Hm=initial_mixtures(8, 3, seed=9), sizes=(40e6,), first_run=100)
    N, D = pool._N_D
    cols = {f"w_{d}": pool.H[:, i] for i, d in enumerate(DOMAINS)}
    df = pd.DataFrame({"run": pool.run, "N": N, "D": D, **cols})
    shuffled = df[["w_c", "D", "w_a", "run", "N", "w_b"]]
    bare = df.rename(columns={f"w_{d}": d for d in DOMAINS})
    a = next_runs(runs, pool, fits=f, batch=3, **TARGET)
    b = next_runs(runs, shuffled, fits=f, batch=3, **TARGET)
    c = next_runs(runs, bare, fits=f, batch=3, **TARGET)
    for other in (b, c):
        assert list(other.runs["run"]) == list(a.runs["run"])
        assert other.criterion == pytest.approx(a.criterion, rel=1e-12)
    renamed = pool.H[:, [2, 0, 1]]
    permuted = mixlaw.Runs(N, D, renamed, domains=("c", "a", "b"), targets=dict(pool.targets), run=pool.run)
    d = next_runs(runs, permuted, fits=f, batch=3, **TARGET)
    assert list(d.runs["run"]) == list(a.runs["run"])
    np.testing.assert_allclose(d.runs[[f"w_{x}" for x in DOMAINS]].to_numpy(),
                               a.runs[[f"w_{x}" for x in DOMAINS]].to_numpy())


def test_settled_follows_the_tolerance_and_the_result_reads_well():
    runs = noisy_runs(0)
    f = quiet_fit(runs)
    loose = next_runs(runs, runs, fits=f, batch=2, tolerance=(0.5, 0.5), **TARGET)
    tight = next_runs(runs, runs, fits=f, batch=2, tolerance=(1e-6, 1e-8), **TARGET)
    assert loose.settled and not tight.settled
    assert set(loose.h) == set(DOMAINS) and abs(sum(loose.h.values()) - 1) < 1e-9
    assert "settled=True" in repr(loose)
    assert list(loose.runs.columns[:5]) == ["run", "N", "D", "compute", "n_records"]
    # Expected sds never exceed the current ones.
    for d in DOMAINS:
        assert tight.expected["h"][d] <= tight.uncertainty["h"][d] * (1 + 1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch=0), "batch"),
    (dict(batch=1000), "batch: 1000 runs asked for"),
    (dict(decision="best"), "decision"),
    (dict(decision="losses"), "H: decision='losses' needs"),
    (dict(tolerance=(0.01,)), "tolerance"),
    (dict(tolerance=(0.01, -1)), "tolerance"),
    (dict(N=-1.0), "N:"),
    (dict(D=float("nan")), "D:"),
    (dict(H=np.array([[0.5, 0.6, 0.1]])), "H:"),
    (dict(noise=0.0), "noise"),
    (dict(noise={"z": 0.01}), "noise: no value for target 'y'"),
    (dict(run_noise="yes"), "run_noise: expected 'auto'"),
    (dict(run_noise=-0.001), "run_noise: must be >= 0"),
    (dict(noise=0.01, run_noise=0.01), "run_noise: must be >= 0 and below the noise of one record"),
    (dict(run_noise={"z": 0.001}), "run_noise: no value for target 'y'"),
    (dict(fits={"y": 1}), "fits"),
    (dict(law="joint"), "law: they choose how next_runs fits the runs, but fits= are given"),
    (dict(n_starts=4), "n_starts: they choose how next_runs fits the runs"),
    (dict(decision="losses", H=HQ, bounds={"a": (0, 0.5)}), "bounds, weights: they shape the optimal mixture"),
])
def test_errors_name_the_argument(kwargs, match):
    runs = noisy_runs(0)
    f = quiet_fit(runs)
    args = dict(fits=f, N=1e9, D=2e10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        next_runs(runs, runs, **args)


def test_fits_of_other_runs_are_refused():
    """Fits of one set of runs with another set: the uncertainty would be computed from records
    the fits never saw, a plausible wrong answer."""
    runs = noisy_runs(0)
    f = quiet_fit(runs)
    other = noisy_runs(1, Hm=initial_mixtures(5, 3, seed=3))
    with pytest.raises(ValueError, match="fits: the fit of target 'y' used 192 records, but runs has 60"):
        next_runs(other, other, fits=f, batch=1, **TARGET)
    renamed = mixlaw.Runs(*runs._N_D, runs.H, domains=DOMAINS, targets={"z": runs.targets["y"]}, run=runs.run)
    with pytest.raises(ValueError, match="fits: target 'y' is not a target of runs"):
        next_runs(renamed, renamed, fits=f, batch=1, **TARGET)


def test_candidate_errors():
    runs = noisy_runs(0)
    f = quiet_fit(runs)
    good = pd.DataFrame({"N": [1e8], "D": [2e9], "w_a": [0.2], "w_b": [0.3], "w_c": [0.5]})
    with pytest.raises(ValueError, match="candidates: no column 'D'"):
        next_runs(runs, good.drop(columns="D"), fits=f, **TARGET, batch=1)
    with pytest.raises(ValueError, match="missing \\['c'\\]"):
        next_runs(runs, good.drop(columns="w_c"), fits=f, **TARGET, batch=1)
    with pytest.raises(ValueError, match="unknown \\['z'\\]"):
        next_runs(runs, good.assign(w_z=0.0), fits=f, **TARGET, batch=1)
    with pytest.raises(ValueError, match="sum to 1"):
        next_runs(runs, good.assign(w_a=0.5), fits=f, **TARGET, batch=1)
    with pytest.raises(ValueError, match="column N must be finite"):
        next_runs(runs, good.assign(N=0.0), fits=f, **TARGET, batch=1)
    with pytest.raises(ValueError, match="compute must be finite"):
        next_runs(runs, good.assign(compute=np.nan), fits=f, **TARGET, batch=1)
    with pytest.raises(ValueError, match="candidates: expected a runs table"):
        next_runs(runs, [[1e8, 2e9]], fits=f, **TARGET, batch=1)
    two = pd.concat([good, good.assign(D=4e9, N=2e8)], ignore_index=True).assign(run=7)
    with pytest.raises(ValueError, match="candidates: run 7 has rows with different model sizes or weights"):
        next_runs(runs, two, fits=f, **TARGET, batch=1)
    with pytest.raises(ValueError, match="runs: expected the runs trained so far"):
        next_runs(runs.to_pandas(), good, fits=f, **TARGET, batch=1)


def test_too_many_candidates_are_refused_before_allocating(monkeypatch):
    runs = noisy_runs(0)
    f = quiet_fit(runs)
    monkeypatch.setattr(design, "_SELECTION_DOUBLES", 1000.0)
    with pytest.raises(ValueError, match="candidates: .* need .*GB.*pass fewer candidates"):
        next_runs(runs, runs, fits=f, batch=1, **TARGET)


def test_cli_design_next(tmp_path):
    runs = noisy_runs(0)
    N, D = runs._N_D
    data = pd.DataFrame({"model_size": N, "n_tokens": D, "run": runs.run, "y_loss": runs.targets["y"],
                         **{f"weight_{d}": runs.H[:, i] for i, d in enumerate(DOMAINS)}})
    data.to_csv(tmp_path / "runs.csv", index=False)
    cand = design.initial_design(10, DOMAINS, N=[40e6, 120e6], seed=2)
    cand.to_csv(tmp_path / "cand.csv", index=False)
    base = [sys.executable, "-m", "mixlaw.cli", "design", "next", str(tmp_path / "runs.csv"), "--candidates",
            str(tmp_path / "cand.csv"), "--N", "1e9", "--D", "2e10", "--batch", "3", "--threads", "1"]
    out = subprocess.run(base + ["--checkpoints", "4", "--out", str(tmp_path / "next.csv")], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    chosen = pd.read_csv(tmp_path / "next.csv")
    assert len(chosen) == 3 and set(chosen["run"]) <= set(cand["run"]) and set(chosen["n_records"]) == {4}
    assert "optimal mixture at N=1e+09, D=2e+10" in out.stdout
    js = subprocess.run(base + ["--checkpoints", "4", "--json", "-q"], capture_output=True, text=True)
    assert js.returncode == 0, js.stderr
    import json

    doc = json.loads(js.stdout)
    assert set(doc["h"]) == set(DOMAINS) and len(doc["runs"]) == 3 and doc["criterion_after"] < doc["criterion"]
    assert [row["run"] for row in doc["runs"]] == list(chosen["run"]) and "w_a" in doc["runs"][0]
    assert set(doc["noise"]) == {"y"} and 0 <= doc["run_noise"]["y"] < doc["noise"]["y"]
    cand.to_parquet(tmp_path / "cand.parquet", index=False)  # the same candidates, as Parquet
    pq = subprocess.run([*base[:7], str(tmp_path / "cand.parquet"), *base[8:], "--checkpoints", "4", "--json", "-q"],
                        capture_output=True, text=True)
    assert pq.returncode == 0, pq.stderr
    assert [row["run"] for row in json.loads(pq.stdout)["runs"]] == list(chosen["run"])
    bad = subprocess.run(base + ["--tolerance", "0.01"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--tolerance" in bad.stderr
    (tmp_path / "fits.json").write_text("")  # never read: the --law check comes first
    bad = subprocess.run(base + ["--fits", str(tmp_path / "fits.json"), "--law", "joint"], capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "--law: the fits given with --fits are fitted already" in bad.stderr
    bad = subprocess.run(base + ["--run-noise", "some"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--run-noise: expected 'auto' or a number" in bad.stderr
    iid = subprocess.run(base + ["--run-noise", "0", "--json", "-q"], capture_output=True, text=True)
    assert iid.returncode == 0 and json.loads(iid.stdout)["run_noise"] == {"y": 0.0}
    init = subprocess.run([sys.executable, "-m", "mixlaw.cli", "design", "initial", "--k", "3", "--mixtures", "4",
                           "--sizes", "1e8"], capture_output=True, text=True)
    assert init.returncode == 0 and init.stdout.startswith("run,mixture,N,D,compute")


def test_a_batch_does_not_repeat_its_most_informative_run():
    """Copies of the best candidate: the first is chosen, and its copies then have little
    left to reduce, so the rest of the batch goes elsewhere (without the covariance update
    between choices, the copies would fill the batch)."""
    runs = noisy_runs(0)
    f = quiet_fit(runs)
    pool = noisy_runs(1, Hm=initial_mixtures(10, 3, seed=9), sizes=(40e6, 120e6), first_run=100)
    N, D = pool._N_D
    df = pd.DataFrame({"run": pool.run, "N": N, "D": D, **{f"w_{d}": pool.H[:, i] for i, d in enumerate(DOMAINS)}})
    best = next_runs(runs, df, fits=f, batch=1, **TARGET).runs["run"].iloc[0]
    copies = pd.concat([df[df["run"] == best].assign(run=best + 1000 * c) for c in range(1, 4)])
    r = next_runs(runs, pd.concat([df, copies], ignore_index=True), fits=f, batch=4, **TARGET)
    chosen = list(r.runs["run"])
    assert chosen[0] % 1000 == best
    assert sum(c % 1000 == best for c in chosen) < 4
    assert r.runs["reduction"].iloc[1] < r.runs["reduction"].iloc[0]


def test_checkpoints_expand_one_row_runs_like_explicit_rows():
    """A run given as its last checkpoint with checkpoints=4 carries the information of the
    same run given as its 4 rows at D/4, D/2, 3D/4, D."""
    runs = noisy_runs(0)
    f = quiet_fit(runs)
    Hm = initial_mixtures(6, 3, seed=9)
    one = pd.DataFrame({"run": np.arange(6), "N": 5e7, "D": 2e9, **{f"w_{d}": Hm[:, i] for i, d in enumerate(DOMAINS)}})
    rows = one.loc[one.index.repeat(4)].reset_index(drop=True)
    rows["D"] = 2e9 * np.tile([0.25, 0.5, 0.75, 1.0], 6)
    a = next_runs(runs, one, fits=f, batch=3, checkpoints=4, **TARGET)
    b = next_runs(runs, rows, fits=f, batch=3, **TARGET)
    c = next_runs(runs, one, fits=f, batch=3, **TARGET)
    assert list(a.runs["run"]) == list(b.runs["run"])
    np.testing.assert_allclose(a.runs["criterion"], b.runs["criterion"], rtol=1e-10)
    assert list(a.runs["n_records"]) == [4, 4, 4] and list(c.runs["n_records"]) == [1, 1, 1]
    assert c.criterion_after > a.criterion_after  # one checkpoint tells less than four
    np.testing.assert_allclose(a.runs["D"], 2e9)
    with pytest.raises(ValueError, match="checkpoints"):
        next_runs(runs, one, fits=f, batch=3, checkpoints=0, **TARGET)


def test_tied_and_fixed_parameters_against_a_monte_carlo():
    """A fit with the exponents tied and beta held fixed has fewer free coordinates; the
    linearised sds follow the refits of 40 noise realisations made with the same options
    (treating the tied exponents as free would overstate them)."""
    opts = dict(tie={"gamma": "gamma_*"}, bounds={"beta": (0.3, 0.3)})
    truth = TRUTH.copy()
    truth[-3:] = 0.5  # one exponent: the tied law is the true one
    hs, lh, first = [], [], None
    for r in range(40):
        runs = noisy_runs(100 + r, truth=truth)
        f = quiet_fit(runs, **opts)
        hs.append(mixlaw.optimize_mixture(f, **TARGET).x)
        lh.append(f["y"].predict(N=np.full(2, TARGET["N"]), D=np.full(2, TARGET["D"]), H=HQ))
        if first is None:
            first = next_runs(runs, runs, fits=f, batch=1, H=HQ, **TARGET)
    np.testing.assert_allclose([first.uncertainty["h"][d] for d in DOMAINS], np.std(hs, axis=0, ddof=1), rtol=0.35)
    np.testing.assert_allclose(first.uncertainty["losses"]["y"], np.std(lh, axis=0, ddof=1) / np.mean(lh, axis=0),
                               rtol=0.35)


RUN_SD = 0.8 * SIGMA  # a run's own deviation, shared by its checkpoints


def runs_with_run_noise(seed, Hm=None, **kw):
    """noisy_runs' design, with each run's records also sharing one draw of sd RUN_SD."""
    Hm = initial_mixtures(16, 3, zeros=0.0, seed=5) if Hm is None else Hm
    N, D, H, run = records(Hm, **kw)
    rng = np.random.default_rng([seed, 11])
    y = LAW.predict(TRUTH, N, D, H) + SIGMA * rng.standard_normal(N.size) \
        + RUN_SD * rng.standard_normal(run.max() + 1)[run]
    return mixlaw.Runs(N, D, H, domains=DOMAINS, targets={"y": y}, run=run)


def test_shared_fraction_recovers_the_random_effects_of_simulated_residuals():
    """The one-way analysis of variance against the variances the residuals were drawn with
    (unbalanced runs of 1-9 records; 4,000 runs, so the estimate is within a few percent)."""
    rng = np.random.default_rng(0)
    m = rng.integers(1, 10, 4000)
    run = np.repeat(np.arange(m.size), m)
    e = 0.5 * rng.standard_normal(m.size)[run] + 1.0 * rng.standard_normal(run.size)
    assert design._shared_fraction(e, run) == pytest.approx(0.25 / 1.25, abs=0.02)
    assert design._shared_fraction(rng.standard_normal(run.size), run) < 0.02
    assert design._shared_fraction(e, np.arange(run.size)) == 0.0  # one record per run: cannot tell


def test_shared_run_noise_is_the_direct_inverse_with_correlated_records():
    """With run_noise, the information of a run is J_r^T V_r^-1 J_r, V_r = sw^2 I + sb^2 1 1^T:
    a NumPy re-computation that inverts each run's V_r densely, before and after the chosen
    runs, against next_runs' closed form and rank updates."""
    runs = noisy_runs(0)
    f = quiet_fit(runs)
    pool = noisy_runs(1, Hm=initial_mixtures(12, 3, seed=9), sizes=(40e6, 120e6), first_run=100)
    sb = 0.6 * SIGMA
    r = next_runs(runs, pool, fits=f, batch=3, decision="losses", H=HQ, noise=SIGMA, run_noise=sb, **TARGET)
    assert r.run_noise["y"] == pytest.approx(sb, rel=1e-12)
    x = f["y"].x
    scale, prior, _, sds = losses_oracle(x)
    sw2 = SIGMA ** 2 - sb ** 2

    def information(tab, rows):
        _, J = LAW.jacobian(x, tab._N_D[0][rows], tab._N_D[1][rows], tab.H[rows])
        J = J * scale
        out = np.zeros((J.shape[1], J.shape[1]))
        for rid in np.unique(tab.run[rows]):
            Jr = J[tab.run[rows] == rid]
            V = sw2 * np.eye(len(Jr)) + sb ** 2 * np.ones((len(Jr), len(Jr)))
            out += Jr.T @ np.linalg.inv(V) @ Jr
        return out

    F = information(runs, np.ones(len(runs), bool)) + prior
    np.testing.assert_allclose(r.uncertainty["losses"]["y"], sds(F), rtol=1e-8)
    chosen = np.isin(pool.run, r.runs["run"].to_numpy())
    np.testing.assert_allclose(r.expected["losses"]["y"], sds(F + information(pool, chosen)), rtol=1e-8)
    # Shared noise makes a run's records worth less than as many independent records.
    iid = next_runs(runs, pool, fits=f, batch=3, decision="losses", H=HQ, noise=SIGMA, run_noise=0.0, **TARGET)
    assert np.all(iid.uncertainty["losses"]["y"] < r.uncertainty["losses"]["y"])


def test_shared_run_noise_against_a_monte_carlo():
    """Runs whose checkpoints share a deviation of their own (sd RUN_SD, against SIGMA per
    record): the linearised sds of h* and of its loss with run_noise="auto" against their
    spread over 60 refits (within 30%, as for independent noise), and the estimated shared
    part against RUN_SD; over the 60 fits, the estimated share of the variance against the
    true one (unbiased once the fitted parameters' part is taken out: the plain analysis of
    variance of the residuals is low by ~0.04 here). Treating the records as independent
    (run_noise=0) claims sds that are too small by more than that."""
    hs, ls, shares = [], [], []
    auto = iid = None
    for r in range(60):
        runs = runs_with_run_noise(r)
        f = quiet_fit(runs)
        res = mixlaw.optimize_mixture(f, **TARGET)
        hs.append(res.x)
        ls.append(res.fun)
        N, D, H, y = runs.target("y")
        pred, J = LAW.jacobian(f["y"].x, N, D, H)
        shares.append(design._shared_fraction(y - pred, runs.run, J))
        if auto is None:
            auto = next_runs(runs, runs, fits=f, batch=1, **TARGET)
            iid = next_runs(runs, runs, fits=f, batch=1, run_noise=0.0, **TARGET)
    mc_h = np.std(hs, axis=0, ddof=1)
    mc_l = np.std(ls, ddof=1) / np.mean(ls)
    lin_h = np.array([auto.uncertainty["h"][d] for d in DOMAINS])
    np.testing.assert_allclose(lin_h, mc_h, rtol=0.3)
    assert auto.uncertainty["loss"] == pytest.approx(mc_l, rel=0.3)
    true_total = math.hypot(SIGMA, RUN_SD)
    assert np.mean(shares) == pytest.approx(RUN_SD ** 2 / true_total ** 2, abs=0.03)
    assert auto.noise["y"] == pytest.approx(true_total, rel=0.15)
    assert auto.run_noise["y"] == pytest.approx(RUN_SD, rel=0.3)
    iid_h = np.array([iid.uncertainty["h"][d] for d in DOMAINS])
    assert np.all(iid_h < 0.7 * mc_h)
