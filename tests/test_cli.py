"""The installed `mixlaw` entry point, driven in a subprocess (issue 5)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mixlaw

# The entry point installed next to this interpreter (a virtualenv need not be on PATH).
_HERE = Path(sys.executable).parent / "mixlaw"
EXE = str(_HERE) if _HERE.is_file() else shutil.which("mixlaw")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [EXE, *args] if EXE else [sys.executable, "-m", "mixlaw.cli", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} exited {p.returncode}: {p.stderr}")
    return p


def test_entry_point_is_installed():
    assert EXE is not None


def test_reproduce_json_has_the_papers_numbers():
    out = json.loads(run("reproduce", "--json", "--quiet").stdout)
    assert out["n_train"] == 1374 and out["n_eval"] == 36
    rows = {(r["law"], r["target"]): r for r in out["mre"]}
    assert len(rows) == 32
    for law in ("additive", "joint"):
        for (lw, target), r in rows.items():
            if lw == law and r["paper_train_mre"] is not None:
                assert r["train_mre"] <= r["paper_train_mre"] + 0.03, (law, target)
    avg = out["optimal_mixture_percent"]["average"]
    for d, paper in avg["paper"].items():
        assert abs(avg["h"][d] - paper) <= 2.0, d
    assert avg["gap"] < 1e-8


def test_reproduce_table_is_readable():
    p = run("reproduce", "--n-starts", "4")
    assert "MRE (%) train / eval" in p.stdout and "Optimal mixture" in p.stdout
    assert "fitted additive" in p.stderr


def user_csv(tmp_path):
    runs = mixlaw.datasets.slimpajama()
    names = ["web", "code", "books", "wiki", "arx", "qa", "cc"]
    path = tmp_path / "my_runs.csv"
    sel = runs.select(np.flatnonzero(np.isin(runs.N, [310e6, 680e6, 937e6, 1.235e9, 2.718e9])))
    with open(path, "w") as fh:
        fh.write(",".join([f"w_{n}" for n in names] + ["params", "tokens", "val_c4", "val_book"]) + "\n")
        for j in range(len(sel)):
            c4, bk = sel.targets["c4"][j], sel.targets["book"][j]
            fh.write(",".join([repr(float(v)) for v in sel.H[j]] + [repr(float(sel.N[j])), repr(float(sel.D[j])),
                                                                    repr(float(c4)), "" if np.isnan(bk) else repr(float(bk))]) + "\n")
    return path


def test_fit_and_optimize_on_a_user_csv_with_other_column_names(tmp_path):
    path = user_csv(tmp_path)
    out = tmp_path / "fits.json"
    p = run("fit", str(path), "--weights", "w_*", "--n-column", "params", "--d-column", "tokens",
            "--targets", "val_*", "--n-starts", "8", "--out", str(out), "--json", "--quiet")
    data = json.loads(p.stdout)
    assert {f["target"] for f in data["fits"]} == {"c4", "book"}
    assert all(f["train"]["mre"] < 1.0 for f in data["fits"])
    assert out.exists()
    p = run("optimize", str(out), "--N", "3e9", "--D", "6e10", "--json")
    mix = json.loads(p.stdout)
    assert abs(sum(mix["h"].values()) - 1) < 1e-12 and set(mix["h"]) == {"web", "code", "books", "wiki", "arx", "qa", "cc"}
    p = run("optimize", str(out), "--N", "3e9", "--D", "6e10", "--weights", "c4=1")
    assert "optimal mixture" in p.stdout


def test_compare_on_a_user_csv(tmp_path):
    path = user_csv(tmp_path)
    p = run("compare", str(path), "--weights", "w_*", "--n-column", "params", "--d-column", "tokens",
            "--targets", "val_*", "--laws", "additive,simple", "--n-starts", "4", "--json", "--quiet")
    rows = json.loads(p.stdout)
    assert len(rows) == 4 and all(r["n_eval"] > 0 for r in rows)


def test_errors_have_meaningful_exit_codes(tmp_path):
    p = run("fit", str(tmp_path / "missing.csv"), check=False)
    assert p.returncode == 1 and "error" in p.stderr
    p = run("fit", str(user_csv(tmp_path)), "--weights", "w_*", "--n-column", "params", "--d-column", "tokens",
            "--targets", "nope_*", check=False)
    assert p.returncode == 1 and "targets" in p.stderr
    p = run("frobnicate", check=False)
    assert p.returncode == 2
    p = run("--help")
    assert "reproduce" in p.stdout and "Examples" in p.stdout


def test_laws_command():
    data = json.loads(run("laws", "--json", "--k", "3").stdout)
    assert data["additive"] == ["E", "A", "B", "alpha", "beta", "C_1", "C_2", "C_3", "gamma_1", "gamma_2", "gamma_3"]


def long_csv(tmp_path):
    """The rows of user_csv as a long table: one row per (run, checkpoint, target), string run
    names, target names in a 'metric' column, rows in reverse order."""
    runs = mixlaw.datasets.slimpajama()
    sel = runs.select(np.flatnonzero(np.isin(runs.N, [310e6, 680e6, 937e6, 1.235e9, 2.718e9])))
    names = ["web", "code", "books", "wiki", "arx", "qa", "cc"]
    lines = []
    for j in range(len(sel)):
        for t, metric in (("c4", "val_c4"), ("book", "val_book")):
            v = sel.targets[t][j]
            if not np.isnan(v):
                lines.append(",".join([f"run-{sel.run[j]}", repr(float(sel.N[j])), repr(float(sel.D[j]))]
                                      + [repr(float(w)) for w in sel.H[j]] + [metric, repr(float(v))]))
    path = tmp_path / "long_runs.csv"
    path.write_text(",".join(["run", "params", "tokens"] + [f"w_{n}" for n in names] + ["metric", "value"])
                    + "\n" + "\n".join(lines[::-1]) + "\n")
    return path


LONG_ARGS = ["--target-column", "metric", "--loss-column", "value", "--run-column", "run", "--weights", "w_*",
             "--n-column", "params", "--d-column", "tokens"]


def test_long_format_fit_and_compare_match_the_wide_file(tmp_path):
    wide, long = user_csv(tmp_path), long_csv(tmp_path)
    wide_args = ["--weights", "w_*", "--n-column", "params", "--d-column", "tokens", "--targets", "val_*"]
    fw = json.loads(run("fit", str(wide), *wide_args, "--n-starts", "4", "--json", "-q").stdout)
    fl = json.loads(run("fit", str(long), *LONG_ARGS, "--targets", "val_*", "--n-starts", "4", "--out",
                        str(tmp_path / "fits.json"), "--json", "-q").stdout)
    by_w, by_l = ({f["target"]: f for f in d["fits"]} for d in (fw, fl))
    assert set(by_l) == {"c4", "book"}
    for t in by_w:
        assert by_l[t]["n_records"] == by_w[t]["n_records"]
        assert by_l[t]["train"]["mre"] == pytest.approx(by_w[t]["train"]["mre"], rel=1e-6)
    # the default keeps every target of the long table under its own name
    p = run("fit", str(long), *LONG_ARGS, "--target", "val_c4", "--n-starts", "2", "--json", "-q")
    assert [f["target"] for f in json.loads(p.stdout)["fits"]] == ["val_c4"]
    mix = json.loads(run("optimize", str(tmp_path / "fits.json"), "--N", "3e9", "--D", "6e10", "--json").stdout)
    assert set(mix["h"]) == {"web", "code", "books", "wiki", "arx", "qa", "cc"}
    # The additive law: its starts converge, so the reversed record order (other rounding)
    # gives the same fit to 1e-6. The joint law's best starts stop at max_iter on this split,
    # where the end point depends on rounding along the path (1e-5 relative in the objective).
    cw = json.loads(run("compare", str(wide), *wide_args, "--laws", "additive", "--n-starts", "4", "--json",
                        "-q").stdout)
    cl = json.loads(run("compare", str(long), *LONG_ARGS, "--targets", "val_*", "--laws", "additive",
                        "--n-starts", "4", "--json", "-q").stdout)
    # targets come in order of first appearance (the long file is reversed: book first)
    rows_l, rows_w = ({(r["law"], r["target"]): r for r in rows} for rows in (cl, cw))
    assert set(rows_l) == set(rows_w) and len(rows_l) == 2
    for key, a in rows_l.items():
        b = rows_w[key]
        assert (a["n_fit"], a["n_eval"]) == (b["n_fit"], b["n_eval"])
        assert a["eval_mre"] == pytest.approx(b["eval_mre"], rel=1e-6)


def test_long_format_errors_name_the_option(tmp_path):
    path = long_csv(tmp_path)
    text = path.read_text().splitlines()
    # the same (run, D, target) twice with different losses
    cells = text[1].split(",")
    cells[-1] = repr(float(cells[-1]) + 0.1)
    path.write_text("\n".join(text + [",".join(cells)]) + "\n")
    p = run("fit", str(path), *LONG_ARGS, check=False)
    assert p.returncode == 1 and "loss_column: row 0 (line 2) and row" in p.stderr
    args = list(LONG_ARGS)
    args[args.index("value")] = "nope"
    p = run("fit", str(path), *args, check=False)
    assert p.returncode == 1 and "loss_column: no column 'nope'" in p.stderr


def _pngs(directory):
    files = sorted(directory.glob("*.png"))
    for f in files:
        assert f.read_bytes()[:8] == PNG_MAGIC, f
    return [f.name for f in files]


def test_plot_dir_writes_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    long = long_csv(tmp_path)
    fits = tmp_path / "fits.json"
    p = run("fit", str(long), *LONG_ARGS, "--targets", "val_*", "--n-starts", "2", "--out", str(fits),
            "--plot", str(tmp_path / "fit"), "--json")
    json.loads(p.stdout)  # plots do not disturb the JSON on stdout
    assert "wrote 3 plots" in p.stderr
    assert _pngs(tmp_path / "fit") == ["loss_vs_tokens_book.png", "loss_vs_tokens_c4.png",
                                       "observed_vs_predicted.png"]
    run("optimize", str(fits), "--N", "3e9", "--D", "6e10", "--plot", str(tmp_path / "opt"))
    assert _pngs(tmp_path / "opt") == ["mixture_path.png", "optimal_mixture.png"]
    # compare: the table is the same with and without plots
    args = ["compare", str(long), *LONG_ARGS, "--laws", "additive,joint", "--n-starts", "2", "--json", "-q"]
    plain = json.loads(run(*args).stdout)
    plotted = json.loads(run(*args, "--plot", str(tmp_path / "cmp")).stdout)
    strip = [{k: v for k, v in r.items() if k != "fit_seconds"} for r in plain]
    assert [{k: v for k, v in r.items() if k != "fit_seconds"} for r in plotted] == strip
    assert _pngs(tmp_path / "cmp") == ["observed_vs_predicted_size_2.718e+09_additive.png",
                                       "observed_vs_predicted_size_2.718e+09_joint.png"]
    out = json.loads(run("reproduce", "--n-starts", "2", "--json", "-q", "--plot", str(tmp_path / "rep")).stdout)
    names = _pngs(tmp_path / "rep")
    assert {f"observed_vs_predicted_{law}.png" for law in ("additive", "joint", "simple", "full")} <= set(names)
    assert {f"loss_vs_tokens_additive_{r['target']}.png" for r in out["mre"]} <= set(names)
    assert {"optimal_mixture.png", "mixture_path_joint.png"} <= set(names)
    assert len(names) == 4 + 8 + 2
    # a file where the directory should be
    (tmp_path / "afile").write_text("")
    p = run("optimize", str(fits), "--N", "3e9", "--D", "6e10", "--plot", str(tmp_path / "afile"), check=False)
    assert p.returncode == 1 and "--plot" in p.stderr


def test_plot_without_matplotlib_says_how_to_install(tmp_path):
    fits = tmp_path / "fits.json"
    run("fit", str(user_csv(tmp_path)), "--weights", "w_*", "--n-column", "params", "--d-column", "tokens",
        "--targets", "val_*", "--n-starts", "2", "--out", str(fits), "-q")
    code = ("import sys; sys.modules['matplotlib'] = None; from mixlaw.cli import main; "
            f"sys.exit(main(['optimize', {str(fits)!r}, '--N', '3e9', '--D', '6e10', '--plot', "
            f"{str(tmp_path / 'plots')!r}]))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert "pip install 'mixlaw[plot]'" in p.stderr and p.stdout == ""
    assert not (tmp_path / "plots").exists()


def test_optimize_has_the_python_options(tmp_path):
    # Bounds (fractions), available tokens, epochs and units on the command line give the
    # mixture optimize_mixture gives with the same arguments.
    out = tmp_path / "fits.json"
    run("fit", "slimpajama", "--law", "additive", "--target", "c4,book", "--n-starts", "4", "--out", str(out), "-q")
    p = run("optimize", str(out), "--N", "7", "--N-unit", "1e9", "--D", "140", "--D-unit", "1e9", "--json",
            "--bounds", "wikipedia=0.1:0.3,c4=0:0.2", "--available-tokens", "github=1e10", "--max-epochs", "2")
    got = json.loads(p.stdout)["h"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixlaw.ExtrapolationWarning)
        want = mixlaw.optimize_mixture(mixlaw.load_fits(out), N=7e9, D=1.4e11,
                                       bounds={"wikipedia": (0.1, 0.3), "c4": (0, 0.2)},
                                       available_tokens={"github": 1e10}, max_epochs=2).h
    assert got == pytest.approx(want, rel=0, abs=1e-12)
    assert got["c4"] == pytest.approx(0.2, abs=1e-9) and got["wikipedia"] == pytest.approx(0.1, abs=1e-9)
    bad = run("optimize", str(out), "--N", "7e9", "--D", "1.4e11", "--bounds", "c4=5:50", check=False)
    assert bad.returncode != 0 and "bounds are fractions of the mixture" in bad.stderr
    bad = run("optimize", str(out), "--N", "7e9", "--D", "1.4e11", "--bounds", "c4=0.5", check=False)
    assert bad.returncode != 0 and "--bounds: expected DOMAIN=MIN:MAX" in bad.stderr


def test_optimize_takes_unique_tokens_and_a_prior(tmp_path):
    out = tmp_path / "fits.json"
    run("fit", "slimpajama", "--law", "additive", "--target", "c4,book", "--n-starts", "4", "--out", str(out), "-q")
    fits = mixlaw.load_fits(out)
    prior = dict(zip(fits["c4"].domains, [0.1, 0.1, 0.3, 0.1, 0.2, 0.1, 0.1]))
    p = run("optimize", str(out), "--N", "7e9", "--D", "1e12", "--json", "--unique-tokens", "wikipedia=2e10,book=2e10",
            "--repetition-halflife", "10", "--prior", ",".join(f"{d}={w}" for d, w in prior.items()), "--kl", "0.01")
    got = json.loads(p.stdout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixlaw.ExtrapolationWarning)
        want = mixlaw.optimize_mixture(fits, N=7e9, D=1e12, unique_tokens={"wikipedia": 2e10, "book": 2e10},
                                       repetition_halflife=10.0, prior=prior, kl=0.01)
    assert got["h"] == pytest.approx(want.h, rel=0, abs=1e-12)
    assert got["unregularised"]["h"] == pytest.approx(want.unregularised.h, rel=0, abs=1e-12)
    assert got["kl_divergence"] == pytest.approx(want.kl_divergence, rel=1e-12)
    text = run("optimize", str(out), "--N", "7e9", "--D", "1e12", "--prior",
               ",".join(f"{d}={w}" for d, w in prior.items()), "--kl", "0.01").stdout
    assert "unregularised" in text and "KL(h || prior)" in text
    bad = run("optimize", str(out), "--N", "7e9", "--D", "1e12", "--kl", "0.1", check=False)
    assert bad.returncode != 0 and "prior: needed when kl > 0" in bad.stderr
    bad = run("optimize", str(out), "--N", "7e9", "--D", "1e12", "--unique-tokens", "nope=1e9", check=False)
    assert bad.returncode != 0 and "unique_tokens: unknown domain" in bad.stderr


def test_fit_a_data_constrained_law(tmp_path):
    # Runs over 1e9 unique tokens, up to 100 epochs, from a known rule (R_D = 12).
    law = mixlaw.law("chinchilla", repetition=True)
    truth = np.array([1.9, 300.0, 800.0, 0.32, 0.36, 12.0])
    N = np.repeat(10 ** np.linspace(7.5, 9.5, 5), 12)
    D = np.tile(10 ** np.linspace(8.5, 11, 12), 5)
    y = law.predict(truth, N, D, unique_tokens=1e9)
    pd.DataFrame({"params": N, "tokens": D, "loss": y}).to_csv(tmp_path / "runs.csv", index=False)
    out = tmp_path / "fits.json"
    run("fit", str(tmp_path / "runs.csv"), "--law", "chinchilla", "--weights", "none", "--n-column", "params",
        "--d-column", "tokens", "--targets", "loss", "--repetition", "shared", "--unique-tokens", "1e9", "--n-starts", "8", "--out", str(out),
        "-q")
    f = mixlaw.load_fits(out)["loss"]
    assert f.law.repetition == "shared" and f.params["R_D"] == pytest.approx(12.0, rel=1e-3)
    bad = run("fit", str(tmp_path / "runs.csv"), "--law", "chinchilla", "--weights", "none", "--n-column", "params",
              "--d-column", "tokens", "--targets", "loss", "--repetition", "shared", check=False)
    assert bad.returncode == 1 and "unique_tokens: " in bad.stderr and "is data-constrained" in bad.stderr
