"""Killed runs resume: SIGKILL at every stage boundary, in the middle of every stage, and at
random moments; the finished store then holds the same numbers as an uninterrupted run (to
float32 rounding: ``store_numbers``). Stores of several query chunks resume tile by tile.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from local_assets import corpus_rows, save_tiny_model, write_csv_folder
from store_numbers import assert_same_numbers, snapshot
from test_query_chunks import budget_for_rows

from influence.pipeline import run_pipeline
from job.config import RunConfig
from job.stages import STAGES
from store.errors import StoreError
from store.reader import StoreReader

pytestmark = pytest.mark.slow  # kills and reruns the pipeline in subprocesses
ROOT = Path(__file__).resolve().parents[1]
TRAIN_BATCHES = 6


KILL_AT_EVENT = """
import json, os, signal, sys
from job.config import RunConfig
from influence.pipeline import run_pipeline

config = RunConfig.from_dict(json.loads(sys.argv[1])).validate()
stage, done = sys.argv[2], int(sys.argv[3])

def progress(event):
    if event.stage == stage and event.done >= done:
        os.kill(os.getpid(), signal.SIGKILL)

run_pipeline(config, progress=progress)
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    rows = corpus_rows(num_train=60, num_test=20)
    settings = dict(
        model=str(save_tiny_model(root / "model", rows)),
        dataset=str(write_csv_folder(root / "csv", rows)),
        num_train=TRAIN_BATCHES * 4,
        num_test=6,
        batch_size=4,
        max_length=40,
        sweep=[1e-3, 1e-1],
        checkpoint_seconds=0.0,
    )
    reference = RunConfig(**settings, store=str(root / "reference.h5")).validate()
    run_pipeline(reference)
    return root, settings, reference.store_path()


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# Every stage boundary, and the middle of every stage that keeps partial state (the others,
# predictions and queries, restart from their beginning: their middle is their boundary).
PARTIAL_STAGES = ("covariance", "eigendecomposition", "eigenvalue_correction", "scores")
KILL_POINTS = [(stage, "middle") for stage in PARTIAL_STAGES] + [(stage, "end") for stage in STAGES]


@pytest.mark.parametrize(("stage", "where"), KILL_POINTS, ids=[f"{s}-{w}" for s, w in KILL_POINTS])
def test_sigkill_then_rerun_gives_the_same_numbers(setup, tmp_path, stage, where):
    root, settings, reference = setup
    config = RunConfig(**settings, store=str(tmp_path / "store.h5")).validate()
    totals = {
        "predictions": 2,
        "covariance": TRAIN_BATCHES,
        "eigendecomposition": 4,
        "eigenvalue_correction": TRAIN_BATCHES,
        "queries": 2,
        "scores": TRAIN_BATCHES * 4 * 6,  # pairs: train × test
    }
    done = 1 if where == "middle" else totals[stage]
    # A fresh interpreter, not a fork: forking after torch's OpenMP pool has run can deadlock the child.
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AT_EVENT, json.dumps(config.to_dict()), stage, str(done)],
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run_pipeline(config)
    assert_same_numbers(snapshot(reference), snapshot(config.store_path()))


def test_a_run_in_query_chunks_resumes_tile_by_tile(setup, tmp_path):
    """Three chunks of two queries (one block of training columns): killed after the first chunk's tile,
    resumed and killed after the second's, then finished with the whole test set in memory (the store
    keeps its tiles)."""
    root, settings, reference = setup
    whole = RunConfig(**settings, store=str(tmp_path / "store.h5")).validate()
    chunked = dataclasses.replace(whole, memory_budget=budget_for_rows(whole, 2))
    pairs_per_chunk = 2 * TRAIN_BATCHES * 4
    for tiles_done in (1, 2):
        killed = subprocess.run(
            [
                sys.executable,
                "-c",
                KILL_AT_EVENT,
                json.dumps(chunked.to_dict()),
                "scores",
                str(tiles_done * pairs_per_chunk),
            ],
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        with StoreReader(whole.store_path()) as reader:
            assert reader.layout.n_tiles == 3 and int(reader.completed_tiles().sum()) == tiles_done
    run_pipeline(whole)
    assert_same_numbers(snapshot(reference), snapshot(whole.store_path()))


def test_random_kills_of_the_command_line_and_a_reader_watching(setup, tmp_path):
    """The real command, killed at random moments while another process reads the store."""
    root, settings, reference = setup
    out = tmp_path / "out"
    args = [
        sys.executable,
        "-m",
        "job.cli",
        "--export",
        str(out),
        "--model",
        settings["model"],
        "--dataset",
        settings["dataset"],
        "--num-train",
        "24",
        "--num-test",
        "6",
        "--batch-size",
        "4",
        "--max-length",
        "40",
        "--sweep",
        "1e-3,1e-1",
        "--checkpoint-every",
        "0",
    ]
    generator = random.Random(7)
    store = out / "influence.h5"
    seen_progress = False
    for _ in range(3):
        process = subprocess.Popen(args, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        kill_at = None  # a random moment once the store exists (imports take a while on a busy machine)
        while process.poll() is None and (kill_at is None or time.monotonic() < kill_at):
            if store.exists():
                kill_at = kill_at or time.monotonic() + generator.uniform(0.0, 2.0)
                try:
                    with StoreReader(store) as reader:
                        seen_progress |= any(r.status != "pending" for r in reader.stages().values())
                except StoreError as error:  # a store being created or recovered: a clear error, never a crash
                    assert "influence.h5" in str(error)
            time.sleep(0.1)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    final = subprocess.run(args, env=_environment(), capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    assert seen_progress
    assert_same_numbers(snapshot(reference), snapshot(store))
