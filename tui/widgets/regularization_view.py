"""λ sweep: the notebook's appendix — per-layer Pearson/Spearman between neighbouring λ, and the λ to use.

The report (``store.analysis.regularization_report``) reads every layer's matrix at
every λ, so the app computes it in a thread worker; this view asks for it when shown.
"""

from __future__ import annotations

import math

from rich.console import Group, RenderableType
from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from store.analysis import RegularizationReport
from tui import format as fmt
from tui import palette
from tui.data import StoreData
from tui.export import ViewTable
from tui.widgets.base import StateView

RECOMMENDED_MARK = "★"
CORRELATIONS = ("pearson", "spearman")


def _correlation_cell(value: float, no_color: bool) -> Text:
    if math.isnan(value):
        return Text(fmt.MISSING, style="dim")
    if no_color:
        return Text(f"{value:+.3f}")
    colour = palette.background(palette.level(value, 1.0))
    text_colour = (
        palette.TEXT_ON_BRIGHT if abs(palette.level(value, 1.0)) >= palette.BRIGHT_FROM_LEVEL else palette.TEXT_ON_DARK
    )
    return Text(f" {value:+.3f} ", style=Style(bgcolor=f"color({colour})", color=f"color({text_colour})"))


class RegularizationView(StateView):
    """The λ values (the current one highlighted), then the correlation heatmap once computed."""

    WATCHES = ("variant", "reg_index", "content_version", "reports_version")

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(id="lambda-steps")
            yield Static(id="lambda-report")

    def update_view(self) -> None:
        data, app = self.data, self.explorer
        steps, report_widget = self.query_one("#lambda-steps", Static), self.query_one("#lambda-report", Static)
        if data is None:
            steps.update(self.no_store)
            report_widget.update("")
            return
        report = app.reports.get(app.variant)
        steps.update(self._steps(data, report))
        app.request_report(app.variant)
        if report is None and app.report_failed(app.variant):
            report_widget.update(
                Text("The correlations could not be computed (d: details); open this tab again to retry.", style="red")
            )
        elif report is None:
            report_widget.update(
                Text(
                    "Computing the correlations between neighbouring λ (reads every layer's scores at every λ)…",
                    style="italic",
                )
            )
        else:
            stale = not app.report_is_current(app.variant)
            report_widget.update(self._report(report, stale, failed=app.report_failed(app.variant)))

    def on_show(self) -> None:
        """Coming back to a report that failed asks for it again."""
        if self.explorer.report_failed(self.explorer.variant):
            self.explorer.retry_report(self.explorer.variant)
            self._stale = True
        super().on_show()

    def _steps(self, data: StoreData, report: RegularizationReport | None) -> Text:
        app = self.explorer
        text = Text("λ values ([ and ] step every view):  ")
        for index, value in enumerate(data.regularizations):
            mark = RECOMMENDED_MARK if report is not None and report.recommended == value else ""
            text.append(f" {mark}{fmt.lam(value)} ", style="reverse bold" if index == app.reg_index else "")
            text.append(" ")
        text.append(f"\nmain (configured) λ {fmt.lam(data.reader.main_regularization)}")
        if report is not None:
            if report.recommended is None:
                text.append("; no neighbouring pair is stable: no λ recommended", style="yellow")
            else:
                text.append(
                    f"; {RECOMMENDED_MARK} recommended λ {fmt.lam(report.recommended)}: the smallest of the "
                    f"longest run where every layer's Spearman ≥ {report.threshold:g}"
                )
        return text

    def _report(self, report: RegularizationReport, stale: bool, failed: bool) -> RenderableType:
        no_color = self.app.no_color
        regs = report.regularizations
        if len(regs) < 2:
            return Text("A single λ: nothing to compare.", style="italic")
        title = Text(
            f"Mean influence per {self.data.words.train} ({report.variant} {self.data.words.labels}): "
            "correlation between neighbouring λ",
            style="bold",
        )
        table = Table(box=None, padding=(0, 1))
        table.add_column("layer", no_wrap=True)
        table.add_column("", no_wrap=True)
        for j in range(len(regs) - 1):
            stable = "✓" if report.stable[j] else " "
            table.add_column(f"{fmt.lam(regs[j])}→{fmt.lam(regs[j + 1])} {stable}", justify="center", no_wrap=True)
        names = [*fmt.short_names(report.series[:-1]), report.series[-1]]  # the layers, then the total
        for s, name in enumerate(names):
            for measure in CORRELATIONS:
                values = getattr(report, measure)[s]
                table.add_row(
                    name if measure == CORRELATIONS[0] else "",
                    measure,
                    *(_correlation_cell(float(v), no_color) for v in values),
                )
        marks = (
            "✓ stable: every layer's Spearman ≥ threshold."
            if report.stable.any()
            else f"No neighbouring pair has every layer's Spearman ≥ {report.threshold:g}, so none is marked ✓."
        )
        legend = Text(f"{marks}  Colour: −1 (red) … +1 (teal).", style="dim")
        note = fmt.names_note(list(report.series[:-1]))
        if note:
            legend.append(f"\n{fmt.capitalized(note)}", style="dim")
        if stale and failed:
            legend.append(
                "\nComputed before the latest scores landed; recomputing failed (d: details), open this tab "
                "again to retry.",
                style="red",
            )
        elif stale:
            legend.append("\nComputed before the latest scores landed; recomputing…", style="yellow")
        return Group(title, table, legend)

    def table(self) -> ViewTable | None:
        report = self.explorer.reports.get(self.explorer.variant)
        if report is None:
            return None
        regs = report.regularizations
        return ViewTable(
            name=f"regularization-{report.variant}",
            columns=["variant", "series", "lambda_from", "lambda_to", "pearson", "spearman", "stable", "recommended"],
            rows=[
                [
                    report.variant,
                    series,
                    regs[j],
                    regs[j + 1],
                    float(report.pearson[s, j]),
                    float(report.spearman[s, j]),
                    bool(report.stable[j]),
                    report.recommended == regs[j],
                ]
                for s, series in enumerate(report.series)
                for j in range(len(regs) - 1)
            ],
        )
