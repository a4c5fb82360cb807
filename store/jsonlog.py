"""Append-only JSON documents (metrics, the summary slot) that stay consistent under SWMR.

Each version of a document is appended to ``bytes`` and only then its end offset
is appended to ``ends``; nothing already referenced is ever overwritten. A reader
that refreshes ``ends`` before ``bytes`` therefore always finds the bytes of the
last version it can see, and a writer killed between the two appends leaves an
unreferenced tail that the next append overwrites.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import h5py
import numpy as np

from store.schema import json_path


class JsonLog:
    """The versions of one JSON document in an open store."""

    def __init__(self, file: h5py.File, slot: str) -> None:
        self.bytes = file[json_path(slot, "bytes")]
        self.ends = file[json_path(slot, "ends")]

    def refresh(self) -> None:
        """Make new versions visible to a SWMR reader (``ends`` first: see the module docstring)."""
        self.ends.refresh()
        self.bytes.refresh()

    def latest(self) -> dict | None:
        """The newest version, or None when nothing was written."""
        count = self.ends.shape[0]
        if count == 0:
            return None
        start = int(self.ends[count - 2]) if count > 1 else 0
        stop = int(self.ends[count - 1])
        return json.loads(self.bytes[start:stop].tobytes().decode("utf-8"))

    def append(self, document: dict, flush: Callable[[], None]) -> None:
        """Store a new version; ``flush`` makes the bytes durable before they are referenced."""
        data = np.frombuffer(json.dumps(document, sort_keys=True).encode("utf-8"), dtype=np.uint8)
        count = self.ends.shape[0]
        start = int(self.ends[count - 1]) if count else 0
        stop = start + data.size
        if self.bytes.shape[0] < stop:
            self.bytes.resize((stop,))
        self.bytes[start:stop] = data
        flush()
        self.ends.resize((count + 1,))
        self.ends[count] = stop
        flush()
