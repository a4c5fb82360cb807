"""How a run divides its memory: the test gradients in chunks, then the cache of training batches.

The test gradients are the largest thing a run holds (one test example's are as large as the
tracked weights, for every factor variant), so the queries are taken in chunks that fit the
budget, each chunk one pass over the training side; what the chunk leaves of the budget goes
to the training batches kept between passes (``TrainCache``), which spare forward and
backward passes but never change a number.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from influence.ekfac import EkfacInfluence
from job.errors import UserError
from job.sizes import format_size

DEFAULT_BUDGET_FRACTION = 0.75  # of the memory free on the device, when no --memory-budget is given
QUERY_SHARE = 2 / 3  # of the budget, at most, for a chunk of test gradients; the rest for the train cache


@dataclass(frozen=True)
class MemoryPlan:
    """What a run may hold: ``chunk_rows`` test examples' gradients at a time, and ``cache_bytes`` of
    captured training batches. ``budget`` is None where free memory cannot be read (no limit)."""

    budget: Optional[int]
    query_row_bytes: int
    chunk_rows: int
    cache_bytes: int


def plan_memory(engines: Sequence[EkfacInfluence], n_test: int, budget: Optional[int] = None) -> MemoryPlan:
    """Chunks of test gradients sized to ``budget`` bytes (default: a share of what is free on the
    device); a budget that cannot hold one test example's gradients is refused."""
    engine = engines[0]
    row_bytes = sum(e.query_row_bytes for e in engines)
    given = budget is not None
    if budget is None:
        available = available_memory(engine.device)
        budget = None if available is None else int(DEFAULT_BUDGET_FRACTION * available)
    if budget is None:
        return MemoryPlan(None, row_bytes, n_test, engine.options.cache_bytes)
    rows = min(n_test, int(QUERY_SHARE * budget) // row_bytes)
    if rows < 1:
        where = "--memory-budget is" if given else f"the share of free memory on {engine.device} is"
        raise UserError(
            f"one test example's gradients need {format_size(row_bytes)} ({engine.tracked_parameters:,} tracked "
            f"parameters x {len(engines)} factor variant(s)) but {where} {format_size(int(QUERY_SHARE * budget))}: "
            "give a larger --memory-budget or fewer --layers"
        )
    cache = max(0, min(engine.options.cache_bytes, budget - rows * row_bytes))
    return MemoryPlan(budget, row_bytes, rows, cache)


def available_memory(device: torch.device) -> Optional[int]:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
