"""Cost against size with a fixed memory budget: the pipeline at three sizes (n_train × n_test).

    python benchmarks/scaling.py [--budget 4MB] [--sizes 250x16,500x32,1000x64]

The demo model on the demo reviews (trained once and cached, as the UI's demo), each size a
fresh store, with a --memory-budget small enough that the queries come in chunks (the chunk
count grows with n_test; at this budget a chunk is one tile of the store). Prints every
stage's time from the store's own records, the chunks, and the scores stage's seconds per
million (train, test) pairs: constant when the cost grows linearly in n_train × n_test, as
each chunk is one pass over the training side.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from influence.pipeline import run_pipeline
from job.config import DEMO, RunConfig
from job.sizes import format_size, parse_size
from job.stages import STAGES
from store.reader import StoreReader

DEFAULT_SIZES = "250x16,500x32,1000x64"
DEFAULT_BUDGET = "4MB"  # the demo model's 37,442 tracked parameters: 17 queries a chunk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="n_train x n_test, comma-separated")
    parser.add_argument("--budget", default=DEFAULT_BUDGET, help="--memory-budget for every size")
    args = parser.parse_args()
    budget = parse_size(args.budget)
    sizes = [tuple(int(part) for part in size.split("x")) for size in args.sizes.split(",")]
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f}, budget {format_size(budget)}")
    print(f"{'n_train x n_test':>16} {'chunks':>6} " + " ".join(f"{stage[:11]:>11}" for stage in STAGES) + "  s/Mpair")
    with tempfile.TemporaryDirectory() as folder:
        for n_train, n_test in sizes:
            store = Path(folder) / f"{n_train}x{n_test}.h5"
            config = RunConfig(
                model=DEMO, dataset=DEMO, num_train=n_train, num_test=n_test, memory_budget=budget, store=str(store)
            ).validate()
            run_pipeline(config)
            with StoreReader(store) as reader:
                seconds = {key: record.elapsed for key, record in reader.stages().items()}
                tiles = reader.layout.n_tiles
            cells = " ".join(f"{seconds.get(stage, 0.0):>11.2f}" for stage in STAGES)
            per_pair = seconds["scores"] / (n_train * n_test / 1e6)
            print(f"{n_train:>7} x {n_test:<6} {tiles:>6} {cells}  {per_pair:7.1f}")


if __name__ == "__main__":
    main()
