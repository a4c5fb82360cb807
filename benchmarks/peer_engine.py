"""The project's engine on the saved peer workload, through its public API (run by peers.py).

Fit: ``EkfacInfluence.fit`` (covariance, eigendecomposition, eigenvalue correction);
scoring: ``influences`` on the same training batches, which reuses the token matrices
that fit kept, as a user's call would: in one call with every batch (the README's way),
or with ``--pairwise`` one test batch against one training batch at a time in a loop.
"""

from __future__ import annotations

import argparse
from importlib.metadata import version

import torch
from peer_common import load_model, load_workload, runner_arguments, timed, warm_up, write_result

from influence import EkfacInfluence
from job.options import DEFAULT_CACHE_BYTES


def engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eigen-precision", choices=("float64", "float32"), default="float64")
    parser.add_argument("--cache-mib", type=int, default=DEFAULT_CACHE_BYTES // 2**20)
    parser.add_argument("--query-mib", type=int, default=None, help="test gradients held at once")
    parser.add_argument("--pairwise", action="store_true", help="score batch against batch in a loop")


def pairwise(engine: EkfacInfluence, test: list, train: list, regularization: float) -> torch.Tensor:
    """The loop a user writes from a one-batch example: every test batch against every training batch."""
    rows = [torch.cat([engine.influences(q, n, regularization) for n in train], dim=1) for q in test]
    return torch.cat(rows)


def main() -> None:
    args = runner_arguments(__doc__.splitlines()[0], extra=engine_options)
    saved = load_workload(args.work)
    model = load_model(args.work, saved)
    warm_up(model, saved.train[0])
    engine = EkfacInfluence(
        model,
        layers=saved.tracked,
        fisher=None if args.fisher == "exact" and saved.causal_lm else args.fisher,  # an LM's true Fisher: sampled
        mode="ekfac",
        eigen_precision=args.eigen_precision,
        cache_bytes=args.cache_mib * 2**20,
        query_bytes=None if args.query_mib is None else args.query_mib * 2**20,
    )
    _, fit_s = timed(lambda: engine.fit(saved.train))
    if args.pairwise:
        scores, score_s = timed(lambda: pairwise(engine, saved.test, saved.train, args.regularization))
    else:
        scores, score_s = timed(lambda: engine.influences(saved.test, saved.train, regularization=args.regularization))
    write_result(
        args.out, "influence-explorer", version("influence-explorer"), engine.options.fisher, fit_s, score_s, scores
    )


if __name__ == "__main__":
    main()
