"""Stage records: what the overview screen shows about each engine stage.

A record is one fixed-size row of ``/stages``, rewritten in place, so that an
update is a single small write (no object creation, which SWMR forbids).
Timestamps are seconds since the epoch (UTC); ``elapsed`` counts only the time
spent running, summed over resumed sessions.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np

from job.stages import STATUS_PENDING, STATUS_RUNNING, STATUSES
from store.schema import MESSAGE_BYTES, STAGE_RECORD_DTYPE, UNIT_BYTES

_MISSING_COUNT = -1


@dataclass(frozen=True)
class StageRecord:
    """Progress of one stage; ``done``/``total`` count ``unit`` (e.g. batches, blocks)."""

    key: str
    status: str = STATUS_PENDING
    done: int | None = None
    total: int | None = None
    unit: str | None = None
    started: float | None = None
    finished: float | None = None
    elapsed: float = 0.0
    message: str = ""

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def fit_utf8(text: str, size: int) -> bytes:
    """UTF-8 bytes of ``text`` cut to ``size`` bytes without splitting a character."""
    return text.encode("utf-8")[:size].decode("utf-8", "ignore").encode("utf-8")


def _optional_time(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def encode(record: StageRecord) -> np.ndarray:
    """One row of ``/stages`` for ``record``."""
    row = np.zeros((), dtype=STAGE_RECORD_DTYPE)
    row["key"] = record.key.encode("utf-8")
    row["status"] = record.status.encode("ascii")
    row["done"] = _MISSING_COUNT if record.done is None else record.done
    row["total"] = _MISSING_COUNT if record.total is None else record.total
    row["unit"] = fit_utf8(record.unit or "", UNIT_BYTES)
    row["started"] = math.nan if record.started is None else record.started
    row["finished"] = math.nan if record.finished is None else record.finished
    row["elapsed"] = record.elapsed
    row["message"] = fit_utf8(record.message, MESSAGE_BYTES)
    return row


def decode(row: np.void) -> StageRecord:
    """The record stored in one row of ``/stages``."""
    done, total = int(row["done"]), int(row["total"])
    return StageRecord(
        key=row["key"].decode("utf-8"),
        status=row["status"].decode("ascii"),
        done=None if done == _MISSING_COUNT else done,
        total=None if total == _MISSING_COUNT else total,
        unit=row["unit"].decode("utf-8") or None,
        started=_optional_time(row["started"]),
        finished=_optional_time(row["finished"]),
        elapsed=float(row["elapsed"]),
        message=row["message"].decode("utf-8"),
    )


@dataclass
class StageClock:
    """The writer's memory of when the current running segment of a stage began."""

    since: float
    elapsed_before: float


def transition(
    record: StageRecord,
    status: str,
    clock: StageClock | None,
    *,
    done: int | None = None,
    total: int | None = None,
    unit: str | None = None,
    message: str | None = None,
    now: float | None = None,
) -> tuple[StageRecord, StageClock | None]:
    """The record after ``set_stage(status, ...)``, and the running segment's clock.

    Rules: entering ``running`` opens a segment (``started`` is kept from the first
    start); every update while running adds the segment's time to ``elapsed``;
    leaving ``running`` closes it and sets ``finished``; ``pending`` starts over.
    Arguments left None keep their value, except that a change of status clears
    the message.
    """
    if status not in STATUSES:
        raise ValueError(f"stage status must be one of {STATUSES}, not {status!r}")
    for name, count in (("done", done), ("total", total)):
        if count is not None and count < 0:
            raise ValueError(f"{name} must be >= 0, not {count}")
    now = time.time() if now is None else now
    if status == STATUS_PENDING:
        return StageRecord(key=record.key, done=done, total=total, unit=unit, message=message or ""), None
    was_running = record.status == STATUS_RUNNING and clock is not None
    if status == STATUS_RUNNING and not was_running:
        clock = StageClock(since=now, elapsed_before=record.elapsed)
    elapsed = clock.elapsed_before + (now - clock.since) if clock is not None else record.elapsed
    updated = replace(
        record,
        status=status,
        done=record.done if done is None else done,
        total=record.total if total is None else total,
        unit=record.unit if unit is None else unit,
        started=record.started if record.started is not None else now,
        finished=None if status == STATUS_RUNNING else now,
        elapsed=elapsed,
        message=message if message is not None else (record.message if status == record.status else ""),
    )
    return updated, clock if status == STATUS_RUNNING else None
