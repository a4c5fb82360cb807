"""Influence ranking: every training review on the selected test review, both ends, nothing cut.

Both scores are columns, raw influence and relative influence (RelatIF); the app's
``score_kind`` decides which one ranks (the rank column, the default sort) and is marked.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.widgets import Static

from store.analysis import INFLUENCE, RELATIVE
from tui import format as fmt
from tui.cells import CellText, corrupted_cell, kind_cell, rank_cell
from tui.data import NO_PAIR, Row
from tui.export import ViewTable
from tui.messages import PairRequested
from tui.sorting import SortState, descending_ranks, rank_of, sort_rows, text_keys
from tui.widgets.base import StateView
from tui.widgets.virtual_table import Column, VirtualTable

LABEL_WIDTH = 9
COMPLETION_WIDTH = 14
SCORE_WIDTH = 12
CHOSEN_MARK = "•"  # before the title of the score that ranks
OTHER_SCORE = Style(dim=True)  # the score that does not rank, beside the one that does


class RankingView(StateView):
    """The table of training reviews; the cursor row is the pair every other view shows."""

    WATCHES = ("test_index", "variant", "reg_index", "content_version", "ranking_sort", "train_index", "score_kind")
    COLUMNS = [
        Column("rank", "rank", 7, "right"),
        Column("index", "train #", 7, "right"),
        Column(INFLUENCE, "influence", SCORE_WIDTH, "right", descending_first=True),
        Column(RELATIVE, "relative", SCORE_WIDTH, "right", descending_first=True),
        Column("label", "label", LABEL_WIDTH),
        Column("corrupted", "corr", 4, descending_first=True),
        Column("text", "text"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown_for: tuple | None = None  # (test, variant, λ, version, score, sort) the table was built for
        self._row: Row | None = None
        self._kind = INFLUENCE  # the score that ranks
        self._shown = np.zeros(0)  # its values, NaN where there is none
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
        key = (app.test_index, app.variant, app.reg_index, app.content_version, app.score_kind, app.ranking_sort)
        if key != self._shown_for:
            rescored = self._shown_for is None or key[-2] != self._shown_for[-2]
            resorted = self._shown_for is not None and key[-1] != self._shown_for[-1] and not rescored
            if rescored:
                table.set_columns(self._columns(app.score_kind, data.words.label))
            self._shown_for = key
            self._row = data.row(app.variant, app.reg_index, app.test_index)
            self._kind = app.score_kind
            self._shown = shown = self._row.score(self._kind)
            self._ranks = descending_ranks(shown)
            self._labels = data.train_labels(app.variant)
            self.query_one("#ranking-test", Static).update(self._header(), layout=False)
            # A new sort order starts at its top; otherwise (another score too) the selected pair stays selected.
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

    def _columns(self, kind: str, label: str) -> list[Column]:
        """The columns with the ranking score's title marked, and the label column named for the task."""
        width = COMPLETION_WIDTH if label != "label" else LABEL_WIDTH
        named = [
            replace(column, title=label, width=width) if column.key == "label" else column for column in self.COLUMNS
        ]
        return [replace(column, title=CHOSEN_MARK + column.title) if column.key == kind else column for column in named]

    def _sort_keys(self, sort: SortState, shown: np.ndarray) -> np.ndarray:
        data, row = self.data, self._row
        assert data is not None and row is not None
        return {
            "rank": lambda: -shown,
            "index": lambda: np.arange(data.n_train),
            INFLUENCE: lambda: row.shown,
            RELATIVE: lambda: row.relative,
            "label": lambda: data.label_sort_keys(self._labels),
            "corrupted": lambda: data.corrupted.astype(np.int8),
            "text": lambda: text_keys(data.train.text),
        }[sort.column]()

    def _header(self) -> Text:
        data, app, row = self.data, self.explorer, self._row
        assert data is not None and row is not None
        index = app.test_index
        text = Text()
        text.append(f"{data.words.heading} #{index}", style="bold")
        text.append(f"  {data.test_summary(index)}")
        text.append(f"  ·  {fmt.count(data.n_train)} {data.words.trains}")
        pending = data.n_train - row.n_scored
        if pending:
            text.append(f", {fmt.count(pending)} pending", style="yellow")
        invalid = int(row.invalid.sum())
        if invalid:
            text.append(f"  ⚠ {fmt.count(invalid)} scores are NaN/inf (numerical failure)", style="bold red")
        unavailable = int(row.unavailable.sum()) if self._kind == RELATIVE else 0
        if unavailable:
            text.append(f"  ⚠ {fmt.count(unavailable)} without I(n,n) > 0: relative n/a", style="yellow")
        text.append("\n")
        shown = data.test.completions.prompt[index] if data.is_causal_lm else data.test.text[index]
        text.append(fmt.one_line(shown), style="italic")
        return text

    def _cells(self, row_id: int) -> list[CellText]:
        data, row = self.data, self._row
        assert data is not None and row is not None
        raw, relative, scored = float(row.values[row_id]), float(row.relative[row_id]), bool(row.scored[row_id])
        scores = [kind_cell(kind, raw, relative, scored) for kind in (INFLUENCE, RELATIVE)]
        return [
            rank_cell(int(self._ranks[row_id])),
            (str(row_id), None),
            *(
                cell if kind == self._kind else (cell[0], OTHER_SCORE + cell[1] if cell[1] else OTHER_SCORE)
                for kind, cell in zip((INFLUENCE, RELATIVE), scores)
            ),
            (fmt.one_line(data.label_name(int(self._labels[row_id]))), None),
            corrupted_cell(bool(data.corrupted[row_id]), data.words.mark),
            (fmt.one_line(data.train.text[row_id]), None),
        ]

    def _label_value(self, label: int) -> int | str:
        """A label in an exported table: a classifier's class id, a causal LM's completion text."""
        data = self.data
        assert data is not None
        return data.label_name(label) if data.is_causal_lm else label

    def _describe_pair(self) -> None:
        data, row, train = self.data, self._row, self.table_widget.cursor_row
        pair = self.query_one("#ranking-pair", Static)
        if data is None or row is None or train is None:
            pair.update("", layout=False)
            return
        raw, relative, scored = float(row.values[train]), float(row.relative[train]), bool(row.scored[train])
        parts = []
        for kind in (self._kind, RELATIVE if self._kind == INFLUENCE else INFLUENCE):
            value, _ = kind_cell(kind, raw, relative, scored)
            ranked = row.score(kind)
            rank = int(self._ranks[train]) if kind == self._kind else rank_of(ranked, train)
            n_ranked = int(np.count_nonzero(~np.isnan(ranked)))
            where = f"rank {fmt.count(rank)}/{fmt.count(n_ranked)}" if rank else "not ranked"
            parts.append(f"{fmt.SCORE_SHORT[kind]} {value} {where}")
        pair.update(f"train #{train}: {' · '.join(parts)} · enter: side by side", layout=False)

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
        suffix = "-relative" if self._kind == RELATIVE else ""
        return ViewTable(
            name=f"ranking-test{app.test_index}-{app.variant}-lambda{lam}{suffix}",
            columns=[
                "variant",
                "lambda",
                "test_index",
                "score",
                "rank",
                "train_index",
                "train_dataset_index",
                "influence",
                "relative_influence",
                f"train_{data.words.label}",
                f"train_{data.words.label}_used",
                "corrupted",
                "text",
            ],
            rows=[
                [
                    app.variant,
                    data.regularizations[app.reg_index],
                    app.test_index,
                    self._kind,
                    int(self._ranks[i]) or "",
                    int(i),
                    int(data.train.dataset_index[i]),
                    float(row.shown[i]),
                    float(row.relative[i]),
                    self._label_value(int(data.train.label[i])),
                    self._label_value(int(self._labels[i])),
                    bool(data.corrupted[i]),
                    data.train.text[i],
                ]
                for i in self.table_widget.order
            ],
        )
