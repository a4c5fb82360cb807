"""One (test, train) pair side by side: both reviews in full, both scores with their ranks, the layer split."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np
from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from store.analysis import INFLUENCE, RELATIVE, relative_influence
from store.layout import VARIANT_CORRUPTED
from tui import format as fmt
from tui.cells import kind_cell
from tui.data import NO_PAIR, Row, StoreData
from tui.export import ViewTable
from tui.sorting import descending_ranks, rank_of
from tui.widgets.layer_split import layer_split_table
from tui.widgets.status_bar import StatusBar

if TYPE_CHECKING:
    from tui.app import InfluenceApp

WATCHES = ("test_index", "train_index", "variant", "reg_index", "content_version", "score_kind")
CHOSEN_MARK = "▶ "  # before the score the ranking (and j/k) follows
NAME_WIDTH = max(len(name) for name in fmt.SCORE_NAMES.values()) + 1
SCORE_WIDTH = 8


class PairScreen(Screen[None]):
    """Follows the app's selection; j/k walk the ranking without leaving the screen."""

    BINDINGS = [
        Binding("escape,backspace", "close", "back", tooltip="back to the tabs"),
        Binding("j,down", "step_rank(1)", "next in ranking", tooltip="the training review ranked one below"),
        Binding("k,up", "step_rank(-1)", "previous in ranking", tooltip="the training review ranked one above"),
    ]

    @property
    def explorer(self) -> "InfluenceApp":
        return cast("InfluenceApp", self.app)

    def compose(self) -> ComposeResult:
        yield StatusBar()
        yield Static(id="pair-summary")
        with Horizontal(id="pair-texts"):
            with VerticalScroll(id="pair-test", classes="pair-text"):
                yield Static(id="pair-test-text")
            with VerticalScroll(id="pair-train", classes="pair-text"):
                yield Static(id="pair-train-text")
        yield Footer()

    def on_mount(self) -> None:
        for name in WATCHES:
            self.watch(self.app, name, self._redraw, init=False)
        self._redraw()

    # ------------------------------------------------------------ state
    def _ranks(self, data: StoreData) -> tuple[Row, np.ndarray]:
        """The row and its ranks under the app's score (the ranking j/k walk)."""
        app = self.explorer
        row = data.row(app.variant, app.reg_index, app.test_index)
        return row, descending_ranks(row.score(app.score_kind))

    def _train(self, ranks: np.ndarray) -> int:
        """The selected training review, or the most helpful one when none is selected."""
        if self.explorer.train_index != NO_PAIR:
            return self.explorer.train_index
        top = np.flatnonzero(ranks == 1)
        return int(top[0]) if top.size else 0

    def action_step_rank(self, step: int) -> None:
        data = self.explorer.data
        if data is None:
            return
        _, ranks = self._ranks(data)
        target = np.flatnonzero(ranks == ranks[self._train(ranks)] + step)
        if target.size and ranks[self._train(ranks)] > 0:
            self.explorer.train_index = int(target[0])

    def action_close(self) -> None:
        self.app.pop_screen()

    # ------------------------------------------------------------ drawing
    def _redraw(self) -> None:
        data = self.explorer.data
        if data is None:
            return
        app = self.explorer
        row, ranks = self._ranks(data)
        train = self._train(ranks)
        test = app.test_index
        summary = Text()
        for kind in (INFLUENCE, RELATIVE):
            self._describe_score(summary, row, kind, int(ranks[train]) if kind == app.score_kind else None, train)
        summary.append(
            f"{app.variant} {data.words.labels}  ·  λ {fmt.lam(data.regularizations[app.reg_index])}  ·  "
            f"relative = influence/√I(n,n), I(n,n) = {fmt.score(float(row.train_self[train]))}"
        )
        layers = data.layer_rows(app.variant, app.reg_index, test)[:, train]
        parts: list = [summary]
        if row.scored[train]:
            parts.append(layer_split_table(data.layer_labels, layers, float(row.values[train])))
            if data.layer_note:
                parts.append(Text(fmt.capitalized(data.layer_note), style="dim"))
        self.query_one("#pair-summary", Static).update(Group(*parts))
        self.query_one("#pair-test-text", Static).update(self._review_text(data, "test", test))
        self.query_one("#pair-train-text", Static).update(self._review_text(data, "train", train))

    def _describe_score(self, summary: Text, row: Row, kind: str, rank: int | None, train: int) -> None:
        """One line: the pair's score of ``kind`` and its rank among the test review's training reviews."""
        chosen = kind == self.explorer.score_kind
        ranked = row.score(kind)
        rank = rank_of(ranked, train) if rank is None else rank
        n_ranked = int(np.count_nonzero(~np.isnan(ranked)))
        text, style = kind_cell(kind, float(row.values[train]), float(row.relative[train]), bool(row.scored[train]))
        summary.append(CHOSEN_MARK if chosen else " " * len(CHOSEN_MARK), style="bold")
        summary.append(f"{fmt.SCORE_NAMES[kind]:<{NAME_WIDTH}}", style="bold" if chosen else "dim")
        summary.append(f"{text:>{SCORE_WIDTH}}", style=style)
        if rank:
            from_end = fmt.count(n_ranked - rank + 1)
            summary.append(f"  rank {fmt.count(rank)} of {fmt.count(n_ranked)}, {from_end} from the harmful end")
        summary.append("\n")

    def _review_text(self, data: StoreData, split: str, index: int) -> Text:
        app = self.explorer
        text = Text()
        if split == "test":
            confidence = data.test_confidence()[index]
            measure = "loss per token" if data.is_causal_lm else "confidence"
            text.append(f"{data.words.heading} #{index}", style="bold")
            text.append(f"  {data.test_summary(index)} ({measure} {fmt.fraction(float(confidence), 2)})\n\n")
            text.append(data.test.text[index])
            return text
        label, used = int(data.train.label[index]), int(data.train_labels(app.variant)[index])
        text.append(f"Train #{index}", style="bold")
        text.append(f"  {data.words.label} {fmt.one_line(data.label_name(label))}")
        if data.corrupted[index]:
            flipped = f" → {fmt.one_line(data.label_name(int(data.train.corrupted_label[index])))}"
            text.append(
                f", corrupted{flipped}" + (" (used)" if app.variant == VARIANT_CORRUPTED else ""), style="magenta"
            )
        elif used != label:
            text.append(f", used {data.label_name(used)}")
        text.append("\n\n")
        text.append(data.train.text[index])
        return text

    def current_table(self) -> ViewTable | None:
        data = self.explorer.data
        if data is None:
            return None
        app = self.explorer
        row, ranks = self._ranks(data)
        train = self._train(ranks)
        values = [*data.layer_rows(app.variant, app.reg_index, app.test_index)[:, train], row.values[train]]
        # The same divisor for every layer: the layers' relative influence adds up to the total's.
        relative = relative_influence(np.asarray(values, dtype=np.float32), row.train_self[train])
        lam = data.regularizations[app.reg_index]
        rank = int(ranks[train]) or ""
        suffix = "-relative" if app.score_kind == RELATIVE else ""
        return ViewTable(
            name=f"pair-test{app.test_index}-train{train}-{app.variant}-lambda{fmt.lam(lam)}{suffix}",
            columns=[
                "variant",
                "lambda",
                "test_index",
                "train_index",
                "layer",
                "influence",
                "relative_influence",
                "score",
                "rank",
            ],
            rows=[
                [app.variant, lam, app.test_index, train, name, float(value), float(rel), app.score_kind, rank]
                for name, value, rel in zip([*(layer.name for layer in data.layers), "total"], values, relative)
            ],
        )
