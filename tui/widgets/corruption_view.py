"""Corruption: for the selected test review, what flipping training labels did to each training review.

The notebook saw influences "tend to become negative" when labels are corrupted;
this view lists every pair with its clean and corrupted score and rank, sign changes
and the largest rank moves first, and sums up the flipped reviews. The score is the
app's: raw influence, or relative influence (each variant divided by its own I(n, n)).
"""

from __future__ import annotations

import numpy as np
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.widgets import Static

from store.analysis import INFLUENCE, RELATIVE, RankChanges, rank_changes
from store.layout import VARIANT_CLEAN, VARIANT_CORRUPTED
from tui import format as fmt
from tui.cells import CellText, corrupted_cell, kind_cell, rank_cell
from tui.data import Row, StoreData
from tui.export import ViewTable
from tui.messages import PairRequested
from tui.sorting import sort_rows, text_keys
from tui.widgets.base import StateView
from tui.widgets.virtual_table import Column, VirtualTable

SIGN_MARK = "±"
MEAN_OF = {INFLUENCE: "influence", RELATIVE: "relative"}  # short: the line fits 80 columns


class CorruptionView(StateView):
    """Clean against corrupted labels, pair by pair; Enter opens a pair side by side."""

    WATCHES = ("test_index", "reg_index", "content_version", "corruption_sort", "score_kind")
    COLUMNS = [
        Column("index", "train #", 7, "right"),
        Column("corrupted", "corr", 4, descending_first=True),
        Column("clean", "clean", 10, "right", descending_first=True),
        Column("corrupted_score", "corrupted", 10, "right", descending_first=True),
        Column("sign", "sign", 4, descending_first=True),
        Column("rank_clean", "rank", 7, "right"),
        Column("rank_corrupted", "→ rank", 7, "right"),
        Column("delta", "Δrank", 8, "right", descending_first=True),
        Column("text", "text"),
    ]
    _kind = INFLUENCE  # the score shown, set from the app's on each redraw

    def compose(self) -> ComposeResult:
        yield Static(id="corruption-summary")
        yield VirtualTable(self.COLUMNS, self._cells, id="corruption-table")

    @property
    def table_widget(self) -> VirtualTable:
        return self.query_one("#corruption-table", VirtualTable)

    def focus_main(self) -> None:
        self.table_widget.focus()

    def update_view(self) -> None:
        data, app = self.data, self.explorer
        summary = self.query_one("#corruption-summary", Static)
        if data is None or not data.has_corrupted:
            summary.update(self.no_store if data is None else data.no_corrupted_variant, layout=False)
            self.table_widget.show(np.zeros(0, dtype=np.int64))
            return
        self._clean = data.row(VARIANT_CLEAN, app.reg_index, app.test_index)
        self._corrupted = data.row(VARIANT_CORRUPTED, app.reg_index, app.test_index)
        self._kind = app.score_kind
        self._clean_shown, self._corrupted_shown = self._clean.score(self._kind), self._corrupted.score(self._kind)
        self._changes = rank_changes(self._clean_shown, self._corrupted_shown, k=0)
        self._flipped = np.zeros(data.n_train, dtype=bool)
        self._flipped[self._changes.sign_flipped] = True
        ranked = self._changes.rank_clean >= 0
        self._delta = np.where(ranked, self._changes.rank_corrupted - self._changes.rank_clean, 0)
        summary.update(self._summary(data), layout=False)
        sort = app.corruption_sort
        self.table_widget.show(sort_rows(self._sort_keys(data, sort.column), sort.descending), sort)

    def _sort_keys(self, data: StoreData, column: str) -> np.ndarray:
        clean, corrupted, changes = self._clean_shown, self._corrupted_shown, self._changes
        moved = np.abs(self._delta).astype(np.float64)
        return {
            "index": lambda: np.arange(data.n_train),
            "corrupted": lambda: data.corrupted.astype(np.int8),
            "clean": lambda: clean,
            "corrupted_score": lambda: corrupted,
            # Sign changes first, then the largest rank moves: what the before/after view is for.
            "sign": lambda: np.where(changes.rank_clean >= 0, self._flipped * (data.n_train + 1.0) + moved, np.nan),
            "rank_clean": lambda: np.where(changes.rank_clean >= 0, changes.rank_clean, np.nan),
            "rank_corrupted": lambda: np.where(changes.rank_corrupted >= 0, changes.rank_corrupted, np.nan),
            "delta": lambda: np.where(changes.rank_clean >= 0, moved, np.nan),
            "text": lambda: text_keys(data.train.text),
        }[column]()

    def _summary(self, data: StoreData) -> Text:
        flipped_labels = data.corrupted
        clean, corrupted = self._clean_shown, self._corrupted_shown
        both = np.isfinite(clean) & np.isfinite(corrupted)
        text = Text()
        words = data.words
        text.append(f"{words.heading} #{self.explorer.test_index}", style="bold")
        text.append(
            f": clean → corrupted {words.labels} ({fmt.count(int(flipped_labels.sum()))} of "
            f"{fmt.count(data.n_train)} training {words.labels} {words.corrupted}). "
        )
        text.append(
            f"{fmt.count(len(self._changes.sign_flipped))} of {fmt.count(int(both.sum()))} scored pairs changed sign.\n"
        )
        flipped_both = flipped_labels & both
        if flipped_both.any():
            before, after = float(np.mean(clean[flipped_both])), float(np.mean(corrupted[flipped_both]))
            negative = int(np.sum(corrupted[flipped_both] < 0))
            text.append(
                f"{words.corrupted.capitalize()} {words.trains}: mean {MEAN_OF[self._kind]} "
                f"{fmt.score(before)} → {fmt.score(after)}, "
                f"{fmt.count(negative)} of {fmt.count(int(flipped_both.sum()))} now negative."
            )
        pending = data.n_train - int(both.sum())
        if pending:
            missing = "pending or n/a" if self._kind == RELATIVE else "pending"
            text.append(f"  {fmt.count(pending)} pairs {missing}.", style="yellow")
        return text

    def _cells(self, row_id: int) -> list[CellText]:
        data = self.data
        assert data is not None
        changes: RankChanges = self._changes
        clean, corrupted = self._clean, self._corrupted
        return [
            (str(row_id), None),
            corrupted_cell(bool(data.corrupted[row_id]), data.words.mark),
            _score(clean, row_id, self._kind),
            _score(corrupted, row_id, self._kind),
            (SIGN_MARK, None) if self._flipped[row_id] else ("", None),
            rank_cell(int(changes.rank_clean[row_id]) + 1),
            rank_cell(int(changes.rank_corrupted[row_id]) + 1),
            (f"{int(self._delta[row_id]):+,}", None) if changes.rank_clean[row_id] >= 0 else (fmt.MISSING, None),
            (fmt.one_line(data.train.text[row_id]), None),
        ]

    @on(VirtualTable.SortRequested, "#corruption-table")
    def _sort(self, message: VirtualTable.SortRequested) -> None:
        self.explorer.corruption_sort = message.sort

    @on(VirtualTable.RowSelected, "#corruption-table")
    def _select(self, message: VirtualTable.RowSelected) -> None:
        self.post_message(PairRequested(self.explorer.test_index, message.row_id))

    def table(self) -> ViewTable | None:
        data, app = self.data, self.explorer
        if data is None or not data.has_corrupted:
            return None
        changes = self._changes
        score = "relative_influence" if self._kind == RELATIVE else "influence"
        suffix = "-relative" if self._kind == RELATIVE else ""
        return ViewTable(
            name=f"corruption-test{app.test_index}-lambda{fmt.lam(data.regularizations[app.reg_index])}{suffix}",
            columns=[
                "test_index",
                "train_index",
                "corrupted",
                f"{score}_clean",
                f"{score}_corrupted",
                "sign_changed",
                "rank_clean",
                "rank_corrupted",
            ],
            rows=[
                [
                    app.test_index,
                    int(i),
                    bool(data.corrupted[i]),
                    float(self._clean_shown[i]),
                    float(self._corrupted_shown[i]),
                    bool(self._flipped[i]),
                    int(changes.rank_clean[i]) + 1 or "",
                    int(changes.rank_corrupted[i]) + 1 or "",
                ]
                for i in self.table_widget.order
            ],
        )


def _score(row: Row, index: int, kind: str) -> CellText:
    return kind_cell(kind, float(row.values[index]), float(row.relative[index]), bool(row.scored[index]))
