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
    chunks: tuple[int, ...], shape: tuple[int, ...], fill: float, array: np.ndarray, origin: tuple[int, ...]
) -> list[tuple[tuple[int, ...], bytes]]:
    """Cut ``array`` (a dataset's region from ``origin`` on) into full chunks, encoded, with their offsets.

    The region must be whole chunks, except where it reaches the dataset's edge (``shape``);
    pure numpy and zlib, so that it runs in a worker thread; chunks at the dataset's edges are
    padded with the fill value, as HDF5 pads them.
    """
    for low, size, chunk, extent in zip(origin, array.shape, chunks, shape):
        if low % chunk or ((low + size) % chunk and low + size != extent) or low + size > extent:
            raise ValueError(f"the region {origin} + {array.shape} is not whole chunks of {chunks} in {shape}")
    encoded = []
    for index in np.ndindex(*[ceil(size / chunk) for size, chunk in zip(array.shape, chunks)]):
        low = [i * chunk for i, chunk in zip(index, chunks)]
        part = array[tuple(slice(lo, lo + chunk) for lo, chunk in zip(low, chunks))]
        tile = np.full(chunks, fill, dtype=array.dtype)
        tile[tuple(slice(0, size) for size in part.shape)] = part
        encoded.append((tuple(lo + o for lo, o in zip(low, origin)), encode_chunk(tile)))
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

    def encode(self, items: list[tuple[h5py.Dataset, np.ndarray, tuple[int, ...]]]) -> list[EncodedChunk]:
        """Compress each ``(dataset, array, origin)`` into whole chunks, ready for ``write``."""
        futures = []
        for dataset, array, origin in items:
            _check_pipeline(dataset, array)
            task = (encode_block, dataset.chunks, dataset.shape, dataset.fillvalue, array, origin)
            futures.append((dataset, self._pool.submit(*task)))
        return [(dataset, offset, data) for dataset, future in futures for offset, data in future.result()]

    @staticmethod
    def write(chunks: list[EncodedChunk]) -> None:
        for dataset, offset, data in chunks:
            dataset.id.write_direct_chunk(offset, data, NO_FILTER_SKIPPED)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
