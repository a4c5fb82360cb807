"""The engine's time per stage against its floor, on a DistilBERT-architecture workload.

The floor is what no influence method can avoid on this work, measured in the same run:
plain forward+backward passes (loss summed over the batch, gradients of the tracked
parameters) over the training data three times (covariance, eigenvalue correction,
scores) and over the test data once (queries), plus float64 eigendecompositions of
the same covariance matrices by the engine's own routine (LAPACK's syevd). The train
cache lets the engine skip the second and third passes where it holds the batches: the
floor still counts them, as a method without the cache must run them. Prints a table;
asserts nothing.

    python benchmarks/engine.py --workload small
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import StagePeaks, StageTimer, floor_eigendecompositions, floor_passes  # noqa: E402
from workloads import WORKLOADS, build_batches, build_model, tracked_parameters  # noqa: E402

from influence import EkfacInfluence  # noqa: E402
from influence.caches import TrainCache  # noqa: E402
from job.options import DEFAULT_CACHE_BYTES  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="small")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mode", choices=("ekfac", "kfac"), default="ekfac")
    parser.add_argument(
        "--fisher", choices=("exact", "sampled", "empirical"), help="default: exact for a classifier, sampled for an LM"
    )
    parser.add_argument("--eigen-precision", choices=("float64", "float32"), default="float64")
    parser.add_argument(
        "--cache-mib",
        type=int,
        default=DEFAULT_CACHE_BYTES // 2**20,
        help="token matrices kept between passes (0: every pass runs forward and backward)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    workload = WORKLOADS[args.workload]
    device = torch.device(args.device)
    model = build_model(workload).to(device)
    train = build_batches(workload, workload.train, seed=1)
    test = build_batches(workload, workload.test, seed=2)
    regularizations = [1e-5]

    floor_train, floor_test = floor_passes(model, train, test, workload.tracked)
    floor_rss = peak_rss_mb()

    engine = EkfacInfluence(
        model, workload.tracked, fisher=args.fisher, mode=args.mode, eigen_precision=args.eigen_precision
    )
    cache = TrainCache(args.cache_mib * 2**20)
    memory = StagePeaks()
    timer = StageTimer(peaks=memory, on_covariance=floor_eigendecompositions)
    engine.fit(train, journal=timer, cache=cache)
    queries = timer.time("queries", engine.query_gradients, test)
    blocks = timer.time("scores", lambda: list(engine.iter_scores(queries, train, regularizations, cache=cache)))
    stages = timer.seconds
    floor_eigh = timer.on_covariance_seconds
    total = sum(stages.values())
    train_passes = 3 if args.mode == "ekfac" else 2
    floor = train_passes * floor_train + floor_test + floor_eigh

    print(
        f"workload {workload.name}: dim {workload.dim}, {workload.layers} layers, hidden {workload.hidden}, "
        f"seq {workload.seq}, {workload.train} train x {workload.test} test, batch {workload.batch}; "
        f"{tracked_parameters(model, workload.tracked):,} tracked parameters; {args.mode}, "
        f"{engine.options.fisher} Fisher, "
        f"{args.eigen_precision} eigendecompositions"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {device}"
    )
    print(f"{'stage':<24}{'seconds':>10}{'peak RSS MiB':>14}")
    for name, seconds in stages.items():
        print(f"{name:<24}{seconds:>10.2f}{memory.mib(name):>14}")
    print(f"{'engine total':<24}{total:>10.2f}")
    print(
        f"{'floor':<24}{floor:>10.2f}   = {train_passes} x train pass {floor_train:.2f} + test pass "
        f"{floor_test:.2f} + eigh {floor_eigh:.2f}"
    )
    print(f"{'ratio total / floor':<24}{total / floor:>10.2f}")
    print(f"train cache: {len(cache)}/{len(train)} batches, {cache.bytes / 2**20:,.0f} MiB")
    print(f"peak RSS: {floor_rss:,.0f} MB after the floor passes, {peak_rss_mb():,.0f} MB after the engine")
    scores = torch.cat([b.total[0, 0] for b in blocks], dim=1)
    print(f"scores {tuple(scores.shape)}, finite: {bool(torch.isfinite(scores).all())}")


if __name__ == "__main__":
    main()
