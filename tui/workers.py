"""Thread workers whose failure is a message, not the end of the app.

Textual's workers take the app down on an exception unless started with
``exit_on_error=False``; then the node that started one hears of its failure in a
``Worker.StateChanged`` message. ``failure_of`` turns such a message into a
:class:`~tui.messages.WorkerFailed` that the node posts (after undoing its own state) and
that bubbles up to the app, which notifies and keeps the details for ``d``.
"""

from __future__ import annotations

import traceback
from typing import Optional

from textual.worker import Worker, WorkerState

from job.errors import UserError
from tui.messages import WorkerFailed


def describe_failure(title: str, error: BaseException) -> WorkerFailed:
    """A user's error (a store, a path) in its own words; anything else with its type and traceback."""
    if isinstance(error, (UserError, OSError)):
        return WorkerFailed(title, str(error), str(error))
    summary = f"{type(error).__name__}: {error}"
    details = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return WorkerFailed(title, summary, details)


def failure_of(event: Worker.StateChanged, title: str) -> Optional[WorkerFailed]:
    """The failure a worker's state change reports, if it is one."""
    if event.state != WorkerState.ERROR or event.worker.error is None:
        return None
    return describe_failure(title, event.worker.error)
