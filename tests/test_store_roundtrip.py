"""Round trip through StoreWriter and StoreReader; versions; every error case; resume checks."""

from __future__ import annotations

import dataclasses
import json
import os
import threading

import h5py
import numpy as np
import pytest
from test_store_support import (
    block_scores,
    check_against_expected,
    expected_test_self,
    run_pipeline,
    small_layout,
)

from job.options import EngineOptions, engine_settings
from job.stages import STAGES
from store import (
    LayerInfo,
    StoreDamaged,
    StoreError,
    StoreLocked,
    StoreMismatch,
    StoreNotFound,
    StoreReader,
    StoreVersionError,
    StoreWriter,
    stage_key,
)
from store.layout import first_difference
from store.schema import COMPLETED_PATH, FACTOR_NAMES, factor_shape, score_path
from store.writer import INTERRUPTED_MESSAGE


def assert_one_line(error: StoreError, path) -> None:
    message = str(error)
    assert "\n" not in message and str(path) in message and "Traceback" not in message
    assert message.startswith(str(path))


@pytest.fixture
def layout():
    return small_layout(factor_variants=["clean", "corrupted"])


@pytest.fixture
def finished(tmp_path, layout):
    path = tmp_path / "run.h5"
    run_pipeline(path, layout)
    return path


def test_everything_written_is_read_back(tmp_path, layout):
    path = tmp_path / "run.h5"
    prediction = np.arange(layout.n_train) % 2
    probabilities = np.stack([np.linspace(0, 1, layout.n_train), np.linspace(1, 0, layout.n_train)], axis=1)
    with StoreWriter.create(path, layout) as writer:
        writer.write_predictions("train", prediction, probabilities)
        writer.write_metrics({"accuracy": 0.5, "f1": 0.25, "confusion_matrix": [[1, 2], [3, 4]]})
        writer.write_summary("timings", {"covariance": 1.5})
        writer.write_summary("notes", {"text": "héllo"})
        writer.write_summary("timings", {"covariance": 2.5})
        writer.write_factor_counts("corrupted", 2, tokens=1234, examples=50)
        for name in FACTOR_NAMES:
            writer.write_factor("corrupted", 2, name, np.full(factor_shape(layout.layers[2], name), 3.0))
        writer.set_stage("covariance", "running", done=1, total=3, unit="layers", message="layer 1")
        for block in (0, 2):
            writer.write_score_block(block, **block_scores(layout, block))
        writer.write_test_self("corrupted", 1, expected_test_self(layout, 1))
        # the engine resumes partial sums from what it wrote
        np.testing.assert_array_equal(writer.read_factor("corrupted", 2, "gradient_eigenvalues"), np.full(4, 3.0))
        assert writer.read_factor_counts("corrupted", 2) == {"tokens": 1234, "examples": 50}
        assert writer.read_factor_counts("clean", 0) == {"tokens": -1, "examples": -1}
        with pytest.raises(ValueError):
            writer.read_factor("clean", 0, "hessian")

    with StoreReader(path) as reader:
        assert first_difference(reader.layout, layout) is None
        assert reader.library_versions == layout.library_versions
        assert (reader.n_train, reader.n_test, reader.score_block) == (50, 7, 16)
        assert reader.main_regularization == 1e-3 and reader.main_regularization_index == 0
        assert reader.layers[2].has_bias is False and reader.layers[2].augmented_in == reader.layers[2].in_features
        train = reader.examples("train")
        assert train.text == layout.train.text
        np.testing.assert_array_equal(train.corrupted_label, layout.train.corrupted_label)
        np.testing.assert_array_equal(train.prediction, prediction)
        np.testing.assert_allclose(train.probabilities, probabilities, rtol=1e-6)
        assert (
            np.all(reader.examples("test").prediction == -1) and np.isnan(reader.examples("test").probabilities).all()
        )
        assert reader.metrics()["confusion_matrix"] == [[1, 2], [3, 4]]
        assert reader.summary("timings") == {"covariance": 2.5} and reader.summary("notes") == {"text": "héllo"}
        assert reader.summary("absent") is None
        assert reader.factor_counts("corrupted", 2) == {"tokens": 1234, "examples": 50}
        assert reader.factor_counts("clean", 2) is None
        np.testing.assert_array_equal(
            reader.factor("corrupted", 2, "corrected_eigenvalues"), np.full((layout.layers[2].out_features, 10), 3.0)
        )
        assert np.isnan(reader.factor("clean", 2, "activation_covariance")).all()
        record = reader.stages()["covariance"]
        assert (record.status, record.done, record.total, record.unit, record.message) == (
            "running",
            1,
            3,
            "layers",
            "layer 1",
        )
        assert record.started is not None and record.finished is None
        np.testing.assert_array_equal(reader.completed_blocks(), [True, False, True, False])
        assert reader.train_columns_done().tolist() == [True] * 16 + [False] * 16 + [True] * 16 + [False] * 2
        assert check_against_expected(reader, layout) == 2
        expected = block_scores(layout, 2)
        row = reader.influence_row("corrupted", 1, 4)
        np.testing.assert_array_equal(row[32:48], expected["total"]["corrupted", 1][4])
        assert np.isnan(row[16:32]).all() and np.isnan(row[48:]).all()
        rows = reader.layer_rows("corrupted", 1, 4)
        np.testing.assert_array_equal(rows[:, 32:48], expected["layers"]["corrupted", 1][:, 4])
        np.testing.assert_array_equal(
            reader.pair_layers("corrupted", 1, 4, 33), expected["layers"]["corrupted", 1][:, 4, 1]
        )
        np.testing.assert_array_equal(
            reader.influence_matrix("clean", 0, tests=slice(2, 5))[:, :16],
            block_scores(layout, 0)["total"]["clean", 0][2:5],
        )
        np.testing.assert_array_equal(reader.self_influence("corrupted", 1, "test"), expected_test_self(layout, 1))
        assert np.isnan(reader.self_influence("clean", 0, "test")).all()


def test_factors_of_a_variant_without_its_own_come_from_clean(tmp_path):
    layout = small_layout()  # factor_variants == ["clean"]
    path = tmp_path / "run.h5"
    run_pipeline(path, layout)
    with StoreReader(path) as reader:
        np.testing.assert_array_equal(
            reader.factor("corrupted", 0, "gradient_eigenvalues"), reader.factor("clean", 0, "gradient_eigenvalues")
        )
        assert set(reader.stages()) == set(STAGES)


def test_stage_keys_cover_factor_variants(finished):
    with StoreReader(finished) as reader:
        records = reader.stages()
    assert stage_key("covariance", "corrupted") in records and "scores:corrupted" not in records
    assert all(record.status == "done" for record in records.values())


def test_stage_records_keep_time(tmp_path, layout):
    with StoreWriter.create(tmp_path / "run.h5", layout) as writer:
        first = writer.set_stage("queries", "running", done=0, total=4, unit="batches")
        update = writer.set_stage("queries", "running", done=2)
        done = writer.set_stage("queries", "done", done=4)
        assert update.started == first.started and update.elapsed >= first.elapsed
        assert (
            done.finished >= done.started
            and done.elapsed >= update.elapsed
            and done.done == 4
            and done.unit == "batches"
        )
        failed = writer.set_stage("scores", "failed", message="x" * 1000)
        assert len(failed.message) == 1000
        reset = writer.set_stage("queries", "pending")
        assert (reset.started, reset.finished, reset.elapsed, reset.done) == (None, None, 0.0, None)
        with pytest.raises(ValueError):
            writer.set_stage("queries", "finished")
        with pytest.raises(KeyError):
            writer.set_stage("covariance:nonexistent", "done")
    with StoreReader(tmp_path / "run.h5") as reader:
        assert reader.stages()["scores"].message == "x" * 256  # stored cut to the record's width


def test_writer_rejects_wrong_shapes_and_keys(tmp_path, layout):
    with StoreWriter.create(tmp_path / "run.h5", layout) as writer:
        scores = block_scores(layout, 0)
        with pytest.raises(ValueError, match="shape"):
            writer.write_score_block(3, **scores)  # the last block is 2 columns wide, not 16
        del scores["total"]["corrupted", 1]
        with pytest.raises(ValueError, match="keys"):
            writer.write_score_block(0, **scores)
        with pytest.raises(ValueError, match="shape"):
            writer.write_factor("clean", 0, "activation_covariance", np.zeros((2, 2)))
        with pytest.raises(ValueError):
            writer.write_factor("clean", 0, "hessian", np.zeros((2, 2)))
        with pytest.raises(IndexError):
            writer.write_score_block(4, **block_scores(layout, 3))
        assert not writer.completed_blocks().any()


def _set_attribute(path, name, value):
    with h5py.File(path, "r+") as file:
        file.attrs[name] = value


def test_newer_minor_version_is_read_newer_major_refused(finished, layout):
    _set_attribute(finished, "format_version", "1.7")
    with StoreReader(finished) as reader:
        assert reader.format_version == "1.7"
        assert check_against_expected(reader, layout) == layout.n_blocks
    with pytest.raises(StoreVersionError) as error:
        StoreWriter.open(finished, layout)  # a 1.0 writer must not resume a 1.7 file
    assert_one_line(error.value, finished)
    _set_attribute(finished, "format_version", "2.0")
    with pytest.raises(StoreVersionError, match=r"2\.0") as error:
        StoreReader(finished)
    assert_one_line(error.value, finished)


def test_a_store_of_the_first_format_opens_as_a_classifiers(finished, layout):
    """Format 1.0 had no task attribute and kept the engine options at the top of its config."""
    _set_attribute(finished, "format_version", "1.0")
    config = {"model": "m", "dataset": "d", "fisher": "exact", "mode": "kfac"}
    _set_attribute(finished, "config", json.dumps(config))
    with h5py.File(finished, "r+") as file:
        del file.attrs["task"]
    with StoreReader(finished) as reader:
        assert reader.task == "classification" and not reader.layout.is_causal_lm
        assert check_against_expected(reader, layout) == layout.n_blocks
        assert engine_settings(reader.config) == {"fisher": "exact", "mode": "kfac"}


def test_not_hdf5_and_not_a_store(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("just text\n")
    with pytest.raises(StoreDamaged, match="not an HDF5 file") as error:
        StoreReader(text)
    assert_one_line(error.value, text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as file:
        file["x"] = np.arange(3)
    with pytest.raises(StoreDamaged, match="not an influence-explorer store") as error:
        StoreReader(other)
    assert_one_line(error.value, other)
    with pytest.raises(StoreNotFound) as error:
        StoreReader(tmp_path / "absent.h5")
    assert_one_line(error.value, tmp_path / "absent.h5")


def test_truncated_store_is_refused(finished):
    os.truncate(finished, os.path.getsize(finished) // 2)
    with pytest.raises(StoreDamaged, match="truncated") as error:
        StoreReader(finished)
    assert_one_line(error.value, finished)


def test_missing_or_reshaped_objects_are_refused(finished, layout):
    with h5py.File(finished, "r+") as file:
        del file["/examples/train/text"]
    with pytest.raises(StoreDamaged, match="/examples/train/text") as error:
        StoreReader(finished)
    assert_one_line(error.value, finished)
    with pytest.raises(StoreDamaged):
        StoreWriter.open(finished, layout)


def test_reshaped_dataset_is_refused(finished):
    path = score_path("clean", 1, "test_self")
    with h5py.File(finished, "r+") as file:
        del file[path]
        file[path] = np.zeros(3, dtype=np.float32)
    with pytest.raises(StoreDamaged, match=path) as error:
        StoreReader(finished)
    assert_one_line(error.value, finished)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"model_fingerprint": "other"}, "model_fingerprint"),
        ({"data_fingerprint": "other"}, "data_fingerprint"),
        (
            {
                "config": {
                    "model": "synthetic",
                    "dataset": "synthetic-reviews",
                    "seed": 6,
                    "engine": EngineOptions().for_task("classification").analysis_settings(),
                }
            },
            "config['seed']",
        ),
        ({"layers": [LayerInfo("other", 4, 4, True, "linear")]}, "layers"),
        ({"regularizations": [1e-3, 1.0]}, "regularizations"),
        ({"score_block": 8}, "score_block"),
        ({"variants": ["clean"], "factor_variants": ["clean"]}, "variants"),
    ],
)
def test_resume_refuses_another_run(finished, layout, change, field):
    with pytest.raises(StoreMismatch) as error:
        StoreWriter.open(finished, dataclasses.replace(layout, **change))
    assert_one_line(error.value, finished)
    assert field in str(error.value)


def test_resume_refuses_other_examples(finished, layout):
    labels = layout.train.label.copy()
    labels[3] = 1 - labels[3]
    other = dataclasses.replace(layout, train=dataclasses.replace(layout.train, label=labels))
    with pytest.raises(StoreMismatch, match=r"train\.label\[3\]"):
        StoreWriter.open(finished, other)


def test_resume_ignores_library_upgrades(finished, layout):
    with StoreWriter.open(finished, dataclasses.replace(layout, library_versions={"numpy": "99"})) as writer:
        assert writer.completed_blocks().all() and not writer.repairs


def test_resume_resets_markers_without_data(tmp_path, layout):
    """A marker whose data is missing (not producible by the writer's ordering) is reset, never trusted."""
    path = tmp_path / "run.h5"
    with StoreWriter.create(path, layout) as writer:
        writer.write_score_block(0, **block_scores(layout, 0))
        writer.set_stage("covariance", "done")
        writer.set_stage("queries", "running")
    with h5py.File(path, "r+") as file:
        file[COMPLETED_PATH][1] = 1
    with StoreWriter.open(path, layout) as writer:
        assert writer.completed_blocks().tolist() == [True, False, False, False]
        assert writer.stage("covariance").status == "pending" and "never written" in writer.stage("covariance").message
        assert writer.stage("queries").status == "failed" and writer.stage("queries").message == INTERRUPTED_MESSAGE
        assert len(writer.repairs) == 3


def test_one_writer_at_a_time(finished, layout):
    with StoreWriter.open(finished, layout):
        with pytest.raises(StoreLocked) as error:
            StoreWriter.open(finished, layout)
        assert_one_line(error.value, finished)
        with pytest.raises(StoreLocked):
            StoreWriter.create(finished, layout)
    assert not finished.with_name(finished.name + ".lock").exists()
    with StoreWriter.open(finished, layout):
        pass


def test_create_replaces_atomically_and_leaves_no_temporary(finished, layout):
    with StoreWriter.create(finished, layout):
        pass
    with StoreReader(finished) as reader:
        assert not reader.completed_blocks().any()
    assert sorted(p.name for p in finished.parent.iterdir()) == [finished.name]


def test_reader_and_writer_in_one_process(tmp_path, layout):
    """The UI's case: a reader open before the engine thread starts writing, and while it writes."""
    path = tmp_path / "run.h5"
    with StoreWriter.create(path, layout):
        pass
    reader = StoreReader(path)
    assert not reader.completed_blocks().any()
    writer = StoreWriter.open(path, layout)  # the reader's read-only handle must not block this
    reader.refresh()
    worker = threading.Thread(target=lambda: [writer.write_score_block(b, **block_scores(layout, b)) for b in range(2)])
    worker.start()
    worker.join()
    reader.refresh()
    assert reader.completed_blocks().tolist() == [True, True, False, False]
    assert check_against_expected(reader, layout) == 2
    writer.close()
    assert reader.completed_blocks().tolist() == [True, True, False, False]  # still usable after the writer left
    second = StoreReader(path)
    assert second.completed_blocks().sum() == 2
    run_pipeline(path, layout)  # resume to the end while both readers are open
    reader.refresh()
    assert check_against_expected(reader, layout) == layout.n_blocks
    second.close()
    reader.close()
    with pytest.raises(ValueError):
        reader.completed_blocks()


def test_reader_follows_a_recreated_file(finished, layout):
    reader = StoreReader(finished)
    assert reader.completed_blocks().all()
    with StoreWriter.create(finished, layout):
        pass
    reader.refresh()
    assert not reader.completed_blocks().any()
    reader.close()


def test_reader_argument_errors_are_not_damage(finished):
    with StoreReader(finished) as reader:
        with pytest.raises(ValueError):
            reader.influence_row("noisy", 0, 0)
        with pytest.raises(IndexError):
            reader.influence_row("clean", 2, 0)
        with pytest.raises(IndexError):
            reader.pair_layers("clean", 0, 0, 50)
        with pytest.raises(ValueError):
            reader.examples("validation")
