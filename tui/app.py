"""The explorer app: one store, the selection every view follows, and the engine behind it.

The state a person steers — test review, training review of the pair, clean or
corrupted labels, λ index, raw or relative influence, sort orders — lives here as
Textual vars, and each view follows what it shows. The engine runs in a child process
that a thread worker follows (``tui.engine``); its progress arrives as throttled messages,
and a timer refreshes the store while it runs, so the views fill in as data lands.
"""

from __future__ import annotations

import gc
import threading
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import var
from textual.screen import Screen
from textual.timer import Timer
from textual.worker import Worker

from job.config import RunConfig
from store.analysis import INFLUENCE, RELATIVE, SCORES, RegularizationReport, regularization_report
from store.errors import StoreError, StoreNotFound
from store.layout import VARIANT_CLEAN, VARIANT_CORRUPTED
from tui.data import NO_PAIR, StoreData
from tui.engine import (
    CANCELLED,
    FAILED,
    FINISHED,
    EngineOutcome,
    EngineRunner,
    LiveProgress,
    ProgressThrottle,
    process_runner,
    run_engine,
)
from tui.messages import EngineProgress, EngineStopped, PairRequested, WorkerFailed
from tui.screens.main import TABS, MainScreen
from tui.screens.pair import PairScreen
from tui.sorting import SortState
from tui.workers import failure_of

if TYPE_CHECKING:
    from tui.export import ViewTable
    from tui.screens.help import HelpSection

REFRESH_SECONDS = 0.5  # store polling while it is being written
ENGINE_GROUP, REPORT_GROUP, EXPORT_GROUP = "engine", "report", "export"
WORKER_TITLES = {ENGINE_GROUP: "Engine failed", REPORT_GROUP: "λ sweep failed", EXPORT_GROUP: "Export failed"}
FAILURE_NOTICE_SECONDS = 30
IDLE, RUNNING, CANCELLING = "idle", "running", "cancelling"


class InfluenceApp(App[None]):
    """influence-explorer's terminal UI."""

    CSS_PATH = "app.tcss"
    TITLE = "influence-explorer"
    BINDINGS = [
        Binding("question_mark", "help", "help", tooltip="this list of keys"),
        Binding("n", "step_test(1)", "next test", tooltip="select the next test review in every view"),
        Binding("p", "step_test(-1)", "prev test", tooltip="select the previous test review in every view"),
        Binding(
            "c", "toggle_variant", "clean/corrupted", tooltip="switch every view between clean and corrupted labels"
        ),
        Binding(
            "left_square_bracket",
            "step_lambda(-1)",
            "λ down",
            key_display="[",
            tooltip="the next smaller regularization λ of the sweep, in every view",
        ),
        Binding(
            "right_square_bracket",
            "step_lambda(1)",
            "λ up",
            key_display="]",
            tooltip="the next larger regularization λ of the sweep, in every view",
        ),
        Binding(
            "i",
            "toggle_score",
            "raw/relative",
            tooltip="rank, colour and compare by raw influence I(q,n) or relative influence I(q,n)/√I(n,n), "
            "in every view",
        ),
        Binding("e", "export", "export", tooltip="write the store's tables and this view's table (CSV/JSON)"),
        Binding("x", "cancel_engine", "cancel stage", tooltip="stop the engine after its current batch"),
        Binding("r", "resume_engine", "resume", tooltip="run the engine again; it continues from the store"),
        Binding("d", "error_details", "error details", show=False, tooltip="the full message of the last error"),
        *(
            Binding(str(number), f"show_tab('{tab}')", f"{title} tab", show=False, tooltip=f"show the {title} tab")
            for number, (tab, title) in enumerate(TABS.items(), start=1)
        ),
        Binding("q", "quit", "quit", tooltip="cancel the engine (leaving the store resumable), then quit"),
    ]

    # The selection every view follows. ``var``: setting one repaints nothing by itself, each view
    # redraws exactly what changed (a full-screen repaint would cost more than the redraw).
    test_index: var[int] = var(0)
    train_index: var[int] = var(NO_PAIR)  # the pair's training review; NO_PAIR: the top of the ranking
    variant: var[str] = var(VARIANT_CLEAN)
    reg_index: var[int] = var(0)
    score_kind: var[str] = var(INFLUENCE)  # store.analysis.INFLUENCE (raw) or RELATIVE: what rankings rank by
    ranking_sort: var[SortState] = var(SortState(INFLUENCE, True))
    tests_sort: var[SortState] = var(SortState("index", False))
    corruption_sort: var[SortState] = var(SortState("sign", True))
    content_version: var[int] = var(0)  # new scores or predictions landed
    stages_version: var[int] = var(0)  # stage records or live progress changed
    reports_version: var[int] = var(0)  # a regularization report arrived
    engine_state: var[str] = var(IDLE)

    def __init__(
        self, store: Path | None = None, config: RunConfig | None = None, engine_runner: EngineRunner | None = None
    ) -> None:
        super().__init__()
        if (store is None) == (config is None):
            raise ValueError("give exactly one of store (open it) or config (run the engine for it)")
        self.config = config
        self.store_path: Path = Path(store) if store is not None else config.store_path()
        self.data: StoreData | None = None
        self.store_problem: str | None = None  # why no store is open, shown by the overview
        self.engine_runner: EngineRunner = engine_runner or process_runner
        self.live = LiveProgress()
        self.last_outcome: EngineOutcome | None = None
        self.last_failure: WorkerFailed | None = None  # what the d key details
        self.reports: dict[str, RegularizationReport] = {}  # by variant; possibly older than the newest scores
        self._report_versions: dict[str, int] = {}  # the content_version each report was computed at
        self._report_running: tuple[str, int] | None = None  # (variant, content_version) being computed
        self._report_failures: dict[str, int] = {}  # the content_version at which a variant's report failed
        self._cancel = threading.Event()
        self._throttle: ProgressThrottle | None = None
        self._poller: Timer | None = None
        self._quit_requested = False

    def get_default_screen(self) -> Screen:
        return MainScreen()

    # ------------------------------------------------------------ start
    def on_mount(self) -> None:
        # What exists once the first screen is drawn (modules, widgets, the store's texts) lives as long as
        # the app: moving it out of the collector's reach keeps full collections from stalling a redraw
        # (about 130 ms each on the benchmark store, measured in docs/tui.md).
        self.call_after_refresh(gc.freeze)
        if self.config is None:
            if self._open_store(fatal=True):
                self._poll_while_incomplete()
            return
        if self.store_path.exists():
            self._open_store(fatal=False)
        if self.data is None or not self.data.scores_done:
            self.start_engine()

    def _open_store(self, *, fatal: bool) -> bool:
        """Open the store; a bad one ends on an error screen (fatal) or a notification."""
        try:
            self.data = StoreData.open(self.store_path)
        except StoreError as error:
            self.store_problem = str(error)
            if fatal:
                from tui.screens.error import StoreErrorScreen  # only when a store cannot be opened

                self.push_screen(StoreErrorScreen(str(error)))
            elif not isinstance(error, StoreNotFound):
                self.notify(str(error), title="Cannot open the store", severity="error")
            return False
        self.store_problem = None
        self.variant = self.variant if self.variant in self.data.variants else VARIANT_CLEAN
        self.reg_index = self.data.reader.main_regularization_index
        self.content_version += 1
        self.stages_version += 1
        return True

    def _close_store(self, problem: str) -> None:
        """Stop showing the store: the engine found it belongs to another run or cannot be read."""
        if isinstance(self.screen, PairScreen):
            self.pop_screen()
        if self.data is not None:
            self.data.close()
            self.data = None
        self.store_problem = problem
        self.content_version += 1
        self.stages_version += 1

    def _poll_while_incomplete(self) -> None:
        """Refresh on a timer while the store is still being written (here or by another process)."""
        if self._poller is None and (self.data is None or not self.data.scores_done):
            self._poller = self.set_interval(REFRESH_SECONDS, self._poll)

    def _poll(self) -> None:
        if self._throttle is not None:
            self._throttle.flush()
        if self.data is None:
            if self.store_path.exists():
                self._open_store(fatal=False)
            return
        try:
            changes = self.data.refresh()
        except StoreError as error:
            self.notify(str(error), title="The store became unreadable", severity="error")
            self._stop_polling()
            return
        if changes.content:
            self.content_version += 1
        if changes.stages:
            self.stages_version += 1
        if self.data.scores_done and self.engine_state == IDLE:
            self._stop_polling()

    def _stop_polling(self) -> None:
        if self._poller is not None:
            self._poller.stop()
            self._poller = None

    # ------------------------------------------------------------ engine
    @property
    def engine_running(self) -> bool:
        return self.engine_state in (RUNNING, CANCELLING)

    def start_engine(self) -> None:
        """Run (or resume) the analysis of ``config`` in a thread; the pipeline resumes from the store."""
        assert self.config is not None
        self._cancel = threading.Event()
        self._throttle = ProgressThrottle(lambda event: self.post_message(EngineProgress(event)))
        self.live.reset()
        self.engine_state = RUNNING
        self.stages_version += 1
        job = partial(self._engine_job, self.config, self.engine_runner, self._throttle, self._cancel)
        self.run_worker(job, thread=True, exclusive=True, group=ENGINE_GROUP, name="engine", exit_on_error=False)
        self._poll_while_incomplete()

    def _engine_job(
        self, config: RunConfig, runner: EngineRunner, throttle: ProgressThrottle, cancel: threading.Event
    ) -> None:
        """The worker thread: run the engine, then report how it ended (never raises)."""
        outcome = run_engine(config, runner, throttle, cancel)
        throttle.flush()
        self.post_message(EngineStopped(outcome))

    def on_engine_progress(self, message: EngineProgress) -> None:
        self.live.update(message.event)
        self.stages_version += 1
        event = message.event
        if event.total is not None and event.done >= event.total:
            self._poll()  # a stage finished: its results are in the store now, not at the next tick
            # Native libraries under the engine may write straight to the terminal; repaint it all.
            self.refresh()

    def on_engine_stopped(self, message: EngineStopped) -> None:
        outcome = message.outcome
        self.last_outcome = outcome
        self.engine_state = IDLE
        if outcome.store_rejected:
            self._close_store(outcome.summary)
        else:
            if self.data is None and self.store_path.exists():
                self._open_store(fatal=False)
            self._poll()
        self._stop_polling()
        if self._quit_requested:
            self.exit()
            return
        if outcome.status == FINISHED:
            if self.last_failure is not None and self.last_failure.title == WORKER_TITLES[ENGINE_GROUP]:
                self.last_failure = None  # the run it described has now finished: d no longer shows it
            self.notify(outcome.summary, title="Engine")
        elif outcome.status == CANCELLED:
            self.notify("Cancelled; press r to resume from where it stopped.", title="Engine")
        elif outcome.status == FAILED:
            self.show_failure(WorkerFailed(WORKER_TITLES[ENGINE_GROUP], outcome.summary, outcome.details))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A worker of the app's failed: undo what it was doing, then say so (the app carries on)."""
        failure = failure_of(event, WORKER_TITLES.get(event.worker.group, "Background work failed"))
        if failure is None:
            return
        if event.worker.group == REPORT_GROUP and self._report_running is not None:
            variant, version = self._report_running
            self._report_running = None
            self._report_failures[variant] = version  # not again until the scores change or it is asked for
            self.reports_version += 1
        elif event.worker.group == ENGINE_GROUP:  # the job itself broke (run_engine turns engine errors into outcomes)
            self.engine_state = IDLE
            self.last_outcome = EngineOutcome(FAILED, summary=failure.summary, details=failure.details)
            self.stages_version += 1  # the overview's problem line
            self._stop_polling()
        self.show_failure(failure)

    def on_worker_failed(self, message: WorkerFailed) -> None:
        """A view's worker failed (it has undone its own state)."""
        self.show_failure(message)

    def show_failure(self, failure: WorkerFailed) -> None:
        self.last_failure = failure
        self.notify(
            f"{failure.summary}\nPress d for the details.",
            title=failure.title,
            severity="error",
            timeout=FAILURE_NOTICE_SECONDS,
        )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The engine keys only when they can act: cancel while it runs, resume while there is work left."""
        if action == "cancel_engine":
            return self.engine_state == RUNNING
        if action == "resume_engine":
            complete = self.data is not None and self.data.scores_done
            return self.config is not None and not self.engine_running and not complete
        return True

    def watch_engine_state(self) -> None:
        self.refresh_bindings()

    def action_cancel_engine(self) -> None:
        """Only while running (check_action): the engine raises Cancelled at its next batch."""
        self._cancel.set()
        self.engine_state = CANCELLING
        self.notify("Cancelling: the engine stops after its current batch.", title="Engine")

    def action_resume_engine(self) -> None:
        """Only when idle with work left (check_action): the pipeline resumes from the store."""
        self.start_engine()

    def action_error_details(self) -> None:
        """The last failure's full story (the engine's, a worker's), else why no store is open."""
        details = self.last_failure.details if self.last_failure is not None else self.store_problem
        if details is None:
            self.notify("No error to show.")
            return
        from tui.screens.error import DetailsScreen  # not needed for the first screen

        self.push_screen(DetailsScreen(details))

    async def action_quit(self) -> None:
        """Cancel the engine first so that the store is left resumable; a second q quits at once."""
        if self.engine_running and not self._quit_requested:
            self._quit_requested = True
            self._cancel.set()
            self.engine_state = CANCELLING
            self.notify("Stopping the engine after its current batch… (q again quits at once)", title="Quit")
            return
        self._cancel.set()
        self.exit()

    def on_unmount(self) -> None:
        """However the app ends (quit, ctrl+c, an error), the engine stops after its batch: the store stays usable."""
        self._cancel.set()
        gc.unfreeze()  # what on_mount froze may be collected again (an app embedded in a longer process)

    # ------------------------------------------------------------ selection
    def _require_data(self) -> StoreData | None:
        if self.data is None:
            self.notify("No store is open yet.", severity="warning")
        return self.data

    def action_step_test(self, step: int) -> None:
        if (data := self._require_data()) is not None:
            self.select_pair((self.test_index + step) % data.n_test, NO_PAIR)

    def select_pair(self, test_index: int, train_index: int) -> None:
        """Select a test review and (NO_PAIR for none) one of its training reviews, in every view."""
        self.train_index = train_index
        self.test_index = test_index

    def action_toggle_variant(self) -> None:
        if (data := self._require_data()) is None:
            return
        if not data.has_corrupted:
            self.notify(data.no_corrupted_variant, severity="warning")
            return
        self.variant = VARIANT_CORRUPTED if self.variant == VARIANT_CLEAN else VARIANT_CLEAN

    def action_toggle_score(self) -> None:
        """Raw ↔ relative influence in every view; a ranking sorted by a score follows to the other one."""
        kind = RELATIVE if self.score_kind == INFLUENCE else INFLUENCE
        if self.ranking_sort.column in SCORES:
            # Set without its watchers: the ranking follows both changes in the one redraw score_kind starts.
            self.set_reactive(InfluenceApp.ranking_sort, SortState(kind, self.ranking_sort.descending))
        self.score_kind = kind

    def action_step_lambda(self, step: int) -> None:
        if (data := self._require_data()) is not None:
            self.reg_index = max(0, min(len(data.regularizations) - 1, self.reg_index + step))

    def on_pair_requested(self, message: PairRequested) -> None:
        self.select_pair(message.test_index, message.train_index)
        if not isinstance(self.screen, PairScreen):
            self.push_screen(PairScreen())

    # ------------------------------------------------------------ screens
    def help_sections(self) -> list[HelpSection]:
        """Where each binding applies, for the help screen."""
        from tui.widgets.heatmap_view import HeatmapCanvas
        from tui.widgets.tests_view import TestsView
        from tui.widgets.virtual_table import VirtualTable

        palette = [Binding(self.COMMAND_PALETTE_BINDING, "command_palette", "command palette: every action by name")]
        return [
            ("Everywhere", [*self.BINDINGS, *palette]),
            ("Tables: test reviews, ranking, corruption", VirtualTable.BINDINGS),
            ("Test reviews", TestsView.BINDINGS),
            ("Heatmap", HeatmapCanvas.BINDINGS),
            ("Pair view (side by side)", PairScreen.BINDINGS),
        ]

    def action_help(self) -> None:
        from tui.screens.help import HelpScreen  # the first screen does without it

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.help_sections()))

    def action_show_tab(self, tab: str) -> None:
        while not isinstance(self.screen, MainScreen) and len(self.screen_stack) > 1:
            self.pop_screen()
        if isinstance(self.screen, MainScreen):
            self.screen.show_tab(tab)

    # ------------------------------------------------------------ analyses
    def report_is_current(self, variant: str) -> bool:
        """Whether the λ-sweep report of ``variant`` saw every score the store holds now."""
        return self._report_versions.get(variant) == self.content_version

    def request_report(self, variant: str) -> None:
        """Compute the λ-sweep report of ``variant`` in a thread (it reads every per-layer matrix).

        One at a time: a thread cannot be interrupted, so while the engine adds scores the
        report is redone when the previous one is finished, not on every new block.
        """
        if self.data is None or self._report_running or self.report_is_current(variant) or self.report_failed(variant):
            return
        self._report_running = (variant, self.content_version)
        self._compute_report(self.data, variant, self.content_version)

    @work(thread=True, group=REPORT_GROUP, exit_on_error=False)
    def _compute_report(self, data: StoreData, variant: str, version: int) -> None:
        report = regularization_report(data.reader, variant)
        self.call_from_thread(self._report_ready, report, version)

    def report_failed(self, variant: str) -> bool:
        """Whether ``variant``'s report failed on the scores the store holds now (d details it)."""
        return self._report_failures.get(variant) == self.content_version

    def retry_report(self, variant: str) -> None:
        self._report_failures.pop(variant, None)
        self.request_report(variant)

    def _report_ready(self, report: RegularizationReport, version: int) -> None:
        self._report_running = None
        self.reports[report.variant] = report
        self._report_versions[report.variant] = version
        self.reports_version += 1

    def action_export(self) -> None:
        if (data := self._require_data()) is None:
            return
        table = self.screen.current_table() if isinstance(self.screen, (MainScreen, PairScreen)) else None
        self._export(data, table)

    @work(thread=True, exclusive=True, group=EXPORT_GROUP, exit_on_error=False)
    def _export(self, data: StoreData, table: ViewTable | None) -> None:
        from tui import export  # the first screen does without it

        folder = export.default_folder(data.path)
        self.call_from_thread(self.notify, f"Writing tables to {folder}…", title="Export")
        paths = export.export_all(data.reader, folder, table)
        listing = "\n".join(str(path) for path in paths)
        self.call_from_thread(self.notify, listing, title=f"Exported {len(paths)} files", timeout=15)

    # ------------------------------------------------------------ palette
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every binding enabled on ``screen`` (app, screen and focused widget), then Textual's own."""
        seen: set[tuple[int, str]] = set()
        for key, active in screen.active_bindings.items():
            binding = active.binding
            if (id(active.node), binding.action) in seen or not binding.description or not active.enabled:
                continue
            seen.add((id(active.node), binding.action))
            yield SystemCommand(
                binding.description.capitalize(),
                f"key: {binding.key_display or key}",
                partial(active.node.run_action, binding.action),
            )
        yield from super().get_system_commands(screen)


def run_app(store: Path | None, config: RunConfig | None, engine_runner: EngineRunner | None = None) -> None:
    """Open the UI on ``store`` (read-only), or on ``config``'s store with the engine behind it."""
    InfluenceApp(store=store, config=config, engine_runner=engine_runner).run()
