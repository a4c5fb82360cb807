"""The EK-FAC influence engine.

Importing this package is cheap and never imports torch: the public names are
resolved lazily, so that the command line (``influence.cli``) and the terminal UI
can import light modules such as ``influence.config`` on a machine state where
torch is absent or slow to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["EkfacInfluence"]

if TYPE_CHECKING:
    from influence.ekfac import EkfacInfluence


def __getattr__(name: str) -> Any:
    if name == "EkfacInfluence":
        from influence.ekfac import EkfacInfluence

        return EkfacInfluence
    raise AttributeError(f"module 'influence' has no attribute {name!r}")
