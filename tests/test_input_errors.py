"""Bad input to the loaders, mixtures, plots and CLI gives a ValueError (or exit code 1 with
a message) naming the argument: cases found in review of the issue-5/6 work."""
from __future__ import annotations

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
