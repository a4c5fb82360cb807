"""Score blocks written tile by tile of test rows (query chunks): any order, whole on reading, resumed per tile."""

from __future__ import annotations

import dataclasses

import h5py
import pytest
from test_store_support import block_scores, check_against_expected, small_layout

from store import StoreReader, StoreWriter
from store.schema import TILES_PATH, score_chunk_rows


def tile_scores(layout, block: int, tiles: tuple[int, int]) -> dict:
    """The rows of ``tiles`` out of the block's deterministic scores; the train self-influence with tile 0."""
    start, stop = layout.tile_rows_of(*tiles)
    whole = block_scores(layout, block)
    return {
        "total": {key: value[start:stop] for key, value in whole["total"].items()},
        "layers": {key: value[:, start:stop] for key, value in whole["layers"].items()},
        "train_self": whole["train_self"] if tiles[0] == 0 else None,
        "tiles": tiles,
    }


@pytest.fixture
def layout():
    tiled = small_layout(query_tile=3)  # 7 test rows: tiles of 3, 3 and 1
    assert tiled.n_tiles == 3 and score_chunk_rows(tiled) == 3
    return tiled


def test_tiles_in_any_order_make_whole_blocks(tmp_path, layout):
    path = tmp_path / "tiles.h5"
    with StoreWriter.create(path, layout) as writer:
        for block in range(layout.n_blocks):
            for step, tiles in enumerate([(2, 3), (0, 1), (1, 2)]):
                writer.write_score_block(block, **tile_scores(layout, block, tiles))
                assert writer.completed_blocks()[block] == (step == 2)
        assert writer.completed_tiles().all()
    with StoreReader(path) as reader:
        assert check_against_expected(reader, layout) == layout.n_blocks


def test_a_chunk_of_several_tiles_is_one_write(tmp_path, layout):
    path = tmp_path / "tiles.h5"
    with StoreWriter.create(path, layout) as writer:
        writer.write_score_block(0, **tile_scores(layout, 0, (0, 2)))
        assert writer.completed_tiles()[:, 0].tolist() == [True, True, False]
        writer.write_score_block(0, **tile_scores(layout, 0, (2, 3)))
    with StoreReader(path) as reader:
        assert check_against_expected(reader, layout) == 1


def test_the_train_self_influence_comes_with_the_first_tile_only(tmp_path, layout):
    with StoreWriter.create(tmp_path / "tiles.h5", layout) as writer:
        scores = tile_scores(layout, 0, (1, 2))
        with pytest.raises(ValueError, match="first tile"):
            writer.write_score_block(0, **{**scores, "train_self": block_scores(layout, 0)["train_self"]})
        with pytest.raises(ValueError, match="first tile"):
            writer.write_score_block(0, **{**tile_scores(layout, 0, (0, 1)), "train_self": None})


def test_a_tile_marked_without_its_data_is_reset_on_resume(tmp_path, layout):
    path = tmp_path / "tiles.h5"
    with StoreWriter.create(path, layout) as writer:
        writer.write_score_block(0, **tile_scores(layout, 0, (0, 3)))
        writer.write_score_block(1, **tile_scores(layout, 1, (0, 1)))
    with h5py.File(path, "r+") as file:
        file[TILES_PATH][1, 1] = 1  # a marker no write produced
    with StoreWriter.open(path, layout) as writer:
        assert writer.completed_tiles()[:, :2].tolist() == [[True, True], [True, False], [True, False]]
        assert writer.repairs == ["score blocks [1] were marked complete without data; reset"]


def test_a_resumed_store_keeps_its_own_tiles(tmp_path, layout):
    """The tiles follow the memory of the machine that made the store; a resume elsewhere keeps them."""
    path = tmp_path / "tiles.h5"
    with StoreWriter.create(path, layout) as writer:
        writer.write_score_block(0, **tile_scores(layout, 0, (0, 1)))
    for other in (None, 5):
        with StoreWriter.open(path, dataclasses.replace(layout, query_tile=other)) as writer:
            assert writer.layout.query_tile == 3 and writer.completed_tiles()[:, 0].tolist() == [True, False, False]
