"""Is the data behind every completion marker really there?

A marker (a completed score block, a stage record saying ``done``) is written only
after its data was flushed, so after a crash the markers can only lag behind the
data. This module checks that on resume, from HDF5's storage metadata alone (no
decompression): a written score chunk is an *allocated* chunk, a written factor an
allocated contiguous dataset. NaN cannot serve as the test, because a real run
with a tiny λ may legitimately produce non-finite scores.
"""

from __future__ import annotations

from typing import Callable

import h5py
import numpy as np

from job.stages import FACTOR_STAGES, STAGE_PREDICTIONS, STAGE_SCORES
from store.layout import SPLITS, StoreLayout
from store.schema import (
    COMPLETED_PATH,
    STAGE_FACTORS,
    TILES_PATH,
    examples_path,
    factor_path,
    parse_stage_key,
    score_path,
)

_BLOCK_SCORES = ("total", "layers", "train_self")


def completed_tiles(dataset: Callable[[str], h5py.Dataset], layout: StoreLayout) -> np.ndarray:
    """(tiles, blocks): the tile markers, or the block markers where the store is one tile; ``dataset``
    opens a path (a reader's refreshes SWMR datasets)."""
    if layout.n_tiles > 1:
        return dataset(TILES_PATH)[()].astype(bool)
    return dataset(COMPLETED_PATH)[()].astype(bool)[np.newaxis]


def _tile_of_row(layout: StoreLayout) -> np.ndarray:
    return np.arange(layout.n_test) // layout.tile_rows


def _chunks_per_tile(dataset: h5py.Dataset, layout: StoreLayout) -> np.ndarray:
    """(tiles, blocks): the allocated chunks of ``dataset`` in each; a dataset without a test axis
    (the training self-influence) counts in tile 0, the tile it is written with."""
    offsets: list[tuple[int, ...]] = []
    dataset.id.chunk_iter(lambda info: offsets.append(info.chunk_offset))
    found = np.zeros((layout.n_tiles, layout.n_blocks), dtype=np.int64)
    if offsets:
        at = np.asarray(offsets, dtype=np.int64)
        tiles = _tile_of_row(layout)[at[:, -2]] if dataset.ndim > 1 else np.zeros(len(at), dtype=np.int64)
        np.add.at(found, (tiles, at[:, -1] // dataset.chunks[-1]), 1)
    return found


def _expected_per_tile(dataset: h5py.Dataset, layout: StoreLayout) -> np.ndarray:
    """(tiles, 1): the chunks of one tile of one block column; tile 0 alone for a dataset without a test axis."""
    if dataset.ndim == 1:
        return (np.arange(layout.n_tiles) == 0).astype(np.int64)[:, np.newaxis]
    leading = int(np.prod([-(-size // chunk) for size, chunk in zip(dataset.shape[:-2], dataset.chunks[:-2])]))
    rows = np.bincount(_tile_of_row(layout), minlength=layout.n_tiles)
    return (leading * -(-rows // dataset.chunks[-2]))[:, np.newaxis]


def written_tiles(file: h5py.File, layout: StoreLayout) -> np.ndarray:
    """(tiles, blocks): whether every chunk of each is allocated in every score dataset."""
    written = np.ones((layout.n_tiles, layout.n_blocks), dtype=bool)
    for variant in layout.variants:
        for k in range(len(layout.regularizations)):
            for name in _BLOCK_SCORES:
                dataset = file[score_path(variant, k, name)]
                written &= _chunks_per_tile(dataset, layout) == _expected_per_tile(dataset, layout)
    return written


def is_written(dataset: h5py.Dataset) -> bool:
    """Whether a contiguous dataset has storage (it gets it on its first write)."""
    return dataset.id.get_offset() is not None


def missing_data(file: h5py.File, layout: StoreLayout, key: str, completed: np.ndarray) -> str | None:
    """What a ``done`` record of stage ``key`` lacks, or None when its data is all there."""
    stage, variant = parse_stage_key(key)
    if stage in FACTOR_STAGES:
        for index in range(len(layout.layers)):
            for name in STAGE_FACTORS[stage]:
                if not is_written(file[factor_path(variant, index, name)]):
                    return f"{factor_path(variant, index, name)} was never written"
    elif stage == STAGE_PREDICTIONS:
        for split in SPLITS:
            lm = ("completion_loss",) + (("token_losses", "generated", "prediction") if split == "test" else ())
            columns = lm if layout.is_causal_lm else ("prediction", "probabilities")
            for column in columns:
                if not is_written(file[examples_path(split, column)]):
                    return f"{examples_path(split, column)} was never written"
    elif stage == STAGE_SCORES:
        if not completed.all():
            return f"{int((~completed).sum())} score blocks are not complete"
        for variant in layout.variants:
            for k in range(len(layout.regularizations)):
                if not is_written(file[score_path(variant, k, "test_self")]):
                    return f"{score_path(variant, k, 'test_self')} was never written"
    return None
