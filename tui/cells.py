"""Table cells every view draws the same way: a score that may be pending, invalid or not available, a label, a flag."""

from __future__ import annotations

import math

from rich.style import Style

from store.analysis import RELATIVE
from tui import format as fmt
from tui.palette import score_style

PENDING_STYLE = Style(dim=True, italic=True)
INVALID_STYLE = Style(color="red", bold=True)

CellText = tuple[str, Style | None]


def score_cell(value: float, scored: bool) -> CellText:
    """A score, ``pending`` before its column is written, ``NaN!`` when the engine wrote a non-finite value."""
    if not scored:
        return fmt.PENDING, PENDING_STYLE
    if not math.isfinite(value):
        return fmt.INVALID, INVALID_STYLE
    return fmt.score(value), score_style(value)


def relative_cell(raw: float, relative: float, scored: bool) -> CellText:
    """A relative score: as score_cell for its raw score, then ``n/a`` when there is no I(n, n) > 0 to divide by."""
    if not scored or not math.isfinite(raw):
        return score_cell(raw, scored)
    if not math.isfinite(relative):
        return fmt.NOT_AVAILABLE, PENDING_STYLE
    return fmt.score(relative), score_style(relative)


def kind_cell(kind: str, raw: float, relative: float, scored: bool) -> CellText:
    """The cell of the score ``kind`` (store.analysis.INFLUENCE or RELATIVE) of one pair."""
    return relative_cell(raw, relative, scored) if kind == RELATIVE else score_cell(raw, scored)


def rank_cell(rank: int) -> CellText:
    """1 for the most helpful; ``—`` when the score is not there to rank."""
    return (fmt.count(rank), None) if rank > 0 else (fmt.MISSING, PENDING_STYLE)


def corrupted_cell(corrupted: bool, mark: str) -> CellText:
    """``flip`` (a classifier's label) or ``swap`` (a causal LM's completion) where the corrupted variant changed it."""
    return (mark, Style(color="magenta")) if corrupted else ("", None)
