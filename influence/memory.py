"""How much of the device's memory a run may use, and for what."""

from __future__ import annotations

import os
from typing import Optional

import torch

from influence.ekfac import EkfacInfluence
from job.errors import UserError

QUERY_MEMORY_FRACTION = 0.5  # of the memory free on the device, for the test gradients
CACHE_MEMORY_FRACTION = 0.25  # of the memory free on the device, for token matrices kept between passes


def cache_budget(engine: EkfacInfluence) -> int:
    """Memory for token matrices kept between passes: a share of what is free, at most the engine's own cap."""
    available = available_memory(engine.device)
    share = int(CACHE_MEMORY_FRACTION * available) if available is not None else 0
    return min(share, engine.options.cache_bytes)


def check_query_memory(engine: EkfacInfluence, query_count: int) -> None:
    """The test gradients stay in memory for the whole scores pass: refuse what cannot fit."""
    itemsize = torch.empty((), dtype=engine.factor_dtype).element_size()
    needed = query_count * engine.tracked_parameters * itemsize
    available = available_memory(engine.device)
    if available is not None and needed > QUERY_MEMORY_FRACTION * available:
        raise UserError(
            f"the test gradients need {needed / 2**30:.1f} GiB ({query_count} test examples x "
            f"{engine.tracked_parameters:,} tracked parameters) but {available / 2**30:.1f} GiB is free on "
            f"{engine.device}: use fewer --num-test examples or fewer --layers"
        )


def available_memory(device: torch.device) -> Optional[int]:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
