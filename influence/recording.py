"""What the pipeline adds to the engine's stages: records in the store, checkpoints beside it.

:class:`StageRecorder` marks a stage's record running, then done, failed or cancelled, and
reports it. :class:`StoreJournal` is the :class:`~influence.journal.FitJournal` that
``EkfacInfluence.fit`` is given by the pipeline: it answers what the store already holds
(covariances, eigenbases layer by layer, corrected eigenvalues), loads and saves the
running sums of the passes (``store.checkpoint``: atomic files beside the store), and
writes each stage's results. Because sums are checkpointed in the dtype they are
accumulated in, and the data order is fixed, a resumed run gives the same numbers as an
uninterrupted one.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator, Mapping, Optional

import numpy as np
import torch

from influence.factors import CovarianceMeans, Eigenbasis
from influence.journal import FitJournal, RunningSums
from job.progress import Cancelled, ProgressCallback, ProgressEvent, report
from job.stages import (
    STAGE_EIGEN,
    STATUS_CANCELLED,
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_RUNNING,
)
from store.checkpoint import load_checkpoint, remove_checkpoint, save_checkpoint
from store.errors import StoreWriteError
from store.schema import stage_key
from store.writer import StoreWriter

FAILURE_MESSAGE_CHARACTERS = 200
# Store dataset name -> Eigenbasis attribute.
EIGEN_FIELDS = {
    "activation_eigenvectors": "activation_vectors",
    "activation_eigenvalues": "activation_values",
    "gradient_eigenvectors": "gradient_vectors",
    "gradient_eigenvalues": "gradient_values",
}
CHECKPOINT_SEPARATOR = "/"  # checkpoint array names: "{layer}/{field of the sums' state}"


def numpy_of(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu").numpy()


class StageRecorder:
    """Stage records in the store, and the progress events that go with them."""

    def __init__(self, writer: StoreWriter, progress: Optional[ProgressCallback]):
        self.writer = writer
        self.progress = progress

    def is_done(self, key: str) -> bool:
        return self.writer.stage(key).status == STATUS_DONE

    def done_count(self, key: str) -> int:
        """Units a stage recorded as finished (checkpointed), 0 when it never started."""
        return self.writer.stage(key).done or 0

    def report(self, key: str, done: int, total: Optional[int], unit: str, message: str = "") -> None:
        report(self.progress, ProgressEvent(key, done, total, unit, message))

    @contextmanager
    def stage(self, key: str, total: Optional[int], unit: str) -> Iterator[None]:
        """Mark ``key`` running, then done, cancelled or failed; a store write error stays itself."""
        self.writer.set_stage(key, STATUS_RUNNING, total=total, unit=unit)
        self.report(key, self.done_count(key), total, unit)
        try:
            yield
        except Cancelled:
            self.writer.set_stage(key, STATUS_CANCELLED, message="cancelled by the user")
            raise
        except StoreWriteError:
            raise
        except Exception as error:
            message = f"{type(error).__name__}: {error}"[:FAILURE_MESSAGE_CHARACTERS]
            self.writer.set_stage(key, STATUS_FAILED, message=message)
            raise
        self.writer.set_stage(key, STATUS_DONE, done=total)
        self.report(key, total or 0, total, unit)


class _Cadence:
    """Say when running sums are due to be saved: every ``seconds`` (0 = after every batch)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.last = time.monotonic()

    def due(self) -> bool:
        if time.monotonic() - self.last >= self.seconds:
            self.last = time.monotonic()
            return True
        return False


class StoreJournal(FitJournal):
    """One factor variant's fit, recorded in the store and resumable from it."""

    def __init__(
        self,
        recorder: StageRecorder,
        variant: str,
        layer_names: list[str],
        fingerprint: str,
        checkpoint_seconds: float,
        device: torch.device,
    ):
        self.recorder = recorder
        self.writer = recorder.writer
        self.variant = variant
        self.layer_names = layer_names
        self.fingerprint = fingerprint
        self.checkpoint_seconds = checkpoint_seconds
        self.device = device
        self._totals: dict[str, Optional[int]] = {}
        self._cadence: dict[str, _Cadence] = {}

    def _key(self, stage: str) -> str:
        return stage_key(stage, self.variant)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), device=self.device)

    def _read(self, index: int, name: str) -> torch.Tensor:
        return self._tensor(self.writer.read_factor(self.variant, index, name))

    @contextmanager
    def stage(self, stage: str, total: Optional[int], unit: str) -> Iterator[None]:
        key = self._key(stage)
        self._totals[stage] = total
        self._cadence[stage] = _Cadence(self.checkpoint_seconds)
        with self.recorder.stage(key, total, unit):
            yield
        remove_checkpoint(self.writer.path, key)

    # ------------------------------------------------------------ what is done
    def finished(self, stage: str) -> bool:
        return self.recorder.is_done(self._key(stage))

    def covariance(self) -> dict[str, CovarianceMeans]:
        means = {}
        for index, name in enumerate(self.layer_names):
            counts = self.writer.read_factor_counts(self.variant, index)
            activation, gradient = (
                self._read(index, field) for field in ("activation_covariance", "gradient_covariance")
            )
            means[name] = CovarianceMeans(activation, gradient, counts["tokens"], counts["examples"])
        return means

    def eigenbases(self) -> dict[str, Eigenbasis]:
        key = self._key(STAGE_EIGEN)
        finished = len(self.layer_names) if self.finished(STAGE_EIGEN) else self.recorder.done_count(key)
        return {
            name: Eigenbasis(**{attr: self._read(index, field) for field, attr in EIGEN_FIELDS.items()})
            for index, name in enumerate(self.layer_names[:finished])
        }

    def eigenvalues(self) -> dict[str, torch.Tensor]:
        return {name: self._read(index, "corrected_eigenvalues") for index, name in enumerate(self.layer_names)}

    # ---------------------------------------------------------- running sums
    def resume(self, stage: str, sums: RunningSums) -> int:
        checkpoint = load_checkpoint(self.writer.path, self._key(stage), self.fingerprint)
        if checkpoint is None:
            return 0
        for name, layer_sums in sums.items():
            prefix = name + CHECKPOINT_SEPARATOR
            layer_sums.load_state(
                {
                    field.removeprefix(prefix): self._tensor(array)
                    for field, array in checkpoint.arrays.items()
                    if field.startswith(prefix)
                }
            )
        return checkpoint.batches

    def batch_done(self, stage: str, index: int, sums: RunningSums) -> None:
        total = self._totals.get(stage)
        if (total is not None and index + 1 >= total) or not self._cadence[stage].due():
            return  # the last batch is followed by the stage's results, not a checkpoint
        arrays = {
            f"{name}{CHECKPOINT_SEPARATOR}{field}": numpy_of(value)
            for name, layer_sums in sums.items()
            for field, value in layer_sums.state().items()
        }
        key = self._key(stage)
        save_checkpoint(self.writer.path, key, self.fingerprint, index + 1, arrays)
        self.writer.set_stage(key, STATUS_RUNNING, done=index + 1)

    # --------------------------------------------------------------- results
    def covariance_done(self, means: Mapping[str, CovarianceMeans]) -> None:
        for index, name in enumerate(self.layer_names):
            self.writer.write_factor(self.variant, index, "activation_covariance", numpy_of(means[name].activation))
            self.writer.write_factor(self.variant, index, "gradient_covariance", numpy_of(means[name].gradient))
            self.writer.write_factor_counts(self.variant, index, means[name].tokens, means[name].examples)

    def basis_done(self, index: int, name: str, basis: Eigenbasis) -> None:
        for field, attr in EIGEN_FIELDS.items():
            self.writer.write_factor(self.variant, index, field, numpy_of(getattr(basis, attr)))
        self.writer.set_stage(self._key(STAGE_EIGEN), STATUS_RUNNING, done=index + 1)

    def eigenvalues_done(self, values: Mapping[str, torch.Tensor]) -> None:
        for index, name in enumerate(self.layer_names):
            self.writer.write_factor(self.variant, index, "corrected_eigenvalues", numpy_of(values[name]))
