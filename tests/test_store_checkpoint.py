"""Stage checkpoints beside the store: atomic, tied to their run, loud when damaged."""

from __future__ import annotations

import numpy as np
import pytest

from store.checkpoint import checkpoint_path, load_checkpoint, remove_checkpoints, save_checkpoint
from store.errors import StoreDamaged


def test_a_checkpoint_round_trips_and_belongs_to_its_run(tmp_path):
    store = tmp_path / "influence.h5"
    arrays = {"layer/activation": np.arange(6, dtype=np.float32).reshape(2, 3), "examples": np.int64(12)}
    save_checkpoint(store, "covariance:corrupted", "run-a", 3, arrays)
    assert checkpoint_path(store, "covariance:corrupted").name == "influence.h5.covariance-corrupted.checkpoint.npz"
    loaded = load_checkpoint(store, "covariance:corrupted", "run-a")
    assert loaded is not None and loaded.batches == 3
    assert np.array_equal(loaded.arrays["layer/activation"], arrays["layer/activation"])
    assert load_checkpoint(store, "covariance:corrupted", "run-b") is None
    assert load_checkpoint(store, "covariance", "run-a") is None


def test_replacing_leaves_either_the_old_or_the_new_checkpoint(tmp_path):
    store = tmp_path / "influence.h5"
    save_checkpoint(store, "covariance", "run", 1, {"x": np.zeros(3)})
    # A writer killed before its rename leaves only a temporary file: the old checkpoint stands.
    checkpoint_path(store, "covariance").with_name(checkpoint_path(store, "covariance").name + ".tmp").write_bytes(
        b"half"
    )
    assert load_checkpoint(store, "covariance", "run").batches == 1
    save_checkpoint(store, "covariance", "run", 2, {"x": np.ones(3)})
    assert load_checkpoint(store, "covariance", "run").batches == 2
    remove_checkpoints(store)
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_checkpoint_is_reported_with_its_path(tmp_path):
    store = tmp_path / "influence.h5"
    checkpoint_path(store, "covariance").write_bytes(b"not a zip file")
    with pytest.raises(StoreDamaged, match="covariance.checkpoint.npz.*delete it"):
        load_checkpoint(store, "covariance", "run")
