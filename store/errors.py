"""Errors raised by the store.

Every message is one line that starts with the file's path, so that a user
seeing it in the terminal UI or in a batch log knows which file is meant and
why, without an HDF5 error stack.
"""

from __future__ import annotations

import errno as errno_codes
import os
from pathlib import Path

from job.errors import UserError


def one_line(text: str) -> str:
    """Collapse ``text`` (HDF5 messages span lines) into one line."""
    return " ".join(str(text).split())


def os_reason(exc: BaseException) -> str:
    """The operating system's reason behind ``exc`` in words, e.g. ``No space left on device (ENOSPC)``."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code > 0:
        name = errno_codes.errorcode.get(code, str(code))
        return f"{os.strerror(code)} ({name})"
    return one_line(str(exc)) or type(exc).__name__


class StoreError(UserError):
    """Base class: something is wrong with one store file (a user-facing one-line message)."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = one_line(reason)
        super().__init__(f"{self.path}: {self.reason}")


class StoreNotFound(StoreError, FileNotFoundError):
    """There is no file at the path."""


class StoreDamaged(StoreError):
    """The file is not HDF5, is truncated, lacks required objects or holds inconsistent data."""


class StoreMismatch(StoreError):
    """The file belongs to another run: a fingerprint, the configuration or the layout differs."""


class StoreVersionError(StoreError):
    """The file's format version is one this code cannot read (or write)."""


class StoreWriteError(StoreError):
    """Writing failed for an operating-system reason (disk full, permission denied, read-only file system)."""


class StoreLocked(StoreError):
    """Another writer (in this or another process) has the store open for writing."""
