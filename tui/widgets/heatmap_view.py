"""Heatmap: test × train influence on a diverging scale, extremes marked, Enter opens a cell's pair.

The notebook's first analysis, for every pair rather than one batch. The matrix is
read and pooled to the widget's size in a thread worker; each cell shows the value of
largest magnitude in its block, so the extremes survive the downsampling. It colours
by the app's score: raw influence, or relative influence (a training review whose
self-influence is not > 0 has none, and its cells stay blank like pending ones).
"""

from __future__ import annotations

import math

import numpy as np
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static
from textual.worker import Worker

from store.analysis import RELATIVE, relative_influence, relative_scale
from tui import format as fmt
from tui import palette
from tui.data import StoreData
from tui.export import ViewTable
from tui.messages import PairRequested
from tui.pooling import Extreme, PooledMatrix, pool_matrix
from tui.widgets.base import StateView
from tui.workers import failure_of

LABEL_WIDTH = 7  # test index labels left of the grid
CELL_WIDTH = 2
AXIS_LINES = 1
MAX_MARK, MIN_MARK = "▲", "▼"
INVALID_MARK = "!"
CURSOR_STYLE = Style(reverse=True, bold=True)
POOLING_GROUP = "heatmap"
BLANK = Style()  # every segment carries a style: Textual's NO_COLOR filter expects one


class HeatmapCanvas(Widget, can_focus=True):
    """Draws a PooledMatrix; arrows move a cell cursor, Enter (or a double click) opens its pair."""

    BINDINGS = [
        Binding("up,k", "move(0, -1)", "up", show=False, tooltip="the cell above (earlier test reviews)"),
        Binding("down,j", "move(0, 1)", "down", show=False, tooltip="the cell below"),
        Binding("left,h", "move(-1, 0)", "left", show=False, tooltip="the cell to the left (earlier training reviews)"),
        Binding("right,l", "move(1, 0)", "right", show=False, tooltip="the cell to the right"),
        Binding("plus", "jump('max')", "most positive", key_display="+", tooltip="the cell of the most helpful pair"),
        Binding("minus", "jump('min')", "most negative", key_display="-", tooltip="the cell of the most harmful pair"),
        Binding(
            "enter",
            "open",
            "open pair",
            tooltip="the pair behind the cell (its largest |I|) side by side (or double click)",
        ),
        Binding(
            "z",
            "toggle_scale",
            "row scale",
            tooltip="colour each test row on its own scale (↔ one scale for the whole matrix)",
        ),
    ]
    cursor: reactive[tuple[int, int]] = reactive((0, 0))  # (row, col) of the grid
    per_row: reactive[bool] = reactive(False)  # colour each row of cells relative to its own largest |I|

    class CursorMoved(Message):
        """The cell under the cursor changed: the view describes it."""

    class Resized(Message):
        """The grid that fits changed: the view pools the matrix again."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.pooled: PooledMatrix | None = None

    @property
    def grid_size(self) -> tuple[int, int]:
        """How many (rows, cols) of cells fit."""
        return max(1, self.size.height - AXIS_LINES), max(1, (self.size.width - LABEL_WIDTH) // CELL_WIDTH)

    def show(self, pooled: PooledMatrix | None) -> None:
        self.pooled = pooled
        self.cursor = self.validate_cursor(self.cursor)
        self.refresh()
        self.post_message(self.CursorMoved())

    def validate_cursor(self, cursor: tuple[int, int]) -> tuple[int, int]:
        if self.pooled is None:
            return 0, 0
        rows, cols = self.pooled.shape
        return max(0, min(rows - 1, cursor[0])), max(0, min(cols - 1, cursor[1]))

    def watch_cursor(self) -> None:
        self.refresh()
        self.post_message(self.CursorMoved())

    def watch_per_row(self) -> None:
        self.refresh()
        self.post_message(self.CursorMoved())

    def action_toggle_scale(self) -> None:
        self.per_row = not self.per_row

    def action_move(self, dx: int, dy: int) -> None:
        self.cursor = (self.cursor[0] + dy, self.cursor[1] + dx)

    def cell_of(self, extreme: Extreme) -> tuple[int, int]:
        assert self.pooled is not None
        row = int(self.pooled.row_edges.searchsorted(extreme.test_index, side="right")) - 1
        col = int(self.pooled.col_edges.searchsorted(extreme.train_index, side="right")) - 1
        return row, col

    def action_jump(self, which: str) -> None:
        pooled = self.pooled
        extreme = None if pooled is None else pooled.maximum if which == "max" else pooled.minimum
        if extreme is not None:
            self.cursor = self.cell_of(extreme)

    def pair_at_cursor(self) -> tuple[int, int] | None:
        """The (test, train) pair behind the cursor's cell; None when it is pending."""
        if self.pooled is None:
            return None
        row, col = self.cursor
        if math.isnan(self.pooled.values[row, col]):
            return None
        return int(self.pooled.test_index[row, col]), int(self.pooled.train_index[row, col])

    def action_open(self) -> None:
        pair = self.pair_at_cursor()
        if pair is None:
            self.notify("This cell is pending: its scores are not computed yet.", severity="warning")
            return
        self.post_message(PairRequested(*pair))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or self.pooled is None or offset.y < AXIS_LINES or offset.x < LABEL_WIDTH:
            return
        self.cursor = self.validate_cursor((offset.y - AXIS_LINES, (offset.x - LABEL_WIDTH) // CELL_WIDTH))
        if event.chain >= 2:
            self.action_open()

    # ------------------------------------------------------------ drawing
    def _marks(self) -> dict[tuple[int, int], str]:
        pooled = self.pooled
        assert pooled is not None
        marks = {}
        for extreme, mark in ((pooled.maximum, MAX_MARK), (pooled.minimum, MIN_MARK)):
            if extreme is not None:
                marks[self.cell_of(extreme)] = mark
        return marks

    def _axis(self, width: int) -> Strip:
        assert self.pooled is not None
        n_train = int(self.pooled.col_edges[-1])
        span = self.pooled.shape[1] * CELL_WIDTH
        left, right = "train 0", f"{n_train - 1:,}"
        line = " " * LABEL_WIDTH + left + " " * max(1, span - len(left) - len(right)) + right
        return Strip([Segment(line[:width], Style(dim=True))]).adjust_cell_length(width, BLANK)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        pooled = self.pooled
        if pooled is None:
            return Strip.blank(width, BLANK)
        if y < AXIS_LINES:
            return self._axis(width)
        row = y - AXIS_LINES
        if row >= pooled.shape[0]:
            return Strip.blank(width, BLANK)
        first = int(pooled.row_edges[row])
        segments = [Segment(f"{first:>{LABEL_WIDTH - 1}} ", Style(dim=True))]
        marks = self._marks()
        no_color = self.app.no_color
        scale = float(pooled.row_scale[row]) if self.per_row else pooled.scale
        for col in range(pooled.shape[1]):
            mark = INVALID_MARK if pooled.invalid[row, col] else marks.get((row, col), "")
            cell = palette.cell(float(pooled.values[row, col]), scale, no_color=no_color, mark=mark)
            style = cell.style + CURSOR_STYLE if (row, col) == self.cursor and self.has_focus else cell.style
            text = "[]" if (row, col) == self.cursor and no_color else cell.text
            segments.append(Segment(text, style))
        return Strip(segments).adjust_cell_length(width, BLANK)

    def on_resize(self) -> None:
        self.post_message(self.Resized())

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()


def legend(scale: float, per_row: bool, no_color: bool, kind: str = "") -> Text:
    """The colour bar from −scale to +scale (or relative to each row's largest |I|), with what the marks mean."""
    low, high, basis = (
        ("−max", "+max", "each row to its largest |I|, z: one scale")
        if per_row
        else (fmt.score(-scale), fmt.score(scale), "99th pct of |I|, z: per row")
    )
    text = Text(f"{low} ")
    for signed in range(-palette.LEVELS, palette.LEVELS + 1):
        cell = palette.cell(signed / palette.LEVELS, 1.0, no_color=no_color)
        text.append(cell.text, style=cell.style)
    text.append(f" {high} ({basis})  ")
    blank = "pending or n/a" if kind == RELATIVE else "pending"
    text.append(f"{MAX_MARK} max {MIN_MARK} min {palette.PENDING_GLYPH} {blank} {INVALID_MARK} NaN", style="dim")
    return text


def _title(kind: str) -> str:
    """What the heatmap colours by."""
    return "Test × train relative influence" if kind == RELATIVE else "Test × train influence"


class HeatmapView(StateView):
    """The canvas with a title, a legend and a line about the cell under the cursor."""

    WATCHES = ("variant", "reg_index", "content_version", "score_kind")

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        # (variant, λ index, content version, score, rows, cols): what the canvas should show, and what is
        # being pooled.
        # One pooling at a time: a thread cannot be interrupted, and new blocks may land every half second.
        self._pool_wanted: tuple | None = None
        self._pool_running: tuple | None = None
        self._pooled_kind = ""  # the score of the matrix the canvas shows

    def compose(self) -> ComposeResult:
        yield Static(id="heatmap-title")
        yield HeatmapCanvas(id="heatmap-canvas")
        yield Static(id="heatmap-legend")
        yield Static(id="heatmap-cell")

    @property
    def canvas(self) -> HeatmapCanvas:
        return self.query_one(HeatmapCanvas)

    def focus_main(self) -> None:
        self.canvas.focus()

    def update_view(self) -> None:
        data, app = self.data, self.explorer
        title = self.query_one("#heatmap-title", Static)
        if data is None:
            title.update(self.no_store, layout=False)
            self._pool_wanted = None
            self.canvas.show(None)
            self.query_one("#heatmap-legend", Static).update("", layout=False)
            return
        if not self.canvas.size.area:
            return  # not laid out yet: on_resize comes back
        rows, cols = self.canvas.grid_size
        request = (app.variant, app.reg_index, app.content_version, app.score_kind, rows, cols)
        if request == self._pool_wanted:
            return
        self._pool_wanted = request
        title.update(
            f"{_title(app.score_kind)} · {app.variant} · λ {fmt.lam(data.regularizations[app.reg_index])} · reading…",
            layout=False,
        )
        if self._pool_running is None:
            self._start_pooling(data, request)

    def _start_pooling(self, data: StoreData, request: tuple) -> None:
        self._pool_running = request
        self._pool(data, request)

    @on(HeatmapCanvas.Resized)
    def _canvas_resized(self) -> None:
        if self.is_shown and self.data is not None:
            self.update_view()

    @work(thread=True, group=POOLING_GROUP, exit_on_error=False)
    def _pool(self, data: StoreData, request: tuple) -> None:
        variant, reg_index, _, kind, rows, cols = request
        scored = data.scored
        if kind == RELATIVE:
            train_self = data.reader.self_influence(variant, reg_index, "train")
            scored = scored & np.isfinite(relative_scale(train_self))  # no relative score: blank, not NaN!

            def read(tests: slice) -> np.ndarray:
                return relative_influence(data.reader.influence_matrix(variant, reg_index, tests=tests), train_self)
        else:

            def read(tests: slice) -> np.ndarray:
                return data.reader.influence_matrix(variant, reg_index, tests=tests)

        pooled = pool_matrix(read, data.n_test, data.n_train, scored, rows, cols)
        self.app.call_from_thread(self._pooled_ready, request, pooled)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The pooling failed: nothing is pooling now, and the next change of state tries again."""
        failure = failure_of(event, "Heatmap failed")
        if failure is None:
            return
        self._pool_running = self._pool_wanted = None
        self.query_one("#heatmap-title", Static).update(
            Text("The heatmap could not be drawn (d: details).", style="bold red"), layout=False
        )
        self.post_message(failure)

    def _pooled_ready(self, request: tuple, pooled: PooledMatrix) -> None:
        self._pool_running = None
        data, app = self.data, self.explorer
        if request != self._pool_wanted:  # the state moved on meanwhile: pool what is wanted now
            if self._pool_wanted is not None and data is not None:
                self._start_pooling(data, self._pool_wanted)
            return
        if data is None:
            return
        test_block = int(pooled.row_edges[1] - pooled.row_edges[0])
        train_block = int(pooled.col_edges[1] - pooled.col_edges[0])
        block = (
            "one pair per cell"
            if test_block == train_block == 1
            else (f"cell = {test_block}×{train_block} pairs, max |I|")
        )
        self.query_one("#heatmap-title", Static).update(
            f"{_title(request[3])} · {app.variant} · λ {fmt.lam(data.regularizations[app.reg_index])} · {block}",
            layout=False,
        )
        self._pooled_kind = request[3]
        self.canvas.show(pooled)

    @on(HeatmapCanvas.CursorMoved)
    def _describe_cell(self) -> None:
        pooled = self.canvas.pooled
        line = self.query_one("#heatmap-cell", Static)
        if pooled is None:
            line.update("", layout=False)
            return
        self.query_one("#heatmap-legend", Static).update(
            legend(pooled.scale, self.canvas.per_row, self.app.no_color, self._pooled_kind), layout=False
        )
        row, col = self.canvas.cursor
        tests = f"test {pooled.row_edges[row]:,}–{pooled.row_edges[row + 1] - 1:,}"
        trains = f"train {pooled.col_edges[col]:,}–{pooled.col_edges[col + 1] - 1:,}"
        pair = self.canvas.pair_at_cursor()
        if pair is None:
            detail = "pending"
        else:
            detail = f"{fmt.score(float(pooled.values[row, col]))} at test #{pair[0]} × train #{pair[1]} (enter opens)"
        extremes = "  ·  ".join(
            f"{label} {fmt.score(e.value)} at #{e.test_index}×#{e.train_index}"
            for label, e in ((f"{MAX_MARK} max", pooled.maximum), (f"{MIN_MARK} min", pooled.minimum))
            if e is not None
        )
        line.update(Text(f"{tests} × {trains}: {detail}\n{extremes}"), layout=False)

    def table(self) -> ViewTable | None:
        pooled, data, app = self.canvas.pooled, self.data, self.explorer
        if pooled is None or data is None:
            return None
        rows, cols = pooled.shape
        relative = self._pooled_kind == RELATIVE
        return ViewTable(
            name=f"heatmap-{app.variant}-lambda{fmt.lam(data.regularizations[app.reg_index])}"
            + ("-relative" if relative else ""),
            columns=[
                "test_from",
                "test_to",
                "train_from",
                "train_to",
                "max_abs_relative_influence" if relative else "max_abs_influence",
                "test_index",
                "train_index",
                "invalid",
            ],
            rows=[
                [
                    int(pooled.row_edges[r]),
                    int(pooled.row_edges[r + 1] - 1),
                    int(pooled.col_edges[c]),
                    int(pooled.col_edges[c + 1] - 1),
                    float(pooled.values[r, c]),
                    int(pooled.test_index[r, c]),
                    int(pooled.train_index[r, c]),
                    bool(pooled.invalid[r, c]),
                ]
                for r in range(rows)
                for c in range(cols)
            ],
        )
