"""Readers in this process, so that a writer opened in the same process can take the file over.

HDF5 keeps one open file per process: a file open read-only cannot also be opened
for writing, and a reader opened after the writer shares the writer's handle. So a
writer, before it opens, creates or closes a store, detaches this process's
readers of that path (they reopen on their next call), all under ``LOCK``, which
readers also hold while they touch the file.
"""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path
from typing import Protocol

LOCK = threading.RLock()


class Detachable(Protocol):
    path: Path

    def detach(self) -> None: ...


_readers: weakref.WeakSet[Detachable] = weakref.WeakSet()


def register(reader: Detachable) -> None:
    with LOCK:
        _readers.add(reader)


def unregister(reader: Detachable) -> None:
    with LOCK:
        _readers.discard(reader)


def detach_readers(path: Path) -> None:
    """Close this process's readers of ``path``; call with LOCK held."""
    target = os.path.realpath(path)
    for reader in list(_readers):
        if os.path.realpath(reader.path) == target:
            reader.detach()
