"""Timing and memory helpers shared by the engine benchmarks.

``StageTimer`` is a fit journal that records nothing but the time (and peak resident
memory) of each stage, so that the benchmarks time ``EkfacInfluence.fit`` itself, the path
users and the pipeline take, rather than a copy of its orchestration.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional

import torch
from peer_common import summed_loss

from influence import EkfacInfluence
from influence.factors import CovarianceMeans, symmetric_eigh
from influence.journal import FitJournal
from influence.layers import resolve_layers


def no_sync() -> None:
    """Nothing to wait for on a CPU."""


def synchronized(device: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else no_sync


def timed(function, *args, sync: Callable[[], None] = no_sync, **kwargs):
    """(result, seconds) of one call, the device synchronized before and after."""
    sync()
    start = time.perf_counter()
    result = function(*args, **kwargs)
    sync()
    return result, time.perf_counter() - start


class StagePeaks:
    """Peak resident memory per stage, from a thread sampling ``/proc/self/statm`` (Linux)."""

    INTERVAL_S = 0.02
    STATM = Path("/proc/self/statm")

    def __init__(self) -> None:
        self.stage = "setup"
        self.peaks: dict[str, int] = {}
        self.available = self.STATM.exists()
        if self.available:
            threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while True:
            rss = int(self.STATM.read_text().split()[1]) * page
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0), rss)
            time.sleep(self.INTERVAL_S)

    def mib(self, stage: str) -> str:
        return f"{self.peaks[stage] / 2**20:,.0f}" if stage in self.peaks else "n/a"


class StageTimer(FitJournal):
    """Seconds per stage of a fit (and of any call given to :meth:`time`), nothing recorded.

    ``on_covariance`` runs when the covariance stage has its means (the floor's own
    eigendecompositions, say); its time is not counted in the stage's but kept in
    ``on_covariance_seconds``.
    """

    def __init__(
        self,
        sync: Callable[[], None] = no_sync,
        peaks: Optional[StagePeaks] = None,
        on_covariance: Optional[Callable[[Mapping[str, CovarianceMeans]], None]] = None,
    ):
        self.sync = sync
        self.peaks = peaks
        self.on_covariance = on_covariance
        self.seconds: dict[str, float] = {}
        self.on_covariance_seconds: Optional[float] = None
        self._excluded = 0.0

    @contextmanager
    def stage(self, stage: str, total: Optional[int], unit: str) -> Iterator[None]:
        if self.peaks is not None:
            self.peaks.stage = stage
        self._excluded = 0.0
        self.sync()
        start = time.perf_counter()
        yield
        self.sync()
        self.seconds[stage] = time.perf_counter() - start - self._excluded

    def covariance_done(self, means: Mapping[str, CovarianceMeans]) -> None:
        if self.on_covariance is None:
            return
        if self.peaks is None:
            _, seconds = timed(self.on_covariance, means, sync=self.sync)
        else:
            stage, self.peaks.stage = self.peaks.stage, "floor eigh"
            _, seconds = timed(self.on_covariance, means, sync=self.sync)
            self.peaks.stage = stage
        self._excluded += seconds
        self.on_covariance_seconds = seconds

    def time(self, stage: str, function, *args, **kwargs):
        """Run ``function`` as a stage of its own."""
        with self.stage(stage, None, ""):
            return function(*args, **kwargs)


def floor_eigendecompositions(means: Mapping[str, CovarianceMeans]) -> None:
    """Plain float64 eigh of every covariance: what any EK-FAC must spend."""
    for layer in means.values():
        symmetric_eigh(layer.activation)
        symmetric_eigh(layer.gradient)


def floor_passes(
    model: torch.nn.Module, train: list[dict], test: list[dict], tracked_patterns, sync: Callable[[], None] = no_sync
) -> tuple[float, float]:
    """Seconds of one plain pass over ``train`` and one over ``test``, after a warm-up of one batch
    each way (a plain pass and an engine's capture), so that neither side pays first-call costs."""
    plain_passes(model, train[:1], tracked_patterns)
    EkfacInfluence(model, tracked_patterns).accumulate_covariance(train[:1])
    _, train_seconds = timed(plain_passes, model, train, tracked_patterns, sync=sync)
    _, test_seconds = timed(plain_passes, model, test, tracked_patterns, sync=sync)
    return train_seconds, test_seconds


def plain_passes(model: torch.nn.Module, batches: list[dict], tracked_patterns) -> None:
    """Forward and backward as a training step would, gradients on the tracked parameters only."""
    tracked = {p for layer in resolve_layers(model, tracked_patterns) for p in layer.module.parameters()}
    flags = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(p in tracked)
    try:
        device = next(model.parameters()).device
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            summed_loss(model(**inputs).logits, batch["labels"]).backward()
            model.zero_grad(set_to_none=True)
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
