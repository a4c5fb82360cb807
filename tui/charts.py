"""plotext charts rendered to rich Text at a given size (textual-plotext is not a dependency).

plotext keeps one global figure, so these functions run on the UI thread only. The
strip chart plots every training review: values are first snapped to the chart's
vertical resolution and de-duplicated, which draws exactly the same dots as plotting
all 25,000 of them per layer, in a few milliseconds. plotext is imported on the first
chart, not at start-up: its import alone takes a fifth of a second.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
from rich.text import Text

from tui.palette import NEGATIVE_RAMP, POSITIVE_RAMP

THEME = "simple"  # no colours on the frame: it sits on the app's own background
DOTS_PER_ROW = 4  # braille resolution: four dots per character row
ALL_COLOUR, SELECTED_COLOUR = 244, 226
HELPFUL_COLOUR, HARMFUL_COLOUR = POSITIVE_RAMP[-1], NEGATIVE_RAMP[-1]
MIN_WIDTH, MIN_HEIGHT = 20, 6


def _plotext() -> ModuleType:
    import plotext

    return plotext


def _start(width: int, height: int, title: str) -> ModuleType:
    """A cleared figure of the given size; returns the plotext module for the caller to draw with."""
    plt = _plotext()
    figure = plt.figure
    figure.clear()
    figure.plot_size(max(MIN_WIDTH, width), max(MIN_HEIGHT, height))
    figure.theme(THEME)
    figure.title(title)
    return plt


def _finish(plt: ModuleType, no_color: bool) -> Text:
    rendered = str(plt.figure.build())
    return Text(plt.uncolorize(rendered)) if no_color else Text.from_ansi(rendered)


def pair_bars(names: list[str], values: np.ndarray, width: int, height: int, title: str, no_color: bool) -> Text:
    """One bar per layer, coloured by sign and labelled with its value, over a zero line."""
    plt = _start(width, height, title)
    colours = [HELPFUL_COLOUR if value >= 0 else HARMFUL_COLOUR for value in values]
    markers = [plt.marker("full", plt.pixel(foreground=colour)) for colour in colours]
    heights = [float(v) for v in values]
    labels = [f"{v:+.3g}" for v in heights]
    plt.figure.draw(plt.figure.bar(names, heights, marker=markers, labeled=labels))
    plt.figure.line(0)
    return _finish(plt, no_color)


def layer_strips(
    names: list[str],
    rows: np.ndarray,
    lines: list[tuple[int, int]],
    width: int,
    height: int,
    title: str,
    no_color: bool,
) -> Text:
    """Every training review's influence per layer (grey dots), with ``lines`` (train index, colour) on top.

    No plotext legend (it would cover the first layer's dots): the caller names the lines.
    """
    plt = _start(width, height, title)
    figure = plt.figure
    finite = rows[np.isfinite(rows)]
    if finite.size:
        low, high = float(finite.min()), float(finite.max())
        span = high - low or 1.0
        levels = DOTS_PER_ROW * max(MIN_HEIGHT, height)
        dots = plt.marker("braille", plt.pixel(foreground=ALL_COLOUR))
        for layer, values in enumerate(rows, start=1):
            values = values[np.isfinite(values)]
            snapped = np.unique(np.round((values - low) / span * levels)) / levels * span + low
            figure.draw(figure.signal([layer] * snapped.size, snapped.tolist(), marker=dots))
        x = list(range(1, len(names) + 1))
        for train, colour in lines:
            signal = figure.signal(
                x, [float(v) for v in rows[:, train]], marker=plt.marker("hd", plt.pixel(foreground=colour))
            )
            signal.lines()
            figure.draw(signal)
    figure.ruler("x").ticks(list(range(1, len(names) + 1)), names)
    figure.ruler("x").lim(0.5, len(names) + 0.5)
    return _finish(plt, no_color)
