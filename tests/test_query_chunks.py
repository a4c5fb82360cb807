"""Queries in chunks sized to a memory budget: the same numbers as all at once, tile by tile in the store."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from local_assets import tiny_runs
from store_numbers import assert_same_numbers, snapshot

from influence.batches import rows_of
from influence.memory import QUERY_SHARE, plan_memory
from influence.pipeline import run_pipeline
from influence.preparation import prepare
from influence.stages import query_chunks
from job.config import RunConfig
from job.errors import UserError
from job.options import EngineOptions
from job.sizes import format_size, parse_size
from store.reader import StoreReader
from store.synthetic import synthetic_layout

NUM_TEST = 6
CHUNK_ROWS = 2  # test rows per chunk under the forced budget: three chunks


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return tiny_runs(tmp_path_factory.mktemp("chunks"), num_train=40, num_test=10)


def budget_for_rows(config: RunConfig, rows: int) -> int:
    """A --memory-budget under which a chunk holds ``rows`` test examples' gradients."""
    row_bytes = prepare(config).memory.query_row_bytes
    return math.ceil((rows + 0.5) * row_bytes / QUERY_SHARE)


RUNS = {
    "classifier": ("classifier", EngineOptions()),
    "classifier-empirical": ("classifier", EngineOptions(fisher="empirical")),  # a query set per factor variant
    "causal-lm": ("lm", EngineOptions()),
}


@pytest.mark.parametrize("run", list(RUNS))
def test_a_small_budget_gives_the_numbers_of_a_large_one(assets, tmp_path, run):
    kind, engine = RUNS[run]
    settings = dict(
        **assets[kind], num_train=16, num_test=NUM_TEST, batch_size=4, max_length=48, sweep=[1e-3, 1e-1], engine=engine
    )
    whole = RunConfig(**settings, store=str(tmp_path / "whole.h5")).validate()
    chunked = RunConfig(
        **settings, store=str(tmp_path / "chunked.h5"), memory_budget=budget_for_rows(whole, CHUNK_ROWS)
    ).validate()
    assert prepare(chunked).memory.chunk_rows == CHUNK_ROWS
    run_pipeline(whole)
    run_pipeline(chunked)
    with StoreReader(chunked.store_path()) as reader:
        assert reader.layout.n_tiles == NUM_TEST // CHUNK_ROWS
    with StoreReader(whole.store_path()) as reader:
        assert reader.layout.n_tiles == 1
    assert_same_numbers(snapshot(whole.store_path()), snapshot(chunked.store_path()))


def test_a_budget_below_one_query_is_refused_with_its_sizes(assets):
    config = RunConfig(**assets["classifier"], num_train=8, num_test=2, memory_budget=1000).validate()
    with pytest.raises(UserError, match=r"one test example's gradients need .* but --memory-budget is 666 B"):
        prepare(config)


def test_chunks_are_whole_tiles():
    layout = synthetic_layout(
        n_test=7, n_train=10, n_layers=1, regularizations=(1e-3,), variants=("clean",), seed=0, score_block=5
    )
    tiled = dataclasses.replace(layout, query_tile=2)  # tiles of 2, 2, 2 and 1 rows
    assert query_chunks(tiled, 5) == [(0, 2), (2, 4)]
    assert query_chunks(tiled, 1) == [(0, 1), (1, 2), (2, 3), (3, 4)]  # at least one tile each
    assert query_chunks(layout, 3) == [(0, 1)]  # one tile: one chunk, whatever the budget


def test_batches_are_cut_at_the_rows_asked_for():
    batches = [{"input_ids": torch.arange(4 * i, 4 * i + 4).unsqueeze(1)} for i in range(3)]
    cut = rows_of(batches, 3, 9)
    assert [b["input_ids"].flatten().tolist() for b in cut] == [[3], [4, 5, 6, 7], [8]]
    assert cut[1] is batches[1]  # a whole batch is passed on as it is


def test_without_a_readable_free_memory_everything_is_one_chunk(monkeypatch, assets):
    import influence.memory as memory

    monkeypatch.setattr(memory, "available_memory", lambda device: None)
    analysis = prepare(RunConfig(**assets["classifier"], num_train=8, num_test=3).validate())
    plan = plan_memory(list(analysis.engines.values()), 3)
    assert plan.budget is None and plan.chunk_rows == 3


@pytest.mark.parametrize(
    ("text", "size"), [("64MB", 64 * 10**6), ("2GiB", 2 * 2**30), ("1.5g", 1_500_000_000), ("4096", 4096)]
)
def test_sizes_read_as_people_write_them(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "12 parsecs", "-5MB", "0"])
def test_what_is_not_a_size_is_refused(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_sizes_are_written_in_binary_units():
    assert [format_size(n) for n in (512, 3 * 2**20, 5 * 2**29)] == ["512 B", "3.0 MiB", "2.5 GiB"]


def test_low_rank_queries_fit_more_rows_in_a_budget_and_are_recorded(assets, tmp_path):
    """--query-rank shrinks every query's rows, so a budget holds more of them; the store records the rank."""
    settings = dict(**assets["classifier"], num_train=16, num_test=NUM_TEST, batch_size=4, max_length=48, sweep=[1e-3])
    full = RunConfig(**settings, store=str(tmp_path / "full.h5")).validate()
    budget = budget_for_rows(full, 1)
    low = RunConfig(
        **settings, store=str(tmp_path / "low.h5"), memory_budget=budget, engine=EngineOptions(query_rank=1)
    ).validate()
    assert (
        prepare(low).memory.chunk_rows
        == NUM_TEST
        > prepare(dataclasses.replace(full, memory_budget=budget)).memory.chunk_rows
    )
    run_pipeline(full)
    run_pipeline(low)
    with StoreReader(low.store_path()) as reader:
        assert reader.config["engine"]["query_rank"] == 1
        scores = reader.influence_matrix("clean", reader.main_regularization_index)
    with StoreReader(full.store_path()) as reader:
        assert "query_rank" not in reader.config["engine"]
        reference = reader.influence_matrix("clean", reader.main_regularization_index)
    assert float(np.linalg.norm(scores - reference) / np.linalg.norm(reference)) < 0.05  # a classifier: near rank 1
