"""Shrinking a test × train matrix to the screen without hiding what matters.

Each cell of the pooled grid keeps the value of largest magnitude in its block (and
where it is), so a single extreme pair is never averaged away, and Enter on a cell
goes to that very pair. Rows are read in batches, so memory stays at a few batches
however large the store; the global extremes are tracked exactly on the way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

READ_ROWS = 32  # test rows per read: small, so a read holds the store's lock only briefly
SCALE_PERCENTILE = 99.0  # of |I| over all pairs: the colour saturates there, so a few extremes do not wash out the rest
SCALE_SAMPLE = 4096  # pairs per read batch that the percentile is estimated from
SCALE_SEED = 0


@dataclass(frozen=True)
class Extreme:
    test_index: int
    train_index: int
    value: float


@dataclass(frozen=True)
class PooledMatrix:
    """The grid a heatmap draws: one signed max-|I| value per block, with its pair and its flags."""

    values: np.ndarray  # (rows, cols); NaN where the whole block is pending
    test_index: np.ndarray  # (rows, cols): the pair behind each value
    train_index: np.ndarray
    invalid: np.ndarray  # (rows, cols): the block holds a NaN/inf the engine wrote
    row_edges: np.ndarray  # test indices: row r covers row_edges[r]..row_edges[r+1]-1
    col_edges: np.ndarray
    maximum: Extreme | None  # the most positive pair of the whole matrix
    minimum: Extreme | None  # the most negative pair
    scale: float  # |I| at which the colour saturates (a percentile over all pairs)
    row_scale: np.ndarray  # (rows,): the largest |I| of each row of cells, for the per-row scale

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape


def bin_width(size: int, bins: int) -> int:
    """Entries per bin so that ``size`` entries fit in at most ``bins`` bins."""
    return max(1, math.ceil(size / max(1, bins)))


def edges(size: int, width: int) -> np.ndarray:
    return np.append(np.arange(0, size, width), size)


def _pool_last_axis(values: np.ndarray, index: np.ndarray, bad: np.ndarray, width: int):
    """Max-|value| pooling of the last axis in groups of ``width``; the last group may be short."""
    *lead, size = values.shape
    groups = math.ceil(size / width)
    pad = groups * width - size
    if pad:
        padding = [(0, 0)] * len(lead) + [(0, pad)]
        values = np.pad(values, padding, constant_values=np.nan)
        index = np.pad(index, padding, constant_values=0)
        bad = np.pad(bad, padding, constant_values=False)
    shape = (*lead, groups, width)
    values, index, bad = values.reshape(shape), index.reshape(shape), bad.reshape(shape)
    magnitude = np.where(np.isfinite(values), np.abs(values), -1.0)
    pick = magnitude.argmax(axis=-1)[..., None]
    pooled = np.take_along_axis(values, pick, -1)[..., 0]
    pooled = np.where(np.take_along_axis(magnitude, pick, -1)[..., 0] < 0, np.nan, pooled)
    return pooled, np.take_along_axis(index, pick, -1)[..., 0], bad.any(axis=-1)


def _update_extreme(current: Extreme | None, block: np.ndarray, first_row: int, largest: bool) -> Extreme | None:
    finite = np.where(np.isfinite(block), block, -np.inf if largest else np.inf)
    flat = int(finite.argmax() if largest else finite.argmin())
    value = float(finite.flat[flat])
    if not math.isfinite(value) or (
        current is not None and (value <= current.value if largest else value >= current.value)
    ):
        return current
    test, train = divmod(flat, block.shape[1])
    return Extreme(first_row + test, train, value)


def pool_matrix(
    read_rows: Callable[[slice], np.ndarray], n_test: int, n_train: int, scored: np.ndarray, rows: int, cols: int
) -> PooledMatrix:
    """Pool the matrix that ``read_rows(slice)`` reads, batch by batch, into at most rows × cols cells.

    ``scored`` marks the training columns the engine has written: a non-finite value
    there is invalid (flagged), elsewhere it is pending (left blank).
    """
    row_width, col_width = bin_width(n_test, rows), bin_width(n_train, cols)
    batch = row_width * max(1, math.ceil(READ_ROWS / row_width))  # whole row bins per read
    parts, samples = [], []
    maximum = minimum = None
    rng = np.random.default_rng(SCALE_SEED)
    for first in range(0, n_test, batch):
        block = np.asarray(read_rows(slice(first, min(first + batch, n_test))), dtype=np.float32)
        finite = np.abs(block[np.isfinite(block)])
        samples.append(finite if finite.size <= SCALE_SAMPLE else rng.choice(finite, SCALE_SAMPLE, replace=False))
        bad = ~np.isfinite(block) & scored[None, :]
        train = np.broadcast_to(np.arange(n_train), block.shape)
        values, train_index, invalid = _pool_last_axis(block, train, bad, col_width)
        test = np.broadcast_to(np.arange(first, first + len(block))[:, None], values.shape)
        pooled = _pool_last_axis(values.T, test.T, invalid.T, row_width)  # pool rows: transpose, pool, transpose
        picked_test = pooled[1].T
        picked_train = np.take_along_axis(train_index, picked_test - first, axis=0)
        parts.append((pooled[0].T, picked_test, picked_train, pooled[2].T))
        maximum = _update_extreme(maximum, block, first, largest=True)
        minimum = _update_extreme(minimum, block, first, largest=False)
    values, test_index, train_index, invalid = (np.concatenate(arrays) for arrays in zip(*parts))
    sample = np.concatenate(samples)
    magnitude = np.where(np.isfinite(values), np.abs(values), 0.0)
    return PooledMatrix(
        values=values,
        test_index=test_index,
        train_index=train_index,
        invalid=invalid,
        row_edges=edges(n_test, row_width),
        col_edges=edges(n_train, col_width),
        maximum=maximum if maximum is not None and maximum.value > 0 else None,
        minimum=minimum if minimum is not None and minimum.value < 0 else None,
        scale=float(np.percentile(sample, SCALE_PERCENTILE)) if sample.size else 0.0,
        row_scale=magnitude.max(axis=1),
    )
