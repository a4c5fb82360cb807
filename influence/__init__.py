"""The EK-FAC influence engine: ``EkfacInfluence`` and the options it takes.

The torch-free pieces a run is made of (its configuration, options, progress events,
errors and command line) live in the ``job`` package, which the terminal UI and the
store import without ever reaching this one.
"""

from __future__ import annotations

from influence.ekfac import EkfacInfluence
from job.options import EngineOptions

__all__ = ["EkfacInfluence", "EngineOptions"]
