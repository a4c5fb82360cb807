"""Test reviews (a causal LM's queries): index, true label (reference completion), prediction (greedy
completion), confidence (the reference's loss per token), self-influence, text; sortable and filterable."""

from __future__ import annotations

import numpy as np
from rich.style import Style
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Input

from tui import format as fmt
from tui.cells import PENDING_STYLE, CellText, score_cell
from tui.data import NO_PAIR
from tui.export import ViewTable
from tui.sorting import matching_rows, sort_rows, text_keys
from tui.widgets.base import StateView
from tui.widgets.virtual_table import Column, VirtualTable

SELECTED_MARK = "▶"
WRONG = Style(color="red")
LABEL_WIDTH = 9
COMPLETION_WIDTH = 14


class TestsView(StateView):
    """Enter (or a double click) on a review makes it the selected test review of every view."""

    __test__ = False  # not a pytest test class, whatever its name says
    WATCHES = ("test_index", "variant", "reg_index", "content_version", "tests_sort")
    BINDINGS = [
        Binding(
            "slash",
            "focus_filter",
            "filter",
            key_display="/",
            tooltip="type to keep the reviews whose text contains it; enter returns to the table",
        ),
        Binding("escape", "clear_filter", "clear filter", show=False, tooltip="show every test review again"),
    ]
    COLUMNS = [
        Column("index", "#", 7, "right"),
        Column("label", "label", LABEL_WIDTH),
        Column("prediction", "predicted", LABEL_WIDTH),
        Column("confidence", "conf", 5, "right", descending_first=True),
        Column("self_influence", "self-infl", 10, "right", descending_first=True),
        Column("text", "text"),
    ]
    # A causal LM's queries: the same keys (sort orders carry over), other contents.
    COMPLETION_COLUMNS = [
        Column("index", "#", 7, "right"),
        Column("label", "reference", COMPLETION_WIDTH),
        Column("prediction", "generated", COMPLETION_WIDTH),
        Column("confidence", "loss/tok", 8, "right"),
        Column("self_influence", "self-infl", 10, "right", descending_first=True),
        Column("text", "prompt"),
    ]

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter by text (/ to focus, escape to clear)", id="tests-filter")
        yield VirtualTable(self.COLUMNS, self._cells, empty_text="no test review matches the filter", id="tests-table")

    @property
    def table_widget(self) -> VirtualTable:
        return self.query_one("#tests-table", VirtualTable)

    def focus_main(self) -> None:
        self.table_widget.focus()

    def update_view(self) -> None:
        data = self.data
        table = self.table_widget
        if data is None:
            table.empty_text = self.no_store
            table.show(np.zeros(0, dtype=np.int64))
            return
        table.set_columns(self.COMPLETION_COLUMNS if data.is_causal_lm else self.COLUMNS)
        table.empty_text = f"no {data.words.test} matches the filter"
        self._self_influence = data.test_self(self.explorer.variant, self.explorer.reg_index)
        self._confidence = data.test_confidence()
        rows = matching_rows(data.test.text, self.query_one("#tests-filter", Input).value)
        sort = self.explorer.tests_sort
        order = sort_rows(self._sort_keys(sort.column), sort.descending, rows)
        table.show(order, sort, cursor_row=table.cursor_row if table.row_count else self.explorer.test_index)

    def _sort_keys(self, column: str) -> np.ndarray:
        data = self.data
        assert data is not None
        if data.is_causal_lm:  # the generated completions sort as texts
            predictions = lambda: text_keys([data.prediction_text(i) for i in range(data.n_test)])  # noqa: E731
        else:
            predictions = lambda: data.test.prediction  # noqa: E731
        return {
            "index": lambda: np.arange(data.n_test),
            "label": lambda: data.label_sort_keys(data.test.label, "test"),
            "prediction": predictions,
            "confidence": lambda: self._confidence,
            "self_influence": lambda: self._self_influence.astype(np.float64),
            "text": lambda: text_keys(data.test.text),
        }[column]()

    def _cells(self, row: int) -> list[CellText]:
        data = self.data
        assert data is not None
        selected = SELECTED_MARK if row == self.explorer.test_index else ""
        wrong = data.prediction_wrong(row)
        pending = wrong is None
        influence = float(self._self_influence[row])  # written with the queries or at the end: pending until then
        confidence = fmt.PENDING if pending else fmt.fraction(float(self._confidence[row]), 2)
        text = data.test.completions.prompt[row] if data.is_causal_lm else data.test.text[row]
        return [
            (f"{selected}{row}", None),
            (fmt.one_line(data.label_name(int(data.test.label[row]), "test")), None),
            (fmt.one_line(data.prediction_text(row)), PENDING_STYLE if pending else (WRONG if wrong else None)),
            (confidence, PENDING_STYLE if pending else None),
            score_cell(influence, data.scores_done or not np.isnan(influence)),
            (fmt.one_line(text), None),
        ]

    # ------------------------------------------------------------ events
    @on(VirtualTable.SortRequested, "#tests-table")
    def _sort(self, message: VirtualTable.SortRequested) -> None:
        self.explorer.tests_sort = message.sort

    @on(VirtualTable.RowSelected, "#tests-table")
    def _select(self, message: VirtualTable.RowSelected) -> None:
        self.explorer.select_pair(message.row_id, NO_PAIR)
        self.explorer.action_show_tab("ranking")

    @on(Input.Changed, "#tests-filter")
    def _filter(self) -> None:
        self.update_view()

    @on(Input.Submitted, "#tests-filter")
    def _filter_done(self) -> None:
        self.table_widget.focus()

    def action_focus_filter(self) -> None:
        self.query_one("#tests-filter", Input).focus()

    def action_clear_filter(self) -> None:
        self.query_one("#tests-filter", Input).value = ""
        self.table_widget.focus()

    def table(self) -> ViewTable | None:
        data = self.data
        if data is None:
            return None
        ids = self.table_widget.order
        lm = data.is_causal_lm
        columns = ["label", "prediction", "confidence"]
        if lm:
            columns = ["reference", "generated", "loss_per_token"]
        return ViewTable(
            name=f"{data.words.tests.replace(' ', '_')}-{self.explorer.variant}-"
            f"lambda{fmt.lam(data.regularizations[self.explorer.reg_index])}",
            columns=["test_index", "test_dataset_index", *columns, "self_influence", "text"],
            rows=[
                [
                    int(i),
                    int(data.test.dataset_index[i]),
                    data.label_name(int(data.test.label[i]), "test") if lm else int(data.test.label[i]),
                    data.prediction_text(int(i)) if lm else int(data.test.prediction[i]),
                    float(self._confidence[i]),
                    float(self._self_influence[i]),
                    data.test.text[i],
                ]
                for i in ids
            ],
        )
