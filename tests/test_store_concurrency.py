"""A reader in another process follows a writer: it sees progress and never a complete block without its data."""

from __future__ import annotations

import json
import subprocess
import time

import numpy as np
import pytest
from test_store_support import block_scores, factor_value, many_blocks_layout, python_child

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


# Holds every kind of dataset open before the writer's first write to it (predictions, a factor,
# the markers), as the UI does while the engine runs in its own process, then follows the writer.
EARLY_READER = r"""
import json, sys
import numpy as np
from store import StoreReader

reader = StoreReader(sys.argv[1])
unwritten = bool(np.isnan(reader.factor("clean", 0, "corrected_eigenvalues")).all())
before = (reader.examples("test").prediction.tolist(), unwritten)
print(json.dumps({"before": before, "completed": int(reader.completed_blocks().sum())}), flush=True)
sys.stdin.readline()  # the writer has written
reader.refresh()
after = (reader.examples("test").prediction.tolist(), float(reader.factor("clean", 0, "corrected_eigenvalues").flat[0]))
print(json.dumps({"after": after, "completed": int(reader.completed_blocks().sum())}), flush=True)
"""


@pytest.mark.slow  # a reader in another process
def test_a_reader_holding_datasets_before_their_first_write_sees_them_written(tmp_path):
    """HDF5 cannot refresh, across processes, a dataset that got its storage after the reader opened
    it; the reader opens the file afresh then, and never reports the store unreadable."""
    layout = many_blocks_layout()
    path = tmp_path / "run.h5"
    writer = StoreWriter.create(path, layout)
    child = python_child(EARLY_READER, str(path), stdin=subprocess.PIPE)
    first = json.loads(child.stdout.readline())
    assert first == {"before": [[-1] * layout.n_test, True], "completed": 0}
    labels = layout.test.label
    writer.write_predictions("test", labels, np.eye(len(layout.label_names))[labels].astype(np.float32))
    writer.write_factor("clean", 0, "corrected_eigenvalues", factor_value(layout, "clean", 0, "corrected_eigenvalues"))
    writer.write_score_block(0, **block_scores(layout, 0))
    writer.flush()
    child.stdin.write("go\n")
    child.stdin.flush()
    stdout, stderr = child.communicate(timeout=60)
    writer.close()
    assert child.returncode == 0, stderr
    expected = float(factor_value(layout, "clean", 0, "corrected_eigenvalues").flat[0])
    assert json.loads(stdout) == {"after": [labels.tolist(), expected], "completed": 1}
