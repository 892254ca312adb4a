"""The installed `mixlaw` entry point, driven in a subprocess (issue 5)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import mixlaw

EXE = shutil.which("mixlaw")


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
