"""Batches as the engine takes them: one mapping of batch-first tensors, or any iterable of them."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Union

Batch = Mapping[str, Any]
BatchData = Union[Batch, Iterable[Batch]]  # one batch, or any iterable of batches: a DataLoader, a list


def as_batches(data: BatchData) -> Iterable[Batch]:
    return [data] if isinstance(data, Mapping) else data


def length(data: Iterable[Any]) -> Optional[int]:
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return None


def batch_size(batch: Batch) -> int:
    for value in batch.values():
        if hasattr(value, "dim") and value.dim() > 0:
            return int(value.shape[0])
    raise ValueError("a batch must hold at least one tensor with a batch dimension")


def rows_of(batches: Iterable[Batch], start: int, stop: int) -> list[Batch]:
    """The rows [start, stop) of a sequence of batches (every tensor batch-first), cut where they fall."""
    cut, position = [], 0
    for batch in batches:
        size = batch_size(batch)
        low, high = max(start - position, 0), min(stop - position, size)
        if low < high:
            whole = (low, high) == (0, size)
            cut.append(batch if whole else {k: v[low:high] if hasattr(v, "dim") else v for k, v in batch.items()})
        position += size
    return cut


def row_count(batches: Iterable[Batch]) -> int:
    return sum(batch_size(batch) for batch in batches)
