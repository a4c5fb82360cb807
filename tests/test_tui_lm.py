"""The terminal UI on a causal LM's store: every tab and the pair view, with a causal LM's words."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tui_fixtures import deterministic_store, heavy_work_done, rendered, text_of

from tui.app import InfluenceApp
from tui.screens.pair import PairScreen
from tui.sorting import SortState
from tui.widgets.corruption_view import CorruptionView
from tui.widgets.ranking_view import RankingView
from tui.widgets.status_bar import StatusBar
from tui.widgets.tests_view import TestsView

SIZE = (120, 36)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    return deterministic_store(
        tmp_path_factory.mktemp("lm") / "lm.h5", n_test=12, n_train=60, score_block=16, task="causal-lm"
    )


@pytest.mark.slow  # through every view
def test_every_tab_speaks_of_queries_documents_and_completions(store_path) -> None:
    async def test():
        app = InfluenceApp(store=store_path)
        async with app.run_test(size=SIZE) as pilot:
            await heavy_work_done(pilot)
            overview = text_of(app.screen.query_one("#overview-summary"))
            assert "synthetic (causal LM)" in overview and "exact match 0.833" in overview
            assert "12 queries (prompt → completion)" in overview and "completions swapped" in overview
            assert "query #0" in rendered(app.screen.query_one(StatusBar).describe())
            tabs = app.screen.query_one("TabbedContent")
            assert str(tabs.get_tab("tests").label) == "Queries"

            await pilot.press("2")
            await heavy_work_done(pilot)
            tests = app.screen.query_one(TestsView)
            table = tests.table_widget
            assert [column.title for column in table.columns][1:4] == ["reference", "generated", "loss/tok"]
            cells = tests._cells(5)  # the synthetic store gets one query in six wrong
            assert cells[1][0] in ("positive", "negative") and cells[2][1] is not None

            await pilot.press("3")
            await heavy_work_done(pilot)
            ranking = app.screen.query_one(RankingView)
            assert "completion" in [column.title for column in ranking.table_widget.columns]
            header = text_of(ranking.query_one("#ranking-test"))
            assert header.startswith("Query #0")
            assert "reference “positive”" in header or "reference “negative”" in header
            swapped = [n for n in range(app.data.n_train) if app.data.corrupted[n]]
            assert swapped and ranking._cells(swapped[0])[5][0] == "swap"
            app.ranking_sort = SortState("label", descending=False)  # by completion: as texts, not by index
            await heavy_work_done(pilot)
            shown = [ranking._cells(int(n))[4][0] for n in ranking.table_widget.order]
            assert shown == sorted(shown, key=str.lower) and len(set(shown)) > 1
            assert shown[0] == "negative"  # the synthetic training documents' completions: negative, positive

            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, PairScreen)
            train = text_of(app.screen.query_one("#pair-train-text"))
            assert train.startswith("Train #") and "completion " in train
            assert text_of(app.screen.query_one("#pair-test-text")).startswith("Query #0  reference")
            await pilot.press("escape")

            for key in "4567":
                await pilot.press(key)
                await heavy_work_done(pilot)
            corruption = app.screen.query_one(CorruptionView)
            assert "completions swapped" in text_of(corruption.query_one("#corruption-summary"))
            assert app.reports  # the λ sweep's report was computed
            await pilot.press("c")  # the corrupted variant: scores of the swapped completions
            await heavy_work_done(pilot)
            assert "corrupted completions" in rendered(app.screen.query_one(StatusBar).describe())

    asyncio.run(test())
