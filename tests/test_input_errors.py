"""Bad input to the loaders, mixtures, plots and CLI gives a ValueError (or exit code 1 with
a message) naming the argument: cases found in review of the issue-5/6 work."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import mixlaw
from mixlaw import cli


def _long_csv(tmp_path):
    p = tmp_path / "long.csv"
    p.write_text("run,N,D,wa,wb,t,loss\n7,1e8,1e9,0.5,0.5,x,1.0\n7,1e8,2e9,0.5,0.5,x,0.9\n"
                 "9.0,1e8,1e9,0.4,0.6,x,1.1\n")
    return p


def test_csv_run_ids_are_numbers_as_in_a_dataframe(tmp_path):
    p = _long_csv(tmp_path)
    runs = mixlaw.load_runs(p, weights="w*", N="N", D="D", run="run", target_column="t")
    assert runs.run.tolist() == [7, 7, 9]
    pd = pytest.importorskip("pandas")
    same = mixlaw.load_runs(pd.read_csv(p), weights="w*", N="N", D="D", run="run", target_column="t")
    assert same.run.tolist() == runs.run.tolist()


def test_long_table_selecting_no_target_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"^targets: selects none of the target names in column 't' \(x\)"):
        mixlaw.load_runs(_long_csv(tmp_path), weights="w*", N="N", D="D", run="run", target_column="t",
                         targets=None)


@pytest.fixture(scope="module")
def fits():
    train, _ = mixlaw.protocols.slimpajama_paper_split(mixlaw.datasets.slimpajama())
    return mixlaw.fit(train, "additive", targets=["c4", "book"], n_starts=2)


def test_available_tokens_per_domain_must_be_one_number(fits):
    with pytest.raises(ValueError, match=r"^available_tokens: 'arxiv': expected one number"):
        mixlaw.optimize_mixture(fits, N=1e9, D=2e10, available_tokens={"arxiv": [1e9, 2e9]})


def test_mixture_path_names_its_arguments(fits):
    pytest.importorskip("matplotlib")
    from mixlaw import plots

    with pytest.raises(ValueError, match=r"^N: expected numbers"):
        plots.mixture_path(fits, N="x", D=[1e10, 2e10])
    with pytest.raises(ValueError, match=r"^N, D: shapes do not broadcast"):
        plots.mixture_path(fits, N=[1e9, 2e9, 3e9], D=[1e10, 2e10])
    with pytest.raises(ValueError, match=r"^compute: expected numbers"):
        plots.mixture_path(fits, compute=["a", "b"])
    grid = mixlaw.optimize_mixture(fits, N=[1e9, 2e9], D=[2e10, 4e10])
    with pytest.raises(ValueError, match=r"^weights, options: not used when fits is a solved MixtureGrid"):
        plots.mixture_path(grid, weights={"c4": 1.0})


def test_cli_bad_eval_sizes_and_unwritable_plot_dir_exit_1(tmp_path, capsys):
    assert cli.main(["compare", "slimpajama", "--protocol", "size", "--eval-sizes", "big", "--quiet"]) == 1
    assert "--eval-sizes: expected a comma list of model sizes with numbers, got 'big'" in capsys.readouterr().err
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    pytest.importorskip("matplotlib")
    assert cli.main(["reproduce", "--quiet", "--n-starts", "1", "--plot", str(blocker / "sub")]) == 1
    assert "mixlaw reproduce: error:" in capsys.readouterr().err


def test_percentages_are_recognised_in_weights_and_bounds():
    # Weights in percent: the error says so; bounds in percent: named as fractions.
    with pytest.raises(ValueError, match="look like percentages, divide the weights by 100"):
        mixlaw.Runs([1e8, 2e8], [1e9, 1e9], [[30.0, 70.0], [50.0, 50.0]], targets={"y": [3.0, 2.9]})
    with pytest.raises(ValueError, match=r"sums to 1\.3, expected 1") as err:
        mixlaw.Runs([1e8, 2e8], [1e9, 1e9], [[0.6, 0.7], [0.5, 0.5]], targets={"y": [3.0, 2.9]})
    assert "percent" not in str(err.value)
    L = mixlaw.law("additive", 2)
    runs = mixlaw.Runs(np.repeat([1e8, 3e8, 1e9], 4), np.tile([1e9, 2e9, 4e9, 8e9], 3),
                       np.tile([[0.2, 0.8], [0.5, 0.5], [0.8, 0.2], [0.4, 0.6]], (3, 1)),
                       targets={"y": np.linspace(3.5, 2.8, 12)}, domains=["web", "code"])
    x = (L.init_lower + L.init_upper) / 2
    f = mixlaw.fit(runs, L, starts=x[None], max_iter=2, threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"minimum weight of domain 'code' is 5 > 1; bounds are fractions"):
            mixlaw.optimize_mixture(f, N=1e9, D=2e10, bounds={"code": (5, 50)})


# Inputs that were accepted and gave a plausible wrong number (found in review of the issue-25
# work): each is now refused naming the argument, or honoured.

def test_a_maximum_weight_above_one_is_refused(fits):
    """A maximum in percent (20 for 20%) was capped at 1, which dropped the bound."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"maximum weight of domain 'c4' is 20 > 1; bounds are fractions"):
            mixlaw.optimize_mixture(fits, N=2.7e9, D=5.4e10, bounds={"c4": (0, 20)})
        res = mixlaw.optimize_mixture(fits, N=2.7e9, D=5.4e10, bounds={"c4": (0, float("inf"))})  # no maximum
        assert 0 <= res.h["c4"] <= 1


def test_size_split_refuses_sizes_without_records_and_overlaps():
    runs = mixlaw.datasets.slimpajama()
    with pytest.raises(ValueError, match=r"eval_sizes: no records at size\(s\) 1\.2e\+09; the runs have sizes"):
        mixlaw.evaluate.SizeSplit(eval_sizes=(1.2e9, 2.718e9)).splits(runs)  # 1.235e9 meant
    with pytest.raises(ValueError, match=r"fit_sizes, eval_sizes: size 2\.718e\+09 is in both"):
        mixlaw.evaluate.SizeSplit(fit_sizes=(3.1e8, 2.718e9), eval_sizes=(2.718e9,)).splits(runs)
    (label, fit_runs, eval_runs), = mixlaw.evaluate.SizeSplit().splits(runs)
    assert set(np.unique(fit_runs.N)).isdisjoint(np.unique(eval_runs.N))


def test_bootstrap_refits_weigh_records_as_the_estimate():
    """With weight 0 on the two smallest sizes, their losses cannot matter to any refit: the
    bootstrap of runs whose zero-weight losses are shifted by 1.0 is the same, bit for bit.
    (The refits used to drop the weights, so they fitted those records too.)"""
    train, _ = mixlaw.protocols.slimpajama_paper_split(mixlaw.datasets.slimpajama())
    w = np.where(train.N < 6e8, 0.0, 1.0)
    y = np.asarray(train.targets["c4"], dtype=float)
    shifted = mixlaw.Runs(*train._N_D, train.H, domains=train.domains, targets={"c4": np.where(w == 0, y + 1.0, y)},
                          run=train.run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = mixlaw.bootstrap(train, "additive", targets="c4", n_boot=4, n_starts=2, weights=w, progress=False)
        b = mixlaw.bootstrap(shifted, "additive", targets="c4", n_boot=4, n_starts=2, weights=w, progress=False)
    assert np.array_equal(a.fits["c4"].x, b.fits["c4"].x)
    assert np.array_equal(a.samples["c4"], b.samples["c4"], equal_nan=True)


def test_grid_bounds_by_domain_name_apply_and_unknown_names_are_refused():
    runs = mixlaw.datasets.slimpajama()
    split = mixlaw.evaluate.SizeSplit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = mixlaw.grid(runs, "additive", split, targets="c4", n_starts=2, bounds={"gamma[c4]": (0.9, 1.0)})
        i = list(runs.domains).index("c4")
        assert 0.9 <= table["params"].iloc[0][f"gamma_{i + 1}"] <= 1.0
        with pytest.raises(ValueError, match=r"bounds: 'gama_\*' matches no parameter of the grid's laws"):
            mixlaw.grid(runs, "additive", split, targets="c4", n_starts=2, bounds={"gama_*": (0.9, 1.0)})
        with pytest.raises(ValueError, match=r"bounds: 'gama_\*' matches no parameter of the grid's laws"):
            mixlaw.compare(runs, ["additive"], split, targets="c4", n_starts=2, bounds={"gama_*": (0.9, 1.0)})
        # A bound of one law of the grid only, with the grid in chunks of one cell: each chunk checks
        # nothing by itself, the grid checks the whole.
        mixlaw.grid(runs, ["additive", "joint"], split, targets="c4", n_starts=1, chunk_size=1,
                    bounds={"CA_*": (0.1, 10.0)}, nest=False)
        with pytest.raises(ValueError, match=r"mixture_weights: unknown target\(s\) \['Arxiv'\]"):
            mixlaw.grid(runs, "additive", split, targets=["c4", "arxiv"], n_starts=2, budgets=[(2.7e9, 5.4e10)],
                        mixture_weights={"c4": 1, "Arxiv": 1})


# Second review: labelled pandas input read by position, units of token caps on the command line,
# repeated keys, integer masks, NaN bounds, plans in billions.

def test_pandas_series_and_frames_are_matched_by_label(fits):
    pd = pytest.importorskip("pandas")
    f = fits["c4"]
    domains = list(f.domains)
    h = dict(zip(domains, np.linspace(1, 2, len(domains)) / np.linspace(1, 2, len(domains)).sum()))
    backwards = pd.Series({d: h[d] for d in reversed(domains)})
    assert f.predict(N=1e9, D=2e10, H=backwards) == pytest.approx(f.predict(N=1e9, D=2e10, H=h), rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_dict = mixlaw.optimize_mixture(fits, N=1e9, D=2e10, weights={"book": 0.0, "c4": 1.0},
                                          available_tokens={"c4": 1e9})
        by_series = mixlaw.optimize_mixture(fits, N=1e9, D=2e10, weights=pd.Series({"book": 0.0, "c4": 1.0}),
                                            available_tokens=pd.Series({"c4": 1e9}))
        assert by_series.h == pytest.approx(by_dict.h, abs=1e-9) and by_series.weights == by_dict.weights
        front = mixlaw.pareto_front(fits, N=1e9, D=2e10, targets=["c4", "book"],
                                    target_weights=pd.DataFrame({"book": [1.0], "c4": [0.0]})).to_pandas()
        assert front["w[book]"].iloc[0] == 1.0 and front["w[c4]"].iloc[0] == 0.0
        with pytest.raises(ValueError, match=r"target_weights: columns \['book', 'arxiv'\] are not the front's"):
            mixlaw.pareto_front(fits, N=1e9, D=2e10, targets=["c4", "book"],
                                target_weights=pd.DataFrame({"book": [1.0], "arxiv": [0.0]}))


def test_cli_token_caps_are_in_the_unit_of_d_and_keys_are_given_once(fits, tmp_path, capsys):
    path = tmp_path / "fits.json"
    fits.to_json(path)
    base = ["optimize", str(path), "--N", "1e9"]

    def c4_line(args):
        assert cli.main(base + args) == 0
        return next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("c4 "))

    raw = c4_line(["--D", "2e10", "--available-tokens", "c4=1e9"])
    assert c4_line(["--D", "20", "--D-unit", "1e9", "--available-tokens", "c4=1"]) == raw
    assert "available tokens" in raw
    assert cli.main(base + ["--D", "2e10", "--bounds", "c4=0:0.1,c4=0.5:0.9"]) == 1
    assert "--bounds: 'c4' is given twice" in capsys.readouterr().err
    assert cli.main(base + ["--D", "2e10", "--weights", "c4=1,book=1,c4=0"]) == 1
    assert "--weights: 'c4' is given twice" in capsys.readouterr().err


def test_select_where_and_initial_design_refuse_ambiguous_input():
    runs = mixlaw.datasets.slimpajama()
    with pytest.raises(ValueError, match="look like a mask; pass it as booleans"):
        runs.select((runs.N > 1e9).astype(int))
    assert len(runs.select(runs.N > 1e9)) == int(np.sum(runs.N > 1e9))
    with pytest.raises(ValueError, match="min_tokens: NaN is not a token count"):
        runs.where(min_tokens=float("nan"))
    with pytest.raises(ValueError, match="min_tokens, max_tokens: the minimum is above the maximum"):
        runs.where(min_tokens=5e10, max_tokens=1e10)
    assert len(runs.where(model_size=np.array(1.235e9))) == int(np.sum(np.isclose(runs.N, 1.235e9)))
    with pytest.raises(ValueError, match=r"N: model sizes 0\.1\.\.0\.3 look like millions or billions"):
        mixlaw.design.initial_design(2, ["web", "code"], N=[0.1, 0.3])
    with pytest.raises(ValueError, match="N: a model size is given twice"):
        mixlaw.design.initial_design(2, ["web", "code"], N=[1e8, 3e8, 1e8])
    with pytest.raises(ValueError, match="D: token counts 2..2 look like"):
        mixlaw.design.initial_design(2, ["web", "code"], N=[1e8], D=[2.0])
    assert cli.main(["design", "initial", "--k", "5", "--domains", "a,b,c", "--mixtures", "2", "--sizes",
                     "1e8", "--quiet"]) == 1
