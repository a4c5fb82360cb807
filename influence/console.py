"""Progress of a headless run on stderr: rich bars on a terminal, plain lines in a log.

stdout is left to the paths written at the end, so that a batch job can capture them.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Optional, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from job.progress import ProgressEvent

PLAIN_INTERVAL_SECONDS = 5.0  # a log line per stage at most this often, plus one when it finishes


class _PlainReporter:
    """One line per stage every few seconds: readable in CI logs and batch-job output files."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.started: dict[str, float] = {}
        self.last_line: dict[str, float] = {}
        self.finished: set[str] = set()

    def __call__(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        self.started.setdefault(event.stage, now)
        finished = event.total is not None and event.done >= event.total
        if finished and event.stage in self.finished:
            return
        if not finished and now - self.last_line.get(event.stage, 0.0) < PLAIN_INTERVAL_SECONDS:
            return
        if finished:
            self.finished.add(event.stage)
        self.last_line[event.stage] = now
        elapsed = now - self.started[event.stage]
        of = f"/{event.total}" if event.total is not None else ""
        percent = f" ({100 * event.done / event.total:.0f}%)" if event.total else ""
        rate = f", {event.done / elapsed:.2f} {event.unit}/s" if elapsed > 0 and event.done else ""
        print(
            f"{event.stage}: {event.done}{of} {event.unit}{percent}{rate}, {elapsed:.1f}s", file=self.stream, flush=True
        )

    def close(self) -> None:
        pass


class _RichReporter:
    """A bar per stage, with its count, rate-based remaining time and elapsed time."""

    def __init__(self, stream: TextIO):
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(file=stream),
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}
        self.progress.start()

    def __call__(self, event: ProgressEvent) -> None:
        task = self.tasks.get(event.stage)
        if task is None:
            task = self.progress.add_task(event.stage, total=event.total, unit=event.unit)
            self.tasks[event.stage] = task
        self.progress.update(task, completed=event.done, total=event.total)

    def close(self) -> None:
        self.progress.stop()


class StderrProgress:
    """Context manager giving a progress callback that suits stderr."""

    def __init__(self, stream: Optional[TextIO] = None):
        self.stream = stream or sys.stderr
        self.reporter = _RichReporter(self.stream) if self.stream.isatty() else _PlainReporter(self.stream)

    def __enter__(self) -> "_RichReporter | _PlainReporter":
        return self.reporter

    def __exit__(
        self, kind: Optional[type[BaseException]], error: Optional[BaseException], trace: Optional[TracebackType]
    ) -> None:
        self.reporter.close()
