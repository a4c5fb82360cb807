"""Two ranks with torch.distributed (gloo, on CPU) give the single process's store; a killed rank is
survived by running the same command again.

The ranks add their float32 sums in another order than one process does, so the numbers agree to
float32 rounding where the damping dominates the rounding of the smallest eigenvalues (λ ≥ 1e-3 on
these models) and a little less at the default λ = 1e-5 (docs/architecture.md, "Ranks").
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from local_assets import tiny_runs
from store_numbers import snapshot
from test_query_chunks import budget_for_rows

from influence.pipeline import run_pipeline
from job.cli import build_parser, config_from_args
from job.config import RunConfig
from store.reader import StoreReader

pytestmark = pytest.mark.slow  # torchrun starts two interpreters per run
ROOT = Path(__file__).resolve().parents[1]
DAMPED = 1e-5  # relative agreement where λ ≥ 1e-3
AT_DEFAULT_LAMBDA = 1e-3  # relative agreement at λ = 1e-5
SETTINGS = ["--num-train", "32", "--num-test", "6", "--batch-size", "4", "--max-length", "48", "--sweep", "1e-3,1e-1"]

# A rank that kills itself after its first score block: the run dies with it, and is run again.
KILLED_RANK = """
import os, signal, sys
from influence.stages import StageRunner
from job.cli import main

scored = StageRunner._block_scores

def scored_then_killed(self, *args):
    arrays = scored(self, *args)
    if self.ranks.rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return arrays

StageRunner._block_scores = scored_then_killed
main(sys.argv[1:])
"""


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    runs = tiny_runs(tmp_path_factory.mktemp("distributed"), num_train=160, num_test=10)
    return {kind: ["--model", run["model"], "--dataset", run["dataset"]] for kind, run in runs.items()}


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def torchrun(args: list[str], script: list[str] | None = None) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    command = [*launcher, *(script or ["-m", "influence"]), *args]
    return subprocess.run(command, env=_environment(), capture_output=True, text=True, timeout=600)


def config_of(args: list[str]) -> RunConfig:
    return config_from_args(build_parser().parse_args(args))


def one_process(args: list[str], store: Path) -> Path:
    return run_pipeline(config_of([*args, "--store", str(store)]))


def assert_ranks_agree(single: Path, distributed: Path) -> None:
    with StoreReader(single) as reader:
        regularizations = reader.regularizations
    expected, actual = snapshot(single), snapshot(distributed)
    assert set(actual) == set(expected)
    for key, value in expected.items():
        parts = key.split("/")
        damped = len(parts) < 3 or regularizations[int(parts[1])] >= 1e-3
        tolerance = DAMPED if damped else AT_DEFAULT_LAMBDA
        scale = float(np.abs(value).max()) if value.size else 0.0
        np.testing.assert_allclose(actual[key], value, rtol=tolerance, atol=tolerance * scale, err_msg=key)


@pytest.mark.parametrize("kind", ["classifier", "lm"])
def test_two_ranks_write_the_store_of_one_process(assets, tmp_path, kind):
    args = [*assets[kind], *SETTINGS]
    single = one_process(args, tmp_path / "single.h5")
    out = tmp_path / "two"
    ran = torchrun([*args, "--export", str(out)])
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.split()[0] == str(out / "influence.h5")  # rank 0 alone prints what it wrote
    with StoreReader(out / "influence.h5") as reader:
        assert reader.summary("run")["ranks"] == 2
    assert_ranks_agree(single, out / "influence.h5")


def test_a_killed_rank_is_survived_by_running_the_command_again(assets, tmp_path):
    """Two ranks in three chunks of queries; rank 1 dies after its first block, taking the run with it."""
    args = [*assets["classifier"], *SETTINGS, "--num-train", "160"]
    args += ["--memory-budget", str(budget_for_rows(config_of(args), 2))]
    single = one_process(args, tmp_path / "single.h5")
    script = tmp_path / "killed_rank.py"
    script.write_text(KILLED_RANK)
    out = tmp_path / "two"
    killed = torchrun([*args, "--export", str(out)], script=[str(script)])
    assert killed.returncode != 0
    with StoreReader(out / "influence.h5") as reader:
        assert reader.layout.n_tiles > 1 and not reader.completed_blocks().all()
    again = torchrun([*args, "--export", str(out)])
    assert again.returncode == 0, again.stderr[-3000:]
    assert_ranks_agree(single, out / "influence.h5")


def test_nproc_starts_torchrun_itself(assets, tmp_path):
    out = tmp_path / "nproc"
    ran = subprocess.run(
        [sys.executable, "-m", "job.cli", *assets["classifier"], *SETTINGS, "--export", str(out), "--nproc", "2"],
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    with StoreReader(out / "influence.h5") as reader:
        assert reader.summary("run")["ranks"] == 2
