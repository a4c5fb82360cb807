"""What a fit keeps of its stages, and how a pass over the data is steered.

:meth:`EkfacInfluence.fit <influence.ekfac.EkfacInfluence.fit>` is the one orchestration of
the factor stages. It asks a :class:`FitJournal` what is already done and tells it what it
finishes. This base journal keeps nothing, which is the Python API: every stage runs from
the start. The pipeline's ``influence.recording.StoreJournal`` records each stage in the
store, checkpoints running sums beside it and answers from both, which is what makes a run
resumable. The stages themselves are the same code either way.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Union

import torch

from influence.distributed import Ranks
from influence.factors import CovarianceMeans, CovarianceSums, Eigenbasis, EigenvalueSums
from job.progress import ProgressCallback

RunningSums = Mapping[str, Union[CovarianceSums, EigenvalueSums]]  # per layer, a pass's running state


@dataclass(frozen=True)
class PassControl:
    """How one pass over the data runs, beyond the data itself.

    ``start_batch``: batches before it are skipped (a resumed pass); ``on_batch(index)`` runs
    after each batch is added (checkpoints); ``progress`` receives one event per batch;
    ``cancel`` is checked before each batch.
    """

    start_batch: int = 0
    on_batch: Optional[Callable[[int], None]] = None
    progress: Optional[ProgressCallback] = None
    cancel: Optional[threading.Event] = None


WHOLE_PASS = PassControl()  # from the first batch, unobserved, not cancellable


class FitJournal:
    """Where a fit keeps what it has done; this one keeps nothing and finds nothing done."""

    def stage(self, stage: str, total: Optional[int], unit: str) -> AbstractContextManager[None]:
        """Around one stage's work: the store marks it running, then done, failed or cancelled."""
        return nullcontext()

    def finished(self, stage: str) -> bool:
        """Whether ``stage`` is done, its results kept."""
        return False

    def covariance(self) -> dict[str, CovarianceMeans]:
        """The covariance stage's results (asked for only when it is finished)."""
        raise LookupError("this journal keeps no covariance")

    def eigenbases(self) -> dict[str, Eigenbasis]:
        """The layers whose eigendecomposition is done, whether or not the stage is."""
        return {}

    def eigenvalues(self) -> dict[str, torch.Tensor]:
        """The corrected eigenvalues (asked for only when that stage is finished)."""
        raise LookupError("this journal keeps no eigenvalues")

    def resume(self, stage: str, sums: RunningSums) -> int:
        """Load a checkpoint of ``stage``'s pass into ``sums``; the batch to continue from."""
        return 0

    def batch_done(self, stage: str, index: int, sums: RunningSums) -> None:
        """Batch ``index`` of ``stage``'s pass is in ``sums`` (a checkpoint may be due)."""

    def covariance_done(self, means: Mapping[str, CovarianceMeans]) -> None:
        """The covariance stage finished with these means."""

    def basis_done(self, index: int, name: str, basis: Eigenbasis) -> None:
        """Layer ``index`` (``name``) was decomposed."""

    def eigenvalues_done(self, values: Mapping[str, torch.Tensor]) -> None:
        """The eigenvalue-correction stage finished with these values."""


class SharedJournal(FitJournal):
    """One fit on several ranks: rank 0's journal (the store's) answers for all, and records.

    What is done, and what the store holds, is read on rank 0 and shared; the stages are recorded
    by rank 0 alone, with the sums already all-reduced. A pass's running sums differ from rank to
    rank, so none is checkpointed mid-pass: a killed pass starts again (a checkpoint a
    one-process run left is continued, by rank 0's sums, from the batch every rank is told).
    """

    def __init__(self, ranks: Ranks, inner: FitJournal):
        self.ranks = ranks
        self.inner = inner

    def stage(self, stage: str, total: Optional[int], unit: str) -> AbstractContextManager[None]:
        return self.inner.stage(stage, total, unit) if self.ranks.leads else nullcontext()

    def finished(self, stage: str) -> bool:
        return self.ranks.agree(self.inner.finished(stage) if self.ranks.leads else None)

    def covariance(self) -> dict[str, CovarianceMeans]:
        return self.ranks.agree(self.inner.covariance() if self.ranks.leads else None)

    def eigenbases(self) -> dict[str, Eigenbasis]:
        return self.ranks.agree(self.inner.eigenbases() if self.ranks.leads else None)

    def eigenvalues(self) -> dict[str, torch.Tensor]:
        return self.ranks.agree(self.inner.eigenvalues() if self.ranks.leads else None)

    def resume(self, stage: str, sums: RunningSums) -> int:
        return self.ranks.agree(self.inner.resume(stage, sums) if self.ranks.leads else None)

    def covariance_done(self, means: Mapping[str, CovarianceMeans]) -> None:
        if self.ranks.leads:
            self.inner.covariance_done(means)

    def basis_done(self, index: int, name: str, basis: Eigenbasis) -> None:
        if self.ranks.leads:
            self.inner.basis_done(index, name, basis)

    def eigenvalues_done(self, values: Mapping[str, torch.Tensor]) -> None:
        if self.ranks.leads:
            self.inner.eigenvalues_done(values)
