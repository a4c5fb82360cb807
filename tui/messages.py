"""Messages between the engine worker, the views and the app (dataclasses, as Textual allows)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from job.progress import ProgressEvent
from tui.engine import EngineOutcome


@dataclass
class EngineProgress(Message):
    """A step of an engine stage; a newer one of the same stage replaces it while still queued."""

    event: ProgressEvent

    def can_replace(self, message: Message) -> bool:
        # Textual asks the message being processed whether the next queued one supersedes it.
        return isinstance(message, EngineProgress) and message.event.stage == self.event.stage


@dataclass
class EngineStopped(Message):
    """The engine worker ended: finished, cancelled or failed."""

    outcome: EngineOutcome


@dataclass
class PairRequested(Message):
    """Show one (test, train) pair side by side: from the ranking, the heatmap or the corruption view."""

    test_index: int
    train_index: int


@dataclass
class WorkerFailed(Message):
    """A thread worker failed (the λ report, the heatmap's pooling, an export): shown, never fatal."""

    title: str
    summary: str  # one line, for the notification
    details: str  # the full story (a traceback for a bug), for the details screen
