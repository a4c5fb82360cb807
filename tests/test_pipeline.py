"""The pipeline end to end on local models and datasets: loading, the store, the export tables."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from local_assets import (
    corpus_rows,
    save_tiny_model,
    save_to_disk,
    write_csv_folder,
    write_jsonl,
    write_parquet_folder,
)

from influence.ekfac import EkfacInfluence
from influence.pipeline import run_pipeline
from influence.preparation import prepare
from job.cli import main
from job.config import RunConfig
from job.options import EngineOptions
from store.errors import StoreMismatch
from store.reader import StoreReader

SMALL = ["--num-train", "24", "--num-test", "6", "--batch-size", "4", "--max-length", "48", "--sweep", "1e-4,1e-2"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    rows = corpus_rows()
    return {
        "rows": rows,
        "model": save_tiny_model(root / "model", rows),
        "csv": write_csv_folder(root / "csv", rows),
        "disk": save_to_disk(root / "disk", rows),
        "parquet": write_parquet_folder(root / "parquet", rows),
        "root": root,
    }


def small_config(assets, **settings) -> RunConfig:
    """A run on the tiny local model and the CSV folder, with ``settings`` on top."""
    defaults = dict(model=str(assets["model"]), dataset=str(assets["csv"]), batch_size=4, max_length=48, sweep=[1e-3])
    return RunConfig(**{**defaults, **settings}).validate()


def export(args: list[str], capsys) -> list[str]:
    main(args)
    out = capsys.readouterr().out
    return out.split()


def test_export_writes_the_store_and_the_tables(assets, tmp_path, capsys):
    out = tmp_path / "out"
    paths = export(
        ["--export", str(out), "--model", str(assets["model"]), "--dataset", str(assets["csv"])] + SMALL, capsys
    )
    assert paths == [
        str(out / name)
        for name in ("influence.h5", "summary.json", "top_influences.csv", "layers.csv", "regularization.csv")
    ]
    with StoreReader(out / "influence.h5") as reader:
        assert all(record.status == "done" for record in reader.stages().values())
        assert reader.variants == ["clean", "corrupted"] and reader.factor_variants == ["clean"]
        assert reader.regularizations == [1e-5, 1e-4, 1e-2]
        for variant in reader.variants:
            for k in range(3):
                total = reader.influence_matrix(variant, k)
                layers = np.stack([reader.influence_matrix(variant, k, layer=i) for i in range(len(reader.layers))])
                assert np.isfinite(total).all()
                np.testing.assert_allclose(layers.sum(0), total, rtol=1e-4, atol=1e-6 * np.abs(total).max())
        test = reader.examples("test")
        assert (test.prediction >= 0).all() and np.allclose(test.probabilities.sum(1), 1, atol=1e-5)
        assert set(reader.metrics()) >= {"accuracy", "f1", "confusion"}
        train = reader.examples("train")
        assert (train.corrupted_label == 1 - train.label).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["engine"]["fisher"] == "exact"
    with open(out / "top_influences.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["variant"] for row in rows} == {"clean", "corrupted"}


def test_store_scores_equal_the_engine_called_directly(assets, tmp_path):
    config = small_config(assets, num_train=16, num_test=4, store=str(tmp_path / "s.h5"), corrupt=None)
    run_pipeline(config)
    analysis = prepare(config)
    engine = EkfacInfluence(analysis.loaded.model).fit(analysis.train_batches["clean"])
    expected = engine.influences(analysis.test_batches, analysis.train_batches["clean"], regularization=1e-5)
    with StoreReader(config.store_path()) as reader:
        stored = reader.influence_matrix("clean", reader.main_regularization_index)
    np.testing.assert_allclose(stored, expected.numpy(), rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


def test_the_stored_factors_read_with_h5py_alone_are_the_engines(assets, tmp_path):
    """What docs/store-format.md promises a user with h5py: A and S as means over real tokens,
    the eigenbases and the corrected eigenvalues of the same fit, and the counts behind them."""
    config = small_config(assets, num_train=16, num_test=4, store=str(tmp_path / "s.h5"), corrupt=None)
    run_pipeline(config)
    analysis = prepare(config)
    engine = EkfacInfluence(analysis.loaded.model, keep_covariance=True).fit(analysis.train_batches["clean"])
    with h5py.File(config.store_path(), "r") as file:
        names = [name.decode() if isinstance(name, bytes) else name for name in file["/layers/name"][()]]
        assert names == engine.layer_names
        for index, name in enumerate(names):
            factors, group = engine.factors[name], file[f"/factors/clean/{index}"]
            sums = factors.covariance
            tokens, examples = file["/factors/clean/counts"][index]
            assert (tokens, examples) == (sums.tokens, sums.examples)
            for dataset, expected in (
                ("activation_covariance", sums.activation / sums.tokens),
                ("gradient_covariance", sums.gradient / sums.tokens),
                ("activation_eigenvalues", factors.eigen.activation_values),
                ("gradient_eigenvalues", factors.eigen.gradient_values),
                ("corrected_eigenvalues", factors.eigenvalues),
            ):
                np.testing.assert_allclose(group[dataset][()], expected.numpy(), rtol=1e-5, atol=1e-9, err_msg=dataset)
            for dataset, matrix in (("activation_eigenvectors", "activation"), ("gradient_eigenvectors", "gradient")):
                stored = group[dataset][()]  # eigenvectors up to sign and rotation within an eigenspace: diagonalise
                mean = getattr(sums, matrix).numpy() / sums.tokens
                rotated = stored.T @ mean @ stored
                np.testing.assert_allclose(rotated, np.diag(np.diag(rotated)), atol=1e-6 * np.abs(mean).max())


@pytest.mark.parametrize("source", ["disk", "parquet", "jsonl", "single-csv"])
def test_every_dataset_format_loads(assets, tmp_path, capsys, source):
    options = []
    if source == "jsonl":
        folder = tmp_path / "jsonl"
        folder.mkdir()
        write_jsonl(folder / "train.jsonl", assets["rows"]["train"], "review", "sentiment")
        write_jsonl(folder / "test.jsonl", assets["rows"]["test"], "review", "sentiment")
        dataset = folder
        options = ["--text-column", "review", "--label-column", "sentiment"]
    elif source == "single-csv":
        dataset = assets["csv"] / "train.csv"
        options = ["--test-split", "train"]
    else:
        dataset = assets[source]
    out = tmp_path / "out"
    export(
        ["--export", str(out), "--model", str(assets["model"]), "--dataset", str(dataset), "--corrupt", "none"]
        + SMALL
        + options,
        capsys,
    )
    with StoreReader(out / "influence.h5") as reader:
        assert reader.stages()["scores"].status == "done"
        assert np.isfinite(reader.influence_matrix("clean", 0)).all()


def test_fraction_corruption_is_seeded_and_exact_fisher_is_not_refitted(assets, tmp_path):
    common = dict(num_train=40, num_test=4, batch_size=8, corrupt="0.25")
    first = prepare(small_config(assets, **common))
    again = prepare(small_config(assets, **common))
    flipped = first.data.corrupted_labels != first.data.train.labels
    assert flipped.sum() == 10
    assert np.array_equal(first.data.corrupted_labels, again.data.corrupted_labels)
    assert first.layout.factor_variants == ["clean"]
    empirical = prepare(small_config(assets, **common, engine=EngineOptions(fisher="empirical")))
    assert empirical.layout.factor_variants == ["clean", "corrupted"]


def test_empirical_fisher_refits_the_factors_for_the_corrupted_labels(assets, tmp_path):
    config = small_config(
        assets,
        num_train=16,
        num_test=4,
        engine=EngineOptions(fisher="empirical"),
        corrupt="all",
        store=str(tmp_path / "e.h5"),
    )
    run_pipeline(config)
    analysis = prepare(config)
    corrupted = [{**b, "labels": b["corrupted_labels"]} for b in analysis.train_batches["clean"]]
    engine = EkfacInfluence(analysis.loaded.model, fisher="empirical").fit(corrupted)
    expected = engine.influences(analysis.test_batches, corrupted, regularization=1e-5)
    with StoreReader(config.store_path()) as reader:
        stored = reader.influence_matrix("corrupted", reader.main_regularization_index)
        clean = reader.influence_matrix("clean", reader.main_regularization_index)
    np.testing.assert_allclose(stored, expected.numpy(), rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    assert not np.allclose(stored, -clean, rtol=1e-3)


def test_a_finished_store_is_reused_and_a_mismatched_one_refused(assets, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--export", str(out), "--model", str(assets["model"]), "--dataset", str(assets["csv"])] + SMALL
    export(args, capsys)
    store = out / "influence.h5"
    before = store.read_bytes()
    export(args, capsys)  # everything done: nothing recomputed
    with StoreReader(store) as reader:
        assert all(record.status == "done" for record in reader.stages().values())
    with pytest.raises(SystemExit) as exit_info:
        main(args[:-1] + ["1e-4,1e-1"])  # another sweep: another analysis
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "another run" in error and str(store) in error
    with StoreReader(store) as reader:
        assert reader.regularizations == [1e-5, 1e-4, 1e-2]
    assert store.stat().st_size == len(before)


def test_progress_goes_to_stderr_and_paths_to_stdout(assets, tmp_path, capsys):
    out = tmp_path / "out"
    main(["--export", str(out), "--model", str(assets["model"]), "--dataset", str(assets["csv"])] + SMALL)
    captured = capsys.readouterr()
    assert all(Path(line).exists() for line in captured.out.splitlines())
    stages = {line.split(":")[0] for line in captured.err.splitlines()}
    assert {"predictions", "covariance", "eigendecomposition", "eigenvalue_correction", "queries", "scores"} <= stages


def test_model_is_recorded_with_its_predictions(assets, tmp_path):
    config = small_config(assets, num_train=8, num_test=8, store=str(tmp_path / "p.h5"))
    run_pipeline(config)
    analysis = prepare(config)
    with torch.no_grad():
        logits = torch.cat(
            [
                analysis.loaded.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                for b in analysis.test_batches
            ]
        )
    with StoreReader(config.store_path()) as reader:
        test = reader.examples("test")
        np.testing.assert_allclose(test.probabilities, torch.softmax(logits, 1).numpy(), rtol=1e-5, atol=1e-6)
        assert reader.metrics()["accuracy"] == pytest.approx(float((test.prediction == test.label).mean()))
        summary = reader.summary("run")
        assert summary["tracked_parameters"] == analysis.engine.tracked_parameters


def test_a_cache_store_of_another_run_is_recreated_but_a_named_one_is_not(assets, tmp_path, monkeypatch):
    """The UI's stores live in the user cache and are ours to replace; a --store is the user's."""
    monkeypatch.setenv("INFLUENCE_EXPLORER_CACHE", str(tmp_path / "cache"))
    common = dict(num_train=8, num_test=4, max_length=32)
    config = small_config(assets, **common)
    path = run_pipeline(config)
    assert path.is_relative_to(tmp_path / "cache")
    other = save_tiny_model(tmp_path / "other-model", assets["rows"], seed=9)
    # Same settings, other weights: the same cache path, another run.
    retrained = small_config(assets, **common, model=str(other))
    monkeypatch.setattr(RunConfig, "store_path", lambda self: path)
    assert run_pipeline(retrained) == path
    with StoreReader(path) as reader:
        assert reader.stages()["scores"].status == "done"
    named = small_config(assets, **common, store=str(path))
    with pytest.raises(StoreMismatch):
        run_pipeline(named)
