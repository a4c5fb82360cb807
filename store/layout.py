"""What a store holds, independent of HDF5: the writer's request and the reader's view.

``StoreLayout`` is both what the engine asks ``StoreWriter.create``/``open`` for and
what ``read_layout`` reconstructs from a file, so that resuming compares like with
like (``first_difference``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from job.options import TASK_CAUSAL_LM, TASK_CLASSIFICATION, TASKS

VARIANT_CLEAN = "clean"
VARIANT_CORRUPTED = "corrupted"
VARIANTS = (VARIANT_CLEAN, VARIANT_CORRUPTED)
LAYER_KINDS = ("linear", "conv1d")
FACTOR_DTYPES = ("float32", "float64")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class CompletionTable:
    """A causal LM's examples: the prompt and completion texts, and the tokens the model read.

    ``corrupted_completion`` is what the corrupted variant puts in place of ``completion``
    (the same for test examples); ``token_ids`` are right-padded with -1, and
    ``completion_mask`` marks the tokens whose prediction enters the loss.
    """

    prompt: list[str]
    completion: list[str]
    corrupted_completion: list[str]
    token_ids: np.ndarray  # (n, sequence_length) int32
    completion_mask: np.ndarray  # (n, sequence_length) uint8

    @property
    def sequence_length(self) -> int:
        return int(self.token_ids.shape[1])


@dataclass(frozen=True)
class ExampleTable:
    """The examples of one split, in the order of the score matrices' axes.

    For a classifier ``label`` is the class. For a causal LM it is the example's own index
    (its own completion) and ``corrupted_label`` the index of the training example whose
    completion the corrupted variant gives it, so that "corrupted" reads the same for both
    tasks: ``label != corrupted_label``; the texts are in ``completions``.
    """

    text: list[str]
    label: np.ndarray
    dataset_index: np.ndarray
    corrupted_label: np.ndarray
    completions: CompletionTable | None = None

    def __len__(self) -> int:
        return len(self.text)


@dataclass(frozen=True)
class LayerInfo:
    """One tracked layer: weight out_features × in_features, plus a bias column when has_bias."""

    name: str
    in_features: int
    out_features: int
    has_bias: bool
    kind: str

    @property
    def augmented_in(self) -> int:
        """Width of the activation vector ā (a 1 appended for the bias)."""
        return self.in_features + (1 if self.has_bias else 0)


@dataclass(frozen=True)
class StoreLayout:
    """Everything fixed when a store is created; see docs/store-format.md."""

    config: dict
    library_versions: dict[str, str]
    model_fingerprint: str
    data_fingerprint: str
    label_names: list[str]
    layers: list[LayerInfo]
    train: ExampleTable
    test: ExampleTable
    variants: list[str]
    factor_variants: list[str]
    regularizations: list[float]
    main_regularization: float
    factor_dtype: str
    score_block: int
    task: str = TASK_CLASSIFICATION
    # Test rows per score tile, the unit query chunks are made of and resumed by (a chunk is whole
    # tiles); None: the whole test set is one tile, as in stores before format 1.3. It follows the
    # memory of the run that created the store, so it is not compared on resume.
    query_tile: int | None = None

    @property
    def is_causal_lm(self) -> bool:
        return self.task == TASK_CAUSAL_LM

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def n_test(self) -> int:
        return len(self.test)

    @property
    def n_blocks(self) -> int:
        """Number of score blocks (the last one may be narrower than score_block)."""
        return -(-self.n_train // self.score_block)

    @property
    def main_regularization_index(self) -> int:
        return self.regularizations.index(self.main_regularization)

    def split(self, name: str) -> ExampleTable:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {name!r}")
        return self.train if name == "train" else self.test

    @property
    def tile_rows(self) -> int:
        return min(self.n_test, self.query_tile) if self.query_tile else self.n_test

    @property
    def n_tiles(self) -> int:
        """Number of query tiles (the last one may hold fewer than tile_rows test rows)."""
        return -(-self.n_test // self.tile_rows)

    def tile_rows_of(self, first_tile: int, stop_tile: int) -> tuple[int, int]:
        """The test rows [start, stop) that tiles [first_tile, stop_tile) cover."""
        if not 0 <= first_tile < stop_tile <= self.n_tiles:
            raise IndexError(f"tiles {first_tile}..{stop_tile} outside 0..{self.n_tiles}")
        return first_tile * self.tile_rows, min(stop_tile * self.tile_rows, self.n_test)

    def block_columns(self, block_index: int) -> tuple[int, int]:
        """The train columns [start, stop) that block ``block_index`` covers."""
        if not 0 <= block_index < self.n_blocks:
            raise IndexError(f"block index {block_index} outside 0..{self.n_blocks - 1}")
        start = block_index * self.score_block
        return start, min(start + self.score_block, self.n_train)

    def factor_variant_of(self, variant: str) -> str:
        """The variant whose factors ``variant``'s scores use (its own when refitted, else clean's)."""
        self.check_variant(variant)
        return variant if variant in self.factor_variants else VARIANT_CLEAN

    def check_variant(self, variant: str) -> None:
        if variant not in self.variants:
            raise ValueError(f"variant must be one of {self.variants}, not {variant!r}")

    def check_reg_index(self, reg_index: int) -> None:
        if not 0 <= reg_index < len(self.regularizations):
            raise IndexError(f"regularization index {reg_index} outside 0..{len(self.regularizations) - 1}")

    def check_layer_index(self, layer_index: int) -> None:
        if not 0 <= layer_index < len(self.layers):
            raise IndexError(f"layer index {layer_index} outside 0..{len(self.layers) - 1}")


def normalise_json(value: Any) -> Any:
    """``value`` as it comes back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(value, sort_keys=True))


def validate_layout(layout: StoreLayout) -> None:
    """Raise ValueError when ``layout`` cannot describe a store (a programming error of the caller)."""
    problems: list[str] = []
    if not layout.layers:
        problems.append("no layers")
    for layer in layout.layers:
        if layer.kind not in LAYER_KINDS:
            problems.append(f"layer {layer.name!r}: kind {layer.kind!r} not in {LAYER_KINDS}")
        if layer.in_features < 1 or layer.out_features < 1:
            problems.append(f"layer {layer.name!r}: features must be positive")
    if len({layer.name for layer in layout.layers}) != len(layout.layers):
        problems.append("layer names are not unique")
    for name in SPLITS:
        table = layout.split(name)
        if len(table) < 1:
            problems.append(f"{name}: no examples")
        for column in ("label", "dataset_index", "corrupted_label"):
            if np.shape(getattr(table, column)) != (len(table),):
                problems.append(f"{name}.{column}: shape {np.shape(getattr(table, column))}, expected ({len(table)},)")
    if not np.array_equal(layout.test.label, layout.test.corrupted_label):
        problems.append("test.corrupted_label must equal test.label")
    if list(layout.variants) not in ([VARIANT_CLEAN], list(VARIANTS)):
        problems.append(f"variants must be ['clean'] or ['clean', 'corrupted'], not {layout.variants}")
    if VARIANT_CLEAN not in layout.factor_variants or not set(layout.factor_variants) <= set(layout.variants):
        problems.append(f"factor_variants {layout.factor_variants} must include 'clean' and be among {layout.variants}")
    regs = np.asarray(layout.regularizations, dtype=np.float64)
    if regs.ndim != 1 or regs.size < 1 or np.any(regs <= 0) or np.any(np.diff(regs) <= 0):
        problems.append(f"regularizations must be positive and strictly ascending: {layout.regularizations}")
    if layout.main_regularization not in list(layout.regularizations):
        problems.append(f"main_regularization {layout.main_regularization} is not in regularizations")
    if layout.factor_dtype not in FACTOR_DTYPES:
        problems.append(f"factor_dtype must be one of {FACTOR_DTYPES}")
    if layout.score_block < 1:
        problems.append("score_block must be positive")
    if layout.query_tile is not None and layout.query_tile < 1:
        problems.append("query_tile must be positive")
    if layout.task not in TASKS:
        problems.append(f"task must be one of {TASKS}, not {layout.task!r}")
    elif layout.is_causal_lm:
        for name in SPLITS:
            table = layout.split(name)
            if table.completions is None or len(table.completions.completion) != len(table):
                problems.append(f"{name}: a causal LM's examples need their completions")
            elif table.completions.token_ids.shape != table.completions.completion_mask.shape:
                problems.append(f"{name}: token_ids and completion_mask differ in shape")
    elif len(layout.label_names) < 2:
        problems.append("label_names needs at least two classes")
    if problems:
        raise ValueError("invalid store layout: " + "; ".join(problems))


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _first_json_difference(stored: Any, requested: Any, where: str) -> str | None:
    if isinstance(stored, dict) and isinstance(requested, dict):
        for key in sorted(set(stored) | set(requested)):
            if key not in stored or key not in requested:
                side = "store lacks" if key not in stored else "request lacks"
                return f"{where}[{key!r}]: {side} it"
            found = _first_json_difference(stored[key], requested[key], f"{where}[{key!r}]")
            if found:
                return found
        return None
    if stored != requested:
        return f"{where}: store has {_describe(stored)}, requested {_describe(requested)}"
    return None


def _first_table_difference(stored: ExampleTable, requested: ExampleTable, where: str) -> str | None:
    if len(stored) != len(requested):
        return f"{where}: store has {len(stored)} examples, requested {len(requested)}"
    for column in ("dataset_index", "label", "corrupted_label"):
        a, b = np.asarray(getattr(stored, column)), np.asarray(getattr(requested, column))
        if not np.array_equal(a, b):
            first = int(np.flatnonzero(a != b)[0])
            return f"{where}.{column}[{first}]: store has {a[first]}, requested {b[first]}"
    for i, (a, b) in enumerate(zip(stored.text, requested.text)):
        if a != b:
            return f"{where}.text[{i}] differs"
    if (stored.completions is None) != (requested.completions is None):
        return f"{where}.completions: one side has none"
    if stored.completions is not None:
        for column in ("prompt", "completion", "corrupted_completion"):
            if getattr(stored.completions, column) != getattr(requested.completions, column):
                return f"{where}.{column} differs"
        for column in ("token_ids", "completion_mask"):
            if not np.array_equal(getattr(stored.completions, column), getattr(requested.completions, column)):
                return f"{where}.{column} differs"
    return None


def first_difference(stored: StoreLayout, requested: StoreLayout) -> str | None:
    """Describe the first field in which two layouts differ (None when they match).

    The fingerprints come first, since they summarise the details after them.
    ``library_versions`` is not compared: resuming after a library upgrade is allowed
    (the store keeps the versions of the run that created it); nor is ``query_tile``, which
    follows the memory of the machine that created the store, not the numbers.
    """
    first = ["model_fingerprint", "data_fingerprint"]
    skipped = first + ["library_versions", "query_tile"]
    order = first + [f.name for f in fields(StoreLayout) if f.name not in skipped]
    for name in order:
        a, b = getattr(stored, name), getattr(requested, name)
        if name in ("train", "test"):
            found = _first_table_difference(a, b, name)
        elif name == "config":
            found = _first_json_difference(normalise_json(a), normalise_json(b), name)
        elif name in ("regularizations", "main_regularization"):
            found = None if np.array_equal(np.float64(a), np.float64(b)) else f"{name}: store has {a}, requested {b}"
        else:
            found = (
                None if _as_list(a) == _as_list(b) else f"{name}: store has {_describe(a)}, requested {_describe(b)}"
            )
        if found:
            return found
    return None


def _as_list(value: Any) -> Any:
    """Compare sequences as lists (a tuple and a list with the same items are equal)."""
    return list(value) if isinstance(value, (list, tuple)) else value
