"""The README's examples run as written.

The Python blocks of README.md are executed in order in one namespace (the quick start on the
bundled data, the tutorial and the long-table example on synthetic tables written to the
file names the README uses), and the tutorial's shell commands through the CLI entry point.
Only the Dask block is skipped: it needs a running scheduler.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

import mixlaw
from mixlaw import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def _write_tables(directory: Path) -> None:
    """Runs planted from an additive law on the README's columns: 3 domains, 4 sizes,
    30 mixtures, 4 checkpoints per run, 2 targets; the same runs as a long table."""
    rng = np.random.default_rng(7)
    sizes = [1.2e8, 2.5e8, 5.0e8, 1.1e9]
    H = np.round(rng.dirichlet(np.ones(3), 30), 3)  # 3 decimals, as published tables
    truth = {"web": (1.9, 1.1, -0.6, -0.1, 0.3, 0.25), "code": (1.2, 0.9, -0.2, -0.7, 0.3, 0.3)}
    wide = ["run,params,tokens,w_web,w_code,w_books,val_web,val_code"]
    long = ["run,params,tokens,w_web,w_code,w_books,metric,value"]
    r = 0
    for N in sizes:
        for h in H:
            r += 1
            for D in np.array([0.25, 0.5, 0.75, 1.0]) * 20 * N:
                hn = h / h.sum()
                loss = {}
                for t, (E, A, cw, cc, alpha, beta) in truth.items():
                    mix = cw * hn[0] ** 0.5 + cc * hn[1] ** 0.5
                    loss[t] = E + A / (N / 1e6) ** alpha + 2.0 / (D / 1e9) ** beta + mix
                    loss[t] *= 1 + 0.002 * rng.standard_normal()
                w = ",".join(f"{v:.3f}" for v in h)
                wide.append(f"r{r:03d},{N:.3g},{D:.4g},{w},{loss['web']:.5f},{loss['code']:.5f}")
                for t in truth:
                    long.append(f"r{r:03d},{N:.3g},{D:.4g},{w},val_{t},{loss[t]:.5f}")
    (directory / "my_runs.csv").write_text("\n".join(wide) + "\n")
    (directory / "evals.csv").write_text("\n".join(long) + "\n")


@pytest.fixture
def readme_dir(tmp_path, monkeypatch):
    _write_tables(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_python_examples_run(readme_dir):
    pytest.importorskip("pandas")
    pytest.importorskip("matplotlib")
    ns: dict = {}
    ran = checked = 0
    for code in _blocks("python"):
        if "Client(" in code:  # needs a Dask scheduler
            continue
        exec(compile(code, "README.md", "exec"), ns)
        ran += 1
        if "bootstrap(runs" in code:  # the tutorial's last step, on my_runs.csv
            assert isinstance(ns["runs"], mixlaw.Runs) and ns["runs"].domains == ("web", "code", "books")
            best = ns["best"]
            assert abs(sum(best.h.values()) - 1) < 1e-9 and 0.05 - 1e-12 <= best.h["code"] <= 0.5 + 1e-12
            interval = ns["boot"].mixture_interval(N=7e9, D=1.4e11)
            assert set(interval) == {"web", "code", "books", "estimate", "level"}
            checked += 1
    assert ran >= 6 and checked == 1
    assert (readme_dir / "grid.jsonl").stat().st_size > 0


def test_readme_shell_examples_run(readme_dir, capsys):
    ran = 0
    for block in _blocks("bash"):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            words = shlex.split(line)
            if not words or words[0] != "mixlaw" or "my_runs.csv" not in line and "fits.json" not in line:
                continue
            assert cli.main(words[1:]) == 0, line
            ran += 1
    assert ran == 3
    assert (readme_dir / "fits.json").exists()
    assert "web" in capsys.readouterr().out
