"""The UI's and the export's side of the store: read a finished store, or one still being written.

Opened without HDF5's file lock (so the engine can resume a store the UI shows),
as a SWMR reader while a writer has the file. ``refresh()`` makes new data
visible: completion markers are refreshed before the data they vouch for (the
writer writes them in the opposite order), and the file is reopened when it was
replaced (creation, crash recovery) or a writer started or stopped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from store import h5io, integrity, registry, stages
from store.errors import StoreDamaged, StoreNotFound, one_line
from store.filelayout import open_validated
from store.jsonlog import JsonLog
from store.layout import LayerInfo, StoreLayout
from store.schema import (
    ATTR_FORMAT_VERSION,
    COMPLETED_PATH,
    COUNT_COLUMNS,
    FACTOR_NAMES,
    JSON_SLOTS,
    STAGES_PATH,
    counts_path,
    examples_path,
    factor_path,
    score_path,
)
from store.stages import StageRecord

_MARKERS = (COMPLETED_PATH, STAGES_PATH)


@dataclass(frozen=True)
class CompletionView:
    """A causal LM's examples with the model's predictions (NaN, "" until written)."""

    prompt: list[str]
    completion: list[str]
    corrupted_completion: list[str]
    token_ids: np.ndarray  # (n, L), -1 past the end
    completion_mask: np.ndarray  # (n, L)
    completion_loss: np.ndarray  # (n,): Σ −log p over the completion tokens
    token_losses: np.ndarray | None  # (n, L) for queries
    generated: list[str] | None  # the greedy completion of each query

    @property
    def completion_tokens(self) -> np.ndarray:
        return self.completion_mask.sum(axis=1)


@dataclass(frozen=True)
class ExampleView:
    """The examples of one split with the model's predictions (-1 and NaN until written).

    For a causal LM, ``prediction`` says whether the greedy completion reproduces the reference
    (1/0) and ``completions`` holds the texts, tokens and losses; ``probabilities`` has no columns.
    """

    text: list[str]
    label: np.ndarray
    corrupted_label: np.ndarray
    dataset_index: np.ndarray
    prediction: np.ndarray
    probabilities: np.ndarray
    completions: CompletionView | None = None


def _identity(path: Path, swmr: bool) -> tuple:
    """What makes a reopen necessary when it changes: the file itself, whether a writer has it, and,
    for a file opened without SWMR (no writer then), any change at all."""
    status = os.stat(path)
    superblock = h5io.read_superblock(path)
    identity = (status.st_dev, status.st_ino, bool(superblock and superblock.writer_flags))
    return identity if swmr else identity + (status.st_mtime_ns, status.st_size)


class StoreReader:
    """Read-only access to one store; torch-free; safe to use while the engine writes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._closed = False
        self._file: h5py.File | None = None
        with registry.LOCK:
            self._open()
        registry.register(self)

    # ------------------------------------------------------------- lifecycle
    def _open(self) -> None:
        """(Re)open the file and forget everything cached; call with registry.LOCK held."""
        file, layout = open_validated(self.path)
        self._file = file
        self.layout: StoreLayout = layout
        self.format_version = str(file.attrs[ATTR_FORMAT_VERSION])
        self._identity = _identity(self.path, file.swmr_mode)
        self._datasets: dict[str, h5py.Dataset] = {}
        self._examples: dict[str, ExampleView] = {}
        self._json = {slot: JsonLog(file, slot) for slot in JSON_SLOTS}

    def detach(self) -> None:
        """Close the file until the next call (a writer in this process is taking it over)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def refresh(self) -> None:
        """Make data written since the last refresh visible."""
        with self._reading("new data"):
            if not self.path.exists():
                raise StoreNotFound(self.path, "the file was removed")
            if _identity(self.path, self._file.swmr_mode) != self._identity:
                self.detach()
                self._open()
                return
            if not self._file.swmr_mode:
                return  # no writer since the file was opened: nothing new
            try:
                self._refresh_datasets()
            except (OSError, RuntimeError, ValueError):
                # A writer in another process gave a dataset its storage since (a first write to a
                # contiguous dataset): SWMR cannot refresh that, a fresh open sees it.
                self.detach()
                self._open()
            self._examples.clear()

    def _refresh_datasets(self) -> None:
        for path in _MARKERS:
            self._dataset(path).refresh()
        for log in self._json.values():
            log.refresh()
        for path, dataset in self._datasets.items():
            if path not in _MARKERS:
                dataset.refresh()

    def close(self) -> None:
        with registry.LOCK:
            self.detach()
            self._closed = True
        registry.unregister(self)

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: the store reader is closed")

    @contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        """Hold the registry lock, reopen after a detach, and report HDF5 failures as StoreDamaged."""
        with registry.LOCK:
            self._check_open()
            if self._file is None:
                self._open()
            try:
                yield
            except (OSError, KeyError, RuntimeError, ValueError) as exc:
                raise StoreDamaged(self.path, f"cannot read {what}: {one_line(str(exc))}") from None

    def _dataset(self, path: str) -> h5py.Dataset:
        if path not in self._datasets:
            self._datasets[path] = self._file[path]
        return self._datasets[path]

    # ------------------------------------------------------------- layout
    @property
    def config(self) -> dict:
        return self.layout.config

    @property
    def library_versions(self) -> dict[str, str]:
        return self.layout.library_versions

    @property
    def model_fingerprint(self) -> str:
        return self.layout.model_fingerprint

    @property
    def data_fingerprint(self) -> str:
        return self.layout.data_fingerprint

    @property
    def label_names(self) -> list[str]:
        return self.layout.label_names

    @property
    def layers(self) -> list[LayerInfo]:
        return self.layout.layers

    @property
    def variants(self) -> list[str]:
        return self.layout.variants

    @property
    def factor_variants(self) -> list[str]:
        return self.layout.factor_variants

    @property
    def regularizations(self) -> list[float]:
        return self.layout.regularizations

    @property
    def main_regularization(self) -> float:
        return self.layout.main_regularization

    @property
    def main_regularization_index(self) -> int:
        return self.layout.main_regularization_index

    @property
    def score_block(self) -> int:
        return self.layout.score_block

    @property
    def n_train(self) -> int:
        return self.layout.n_train

    @property
    def n_test(self) -> int:
        return self.layout.n_test

    # ------------------------------------------------------------- bookkeeping
    def examples(self, split: str) -> ExampleView:
        table = self.layout.split(split)
        with self._reading(f"the {split} examples"):
            if split not in self._examples:
                self._examples[split] = ExampleView(
                    text=table.text,
                    label=table.label,
                    corrupted_label=table.corrupted_label,
                    dataset_index=table.dataset_index,
                    prediction=self._dataset(examples_path(split, "prediction"))[()],
                    probabilities=self._dataset(examples_path(split, "probabilities"))[()],
                    completions=self._completions(split) if table.completions is not None else None,
                )
            return self._examples[split]

    def _completions(self, split: str) -> CompletionView:
        table = self.layout.split(split).completions
        test = split == "test"
        generated = None
        if test:
            raw = self._dataset(examples_path(split, "generated"))[()]
            generated = [value.decode("utf-8", "replace") for value in raw]
        return CompletionView(
            prompt=table.prompt,
            completion=table.completion,
            corrupted_completion=table.corrupted_completion,
            token_ids=table.token_ids,
            completion_mask=table.completion_mask,
            completion_loss=self._dataset(examples_path(split, "completion_loss"))[()],
            token_losses=self._dataset(examples_path(split, "token_losses"))[()] if test else None,
            generated=generated,
        )

    @property
    def task(self) -> str:
        return self.layout.task

    def metrics(self) -> dict | None:
        with self._reading("the metrics"):
            return self._json["metrics"].latest()

    def summaries(self) -> dict:
        """Every entry of the JSON summary slot."""
        with self._reading("the summary"):
            return self._json["summary"].latest() or {}

    def summary(self, key: str) -> dict | None:
        return self.summaries().get(key)

    def stages(self) -> dict[str, StageRecord]:
        with self._reading("the stage records"):
            records = map(stages.decode, self._dataset(STAGES_PATH)[()])
            return {record.key: record for record in records}

    def completed_blocks(self) -> np.ndarray:
        with self._reading("the completion mask"):
            return self._dataset(COMPLETED_PATH)[()].astype(bool)

    def completed_tiles(self) -> np.ndarray:
        """(query tiles, blocks): which tiles of test rows of each block are written."""
        with self._reading("the tile completion mask"):
            return integrity.completed_tiles(self._dataset, self.layout)

    def train_columns_done(self) -> np.ndarray:
        """Per training example: whether its scores (every variant and λ) are written."""
        return np.repeat(self.completed_blocks(), self.score_block)[: self.n_train]

    # ------------------------------------------------------------- scores
    def _scores(self, variant: str, reg_index: int, name: str) -> h5py.Dataset:
        return self._dataset(score_path(variant, reg_index, name))

    def _check_scores(self, variant: str, reg_index: int, test_index: int = 0, train_index: int = 0) -> None:
        """Validate arguments before reading, so that a caller's mistake is not reported as damage."""
        self.layout.check_variant(variant)
        self.layout.check_reg_index(reg_index)
        for index, size, what in ((test_index, self.n_test, "test"), (train_index, self.n_train, "train")):
            if not 0 <= index < size:
                raise IndexError(f"{what} index {index} outside 0..{size - 1}")

    def influence_row(self, variant: str, reg_index: int, test_index: int) -> np.ndarray:
        """Total influence of every training example on one test example (NaN where not computed yet)."""
        self._check_scores(variant, reg_index, test_index)
        with self._reading("an influence row"):
            return self._scores(variant, reg_index, "total")[test_index, :]

    def layer_rows(self, variant: str, reg_index: int, test_index: int) -> np.ndarray:
        """Per-layer influence on one test example: (n_layers, n_train)."""
        self._check_scores(variant, reg_index, test_index)
        with self._reading("per-layer influence rows"):
            return self._scores(variant, reg_index, "layers")[:, test_index, :]

    def pair_layers(self, variant: str, reg_index: int, test_index: int, train_index: int) -> np.ndarray:
        """Per-layer influence of one training example on one test example: (n_layers,)."""
        self._check_scores(variant, reg_index, test_index, train_index)
        with self._reading("per-layer influence of a pair"):
            return self._scores(variant, reg_index, "layers")[:, test_index, train_index]

    def influence_matrix(
        self, variant: str, reg_index: int, layer: int | None = None, tests: slice | None = None
    ) -> np.ndarray:
        """Test × train influence, total or of one layer; ``tests`` selects a range of rows (all by default)."""
        rows = slice(None) if tests is None else tests
        self._check_scores(variant, reg_index)
        if layer is not None:
            self.layout.check_layer_index(layer)
        with self._reading("an influence matrix"):
            if layer is None:
                return self._scores(variant, reg_index, "total")[rows, :]
            return self._scores(variant, reg_index, "layers")[layer, rows, :]

    def self_influence(self, variant: str, reg_index: int, split: str) -> np.ndarray:
        """I(n, n) for every example of ``split`` (the diagonal a self-check of the data ranks by)."""
        self.layout.split(split)
        self._check_scores(variant, reg_index)
        with self._reading("self-influence"):
            return self._scores(variant, reg_index, f"{split}_self")[()]

    # ------------------------------------------------------------- factors
    def factor(self, variant: str, layer_index: int, name: str) -> np.ndarray:
        """A factor used by ``variant``'s scores: its own when refitted, else the clean one (NaN if not written)."""
        own = self.layout.factor_variant_of(variant)
        self.layout.check_layer_index(layer_index)
        if name not in FACTOR_NAMES:
            raise ValueError(f"unknown factor {name!r}; factors are {FACTOR_NAMES}")
        with self._reading(f"factor {name}"):
            return self._dataset(factor_path(own, layer_index, name))[()]

    def factor_counts(self, variant: str, layer_index: int) -> dict[str, int] | None:
        """Tokens and examples the covariances of one layer averaged over; None until written."""
        own = self.layout.factor_variant_of(variant)
        self.layout.check_layer_index(layer_index)
        with self._reading("factor counts"):
            counts = self._dataset(counts_path(own))[layer_index]
        if np.any(counts < 0):
            return None
        return dict(zip(COUNT_COLUMNS, (int(count) for count in counts)))
