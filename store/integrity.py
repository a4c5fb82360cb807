"""Is the data behind every completion marker really there?

A marker (a completed score block, a stage record saying ``done``) is written only
after its data was flushed, so after a crash the markers can only lag behind the
data. This module checks that on resume, from HDF5's storage metadata alone (no
decompression): a written score chunk is an *allocated* chunk, a written factor an
allocated contiguous dataset. NaN cannot serve as the test, because a real run
with a tiny λ may legitimately produce non-finite scores.
"""

from __future__ import annotations

import h5py
import numpy as np

from job.stages import FACTOR_STAGES, STAGE_PREDICTIONS, STAGE_SCORES
from store.layout import SPLITS, StoreLayout
from store.schema import STAGE_FACTORS, examples_path, factor_path, parse_stage_key, score_path

_BLOCK_SCORES = ("total", "layers", "train_self")


def _chunks_per_block(dataset: h5py.Dataset, width: int, n_blocks: int) -> np.ndarray:
    columns: list[int] = []
    dataset.id.chunk_iter(lambda info: columns.append(info.chunk_offset[-1]))
    return np.bincount(np.asarray(columns, dtype=np.int64) // width, minlength=n_blocks)


def _expected_chunks(dataset: h5py.Dataset) -> int:
    """Chunks of one block column: all chunks except along the train axis."""
    return int(np.prod([-(-size // chunk) for size, chunk in zip(dataset.shape[:-1], dataset.chunks[:-1])]))


def written_blocks(file: h5py.File, layout: StoreLayout) -> np.ndarray:
    """Per score block: whether every chunk of it is allocated in every score dataset."""
    written = np.ones(layout.n_blocks, dtype=bool)
    for variant in layout.variants:
        for k in range(len(layout.regularizations)):
            for name in _BLOCK_SCORES:
                dataset = file[score_path(variant, k, name)]
                width = dataset.chunks[-1]
                written &= _chunks_per_block(dataset, width, layout.n_blocks) == _expected_chunks(dataset)
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
