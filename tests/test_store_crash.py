"""SIGKILL safety: a writer killed at random moments (in create, in factor writes, in block writes) loses
nothing it marked done; StoreWriter.open recovers the file, and writing finishes with exact results."""

from __future__ import annotations

import random
import time

import pytest
from test_store_support import (
    check_against_expected,
    python_child,
    run_pipeline,
    wide_layers_layout,
)

from store import StoreReader, StoreWriter

pytestmark = pytest.mark.slow  # kills a writer process
TRIALS = 20
PHASES = ("create", "factors", "blocks")
MAX_DELAY_S = {"create": 0.03, "factors": 0.08, "blocks": 0.15}
CHILD = r"""
import sys
from pathlib import Path
from test_store_support import run_pipeline, wide_layers_layout

run_pipeline(Path(sys.argv[1]), wide_layers_layout(), lambda name: print(name, flush=True))
"""


def _kill_during(path, phase: str, rng: random.Random) -> list[str]:
    """Run the writer in a child and SIGKILL it a random moment after it announced ``phase``; its announcements."""
    child = python_child(CHILD, str(path))
    announced = []
    for line in child.stdout:
        announced.append(line.strip())
        if announced[-1] == phase:
            break
    time.sleep(rng.uniform(0, MAX_DELAY_S[phase]))
    child.kill()
    child.wait()
    child.stdout.close()
    child.stderr.close()
    return announced


def test_killed_writer_loses_nothing_marked_done(tmp_path):
    layout = wide_layers_layout()
    rng = random.Random(1234)
    recovered = partial = 0
    for trial in range(TRIALS):
        path = tmp_path / f"trial{trial}.h5"
        phase = PHASES[trial % len(PHASES)]
        assert phase in _kill_during(path, phase, rng)
        if path.exists():  # else killed inside create, before the rename: nothing to recover
            with StoreReader(path) as reader:  # readable as it was left
                blocks = check_against_expected(reader, layout)
            partial += 0 < blocks < layout.n_blocks
            with StoreWriter.open(path, layout) as writer:
                recovered += writer.recovered
                # markers never precede their data: the only repairs are stages left running
                assert all("interrupted" in repair for repair in writer.repairs), writer.repairs
            with StoreReader(path) as reader:
                assert check_against_expected(reader, layout) == blocks
        run_pipeline(path, layout)
        with StoreReader(path) as reader:
            assert check_against_expected(reader, layout) == layout.n_blocks
            assert all(record.status == "done" for record in reader.stages().values())
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(path.name)) == [path.name]
    # the kills did land in the middle of things
    assert recovered >= 3 and partial >= 3, (recovered, partial)
