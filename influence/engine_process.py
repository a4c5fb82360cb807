"""The engine as the UI's child process: ``python -m influence.engine_process CONFIG_JSON``.

Runs ``run_pipeline`` on the configuration and answers on the channel of ``job.channel``: a
progress line per event and one ending. The channel is the stdout the parent reads; file
descriptor 1 itself is pointed at stderr first, so that whatever a library prints cannot
garble it. SIGINT and SIGTERM cancel after the current batch (the store stays resumable).
Under torchrun every rank runs this; rank 0 alone reports progress and its ending.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import traceback
from typing import TextIO

from job import channel
from job.config import RunConfig
from job.errors import UserError
from job.progress import Cancelled
from store.errors import StoreError


def _private_channel() -> TextIO:
    """A line-buffered copy of stdout for the channel; fd 1 then goes where stderr goes."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return out


def main() -> None:
    out = _private_channel()
    cancel = threading.Event()
    for sign in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sign, lambda *_: cancel.set())

    def send(message: channel.Message) -> None:
        out.write(channel.encode(message))

    try:
        config = RunConfig.from_dict(json.loads(sys.argv[1])).validate()
        from influence.pipeline import run_pipeline  # after the channel is private: torch may print

        path = run_pipeline(config, progress=send, cancel=cancel)
        if path is not None:  # rank 0 (or the only process)
            send(channel.Ending(channel.FINISHED, path=str(path)))
    except Cancelled:
        send(channel.Ending(channel.CANCELLED))
    except StoreError as error:
        send(channel.Ending(channel.FAILED, str(error.path), type(error).__name__, str(error), error.reason))
    except UserError as error:
        send(channel.Ending(channel.FAILED, error=UserError.__name__, message=str(error)))
    except Exception as error:  # a bug: its type, its message and the traceback go to the UI
        message = f"{type(error).__name__}: {error}"
        send(channel.Ending(channel.FAILED, error=channel.CRASH, message=message, details=traceback.format_exc()))
    finally:
        out.close()


if __name__ == "__main__":
    main()
