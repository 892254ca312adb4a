"""Tests of the data layer: Runs, load_runs, bundled datasets, protocols, metrics.

Expected numbers come from the data READMEs and SPEC 6 (counts published with the data),
from an independent parse of the bundled CSV files with the csv module, or from hand
computation; never from the code under test.
"""
from __future__ import annotations

import csv
import math
import pickle
from collections import defaultdict

import numpy as np
import pytest

from mixlaw import datasets, metrics
from mixlaw.data import Runs, load_runs
from mixlaw.protocols import chinchilla_epoch, chinchilla_peer, slimpajama_paper_split

DOMAINS = ("arxiv", "book", "c4", "github", "commoncrawl", "stackexchange", "wikipedia")
SIZES = (122e6, 310e6, 680e6, 937e6, 1.235e9, 2.718e9)


# ---------------------------------------------------------------------------------
# independent reference parse of the bundled files
# ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def raw_slimpajama():
    with open(datasets.path("slimpajama"), newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def raw_chinchilla():
    with open(datasets.path("chinchilla"), newline="") as fh:
        return list(csv.DictReader(fh))


def _raw_runs(rows):
    """(model_size, weight strings) -> row indices, from the raw file."""
    runs = defaultdict(list)
    for i, r in enumerate(rows):
        runs[(r["model_size"], tuple(r[f"weight_{d}"] for d in DOMAINS))].append(i)
    return runs


# ---------------------------------------------------------------------------------
# bundled data
# ---------------------------------------------------------------------------------
def test_bundled_files_exist():
    for name in ("slimpajama", "chinchilla", "readme", "svg_extracted_data.csv"):
        assert datasets.path(name).is_file()
    assert datasets.path("slimpajama").name == "dmsl_llm_slimpajama.csv"
    with pytest.raises(ValueError, match=r"^name: .*slimpajama"):
        datasets.path("pile")


def test_slimpajama_raw_matches_file(raw_slimpajama):
    r = datasets.slimpajama(dedup=False)
    assert len(r) == 2452 == len(raw_slimpajama)
    assert r.domains == DOMAINS and r.k == 7
    assert r.target_names == DOMAINS + ("openhermes",)
    np.testing.assert_array_equal(r.N, [float(x["model_size"]) for x in raw_slimpajama])
    np.testing.assert_array_equal(r.D, [float(x["n_tokens"]) for x in raw_slimpajama])
    H = np.array([[float(x[f"weight_{d}"]) for d in DOMAINS] for x in raw_slimpajama])
    np.testing.assert_array_equal(r.H, H)
    for t in r.target_names:
        ref = [float(x[f"{t}_loss"]) if x[f"{t}_loss"] else np.nan for x in raw_slimpajama]
        np.testing.assert_array_equal(r.targets[t], ref)
    assert r.H.dtype == np.float64 and r.H.flags.c_contiguous and r.H.shape == (2452, 7)
    assert r.N.dtype == r.D.dtype == np.float64 and r.run.dtype == np.int64


def test_slimpajama_facts_from_readme():
    r = datasets.slimpajama(dedup=False)
    np.testing.assert_allclose(r.model_sizes, SIZES)
    assert len(r.mixtures) == 61
    per_size = {s: len(r.where(model_size=s).mixtures) for s in SIZES}
    assert per_size == {122e6: 60, 310e6: 60, 680e6: 40, 937e6: 40, 1.235e9: 20, 2.718e9: 4}
    nan = {t: int(np.isnan(y).sum()) for t, y in r.targets.items()}
    assert nan == {**{t: 0 for t in r.target_names}, "wikipedia": 6, "stackexchange": 5,
                   "openhermes": 3, "github": 2}
    assert r.H.min() == pytest.approx(0.02) and r.H.max() == pytest.approx(0.417, abs=1e-3)
    # the paper's optimal mixture is one of the 2.718B runs
    opt = np.array([0.09564, 0.09541, 0.24954, 0.08807, 0.12145, 0.17944, 0.17045])
    big = r.where(model_size=2.718e9).mixtures
    assert np.abs(big - opt).max(axis=1).min() < 1e-4


def test_run_ids(raw_slimpajama):
    r = datasets.slimpajama(dedup=False)
    raw = _raw_runs(raw_slimpajama)
    assert len(np.unique(r.run)) == len(raw) == 224
    for idx in raw.values():
        assert len(set(r.run[idx])) == 1
    # different runs never share an id
    firsts = [idx[0] for idx in raw.values()]
    assert len(set(r.run[firsts])) == len(firsts)


def test_dedup_drops_one_duplicated_last_checkpoint_per_run(raw_slimpajama):
    raw = _raw_runs(raw_slimpajama)
    losses = [c for c in raw_slimpajama[0] if c.endswith("_loss")]
    # the duplication, checked on the raw file: the two largest token counts of every
    # run carry identical losses and differ by 2e6 tokens
    for idx in raw.values():
        toks = sorted(float(raw_slimpajama[i]["n_tokens"]) for i in idx)
        assert toks[-1] - toks[-2] == pytest.approx(2e6, rel=1e-6)
        a, b = (raw_slimpajama[i] for i in idx[-2:])
        assert [a[c] for c in losses] == [b[c] for c in losses]

    r = datasets.slimpajama()
    assert len(r) == 2452 - 224
    assert len(np.unique(r.run)) == 224
    full = datasets.slimpajama(dedup=False)
    for rid in np.unique(full.run):
        d_full = np.sort(full.D[full.run == rid])
        d_kept = np.sort(r.D[r.run == rid])
        # the smaller of the duplicated pair (on the checkpoint grid) is kept
        np.testing.assert_array_equal(d_kept, d_full[:-1])
        assert np.all(np.diff(d_kept) / d_kept[1:] > 0.05)
    assert r.where(model_size=122e6).D.max() == 19.998e9
    assert r.where(model_size=2.718e9).D.max() == 103.678e9


def test_datasets_cached_and_immutable():
    assert datasets.slimpajama() is datasets.slimpajama()
    r = datasets.slimpajama()
    with pytest.raises(ValueError):
        r.N[0] = 1.0
    with pytest.raises(ValueError):
        r.H[0, 0] = 1.0
    with pytest.raises(ValueError):
        r.targets["c4"][0] = 1.0
    with pytest.raises(TypeError):
        r.targets["c4"] = np.zeros(len(r))  # type: ignore[index]
    with pytest.raises(AttributeError):
        r.N = np.ones(len(r))  # type: ignore[misc]


def test_chinchilla(raw_chinchilla):
    c = datasets.chinchilla()
    assert len(c) == 245 == len(raw_chinchilla)
    assert c.k == 0 and c.H.shape == (245, 0) and c.domains == ()
    assert c.target_names == ("loss",)
    N = np.array([float(x["Model Size"]) for x in raw_chinchilla])
    C = np.array([float(x["Training FLOP"]) for x in raw_chinchilla])
    np.testing.assert_array_equal(c.N, N)
    np.testing.assert_allclose(6 * c.N * c.D, C, rtol=1e-14)
    np.testing.assert_array_equal(c.targets["loss"], [float(x["loss"]) for x in raw_chinchilla])
    assert len(np.unique(c.run)) == 245  # every point is its own run


# ---------------------------------------------------------------------------------
# protocols
# ---------------------------------------------------------------------------------
def test_slimpajama_paper_split_counts():
    train, ev = slimpajama_paper_split(datasets.slimpajama())
    assert len(train) == 1374
    assert len(train.mixtures) == 60
    np.testing.assert_allclose(train.model_sizes, [310e6, 680e6, 937e6, 1.235e9])
    assert len(ev) == 36 and len(ev.mixtures) == 4
    np.testing.assert_allclose(ev.model_sizes, [2.718e9])
    lo = {310e6: 3.9e9, 680e6: 7e9, 937e6: 7e9, 1.235e9: 13e9}
    for s, m in lo.items():
        d = train.where(model_size=s).D
        assert d.min() >= m
    assert ev.D.min() >= 20e9
    # empty loss cells are dropped per target only
    n_wiki = len(train.target("wikipedia")[3])
    assert n_wiki == 1374 - int(np.isnan(train.targets["wikipedia"]).sum()) < 1374
    assert len(train.target("c4")[3]) == 1374


def test_slimpajama_paper_split_thresholds_synthetic():
    # SPEC 6.1 bounds, each probed just below and just above
    lo = {122e6: None, 310e6: 3.9e9, 680e6: 7e9, 937e6: 7e9, 1.235e9: 13e9, 2.718e9: 20e9}
    N, D = [], []
    for s, m in lo.items():
        for d in ([1e9, 50e9] if m is None else [m * 0.999, m, m * 1.001]):
            N.append(s)
            D.append(d)
    r = Runs(N, D, np.tile([0.5, 0.5], (len(N), 1)), targets={"x": np.arange(len(N)) + 1.0})
    train, ev = slimpajama_paper_split(r)
    assert sorted(zip(train.N, train.D)) == sorted(
        (s, d) for s, d in zip(N, D) if s not in (122e6, 2.718e9) and d >= lo[s])
    assert sorted(ev.D) == [20e9, 20e9 * 1.001]


def test_slimpajama_paper_split_needs_dedup():
    with pytest.raises(ValueError, match=r"^runs: .*dedup"):
        slimpajama_paper_split(datasets.slimpajama(dedup=False))


def test_chinchilla_protocols():
    c = datasets.chinchilla()
    peer, epoch = chinchilla_peer(c), chinchilla_epoch(c)
    assert len(peer) == 217 and len(epoch) == 240
    y = np.sort(c.targets["loss"])
    assert epoch.targets["loss"].max() < y[-5]
    assert np.all(6 * peer.N * peer.D < 1e21)
    with pytest.raises(ValueError, match=r"^runs: "):
        chinchilla_epoch(datasets.slimpajama())


# ---------------------------------------------------------------------------------
# load_runs on user data
# ---------------------------------------------------------------------------------
USER_CSV = """\
params,tokens,frac_web,frac_code,val_web,val_code,colour
1e8,1e9,0.7,0.3,3.1,2.0,#ff0000
1e8,2e9,0.7,0.3,3.0,,#00ff00
2e8,1e9,0.5,0.5,2.9,1.8,#0000ff
2e8,1e9,0.7,0.3,2.95,1.9,#000000
"""


@pytest.fixture
def user_csv(tmp_path):
    p = tmp_path / "runs.csv"
    p.write_text(USER_CSV)
    return p


def test_load_user_csv(user_csv):
    r = load_runs(user_csv, weights="frac_*", N="params", D="tokens", targets="val_*")
    assert len(r) == 4 and r.domains == ("web", "code") and r.target_names == ("web", "code")
    np.testing.assert_array_equal(r.N, [1e8, 1e8, 2e8, 2e8])
    np.testing.assert_array_equal(r.D, [1e9, 2e9, 1e9, 1e9])
    np.testing.assert_array_equal(r.H, [[0.7, 0.3]] * 2 + [[0.5, 0.5], [0.7, 0.3]])
    np.testing.assert_array_equal(r.targets["code"], [2.0, np.nan, 1.8, 1.9])
    np.testing.assert_array_equal(r.run, [0, 0, 1, 2])
    np.testing.assert_array_equal(r.mixtures, [[0.7, 0.3], [0.5, 0.5]])
    N, D, H, y = r.target("code")
    np.testing.assert_array_equal(y, [2.0, 1.8, 1.9])
    np.testing.assert_array_equal(D, [1e9, 1e9, 1e9])
    assert H.shape == (3, 2)
    assert "n=4" in repr(r) and "web" in repr(r)


def test_load_explicit_columns(user_csv):
    r = load_runs(user_csv, weights=["frac_code", "frac_web"], N="params", D="tokens",
                  targets={"val_web": "web_val"})
    assert r.domains == ("frac_code", "frac_web") and r.target_names == ("web_val",)
    np.testing.assert_array_equal(r.H[0], [0.3, 0.7])


def test_glob_with_prefix_and_suffix():
    src = {"n": [1e8], "d": [1e9], "h.a.w": [0.25], "h.b.w": [0.75], "a_loss": [1.0],
           "c_loss": [1.0], "val_c4_ppl": [2.0], "val_gh_ppl": [3.0], "[x]": [4.0]}
    r = load_runs(src, weights="h.*.w", N="n", D="d", targets="val_*_ppl")
    assert r.domains == ("a", "b") and r.target_names == ("c4", "gh")
    r = load_runs(src, weights="h.?.w", N="n", D="d", targets="[!b]_loss")
    assert r.domains == ("a", "b") and r.target_names == ("a", "c")
    r = load_runs(src, weights="h.[a-b].w", N="n", D="d", targets="[[]x]")
    assert r.domains == ("a", "b") and r.target_names == ("[",)


def test_load_dict_of_arrays():
    src = {"model_size": np.array([1e8, 1e8, 3e8]), "n_tokens": [1e9, 2e9, 1e9],
           "weight_a": [1.0, 1.0, 0.0], "weight_b": [0.0, 0.0, 1.0], "a_loss": [2.0, 1.5, np.nan]}
    r = load_runs(src)
    assert r.domains == ("a", "b") and r.target_names == ("a",)
    np.testing.assert_array_equal(r.run, [0, 0, 1])
    assert np.isnan(r.targets["a"][2])
    # the caller's arrays are copied
    src["model_size"][0] = 5.0
    assert r.N[0] == 1e8


def test_load_dataframe_like():
    class Col:
        def __init__(self, v):
            self.v = v

        def to_numpy(self, dtype=None, na_value=None):
            return np.asarray(self.v, dtype=dtype)

    class Frame:
        def __init__(self, d):
            self.d = d
            self.columns = list(d)

        def __getitem__(self, c):
            return Col(self.d[c])

    f = Frame({"model_size": [1e8, 2e8], "n_tokens": [1e9, 1e9], "weight_x": [1.0, 1.0],
               "x_loss": [3.0, 2.5]})
    r = load_runs(f)
    np.testing.assert_array_equal(r.targets["x"], [3.0, 2.5])


def test_to_dict_round_trip():
    r = datasets.slimpajama()
    back = load_runs(r.to_dict(), run="run")
    for a in ("N", "D", "H", "run"):
        np.testing.assert_array_equal(getattr(back, a), getattr(r, a))
    assert back.domains == r.domains and back.target_names == r.target_names
    for t in r.target_names:
        np.testing.assert_array_equal(back.targets[t], r.targets[t])


def test_renormalize():
    src = {"model_size": [1e8, 1e8], "n_tokens": [1e9, 2e9], "weight_a": [0.33, 0.5],
           "weight_b": [0.66, 0.5], "a_loss": [1.0, 1.0]}
    with pytest.raises(ValueError, match=r"^weights: row 0 sums to 0\.99.*renormalize=True"):
        load_runs(src)
    r = load_runs(src, renormalize=True)
    np.testing.assert_allclose(r.H[0], [1 / 3, 2 / 3])


def test_dedup_rule_synthetic():
    # run 0: exact duplicate pair at the end, plus a triple at nearly equal D
    # run 1: equal losses but far apart in D -> kept; run 2: near D, different loss -> kept
    src = {
        "model_size": [1e8, 1e8, 1e8, 1e8, 1e8, 2e8, 2e8, 2e8, 2e8],
        "n_tokens": [1e9, 2e9, 2.0001e9, 2.0002e9, 1.9995e9, 1e9, 2e9, 1e9, 1.0005e9],
        "weight_a": [1.0] * 7 + [0.5, 0.5],
        "weight_b": [0.0] * 7 + [0.5, 0.5],
        "a_loss": [3.0, 2.0, 2.0, 2.0, 2.0, 2.5, 2.5, 2.4, 2.3],
        "b_loss": [3.0, np.nan, np.nan, np.nan, np.nan, 2.5, 2.5, 2.4, 2.3],
    }
    r = load_runs(src, dedup=True)
    # run 0 keeps 1e9 and the smallest of the near-equal group (1.9995e9)
    np.testing.assert_array_equal(np.sort(r.where(model_size=1e8).D), [1e9, 1.9995e9])
    assert len(r.where(model_size=2e8)) == 4
    assert len(load_runs(src)) == 9


# ---------------------------------------------------------------------------------
# Runs API
# ---------------------------------------------------------------------------------
def test_select_and_where():
    r = datasets.slimpajama()
    s = r.select(r.N == 310e6)
    assert np.all(s.N == 310e6) and len(s) == int((r.N == 310e6).sum())
    s2 = r.select([0, 5, -1])
    np.testing.assert_array_equal(s2.D, r.D[[0, 5, len(r) - 1]])
    assert len(r.select([])) == 0
    # relative tolerance on sizes, several sizes, per-size token bounds
    w = r.where(model_size=310e6 * (1 + 1e-12))
    assert len(w) == len(s)
    w = r.where(model_size=(122e6, 310e6), min_tokens={122e6: 10e9}, max_tokens=15e9)
    assert set(w.model_sizes) == {122e6, 310e6}
    assert w.where(model_size=122e6).D.min() >= 10e9
    assert w.where(model_size=310e6).D.min() < 10e9
    assert w.D.max() <= 15e9
    assert len(r.where(min_tokens=100e9)) == 4  # only the 2.718B runs reach 100B tokens


def test_model_sizes_and_mixtures_order():
    H = [[0.5, 0.5], [1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    r = Runs([3e8, 1e8, 2e8, 1e8], [1e9] * 4, H, domains=["a", "b"])
    np.testing.assert_array_equal(r.model_sizes, [1e8, 2e8, 3e8])
    np.testing.assert_array_equal(r.mixtures, [[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(r.run, [0, 1, 2, 3])
    assert r.target_names == () and r.k == 2


def test_pickle_round_trip():
    r = datasets.slimpajama()
    back = pickle.loads(pickle.dumps(r))
    assert isinstance(back, Runs) and len(back) == len(r)
    for a in ("N", "D", "H", "run"):
        np.testing.assert_array_equal(getattr(back, a), getattr(r, a))
        assert not getattr(back, a).flags.writeable
    for t in r.target_names:
        np.testing.assert_array_equal(back.targets[t], r.targets[t])
    assert back.domains == r.domains
    c = pickle.loads(pickle.dumps(datasets.chinchilla()))
    assert c.H.shape == (245, 0)


def test_target_errors():
    r = datasets.slimpajama()
    with pytest.raises(ValueError, match=r"^target: .*'pile'.*arxiv.*openhermes"):
        r.target("pile")


# ---------------------------------------------------------------------------------
# bad inputs: ValueError naming the argument
# ---------------------------------------------------------------------------------
GOOD = dict(N=[1e8, 2e8], D=[1e9, 1e9], H=[[0.5, 0.5], [0.2, 0.8]])


@pytest.mark.parametrize(
    "change, pattern",
    [
        (dict(N=[1e8, -1.0]), r"^N: row 1"),
        (dict(N=[np.nan, 1e8]), r"^N: row 0"),
        (dict(N=[1e8]), r"^D: "),
        (dict(D=[1e9, 0.0]), r"^D: row 1"),
        (dict(D=[[1e9, 1e9]]), r"^D: "),
        (dict(H=[[0.5, 0.5], [0.2, 0.7]]), r"^H: row 1 sums to 0\.9, expected 1 within 1e-06"),
        (dict(H=[[1.5, -0.5], [0.2, 0.8]]), r"^H: row 0 .*negative"),
        (dict(H=[[0.5, 0.5], [np.nan, 0.5]]), r"^H: row 1 .*non-finite"),
        (dict(H=[0.5, 0.5]), r"^H: expected shape"),
        (dict(domains=["a"]), r"^domains: "),
        (dict(domains=["a", "a"]), r"^domains: .*duplicated"),
        (dict(targets={"x": [1.0]}), r"^targets\['x'\]: "),
        (dict(targets={"x": [1.0, np.inf]}), r"^targets\['x'\]: row 1"),
        (dict(run=[0]), r"^run: "),
        (dict(run=[0.5, 1.0]), r"^run: "),
    ],
)
def test_runs_validation(change, pattern):
    kw = {**GOOD, **change}
    with pytest.raises(ValueError, match=pattern):
        Runs(kw.pop("N"), kw.pop("D"), kw.pop("H"), **kw)


def test_select_where_validation():
    r = Runs(**GOOD)
    with pytest.raises(ValueError, match=r"^mask_or_indices: "):
        r.select([True])
    with pytest.raises(ValueError, match=r"^mask_or_indices: "):
        r.select([0.0, 1.0])
    with pytest.raises(ValueError, match=r"^mask_or_indices: "):
        r.select([2])
    with pytest.raises(ValueError, match=r"^model_size: .*3e\+08"):
        r.where(model_size=3e8)
    with pytest.raises(ValueError, match=r"^min_tokens: "):
        r.where(min_tokens={5e8: 1e9})
    with pytest.raises(ValueError, match=r"^max_tokens: "):
        r.where(max_tokens="lots")


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(N="size"), r"^N: no column 'size'; available columns: params, tokens"),
        (dict(N="params", D="toks"), r"^D: no column 'toks'; available columns: .*frac_web"),
        (dict(N="params", D="tokens", weights="w_*"), r"^weights: pattern 'w_\*' matches no column; available"),
        (dict(N="params", D="tokens", weights=["frac_web", "frac_x"]), r"^weights: no column 'frac_x'"),
        (dict(N="params", D="tokens", weights=["frac_web", "frac_web"]), r"^weights: duplicated"),
        (dict(N="params", D="tokens", weights=3), r"^weights: expected a glob"),
        (dict(N="params", D="tokens", weights="frac_*", targets="loss_*"), r"^targets: .*available columns"),
        (dict(N="params", D="tokens", weights="frac_*", targets="val_*", run="id"), r"^run: no column"),
    ],
)
def test_load_unknown_columns(user_csv, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_runs(user_csv, **kwargs)


def test_load_bad_cells(tmp_path):
    head = "model_size,n_tokens,weight_a,weight_b,a_loss\n"
    cases = {
        "1e8,1e9,0.5,0.5,1\n,1e9,0.5,0.5,1\n": r"^N: column 'model_size', row 1 \(line 3\): empty",
        "1e8,1e9,0.5,0.5,1\n1e8,abc,0.5,0.5,1\n": r"^D: column 'n_tokens', row 1 \(line 3\): cannot parse 'abc'",
        "1e8,1e9,0.5,x,1\n": r"^weights: column 'weight_b', row 0 \(line 2\): cannot parse",
        "1e8,1e9,0.5,,1\n": r"^weights: column 'weight_b', row 0 .*empty",
        "1e8,1e9,0.5,0.5,bad\n": r"^targets: column 'a_loss', row 0",
        "1e8,1e9,0.5,0.5\n": r"^source: .*line 2 has 4 fields",
        "1e8,1e9,0.6,0.5,1\n": r"^weights: row 0 sums to 1\.1",
    }
    for i, (body, pattern) in enumerate(cases.items()):
        p = tmp_path / f"bad{i}.csv"
        p.write_text(head + body)
        with pytest.raises(ValueError, match=pattern):
            load_runs(p)


def test_load_bad_sources(tmp_path):
    with pytest.raises(ValueError, match=r"^source: no such file"):
        load_runs(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match=r"^source: "):
        load_runs(42)
    # "wa_b" and "wab_" both give the name "ab" under "w*_*"
    src = {"model_size": [1e8], "n_tokens": [1e9], "wa_b": [0.5], "wab_": [0.5]}
    with pytest.raises(ValueError, match=r"^weights: .*duplicated names"):
        load_runs(src, weights="w*_*", targets=None)


# ---------------------------------------------------------------------------------
# long tables: one row per (run, checkpoint, target)
# ---------------------------------------------------------------------------------
LONG_HEAD = ["run_name", "params", "tokens"] + [f"w_{d}" for d in DOMAINS] + ["metric", "value"]


@pytest.fixture(scope="module")
def long_rows(raw_slimpajama):
    """The bundled SlimPajama file rewritten as a long table straight from the raw CSV
    strings (one row per non-empty loss cell), rows shuffled, string run names."""
    raw_run = {key: i for i, key in enumerate(_raw_runs(raw_slimpajama))}
    targets = [c[: -len("_loss")] for c in raw_slimpajama[0] if c.endswith("_loss")]
    rows = []
    for r in raw_slimpajama:
        key = (r["model_size"], tuple(r[f"weight_{d}"] for d in DOMAINS))
        for t in targets:
            if r[f"{t}_loss"].strip():
                rows.append([f"run-{raw_run[key]}", r["model_size"], r["n_tokens"]]
                            + [r[f"weight_{d}"] for d in DOMAINS] + [t, r[f"{t}_loss"]])
    order = np.random.default_rng(7).permutation(len(rows))
    return [rows[i] for i in order], targets


def _by_record(runs):
    """{(N, D, weights): {target: loss}} with missing losses left out."""
    out = {}
    for j in range(len(runs)):
        key = (runs.N[j], runs.D[j], tuple(runs.H[j]))
        assert key not in out
        out[key] = {t: y[j] for t, y in runs.targets.items() if not np.isnan(y[j])}
    return out


def _long_sources(rows, tmp_path):
    path = tmp_path / "long.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(LONG_HEAD)
        w.writerows(rows)
    cols = {c: [r[j] for r in rows] for j, c in enumerate(LONG_HEAD)}
    numeric = {c: (np.array(v, dtype=float) if c not in ("run_name", "metric") else np.array(v))
               for c, v in cols.items()}
    out = {"csv": path, "dict": numeric}
    pd = pytest.importorskip("pandas")
    out["pandas"] = pd.DataFrame(numeric)
    return out


LONG_KW = dict(target_column="metric", loss_column="value", run="run_name", N="params", D="tokens",
               weights="w_*")


def test_long_table_pivots_to_the_wide_table(long_rows, tmp_path):
    rows, targets = long_rows
    wide = datasets.slimpajama(dedup=False)
    expected = _by_record(wide)
    for kind, src in _long_sources(rows, tmp_path).items():
        runs = load_runs(src, **LONG_KW)
        assert len(runs) == len(wide), kind
        assert runs.domains == DOMAINS and set(runs.target_names) == set(targets), kind
        assert _by_record(runs) == expected, kind
        # a run = one name; the pivot keeps every row's run
        for j in range(len(runs)):
            same = runs.run == runs.run[j]
            assert np.all(runs.N[same] == runs.N[j]) and np.all(runs.H[same] == runs.H[j])
        assert np.unique(runs.run).size == np.unique(wide.run).size
        # missing cells are NaN and dropped per target only
        n_book = sum(1 for r in rows if r[-2] == "book")
        assert runs.target("book")[3].size == n_book
        assert runs.target("c4")[3].size == sum(1 for r in rows if r[-2] == "c4")


def test_long_table_first_appearance_order_and_run_ids():
    src = {
        "id": [5, 5, 5, 9, 5],
        "N": [1e8, 1e8, 1e8, 2e8, 1e8],
        "D": [2e9, 1e9, 2e9, 1e9, 1e9],
        "wa": [0.25, 0.25, 0.25, 1.0, 0.25],
        "wb": [0.75, 0.75, 0.75, 0.0, 0.75],
        "t": ["x", "x", "y", "y", "y"],
        "loss": [3.0, 3.5, 4.0, 2.0, 4.5],
    }
    runs = load_runs(src, target_column="t", run="id", N="N", D="D", weights="w*")
    assert runs.domains == ("a", "b") and runs.target_names == ("x", "y")
    assert list(runs.D) == [2e9, 1e9, 1e9] and list(runs.run) == [5, 5, 9]  # integer ids kept
    np.testing.assert_array_equal(runs.targets["x"], [3.0, 3.5, np.nan])
    np.testing.assert_array_equal(runs.targets["y"], [4.0, 4.5, 2.0])
    # without a run column, runs are (N, mixture) pairs as in a wide table
    r2 = load_runs({k: v for k, v in src.items() if k != "id"}, target_column="t", N="N", D="D", weights="w*")
    assert list(r2.run) == [0, 0, 1]
    # a selection of targets, renamed by the glob; rows of other targets are ignored
    src2 = dict(src, t=["val_x", "val_x", "val_y", "train_y", "val_y"])
    r3 = load_runs(src2, target_column="t", run="id", N="N", D="D", weights="w*", targets="val_*")
    assert r3.target_names == ("x", "y") and len(r3) == 2
    np.testing.assert_array_equal(r3.targets["y"], [4.0, 4.5])
    # an explicit "*_loss" stays a glob in a long table
    src3 = dict(src, t=["x_loss", "x_loss", "y_acc", "y_acc", "y_acc"])
    r4 = load_runs(src3, target_column="t", run="id", N="N", D="D", weights="w*", targets="*_loss")
    assert r4.target_names == ("x",) and len(r4) == 2
    # a mapping renames; string run ids are numbered in order of first appearance
    r5 = load_runs(dict(src, id=["b", "b", "b", "a", "b"]), target_column="t", run="id", N="N", D="D",
                   weights="w*", targets={"y": "why"})
    assert r5.target_names == ("why",) and list(r5.D) == [2e9, 1e9, 1e9] and list(r5.run) == [0, 1, 0]


def test_long_table_duplicates_empty_losses_and_dedup():
    base = {"N": [1e8] * 4, "D": [1e9, 1e9, 2e9, 2.0001e9], "wa": [1.0] * 4, "t": ["x"] * 4}
    # the same (run, D, target) twice with the same loss is harmless
    runs = load_runs(dict(base, loss=[3.0, 3.0, 2.5, 2.5]), target_column="t", N="N", D="D", weights="wa")
    assert list(runs.D) == [1e9, 2e9, 2.0001e9] and list(runs.targets["x"]) == [3.0, 2.5, 2.5]
    runs = load_runs(dict(base, loss=[3.0, 3.0, 2.5, 2.5]), target_column="t", N="N", D="D", weights="wa",
                     dedup=True)
    assert list(runs.D) == [1e9, 2e9]
    # an empty loss cell is a missing value, not a conflicting duplicate
    runs = load_runs(dict(base, loss=[3.0, "", "2.5", None]), target_column="t", N="N", D="D",
                     weights="wa")
    assert list(runs.targets["x"][:2]) == [3.0, 2.5] and np.isnan(runs.targets["x"][2])


def test_long_table_renormalize():
    src = {"N": [1e8, 1e8], "D": [1e9, 1e9], "wa": [1.0, 1.0], "wb": [3.0, 3.0], "t": ["x", "y"],
           "loss": [1.0, 2.0]}
    with pytest.raises(ValueError, match=r"^weights: row 0 sums to 4.*renormalize=True"):
        load_runs(src, target_column="t", N="N", D="D", weights="w*")
    runs = load_runs(src, target_column="t", N="N", D="D", weights="w*", renormalize=True)
    assert len(runs) == 1 and list(runs.H[0]) == [0.25, 0.75]


def test_long_table_errors(tmp_path):
    head = "run,N,D,w_a,w_b,target,loss\n"
    ok = "r1,1e8,1e9,0.5,0.5,c4,3.0\n"
    cases = {
        # (run, D, target) given two different losses: both rows named
        ok + "r1,1e8,2e9,0.5,0.5,c4,2.9\nr1,1e8,1e9,0.5,0.5,c4,3.1\n":
            r"^loss_column: row 0 \(line 2\) and row 2 \(line 4\) give run 'r1', D=1e\+09, target 'c4' "
            r"different losses \(3\.0 and 3\.1\)",
        ok + "r1,1e8,2e9,0.5,0.5,c4,2.9\nr1,1e8,2e9,0.4,0.6,book,3.1\n":
            r"^weights: row 2 \(line 4\) and row 0 \(line 2\) belong to the same run 'r1' but have "
            r"different mixture weights",
        ok + "r1,2e8,2e9,0.5,0.5,c4,2.9\n": r"^N: row 1 \(line 3\) and row 0 \(line 2\) belong to the same run 'r1'",
        ok + "r1,1e8,2e9,0.5,0.5,,2.9\n": r"^target_column: column 'target', row 1 \(line 3\): empty",
        ok + ",1e8,2e9,0.5,0.5,c4,2.9\n": r"^run: column 'run', row 1 \(line 3\): empty",
        ok + "r1,1e8,2e9,0.5,0.5,c4,abc\n": r"^loss_column: column 'loss', row 1 \(line 3\): cannot parse 'abc'",
        ok + "r1,1e8,2e9,0.5,0.5,c4,inf\n": r"^loss_column: column 'loss', row 1 \(line 3\): inf is not finite",
        ok + "r1,1e8,x,0.5,0.5,c4,2.9\n": r"^D: column 'D', row 1 \(line 3\): cannot parse 'x'",
    }
    for i, (body, pattern) in enumerate(cases.items()):
        p = tmp_path / f"long{i}.csv"
        p.write_text(head + body)
        with pytest.raises(ValueError, match=pattern):
            load_runs(p, target_column="target", run="run", N="N", D="D", weights="w_*")
    p = tmp_path / "ok.csv"
    p.write_text(head + ok)
    kw = dict(run="run", N="N", D="D", weights="w_*")
    for extra, pattern in [
        (dict(target_column="metric"), r"^target_column: no column 'metric'; available columns: run, N"),
        (dict(target_column="target", loss_column="value"), r"^loss_column: no column 'value'"),
        (dict(loss_column="loss"), r"^loss_column: only used with target_column"),
        (dict(target_column="target", loss_column="target"), r"^loss_column: must differ"),
        (dict(target_column="target", targets=["c4", "book"]),
         r"^targets: no target name 'book'; available target names: c4"),
        (dict(target_column="target", targets="val_*"), r"^targets: pattern 'val_\*' matches no target name"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            load_runs(p, **kw, **extra)


# ---------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------
def test_metrics_values():
    # scikit-learn's order (y_true, y_pred); values worked out by hand
    y_true, y_pred = [1.0, 2.0, 4.0], [1.0, 2.0, 3.0]
    m = metrics.metrics(y_true, y_pred)
    assert set(m) == {"mre", "r2", "mae", "rmse", "n"} and m["n"] == 3
    assert m["mre"] == pytest.approx(100 * 0.25 / 3)
    assert m["mae"] == pytest.approx(1 / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(1 / 3))
    assert m["r2"] == pytest.approx(1 - 1 / (42 / 9))  # SS_tot about mean(y_true) = 7/3
    assert metrics.mre(y_true, y_true) == 0.0 and metrics.r2(y_true, y_true) == 1.0
    assert math.isnan(metrics.r2([3.0, 3.0], [1.0, 2.0]))  # constant y_true


def test_metrics_argument_order_is_y_true_then_y_pred():
    # The relative error divides by y_true and R^2 centres on y_true: swapping the
    # arguments changes both, so the order (scikit-learn's) is checked by value.
    y_true, y_pred = [1.0, 2.0, 4.0], [1.0, 2.0, 3.0]
    assert metrics.mre(y_true, y_pred) == pytest.approx(100 * 0.25 / 3)
    assert metrics.mre(y_true=y_true, y_pred=y_pred) == pytest.approx(100 * 0.25 / 3)
    assert metrics.mre(y_pred=y_pred, y_true=y_true) == pytest.approx(100 * 0.25 / 3)
    assert metrics.r2(y_pred=y_pred, y_true=y_true) == pytest.approx(1 - 9 / 42)
    # SS_tot of [1, 2, 3] about 2 is 2: the swapped R^2 would be 1 - 1/2
    assert metrics.r2(y_true, y_pred) != pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"^y_true: element 0 is 0"):
        metrics.mre([0.0, 1.0], [1.0, 1.0])


@pytest.mark.parametrize(
    "y_true, y_pred, pattern",
    [
        ([1.0], [1.0, 2.0], r"^y_pred: shape"),
        ([1.0], [[1.0]], r"^y_pred: expected a 1-D"),
        ([[1.0]], [1.0], r"^y_true: expected a 1-D"),
        ([1.0, 2.0], [1.0, np.nan], r"^y_pred: element 1"),
        ([1.0, np.inf], [1.0, 2.0], r"^y_true: element 1"),
        ([], [], r"^y_pred: is empty"),
        ([1.0], ["a"], r"^y_pred: cannot convert"),
    ],
)
def test_metrics_validation(y_true, y_pred, pattern):
    for f in (metrics.mre, metrics.r2, metrics.mae, metrics.rmse, metrics.metrics):
        with pytest.raises(ValueError, match=pattern):
            f(y_true, y_pred)


def test_mre_zero_target():
    with pytest.raises(ValueError, match=r"^y_true: element 0 is 0"):
        metrics.mre([0.0], [1.0])



def test_wide_table_with_string_run_ids(tmp_path):
    # String run ids in a wide table are numbered by first appearance (as in a long table);
    # integer ids stay as they are; a run whose rows disagree on N or weights is refused.
    p = tmp_path / "runs.csv"
    p.write_text("run,model_size,n_tokens,weight_a,weight_b,x_loss\n"
                 "small-A,1e8,1e9,0.5,0.5,3.0\nsmall-A,1e8,2e9,0.5,0.5,2.9\n"
                 "big-B,3e8,1e9,0.2,0.8,2.8\nbig-B,3e8,2e9,0.2,0.8,2.7\nsmall-A,1e8,4e9,0.5,0.5,2.85\n")
    r = load_runs(p, run="run")
    np.testing.assert_array_equal(r.run, [0, 0, 1, 1, 0])
    ints = load_runs({"run": [7, 7, 3], "model_size": [1e8, 1e8, 3e8], "n_tokens": [1e9, 2e9, 1e9],
                      "weight_a": [1.0, 1.0, 1.0], "x_loss": [3.0, 2.9, 2.8]}, run="run")
    np.testing.assert_array_equal(ints.run, [7, 7, 3])
    p.write_text("run,model_size,n_tokens,weight_a,weight_b,x_loss\n"
                 "A,1e8,1e9,0.5,0.5,3.0\nA,2e8,2e9,0.5,0.5,2.9\n")
    with pytest.raises(ValueError, match="N: row 1 .* and row 0 .* belong to the same run 'A' but have different "
                                         "model sizes"):
        load_runs(p, run="run")


@pytest.mark.parametrize("gz", [False, True])
def test_csv_quirks_read_as_written(tmp_path, gz):
    # Byte-order mark, spaces around names and numbers, quoted cells, a row of blank cells
    # and an empty line (both skipped), empty cells (missing losses), gzip: the values are
    # the ones written here.
    import gzip

    text = ('\ufeffmodel_size, n_tokens ,weight_a,weight_b,c4_loss,"x_loss"\n'
            '1e8,1e9,0.5,0.5,3.1,2.0\n,,,,,\n\n 2e8 ,2e9, 0.25 ,0.75,,2.5\n'
            '4e8,"4e9",0.5,0.5,"2.9",1.9\n8e8,8e9,0.5,0.5,2.8,  \n')
    path = tmp_path / ("quirks.csv.gz" if gz else "quirks.csv")
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    runs = load_runs(path)
    np.testing.assert_array_equal(runs.N, [1e8, 2e8, 4e8, 8e8])
    np.testing.assert_array_equal(runs.D, [1e9, 2e9, 4e9, 8e9])
    np.testing.assert_array_equal(runs.H, [[0.5, 0.5], [0.25, 0.75], [0.5, 0.5], [0.5, 0.5]])
    np.testing.assert_array_equal(runs.targets["c4"], [3.1, np.nan, 2.9, 2.8])
    np.testing.assert_array_equal(runs.targets["x"], [2.0, 2.5, 1.9, np.nan])
    short = tmp_path / "short.csv"
    short.write_text("model_size,n_tokens,weight_a,weight_b,c4_loss\n1e8,1e9,0.5,0.5,3\n2e8,2e9,0.5,0.5\n")
    with pytest.raises(ValueError, match="line 3 has 4 fields, header has 5"):
        load_runs(short)  # pandas alone would read the missing loss as NaN
