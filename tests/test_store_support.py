"""Helpers shared by the store tests (no tests here): small layouts, deterministic data, child processes.

Scores are a function of (variant, λ index, block), so a test can check any block
it finds marked complete exactly, even one written by a process it killed.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from job.stages import FACTOR_STAGES
from store import StoreWriter
from store.layout import LayerInfo, StoreLayout
from store.schema import STAGE_FACTORS, factor_shape, parse_stage_key, stage_key
from store.synthetic import synthetic_layout

REPO = Path(__file__).resolve().parents[1]
CHILD_TIMEOUT_S = 60


def small_layout(n_train: int = 50, score_block: int = 16, n_test: int = 7, **changes: object) -> StoreLayout:
    """By default 7 test × 50 train examples, 3 layers (one bias-free), 2 variants, 2 λ, blocks of 16."""
    layout = synthetic_layout(
        n_test=n_test,
        n_train=n_train,
        n_layers=3,
        regularizations=(1e-3, 1e-1),
        variants=("clean", "corrupted"),
        seed=5,
        score_block=score_block,
    )
    return dataclasses.replace(layout, **changes)


def many_blocks_layout() -> StoreLayout:
    """The small layout cut into 50 blocks of 8 train examples, for watching progress."""
    return small_layout(n_train=400, score_block=8)


def wide_layers_layout() -> StoreLayout:
    """Many blocks and factors large enough (hundreds of KB) that a kill can land inside their writes."""
    layers = [
        LayerInfo(f"ffn.{i}", in_features=200 + 10 * i, out_features=100, has_bias=i != 1, kind="linear")
        for i in range(2)
    ]
    return small_layout(n_train=240, score_block=8, layers=layers, factor_variants=["clean", "corrupted"])


def block_scores(layout: StoreLayout, block: int) -> dict[str, dict]:
    """Deterministic scores of one block for every (variant, λ index); total = sum of layers."""
    start, stop = layout.block_columns(block)
    n_layers = len(layout.layers)
    total, layers, train_self = {}, {}, {}
    for v, variant in enumerate(layout.variants):
        for k in range(len(layout.regularizations)):
            grid = np.arange(n_layers * layout.n_test * (stop - start)).reshape(n_layers, layout.n_test, -1)
            # integer arithmetic and one exact division: bit-identical on every call (np.sin is not)
            values = ((((grid + 1000 * block + 100 * v + 10 * k) * 7919) % 2001 - 1000) / 97 * (k + 1)).astype(
                np.float32
            )
            layers[variant, k] = values
            total[variant, k] = values.sum(axis=0)
            train_self[variant, k] = np.abs(values).sum(axis=(0, 1))
    return {"total": total, "layers": layers, "train_self": train_self}


def factor_value(layout: StoreLayout, variant: str, layer: int, name: str) -> np.ndarray:
    shape = factor_shape(layout.layers[layer], name)
    return np.full(shape, 1 + layer + 0.5 * len(name), dtype=layout.factor_dtype) + (variant != "clean")


def expected_test_self(layout: StoreLayout, k: int) -> np.ndarray:
    return np.linspace(1, 2, layout.n_test, dtype=np.float32) * (k + 1)


def run_pipeline(path: Path, layout: StoreLayout, phase=lambda name: None) -> None:
    """Write (or finish writing) a whole store, skipping what a previous run completed; ``phase`` announces steps."""
    phase("create")
    with StoreWriter.open_or_create(path, layout) as writer:
        if writer.stage("predictions").status != "done":
            for split in ("train", "test"):
                labels = layout.split(split).label
                writer.write_predictions(split, labels, np.eye(len(layout.label_names))[labels])
            writer.set_stage("predictions", "done")
        phase("factors")
        for variant in layout.factor_variants:
            for stage in FACTOR_STAGES:
                key = stage_key(stage, variant)
                if writer.stage(key).status == "done":
                    continue
                writer.set_stage(key, "running", done=0, total=len(layout.layers), unit="layers")
                for layer in range(len(layout.layers)):
                    for name in STAGE_FACTORS[stage]:
                        writer.write_factor(variant, layer, name, factor_value(layout, variant, layer, name))
                    writer.set_stage(key, "running", done=layer + 1)
                writer.set_stage(key, "done")
        writer.set_stage("queries", "done")
        phase("blocks")
        writer.set_stage("scores", "running", total=layout.n_blocks, unit="blocks")
        completed = writer.completed_blocks()
        for block in range(layout.n_blocks):
            if not completed[block]:
                writer.write_score_block(block, **block_scores(layout, block))
                writer.set_stage("scores", "running", done=int(writer.completed_blocks().sum()))
        for variant in layout.variants:
            for k in range(len(layout.regularizations)):
                writer.write_test_self(variant, k, expected_test_self(layout, k))
        writer.set_stage("scores", "done")
        phase("done")


def check_against_expected(reader, layout: StoreLayout) -> int:
    """Assert every complete block and every done factor stage holds exactly the expected data; return blocks seen."""
    completed = reader.completed_blocks()
    for block in np.flatnonzero(completed):
        expected = block_scores(layout, block)
        start, stop = layout.block_columns(block)
        for (variant, k), values in expected["layers"].items():
            matrix = reader.influence_matrix(variant, k)[:, start:stop]
            np.testing.assert_array_equal(matrix, expected["total"][variant, k])
            for layer in range(len(layout.layers)):
                np.testing.assert_array_equal(reader.influence_matrix(variant, k, layer)[:, start:stop], values[layer])
            np.testing.assert_array_equal(
                reader.self_influence(variant, k, "train")[start:stop], expected["train_self"][variant, k]
            )
    for key, record in reader.stages().items():
        stage, variant = parse_stage_key(key)
        if stage in FACTOR_STAGES and record.status == "done":
            for layer in range(len(layout.layers)):
                for name in STAGE_FACTORS[stage]:
                    np.testing.assert_array_equal(
                        reader.factor(variant, layer, name), factor_value(layout, variant, layer, name)
                    )
    return int(completed.sum())


def child_env() -> dict[str, str]:
    """Environment for a child Python that imports ``store`` and these helpers from the checkout."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}


def python_child(code: str, *args: str, **popen: object) -> subprocess.Popen:
    """Start ``python -c code args...`` in the repository (text-mode pipes)."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=child_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def run_child(code: str, *args: str, **popen: object) -> subprocess.CompletedProcess:
    child = python_child(code, *args, **popen)
    stdout, stderr = child.communicate(timeout=CHILD_TIMEOUT_S)
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
