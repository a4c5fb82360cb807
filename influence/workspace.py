"""Reusable buffers for the large temporaries of a pass over the data.

A per-example gradient batch of a 3072 × 769 layer is 75 MB; allocated afresh for every
layer of every batch, each such tensor is mapped and page-faulted in again, which on the
2-core benchmark machine costs five times the arithmetic done with it (25 ms against 5 ms
for one elementwise product). A pass takes its buffers from one :class:`Workspace` instead.
"""

from __future__ import annotations

import math

import torch


class Workspace:
    """Named flat buffers, grown when a larger view is asked for, reused otherwise."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def take(self, key: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` with ``like``'s dtype and device; valid until the next
        ``take`` of the same ``key``."""
        numel = math.prod(shape)
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < numel or buffer.dtype != like.dtype or buffer.device != like.device:
            buffer = torch.empty(numel, dtype=like.dtype, device=like.device)
            self._buffers[key] = buffer
        return buffer[:numel].view(shape)
