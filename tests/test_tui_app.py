"""Pilot tests of every screen and interaction against small synthetic stores (no torch, no engine)."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from tui_fixtures import (
    NAN_SELF,
    NEGATIVE_SELF,
    ZERO_SELF,
    descending_order,
    deterministic_store,
    expected_relative,
    heavy_work_done,
    relative_store,
    settle,
    text_of,
)

from store.reader import StoreReader
from store.writer import StoreWriter
from tui import format as fmt
from tui.app import InfluenceApp
from tui.screens.error import DetailsScreen, StoreErrorScreen
from tui.screens.help import HelpScreen
from tui.screens.main import MainScreen
from tui.screens.pair import PairScreen
from tui.sorting import SortState
from tui.widgets.corruption_view import CorruptionView
from tui.widgets.heatmap_view import HeatmapCanvas, HeatmapView
from tui.widgets.layers_view import LayersView
from tui.widgets.overview import OverviewView
from tui.widgets.ranking_view import RankingView
from tui.widgets.regularization_view import RegularizationView
from tui.widgets.status_bar import StatusBar
from tui.widgets.tests_view import TestsView
from tui.widgets.virtual_table import VirtualTable

SIZE = (120, 36)
N_TEST, N_TRAIN = 12, 150


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    return deterministic_store(
        tmp_path_factory.mktemp("store") / "store.h5",
        n_test=N_TEST,
        n_train=N_TRAIN,
        regularizations=(1e-5, 1e-3, 1.0),
        score_block=32,
    )


@pytest.fixture(scope="module")
def reader(store_path) -> StoreReader:
    with StoreReader(store_path) as opened:
        yield opened


def run(test) -> None:
    """Run an async pilot test body."""
    asyncio.run(test())


def rows_of(table: VirtualTable) -> list[int]:
    return table.order.tolist()


async def open_tab(pilot, key: str) -> None:
    await pilot.press(key)
    await heavy_work_done(pilot)


# ------------------------------------------------------------------ overview
def test_overview_shows_the_run_the_model_quality_and_every_stage(store_path) -> None:
    async def test():
        app = InfluenceApp(store=store_path)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            overview = app.screen.query_one(OverviewView)
            summary = text_of(overview.query_one("#overview-summary"))
            assert "synthetic" in summary and f"{N_TRAIN} train × {N_TEST} test" in summary
            assert "EK-FAC" in summary and "F1" in summary and "accuracy" in summary
            rendered = text_of(app.screen.query_one("#overview-stages"))
            for stage in (
                "predictions",
                "covariance",
                "eigendecomposition",
                "eigenvalue_correction",
                "queries",
                "scores",
            ):
                assert stage in rendered
            assert rendered.count("done") == 6
            status = text_of(app.screen.query_one(StatusBar).query_one("#status-text"))
            assert "test #0" in status and "clean labels" in status and "λ 1e-05 (1/3)" in status

    run(test)


# ------------------------------------------------------------------ test reviews
@pytest.mark.slow  # every column sorted both ways
def test_test_reviews_sort_by_any_column_filter_by_text_and_select(store_path, reader) -> None:
    async def test():
        app = InfluenceApp(store=store_path)
        async with app.run_test(size=SIZE) as pilot:
            await open_tab(pilot, "2")
            table = app.screen.query_one("#tests-table", VirtualTable)
            assert rows_of(table) == list(range(N_TEST)) and table.has_focus
            await pilot.press("s")  # next column: label
            assert app.tests_sort.column == "label"
            labels = reader.examples("test").label[rows_of(table)]
            assert (np.diff(labels) >= 0).all()
            await pilot.press("s", "s", "s")  # prediction, confidence, self-influence (largest first)
            assert app.tests_sort.column == "self_influence" and app.tests_sort.descending
            self_influence = reader.self_influence("clean", 0, "test")[rows_of(table)]
            assert (np.diff(self_influence) <= 0).all()
            await pilot.press("o")
            assert (np.diff(reader.self_influence("clean", 0, "test")[rows_of(table)]) >= 0).all()
            await pilot.click("#tests-table", offset=(2, 0))  # the header of the first column sorts by it
            assert app.tests_sort.column == "index"
            word = reader.examples("test").text[5].split()[-1]
            await pilot.press("slash", *word)
            expected = [i for i, t in enumerate(reader.examples("test").text) if word.lower() in t.lower()]
            assert rows_of(table) == expected and 5 in expected
            await pilot.press("enter")  # leaves the filter for the table
            assert table.has_focus
            await pilot.press("end", "enter")
            assert app.test_index == expected[-1]
            assert app.screen.query_one("#tabs").active == "ranking"
            await pilot.press("2", "escape")  # escape clears the filter
            assert rows_of(table) == list(range(N_TEST))

    run(test)


# ------------------------------------------------------------------ ranking and the pair
def test_ranking_lists_every_training_review_both_ways(store_path, reader) -> None:
    async def test():
        app = InfluenceApp(store=store_path)
        async with app.run_test(size=SIZE) as pilot:
            await open_tab(pilot, "3")
            table = app.screen.query_one("#ranking-table", VirtualTable)
            row = reader.influence_row("clean", 0, 0)
            assert table.row_count == N_TRAIN  # nothing cut
            assert rows_of(table) == np.argsort(-row, kind="stable").tolist()
            await pilot.press("o")
            assert rows_of(table) == np.argsort(row, kind="stable").tolist()
            assert app.ranking_sort.descending is False
            await pilot.press("n")  # next test review: the ranking follows
            row = reader.influence_row("clean", 0, 1)
            assert rows_of(table)[0] == int(np.argmin(row)) and app.test_index == 1
            await pilot.press("o", "down", "down")
            assert app.train_index == int(np.argsort(-row)[2])
            header = text_of(app.screen.query_one("#ranking-test"))
            assert "Test #1" in header and f"{N_TRAIN} training reviews" in header

    run(test)


def test_selecting_a_training_review_shows_both_texts_score_layer_split_and_rank(store_path, reader) -> None:
    async def test():
        app = InfluenceApp(store=store_path)
        async with app.run_test(size=SIZE) as pilot:
            await open_tab(pilot, "3")
            await pilot.press("down", "enter")
            assert isinstance(app.screen, PairScreen)
            row = reader.influence_row("clean", 0, 0)
            train = int(np.argsort(-row)[1])
            assert app.train_index == train
            summary = text_of(app.screen.query_one("#pair-summary"))
            assert f"{row[train]:+.4g}" in summary and f"rank 2 of {N_TRAIN}" in summary
            for label in fmt.short_names([layer.name for layer in reader.layers]):
                assert label in summary
            assert "Layer names without “transformer.”" in summary
            assert "= total ✓" in summary
            assert reader.examples("train").text[train] in text_of(app.screen.query_one("#pair-train-text"))
            assert reader.examples("test").text[0] in text_of(app.screen.query_one("#pair-test-text"))
            await pilot.press("j")
            assert app.train_index == int(np.argsort(-row)[2])
            await pilot.press("k", "k")
            assert app.train_index == int(np.argmax(row))
            await pilot.press("escape")
            assert isinstance(app.screen, MainScreen)
            assert app.screen.query_one("#ranking-table", VirtualTable).cursor_row == int(np.argmax(row))

    run(test)


def test_a_double_click_on_a_ranking_row_opens_the_pair(store_path) -> None:
    async def test():
        app = InfluenceApp(store=store_path)
        async with app.run_test(size=SIZE) as pilot:
            await open_tab(pilot, "3")
            table = app.screen.query_one("#ranking-table", VirtualTable)
            await pilot.click("#ranking-table", offset=(10, 3))
            assert table.cursor == 2
            await pilot.click("#ranking-table", offset=(10, 3), times=2)
            assert isinstance(app.screen, PairScreen) and app.train_index == table.order[2]

    run(test)


# ------------------------------------------------------------------ heatmap
def test_heatmap_marks_the_extremes_and_enter_opens_that_pair(store_path, reader) -> None:
    async def test():
        app = InfluenceApp(store=store_path)
        async with app.run_test(size=SIZE) as pilot:
            await open_tab(pilot, "4")
            canvas = app.screen.query_one(HeatmapCanvas)
            pooled = canvas.pooled
            matrix = reader.influence_matrix("clean", 0)
            assert pooled is not None and canvas.has_focus
            assert pooled.maximum.value == matrix.max() and pooled.minimum.value == matrix.min()
            assert np.nanmax(np.abs(pooled.values)) == np.abs(matrix).max()
            line = canvas.render_line(1 + canvas.cell_of(pooled.maximum)[0]).text
            assert "▲" in line
            assert "▲ max" in text_of(app.screen.query_one("#heatmap-cell"))
            await pilot.press("minus", "enter")
            assert isinstance(app.screen, PairScreen)
            assert (app.test_index, app.train_index) == (pooled.minimum.test_index, pooled.minimum.train_index)
            await pilot.press("escape", "plus", "right", "down")
            assert text_of(app.screen.query_one("#heatmap-legend")).count("+") >= 1

    run(test)


def test_heatmap_pools_large_matrices_and_a_click_moves_the_cursor(tmp_path) -> None:
    path = deterministic_store(tmp_path / "wide.h5", n_test=60, n_train=900)

    async def test():
        app = InfluenceApp(store=path)
        async with app.run_test(size=(80, 24)) as pilot:
            await open_tab(pilot, "4")
            canvas = app.screen.query_one(HeatmapCanvas)
            rows, cols = canvas.grid_size
            assert canvas.pooled.shape[0] <= rows and canvas.pooled.shape[1] <= cols
            assert canvas.pooled.col_edges[-1] == 900
            await pilot.click(HeatmapCanvas, offset=(7 + 2 * 3, 1 + 2))
            assert canvas.cursor == (2, 3)
            assert "cell =" in text_of(app.screen.query_one("#heatmap-title"))

    run(test)


# ------------------------------------------------------------------ layers
def test_layers_chart_shows_the_pair_and_the_whole_row_with_the_sum_check(store_path, reader) -> None:
    async def test():
        app = InfluenceApp(store=store_path)
        async with app.run_test(size=SIZE) as pilot:
            await open_tab(pilot, "5")
            view = app.screen.query_one(LayersView)
            top = int(np.argmax(reader.influence_row("clean", 0, 0)))
            summary = text_of(view.query_one("#layers-summary"))
            assert f"train #{top}" in summary and "= total" in summary and "✓" in summary
            pair_chart = text_of(view.query_one("#layers-pair-chart"))
            assert "influence per layer" in pair_chart and "┌" in pair_chart
            assert f"all {N_TRAIN} scored training reviews" in text_of(view.query_one("#layers-row-chart"))
            app.train_index = 7
            await pilot.pause()
            assert "train #7" in text_of(view.query_one("#layers-summary"))

    run(test)


# ------------------------------------------------------------------ corruption
@pytest.mark.slow  # through every view
def test_corruption_key_switches_every_view_and_the_before_after_view(store_path, reader) -> None:
    async def test():
        app = InfluenceApp(store=store_path)
        async with app.run_test(size=SIZE) as pilot:
            await open_tab(pilot, "3")
            table = app.screen.query_one("#ranking-table", VirtualTable)
            await pilot.press("c")
            assert app.variant == "corrupted"
            corrupted = reader.influence_row("corrupted", 0, 0)
            assert rows_of(table) == np.argsort(-corrupted, kind="stable").tolist()
            assert "corrupted labels" in text_of(app.screen.query_one(StatusBar).query_one("#status-text"))
            await open_tab(pilot, "6")
            view = app.screen.query_one(CorruptionView)
            clean = reader.influence_row("clean", 0, 0)
            flips = np.flatnonzero(np.sign(clean) != np.sign(corrupted))
            order = rows_of(view.query_one(VirtualTable))
            assert set(order[: len(flips)]) == set(flips.tolist())  # sign changes first
            assert f"{len(flips)} of {N_TRAIN} scored pairs changed sign" in text_of(
                view.query_one("#corruption-summary")
            )
            await pilot.press("enter")
            assert isinstance(app.screen, PairScreen) and app.train_index == order[0]
            await pilot.press("c")
            assert app.variant == "clean"

    run(test)


def test_a_store_without_corrupted_labels_says_so(tmp_path) -> None:
    path = deterministic_store(tmp_path / "clean.h5", n_test=4, n_train=20, variants=("clean",))

    async def test():
        app = InfluenceApp(store=path)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("c")
            assert app.variant == "clean"
            assert any("no corrupted-label variant" in n.message for n in app._notifications)
            await open_tab(pilot, "6")
            assert "no corrupted-label variant" in text_of(app.screen.query_one("#corruption-summary"))

    run(test)


# ------------------------------------------------------------------ regularization
@pytest.mark.slow  # through every view
def test_lambda_keys_step_every_view_and_the_sweep_report_marks_the_recommendation(store_path, reader) -> None:
    async def test():
        app = InfluenceApp(store=store_path)
        async with app.run_test(size=SIZE) as pilot:
            await open_tab(pilot, "3")
            table = app.screen.query_one("#ranking-table", VirtualTable)
            await pilot.press("right_square_bracket")
            assert app.reg_index == 1
            assert rows_of(table) == np.argsort(-reader.influence_row("clean", 1, 0), kind="stable").tolist()
            await pilot.press("right_square_bracket", "right_square_bracket")
            assert app.reg_index == 2  # clamped at the last λ
            await pilot.press("left_square_bracket")
            await open_tab(pilot, "7")
            assert await settle(pilot, lambda: "clean" in app.reports)
            await pilot.pause()
            report = app.reports["clean"]
            view = app.screen.query_one(RegularizationView)
            steps = text_of(view.query_one("#lambda-steps"))
            heat = text_of(view.query_one("#lambda-report"))
            assert "pearson" in heat and "spearman" in heat and "1e-05→0.001" in heat
            if report.recommended is not None:
                assert f"★ recommended λ {report.recommended:g}" in steps
            assert f"{float(report.spearman[0, 0]):+.3f}" in heat
            # A sweep with no stable pair says so, rather than explaining a mark it never shows.
            none_stable = np.zeros_like(report.stable)
            app.reports["clean"] = dataclasses.replace(report, stable=none_stable, plateau=None, recommended=None)
            app.reports_version += 1
            await pilot.pause()
            heat = text_of(view.query_one("#lambda-report"))
            assert f"No neighbouring pair has every layer's Spearman ≥ {report.threshold:g}" in heat
            assert "✓ stable" not in heat

    run(test)


# ------------------------------------------------------------------ raw ↔ relative influence
UNAVAILABLE = sorted((ZERO_SELF, NEGATIVE_SELF, NAN_SELF))


@pytest.fixture(scope="module")
def relative_path(tmp_path_factory) -> Path:
    return relative_store(tmp_path_factory.mktemp("relative") / "relative.h5")


def scores_of(path: Path, variant: str = "clean", test: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The raw row and its relative influence, computed here rather than by the code under test."""
    with StoreReader(path) as opened:
        raw = opened.influence_row(variant, 0, test)
        return raw, expected_relative(raw, opened.self_influence(variant, 0, "train"))


@pytest.mark.slow  # through every view that ranks
def test_the_score_key_ranks_by_relative_influence_and_back(relative_path) -> None:
    raw, relative = scores_of(relative_path)
    raw_order, relative_order = descending_order(raw), descending_order(relative)
    assert raw_order[:5] != relative_order[:5]  # the store is built so that they differ
    n_relative = len(raw) - len(UNAVAILABLE)

    async def test():
        app = InfluenceApp(store=relative_path)
        async with app.run_test(size=SIZE) as pilot:
            await open_tab(pilot, "3")
            view = app.screen.query_one(RankingView)
            table = view.table_widget
            assert rows_of(table) == raw_order and app.score_kind == "influence"
            assert [c.title for c in table.columns[2:4]] == ["•influence", "relative"]
            await pilot.press("i")
            assert app.score_kind == "relative" and app.ranking_sort == SortState("relative", True)
            assert rows_of(table) == relative_order and sorted(rows_of(table)[-3:]) == UNAVAILABLE
            assert [c.title for c in table.columns[2:4]] == ["influence", "•relative"]
            top = relative_order[0]
            cells = view._cells(top)
            assert [cells[0][0], cells[2][0], cells[3][0]] == ["1", f"{raw[top]:+.4g}", f"{relative[top]:+.4g}"]
            assert cells[2][1].dim and not (cells[3][1] and cells[3][1].dim)  # the ranking score stands out
            assert [view._cells(n)[3][0] for n in UNAVAILABLE] == ["n/a"] * 3
            assert view._cells(ZERO_SELF)[0][0] == "—"  # not ranked
            header = text_of(view.query_one("#ranking-test"))
            assert "3 without I(n,n) > 0: relative n/a" in header
            first = raw_order[0]  # the selected pair stays selected, at its place in the new order
            assert table.cursor_row == first == app.train_index
            pair = text_of(view.query_one("#ranking-pair"))
            assert f"train #{first}: relative {relative[first]:+.4g} rank {relative_order.index(first) + 1}/" in pair
            assert f"raw {raw[first]:+.4g} rank 1/{len(raw)}" in pair
            await pilot.press("home")
            pair = text_of(view.query_one("#ranking-pair"))
            assert f"relative {relative[top]:+.4g} rank 1/{n_relative}" in pair
            assert f"raw {raw[top]:+.4g} rank {raw_order.index(top) + 1}/{len(raw)}" in pair
            assert text_of(app.screen.query_one(StatusBar).query_one("#status-text")).rstrip().endswith("│ relative")
            await pilot.press("o")  # most harmful first, still by relative influence; n/a stays last
            assert rows_of(table) == descending_order(-relative)
            await pilot.press("e")  # the view's table follows the score
            await heavy_work_done(pilot)
            exported = relative_path.with_name("relative-export") / "ranking-test0-clean-lambda1e-05-relative.csv"
            with open(exported, newline="") as handle:
                rows = list(csv.DictReader(handle))
            assert [int(r["train_index"]) for r in rows] == rows_of(table) and {r["score"] for r in rows} == {
                "relative"
            }
            assert float(rows[0]["relative_influence"]) == pytest.approx(relative[rows_of(table)[0]], rel=1e-6)
            assert int(rows[0]["rank"]) == n_relative and rows[-1]["relative_influence"] == rows[-1]["rank"] == ""
            await pilot.press("i")
            assert app.score_kind == "influence" and app.ranking_sort == SortState("influence", False)
            assert rows_of(table) == np.argsort(raw, kind="stable").tolist()
            assert text_of(app.screen.query_one(StatusBar).query_one("#status-text")).rstrip().endswith("│ raw")
            await pilot.press("s", "s")  # a sort by another column stays when the score changes; the ranks follow
            assert app.ranking_sort.column == "label"
            order = rows_of(table)
            await pilot.press("i")
            assert rows_of(table) == order and app.ranking_sort.column == "label"
            assert view._cells(top)[0][0] == "1"

    run(test)


def test_the_pair_view_shows_both_scores_with_their_ranks(relative_path) -> None:
    raw, relative = scores_of(relative_path)
    raw_order, relative_order = descending_order(raw), descending_order(relative)

    async def test():
        app = InfluenceApp(store=relative_path)
        async with app.run_test(size=SIZE) as pilot:
            await open_tab(pilot, "3")
            await pilot.press("i", "home", "enter")
            assert isinstance(app.screen, PairScreen)
            top = relative_order[0]
            assert app.train_index == top
            lines = text_of(app.screen.query_one("#pair-summary")).splitlines()
            relative_line = next(line for line in lines if "relative influence" in line)
            raw_line = next(line for line in lines if "raw influence" in line)
            assert relative_line.startswith("▶") and not raw_line.startswith("▶")
            assert f"{relative[top]:+.4g}" in relative_line and "rank 1 of 37" in relative_line
            assert f"{raw[top]:+.4g}" in raw_line and f"rank {raw_order.index(top) + 1} of 40" in raw_line
            await pilot.press("j")  # walks the relative ranking
            assert app.train_index == relative_order[1]
            await pilot.press("i", "j")  # now the raw one, from where it is
            assert app.train_index == raw_order[raw_order.index(relative_order[1]) + 1]
            assert next(line for line in text_of(app.screen.query_one("#pair-summary")).splitlines() if "▶" in line)
            app.train_index = ZERO_SELF
            await pilot.pause()
            summary = text_of(app.screen.query_one("#pair-summary"))
            relative_line = next(line for line in summary.splitlines() if "relative influence" in line)
            assert "n/a" in relative_line and "rank" not in relative_line and "I(n,n) = +0" in summary

    run(test)


def test_the_heatmap_colours_by_the_chosen_score(relative_path) -> None:
    with StoreReader(relative_path) as opened:
        matrix = opened.influence_matrix("clean", 0)
        relative = expected_relative(matrix, opened.self_influence("clean", 0, "train"))

    async def test():
        app = InfluenceApp(store=relative_path)
        async with app.run_test(size=SIZE) as pilot:
            await open_tab(pilot, "4")
            canvas = app.screen.query_one(HeatmapCanvas)
            assert canvas.pooled.maximum.value == matrix.max()
            await pilot.press("i")
            await heavy_work_done(pilot)
            pooled = canvas.pooled
            assert pooled.shape == matrix.shape  # one pair per cell at this size
            assert pooled.maximum.value == pytest.approx(np.nanmax(relative), rel=1e-6)
            assert pooled.minimum.value == pytest.approx(np.nanmin(relative), rel=1e-6)
            np.testing.assert_allclose(pooled.values, relative.astype(np.float32), rtol=1e-6)
            assert not pooled.invalid.any()  # no relative score: blank like pending, not "NaN!"
            assert "relative influence" in text_of(app.screen.query_one("#heatmap-title"))
            assert "pending or n/a" in text_of(app.screen.query_one("#heatmap-legend"))
            await pilot.press("enter")  # the pair behind the cell under the cursor: the (0, 0) cell
            assert isinstance(app.screen, PairScreen) and (app.test_index, app.train_index) == (0, 0)
            await pilot.press("escape", "i")
            await heavy_work_done(pilot)
            assert canvas.pooled.maximum.value == matrix.max()
            assert "relative" not in text_of(app.screen.query_one("#heatmap-title"))

    run(test)


def test_the_corruption_view_compares_the_chosen_score(relative_path) -> None:
    clean_raw, clean = scores_of(relative_path, "clean")
    _, corrupted = scores_of(relative_path, "corrupted")

    async def test():
        app = InfluenceApp(store=relative_path)
        async with app.run_test(size=SIZE) as pilot:
            await open_tab(pilot, "6")
            view = app.screen.query_one(CorruptionView)
            assert "mean influence" in text_of(view.query_one("#corruption-summary"))
            await pilot.press("i")
            summary = text_of(view.query_one("#corruption-summary"))
            assert "mean relative " in summary and "3 pairs pending or n/a" in summary
            best = descending_order(clean)[0]
            cells = view._cells(best)
            assert cells[2][0] == f"{clean[best]:+.4g}" and cells[3][0] == f"{corrupted[best]:+.4g}"
            assert cells[5][0] == "1"  # its rank by relative influence with clean labels
            assert view._cells(ZERO_SELF)[2][0] == "n/a"
            flipped = np.flatnonzero(np.sign(clean) * np.sign(corrupted) < 0)
            order = rows_of(view.query_one(VirtualTable))
            assert set(order[: len(flipped)]) == set(flipped.tolist())
            assert f"{len(flipped)} of 37 scored pairs changed sign" in summary
            assert clean_raw[best] != clean[best]

    run(test)


# ------------------------------------------------------------------ export, help, palette
def test_export_writes_the_store_tables_and_the_current_view(tmp_path) -> None:
    path = deterministic_store(tmp_path / "exp.h5", n_test=4, n_train=30)

    async def test():
        app = InfluenceApp(store=path)
        async with app.run_test(size=SIZE) as pilot:
            await open_tab(pilot, "3")
            await pilot.press("e")
            await heavy_work_done(pilot)
            folder = tmp_path / "exp-export"
            names = {p.name for p in folder.iterdir()}
            assert {"summary.json", "top_influences.csv", "layers.csv", "regularization.csv"} <= names
            ranking = folder / "ranking-test0-clean-lambda1e-05.csv"
            lines = ranking.read_text().splitlines()
            assert lines[0].startswith("variant,lambda,test_index,score,rank,train_index") and len(lines) == 31
            assert "influence,relative_influence" in lines[0] and lines[1].startswith("clean,1e-05,0,influence,1,")
            assert json.loads((folder / "summary.json").read_text())["n_train"] == 30
            assert any("Exported" in (n.title or "") for n in app._notifications)

    run(test)


def test_help_lists_every_binding_and_the_palette_has_every_action(store_path) -> None:
    async def test():
        app = InfluenceApp(store=store_path)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            shown = "\n".join(text_of(s) for s in app.screen.query(".help-section"))
            for description in (
                "next test",
                "clean/corrupted",
                "λ up",
                "export",
                "cancel stage",
                "sort column",
                "filter",
                "most positive",
                "open pair",
                "next in ranking",
                "command palette",
                "raw/relative",
            ):
                assert description in shown
            await pilot.press("escape")
            await open_tab(pilot, "3")
            titles = {command.title for command in app.get_system_commands(app.screen)}
            expected = {"Next test", "Clean/corrupted", "Λ up", "Raw/relative", "Export", "Sort column", "Quit"}
            assert expected | {"Reverse order"} <= titles

    run(test)


# ------------------------------------------------------------------ incomplete, damaged, NaN, NO_COLOR
def test_a_store_still_being_written_shows_pending_and_fills_in(tmp_path) -> None:
    path = deterministic_store(tmp_path / "partial.h5", n_test=5, n_train=64, score_block=16, complete=False)

    async def test():
        app = InfluenceApp(store=path)
        async with app.run_test(size=SIZE) as pilot:
            await open_tab(pilot, "3")
            table = app.screen.query_one("#ranking-table", VirtualTable)
            view = app.screen.query_one(RankingView)
            assert "32 pending" in text_of(view.query_one("#ranking-test"))
            last = table.order[-1]
            assert last >= 32 and view._cells(last)[2][0] == "pending"
            assert view._cells(last)[0][0] == "—"
            with StoreWriter.open(path, app.data.reader.layout) as writer:
                from store.synthetic import _ScoreModel

                model = _ScoreModel(writer.layout, 0)
                for block in (2, 3):
                    total, layers, train_self = model.block(block)
                    writer.write_score_block(block, total=total, layers=layers, train_self=train_self)
            assert await settle(pilot, lambda: "pending" not in text_of(view.query_one("#ranking-test")))
            assert app.data.scored.all()

    run(test)


def test_nan_scores_are_flagged_never_shown_as_numbers(tmp_path) -> None:
    path = deterministic_store(tmp_path / "nan.h5", n_test=3, n_train=32, score_block=16, complete=False)
    with StoreReader(path) as opened:
        layout = opened.layout
    with StoreWriter.open(path, layout) as writer:
        shape = {"total": (3, 16), "layers": (3, 3, 16), "train_self": (16,)}
        arrays = {
            name: {(v, k): np.full(s, np.nan, dtype=np.float32) for v in layout.variants for k in range(2)}
            for name, s in shape.items()
        }
        writer.write_score_block(1, total=arrays["total"], layers=arrays["layers"], train_self=arrays["train_self"])

    async def test():
        app = InfluenceApp(store=path)
        async with app.run_test(size=SIZE) as pilot:
            await open_tab(pilot, "3")
            view = app.screen.query_one(RankingView)
            assert "16 scores are NaN/inf" in text_of(view.query_one("#ranking-test"))
            assert view._cells(20)[2][0] == "NaN!"
            await open_tab(pilot, "4")
            assert app.screen.query_one(HeatmapCanvas).pooled.invalid.any()

    run(test)


@pytest.mark.parametrize("content", [b"not an hdf5 file at all", b""])
def test_a_damaged_store_gets_a_one_line_message_not_a_traceback(tmp_path, content) -> None:
    path = tmp_path / "bad.h5"
    path.write_bytes(content)

    async def test():
        app = InfluenceApp(store=path)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            assert isinstance(app.screen, StoreErrorScreen)
            message = text_of(app.screen.query_one("#store-error-message"))
            assert str(path) in message and "\n" not in message
            await pilot.press("d")
            assert isinstance(app.screen, DetailsScreen)

    run(test)


def test_a_truncated_store_is_refused(tmp_path) -> None:
    path = deterministic_store(tmp_path / "cut.h5", n_test=3, n_train=20)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    async def test():
        app = InfluenceApp(store=path)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            assert isinstance(app.screen, StoreErrorScreen)
            assert "truncated" in text_of(app.screen.query_one("#store-error-message"))

    run(test)


def test_no_color_draws_the_heatmap_with_glyphs(store_path, monkeypatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")

    async def test():
        app = InfluenceApp(store=store_path)
        async with app.run_test(size=SIZE) as pilot:
            assert app.no_color
            await open_tab(pilot, "4")
            canvas = app.screen.query_one(HeatmapCanvas)
            drawn = "".join(canvas.render_line(y).text for y in range(1, 5))
            assert any(glyph in drawn for glyph in "░▒▓█") and ("+" in drawn or "-" in drawn)

    run(test)


@pytest.mark.slow  # every view, drawn at the smallest size
def test_every_view_renders_at_80x24(store_path) -> None:
    async def test():
        app = InfluenceApp(store=store_path)
        async with app.run_test(size=(80, 24)) as pilot:
            for key in "1234567":
                await open_tab(pilot, key)
            view = app.screen.query_one(HeatmapView)
            assert view.canvas.pooled is not None
            assert app.screen.query_one(TestsView).table_widget.row_count == N_TEST

    run(test)
