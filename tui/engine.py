"""Running the engine behind the UI: the job API (start, progress, cancel) and nothing Textual.

The engine runs in a process of its own (``process_runner``: ``influence.engine_process``,
or torchrun with N ranks), which the worker thread follows through the channel of
``job.channel``; the UI process never imports torch, and its redraws never compete with the
engine for the interpreter. ``run_engine`` turns every way a run can end into an
``EngineOutcome``: the UI shows it, it never crashes on it.
"""

from __future__ import annotations

import math
import signal
import subprocess
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from job import channel
from job.config import RunConfig
from job.errors import UserError
from job.progress import Cancelled, ProgressCallback, ProgressEvent
from store.errors import StoreDamaged, StoreError, StoreMismatch, StoreVersionError

EngineRunner = Callable[[RunConfig, ProgressCallback, threading.Event], Path]
PROGRESS_INTERVAL = 0.1  # seconds between two progress messages of one stage: ~10 per second
CANCEL_POLL_SECONDS = 0.05
CHILD_LOG_CHARACTERS = 4000  # of the engine process's stderr, shown when it crashes

FINISHED, CANCELLED, FAILED = "finished", "cancelled", "failed"
# The engine refused the store itself: what it holds is not this run's result and must not be shown as such.
STORE_REJECTED = (StoreMismatch, StoreVersionError, StoreDamaged)
OutcomeStatus = Literal["finished", "cancelled", "failed"]


class EngineCrashed(Exception):
    """The engine process failed on a bug, or died without saying how it ended; ``details`` tells the story."""

    def __init__(self, message: str, details: str) -> None:
        super().__init__(message)
        self.details = details


# Store errors the engine process may end with, rebuilt by name on this side.
STORE_ERRORS = {cls.__name__: cls for cls in (StoreError, *StoreError.__subclasses__())}


def process_runner(config: RunConfig, progress: ProgressCallback, cancel: threading.Event) -> Path:
    """The engine in a child process: its progress passed on, ``cancel`` sent as SIGINT, its ending
    returned (the store's path) or raised as the error it was (a store error, a user's, a crash)."""
    with tempfile.TemporaryFile(mode="w+") as log:  # the child's stderr: never the terminal the UI draws on
        child = subprocess.Popen(
            channel.engine_command(config), stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True
        )
        watcher = threading.Thread(target=_forward_cancel, args=(child, cancel), daemon=True, name="engine-cancel")
        watcher.start()
        ending = None
        for line in child.stdout:
            message = channel.decode(line)
            if isinstance(message, ProgressEvent):
                progress(message)
            elif message is not None and ending is None:
                ending = message
        status = child.wait()
        watcher.join()
        log.seek(0)
        return _ended(ending, status, log.read()[-CHILD_LOG_CHARACTERS:])


def _forward_cancel(child: subprocess.Popen, cancel: threading.Event) -> None:
    while child.poll() is None:
        if cancel.wait(CANCEL_POLL_SECONDS):
            child.send_signal(signal.SIGINT)
            return


def _ended(ending: channel.Ending | None, status: int, log: str) -> Path:
    if ending is None:
        how = f"killed by signal {-status}" if status < 0 else f"exited with status {status}"
        raise EngineCrashed(f"the engine process {how} without finishing", log or "(it wrote nothing on stderr)")
    if ending.status == channel.FINISHED:
        return Path(ending.path)
    if ending.status == channel.CANCELLED:
        raise Cancelled("cancelled")
    if ending.error in STORE_ERRORS:
        raise STORE_ERRORS[ending.error](ending.path, ending.reason)
    if ending.error == channel.CRASH:
        stderr = f"\nstderr of the engine process:\n{log}" if log else ""
        raise EngineCrashed(ending.message, ending.details + stderr)
    raise UserError(ending.message)


class ProgressThrottle:
    """A progress callback that forwards at most one event per stage per ``interval``; the latest wins.

    Events that arrive too soon are held, replacing any held before, and go out with
    the next event of their stage after the interval or with ``flush()`` (the UI
    flushes on a timer, so a stage that then goes quiet still shows its last step).
    The event that completes a stage is never held. Thread-safe: the engine calls it
    from its thread, the UI flushes from its own.
    """

    def __init__(
        self,
        send: Callable[[ProgressEvent], None],
        interval: float = PROGRESS_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._sent_at: dict[str, float] = {}
        self._held: dict[str, ProgressEvent] = {}

    def __call__(self, event: ProgressEvent) -> None:
        completes = event.total is not None and event.done >= event.total
        with self._lock:
            now = self._clock()
            due = completes or now - self._sent_at.get(event.stage, -math.inf) >= self._interval
            if due:
                self._held.pop(event.stage, None)
                self._sent_at[event.stage] = now
            else:
                self._held[event.stage] = event
        if due:
            self._send(event)

    def flush(self) -> None:
        """Send every held event now."""
        with self._lock:
            held, self._held = list(self._held.values()), {}
            now = self._clock()
            for event in held:
                self._sent_at[event.stage] = now
        for event in held:
            self._send(event)


@dataclass(frozen=True)
class EngineOutcome:
    """How a run ended: ``summary`` is one line for a notification, ``details`` the full story."""

    status: OutcomeStatus
    path: Path | None = None
    summary: str = ""
    details: str = ""
    store_rejected: bool = False


def run_engine(
    config: RunConfig, runner: EngineRunner, progress: ProgressCallback, cancel: threading.Event
) -> EngineOutcome:
    """Run ``runner`` to the end and describe how it ended; a bug becomes a FAILED outcome with its traceback."""
    try:
        path = runner(config, progress, cancel)
    except Cancelled:
        return EngineOutcome(CANCELLED, summary="engine cancelled; resume continues from the store")
    except EngineCrashed as error:
        return EngineOutcome(FAILED, summary=str(error), details=error.details)
    except (UserError, StoreError) as error:
        return EngineOutcome(
            FAILED, summary=str(error), details=str(error), store_rejected=isinstance(error, STORE_REJECTED)
        )
    except Exception as error:  # the engine's bug must not take the UI down with it
        return EngineOutcome(FAILED, summary=f"{type(error).__name__}: {error}", details=traceback.format_exc())
    return EngineOutcome(FINISHED, path=Path(path), summary=f"analysis complete: {path}")


@dataclass
class LiveStage:
    """The latest event of one stage in this run, and what the rate is measured from."""

    event: ProgressEvent
    since: float
    done_at_start: int
    updated: float

    def rate(self) -> float:
        """Units per second since the first event of this run (0 until there are two)."""
        seconds = self.updated - self.since
        return (self.event.done - self.done_at_start) / seconds if seconds > 0 else 0.0

    def eta(self) -> float | None:
        """Seconds left at the current rate; None when unknown."""
        rate = self.rate()
        if self.event.total is None or rate <= 0:
            return None
        return max(0.0, (self.event.total - self.event.done) / rate)


class LiveProgress:
    """The engine's progress as the UI received it, per stage; reset when a run starts."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.stages: dict[str, LiveStage] = {}

    def reset(self) -> None:
        self.stages.clear()

    def update(self, event: ProgressEvent) -> None:
        now = self._clock()
        live = self.stages.get(event.stage)
        if live is None or event.done < live.event.done:
            self.stages[event.stage] = LiveStage(event, now, event.done, now)
        else:
            live.event, live.updated = event, now
