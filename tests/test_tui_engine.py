"""The UI with the engine behind it: a fake engine streams a store while the UI stays responsive."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from tui_fixtures import FakeEngine, deterministic_store, engine_config, settle, text_of

from job.errors import UserError
from store.writer import StoreWriter
from tui.app import InfluenceApp
from tui.engine import CANCELLED, FAILED, FINISHED
from tui.messages import EngineProgress
from tui.screens.error import DetailsScreen
from tui.widgets.heatmap_view import HeatmapCanvas
from tui.widgets.ranking_view import RankingView
from tui.widgets.virtual_table import VirtualTable

pytestmark = pytest.mark.slow  # a fake engine streaming into the UI in real time

SIZE = (120, 36)
RESPONSIVE_SECONDS = 1.0  # a generous bound for a key round trip on a loaded 2-core machine


def run(test) -> None:
    asyncio.run(test())


def release(gate: threading.Semaphore, blocks: int) -> None:
    for _ in range(blocks):
        gate.release()


def test_a_fake_engine_streams_results_the_ui_stays_responsive_cancels_and_resumes(tmp_path) -> None:
    gate = threading.Semaphore(0)
    engine = FakeEngine(gate=gate)  # 48 training reviews in 6 blocks of 8
    config = engine_config(tmp_path)

    async def test():
        app = InfluenceApp(config=config, engine_runner=engine)
        progress_messages = []
        async with app.run_test(
            size=SIZE, message_hook=lambda m: isinstance(m, EngineProgress) and progress_messages.append(m)
        ) as pilot:
            assert await settle(pilot, lambda: app.data is not None), "the UI opens the store the engine creates"
            assert app.engine_state == "running"
            await pilot.press("3")
            view = app.screen.query_one(RankingView)
            assert "48 pending" in text_of(view.query_one("#ranking-test"))
            release(gate, 2)
            assert await settle(pilot, lambda: "32 pending" in text_of(view.query_one("#ranking-test")))
            table = view.query_one(VirtualTable)
            assert all(int(row) < 16 for row in table.order[:16])  # the scored rows rank first, pending last

            for key in ("4", "5", "3", "down", "n"):  # the engine is blocked mid-stage: the UI must not be
                started = time.perf_counter()
                await pilot.press(key)
                assert time.perf_counter() - started < RESPONSIVE_SECONDS, key
            assert app.test_index == 1 and app.screen.query_one("#tabs").active == "ranking"

            await pilot.press("1")
            assert "2/6 blocks" in text_of(app.screen.query_one("#overview-stages"))
            await pilot.press("x")
            assert app.engine_state in ("cancelling", "idle")  # it stops within one block: maybe already
            assert await settle(pilot, lambda: app.last_outcome is not None)
            assert app.last_outcome.status == CANCELLED and app.engine_state == "idle"
            assert app.data.stages["scores"].status == "cancelled"
            assert engine.blocks_written == 2

            await pilot.press("r")
            assert app.engine_state == "running"
            release(gate, 10)
            assert await settle(pilot, lambda: app.last_outcome.status == FINISHED)
            assert app.data.scores_done and app.data.scored.all()
            assert engine.calls == 2 and engine.blocks_written == 6  # resumed: no block written twice
            await pilot.press("3")
            assert "pending" not in text_of(view.query_one("#ranking-test"))
            await pilot.press("1")
            stages = text_of(app.screen.query_one("#overview-stages"))
            assert "train demo model" in stages and "6/6 blocks" in stages
        assert progress_messages, "progress arrives as messages"

    run(test)


def test_progress_messages_are_throttled_and_the_latest_wins(tmp_path) -> None:
    engine = FakeEngine(n_train=400, score_block=4)  # 100 blocks as fast as the store writes them

    async def test():
        app = InfluenceApp(config=engine_config(tmp_path), engine_runner=engine)
        handled = []
        async with app.run_test(
            size=SIZE, message_hook=lambda m: isinstance(m, EngineProgress) and handled.append(m.event)
        ) as pilot:
            assert await settle(pilot, lambda: app.last_outcome is not None, timeout=30)
            scores = [event for event in handled if event.stage == "scores"]
            assert scores[-1].done == scores[-1].total == 100  # the last step always arrives
            assert len(scores) < 60  # far fewer messages than blocks
            assert app.live.stages["scores"].event.done == 100

    run(test)


def test_an_engine_bug_is_a_notification_with_the_traceback_one_key_away(tmp_path) -> None:
    engine = FakeEngine(failure=ZeroDivisionError("kaboom"), fail_at_block=2)

    async def test():
        app = InfluenceApp(config=engine_config(tmp_path), engine_runner=engine)
        async with app.run_test(size=SIZE) as pilot:
            assert await settle(pilot, lambda: app.last_outcome is not None)
            assert app.last_outcome.status == FAILED
            errors = [n for n in app._notifications if n.severity == "error"]
            assert errors and "ZeroDivisionError: kaboom" in errors[-1].message
            await pilot.pause()
            assert "Engine failed" in text_of(app.screen.query_one("#overview-problem"))
            await pilot.press("d")
            assert isinstance(app.screen, DetailsScreen)
            details = text_of(app.screen.query_one("#details-text"))
            assert "Traceback" in details and "kaboom" in details
            await pilot.press("escape")
            assert app.data is not None and app.data.scored.sum() == 16  # what was written stays visible
            engine.failure = None  # the bug is fixed: a resume finishes, and d no longer shows the old failure
            await pilot.press("r")
            assert await settle(pilot, lambda: app.last_outcome.status == FINISHED)
            await pilot.press("d")
            assert not isinstance(app.screen, DetailsScreen)
            assert app._notifications and list(app._notifications)[-1].message == "No error to show."

    run(test)


def test_a_user_error_is_shown_as_its_message(tmp_path) -> None:
    engine = FakeEngine(failure=UserError("--text-column review: no such column"), fail_at_block=0)

    async def test():
        app = InfluenceApp(config=engine_config(tmp_path), engine_runner=engine)
        async with app.run_test(size=SIZE) as pilot:
            assert await settle(pilot, lambda: app.last_outcome is not None)
            assert app.last_outcome.summary == "--text-column review: no such column"
            assert "Traceback" not in app.last_outcome.details

    run(test)


def test_a_store_of_another_run_is_refused_not_shown(tmp_path) -> None:
    config = engine_config(tmp_path)
    deterministic_store(config.store_path(), n_test=3, n_train=10, complete=False)  # another layout entirely

    async def test():
        app = InfluenceApp(config=config, engine_runner=FakeEngine())
        async with app.run_test(size=SIZE) as pilot:
            assert await settle(pilot, lambda: app.last_outcome is not None)
            assert app.last_outcome.status == FAILED and "another run" in app.last_outcome.summary
            assert app.data is None
            await pilot.press("3")
            assert "another run" in text_of(app.screen.query_one("#ranking-test"))

    run(test)


def test_nan_written_by_the_engine_is_flagged(tmp_path) -> None:
    async def test():
        app = InfluenceApp(config=engine_config(tmp_path), engine_runner=FakeEngine(nan_block=0))
        async with app.run_test(size=SIZE) as pilot:
            assert await settle(pilot, lambda: app.last_outcome is not None)
            await pilot.press("3")
            await pilot.pause()
            assert "1 scores are NaN/inf" in text_of(app.screen.query_one("#ranking-test"))

    run(test)


def test_quitting_mid_run_cancels_first_and_leaves_the_store_resumable(tmp_path) -> None:
    gate = threading.Semaphore(0)
    engine = FakeEngine(gate=gate)
    config = engine_config(tmp_path)

    async def test():
        app = InfluenceApp(config=config, engine_runner=engine)
        async with app.run_test(size=SIZE) as pilot:
            assert await settle(pilot, lambda: app.data is not None)
            release(gate, 1)
            assert await settle(pilot, lambda: engine.blocks_written == 1)
            await pilot.press("q")
            assert any("Stopping the engine" in n.message for n in app._notifications)
            assert await settle(pilot, lambda: app.return_code is not None or not app.is_running)
        assert app.last_outcome.status == CANCELLED

    run(test)
    with StoreWriter.open(config.store_path(), engine.layout) as writer:  # resumable: opens, keeps its block
        assert writer.completed_blocks().sum() == 1
        assert writer.stage("scores").status == "cancelled"


def test_a_finished_store_of_the_config_opens_at_once_without_the_engine(tmp_path) -> None:
    config = engine_config(tmp_path)
    deterministic_store(config.store_path(), n_test=3, n_train=10)

    def must_not_run(*args):
        raise AssertionError("the engine must not start for a finished store")

    async def test():
        app = InfluenceApp(config=config, engine_runner=must_not_run)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            assert app.data is not None and app.data.scores_done and app.engine_state == "idle"
            assert app.check_action("resume_engine", ()) is False and app.check_action("cancel_engine", ()) is False
            await pilot.press("r")  # disabled: nothing to resume
            assert app.engine_state == "idle"

    run(test)


def test_a_store_opened_read_only_has_no_engine_keys(tmp_path) -> None:
    path = deterministic_store(tmp_path / "s.h5", n_test=3, n_train=10, complete=False)

    async def test():
        app = InfluenceApp(store=path)
        async with app.run_test(size=SIZE) as pilot:
            assert app.check_action("cancel_engine", ()) is False and app.check_action("resume_engine", ()) is False
            await pilot.press("x", "r")  # no engine behind a store opened read-only
            assert app.engine_state == "idle" and not app.data.scores_done

    run(test)


def test_the_heatmap_fills_in_as_blocks_land_with_one_pooling_at_a_time(tmp_path) -> None:
    gate = threading.Semaphore(0)
    engine = FakeEngine(gate=gate)

    async def test():
        app = InfluenceApp(config=engine_config(tmp_path), engine_runner=engine)
        async with app.run_test(size=SIZE) as pilot:
            assert await settle(pilot, lambda: app.data is not None)
            await pilot.press("4")
            canvas = app.screen.query_one(HeatmapCanvas)
            assert await settle(pilot, lambda: canvas.pooled is not None)
            assert np.isnan(canvas.pooled.values).all()  # nothing scored yet: all pending, nothing invented
            most_at_once = 0
            for _ in range(6):
                gate.release()
                for _ in range(5):
                    await pilot.pause(0.02)
                    running = [w for w in app.workers if w.group == "heatmap" and not w.is_finished]
                    most_at_once = max(most_at_once, len(running))
            assert await settle(pilot, lambda: app.last_outcome is not None and app.last_outcome.status == FINISHED)
            assert await settle(pilot, lambda: not np.isnan(canvas.pooled.values).any())
            assert most_at_once <= 1

    run(test)
