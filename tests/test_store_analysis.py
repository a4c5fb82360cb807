"""Rankings and statistics shared by the UI and the export (store.analysis)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from store import StoreReader, analysis
from store.analysis import (
    average_ranks,
    column_means,
    extreme_pairs,
    pearson,
    rank_changes,
    regularization_report,
    spearman,
    store_extremes,
    top_k,
)
from store.synthetic import make_synthetic_store


def test_top_k_ignores_nan_and_keeps_signs_apart():
    row = np.array([0.5, np.nan, -2.0, 3.0, -0.1, 0.0, 1.0, np.nan])
    helpful, harmful = top_k(row, 2)
    assert helpful.tolist() == [3, 6] and harmful.tolist() == [2, 4]
    helpful, harmful = top_k(row, 10)
    assert helpful.tolist() == [3, 6, 0] and harmful.tolist() == [2, 4]  # zero is neither
    assert [len(x) for x in top_k(row, 0)] == [0, 0]
    assert [len(x) for x in top_k(np.full(4, np.nan), 3)] == [0, 0]


def test_top_k_agrees_with_a_full_sort():
    rng = np.random.default_rng(0)
    row = rng.standard_normal(5000)
    helpful, harmful = top_k(row, 25)
    order = np.argsort(row)
    assert helpful.tolist() == order[::-1][:25].tolist() and harmful.tolist() == order[:25].tolist()


def test_extreme_pairs_and_their_row_batched_version(tmp_path, monkeypatch):
    matrix = np.array([[1.0, -5.0, np.nan], [7.0, 0.5, -0.25]])
    assert extreme_pairs(matrix, 2) == [(1, 0, 7.0), (0, 0, 1.0), (0, 1, -5.0), (1, 2, -0.25)]
    assert extreme_pairs(matrix, 1, first_row=10) == [(11, 0, 7.0), (10, 1, -5.0)]
    path = make_synthetic_store(tmp_path / "s.h5", n_test=9, n_train=120, score_block=32)
    monkeypatch.setattr(analysis, "ROW_BATCH", 4)  # three batches to merge
    with StoreReader(path) as reader:
        full = reader.influence_matrix("corrupted", 1)
        batched = store_extremes(reader, "corrupted", 1, 5)
    assert batched == extreme_pairs(full, 5)
    assert [value > 0 for _, _, value in batched] == [True] * 5 + [False] * 5


def test_correlations_match_their_definitions():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(200), rng.standard_normal(200)
    assert pearson(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1])
    x = np.linspace(0.1, 5, 50)
    assert spearman(x, np.exp(x)) == pytest.approx(1.0) and pearson(x, np.exp(x)) < 0.95
    assert spearman(x, -(x**3)) == pytest.approx(-1.0)


def test_spearman_averages_tied_ranks_and_skips_nan():
    assert average_ranks(np.array([10.0, 20.0, 20.0, 5.0])).tolist() == [2.0, 3.5, 3.5, 1.0]
    a = np.array([1.0, 2.0, 2.0, 3.0, np.nan])
    b = np.array([1.0, 3.0, 2.0, 4.0, 9.0])
    expected = np.corrcoef([1.0, 2.5, 2.5, 4.0], [1.0, 3.0, 2.0, 4.0])[0, 1]
    assert spearman(a, b) == pytest.approx(expected)


@pytest.mark.parametrize(
    "a, b",
    [([1.0], [2.0]), ([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]), ([np.nan, 1.0, np.nan], [1.0, 2.0, 3.0]), ([], [])],
    ids=["one value", "constant", "one finite pair", "empty"],
)
def test_undefined_correlations_are_nan(a, b):
    assert math.isnan(pearson(a, b)) and math.isnan(spearman(a, b))


def test_rank_changes():
    clean = np.array([3.0, 2.0, 1.0, -1.0, np.nan])
    corrupted = np.array([-3.0, 2.0, 1.5, -1.0, 5.0])
    changes = rank_changes(clean, corrupted, k=2)
    assert changes.sign_flipped.tolist() == [0]
    assert changes.rank_clean.tolist() == [0, 1, 2, 3, -1]
    assert changes.rank_corrupted.tolist() == [3, 0, 1, 2, -1]
    assert changes.moved.tolist() == [0, 1]


def test_column_means_skip_missing_blocks(tmp_path):
    path = make_synthetic_store(tmp_path / "s.h5", n_test=5, n_train=100, score_block=16, complete=False)
    with StoreReader(path) as reader:
        means = column_means(reader, "clean", 0)
        done = reader.train_columns_done()
        assert means.shape == (len(reader.layers) + 1, 100)
        np.testing.assert_allclose(
            means[-1, done], reader.influence_matrix("clean", 0)[:, done].mean(axis=0), rtol=1e-5
        )
        np.testing.assert_allclose(
            means[1, done], reader.influence_matrix("clean", 0, layer=1)[:, done].mean(axis=0), rtol=1e-5
        )
        assert np.isnan(means[:, ~done]).all() and done.any() and not done.all()


def test_regularization_report_recommends_the_start_of_the_stable_plateau(tmp_path):
    """As in the reference notebook: rankings agree for small λ and fall apart at λ = 1."""
    regs = (1e-15, 1e-9, 1e-5, 1.0)
    path = make_synthetic_store(tmp_path / "s.h5", n_test=12, n_train=400, regularizations=regs, variants=("clean",))
    with StoreReader(path) as reader:
        report = regularization_report(reader, "clean")
    assert report.series[-1] == "total" and report.spearman.shape == (4, 3) == report.pearson.shape
    assert report.stable.tolist() == [True, True, False]
    assert (report.spearman[:, :2] > 0.99).all() and (report.spearman[:, 2] < 0.9).all()
    assert report.plateau == (0, 2) and report.recommended == 1e-15
    assert report.mean_influence.shape == (4, 4, 400)


def test_regularization_report_without_a_stable_pair(tmp_path):
    path = make_synthetic_store(
        tmp_path / "s.h5", n_test=12, n_train=300, regularizations=(1e-5, 1.0), variants=("clean",)
    )
    with StoreReader(path) as reader:
        report = regularization_report(reader, "clean")
    assert report.stable.tolist() == [False] and report.plateau is None and report.recommended is None
