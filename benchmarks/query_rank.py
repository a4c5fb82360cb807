"""Low-rank query gradients (``--query-rank R``) against full rank: agreement, memory and time.

    python benchmarks/query_rank.py [--workload small|lm-tiny|lm] [--ranks 1,4,16,64]

One fit of the workload's model (``benchmarks/workloads.py``, random init), then for every rank
the same factors score the test set against the training set: the relative error of the
influence matrix (Frobenius), its Pearson and Spearman correlation with full rank, the share of
each query's ten most helpful training examples that stay in its top ten, the bytes of one
query's gradients and the time of the queries and scores. A classifier's last block and head
receive gradient at the first token only, so their gradients are rank 1 exactly; a causal LM's
completion spreads over many tokens.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import timed  # noqa: E402
from workloads import WORKLOADS, build_batches, build_model  # noqa: E402

from influence import EkfacInfluence  # noqa: E402

REGULARIZATION = 1e-5
TOP = 10


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ranks = [torch.empty_like(x).scatter_(0, x.argsort(), torch.arange(len(x), dtype=x.dtype)) for x in (a, b)]
    return float(torch.corrcoef(torch.stack(ranks))[0, 1])


def top_overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean share of each row's TOP largest entries of ``a`` among those of ``b``."""
    tops_a, tops_b = a.topk(TOP, dim=1).indices, b.topk(TOP, dim=1).indices
    shared = [len(set(x.tolist()) & set(y.tolist())) / TOP for x, y in zip(tops_a, tops_b)]
    return sum(shared) / len(shared)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="small")
    parser.add_argument("--ranks", default="1,4,16,64")
    args = parser.parse_args()
    workload = WORKLOADS[args.workload]
    model = build_model(workload)
    train, test = build_batches(workload, workload.train, seed=1), build_batches(workload, workload.test, seed=2)
    exact = EkfacInfluence(model, layers=list(workload.tracked)).fit(train)
    factors = (exact._bases(), {name: f.eigenvalues for name, f in exact.factors.items()})
    reference, full_s = timed(exact.influences, test, train, REGULARIZATION)
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f}; {workload.name}: {workload.train} train x "
        f"{workload.test} test, seq {workload.seq}, {exact.tracked_parameters:,} tracked parameters, λ {REGULARIZATION}"
    )
    print(f"{'rank':>6} {'MB/query':>9} {'time s':>7} {'rel. error':>11} {'Pearson':>9} {'Spearman':>9} {'top-10':>7}")
    print(f"{'full':>6} {exact.query_row_bytes / 1e6:>9.2f} {full_s:>7.2f} {0:>11.2e} {1:>9.5f} {1:>9.5f} {1:>7.2f}")
    for rank in (int(r) for r in args.ranks.split(",")):
        engine = EkfacInfluence(model, layers=list(workload.tracked), query_rank=rank)
        engine.set_factors(*factors)
        engine.train_cache = exact.train_cache  # the fit's captured batches, as full rank scores from them
        scores, seconds = timed(engine.influences, test, train, REGULARIZATION)
        error = float((scores - reference).norm() / reference.norm())
        pearson = float(torch.corrcoef(torch.stack([scores.flatten(), reference.flatten()]))[0, 1])
        print(
            f"{rank:>6} {engine.query_row_bytes / 1e6:>9.2f} {seconds:>7.2f} {error:>11.2e} {pearson:>9.5f} "
            f"{spearman(scores.flatten(), reference.flatten()):>9.5f} {top_overlap(scores, reference):>7.2f}"
        )


if __name__ == "__main__":
    main()
