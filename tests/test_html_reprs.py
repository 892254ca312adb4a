"""Notebook reprs (issue 22): ``_repr_html_`` of Runs, Fit, Fits, MixtureResult (plain and
regularised), MixtureGrid, BootstrapResult and ParetoFront: balanced tags, every domain and
value shown, names escaped."""
from __future__ import annotations

import warnings
from html.parser import HTMLParser

import numpy as np
import pytest

import mixlaw
from mixlaw.design import next_runs

DOMAINS = ["web<b>", "code & math", "books"]


class Checker(HTMLParser):
    """Collects the text and checks that every opened tag is closed in order."""

    VOID = {"br"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack)
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parsed_text(html: str) -> str:
    c = Checker()
    c.feed(html)
    c.close()
    assert not c.stack, c.stack
    return " ".join(c.text)


@pytest.fixture(scope="module")
def objects():
    rng = np.random.default_rng(0)
    L = mixlaw.law("additive", 3)
    truth = np.array([1.8, 2.0, 1.5, 0.3, 0.3, 1.0, 2.0, 0.5, 0.4, 0.6, 0.8])
    M = rng.dirichlet(np.ones(3), 12)
    N = np.repeat([5e7, 1e8, 3e8], 12 * 3)
    D = np.tile(np.repeat([2e9, 4e9, 8e9], 12), 3)
    H = np.tile(M, (9, 1))
    y = L.predict(truth, N, D, H) * (1 + 1e-3 * rng.standard_normal(N.size))
    runs = mixlaw.Runs(N, D, H, targets={"loss<1>": y, "other": y * 1.01}, domains=DOMAINS)
    fits = mixlaw.fit(runs, L, n_starts=2, threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixlaw.ExtrapolationWarning)
        one = mixlaw.optimize_mixture(fits, N=1e9, D=2e10)
        grid = mixlaw.optimize_mixture(fits, N=[1e9, 3e9], D=[2e10, 6e10])
        regularised = mixlaw.optimize_mixture(fits, N=1e9, D=2e10, prior=runs, kl=0.01)
        front = mixlaw.pareto_front(fits, N=1e9, D=2e10, n_points=5)
        chosen = next_runs(runs, runs, fits=fits, N=1e9, D=2e10, batch=2)
    boot = mixlaw.bootstrap(runs, L, targets="other", n_boot=3, n_starts=2, threads=1)
    return runs, fits, one, grid, boot, regularised, front, chosen


def test_every_repr_is_balanced_and_shows_the_domains_escaped(objects):
    for obj in objects:
        html = obj._repr_html_()
        assert "web<b>" not in html and "web&lt;b&gt;" in html, type(obj).__name__
        text = parsed_text(html)
        assert "web<b>" in text or "C[web<b>]" in text, type(obj).__name__


def test_fit_repr_lists_parameters_by_domain_with_values(objects):
    _, fits, *_ = objects
    f = fits["other"]
    text = parsed_text(f._repr_html_())
    for name, value in f.domain_params.items():
        assert name in text and f"{value:.6g}" in text
    assert f"{f.fun:.6g}" in text and "success = True" in text


def test_mixture_reprs_show_weights_in_percent_and_losses(objects):
    _, _, one, grid, *_ = objects
    text = parsed_text(one._repr_html_())
    for d, v in one.h.items():
        assert f"{100 * v:.6g}" in text
    for t, v in one.losses.items():
        assert t in text and f"{v:.6g}" in text
    text = parsed_text(grid._repr_html_())
    assert f"{100 * grid.h[1, 2]:.6g}" in text and "2 of 2" in text


def test_bootstrap_repr_shows_the_intervals(objects):
    boot = objects[4]
    text = parsed_text(boot._repr_html_())
    lo, hi = boot.intervals("other")["E"]
    assert f"{lo:.6g}" in text and f"{hi:.6g}" in text and "90% intervals" in text


def test_regularised_mixture_repr_shows_prior_and_unregularised_side_by_side(objects):
    r = objects[5]
    text = parsed_text(r._repr_html_())
    u = r.unregularised
    for d, v in r.h.items():
        assert f"{100 * v:.6g}" in text and f"{100 * r.prior[d]:.6g}" in text and f"{100 * u.h[d]:.6g}" in text
    for t, v in r.losses.items():
        assert f"{v:.6g}" in text and f"{u.losses[t]:.6g}" in text
    assert f"{r.kl_divergence:.4g}" in text


def test_pareto_front_repr_shows_weights_and_losses(objects):
    front = objects[6]
    text = parsed_text(front._repr_html_())
    assert "5 of 5" in text
    for p in range(len(front)):
        assert f"{front.losses[p, 0]:.6g}" in text and f"{100 * front.h[p, 0]:.6g}" in text


def test_next_runs_repr_shows_the_mixture_its_uncertainty_and_the_runs(objects):
    r = objects[7]
    text = parsed_text(r._repr_html_())
    for d, v in r.h.items():
        assert f"{v:.6g}" in text and f"{r.uncertainty['h'][d]:.6g}" in text and f"{r.expected['h'][d]:.6g}" in text
    for run in r.runs["run"]:
        assert str(run) in text
    assert f"{r.criterion:.6g}" in text and "settled" in text
