"""A table that draws only the rows on screen: 25,000 rows sort and redraw in milliseconds.

Textual's DataTable measures every row it holds (seconds for a full ranking), so this
is a Line-API ``ScrollView``: the rows are a numpy array of row ids in display
order, each visible line asks the owner for its cells, and sorting is the owner's
``argsort``. Line 0 is the header (click it to sort); the cursor is a display position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tui.cells import CellText
from tui.sorting import SortState

HEADER_LINES = 1
COLUMN_GAP = 1
STRIP_CACHE_SIZE = 512
SORT_MARKS = {True: "▼", False: "▲"}
DOUBLE_CLICK = 2


@dataclass(frozen=True)
class Column:
    """One column: ``width`` 0 takes the room the fixed columns leave (one such column per table)."""

    key: str
    title: str
    width: int = 0
    justify: Literal["left", "right"] = "left"
    descending_first: bool = False  # scores read best first: the first click sorts them descending


class VirtualTable(ScrollView, can_focus=True):
    """Rows by id, drawn on demand; posts RowHighlighted, RowSelected and SortRequested."""

    BINDINGS = [
        Binding("up,k", "move(-1)", "up", show=False, tooltip="the row above"),
        Binding("down,j", "move(1)", "down", show=False, tooltip="the row below"),
        Binding("pageup", "page(-1)", "page up", show=False, tooltip="one screen up"),
        Binding("pagedown", "page(1)", "page down", show=False, tooltip="one screen down"),
        Binding("home,g", "jump(0)", "first", show=False, tooltip="the first row"),
        Binding("end,G", "jump(-1)", "last", show=False, tooltip="the last row"),
        Binding(
            "enter",
            "select",
            "open",
            show=False,
            tooltip="tests: select the review; ranking, corruption: the pair side by side (or double click)",
        ),
        Binding("s", "next_sort", "sort column", tooltip="sort by the next column (or click a column header)"),
        Binding("o", "reverse_sort", "reverse order", tooltip="reverse the sort: most helpful ↔ most harmful first"),
    ]
    COMPONENT_CLASSES = {"virtual-table--header", "virtual-table--cursor", "virtual-table--empty"}
    DEFAULT_CSS = """
    VirtualTable { overflow-x: hidden; overflow-y: auto; }
    VirtualTable > .virtual-table--header { text-style: bold; background: $panel; color: $text; }
    VirtualTable > .virtual-table--cursor { background: $surface-lighten-2; }
    VirtualTable:focus > .virtual-table--cursor { background: $accent 40%; }
    VirtualTable > .virtual-table--empty { color: $text-muted; text-style: italic; }
    """

    cursor: reactive[int] = reactive(0, always_update=True, repaint=False)

    @dataclass
    class RowHighlighted(Message):
        table: "VirtualTable"
        row_id: int

        @property
        def control(self) -> "VirtualTable":
            return self.table

    @dataclass
    class RowSelected(Message):
        table: "VirtualTable"
        row_id: int

        @property
        def control(self) -> "VirtualTable":
            return self.table

    @dataclass
    class SortRequested(Message):
        table: "VirtualTable"
        sort: SortState

        @property
        def control(self) -> "VirtualTable":
            return self.table

    def set_columns(self, columns: Sequence[Column]) -> None:
        """Other columns (a view that learns what its store holds once it is open)."""
        if list(columns) != self.columns:
            self.columns = list(columns)
            self._strips.clear()
            self.refresh()

    def __init__(
        self,
        columns: Sequence[Column],
        cells: Callable[[int], Sequence[CellText]],
        *,
        empty_text: str = "no rows",
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.columns = list(columns)
        self._cells = cells
        self.empty_text = empty_text
        self.order: np.ndarray = np.zeros(0, dtype=np.int64)
        self.sort: SortState | None = None
        self._strips: LRUCache[tuple, Strip] = LRUCache(STRIP_CACHE_SIZE)
        self._generation = 0

    # ------------------------------------------------------------ content
    @property
    def row_count(self) -> int:
        return len(self.order)

    @property
    def cursor_row(self) -> int | None:
        """The row id under the cursor (None when the table is empty)."""
        return int(self.order[self.cursor]) if 0 <= self.cursor < len(self.order) else None

    def show(self, order: np.ndarray, sort: SortState | None = None, *, cursor_row: int | None = None) -> None:
        """Display the row ids ``order``; the cursor goes to ``cursor_row`` if shown, else to the top."""
        self.order = np.asarray(order, dtype=np.int64)
        self.sort = sort
        self.invalidate()
        self.virtual_size = Size(self.size.width, len(self.order) + HEADER_LINES)
        position = 0
        if cursor_row is not None:
            found = np.flatnonzero(self.order == cursor_row)
            position = int(found[0]) if found.size else 0
        self.cursor = position

    def invalidate(self) -> None:
        """Forget drawn rows (their cells changed) and redraw."""
        self._generation += 1
        self._strips.clear()
        self.refresh()

    def position_of(self, row_id: int) -> int | None:
        found = np.flatnonzero(self.order == row_id)
        return int(found[0]) if found.size else None

    # ------------------------------------------------------------ cursor
    def validate_cursor(self, value: int) -> int:
        return max(0, min(value, len(self.order) - 1))

    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh()
        self._scroll_to_cursor()
        if self.cursor_row is not None:
            self.post_message(self.RowHighlighted(self, self.cursor_row))

    @property
    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - HEADER_LINES)

    def _scroll_to_cursor(self) -> None:
        top = int(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + self._page:
            self.scroll_to(y=self.cursor - self._page + 1, animate=False)

    def action_move(self, delta: int) -> None:
        self.cursor += delta

    def action_page(self, direction: int) -> None:
        self.cursor += direction * self._page

    def action_jump(self, position: int) -> None:
        self.cursor = position if position >= 0 else len(self.order) - 1

    def action_select(self) -> None:
        if self.cursor_row is not None:
            self.post_message(self.RowSelected(self, self.cursor_row))

    # ------------------------------------------------------------ sorting
    def _request_sort(self, column: Column, *, toggle: bool) -> None:
        if toggle and self.sort is not None and self.sort.column == column.key:
            self.post_message(self.SortRequested(self, self.sort.reversed()))
        else:
            self.post_message(self.SortRequested(self, SortState(column.key, column.descending_first)))

    def action_next_sort(self) -> None:
        keys = [column.key for column in self.columns]
        current = keys.index(self.sort.column) if self.sort and self.sort.column in keys else -1
        self._request_sort(self.columns[(current + 1) % len(self.columns)], toggle=False)

    def action_reverse_sort(self) -> None:
        if self.sort is not None:
            self.post_message(self.SortRequested(self, self.sort.reversed()))

    # ------------------------------------------------------------ mouse
    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y < HEADER_LINES:
            column = self._column_at(offset.x)
            if column is not None:
                self._request_sort(column, toggle=True)
            return
        position = int(self.scroll_y) + offset.y - HEADER_LINES
        if position < len(self.order):
            self.cursor = position
            if event.chain >= DOUBLE_CLICK:
                self.action_select()

    def _column_at(self, x: int) -> Column | None:
        left = 0
        for column, width in zip(self.columns, self._widths(self.size.width)):
            if left <= x < left + width + COLUMN_GAP:
                return column
            left += width + COLUMN_GAP
        return None

    # ------------------------------------------------------------ drawing
    def _widths(self, total: int) -> list[int]:
        fixed = sum(column.width for column in self.columns) + COLUMN_GAP * (len(self.columns) - 1)
        return [column.width or max(0, total - fixed) for column in self.columns]

    def _line(self, cells: Sequence[CellText], width: int, base: Style) -> Strip:
        segments: list[Segment] = []
        for index, ((text, style), column, cell_width) in enumerate(zip(cells, self.columns, self._widths(width))):
            if index:
                segments.append(Segment(" " * COLUMN_GAP, base))
            fitted = text.rjust(cell_width) if column.justify == "right" and cell_len(text) <= cell_width else text
            segments.append(Segment(set_cell_size(fitted, cell_width), base + style if style else base))
        return Strip(segments).adjust_cell_length(width, base)

    def _header(self, width: int) -> Strip:
        style = self.get_component_rich_style("virtual-table--header")
        titles = []
        for column in self.columns:
            mark = f" {SORT_MARKS[self.sort.descending]}" if self.sort and self.sort.column == column.key else ""
            titles.append((column.title + mark, None))
        return self._line(titles, width, style)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        if y < HEADER_LINES:
            return self._header(width)
        position = int(self.scroll_y) + y - HEADER_LINES
        base = self.rich_style
        if not len(self.order):
            if position == 0:
                return Strip(
                    [
                        Segment(
                            set_cell_size(self.empty_text, width),
                            base + self.get_component_rich_style("virtual-table--empty"),
                        )
                    ]
                )
            return Strip.blank(width, base)
        if position >= len(self.order):
            return Strip.blank(width, base)
        row_id = int(self.order[position])
        is_cursor = position == self.cursor
        key = (row_id, width, is_cursor, self.has_focus, self._generation)
        strip = self._strips.get(key)
        if strip is None:
            if is_cursor:
                base = base + self.get_component_rich_style("virtual-table--cursor")
            strip = self._line(self._cells(row_id), width, base)
            self._strips[key] = strip
        return strip

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(event.size.width, len(self.order) + HEADER_LINES)
        self._strips.clear()
