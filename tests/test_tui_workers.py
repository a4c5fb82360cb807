"""A failure in any thread worker is a readable error, never the end of the app.

Each test injects an exception into one worker (the λ-sweep report, the heatmap's pooling,
an export, the engine job itself) and checks: the app still runs, the notification names
what failed, ``d`` shows the traceback, the view that waited is not stuck, and once the
fault is gone the same action works.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tui_fixtures import FakeEngine, deterministic_store, engine_config, heavy_work_done, settle, text_of

import tui.app
import tui.export
import tui.widgets.heatmap_view
from tui.app import IDLE, InfluenceApp
from tui.engine import FAILED
from tui.screens.error import DetailsScreen
from tui.screens.main import MainScreen

SIZE = (120, 36)
INJECTED = "injected on purpose"


class Fault:
    """A callable that raises while armed, and calls the real function once disarmed."""

    def __init__(self, real):
        self.real = real
        self.armed = True

    def __call__(self, *args, **kwargs):
        if self.armed:
            raise RuntimeError(INJECTED)
        return self.real(*args, **kwargs)


@pytest.fixture
def store_path(tmp_path) -> Path:
    return deterministic_store(tmp_path / "store.h5", n_test=6, n_train=40, regularizations=(1e-5, 1e-3))


async def assert_failure_reported(pilot, title: str) -> None:
    """The app runs on, a notification says what failed, and d details it with the traceback."""
    app = pilot.app
    assert app.is_running and app.return_code is None
    errors = [n for n in app._notifications if n.severity == "error"]
    assert errors and errors[-1].title == title and INJECTED in errors[-1].message, errors
    await pilot.press("d")
    assert isinstance(app.screen, DetailsScreen)
    details = text_of(app.screen.query_one("#details-text"))
    assert "Traceback" in details and INJECTED in details
    await pilot.press("escape")
    assert isinstance(app.screen, MainScreen)


def test_a_failing_report_leaves_the_sweep_view_able_to_try_again(store_path, monkeypatch) -> None:
    fault = Fault(tui.app.regularization_report)
    monkeypatch.setattr(tui.app, "regularization_report", fault)

    async def test():
        app = InfluenceApp(store=store_path)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("7")
            await heavy_work_done(pilot)
            await assert_failure_reported(pilot, "λ sweep failed")
            assert not app.reports
            fault.armed = False
            await pilot.press("1", "7")
            await heavy_work_done(pilot)
            assert app.reports, "the report is computed once the fault is gone"

    asyncio.run(test())


def test_a_failing_recompute_of_a_shown_report_says_so(store_path, monkeypatch) -> None:
    """An old report stays on screen when its recompute fails; its note says the recompute failed,
    not that one is running."""
    fault = Fault(tui.app.regularization_report)
    fault.armed = False
    monkeypatch.setattr(tui.app, "regularization_report", fault)

    async def test():
        app = InfluenceApp(store=store_path)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("7")
            await heavy_work_done(pilot)
            assert app.reports
            fault.armed = True
            app.content_version += 1  # as when new scores land
            await heavy_work_done(pilot)
            await assert_failure_reported(pilot, "λ sweep failed")
            shown = text_of(app.screen.query_one("#lambda-report"))
            assert "recomputing failed (d: details)" in shown and "recomputing…" not in shown

    asyncio.run(test())


def test_a_failing_pooling_leaves_the_heatmap_able_to_try_again(store_path, monkeypatch) -> None:
    fault = Fault(tui.widgets.heatmap_view.pool_matrix)
    monkeypatch.setattr(tui.widgets.heatmap_view, "pool_matrix", fault)

    async def test():
        app = InfluenceApp(store=store_path)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("4")
            await heavy_work_done(pilot)
            await assert_failure_reported(pilot, "Heatmap failed")
            assert "could not be drawn" in text_of(app.screen.query_one("#heatmap-title"))
            fault.armed = False
            await pilot.press("right_square_bracket")  # another λ: the view asks again
            await heavy_work_done(pilot)
            assert app.screen.query_one("HeatmapCanvas").pooled is not None

    asyncio.run(test())


def test_a_failing_export_is_reported_and_the_next_one_works(store_path, monkeypatch) -> None:
    fault = Fault(tui.export.export_all)
    monkeypatch.setattr(tui.export, "export_all", fault)

    async def test():
        app = InfluenceApp(store=store_path)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3", "e")
            await heavy_work_done(pilot)
            await assert_failure_reported(pilot, "Export failed")
            fault.armed = False
            await pilot.press("e")
            await heavy_work_done(pilot)
            assert any((n.title or "").startswith("Exported") for n in app._notifications)

    asyncio.run(test())


def test_a_failing_engine_job_leaves_the_app_idle_and_resumable(tmp_path, monkeypatch) -> None:
    """Not the engine (run_engine turns its errors into outcomes) but the job around it."""
    fault = Fault(tui.app.run_engine)
    monkeypatch.setattr(tui.app, "run_engine", fault)

    async def test():
        app = InfluenceApp(config=engine_config(tmp_path), engine_runner=FakeEngine())
        async with app.run_test(size=SIZE) as pilot:
            assert await settle(pilot, lambda: app.last_outcome is not None)
            assert app.engine_state == IDLE and app.last_outcome.status == FAILED
            await assert_failure_reported(pilot, "Engine failed")
            assert "Engine failed" in text_of(app.screen.query_one("#overview-problem"))
            fault.armed = False
            await pilot.press("r")
            assert await settle(pilot, lambda: app.data is not None and app.data.scores_done)

    asyncio.run(test())
