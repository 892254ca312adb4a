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
