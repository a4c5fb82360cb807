"""Overview: what was analysed, how well the model does, and each engine stage's progress."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from job.options import engine_settings
from job.stages import STATUS_CANCELLED, STATUS_DONE, STATUS_FAILED, STATUS_PENDING, STATUS_RUNNING
from store.stages import StageRecord
from tui import format as fmt
from tui.data import StoreData
from tui.engine import FAILED, LiveStage
from tui.widgets.base import StateView

BAR_WIDTH_RANGE = (6, 30)
OTHER_STAGE_COLUMNS = 88  # what the stage table needs besides the bar
STAGE_NAME_WIDTH = 16
STATUS_STYLES = {STATUS_DONE: "green", STATUS_RUNNING: "yellow", STATUS_FAILED: "bold red", STATUS_CANCELLED: "magenta"}
STAGE_TITLES = {"training": "train demo model"}
NO_STORE_OPEN = "No store is open."
STOPPED = "stopped"  # a stage the store does not record, left unfinished when the engine stopped


def _tracked_parameters(data: StoreData) -> int:
    return sum(layer.out_features * layer.augmented_in for layer in data.layers)


def _confusion(metrics: dict, labels: list[str]) -> Table | None:
    matrix = metrics.get("confusion") or metrics.get("confusion_matrix")
    if not matrix:
        return None
    table = Table(box=None, padding=(0, 1), show_edge=False)
    table.add_column("true \\ predicted", style="dim")
    for name in labels:
        table.add_column(name, justify="right")
    for name, row in zip(labels, matrix):
        table.add_row(name, *(fmt.count(int(value)) for value in row))
    return table


class OverviewView(StateView):
    """The run at a glance; redraws on every progress message while the engine runs."""

    WATCHES = ("content_version", "stages_version", "reports_version", "engine_state", "variant")

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(id="overview-problem", markup=False)
            yield Static(id="overview-summary")
            yield Static(id="overview-stages")

    def update_view(self) -> None:
        data = self.data
        problem = self._problem()
        problem_widget = self.query_one("#overview-problem", Static)
        problem_widget.update(problem)
        problem_widget.set_class(not problem.plain, "-empty")
        summary = self.query_one("#overview-summary", Static)
        if data is not None:
            summary.update(self._summary(data))
        else:  # the problem line above already says why, when it is known
            summary.update(Text(NO_STORE_OPEN if problem.plain else self.no_store, style="italic"))
        self.query_one("#overview-stages", Static).update(self._stages(data))

    # ------------------------------------------------------------ parts
    def _problem(self) -> Text:
        """The engine's failure, else why the store could not be opened; empty when all is well."""
        app = self.explorer
        outcome = app.last_outcome
        if outcome is not None and outcome.status == FAILED and not app.engine_running:
            return Text(f"Engine failed: {outcome.summary}  (d: details, r: retry)", style="bold red")
        if app.store_problem and app.data is None and not app.engine_running:
            return Text(app.store_problem, style="bold red")
        return Text()

    def _summary(self, data: StoreData) -> RenderableType:
        config = data.reader.config
        run = data.reader.summaries().get("run", {})
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        grid.add_row("Model", f"{config.get('model', '?')} ({data.words.task})")
        words = data.words
        corrupted = (
            f"; {fmt.count(int(data.corrupted.sum()))} training {words.labels} {words.corrupted} "
            "in the corrupted variant"
            if data.has_corrupted
            else f"; no corrupted-{words.label} variant"
        )
        kinds = "prompt → completion" if data.is_causal_lm else "/".join(data.reader.label_names)
        grid.add_row(
            "Data",
            f"{config.get('dataset', '?')}: {fmt.count(data.n_train)} train × "
            f"{fmt.count(data.n_test)} {'queries' if data.is_causal_lm else 'test'} ({kinds}){corrupted}",
        )
        total = run.get("total_parameters")
        of_total = f" of {fmt.parameters(int(total))}" if total else ""
        names = ", ".join(data.layer_labels)
        note = f"\n{data.layer_note}" if data.layer_note else ""
        grid.add_row(
            "Layers",
            Text(
                f"{len(data.layers)} tracked ({fmt.parameters(_tracked_parameters(data))}"
                f"{of_total} parameters): {names}{note}",
                no_wrap=True,
                overflow="ellipsis",
            ),
        )
        engine = engine_settings(config)
        mode = str(engine.get("mode", "?")).upper().replace("EKFAC", "EK-FAC").replace("KFAC", "K-FAC")
        grid.add_row(
            "Curvature", Text(f"{mode}, {engine.get('fisher', '?')} Fisher  ·  λ ") + self._regularization(data)
        )
        metrics = data.reader.metrics()
        if metrics and data.is_causal_lm:
            grid.add_row(
                "Queries",
                f"mean loss per completion token {fmt.fraction(metrics.get('mean_loss', float('nan')))}   "
                f"perplexity {fmt.fraction(metrics.get('perplexity', float('nan')), 2)}   "
                f"exact match {fmt.fraction(metrics.get('exact_match', float('nan')))}",
            )
        elif metrics:
            grid.add_row(
                "Test",
                f"F1 {fmt.fraction(metrics.get('f1', float('nan')))}   "
                f"accuracy {fmt.fraction(metrics.get('accuracy', float('nan')))}",
            )
            confusion = _confusion(metrics, data.reader.label_names)
            if confusion is not None:
                grid.add_row("", confusion)
        else:
            grid.add_row("Test", Text(fmt.PENDING, style="italic"))
        return grid

    def _regularization(self, data: StoreData) -> Text:
        app = self.explorer
        regs = data.regularizations
        text = Text()
        for index, value in enumerate(regs):
            style = "reverse" if index == app.reg_index else ""
            text.append(fmt.lam(value), style=style)
            text.append("  ")
        text.append(f"main {fmt.lam(data.reader.main_regularization)}")
        report = app.reports.get(app.variant)
        if report is not None:
            recommended = "none stable" if report.recommended is None else fmt.lam(report.recommended)
            text.append(f", recommended {recommended} (Spearman ≥ {report.threshold:g})")
        return text

    def _stage_rows(self, data: StoreData | None) -> list[tuple[str, StageRecord | None, LiveStage | None]]:
        """Live stages the store does not record (e.g. the demo model's training), then the store's, in order."""
        live = self.explorer.live.stages
        records = data.stages if data is not None else {}
        rows: list[tuple[str, StageRecord | None, LiveStage | None]]
        rows = [(key, None, stage) for key, stage in live.items() if key not in records]
        return rows + [(key, record, live.get(key)) for key, record in records.items()]

    def _stages(self, data: StoreData | None) -> RenderableType:
        rows = self._stage_rows(data)
        if not rows:
            return Text("Stages: waiting for the engine to start…", style="italic")
        table = Table(box=None, padding=(0, 1), title="Engine stages", title_justify="left", title_style="bold")
        table.add_column("stage", no_wrap=True, overflow="ellipsis", min_width=STAGE_NAME_WIDTH)
        for name, justify in (
            ("progress", "left"),
            ("", "right"),
            ("status", "left"),
            ("rate", "right"),
            ("time", "right"),
            ("left", "right"),
        ):
            table.add_column(name, justify=justify, no_wrap=True)
        for key, record, live in rows:
            table.add_row(*self._stage_cells(key, record, live))
        notes = Text(style="dim")  # the store's messages (why a stage failed or was reset), below the table
        for key, record, _ in rows:
            if record is not None and record.message:
                notes.append(f"{STAGE_TITLES.get(key, key)}: {record.message}\n")
        app = self.explorer
        resumable = app.config is not None and (app.engine_running or data is None or not data.scores_done)
        hint = Text("x cancels the running stage, r resumes", style="dim") if resumable else Text()
        return Group(table, notes, hint)

    def _stage_cells(self, key: str, record: StageRecord | None, live: LiveStage | None) -> list[RenderableType]:
        """One row: the live events while the engine works on the stage (the store is only written at
        checkpoints), the store's record otherwise."""
        if live is not None and (record is None or (self.explorer.engine_running and record.status != STATUS_DONE)):
            event = live.event
            done, total, unit = event.done, event.total, event.unit
            finished = total is not None and done >= total
            status = STATUS_DONE if finished else STATUS_RUNNING if self.explorer.engine_running else STOPPED
            rate, when = fmt.rate(live.rate(), unit), fmt.clock(live.updated - live.since)
            left = "" if finished else fmt.clock(live.eta())
        else:
            assert record is not None
            done, total, unit, status = record.done, record.total, record.unit or "", record.status
            started = status != STATUS_PENDING
            rate = fmt.rate((done or 0) / record.elapsed if record.elapsed > 0 else 0.0, unit) if started else ""
            when, left = (fmt.clock(record.elapsed) if started else ""), ""
        low, high = BAR_WIDTH_RANGE
        width = max(low, min(high, self.size.width - OTHER_STAGE_COLUMNS))
        bar = ProgressBar(total=float(total or 1), completed=float(min(done or 0, total or 0)), width=width)
        count = f"{fmt.count(done or 0)}/{fmt.count(total)} {unit}" if total else ""
        status_text = Text(status, style=STATUS_STYLES.get(status, "dim"))
        return [STAGE_TITLES.get(key, key), bar, count, status_text, rate, when, left]
