"""export_tables: the CSV/JSON a batch job leaves, consistent with what the reader (and so the UI) shows."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

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


def test_top_influences_are_the_reader_rows_ranked(exported):
    store, paths = exported
    rows = _rows(paths[1])
    with StoreReader(store) as reader:
        train = reader.examples("train")
        assert len(rows) == len(reader.variants) * reader.n_test * 2 * K
        for variant in reader.variants:
            for q in range(reader.n_test):
                row = reader.influence_row(variant, reader.main_regularization_index, q)
                mine = [r for r in rows if r["variant"] == variant and int(r["test_index"]) == q]
                helpful = [int(r["train_index"]) for r in mine if r["direction"] == "helpful"]
                harmful = [int(r["train_index"]) for r in mine if r["direction"] == "harmful"]
                assert helpful == np.argsort(row)[::-1][:K].tolist() and harmful == np.argsort(row)[:K].tolist()
                for r in mine:
                    n = int(r["train_index"])
                    assert float(r["influence"]) == pytest.approx(row[n], rel=1e-7)
                    assert int(r["train_dataset_index"]) == train.dataset_index[n]
                    used = train.corrupted_label if variant == "corrupted" else train.label
                    assert int(r["train_label"]) == train.label[n] and int(r["train_label_used"]) == used[n]
                    assert r["corrupted"] == ("true" if train.label[n] != train.corrupted_label[n] else "false")
                assert [int(r["rank"]) for r in mine] == list(range(1, K + 1)) * 2


def test_layers_are_the_same_pairs_and_sum_to_the_total(exported):
    store, paths = exported
    top, layers = _rows(paths[1]), _rows(paths[2])
    key = ["variant", "test_index", "direction", "rank", "train_index"]
    assert [[r[c] for c in key] for r in top] == [[r[c] for c in key] for r in layers]
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


def test_export_of_an_unfinished_store(tmp_path):
    store = make_synthetic_store(tmp_path / "s.h5", n_test=4, n_train=200, score_block=32, complete=False)
    with StoreReader(store) as reader:
        done = reader.train_columns_done()
        paths = export_tables(reader, tmp_path / "out", k=2)
    rows = _rows(paths[1])
    assert rows and all(done[int(r["train_index"])] for r in rows)  # only computed scores are exported
    assert "nan" not in paths[1].read_text().lower()
    assert json.loads(paths[0].read_text())["stages"]["scores"]["status"] == "running"
