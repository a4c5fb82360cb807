"""Snapshots of the main screens at 80×24 and 160×48 (``--snapshot-update`` regenerates them).

The store is seeded and its stage clock frozen, and every view's thread worker is
awaited before the picture is taken, so the pictures are the same on every run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tui_fixtures import deterministic_store, heavy_work_done, settle

from tui.app import InfluenceApp

pytestmark = pytest.mark.slow  # renders every screen at two sizes

SIZES = {"80x24": (80, 24), "160x48": (160, 48)}
SCREENS = {
    "overview": ("1",),
    "ranking": ("3", "down", "down"),
    "ranking-relative": ("3", "i", "home", "down"),
    "heatmap": ("4", "plus"),
    "layers": ("5",),
    "regularization": ("7",),
    "pair": ("3", "down", "enter"),
}


@pytest.fixture(scope="module")
def snapshot_store(tmp_path_factory) -> Path:
    return deterministic_store(
        tmp_path_factory.mktemp("snap") / "store.h5",
        n_test=40,
        n_train=400,
        regularizations=(1e-5, 1e-3, 1.0),
        score_block=64,
    )


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("screen", SCREENS)
def test_main_screens(snap_compare, snapshot_store, screen, size) -> None:
    async def steer(pilot) -> None:
        for key in SCREENS[screen]:
            await pilot.press(key)
            await heavy_work_done(pilot)
        if screen == "regularization":
            await settle(pilot, lambda: "clean" in pilot.app.reports)
            await pilot.pause()

    assert snap_compare(InfluenceApp(store=snapshot_store), terminal_size=SIZES[size], run_before=steer)
