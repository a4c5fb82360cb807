"""Progress reporting and cancellation shared by the engine, the pipeline and the UI.

Pure Python on purpose: the terminal UI imports it without torch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a long call: ``done`` of ``total`` units of ``stage`` are finished."""

    stage: str
    done: int
    total: Optional[int]
    unit: str = "batches"
    message: str = ""


ProgressCallback = Callable[[ProgressEvent], None]


class Cancelled(Exception):
    """Raised inside a long call when its cancel event was set; the call leaves no partial state behind."""


def check_cancel(cancel: Optional[threading.Event]) -> None:
    """Raise :class:`Cancelled` when ``cancel`` is set (checked once per batch)."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled")


def report(callback: Optional[ProgressCallback], event: ProgressEvent) -> None:
    """Send ``event`` to ``callback`` when there is one."""
    if callback is not None:
        callback(event)
