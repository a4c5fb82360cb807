"""The engine's side of the store: create or resume a file and write each stage's results as they come.

Protocol (docs/store-format.md, "Concurrency and crash recovery"): every object is
created up front in a temporary file that is renamed into place; the file is then
reopened in SWMR-write mode; every write is flushed before its completion marker
is written and flushed in turn. A SIGKILL therefore leaves a file that a SWMR
reader sees consistently; ``open`` copies such a file into a fresh one (HDF5
refuses to reopen it for writing), checks every marker against the data and
resumes.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from job.stages import STATUS_DONE, STATUS_FAILED, STATUS_PENDING, STATUS_RUNNING
from store import h5io, integrity, registry, stages
from store.chunks import ChunkWriter
from store.errors import (
    StoreDamaged,
    StoreError,
    StoreMismatch,
    StoreNotFound,
    StoreWriteError,
    os_reason,
)
from store.filelayout import initial_size_estimate, open_validated, write_new_store
from store.jsonlog import JsonLog
from store.layout import StoreLayout, first_difference, validate_layout
from store.lock import WriterLock
from store.schema import (
    COMPLETED_PATH,
    COUNT_COLUMNS,
    FACTOR_NAMES,
    GENERATED_BYTES,
    STAGES_PATH,
    TILES_PATH,
    counts_path,
    examples_path,
    factor_path,
    factor_shape,
    score_path,
)
from store.stages import StageRecord, fit_utf8

TMP_SUFFIX = ".tmp"
FREE_SPACE_FACTOR = 2  # room for the temporary file plus margin
RESERVE_SLACK_BYTES = 256 * 1024  # beyond each write's data: room for the metadata a flush adds
INTERRUPTED_MESSAGE = "interrupted: the previous writer stopped without finishing this stage"

ScoreArrays = Mapping[tuple[str, int], np.ndarray]


def _as_array(value: object, dtype: np.dtype | type, shape: tuple[int, ...], what: str) -> np.ndarray:
    array = np.asarray(value, dtype=dtype)
    if array.shape != shape:
        raise ValueError(f"{what}: shape {array.shape}, expected {shape}")
    return array


@contextmanager
def _translated(path: Path, action: str) -> Iterator[None]:
    """Turn an operating-system failure into a one-line StoreWriteError naming the file."""
    try:
        yield
    except StoreError:
        raise
    except (OSError, RuntimeError) as exc:
        raise StoreWriteError(path, f"cannot {action}: {os_reason(exc)}") from None


def _recover_if_writer_died(path: Path) -> bool:
    """Rebuild ``path`` from its SWMR-consistent view when a writer left its flags set; True if it did."""
    superblock = h5io.read_superblock(path)
    if superblock is None or superblock.writer_flags == 0:
        return False
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        h5io.copy_file_contents(path, tmp)
        h5io.replace_atomically(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if getattr(exc, "errno", None):
            raise StoreWriteError(path, f"cannot recover the store after a crash: {os_reason(exc)}") from None
        raise StoreDamaged(path, f"cannot recover the store after a crash: {os_reason(exc)}") from None
    return True


def _check_free_space(path: Path, layout: StoreLayout) -> None:
    """Refuse early when the new file cannot fit: HDF5 2.0 can crash (SIGSEGV) when the disk fills
    while it writes variable-length strings, so an ENOSPC there must not happen."""
    need = FREE_SPACE_FACTOR * initial_size_estimate(layout)
    free = shutil.disk_usage(path.parent).free
    if free < need:
        reason = os_reason(OSError(errno.ENOSPC, "No space left on device"))
        raise StoreWriteError(path, f"cannot create the store: {reason}: about {need} bytes needed, {free} free")


class StoreWriter:
    """Writes one store; use ``create``, ``open`` or ``open_or_create``, and close (or use ``with``).

    One thread writes (the engine's); readers may be anywhere, this process included.
    """

    def __init__(self, path: Path, layout: StoreLayout, lock: WriterLock, *, recovered: bool) -> None:
        """Open the prepared file in SWMR-write mode; call with ``registry.LOCK`` held."""
        self.path = path
        self.layout = layout
        self.recovered = recovered  # True when open() rebuilt a file whose writer had died
        self.repairs: list[str] = []  # what open() reset because its data was missing
        self._lock = lock
        self._error: StoreWriteError | None = None
        with _translated(path, "open the store for writing"):
            self._space_fd = os.open(path, os.O_RDWR)  # for reserving disk space, see _reserve
            try:
                self._file: h5py.File | None = h5io.open_swmr_writer(path)
            except BaseException:
                os.close(self._space_fd)
                raise
        rows = self._file[STAGES_PATH][()]
        self._records = {record.key: record for record in map(stages.decode, rows)}
        self._row_of = {key: index for index, key in enumerate(self._records)}
        self._clocks: dict[str, stages.StageClock] = {}
        self._chunk_writer: ChunkWriter | None = None
        self._metrics = JsonLog(self._file, "metrics")
        self._summary = JsonLog(self._file, "summary")

    # ----------------------------------------------------------------- opening
    @classmethod
    def create(cls, path: str | Path, layout: StoreLayout) -> StoreWriter:
        """Create a new store at ``path`` (replacing any file there) atomically, then open it for writing."""
        path = Path(path)
        validate_layout(layout)
        lock = WriterLock(path)
        lock.acquire()
        try:
            with registry.LOCK:
                registry.detach_readers(path)
                tmp = path.with_name(path.name + TMP_SUFFIX)
                _check_free_space(path, layout)
                with _translated(path, "create the store"):
                    try:
                        with h5io.create_file(tmp) as file:
                            write_new_store(file, layout)
                        h5io.replace_atomically(tmp, path)
                    finally:
                        tmp.unlink(missing_ok=True)
                return cls(path, layout, lock, recovered=False)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def open(cls, path: str | Path, layout: StoreLayout) -> StoreWriter:
        """Resume the store at ``path``; StoreMismatch when it belongs to another run, StoreDamaged when unreadable."""
        path = Path(path)
        validate_layout(layout)
        lock = WriterLock(path)
        lock.acquire()
        try:
            with registry.LOCK:
                registry.detach_readers(path)
                if not path.exists():
                    raise StoreNotFound(path, "no such file")
                recovered = _recover_if_writer_died(path)
                file, stored = open_validated(path, writing=True)
                file.close()
                difference = first_difference(stored, layout)
                if difference:
                    raise StoreMismatch(path, f"the store was made for another run: {difference}")
                # The store's own tiles, whatever this run's memory would have chosen.
                layout = dataclasses.replace(layout, query_tile=stored.query_tile)
                writer = cls(path, layout, lock, recovered=recovered)
        except BaseException:
            lock.release()
            raise
        try:
            writer._repair()
        except BaseException:
            writer.close()
            raise
        return writer

    @classmethod
    def open_or_create(cls, path: str | Path, layout: StoreLayout) -> StoreWriter:
        """Resume the store at ``path`` if there is one, else create it."""
        return cls.open(path, layout) if Path(path).exists() else cls.create(path, layout)

    def _repair(self) -> None:
        """Undo markers whose data is missing and fail stages left running by a dead writer."""
        lost = self.completed_tiles() & ~integrity.written_tiles(self._file, self.layout)
        if lost.any():
            with self._writing("reset score tiles"):
                blocks = np.flatnonzero(lost.any(axis=0))
                for block in blocks:
                    self._file[COMPLETED_PATH][block] = 0
                    if self.layout.n_tiles > 1:
                        kept = self._file[TILES_PATH][:, block].astype(bool) & ~lost[:, block]
                        self._file[TILES_PATH][:, block] = kept.astype(np.uint8)
                self._file.flush()
            self.repairs.append(f"score blocks {blocks.tolist()} were marked complete without data; reset")
        completed = self.completed_blocks()
        for key, record in list(self._records.items()):
            if record.status == STATUS_RUNNING:
                self.set_stage(key, STATUS_FAILED, message=INTERRUPTED_MESSAGE)
                self.repairs.append(f"stage {key}: {INTERRUPTED_MESSAGE}")
            elif record.status == STATUS_DONE:
                missing = integrity.missing_data(self._file, self.layout, key, completed)
                if missing:
                    self.set_stage(key, STATUS_PENDING, message=f"reset on resume: {missing}")
                    self.repairs.append(f"stage {key} was done but {missing}; reset to pending")

    # ----------------------------------------------------------------- writing
    def _open_file(self) -> h5py.File:
        if self._file is None:
            raise ValueError(f"{self.path}: the store writer is closed")
        return self._file

    def _reserve(self, file: h5py.File, nbytes: int) -> None:
        """Allocate disk space for the next write before HDF5 makes it.

        A full disk (or a file-size limit) then fails here, while the file is still
        as consistent as after the last flush; if HDF5's own write failed instead,
        it would leave a file shorter than its recorded end, which readers must
        refuse as truncated.
        """
        target = file.id.get_filesize() + nbytes + RESERVE_SLACK_BYTES
        size = os.fstat(self._space_fd).st_size
        if size < target:
            try:
                os.posix_fallocate(self._space_fd, size, target - size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # file systems that cannot reserve
                    raise

    @contextmanager
    def _writing(self, action: str, nbytes: int = 0) -> Iterator[h5py.File]:
        """Run one write: reserve ``nbytes`` (plus slack), translate OS errors, remember the first failure."""
        file = self._open_file()
        if self._error is not None:
            raise StoreWriteError(self.path, f"cannot {action}: an earlier write failed ({self._error.reason})")
        try:
            with _translated(self.path, action):
                self._reserve(file, nbytes)
                yield file
        except StoreWriteError as exc:
            self._error = exc
            raise

    def flush(self) -> None:
        """Push everything written to the operating system, where readers and a later resume see it."""
        with self._writing("flush") as file:
            file.flush()

    def write_predictions(self, split: str, prediction: np.ndarray, probabilities: np.ndarray) -> None:
        n = len(self.layout.split(split))
        prediction = _as_array(prediction, np.int64, (n,), f"{split} prediction")
        probabilities = _as_array(
            probabilities, np.float32, (n, len(self.layout.label_names)), f"{split} probabilities"
        )
        with self._writing(f"write the {split} predictions", prediction.nbytes + probabilities.nbytes) as file:
            file[examples_path(split, "prediction")][...] = prediction
            file[examples_path(split, "probabilities")][...] = probabilities
            file.flush()

    def write_completion_predictions(
        self,
        split: str,
        completion_loss: np.ndarray,
        token_losses: np.ndarray | None = None,
        generated: list[str] | None = None,
        exact_match: np.ndarray | None = None,
    ) -> None:
        """A causal LM's predictions: every example's summed completion loss; for queries also the loss of
        each token (aligned with ``token_ids``, NaN outside the completion), the greedy completion, and
        whether it reproduces the reference (1/0, in the ``prediction`` column)."""
        if not self.layout.is_causal_lm:
            raise ValueError("completion predictions belong to a causal-LM store")
        table = self.layout.split(split)
        n = len(table)
        arrays = {"completion_loss": _as_array(completion_loss, np.float32, (n,), f"{split} completion loss")}
        if split == "test":
            if token_losses is None or generated is None or exact_match is None:
                raise ValueError("a query's predictions need its token losses, greedy completion and exact match")
            shape = table.completions.token_ids.shape
            arrays["token_losses"] = _as_array(token_losses, np.float32, shape, "token losses")
            arrays["generated"] = np.array(
                [fit_utf8(text, GENERATED_BYTES) for text in generated], dtype=f"S{GENERATED_BYTES}"
            )
            arrays["prediction"] = _as_array(exact_match, np.int64, (n,), "exact match")
        nbytes = sum(array.nbytes for array in arrays.values())
        with self._writing(f"write the {split} completion predictions", nbytes) as file:
            for column, array in arrays.items():
                file[examples_path(split, column)][...] = array
            file.flush()

    def write_metrics(self, metrics: dict) -> None:
        """Store the evaluation metrics (accuracy, F1, confusion matrix...) as JSON."""
        with self._writing("write the metrics") as file:
            self._metrics.append(metrics, file.flush)

    def write_summary(self, key: str, value: dict) -> None:
        """Set one entry of the free-form JSON summary (timings, notes), keeping the others."""
        with self._writing(f"write summary {key!r}") as file:
            document = self._summary.latest() or {}
            document[key] = value
            self._summary.append(document, file.flush)

    def _check_factor_target(self, variant: str, layer_index: int, name: str | None = None) -> None:
        if variant not in self.layout.factor_variants:
            raise ValueError(
                f"variant {variant!r} has no factors of its own; factor variants: {self.layout.factor_variants}"
            )
        self.layout.check_layer_index(layer_index)
        if name is not None and name not in FACTOR_NAMES:
            raise ValueError(f"unknown factor {name!r}; factors are {FACTOR_NAMES}")

    def write_factor(self, variant: str, layer_index: int, name: str, array: np.ndarray) -> None:
        self._check_factor_target(variant, layer_index, name)
        shape = factor_shape(self.layout.layers[layer_index], name)
        array = _as_array(array, self.layout.factor_dtype, shape, f"factor {name} of layer {layer_index}")
        with self._writing(f"write factor {name} of layer {layer_index}", array.nbytes) as file:
            file[factor_path(variant, layer_index, name)][...] = array
            file.flush()

    def write_factor_counts(self, variant: str, layer_index: int, tokens: int, examples: int) -> None:
        """Record how many tokens and examples the covariances of one layer averaged over."""
        self._check_factor_target(variant, layer_index)
        counts = _as_array([tokens, examples], np.int64, (len(COUNT_COLUMNS),), "factor counts")
        with self._writing(f"write the factor counts of layer {layer_index}") as file:
            file[counts_path(variant)][layer_index] = counts
            file.flush()

    def read_factor(self, variant: str, layer_index: int, name: str) -> np.ndarray:
        """A factor as written: what a resumed run continues from (a stage's final values only)."""
        self._check_factor_target(variant, layer_index, name)
        with _translated(self.path, f"read factor {name} of layer {layer_index}"):
            return self._open_file()[factor_path(variant, layer_index, name)][()]

    def read_factor_counts(self, variant: str, layer_index: int) -> dict[str, int]:
        """The token and example counts written with the covariance sums of one layer (-1 until written)."""
        self._check_factor_target(variant, layer_index)
        with _translated(self.path, f"read the factor counts of layer {layer_index}"):
            counts = self._open_file()[counts_path(variant)][layer_index]
        return dict(zip(COUNT_COLUMNS, (int(count) for count in counts), strict=True))

    def stages(self) -> dict[str, StageRecord]:
        """Every stage record, by key."""
        return dict(self._records)

    def stage(self, key: str) -> StageRecord:
        if key not in self._records:
            raise KeyError(f"unknown stage key {key!r}; keys are {list(self._records)}")
        return self._records[key]

    def set_stage(
        self,
        key: str,
        status: str,
        *,
        done: int | None = None,
        total: int | None = None,
        unit: str | None = None,
        message: str | None = None,
    ) -> StageRecord:
        """Update a stage record (timestamps and elapsed time are kept here: see ``stages.transition``)."""
        record, clock = stages.transition(
            self.stage(key), status, self._clocks.get(key), done=done, total=total, unit=unit, message=message
        )
        with self._writing(f"record stage {key}") as file:
            file[STAGES_PATH][self._row_of[key]] = stages.encode(record)
            file.flush()
        self._records[key] = record
        if clock is None:
            self._clocks.pop(key, None)
        else:
            self._clocks[key] = clock
        return record

    def _score_keys(self) -> set[tuple[str, int]]:
        return {(variant, k) for variant in self.layout.variants for k in range(len(self.layout.regularizations))}

    def write_score_block(
        self,
        block_index: int,
        *,
        total: ScoreArrays,
        layers: ScoreArrays,
        train_self: ScoreArrays | None,
        tiles: tuple[int, int] | None = None,
    ) -> None:
        """Write the scores of train columns [block_index*score_block, +w) and the test rows of query
        tiles [first, stop) (default: every tile) for every (variant, λ index).

        ``train_self``, the block's training self-influence, comes with the first tile (it does not
        depend on the queries) and only then. A tile is marked complete only after its data is
        flushed, and the block once all its tiles are, so no reader (and no resume) ever takes a
        tile with missing data for complete.
        """
        first_tile, stop_tile = tiles if tiles is not None else (0, self.layout.n_tiles)
        row_start, row_stop = self.layout.tile_rows_of(first_tile, stop_tile)
        start, stop = self.layout.block_columns(block_index)
        rows, width, n_layers = row_stop - row_start, stop - start, len(self.layout.layers)
        if (train_self is not None) != (first_tile == 0):
            raise ValueError("train_self comes with the first tile of a block, and only with it")
        keys = self._score_keys()
        shapes = {"total": (rows, width), "layers": (n_layers, rows, width), "train_self": (width,)}
        origins = {"total": (row_start, start), "layers": (0, row_start, start), "train_self": (start,)}
        arrays = {"total": total, "layers": layers, "train_self": train_self or {}}
        checked: dict[tuple[str, int, str], np.ndarray] = {}
        for name, mapping in arrays.items():
            if name == "train_self" and train_self is None:
                continue
            if set(mapping) != keys:
                raise ValueError(f"{name}: keys {sorted(mapping)}, expected every (variant, λ index): {sorted(keys)}")
            for (variant, k), value in mapping.items():
                checked[variant, k, name] = _as_array(value, np.float32, shapes[name], f"{name}[{variant}, {k}]")
        file = self._open_file()
        if self._chunk_writer is None:
            self._chunk_writer = ChunkWriter()
        items = [
            (file[score_path(variant, k, name)], array, origins[name]) for (variant, k, name), array in checked.items()
        ]
        chunks = self._chunk_writer.encode(items)
        with self._writing(f"write score block {block_index}", sum(len(data) for _, _, data in chunks)) as file:
            self._chunk_writer.write(chunks)
            file.flush()
            if self.layout.n_tiles > 1:
                file[TILES_PATH][first_tile:stop_tile, block_index] = 1
                file.flush()
                if not file[TILES_PATH][:, block_index].all():
                    return
            file[COMPLETED_PATH][block_index] = 1
            file.flush()

    def write_test_self(self, variant: str, reg_index: int, values: np.ndarray) -> None:
        self.layout.check_variant(variant)
        self.layout.check_reg_index(reg_index)
        values = _as_array(values, np.float32, (self.layout.n_test,), "test self-influence")
        with self._writing(f"write the test self-influence of {variant}, λ index {reg_index}", values.nbytes) as file:
            file[score_path(variant, reg_index, "test_self")][...] = values
            file.flush()

    def completed_blocks(self) -> np.ndarray:
        """Per score block, whether it is complete (every tile, for every variant and λ)."""
        with _translated(self.path, "read the completion mask"):
            return self._open_file()[COMPLETED_PATH][()].astype(bool)

    def completed_tiles(self) -> np.ndarray:
        """(tiles, blocks): whether each query tile of each score block is written."""
        with _translated(self.path, "read the tile completion mask"):
            return integrity.completed_tiles(self._open_file().__getitem__, self.layout)

    # ----------------------------------------------------------------- closing
    def close(self) -> None:
        """Close the file (clearing its writer flags) and release the lock; safe to call twice."""
        if self._file is None:
            return
        if self._chunk_writer is not None:
            self._chunk_writer.close()
        try:
            with registry.LOCK:
                registry.detach_readers(self.path)
                file, self._file = self._file, None
                with _translated(self.path, "close the store"):
                    os.close(self._space_fd)
                    file.close()
                    h5io.release_reserve(self.path)
                    h5io.fsync_file(self.path)
        except StoreWriteError:
            if self._error is None:
                raise  # the first failure is news; after an earlier one, closing is best effort
        finally:
            self._lock.release()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
