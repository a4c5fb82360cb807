"""A reader in another process follows a writer: it sees progress and never a complete block without its data."""

from __future__ import annotations

import json
import time

import pytest
from test_store_support import block_scores, many_blocks_layout, python_child

from store import StoreWriter

BLOCK_PAUSE_S = 0.02
READER = r"""
import json, sys, time
import numpy as np
from store import StoreReader
from test_store_support import block_scores, many_blocks_layout

layout = many_blocks_layout()
reader = StoreReader(sys.argv[1])
print("ready", flush=True)
seen, violations, checked = [], [], set()
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    reader.refresh()
    completed = reader.completed_blocks()
    seen.append(int(completed.sum()))
    row = reader.influence_row("corrupted", 1, 3)
    for block in np.flatnonzero(completed):
        start, stop = layout.block_columns(block)
        if not np.array_equal(row[start:stop], block_scores(layout, block)["total"]["corrupted", 1][3]):
            violations.append(int(block))
        if block not in checked:
            layers = reader.layer_rows("clean", 0, 6)[:, start:stop]
            if not np.array_equal(layers, block_scores(layout, block)["layers"]["clean", 0][:, 6]):
                violations.append(int(block))
            checked.add(block)
    if completed.all():
        break
print(json.dumps({"seen": seen, "violations": violations}), flush=True)
"""


@pytest.mark.slow  # a reader in another process
@pytest.mark.parametrize("resumed", [False, True], ids=["writing", "resumed-after-open"])
def test_reader_process_follows_the_writer(tmp_path, resumed):
    """``resumed``: the reader opens a closed store and must notice a writer coming back to it."""
    layout = many_blocks_layout()
    path = tmp_path / "run.h5"
    writer = StoreWriter.create(path, layout)
    writer.write_score_block(0, **block_scores(layout, 0))
    if resumed:
        writer.close()
    child = python_child(READER, str(path))
    assert child.stdout.readline().strip() == "ready", child.stderr.read()
    if resumed:
        writer = StoreWriter.open(path, layout)
    for block in range(1, layout.n_blocks):
        writer.write_score_block(block, **block_scores(layout, block))
        time.sleep(BLOCK_PAUSE_S)
    writer.close()
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["violations"] == []
    assert report["seen"][-1] == layout.n_blocks
    assert len(set(report["seen"])) >= 3, report["seen"]  # it watched blocks arrive, not just the end
