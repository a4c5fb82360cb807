"""A pair's influence split over the tracked layers, with the check that the layers add up to the total."""

from __future__ import annotations

import math

import numpy as np
from rich.table import Table
from rich.text import Text

from tui import format as fmt
from tui.palette import score_style

BAR_WIDTH = 16
SUM_TOLERANCE = 1e-4  # relative: the store keeps float32 layers and a float32 total


def sum_matches(layers: np.ndarray, total: float) -> bool:
    """Whether Σ layers equals the total up to float32 rounding (NaN never matches)."""
    layer_sum = float(np.sum(layers, dtype=np.float64))
    if not (math.isfinite(layer_sum) and math.isfinite(total)):
        return False
    scale = max(float(np.sum(np.abs(layers), dtype=np.float64)), abs(total), np.finfo(np.float32).tiny)
    return abs(layer_sum - total) <= SUM_TOLERANCE * scale


def _bar(value: float, largest: float) -> Text:
    """A bar of |value| on the side of its sign: left of the axis for negative, right for positive."""
    half = BAR_WIDTH // 2
    cells = 0 if largest <= 0 or not math.isfinite(value) else round(half * abs(value) / largest)
    left = " " * (half - cells) + "█" * cells if value < 0 else " " * half
    right = "█" * cells + " " * (half - cells) if value > 0 else " " * half
    return Text(left, style=score_style(value)) + Text("│") + Text(right, style=score_style(value))


def layer_split_table(names: list[str], layers: np.ndarray, total: float) -> Table:
    """Per-layer influence with a share of Σ|I| and a bar, then Σ layers against the stored total."""
    table = Table(box=None, padding=(0, 1), show_edge=False)
    table.add_column("layer", no_wrap=True, overflow="ellipsis", max_width=40)
    table.add_column("influence", justify="right")
    table.add_column("share", justify="right")
    table.add_column("", no_wrap=True)
    magnitude = float(np.nansum(np.abs(layers)))
    largest = float(np.nanmax(np.abs(layers))) if np.isfinite(layers).any() else 0.0
    for name, value in zip(names, layers):
        share = f"{100 * abs(value) / magnitude:.0f}%" if magnitude > 0 and math.isfinite(value) else fmt.MISSING
        table.add_row(name, Text(fmt.score(float(value)), style=score_style(float(value))), share, _bar(value, largest))
    layer_sum = float(np.sum(layers, dtype=np.float64))
    check = Text("= total ✓", style="green") if sum_matches(layers, total) else Text("≠ total ✗", style="bold red")
    table.add_row(Text("Σ layers", style="bold"), fmt.score(layer_sum), "", check)
    table.add_row(Text("total (stored)", style="bold"), fmt.score(total), "", "")
    return table
