"""The README's Python examples against the floor of the same work, in one process.

    python benchmarks/api.py [--workload small] [--train N --test N]

Three ways a user scores a test set against a training set, each after its own
``EkfacInfluence(model).fit(train_loader)``:

* one call: ``influences(test_loader, train_loader)`` (the README's first example);
* the pairwise loop: ``influences(test_batch, train_batch)`` for every pair of batches,
  the blocks joined (what a one-batch example invites);
* the same loop with the training batches on the outside.

The loaders are ``torch.utils.data.DataLoader`` objects over the workload's padded batches.
The floor is measured in the same run as in ``engine.py``: three plain forward+backward
passes over the training data, one over the test data, and float64 eigendecompositions of
the same covariances. Prints each path's seconds and its ratio to the floor, and checks
that the loops give the one call's matrix; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peer_engine import pairwise  # noqa: E402
from timing import StageTimer, floor_eigendecompositions, floor_passes, timed  # noqa: E402
from workloads import WORKLOADS, build_batches, build_model, tracked_parameters  # noqa: E402

from influence import EkfacInfluence  # noqa: E402

REGULARIZATION = 1e-5


def loader(batches: list[dict]) -> DataLoader:
    """A DataLoader over ready batches (``batch_size=None``: each item is a batch)."""
    return DataLoader(batches, batch_size=None, shuffle=False)


def one_call(engine: EkfacInfluence, test: DataLoader, train: DataLoader) -> torch.Tensor:
    return engine.influences(test, train, regularization=REGULARIZATION)


def test_outer(engine: EkfacInfluence, test: DataLoader, train: DataLoader) -> torch.Tensor:
    return pairwise(engine, test, train, REGULARIZATION)


def train_outer(engine: EkfacInfluence, test: DataLoader, train: DataLoader) -> torch.Tensor:
    columns = [torch.cat([engine.influences(q, n, REGULARIZATION) for q in test]) for n in train]
    return torch.cat(columns, dim=1)


PATHS = {
    "one call: influences(test_loader, train_loader)": one_call,
    "pairwise loop, test batches outside": test_outer,
    "pairwise loop, train batches outside": train_outer,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="small")
    parser.add_argument("--train", type=int, help="training examples (default: the workload's)")
    parser.add_argument("--test", type=int, help="test examples (default: the workload's)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    workload = WORKLOADS[args.workload]
    workload = replace(workload, train=args.train or workload.train, test=args.test or workload.test)
    model = build_model(workload)
    train = loader(build_batches(workload, workload.train, seed=1))
    test = loader(build_batches(workload, workload.test, seed=2))

    floor_train, floor_test = floor_passes(model, list(train), list(test), workload.tracked)
    floor_eigh: Optional[float] = None
    results = {}
    for label, path in PATHS.items():
        engine = EkfacInfluence(model, workload.tracked)
        timer = StageTimer(on_covariance=floor_eigendecompositions if floor_eigh is None else None)
        engine.fit(train, journal=timer)
        floor_eigh = floor_eigh if floor_eigh is not None else timer.on_covariance_seconds
        fit_s = sum(timer.seconds.values())
        scores, score_s = timed(path, engine, test, train)
        results[label] = (fit_s, score_s, scores)
    floor = 3 * floor_train + floor_test + floor_eigh

    print(
        f"workload {workload.name}: dim {workload.dim}, {workload.layers} layers, hidden {workload.hidden}, "
        f"seq {workload.seq}, {workload.train} train x {workload.test} test, batch {workload.batch}; "
        f"{tracked_parameters(model, workload.tracked):,} tracked parameters; EK-FAC, the task's default Fisher, "
        f"λ {REGULARIZATION:g}"
    )
    print(
        f"machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"floor {floor:.2f} s = 3 x train pass {floor_train:.2f} + test pass {floor_test:.2f} + eigh {floor_eigh:.2f}"
    )
    print(f"{'path':<52}{'fit s':>8}{'score s':>9}{'total s':>9}{'/ floor':>9}")
    reference = next(iter(results.values()))[2]
    for label, (fit_s, score_s, scores) in results.items():
        print(f"{label:<52}{fit_s:>8.2f}{score_s:>9.2f}{fit_s + score_s:>9.2f}{(fit_s + score_s) / floor:>9.2f}")
        difference = float((scores - reference).abs().max() / reference.abs().max())
        if difference > 1e-5:
            print(f"  differs from the one call: max |Δ| / max |I| = {difference:.2e}")


if __name__ == "__main__":
    main()
