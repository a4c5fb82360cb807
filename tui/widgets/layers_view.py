"""Layers: the selected pair's influence per layer, and every training review across layers.

The second chart is the notebook's layer plot for the selected test review. The line
above the charts checks that the layers add up to the total (block-diagonal curvature
makes the total their exact sum), for the pair and over the whole row.
"""

from __future__ import annotations

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Static

from tui import charts
from tui import format as fmt
from tui.data import NO_PAIR
from tui.export import ViewTable
from tui.widgets.base import StateView
from tui.widgets.layer_split import sum_matches


class LayersView(StateView):
    """Redraws at its own size; plotext runs here, on the UI thread."""

    WATCHES = ("test_index", "train_index", "variant", "reg_index", "content_version", "score_kind")

    def compose(self) -> ComposeResult:
        yield Static(id="layers-summary")
        yield Static(id="layers-pair-chart")
        yield Static(id="layers-row-chart")

    def on_resize(self) -> None:
        if self.is_shown:
            self.update_view()

    def _train(self, ranked: np.ndarray) -> int | None:
        """The selected training review, or the top of the ranking (by the app's score) when none is."""
        if self.explorer.train_index != NO_PAIR:
            return self.explorer.train_index
        return int(np.nanargmax(ranked)) if np.isfinite(ranked).any() else None

    def update_view(self) -> None:
        data, app = self.data, self.explorer
        summary = self.query_one("#layers-summary", Static)
        pair_chart, row_chart = (
            self.query_one("#layers-pair-chart", Static),
            self.query_one("#layers-row-chart", Static),
        )
        if data is None:
            summary.update(self.no_store, layout=False)
            pair_chart.update("", layout=False)
            row_chart.update("", layout=False)
            return
        row = data.row(app.variant, app.reg_index, app.test_index)
        totals = row.shown
        layer_rows = np.where(row.scored[None, :], data.layer_rows(app.variant, app.reg_index, app.test_index), np.nan)
        train = self._train(row.score(app.score_kind))
        if train is None or not row.scored[train]:
            summary.update(Text(f"The scores of this {data.words.test} are pending.", style="italic"), layout=False)
            pair_chart.update("", layout=False)
            row_chart.update("", layout=False)
            return
        names = data.layer_labels
        helpful, harmful = int(np.nanargmax(totals)), int(np.nanargmin(totals))
        lines = [(train, charts.SELECTED_COLOUR), (helpful, charts.HELPFUL_COLOUR), (harmful, charts.HARMFUL_COLOUR)]
        summary.update(self._summary(layer_rows, totals, train, helpful, harmful), layout=False)
        no_color = self.app.no_color
        pair_chart.update(
            charts.pair_bars(
                names,
                layer_rows[:, train],
                pair_chart.size.width,
                pair_chart.size.height,
                f"{data.words.heading.lower()} #{app.test_index} × train #{train}: influence per layer"
                + (f" ({data.layer_note})" if data.layer_note else ""),
                no_color,
            ),
            layout=False,
        )
        row_chart.update(
            charts.layer_strips(
                names,
                layer_rows,
                lines,
                row_chart.size.width,
                row_chart.size.height,
                f"{data.words.heading.lower()} #{app.test_index}: all {fmt.count(row.n_scored)} scored "
                f"{data.words.trains} across layers",
                no_color,
            ),
            layout=False,
        )

    def _summary(self, layer_rows: np.ndarray, totals: np.ndarray, train: int, helpful: int, harmful: int) -> Text:
        """The sum check, then the key of the lines drawn over the dots."""
        layer_sum = float(np.sum(layer_rows[:, train], dtype=np.float64))
        total = float(totals[train])
        text = Text(f"train #{train}: Σ layers {fmt.score(layer_sum)} ")
        matches = sum_matches(layer_rows[:, train], total)
        text.append(
            f"= total {fmt.score(total)} ✓" if matches else f"≠ total {fmt.score(total)} ✗",
            style="green" if matches else "bold red",
        )
        sums = np.sum(layer_rows, axis=0, dtype=np.float64)
        scored = np.isfinite(totals)
        gap = float(np.max(np.abs(sums[scored] - totals[scored])))
        text.append(f"   row: max |Σ − total| {gap:.2g}\n", style="dim")
        for label, index, colour in (
            ("selected", train, charts.SELECTED_COLOUR),
            ("most helpful", helpful, charts.HELPFUL_COLOUR),
            ("most harmful", harmful, charts.HARMFUL_COLOUR),
        ):
            text.append("━━ ", style=f"color({colour})")
            text.append(f"{label} #{index}  ")
        text.append("⡇ all", style=f"color({charts.ALL_COLOUR})")
        return text

    def table(self) -> ViewTable | None:
        data, app = self.data, self.explorer
        if data is None:
            return None
        rows = data.layer_rows(app.variant, app.reg_index, app.test_index)
        totals = data.row(app.variant, app.reg_index, app.test_index).shown
        names = [layer.name for layer in data.layers]
        return ViewTable(
            name=f"layers-test{app.test_index}-{app.variant}-lambda{fmt.lam(data.regularizations[app.reg_index])}",
            columns=["test_index", "train_index", *names, "total"],
            rows=[
                [app.test_index, train, *(float(v) for v in rows[:, train]), float(totals[train])]
                for train in range(data.n_train)
            ],
        )
