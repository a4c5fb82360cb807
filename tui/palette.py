"""The diverging colour scale of influence (and of correlations), in xterm-256 colours.

256-colour indices render the same in tmux without truecolor; under ``NO_COLOR`` the
scale falls back to glyphs (a sign and a shade), so that a cell never means nothing.
Positive (helpful) runs dark teal to cyan, negative (harmful) dark red to red: a
colour-blind-safe pair whose brightness alone also carries the magnitude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.color import Color
from rich.style import Style

POSITIVE_RAMP = (23, 30, 37, 44, 51)
NEGATIVE_RAMP = (52, 88, 124, 160, 196)
ZERO_COLOUR = 238
PENDING_COLOUR = 235
LEVELS = len(POSITIVE_RAMP)
SHADES = "░▒▓██"  # one per level, for NO_COLOR
PENDING_GLYPH = "·"
TEXT_ON_DARK, TEXT_ON_BRIGHT = 255, 16
BRIGHT_FROM_LEVEL = 3  # from this level on the background is bright enough for dark text


def level(value: float, scale: float) -> int:
    """Signed level of ``value`` on a scale saturating at ``scale``: 0 (about zero) to ±LEVELS."""
    if scale <= 0 or math.isnan(value):
        return 0
    magnitude = min(1.0, abs(value) / scale)
    steps = math.ceil(magnitude * LEVELS - 1e-9)
    return int(math.copysign(steps, value)) if steps else 0


def background(signed_level: int) -> int:
    """The xterm-256 colour of a signed level."""
    if signed_level == 0:
        return ZERO_COLOUR
    ramp = POSITIVE_RAMP if signed_level > 0 else NEGATIVE_RAMP
    return ramp[abs(signed_level) - 1]


@dataclass(frozen=True)
class Cell:
    """How one heatmap cell draws: two characters and their style."""

    text: str
    style: Style


def cell(value: float, scale: float, *, no_color: bool, mark: str = "") -> Cell:
    """The two-character cell of ``value``; ``mark`` (one character) overrides the glyph, e.g. an extreme."""
    if math.isnan(value):
        return Cell(
            (mark or PENDING_GLYPH) + " ", Style(color=Color.from_ansi(244), bgcolor=Color.from_ansi(PENDING_COLOUR))
        )
    signed = level(value, scale)
    if no_color:
        glyph = SHADES[abs(signed) - 1] if signed else " "
        sign = "+" if signed > 0 else "-" if signed < 0 else " "
        return Cell((mark or sign) + glyph, Style())
    text_colour = TEXT_ON_BRIGHT if abs(signed) >= BRIGHT_FROM_LEVEL else TEXT_ON_DARK
    style = Style(color=Color.from_ansi(text_colour), bgcolor=Color.from_ansi(background(signed)), bold=bool(mark))
    return Cell((mark or " ") + " ", style)


def score_style(value: float) -> Style:
    """Foreground for a score in a table: the scale's bright end, so sign reads at a glance."""
    if math.isnan(value) or value == 0:
        return Style()
    return Style(color=Color.from_ansi(POSITIVE_RAMP[-2] if value > 0 else NEGATIVE_RAMP[-1]))
