"""Writing a new store's objects and reading a store's layout back, with the checks every opener runs."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from job.options import TASK_CAUSAL_LM, TASK_CLASSIFICATION
from store import h5io, stages
from store.errors import StoreDamaged, StoreError, StoreNotFound, one_line, os_reason
from store.layout import SPLITS, CompletionTable, ExampleTable, LayerInfo, StoreLayout
from store.schema import (
    ATTR_CONFIG,
    ATTR_CREATED,
    ATTR_DATA_FINGERPRINT,
    ATTR_FACTOR_DTYPE,
    ATTR_FACTOR_VARIANTS,
    ATTR_FORMAT_NAME,
    ATTR_FORMAT_VERSION,
    ATTR_LABEL_NAMES,
    ATTR_LIBRARY_VERSIONS,
    ATTR_MAIN_REGULARIZATION,
    ATTR_MODEL_FINGERPRINT,
    ATTR_QUERY_TILE,
    ATTR_REGULARIZATION,
    ATTR_REGULARIZATIONS,
    ATTR_SCORE_BLOCK,
    ATTR_TASK,
    ATTR_VARIANTS,
    COMPLETED_PATH,
    COMPLETION_TEXT_COLUMNS,
    COMPLETION_TOKEN_COLUMNS,
    FORMAT_NAME,
    FORMAT_VERSION,
    LAYER_COLUMNS,
    SCORE_COMPRESSION,
    SCORE_COMPRESSION_LEVEL,
    STAGES_PATH,
    TILES_PATH,
    DatasetSpec,
    check_version,
    dataset_specs,
    examples_path,
    layer_path,
    score_group,
    stage_keys,
)

VLEN_OVERHEAD_BYTES = 32  # global-heap object header and reference per string
METADATA_ALLOWANCE_BYTES = 256 * 1024
OPEN_ATTEMPTS = 20
OPEN_RETRY_SECONDS = 0.05
_TABLE_COLUMNS = ("label", "dataset_index", "corrupted_label")


def _create_dataset(file: h5py.File, spec: DatasetSpec) -> None:
    options: dict = {"shape": spec.shape, "dtype": spec.dtype}
    if spec.fill is not None:
        options["fillvalue"] = spec.fill
    if spec.chunks is not None:
        options["chunks"] = spec.chunks
    if spec.resizable:
        options["maxshape"] = (None,) * len(spec.shape)
    if spec.compressed:
        options.update(compression=SCORE_COMPRESSION, compression_opts=SCORE_COMPRESSION_LEVEL, shuffle=True)
    file.create_dataset(spec.path, **options)


def _initial_data(layout: StoreLayout) -> dict[str, object]:
    """Contents known at creation: the examples, the layers and pending stage records."""
    data: dict[str, object] = {}
    for split in SPLITS:
        table = layout.split(split)
        data[examples_path(split, "text")] = np.array(table.text, dtype=object)
        for column in _TABLE_COLUMNS:
            data[examples_path(split, column)] = np.asarray(getattr(table, column), dtype=np.int64)
        if table.completions is not None:
            for column in COMPLETION_TEXT_COLUMNS:
                data[examples_path(split, column)] = np.array(getattr(table.completions, column), dtype=object)
            data[examples_path(split, "token_ids")] = table.completions.token_ids.astype(np.int32)
            data[examples_path(split, "completion_mask")] = table.completions.completion_mask.astype(np.uint8)
    for column in LAYER_COLUMNS:
        values = [getattr(layer, column) for layer in layout.layers]
        data[layer_path(column)] = np.array(values, dtype=object if isinstance(values[0], str) else None)
    data[STAGES_PATH] = np.stack([stages.encode(stages.StageRecord(key=key)) for key in stage_keys(layout)])
    # The completion markers get their storage now, before any SWMR reader can hold them: a first
    # write while a reader in another process has a dataset open leaves that reader unable to refresh it.
    data[COMPLETED_PATH] = np.zeros(layout.n_blocks, dtype=np.uint8)
    if layout.n_tiles > 1:
        data[TILES_PATH] = np.zeros((layout.n_tiles, layout.n_blocks), dtype=np.uint8)
    return data


def initial_size_estimate(layout: StoreLayout) -> int:
    """Bytes a new store takes before any result is written (generously: texts dominate)."""
    n = layout.n_train + layout.n_test
    text = sum(len(t.encode("utf-8")) for split in SPLITS for t in layout.split(split).text)
    completions = 0
    for split in SPLITS:
        table = layout.split(split).completions
        if table is not None:  # the texts again, in three columns, and two token arrays
            completions += 3 * text // 2 + table.token_ids.size * 9 + len(table.prompt) * 3 * VLEN_OVERHEAD_BYTES
    return text + completions + n * (VLEN_OVERHEAD_BYTES + 3 * np.dtype(np.int64).itemsize) + METADATA_ALLOWANCE_BYTES


def write_new_store(file: h5py.File, layout: StoreLayout) -> None:
    """Create every attribute and dataset of a store in an empty file (SWMR cannot create objects later)."""
    attrs = file.attrs
    attrs[ATTR_FORMAT_NAME] = FORMAT_NAME
    attrs[ATTR_FORMAT_VERSION] = FORMAT_VERSION
    attrs[ATTR_CREATED] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    attrs[ATTR_CONFIG] = json.dumps(layout.config, sort_keys=True)
    attrs[ATTR_LIBRARY_VERSIONS] = json.dumps(layout.library_versions, sort_keys=True)
    attrs[ATTR_MODEL_FINGERPRINT] = layout.model_fingerprint
    attrs[ATTR_DATA_FINGERPRINT] = layout.data_fingerprint
    attrs[ATTR_LABEL_NAMES] = list(layout.label_names)
    attrs[ATTR_VARIANTS] = list(layout.variants)
    attrs[ATTR_FACTOR_VARIANTS] = list(layout.factor_variants)
    attrs[ATTR_REGULARIZATIONS] = np.asarray(layout.regularizations, dtype=np.float64)
    attrs[ATTR_MAIN_REGULARIZATION] = np.float64(layout.main_regularization)
    attrs[ATTR_FACTOR_DTYPE] = layout.factor_dtype
    attrs[ATTR_SCORE_BLOCK] = np.int64(layout.score_block)
    attrs[ATTR_TASK] = layout.task
    if layout.query_tile is not None:
        attrs[ATTR_QUERY_TILE] = np.int64(layout.query_tile)
    for spec in dataset_specs(layout):
        _create_dataset(file, spec)
    for path, values in _initial_data(layout).items():
        file[path][...] = values
    for variant in layout.variants:
        for k, value in enumerate(layout.regularizations):
            file[score_group(variant, k)].attrs[ATTR_REGULARIZATION] = np.float64(value)


def _attr(file: h5py.File, path: Path, name: str):
    if name not in file.attrs:
        raise StoreDamaged(path, f"missing root attribute {name!r}")
    return file.attrs[name]


def _dataset(file: h5py.File, path: Path, name: str) -> h5py.Dataset:
    obj = file.get(name)
    if not isinstance(obj, h5py.Dataset):
        raise StoreDamaged(path, f"missing dataset {name}")
    return obj


def _strings(values) -> list[str]:
    return [value.decode("utf-8") if isinstance(value, bytes) else str(value) for value in np.atleast_1d(values)]


def read_table(file: h5py.File, path: Path, split: str, task: str) -> ExampleTable:
    text = _dataset(file, path, examples_path(split, "text")).asstr()[()]
    columns = {column: _dataset(file, path, examples_path(split, column))[()] for column in _TABLE_COLUMNS}
    completions = None
    if task == TASK_CAUSAL_LM:
        texts = {
            column: list(_dataset(file, path, examples_path(split, column)).asstr()[()])
            for column in COMPLETION_TEXT_COLUMNS
        }
        tokens = {column: _dataset(file, path, examples_path(split, column))[()] for column in COMPLETION_TOKEN_COLUMNS}
        completions = CompletionTable(**texts, **tokens)
    return ExampleTable(text=list(text), **columns, completions=completions)


def read_layout(file: h5py.File, path: Path) -> StoreLayout:
    """The layout recorded in an open store."""
    layer_columns = {
        column: _dataset(file, path, layer_path(column)) for column in ("in_features", "out_features", "has_bias")
    }
    names = _strings(_dataset(file, path, layer_path("name")).asstr()[()])
    kinds = _strings(_dataset(file, path, layer_path("kind")).asstr()[()])
    layers = [
        LayerInfo(
            name=names[i],
            in_features=int(layer_columns["in_features"][i]),
            out_features=int(layer_columns["out_features"][i]),
            has_bias=bool(layer_columns["has_bias"][i]),
            kind=kinds[i],
        )
        for i in range(len(names))
    ]
    try:
        config = json.loads(_attr(file, path, ATTR_CONFIG))
        library_versions = json.loads(_attr(file, path, ATTR_LIBRARY_VERSIONS))
    except json.JSONDecodeError as exc:
        raise StoreDamaged(path, f"unreadable JSON attribute: {exc}") from None
    task = str(file.attrs.get(ATTR_TASK, TASK_CLASSIFICATION))
    return StoreLayout(
        config=config,
        library_versions=library_versions,
        model_fingerprint=str(_attr(file, path, ATTR_MODEL_FINGERPRINT)),
        data_fingerprint=str(_attr(file, path, ATTR_DATA_FINGERPRINT)),
        label_names=_strings(_attr(file, path, ATTR_LABEL_NAMES)),
        layers=layers,
        train=read_table(file, path, "train", task),
        test=read_table(file, path, "test", task),
        variants=_strings(_attr(file, path, ATTR_VARIANTS)),
        factor_variants=_strings(_attr(file, path, ATTR_FACTOR_VARIANTS)),
        regularizations=[float(x) for x in np.atleast_1d(_attr(file, path, ATTR_REGULARIZATIONS))],
        main_regularization=float(_attr(file, path, ATTR_MAIN_REGULARIZATION)),
        factor_dtype=str(_attr(file, path, ATTR_FACTOR_DTYPE)),
        score_block=int(_attr(file, path, ATTR_SCORE_BLOCK)),
        task=task,
        query_tile=int(file.attrs[ATTR_QUERY_TILE]) if ATTR_QUERY_TILE in file.attrs else None,
    )


def check_objects(file: h5py.File, path: Path, layout: StoreLayout) -> None:
    """Raise StoreDamaged unless every dataset the layout implies exists with its shape and dtype."""
    for spec in dataset_specs(layout):
        dataset = _dataset(file, path, spec.path)
        if not spec.matches(dataset):
            raise StoreDamaged(
                path, f"{spec.path} is {dataset.dtype} {dataset.shape}, expected {spec.dtype} {spec.shape}"
            )


def _open_reader_file(path: Path) -> h5py.File:
    """Open for reading, retrying briefly (a writer may be opening the file or switching it to SWMR).

    SWMR reading only while a writer has (or had, if it died) the file open: it skips
    HDF5's end-of-file check and retries unreadable metadata for a long time, both
    right for a file being written and wrong for a finished one that was truncated.
    """
    for attempt in range(OPEN_ATTEMPTS):
        if not path.exists():
            raise StoreNotFound(path, "no such file")
        try:
            if not h5io.has_signature(path):
                raise StoreDamaged(path, "not an HDF5 file")
            superblock = h5io.read_superblock(path)
            size = os.path.getsize(path)
        except OSError as exc:
            raise StoreError(path, f"cannot read: {os_reason(exc)}") from None
        being_written = superblock is not None and superblock.writer_flags != 0
        if superblock is not None and not being_written and size < superblock.end_of_allocation:
            raise StoreDamaged(path, f"truncated file: {size} bytes of {superblock.end_of_allocation}")
        try:
            return h5io.open_reader(path, swmr=being_written)
        except OSError as exc:
            if attempt == OPEN_ATTEMPTS - 1:
                raise StoreDamaged(path, f"cannot open: {one_line(str(exc))}") from None
            time.sleep(OPEN_RETRY_SECONDS)
    raise AssertionError("unreachable")


def open_validated(path: Path, *, writing: bool = False) -> tuple[h5py.File, StoreLayout]:
    """Open a store for reading and check format, version and objects; returns the file and its layout."""
    file = _open_reader_file(path)
    try:
        name = file.attrs.get(ATTR_FORMAT_NAME)
        if name != FORMAT_NAME:
            raise StoreDamaged(path, f"not an {FORMAT_NAME} store (format_name is {name!r})")
        check_version(path, str(_attr(file, path, ATTR_FORMAT_VERSION)), writing=writing)
        layout = read_layout(file, path)
        check_objects(file, path, layout)
        return file, layout
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as exc:
        file.close()
        raise StoreDamaged(path, f"unreadable store: {one_line(str(exc))}") from None
    except BaseException:
        file.close()
        raise
