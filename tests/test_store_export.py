"""export_tables: the CSV/JSON a batch job leaves, consistent with what the reader (and so the UI) shows."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from tui_fixtures import NAN_SELF, NEGATIVE_SELF, ZERO_SELF, expected_relative, relative_store

from store import StoreReader
from store.export import export_tables
from store.synthetic import make_synthetic_store

K = 3


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    directory = tmp_path_factory.mktemp("export")
    store = make_synthetic_store(
        directory / "s.h5", n_test=6, n_train=300, regularizations=(1e-5, 1e-3, 1.0), score_block=64
    )
    with StoreReader(store) as reader:
        paths = export_tables(reader, directory / "out", k=K)
    return store, paths


def test_files(exported):
    _, paths = exported
    assert [p.name for p in paths] == ["summary.json", "top_influences.csv", "layers.csv", "regularization.csv"]
    assert all(p.exists() for p in paths)


def test_top_influences_are_the_reader_rows_ranked_by_both_scores(exported):
    store, paths = exported
    rows = _rows(paths[1])
    with StoreReader(store) as reader:
        train = reader.examples("train")
        assert len(rows) == len(reader.variants) * reader.n_test * 2 * 2 * K  # 2 scores × (K helpful + K harmful)
        for variant in reader.variants:
            k = reader.main_regularization_index
            relative = expected_relative(
                reader.influence_matrix(variant, k), reader.self_influence(variant, k, "train")
            )
            for q in range(reader.n_test):
                row = reader.influence_row(variant, k, q)
                mine = [r for r in rows if r["variant"] == variant and int(r["test_index"]) == q]
                assert [r["score"] for r in mine] == ["influence"] * 2 * K + ["relative"] * 2 * K
                for score, values in (("influence", row), ("relative", relative[q])):
                    ranked = [r for r in mine if r["score"] == score]
                    helpful = [int(r["train_index"]) for r in ranked if r["direction"] == "helpful"]
                    harmful = [int(r["train_index"]) for r in ranked if r["direction"] == "harmful"]
                    order = np.argsort(values)
                    assert helpful == order[::-1][:K].tolist() and harmful == order[:K].tolist()
                    assert [int(r["rank"]) for r in ranked] == list(range(1, K + 1)) * 2
                for r in mine:
                    n = int(r["train_index"])
                    assert float(r["influence"]) == pytest.approx(row[n], rel=1e-7)
                    assert float(r["relative_influence"]) == pytest.approx(relative[q, n], rel=1e-7)
                    assert int(r["train_dataset_index"]) == train.dataset_index[n]
                    used = train.corrupted_label if variant == "corrupted" else train.label
                    assert int(r["train_label"]) == train.label[n] and int(r["train_label_used"]) == used[n]
                    assert r["corrupted"] == ("true" if train.label[n] != train.corrupted_label[n] else "false")
                by_score = {
                    score: {int(r["train_index"]) for r in mine if r["score"] == score}
                    for score in ("influence", "relative")
                }
                assert by_score["influence"] != by_score["relative"]  # the two rankings differ on this store


def test_layers_are_the_same_pairs_and_sum_to_the_total(exported):
    store, paths = exported
    top, layers = _rows(paths[1]), _rows(paths[2])
    key = ["variant", "test_index", "score", "direction", "rank", "train_index"]
    assert [[r[c] for c in key] for r in top] == [[r[c] for c in key] for r in layers]
    assert {r["score"] for r in layers} == {"influence", "relative"}
    with StoreReader(store) as reader:
        names = [layer.name for layer in reader.layers]
        for r in layers[:: max(1, len(layers) // 10)]:
            per_layer = reader.pair_layers(
                r["variant"], reader.main_regularization_index, int(r["test_index"]), int(r["train_index"])
            )
            np.testing.assert_allclose([float(r[name]) for name in names], per_layer, rtol=1e-7)
            assert sum(float(r[name]) for name in names) == pytest.approx(float(r["total"]), rel=1e-5)


def test_regularization_table(exported):
    store, paths = exported
    rows = _rows(paths[3])
    with StoreReader(store) as reader:
        assert len(rows) == len(reader.variants) * (len(reader.layers) + 1) * 2
    clean = [r for r in rows if r["variant"] == "clean"]
    assert {r["recommended_lambda"] for r in clean} == {"1e-05"}
    assert {(r["lambda_from"], r["recommended"], r["in_plateau"]) for r in clean} == {
        ("1e-05", "true", "true"),
        ("0.001", "false", "false"),
    }
    assert all(-1 <= float(r["spearman"]) <= 1 for r in rows)


def test_summary(exported):
    store, paths = exported
    summary = json.loads(paths[0].read_text(), parse_constant=lambda name: pytest.fail(f"non-standard JSON {name}"))
    with StoreReader(store) as reader:
        assert summary["metrics"] == reader.metrics()
        assert summary["config"] == reader.config and summary["n_train"] == 300
        assert set(summary["stages"]) == set(reader.stages()) and summary["stages"]["scores"]["status"] == "done"
        assert summary["summary"]["synthetic"]["seed"] == 0
        clean = summary["extreme_pairs"]["clean"]
        assert len(clean) == 2 * K
        top = clean[0]
        assert top["influence"] == pytest.approx(float(np.max(reader.influence_matrix("clean", 0))))
        assert summary["regularization"]["clean"]["recommended"] == 1e-5
        for variant in reader.variants:
            matrix = reader.influence_matrix(variant, 0)
            relative = expected_relative(matrix, reader.self_influence(variant, 0, "train"))
            pairs = summary["relative_extreme_pairs"][variant]
            assert len(pairs) == 2 * K and len(summary["extreme_pairs"][variant]) == 2 * K
            assert pairs[0]["relative_influence"] == pytest.approx(np.nanmax(relative), rel=1e-7)
            assert pairs[K]["relative_influence"] == pytest.approx(np.nanmin(relative), rel=1e-7)  # most harmful first
            for pair in pairs + summary["extreme_pairs"][variant]:
                q, n = pair["test_index"], pair["train_index"]
                assert pair["influence"] == pytest.approx(float(matrix[q, n]), rel=1e-7)
                assert pair["relative_influence"] == pytest.approx(relative[q, n], rel=1e-7)


def test_export_of_an_unfinished_store(tmp_path):
    store = make_synthetic_store(tmp_path / "s.h5", n_test=4, n_train=200, score_block=32, complete=False)
    with StoreReader(store) as reader:
        done = reader.train_columns_done()
        paths = export_tables(reader, tmp_path / "out", k=2)
    rows = _rows(paths[1])
    assert rows and all(done[int(r["train_index"])] for r in rows)  # only computed scores are exported
    assert "nan" not in paths[1].read_text().lower()
    assert json.loads(paths[0].read_text())["stages"]["scores"]["status"] == "running"


def test_relative_rows_leave_out_training_examples_without_self_influence(tmp_path):
    """I(n, n) = 0, < 0 or NaN: no relative score (an empty cell), never ranked by it, never inf in the files."""
    store = relative_store(tmp_path / "r.h5", n_test=4, n_train=40)
    with StoreReader(store) as reader:
        paths = export_tables(reader, tmp_path / "out", k=40)  # k ≥ n_train: every training example
        raw = reader.influence_matrix("clean", reader.main_regularization_index)
    rows = _rows(paths[1])
    unavailable = {ZERO_SELF, NEGATIVE_SELF, NAN_SELF}
    for score, per_test in (("influence", 40), ("relative", 40 - len(unavailable))):
        mine = [r for r in rows if r["variant"] == "clean" and r["test_index"] == "0" and r["score"] == score]
        assert len(mine) == per_test  # every one with a nonzero score, helpful or harmful
    relative_rows = [r for r in rows if r["score"] == "relative"]
    assert not unavailable & {int(r["train_index"]) for r in relative_rows}
    for r in rows:
        n = int(r["train_index"])
        assert (r["relative_influence"] == "") == (n in unavailable)
        if r["score"] == "influence" and r["variant"] == "clean":
            assert float(r["influence"]) == pytest.approx(raw[int(r["test_index"]), n], rel=1e-7)
    text = paths[1].read_text().lower() + paths[2].read_text().lower() + paths[0].read_text().lower()
    assert "nan" not in text and "inf," not in text and "infinity" not in text
    summary = json.loads(paths[0].read_text())
    assert not unavailable & {p["train_index"] for p in summary["relative_extreme_pairs"]["clean"]}
