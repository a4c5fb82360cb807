"""The engine in a process of its own: the command that starts it, and the lines it answers on.

The UI never imports torch, so it runs the engine as a child (``python -m
influence.engine_process CONFIG``, or the same under torchrun on N ranks) and follows it
through the store and this channel: one JSON object per line on the child's stdout, a
progress event per step and one ending (finished, cancelled or failed). Cancelling is
SIGINT to the child, which stops after its current batch and leaves the store resumable.
Pure Python on both sides: the child imports it beside torch, the UI without.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from typing import Optional, Union

from job.config import RunConfig
from job.progress import ProgressEvent

ENGINE_MODULE = "influence.engine_process"
CLI_MODULE = "influence"  # what torchrun runs on every rank for --export
FINISHED, CANCELLED, FAILED = "finished", "cancelled", "failed"
PROGRESS = "progress"
CRASH = "crash"  # the error of a failure that was a bug, not the user's to fix
WORLD_SIZE_ENV, RANK_ENV, LOCAL_RANK_ENV = "WORLD_SIZE", "RANK", "LOCAL_RANK"  # what torchrun sets on every rank


@dataclass(frozen=True)
class Ending:
    """How the child's run ended. A failure names its error's class (``UserError``, a store error, or
    ``CRASH`` for anything else), the store path and reason of a store error, and the traceback of a crash."""

    status: str
    path: Optional[str] = None
    error: Optional[str] = None
    message: str = ""
    reason: str = ""
    details: str = ""


Message = Union[ProgressEvent, Ending]


def encode(message: Message) -> str:
    kind = PROGRESS if isinstance(message, ProgressEvent) else "ending"
    return json.dumps({"kind": kind, **asdict(message)}) + "\n"


def decode(line: str) -> Optional[Message]:
    """The message on one line; None for a line that is not one (a stray print of a library)."""
    try:
        fields = json.loads(line)
        kind = fields.pop("kind")
        return ProgressEvent(**fields) if kind == PROGRESS else Ending(**fields)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def torchrun(nproc: int) -> list[str]:
    """torch's own launcher for ``nproc`` processes on this machine, with its own rendezvous. Several
    machines: run ``torchrun --nnodes ... --rdzv-endpoint ... -m influence --export OUT ...`` on each."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]


def engine_command(config: RunConfig) -> list[str]:
    """The child that computes ``config``'s store: one process, or torchrun with ``config.nproc`` ranks."""
    launcher = torchrun(config.nproc) if config.nproc > 1 else [sys.executable]
    return [*launcher, "-m", ENGINE_MODULE, json.dumps(config.to_dict())]
