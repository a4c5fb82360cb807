"""Errors that are the user's to fix: reported as one line and exit status 2, never a traceback."""

from __future__ import annotations

EXIT_USAGE = 2


class UserError(Exception):
    """Bad input (a path, an option, a dataset's columns, a store that cannot be used…): its
    message is shown as it is. ``store.errors.StoreError`` is one."""
