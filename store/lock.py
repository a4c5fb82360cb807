"""One writer per store, enforced with a lock file beside it.

HDF5 releases its own file lock once a writer is in SWMR mode, so it cannot tell
a live writer from a killed one; an ``flock`` on ``STORE.lock`` can, because the
kernel drops it when the process dies.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from store.errors import StoreLocked, StoreWriteError, os_reason

LOCK_SUFFIX = ".lock"


class WriterLock:
    """An exclusive, non-blocking lock on ``<store>.lock``."""

    def __init__(self, store_path: Path) -> None:
        self.store_path = store_path
        self.path = store_path.with_name(store_path.name + LOCK_SUFFIX)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise StoreLocked; retried when the file was replaced meanwhile."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise StoreWriteError(
                    self.store_path, f"cannot create lock file {self.path.name}: {os_reason(exc)}"
                ) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise StoreLocked(self.store_path, "another writer has this store open") from None
            if self._still_at_path(fd):
                self._fd = fd
                return
            os.close(fd)  # a releasing writer unlinked it between our open and flock

    def _still_at_path(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file, then unlock (in this order, so no one locks a removed file)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass  # read-only directory or already gone: the lock still ends with the close below
        os.close(self._fd)
        self._fd = None
