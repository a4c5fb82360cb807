"""The format's names, shapes and storage choices, in one place.

Writer, reader and recovery all derive the objects of a store from
``dataset_specs(layout)``, so a dataset is declared once; docs/store-format.md
describes the same list for people.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from job.stages import FACTOR_STAGES, STAGE_CORRECTION, STAGE_COVARIANCE, STAGE_EIGEN, STAGES
from store.errors import StoreVersionError
from store.layout import SPLITS, VARIANT_CLEAN, LayerInfo, StoreLayout

FORMAT_NAME = "influence-explorer"
# 1.1: the engine options under config["engine"]; covariances stored as means.
# 1.2: the task (classification or causal LM) and, for causal LMs, the completions and their tokens.
# 1.3: query tiles: the scores of a block are written (and resumed) tile by tile of test rows.
FORMAT_VERSION = "1.3"

STAGE_VARIANT_SEPARATOR = ":"

# Factor datasets by the stage that writes them; these stages have one record per factor variant.
STAGE_FACTORS: dict[str, tuple[str, ...]] = {
    STAGE_COVARIANCE: ("activation_covariance", "gradient_covariance"),
    STAGE_EIGEN: (
        "activation_eigenvectors",
        "activation_eigenvalues",
        "gradient_eigenvectors",
        "gradient_eigenvalues",
    ),
    STAGE_CORRECTION: ("corrected_eigenvalues",),
}
assert tuple(STAGE_FACTORS) == FACTOR_STAGES
FACTOR_NAMES = tuple(name for names in STAGE_FACTORS.values() for name in names)
SCORE_NAMES = ("total", "layers", "train_self", "test_self")
EXAMPLE_COLUMNS = ("text", "label", "corrupted_label", "dataset_index", "prediction", "probabilities")
# A causal LM's examples (format 1.2): written at creation, then its predictions.
COMPLETION_TEXT_COLUMNS = ("prompt", "completion", "corrupted_completion")
COMPLETION_TOKEN_COLUMNS = ("token_ids", "completion_mask")
GENERATED_BYTES = 1024  # the greedy completion of a query, UTF-8, cut at a character boundary
LAYER_COLUMNS = ("name", "kind", "in_features", "out_features", "has_bias")
JSON_SLOTS = ("metrics", "summary")
COUNT_COLUMNS = ("tokens", "examples")

# Root attributes.
ATTR_FORMAT_NAME = "format_name"
ATTR_FORMAT_VERSION = "format_version"
ATTR_CREATED = "created"
ATTR_CONFIG = "config"
ATTR_LIBRARY_VERSIONS = "library_versions"
ATTR_MODEL_FINGERPRINT = "model_fingerprint"
ATTR_DATA_FINGERPRINT = "data_fingerprint"
ATTR_LABEL_NAMES = "label_names"
ATTR_VARIANTS = "variants"
ATTR_FACTOR_VARIANTS = "factor_variants"
ATTR_REGULARIZATIONS = "regularizations"
ATTR_MAIN_REGULARIZATION = "main_regularization"
ATTR_FACTOR_DTYPE = "factor_dtype"
ATTR_SCORE_BLOCK = "score_block"
ATTR_TASK = "task"  # absent before format 1.2: classification
ATTR_QUERY_TILE = "query_tile"  # absent before format 1.3: the whole test set is one tile
ATTR_REGULARIZATION = "regularization"  # on each /scores/{variant}/{k} group

# Storage choices, measured in docs/store-format.md.
SCORE_DTYPE = np.dtype(np.float32)
SCORE_COMPRESSION = "gzip"
SCORE_COMPRESSION_LEVEL = 1
TARGET_CHUNK_BYTES = 16 * 1024
JSON_CHUNK_BYTES = 4096
JSON_ENDS_CHUNK = 64
TEXT_DTYPE = h5py.string_dtype("utf-8")
STAGE_KEY_BYTES, STATUS_BYTES, UNIT_BYTES, MESSAGE_BYTES = 64, 16, 16, 256
STAGE_RECORD_DTYPE = np.dtype(
    [
        ("key", f"S{STAGE_KEY_BYTES}"),
        ("status", f"S{STATUS_BYTES}"),
        ("done", "<i8"),
        ("total", "<i8"),
        ("unit", f"S{UNIT_BYTES}"),
        ("started", "<f8"),
        ("finished", "<f8"),
        ("elapsed", "<f8"),
        ("message", f"S{MESSAGE_BYTES}"),
    ]
)

COMPLETED_PATH = "/scores/completed"  # per block: every tile of it written
TILES_PATH = "/scores/completed_tiles"  # per (tile, block), only in stores of more than one tile
STAGES_PATH = "/stages"


def stage_key(stage: str, variant: str) -> str:
    """The record key of ``stage`` for ``variant``: the bare stage name for the clean variant."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {STAGES}")
    return stage if variant == VARIANT_CLEAN else f"{stage}{STAGE_VARIANT_SEPARATOR}{variant}"


def parse_stage_key(key: str) -> tuple[str, str]:
    """The (stage, variant) of a record key: the inverse of ``stage_key``."""
    stage, _, variant = key.partition(STAGE_VARIANT_SEPARATOR)
    return stage, variant or VARIANT_CLEAN


def stage_keys(layout: StoreLayout) -> list[str]:
    """Every stage record of a store: factor stages once per factor variant, the others once."""
    return [
        stage_key(stage, variant)
        for stage in STAGES
        for variant in (layout.factor_variants if stage in FACTOR_STAGES else [VARIANT_CLEAN])
    ]


def parse_version(path: str | Path, text: str) -> tuple[int, int]:
    try:
        major, minor = (int(part) for part in str(text).split("."))
    except ValueError:
        raise StoreVersionError(path, f"malformed format version {text!r}") from None
    return major, minor


def check_version(path: str | Path, text: str, *, writing: bool) -> tuple[int, int]:
    """Readers accept any minor version of their major; writers only minors they know."""
    major, minor = parse_version(path, text)
    own_major, own_minor = parse_version(path, FORMAT_VERSION)
    if major != own_major:
        raise StoreVersionError(
            path,
            f"format version {text} is too new for this program (it reads {own_major}.x); upgrade influence-explorer",
        )
    if writing and minor > own_minor:
        raise StoreVersionError(
            path, f"format version {text} is newer than {FORMAT_VERSION}; this program cannot resume it"
        )
    return major, minor


def examples_path(split: str, column: str) -> str:
    return f"/examples/{split}/{column}"


def layer_path(column: str) -> str:
    return f"/layers/{column}"


def factor_path(variant: str, layer_index: int, name: str) -> str:
    return f"/factors/{variant}/{layer_index}/{name}"


def counts_path(variant: str) -> str:
    return f"/factors/{variant}/counts"


def score_group(variant: str, reg_index: int) -> str:
    return f"/scores/{variant}/{reg_index}"


def score_path(variant: str, reg_index: int, name: str) -> str:
    return f"{score_group(variant, reg_index)}/{name}"


def json_path(slot: str, part: str) -> str:
    return f"/json/{slot}/{part}"


def factor_shape(layer: LayerInfo, name: str) -> tuple[int, ...]:
    """Shape of factor ``name`` of ``layer``: in' = augmented_in, out = out_features."""
    a, g = layer.augmented_in, layer.out_features
    return {
        "activation_covariance": (a, a),
        "gradient_covariance": (g, g),
        "activation_eigenvectors": (a, a),
        "activation_eigenvalues": (a,),
        "gradient_eigenvectors": (g, g),
        "gradient_eigenvalues": (g,),
        "corrected_eigenvalues": (g, a),
    }[name]


def target_chunk_rows(n_test: int, n_train: int, score_block: int) -> int:
    """Test rows per score chunk for about TARGET_CHUNK_BYTES per chunk, so that one row read stays small."""
    width = min(score_block, n_train)
    return max(1, min(n_test, TARGET_CHUNK_BYTES // (width * SCORE_DTYPE.itemsize)))


def score_chunk_rows(layout: StoreLayout) -> int:
    """Test rows per score chunk: a tile's rows when there are several tiles (each tile is then whole
    chunks, written directly), else the target."""
    if layout.n_tiles > 1:
        return layout.tile_rows
    return target_chunk_rows(layout.n_test, layout.n_train, layout.score_block)


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of a store: created by the writer, checked by readers and on resume."""

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fill: object = None
    chunks: tuple[int, ...] | None = None
    compressed: bool = False
    resizable: bool = False

    def matches(self, dataset: h5py.Dataset) -> bool:
        """Whether an existing dataset has this spec's dtype and shape (any length when resizable)."""
        if h5py.check_string_dtype(self.dtype) is not None:
            dtype_ok = h5py.check_string_dtype(dataset.dtype) is not None
        else:
            dtype_ok = dataset.dtype == self.dtype
        shape_ok = dataset.ndim == len(self.shape) if self.resizable else dataset.shape == self.shape
        return dtype_ok and shape_ok


def _completion_specs(layout: StoreLayout, split: str) -> list[DatasetSpec]:
    """A causal LM's completions and tokens (known at creation), and what the predictions stage writes:
    each example's completion loss and, for queries, the loss of every token, the greedy completion,
    and whether it reproduces the reference (the ``prediction`` column: 1, 0, -1 until written)."""
    table = layout.split(split)
    n, length = len(table), table.completions.sequence_length
    specs = [DatasetSpec(examples_path(split, column), (n,), TEXT_DTYPE) for column in COMPLETION_TEXT_COLUMNS]
    specs += [
        DatasetSpec(examples_path(split, "token_ids"), (n, length), np.dtype(np.int32)),
        DatasetSpec(examples_path(split, "completion_mask"), (n, length), np.dtype(np.uint8)),
        DatasetSpec(examples_path(split, "completion_loss"), (n,), np.dtype(np.float32), fill=np.nan),
    ]
    if split == "test":
        specs += [
            DatasetSpec(examples_path(split, "token_losses"), (n, length), np.dtype(np.float32), fill=np.nan),
            DatasetSpec(examples_path(split, "generated"), (n,), np.dtype(f"S{GENERATED_BYTES}")),
        ]
    return specs


def _example_specs(layout: StoreLayout) -> list[DatasetSpec]:
    specs = []
    for split in SPLITS:
        n = len(layout.split(split))
        if layout.is_causal_lm:
            specs += _completion_specs(layout, split)
        specs += [
            DatasetSpec(examples_path(split, "text"), (n,), TEXT_DTYPE),
            DatasetSpec(examples_path(split, "label"), (n,), np.dtype(np.int64)),
            DatasetSpec(examples_path(split, "corrupted_label"), (n,), np.dtype(np.int64)),
            DatasetSpec(examples_path(split, "dataset_index"), (n,), np.dtype(np.int64)),
            DatasetSpec(examples_path(split, "prediction"), (n,), np.dtype(np.int64), fill=-1),
            DatasetSpec(
                examples_path(split, "probabilities"), (n, len(layout.label_names)), np.dtype(np.float32), fill=np.nan
            ),
        ]
    return specs


def _layer_specs(layout: StoreLayout) -> list[DatasetSpec]:
    n = len(layout.layers)
    dtypes = {"name": TEXT_DTYPE, "kind": TEXT_DTYPE, "has_bias": np.dtype(bool)}
    return [DatasetSpec(layer_path(column), (n,), dtypes.get(column, np.dtype(np.int64))) for column in LAYER_COLUMNS]


def _factor_specs(layout: StoreLayout) -> list[DatasetSpec]:
    dtype = np.dtype(layout.factor_dtype)
    specs = []
    for variant in layout.factor_variants:
        specs.append(
            DatasetSpec(counts_path(variant), (len(layout.layers), len(COUNT_COLUMNS)), np.dtype(np.int64), fill=-1)
        )
        for index, layer in enumerate(layout.layers):
            specs += [
                DatasetSpec(factor_path(variant, index, name), factor_shape(layer, name), dtype, fill=np.nan)
                for name in FACTOR_NAMES
            ]
    return specs


def _score_specs(layout: StoreLayout) -> list[DatasetSpec]:
    rows, width = score_chunk_rows(layout), min(layout.score_block, layout.n_train)
    n_layers, n_test, n_train = len(layout.layers), layout.n_test, layout.n_train
    specs = [DatasetSpec(COMPLETED_PATH, (layout.n_blocks,), np.dtype(np.uint8), fill=0)]
    if layout.n_tiles > 1:
        specs.append(DatasetSpec(TILES_PATH, (layout.n_tiles, layout.n_blocks), np.dtype(np.uint8), fill=0))
    for variant in layout.variants:
        for k in range(len(layout.regularizations)):
            specs += [
                DatasetSpec(
                    score_path(variant, k, "total"), (n_test, n_train), SCORE_DTYPE, np.nan, (rows, width), True
                ),
                DatasetSpec(
                    score_path(variant, k, "layers"),
                    (n_layers, n_test, n_train),
                    SCORE_DTYPE,
                    np.nan,
                    (1, rows, width),
                    True,
                ),
                DatasetSpec(score_path(variant, k, "train_self"), (n_train,), SCORE_DTYPE, np.nan, (width,), True),
                DatasetSpec(score_path(variant, k, "test_self"), (n_test,), SCORE_DTYPE, np.nan),
            ]
    return specs


def _bookkeeping_specs(layout: StoreLayout) -> list[DatasetSpec]:
    specs = [DatasetSpec(STAGES_PATH, (len(stage_keys(layout)),), STAGE_RECORD_DTYPE)]
    for slot in JSON_SLOTS:
        specs += [
            DatasetSpec(json_path(slot, "bytes"), (0,), np.dtype(np.uint8), 0, (JSON_CHUNK_BYTES,), resizable=True),
            DatasetSpec(json_path(slot, "ends"), (0,), np.dtype(np.int64), 0, (JSON_ENDS_CHUNK,), resizable=True),
        ]
    return specs


def dataset_specs(layout: StoreLayout) -> list[DatasetSpec]:
    """Every dataset of a store with this layout."""
    return (
        _example_specs(layout)
        + _layer_specs(layout)
        + _factor_specs(layout)
        + _score_specs(layout)
        + _bookkeeping_specs(layout)
    )
