"""The UI's pure parts: throttling, sorting, pooling, colours, formats, the engine outcome. No Textual app."""

from __future__ import annotations

import math

import numpy as np
import pytest

from job.config import RunConfig
from job.errors import UserError
from job.progress import Cancelled, ProgressEvent
from store.errors import StoreDamaged
from tui import format as fmt
from tui import palette
from tui.cells import kind_cell, relative_cell
from tui.data import Row
from tui.engine import CANCELLED, FAILED, FINISHED, LiveProgress, ProgressThrottle, run_engine
from tui.export import ViewTable, csv_value, default_folder, write_view_table
from tui.pooling import pool_matrix
from tui.sorting import descending_ranks, matching_rows, rank_of, sort_rows
from tui.widgets.layer_split import sum_matches


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ throttle
def test_throttle_sends_at_most_one_event_per_stage_per_interval_and_the_latest_wins() -> None:
    clock, sent = FakeClock(), []
    throttle = ProgressThrottle(sent.append, interval=0.1, clock=clock)
    for done in range(1, 50):
        throttle(ProgressEvent("covariance", done, 100))
    throttle(ProgressEvent("eigen", 1, 10))
    assert [(e.stage, e.done) for e in sent] == [("covariance", 1), ("eigen", 1)]
    clock.now = 0.05
    throttle.flush()
    assert sent[-1] == ProgressEvent("covariance", 49, 100)  # held back, then the latest went out
    clock.now = 0.2
    throttle(ProgressEvent("covariance", 60, 100))
    assert sent[-1].done == 60 and len(sent) == 4


def test_throttle_never_holds_the_event_that_completes_a_stage() -> None:
    clock, sent = FakeClock(), []
    throttle = ProgressThrottle(sent.append, interval=10.0, clock=clock)
    throttle(ProgressEvent("scores", 1, 5))
    throttle(ProgressEvent("scores", 5, 5))
    assert [e.done for e in sent] == [1, 5]
    throttle.flush()
    assert len(sent) == 2


def test_live_progress_rate_and_eta_restart_when_a_stage_starts_over() -> None:
    clock = FakeClock()
    live = LiveProgress(clock)
    live.update(ProgressEvent("scores", 10, 110, "blocks"))
    clock.now = 2.0
    live.update(ProgressEvent("scores", 30, 110, "blocks"))
    stage = live.stages["scores"]
    assert stage.rate() == pytest.approx(10.0) and stage.eta() == pytest.approx(8.0)
    live.update(ProgressEvent("scores", 0, 110, "blocks"))
    assert live.stages["scores"].rate() == 0.0 and live.stages["scores"].eta() is None


# ------------------------------------------------------------------ engine outcome
def _runner(error: BaseException | None):
    def run(config, progress, cancel):
        if error is not None:
            raise error
        return config.store_path()

    return run


@pytest.mark.parametrize(
    ("error", "status", "summary"),
    [
        (None, FINISHED, "analysis complete"),
        (Cancelled("cancelled"), CANCELLED, "resume"),
        (UserError("--layers matched nothing"), FAILED, "--layers matched nothing"),
        (StoreDamaged("/x.h5", "truncated file"), FAILED, "/x.h5: truncated file"),
        (ZeroDivisionError("boom"), FAILED, "ZeroDivisionError: boom"),
    ],
)
def test_run_engine_turns_every_ending_into_an_outcome(tmp_path, error, status, summary) -> None:
    import threading

    outcome = run_engine(RunConfig(store=str(tmp_path / "s.h5")), _runner(error), lambda e: None, threading.Event())
    assert outcome.status == status and summary in outcome.summary
    if isinstance(error, ZeroDivisionError):
        assert "Traceback" in outcome.details and "boom" in outcome.details


# ------------------------------------------------------------------ sorting
def test_sort_rows_puts_nan_last_both_ways_and_breaks_ties_by_row() -> None:
    keys = np.array([2.0, np.nan, 5.0, 2.0, -1.0])
    assert sort_rows(keys, descending=True).tolist() == [2, 0, 3, 4, 1]
    assert sort_rows(keys, descending=False).tolist() == [4, 0, 3, 2, 1]
    assert sort_rows(keys, descending=True, rows=np.array([1, 3, 4])).tolist() == [3, 4, 1]


def test_sort_rows_sorts_text_keys_and_keeps_ties_in_row_order() -> None:
    keys = np.array(["b", "a", "b", "c"], dtype=object)
    assert sort_rows(keys, descending=False).tolist() == [1, 0, 2, 3]
    assert sort_rows(keys, descending=True).tolist() == [3, 0, 2, 1]


def test_descending_ranks_and_text_filter() -> None:
    assert descending_ranks(np.array([0.5, np.nan, 2.0, -1.0])).tolist() == [2, 0, 1, 3]
    texts = ["A great film", "dull", "Great acting"]
    assert matching_rows(texts, " great ").tolist() == [0, 2]
    assert matching_rows(texts, "").tolist() == [0, 1, 2]
    assert matching_rows(texts, "zzz").size == 0


def test_rank_of_one_entry_agrees_with_the_full_ranks() -> None:
    rng = np.random.default_rng(4)
    values = rng.integers(-3, 4, 200).astype(np.float64)  # many ties
    values[rng.choice(200, 20, replace=False)] = np.nan
    ranks = descending_ranks(values)
    assert [rank_of(values, i) for i in range(200)] == ranks.tolist()


# ------------------------------------------------------------------ relative influence
def test_a_row_knows_pending_invalid_and_unavailable_relative_scores() -> None:
    values = np.array([4.0, np.nan, 1.0, 2.0, np.inf], dtype=np.float32)
    scored = np.array([True, False, True, True, True])
    train_self = np.array([4.0, 1.0, 0.0, np.nan, 1.0], dtype=np.float32)
    row = Row(values, scored, train_self)
    assert row.relative[0] == 2.0 and np.isnan(row.relative[1:]).all()
    assert row.unavailable.tolist() == [False, False, True, True, False]
    assert row.score("relative") is row.relative and np.array_equal(row.score("influence"), row.shown, equal_nan=True)
    cells = [relative_cell(float(values[i]), float(row.relative[i]), bool(scored[i]))[0] for i in range(5)]
    assert cells == ["+2", fmt.PENDING, fmt.NOT_AVAILABLE, fmt.NOT_AVAILABLE, fmt.INVALID]
    assert kind_cell("influence", 4.0, 2.0, True)[0] == "+4" and kind_cell("relative", 4.0, 2.0, True)[0] == "+2"


# ------------------------------------------------------------------ pooling
def _brute_force(matrix: np.ndarray, row_width: int, col_width: int) -> np.ndarray:
    rows, cols = -(-matrix.shape[0] // row_width), -(-matrix.shape[1] // col_width)
    out = np.full((rows, cols), np.nan)
    for r in range(rows):
        for c in range(cols):
            block = matrix[r * row_width : (r + 1) * row_width, c * col_width : (c + 1) * col_width]
            finite = block[np.isfinite(block)]
            if finite.size:
                out[r, c] = finite[np.argmax(np.abs(finite))]
    return out


@pytest.mark.parametrize(("n_test", "n_train", "rows", "cols"), [(37, 101, 10, 12), (5, 7, 20, 20), (70, 9, 8, 3)])
def test_pooling_keeps_the_largest_magnitude_of_each_block_and_where_it_is(n_test, n_train, rows, cols) -> None:
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((n_test, n_train)).astype(np.float32)
    matrix[3, :] = np.nan  # a pending row
    scored = np.ones(n_train, dtype=bool)
    pooled = pool_matrix(lambda tests: matrix[tests], n_test, n_train, scored, rows, cols)
    row_width, col_width = -(-n_test // rows), -(-n_train // cols)
    expected = _brute_force(matrix, row_width, col_width)
    np.testing.assert_array_equal(pooled.values, expected.astype(np.float32))
    finite = np.isfinite(pooled.values)
    np.testing.assert_array_equal(matrix[pooled.test_index[finite], pooled.train_index[finite]], pooled.values[finite])
    assert pooled.shape[0] <= rows and pooled.shape[1] <= cols
    assert pooled.maximum.value == np.nanmax(matrix) and matrix[
        pooled.maximum.test_index, pooled.maximum.train_index
    ] == np.nanmax(matrix)
    assert pooled.minimum.value == np.nanmin(matrix)
    assert pooled.invalid[3 // row_width].any()  # NaN in written columns is invalid, not pending


def test_pooling_tells_pending_from_invalid() -> None:
    matrix = np.ones((4, 6), dtype=np.float32)
    matrix[:, 3:] = np.nan  # columns not written yet
    matrix[0, 0] = np.inf  # written, but not finite
    scored = np.array([True, True, True, False, False, False])
    pooled = pool_matrix(lambda tests: matrix[tests], 4, 6, scored, 4, 6)
    assert np.isnan(pooled.values[:, 3:]).all() and not pooled.invalid[:, 3:].any()
    assert pooled.invalid[0, 0] and pooled.invalid.sum() == 1
    assert pooled.minimum is None  # no negative value anywhere


# ------------------------------------------------------------------ palette and formats
def test_colour_levels_are_signed_and_saturate() -> None:
    assert palette.level(0.0, 1.0) == 0
    assert palette.level(0.01, 1.0) == 1 and palette.level(-0.01, 1.0) == -1
    assert palette.level(5.0, 1.0) == palette.LEVELS and palette.level(-5.0, 1.0) == -palette.LEVELS
    assert palette.background(3) == palette.POSITIVE_RAMP[2] and palette.background(-1) == palette.NEGATIVE_RAMP[0]


def test_no_color_cells_still_carry_sign_and_magnitude() -> None:
    strong_positive = palette.cell(1.0, 1.0, no_color=True)
    weak_negative = palette.cell(-0.1, 1.0, no_color=True)
    pending = palette.cell(float("nan"), 1.0, no_color=True)
    assert (
        strong_positive.text == "+█" and weak_negative.text == "-░" and pending.text.startswith(palette.PENDING_GLYPH)
    )
    assert palette.cell(1.0, 1.0, no_color=False).style.bgcolor is not None


def test_formats() -> None:
    assert fmt.score(1.23456) == "+1.235" and fmt.score(-5.6e-7) == "-5.6e-07" and fmt.score(math.nan) == fmt.INVALID
    assert fmt.lam(1e-5) == "1e-05" and fmt.lam(0.1) == "0.1"
    assert fmt.clock(7.4) == "0:07" and fmt.clock(126) == "2:06" and fmt.clock(3723) == "1:02:03"
    assert fmt.clock(None) == fmt.MISSING
    assert fmt.rate(12.5, "batches") == "12.5 batches/s" and fmt.rate(0.25, "batches") == "4 s/batch"
    assert fmt.rate(0.0, "batches") == fmt.MISSING and fmt.rate(1234.0, "layers") == "1,234 layers/s"
    assert fmt.parameters(28_900_000) == "28.9M" and fmt.parameters(412) == "412"
    assert fmt.one_line("a  b\n c") == "a b c"


def test_view_tables_follow_the_export_conventions(tmp_path) -> None:
    assert csv_value(np.float32(0.1)) == "0.1" and csv_value(float("nan")) == "" and csv_value(np.bool_(True)) == "true"
    assert default_folder(tmp_path / "run.h5") == tmp_path / "run-export"
    path = write_view_table(ViewTable("t", ["a", "b"], [[1, 2.5], [np.int64(3), np.nan]]), tmp_path)
    assert path.read_text().splitlines() == ["a,b", "1,2.5", "3,"]


def test_layer_sum_check_allows_float32_rounding_only() -> None:
    layers = np.array([1.0, 2.0, -0.5], dtype=np.float32)
    assert sum_matches(layers, 2.5) and sum_matches(layers, 2.5000001)
    assert not sum_matches(layers, 2.6) and not sum_matches(layers, float("nan"))


def test_short_layer_names_keep_what_tells_them_apart() -> None:
    distilbert = [f"distilbert.transformer.layer.{i}.ffn.lin{j}" for i in (0, 1) for j in (1, 2)]
    short = fmt.short_names([*distilbert, "pre_classifier", "classifier"])
    assert short == [f"layer.{i}.ffn.lin{j}" for i in (0, 1) for j in (1, 2)] + ["pre_classifier", "classifier"]
    assert fmt.names_note([*distilbert, "classifier"]) == "layer names without “distilbert.transformer.”"
    names = ["transformer.layer.0.ffn.lin1", "transformer.layer.1.ffn.lin1", "transformer.classifier"]
    assert fmt.short_names(names) == ["layer.0.ffn.lin1", "layer.1.ffn.lin1", "classifier"]
    # One block: its number stays; a name alone in its group stays whole.
    gpt2 = ["transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj", "score"]
    assert fmt.short_names(gpt2) == ["h.0.mlp.c_fc", "h.0.mlp.c_proj", "score"]
    assert fmt.short_names(["a.b", "a.b2"]) == ["b", "b2"] and fmt.short_names(["solo"]) == ["solo"]
    # Cutting would make two names equal: the full names.
    assert fmt.short_names(["x.classifier", "x.head", "classifier"]) == ["x.classifier", "x.head", "classifier"]
    assert fmt.names_note(["x.classifier", "x.head", "classifier"]) == ""
