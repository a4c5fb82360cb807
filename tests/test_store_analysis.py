"""Rankings and statistics shared by the UI and the export (store.analysis)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from store import StoreReader, analysis
from store.analysis import (
    INFLUENCE,
    RELATIVE,
    average_ranks,
    column_means,
    extreme_pairs,
    pearson,
    rank_changes,
    regularization_report,
    relative_influence,
    relative_scale,
    score_extremes,
    scores,
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


# ------------------------------------------------------------------ relative influence (RelatIF)
def test_relative_influence_divides_by_the_root_of_self_influence():
    row = np.array([2.0, -3.0, 0.5, 0.0], dtype=np.float32)
    train_self = np.array([4.0, 9.0, 0.25, 1.0], dtype=np.float32)
    relative = relative_influence(row, train_self)
    assert relative.dtype == np.float64 and relative.tolist() == [1.0, -1.0, 1.0, 0.0]
    assert relative_scale(train_self).tolist() == [2.0, 3.0, 0.5, 1.0]


def test_relative_influence_is_nan_where_self_influence_is_not_a_positive_number():
    train_self = np.array([0.0, -0.0, -4.0, np.nan, np.inf, -np.inf, 1e-45, 4.0], dtype=np.float32)
    row = np.full(8, 3.0, dtype=np.float32)
    with np.errstate(all="raise"):  # no division by zero, no invalid operation reaches numpy
        relative = relative_influence(row, train_self)
    assert np.isnan(relative[:6]).all() and not np.isinf(relative).any()
    assert np.isfinite(relative[6]) and relative[6] > 1e22  # tiny but positive: a (huge) number, never inf
    assert relative[7] == 1.5
    assert np.isnan(relative_scale(train_self)[:6]).all()


def test_relative_influence_of_missing_or_invalid_scores_is_nan():
    row = np.array([np.nan, np.inf, -np.inf, 1.0, np.float32(3e38)], dtype=np.float32)
    relative = relative_influence(row, np.array([1.0, 1.0, 1.0, np.nan, 1e-30], dtype=np.float32))
    assert np.isnan(relative[:4]).all() and np.isfinite(relative[4])
    assert relative_influence(np.float32(8.0), np.float32(16.0)) == 2.0  # scalars too


def test_relative_influence_of_a_matrix_is_that_of_each_row():
    rng = np.random.default_rng(2)
    matrix = rng.standard_normal((5, 30)).astype(np.float32)
    train_self = rng.uniform(-0.5, 3, 30).astype(np.float32)
    train_self[[4, 9]] = np.nan
    whole = relative_influence(matrix, train_self)
    assert whole.shape == (5, 30)
    for q in range(5):
        np.testing.assert_array_equal(whole[q], relative_influence(matrix[q], train_self))
    good = train_self > 0
    np.testing.assert_allclose(whole[:, good], matrix[:, good] / np.sqrt(train_self[good].astype(np.float64)))
    assert np.isnan(whole[:, ~good]).all()


def test_scores_picks_the_score():
    row, train_self = np.array([4.0, -1.0]), np.array([4.0, 0.0])
    assert scores(row, train_self, INFLUENCE).tolist() == [4.0, -1.0]
    assert scores(row, train_self, RELATIVE)[0] == 2.0 and np.isnan(scores(row, train_self, RELATIVE)[1])
    with pytest.raises(ValueError, match="unknown score"):
        scores(row, train_self, "raw")


def test_top_k_by_relative_influence_differs_and_skips_what_is_not_available():
    row = np.array([10.0, 1.0, 0.5, -8.0, -0.4, 3.0])
    train_self = np.array([100.0, 0.01, np.nan, 64.0, 0.01, 0.0])
    assert [x.tolist() for x in top_k(row, 2)] == [[0, 5], [3, 4]]
    relative = relative_influence(row, train_self)  # [1, 10, nan, -1, -4, nan]
    assert [x.tolist() for x in top_k(relative, 2)] == [[1, 0], [4, 3]]


def test_relative_store_extremes_match_the_whole_matrix(tmp_path, monkeypatch):
    path = make_synthetic_store(tmp_path / "s.h5", n_test=9, n_train=120, score_block=32)
    monkeypatch.setattr(analysis, "ROW_BATCH", 4)
    with StoreReader(path) as reader:
        relative = relative_influence(reader.influence_matrix("clean", 0), reader.self_influence("clean", 0, "train"))
        batched = store_extremes(reader, "clean", 0, 5, RELATIVE)
        raw = store_extremes(reader, "clean", 0, 5)
        assert score_extremes(reader, "clean", 0, 5) == {INFLUENCE: raw, RELATIVE: batched}  # one read, both
    assert batched == extreme_pairs(relative, 5)
    assert batched[0][2] == np.nanmax(relative) and batched[5][2] == np.nanmin(relative)
    assert [pair[:2] for pair in batched] != [pair[:2] for pair in raw]
