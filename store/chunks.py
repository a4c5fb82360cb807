"""Score blocks written as whole chunks that are compressed in parallel.

Influence scores are full-entropy float32: deflate runs at only ~35-50 MB/s on one
core (docs/store-format.md), which made HDF5's own single-threaded filter pipeline
the bottleneck. So the writer applies the datasets' declared filters itself —
HDF5's byte shuffle, then zlib deflate at SCORE_COMPRESSION_LEVEL — in a thread
pool (zlib releases the GIL) and hands HDF5 finished chunks
(``write_direct_chunk``). Readers decode them with HDF5's normal pipeline. As a
side effect, each chunk is provably written exactly once and whole.
"""

from __future__ import annotations

import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from math import ceil

import h5py
import numpy as np

from store.schema import SCORE_COMPRESSION, SCORE_COMPRESSION_LEVEL

NO_FILTER_SKIPPED = 0  # filter mask of write_direct_chunk: every filter of the pipeline was applied


def encode_chunk(tile: np.ndarray) -> bytes:
    """What HDF5's shuffle + deflate filters make of one full chunk."""
    shuffled = np.ascontiguousarray(tile).view(np.uint8).reshape(-1, tile.dtype.itemsize).T.tobytes()
    return zlib.compress(shuffled, SCORE_COMPRESSION_LEVEL)


def encode_block(
    chunks: tuple[int, ...], fill: float, array: np.ndarray, start: int
) -> list[tuple[tuple[int, ...], bytes]]:
    """Cut ``array`` (a dataset's columns from ``start`` on) into full chunks, encoded, with their offsets.

    Pure numpy and zlib, so that it runs in a worker thread; chunks at the dataset's
    edges are padded with the fill value, as HDF5 pads them.
    """
    if start % chunks[-1] or array.shape[-1] > chunks[-1]:
        raise ValueError(f"columns {start}..{start + array.shape[-1]} are not one whole chunk column")
    grid = [ceil(size / chunk) for size, chunk in zip(array.shape[:-1], chunks[:-1])]
    encoded = []
    for index in np.ndindex(*grid):
        low = [i * chunk for i, chunk in zip(index, chunks[:-1])]
        part = array[tuple(slice(lo, lo + chunk) for lo, chunk in zip(low, chunks[:-1]))]
        tile = np.full(chunks, fill, dtype=array.dtype)
        tile[tuple(slice(0, size) for size in part.shape)] = part
        encoded.append((tuple(low) + (start,), encode_chunk(tile)))
    return encoded


def _check_pipeline(dataset: h5py.Dataset, array: np.ndarray) -> None:
    if dataset.compression != SCORE_COMPRESSION or not dataset.shuffle or dataset.chunks is None:
        raise ValueError(f"{dataset.name} does not use the score filter pipeline (shuffle + {SCORE_COMPRESSION})")
    if array.dtype != dataset.dtype:
        raise ValueError(f"{dataset.name}: array is {array.dtype}, dataset {dataset.dtype}")


EncodedChunk = tuple[h5py.Dataset, tuple[int, ...], bytes]


class ChunkWriter:
    """Compresses chunks on all cores (one task per dataset); writes them from the calling thread."""

    def __init__(self, workers: int | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1, thread_name_prefix="store-chunks")

    def encode(self, items: list[tuple[h5py.Dataset, np.ndarray, int]]) -> list[EncodedChunk]:
        """Compress each ``(dataset, array, start column)`` into whole chunks, ready for ``write``."""
        futures = []
        for dataset, array, start in items:
            _check_pipeline(dataset, array)
            futures.append((dataset, self._pool.submit(encode_block, dataset.chunks, dataset.fillvalue, array, start)))
        return [(dataset, offset, data) for dataset, future in futures for offset, data in future.result()]

    @staticmethod
    def write(chunks: list[EncodedChunk]) -> None:
        for dataset, offset, data in chunks:
            dataset.id.write_direct_chunk(offset, data, NO_FILTER_SKIPPED)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
