"""Distinct-row numbering (``_core.first_appearance_ids``): the one grouping of mixtures that
the core, ``Runs``, the two-stage start and the fit's checks share. Checked against a
NumPy oracle written independently (a dictionary of row tuples, in row order)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixlaw import _core
from mixlaw.data import _distinct_rows


def oracle(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Numbers by first appearance through a dict keyed by the rows' values (+ 0.0 makes
    -0.0 and 0.0 one key; a row holding NaN gets a fresh number: NaN equals nothing)."""
    seen: dict = {}
    ids, first = [], []
    for j, row in enumerate(np.asarray(rows, dtype=float) + 0.0):
        key = tuple(row.tolist()) if not np.isnan(row).any() else ("nan", j)
        if key not in seen:
            seen[key] = len(first)
            first.append(j)
        ids.append(seen[key])
    return np.array(ids, dtype=np.int64), np.array(first, dtype=np.int64)


def check(rows: np.ndarray) -> None:
    ids, first = _core.first_appearance_ids(rows)
    want_ids, want_first = oracle(rows)
    assert ids.dtype == np.int64 and first.dtype == np.int64
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(first, want_first)


def test_small_cases_against_the_oracle():
    check(np.array([[0.5, 0.5], [0.0, 1.0], [0.5, 0.5], [-0.0, 1.0], [np.nan, 1.0], [np.nan, 1.0], [0.0, 1.0]]))
    check(np.zeros((4, 0)))  # no columns: one row value
    check(np.zeros((0, 3)))
    check(np.array([[1.0]]))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 300), k=st.integers(1, 9), n_distinct=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_random_tables_against_the_oracle(n, k, n_distinct, seed):
    # Rows drawn from a few distinct ones, shuffled (not grouped), with values that differ
    # in the last bit and signed zeros: equality must be exact, not approximate.
    rng = np.random.default_rng(seed)
    base = rng.dirichlet(np.ones(k), n_distinct)
    base[rng.random(base.shape) < 0.3] = 0.0
    base[n_distinct // 2:, 0] = np.nextafter(base[n_distinct // 2:, 0], 1.0)
    rows = base[rng.integers(0, n_distinct, n)]
    rows[(rows == 0) & (rng.random(rows.shape) < 0.5)] = -0.0
    check(rows)


def test_many_domains_and_growth_of_the_table():
    # 20,000 distinct rows (the hash table grows several times) repeated out of order.
    rng = np.random.default_rng(1)
    base = rng.dirichlet(np.ones(64), 20_000)
    rows = base[rng.permutation(np.repeat(np.arange(20_000), 3))]
    check(rows)


def test_non_contiguous_and_integer_input():
    rng = np.random.default_rng(2)
    base = rng.integers(0, 3, size=(50, 6))
    check(base.astype(float)[:, ::2])
    ids, first = _core.first_appearance_ids(base)
    np.testing.assert_array_equal(ids, oracle(base.astype(float))[0])


def test_distinct_rows_returns_the_rows_and_each_records_index():
    H = np.array([[0.2, 0.8], [-0.0, 1.0], [0.2, 0.8], [0.0, 1.0]])
    rows, ids = _distinct_rows(H)
    np.testing.assert_array_equal(rows, [[0.2, 0.8], [0.0, 1.0]])
    assert not np.signbit(rows).any()  # -0.0 stored as 0.0
    np.testing.assert_array_equal(rows[ids], H)


@pytest.mark.parametrize("bad, match", [(np.zeros(3), "rows: expected a 2-D array"),
                                        (None, "rows: must not be None"),
                                        ("abc", "rows: cannot be converted")])
def test_bad_input_is_a_value_error_naming_rows(bad, match):
    with pytest.raises(ValueError, match=match):
        _core.first_appearance_ids(bad)
