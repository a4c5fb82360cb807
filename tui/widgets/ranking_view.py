"""Influence ranking: every training review on the selected test review, both ends, nothing cut."""

from __future__ import annotations

import numpy as np
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.widgets import Static

from tui import format as fmt
from tui.cells import CellText, corrupted_cell, rank_cell, score_cell
from tui.data import NO_PAIR, Row
from tui.export import ViewTable
from tui.messages import PairRequested
from tui.sorting import SortState, descending_ranks, sort_rows
from tui.widgets.base import StateView
from tui.widgets.virtual_table import Column, VirtualTable

LABEL_WIDTH = 9


class RankingView(StateView):
    """The table of training reviews; the cursor row is the pair every other view shows."""

    WATCHES = ("test_index", "variant", "reg_index", "content_version", "ranking_sort", "train_index")
    COLUMNS = [
        Column("rank", "rank", 7, "right"),
        Column("index", "train #", 7, "right"),
        Column("influence", "influence", 11, "right", descending_first=True),
        Column("label", "label", LABEL_WIDTH),
        Column("corrupted", "corr", 4, descending_first=True),
        Column("text", "text"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown_for: tuple | None = None  # (test, variant, λ, version, sort) the table was built for
        self._row: Row | None = None
        self._shown = np.zeros(0)
        self._ranks = np.zeros(0, dtype=np.int64)

    def compose(self) -> ComposeResult:
        yield Static(id="ranking-test", markup=False)
        yield VirtualTable(self.COLUMNS, self._cells, id="ranking-table")
        yield Static(id="ranking-pair", markup=False)

    @property
    def table_widget(self) -> VirtualTable:
        return self.query_one("#ranking-table", VirtualTable)

    def focus_main(self) -> None:
        self.table_widget.focus()

    def update_view(self) -> None:
        data, app = self.data, self.explorer
        table = self.table_widget
        if data is None:
            self.query_one("#ranking-test", Static).update(self.no_store, layout=False)
            self._shown_for, self._row = None, None
            table.show(np.zeros(0, dtype=np.int64))
            self._describe_pair()
            return
        key = (app.test_index, app.variant, app.reg_index, app.content_version, app.ranking_sort)
        if key != self._shown_for:
            resorted = self._shown_for is not None and key[-1] != self._shown_for[-1]
            self._shown_for = key
            self._row = data.row(app.variant, app.reg_index, app.test_index)
            self._shown = shown = self._row.shown
            self._ranks = descending_ranks(shown)
            self._labels = data.train_labels(app.variant)
            self.query_one("#ranking-test", Static).update(self._header(), layout=False)
            # A new sort order starts at its top; otherwise the selected pair stays selected.
            keep = None if resorted or app.train_index == NO_PAIR else app.train_index
            table.show(
                sort_rows(self._sort_keys(app.ranking_sort, shown), app.ranking_sort.descending),
                app.ranking_sort,
                cursor_row=keep,
            )
        elif app.train_index != NO_PAIR and app.train_index != table.cursor_row:
            position = table.position_of(app.train_index)
            if position is not None:
                table.cursor = position
        self._describe_pair()

    def _sort_keys(self, sort: SortState, shown: np.ndarray) -> np.ndarray:
        data = self.data
        assert data is not None
        return {
            "rank": lambda: -shown,
            "index": lambda: np.arange(data.n_train),
            "influence": lambda: shown,
            "label": lambda: self._labels,
            "corrupted": lambda: data.corrupted.astype(np.int8),
            "text": lambda: np.array([text.lower() for text in data.train.text], dtype=object),
        }[sort.column]()

    def _header(self) -> Text:
        data, app, row = self.data, self.explorer, self._row
        assert data is not None and row is not None
        index = app.test_index
        label, prediction = int(data.test.label[index]), int(data.test.prediction[index])
        text = Text()
        text.append(f"Test #{index}", style="bold")
        text.append(f"  true {data.label_name(label)}, predicted {data.label_name(prediction)}")
        text.append(f"  ·  {fmt.count(data.n_train)} training reviews")
        pending = data.n_train - row.n_scored
        if pending:
            text.append(f", {fmt.count(pending)} pending", style="yellow")
        invalid = int(row.invalid.sum())
        if invalid:
            text.append(f"  ⚠ {fmt.count(invalid)} scores are NaN/inf (numerical failure)", style="bold red")
        text.append("\n")
        text.append(fmt.one_line(data.test.text[index]), style="italic")
        return text

    def _cells(self, row_id: int) -> list[CellText]:
        data, row = self.data, self._row
        assert data is not None and row is not None
        return [
            rank_cell(int(self._ranks[row_id])),
            (str(row_id), None),
            score_cell(float(row.values[row_id]), bool(row.scored[row_id])),
            (data.label_name(int(self._labels[row_id])), None),
            corrupted_cell(bool(data.corrupted[row_id])),
            (fmt.one_line(data.train.text[row_id]), None),
        ]

    def _describe_pair(self) -> None:
        data, row, train = self.data, self._row, self.table_widget.cursor_row
        pair = self.query_one("#ranking-pair", Static)
        if data is None or row is None or train is None:
            pair.update("", layout=False)
            return
        value, _ = score_cell(float(row.values[train]), bool(row.scored[train]))
        rank = int(self._ranks[train])
        where = f"rank {fmt.count(rank)}/{fmt.count(row.n_scored)}" if rank else "not ranked yet"
        pair.update(f"train #{train}: {value}, {where}  ·  enter: side by side", layout=False)

    # ------------------------------------------------------------ events
    @on(VirtualTable.RowHighlighted, "#ranking-table")
    def _highlight(self, message: VirtualTable.RowHighlighted) -> None:
        self.explorer.train_index = message.row_id
        self._describe_pair()

    @on(VirtualTable.RowSelected, "#ranking-table")
    def _select(self, message: VirtualTable.RowSelected) -> None:
        self.post_message(PairRequested(self.explorer.test_index, message.row_id))

    @on(VirtualTable.SortRequested, "#ranking-table")
    def _sort(self, message: VirtualTable.SortRequested) -> None:
        self.explorer.ranking_sort = message.sort

    def table(self) -> ViewTable | None:
        data, row, app = self.data, self._row, self.explorer
        if data is None or row is None:
            return None
        lam = fmt.lam(data.regularizations[app.reg_index])
        return ViewTable(
            name=f"ranking-test{app.test_index}-{app.variant}-lambda{lam}",
            columns=[
                "variant",
                "lambda",
                "test_index",
                "rank",
                "train_index",
                "train_dataset_index",
                "influence",
                "train_label",
                "train_label_used",
                "corrupted",
                "text",
            ],
            rows=[
                [
                    app.variant,
                    data.regularizations[app.reg_index],
                    app.test_index,
                    int(self._ranks[i]) or "",
                    int(i),
                    int(data.train.dataset_index[i]),
                    float(self._shown[i]),
                    int(data.train.label[i]),
                    int(self._labels[i]),
                    bool(data.corrupted[i]),
                    data.train.text[i],
                ]
                for i in self.table_widget.order
            ],
        )
