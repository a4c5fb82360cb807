"""make_synthetic_store: a realistic store for the UI's tests, written through StoreWriter."""

from __future__ import annotations

import numpy as np

from store import StoreReader
from store.analysis import extreme_pairs
from store.synthetic import make_synthetic_store


def test_complete_store(tmp_path):
    path = make_synthetic_store(tmp_path / "s.h5", n_test=10, n_train=150, n_layers=4, score_block=32)
    with StoreReader(path) as reader:
        assert reader.completed_blocks().all() and len(reader.layers) == 4
        assert any(not layer.has_bias for layer in reader.layers)
        assert all(record.status == "done" for record in reader.stages().values())
        train = reader.examples("train")
        lengths = [len(text.split()) for text in train.text]
        assert min(lengths) < 15 < max(lengths)  # reviews of varied length
        assert (train.label != train.corrupted_label).sum() == 15  # a tenth corrupted
        assert set(reader.examples("test").prediction) <= {0, 1} and reader.metrics()["accuracy"] > 0.5
        for variant in reader.variants:
            for k in range(len(reader.regularizations)):
                layers = np.stack([reader.influence_matrix(variant, k, layer) for layer in range(4)])
                np.testing.assert_allclose(
                    reader.influence_matrix(variant, k), layers.sum(axis=0), rtol=1e-5, atol=1e-6
                )
                assert np.isfinite(reader.self_influence(variant, k, "test")).all()
        flipped = train.label != train.corrupted_label
        clean, corrupted = reader.influence_matrix("clean", 0), reader.influence_matrix("corrupted", 0)
        np.testing.assert_array_equal(corrupted[:, flipped], -clean[:, flipped])
        np.testing.assert_array_equal(corrupted[:, ~flipped], clean[:, ~flipped])
        planted = {(q, n) for q, n, _ in reader.summary("synthetic")["planted_pairs"]}
        assert planted == {(q, n) for q, n, _ in extreme_pairs(clean, 2)}
        eigenvalues = reader.factor("clean", 0, "activation_eigenvalues")
        assert np.all(np.diff(eigenvalues) >= 0) and reader.factor_counts("clean", 0)["examples"] == 150


def test_unfinished_store_and_stage_overrides(tmp_path):
    path = make_synthetic_store(
        tmp_path / "s.h5",
        n_test=4,
        n_train=100,
        score_block=16,
        variants=("clean",),
        complete=False,
        stage_status={"queries": "cancelled"},
    )
    with StoreReader(path) as reader:
        assert reader.variants == ["clean"] and reader.completed_blocks().tolist() == [True] * 4 + [False] * 3
        stages = reader.stages()
        assert (stages["scores"].status, stages["scores"].done, stages["scores"].total) == ("running", 4, 7)
        assert stages["queries"].status == "cancelled" and stages["covariance"].status == "done"
        assert np.isnan(reader.influence_row("clean", 0, 0)[64:]).all()
        assert np.isnan(reader.self_influence("clean", 0, "test")).all()
