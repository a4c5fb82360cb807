"""Stores and a fake engine for the terminal UI's tests: no torch anywhere in this module.

``deterministic_store`` writes a synthetic store with fixed stage timestamps (so that
snapshots do not depend on the clock); ``relative_store`` one whose raw and relative
influence rank the training reviews differently; ``FakeEngine`` has the engine runner's
signature and writes a store block by block through StoreWriter, emitting
ProgressEvents, honouring the cancel event within one block, and resuming from the
store like the real pipeline.
"""

from __future__ import annotations

import io
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import numpy as np
from rich.console import Console
from textual.worker import WorkerFailed

import store.stages
from job.config import RunConfig
from job.progress import Cancelled, ProgressEvent
from job.stages import FACTOR_STAGES, STATUS_CANCELLED, STATUS_DONE, STATUS_RUNNING
from store.synthetic import make_synthetic_store, synthetic_layout
from store.writer import StoreWriter

FIXED_TIME = 1_800_000_000.0
WAIT_STEP = 0.01  # how often a gated fake engine looks at its cancel event


@contextmanager
def frozen_stage_clock() -> Iterator[None]:
    """Stage records written meanwhile carry FIXED_TIME and zero elapsed time."""
    real = store.stages.time
    store.stages.time = SimpleNamespace(time=lambda: FIXED_TIME)
    try:
        yield
    finally:
        store.stages.time = real


def deterministic_store(path: Path, **options) -> Path:
    """``make_synthetic_store`` with a frozen stage clock (seeded data, fixed times: snapshot-safe)."""
    with frozen_stage_clock():
        return make_synthetic_store(path, **options)


def engine_config(tmp_path: Path, name: str = "engine.h5") -> RunConfig:
    """A configuration whose store is ``tmp_path/name`` (the fake engine ignores everything else)."""
    return RunConfig(store=str(tmp_path / name))


class FakeEngine:
    """An engine runner writing a small synthetic store progressively.

    With ``gate`` set, each score block waits for ``gate`` (checking ``cancel`` every
    WAIT_STEP seconds), so a test decides when data lands. ``fail_at_block`` raises
    ``failure`` before writing that block; ``nan_block`` writes NaN into one block.
    """

    def __init__(
        self,
        *,
        n_test: int = 6,
        n_train: int = 48,
        score_block: int = 8,
        n_layers: int = 2,
        gate: threading.Semaphore | None = None,
        failure: BaseException | None = None,
        fail_at_block: int | None = None,
        nan_block: int | None = None,
    ) -> None:
        self.layout = synthetic_layout(
            n_test=n_test,
            n_train=n_train,
            n_layers=n_layers,
            regularizations=(1e-5, 1e-3),
            variants=("clean", "corrupted"),
            seed=3,
            score_block=score_block,
        )
        self.gate = gate
        self.failure = failure
        self.fail_at_block = fail_at_block
        self.nan_block = nan_block
        self.calls = 0
        self.blocks_written = 0
        self.running = threading.Event()

    def block(self, index: int) -> tuple[dict, dict, dict]:
        layout = self.layout
        start, stop = layout.block_columns(index)
        rng = np.random.default_rng([7, index])
        base = rng.standard_normal((len(layout.layers), layout.n_test, stop - start)).astype(np.float32)
        if index == self.nan_block:
            base[:, 0, 0] = np.nan
        total, layers, train_self = {}, {}, {}
        for variant in layout.variants:
            sign = np.where(layout.train.label[start:stop] == layout.train.corrupted_label[start:stop], 1.0, -1.0)
            flip = sign.astype(np.float32) if variant == "corrupted" else np.float32(1.0)
            for k, reg in enumerate(layout.regularizations):
                values = (base * flip / (1.0 + reg)).astype(np.float32)
                layers[variant, k], total[variant, k] = values, values.sum(axis=0)
                train_self[variant, k] = np.abs(values).sum(axis=(0, 1))
        return total, layers, train_self

    def _wait(self, cancel: threading.Event) -> None:
        if cancel.is_set():
            raise Cancelled("cancelled")
        if self.gate is None:
            return
        while not self.gate.acquire(timeout=WAIT_STEP):
            if cancel.is_set():
                raise Cancelled("cancelled")

    def __call__(self, config: RunConfig, progress, cancel: threading.Event) -> Path:
        self.calls += 1
        self.running.set()
        layout = self.layout
        path = config.store_path()
        progress(ProgressEvent("training", 1, 1, "steps"))
        with StoreWriter.open_or_create(path, layout) as writer:
            write_stages_before_scores(writer)
            completed = writer.completed_blocks()
            writer.set_stage("scores", STATUS_RUNNING, done=int(completed.sum()), total=layout.n_blocks, unit="blocks")
            try:
                for index in range(layout.n_blocks):
                    if completed[index]:
                        continue
                    self._wait(cancel)
                    if index == self.fail_at_block and self.failure is not None:
                        raise self.failure
                    total, layers, train_self = self.block(index)
                    writer.write_score_block(index, total=total, layers=layers, train_self=train_self)
                    self.blocks_written += 1
                    done = int(writer.completed_blocks().sum())
                    writer.set_stage("scores", STATUS_RUNNING, done=done)
                    progress(ProgressEvent("scores", done, layout.n_blocks, "blocks"))
            except Cancelled:
                writer.set_stage("scores", STATUS_CANCELLED, message="cancelled by the user")
                raise
            for variant in layout.variants:
                for k in range(len(layout.regularizations)):
                    writer.write_test_self(variant, k, np.ones(layout.n_test, dtype=np.float32))
            writer.set_stage("scores", STATUS_DONE)
        return path


def write_stages_before_scores(writer: StoreWriter) -> None:
    """Perfect predictions and every stage before the scores marked done, as the fakes need them."""
    layout = writer.layout
    for split in ("train", "test"):
        labels = layout.split(split).label
        writer.write_predictions(split, labels, np.eye(2, dtype=np.float32)[labels] * 0.8 + 0.1)
    writer.write_metrics({"f1": 1.0, "accuracy": 1.0, "confusion": [[1, 0], [0, 1]]})
    writer.set_stage("predictions", STATUS_DONE, done=2, total=2, unit="splits")
    for stage in FACTOR_STAGES:
        writer.set_stage(stage, STATUS_DONE, done=1, total=1, unit="layers")
    writer.set_stage("queries", STATUS_DONE, done=layout.n_test, total=layout.n_test, unit="examples")


# relative_store: training reviews whose self-influence is not > 0 (relative influence not available).
ZERO_SELF, NEGATIVE_SELF, NAN_SELF = 3, 5, 8


def relative_store(path: Path, *, n_test: int = 4, n_train: int = 40, score_block: int = 16) -> Path:
    """A store where raw and relative influence disagree, as with real models.

    I(q, n) = sqrt(I(n, n)) · c(q, n) with a random "cosine" c in [-1, 1] and
    self-influences I(n, n) spread over six decades: the raw ranking mostly follows
    the gradient magnitude, the relative one follows c. Training reviews ZERO_SELF,
    NEGATIVE_SELF and NAN_SELF have I(n, n) = 0, < 0 and NaN (their raw scores are
    kept: 0.5 · c). The corrupted variant flips the corrupted reviews' sign; larger λ
    shrink everything alike. Stage clock frozen, so snapshots are stable.
    """
    layout = synthetic_layout(
        n_test=n_test,
        n_train=n_train,
        n_layers=2,
        regularizations=(1e-5, 1e-3),
        variants=("clean", "corrupted"),
        seed=5,
        score_block=score_block,
    )
    rng = np.random.default_rng(11)
    train_self = (10.0 ** rng.uniform(-2, 4, n_train)).astype(np.float32)
    cosine = rng.uniform(-1, 1, (n_test, n_train)).astype(np.float32)
    total = np.sqrt(train_self) * cosine
    total[:, [ZERO_SELF, NEGATIVE_SELF, NAN_SELF]] = 0.5 * cosine[:, [ZERO_SELF, NEGATIVE_SELF, NAN_SELF]]
    train_self[[ZERO_SELF, NEGATIVE_SELF, NAN_SELF]] = (0.0, -1.0, np.nan)
    layers = np.stack([0.75 * total, 0.25 * total])
    sign = np.where(layout.train.label == layout.train.corrupted_label, 1.0, -1.0).astype(np.float32)
    with frozen_stage_clock(), StoreWriter.create(path, layout) as writer:
        write_stages_before_scores(writer)
        for index in range(layout.n_blocks):
            start, stop = layout.block_columns(index)
            arrays: tuple[dict, dict, dict] = ({}, {}, {})
            for variant in layout.variants:
                flip = sign[start:stop] if variant == "corrupted" else np.float32(1.0)
                for k, reg in enumerate(layout.regularizations):
                    shrink = np.float32(1.0 / (1.0 + reg))
                    arrays[0][variant, k] = total[:, start:stop] * flip * shrink
                    arrays[1][variant, k] = layers[:, :, start:stop] * flip * shrink
                    arrays[2][variant, k] = train_self[start:stop] * shrink**2
            writer.write_score_block(index, total=arrays[0], layers=arrays[1], train_self=arrays[2])
        for variant in layout.variants:
            for k in range(len(layout.regularizations)):
                writer.write_test_self(variant, k, np.ones(n_test, dtype=np.float32))
        writer.set_stage("scores", STATUS_DONE, done=layout.n_blocks, total=layout.n_blocks, unit="blocks")
    return path


def expected_relative(row: np.ndarray, train_self: np.ndarray) -> np.ndarray:
    """RelatIF written out independently of store.analysis: NaN where I(n, n) is not a positive number."""
    row, train_self = np.asarray(row, dtype=np.float64), np.asarray(train_self, dtype=np.float64)
    out = np.full(np.broadcast_shapes(row.shape, train_self.shape), np.nan)
    good = np.broadcast_to(np.isfinite(train_self) & (train_self > 0), out.shape) & np.isfinite(row)
    root = np.sqrt(np.where(train_self > 0, train_self, 1.0))
    return np.divide(row, root, out=out, where=good)


def descending_order(values: np.ndarray) -> list[int]:
    """Row ids by value, largest first, NaN last, ties by id: how the ranking sorts."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.flatnonzero(~np.isnan(values))
    return finite[np.argsort(-values[finite], kind="stable")].tolist() + np.flatnonzero(np.isnan(values)).tolist()


async def settle(pilot, predicate, timeout: float = 10.0, step: float = 0.05) -> bool:
    """Let the app run until ``predicate()`` holds (or ``timeout`` seconds pass); returns whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await pilot.pause(step)
    return predicate()


async def heavy_work_done(pilot) -> None:
    """Wait for the views' thread workers (heatmap pooling, λ report, export), not the engine's,
    including those that finishing ones start."""
    await pilot.pause()
    while running := [w for w in pilot.app.workers if w.group != "engine" and not w.is_finished]:
        for worker in running:
            try:
                await worker.wait()
            except WorkerFailed:
                pass  # what the app made of the failure is for the test to look at
        await pilot.pause()


def rendered(renderable) -> str:
    """A rich renderable as plain text, wide enough not to wrap."""
    console = Console(width=300, record=True, color_system=None, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def text_of(widget) -> str:
    """What a Static shows, as plain text."""
    content = widget.content
    return content if isinstance(content, str) else rendered(content)
