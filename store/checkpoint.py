"""Checkpoints of a stage's running sums, beside the store, replaced atomically.

A stage that accumulates over the training data (covariance, eigenvalue correction) saves
its partial sums every so often. Those sums span several datasets (one per layer), and no
sequence of HDF5 writes updates them all at once: a kill half-way would leave some layers
a batch ahead of the others. So a checkpoint is one ``.npz`` file written to a temporary
name, fsynced and renamed over the previous one — the file system makes the switch atomic
— holding the sums together with the number of batches they include and the fingerprint
of the run they belong to. The store itself only ever receives a stage's final values.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from store.errors import StoreDamaged, StoreWriteError, os_reason

BATCHES_KEY = "__batches__"
FINGERPRINT_KEY = "__fingerprint__"
SUFFIX = ".checkpoint.npz"


@dataclass(frozen=True)
class Checkpoint:
    batches: int
    arrays: dict[str, np.ndarray]


def checkpoint_path(store: Path, stage: str) -> Path:
    """``influence.h5`` + stage ``covariance:corrupted`` → ``influence.h5.covariance-corrupted.checkpoint.npz``."""
    return store.with_name(f"{store.name}.{stage.replace(':', '-')}{SUFFIX}")


def save_checkpoint(store: Path, stage: str, fingerprint: str, batches: int, arrays: dict[str, np.ndarray]) -> None:
    """Replace the stage's checkpoint with ``arrays`` (sums over the first ``batches`` batches)."""
    target = checkpoint_path(store, stage)
    temporary = target.with_name(target.name + ".tmp")
    try:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays, **{BATCHES_KEY: np.int64(batches), FINGERPRINT_KEY: np.str_(fingerprint)})
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise StoreWriteError(target, f"cannot save the checkpoint: {os_reason(error)}") from None


def load_checkpoint(store: Path, stage: str, fingerprint: str) -> Optional[Checkpoint]:
    """The stage's checkpoint, or None when there is none or it belongs to another run."""
    target = checkpoint_path(store, stage)
    if not target.is_file():
        return None
    try:
        with np.load(target, allow_pickle=False) as data:
            if str(data[FINGERPRINT_KEY]) != fingerprint:
                return None
            arrays = {name: data[name] for name in data.files if name not in (BATCHES_KEY, FINGERPRINT_KEY)}
            return Checkpoint(int(data[BATCHES_KEY]), arrays)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise StoreDamaged(
            target, f"unreadable checkpoint ({os_reason(error)}): delete it to restart the stage"
        ) from None


def remove_checkpoint(store: Path, stage: str) -> None:
    checkpoint_path(store, stage).unlink(missing_ok=True)


def remove_checkpoints(store: Path) -> None:
    """Forget every checkpoint of ``store`` (its stages are done, or it was created afresh)."""
    for path in store.parent.glob(f"{store.name}.*{SUFFIX}*"):
        path.unlink(missing_ok=True)
