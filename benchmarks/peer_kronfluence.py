"""kronfluence's EK-FAC on the saved peer workload (run by peers.py in its own environment).

Fit: ``fit_all_factors`` (covariance, eigendecomposition, eigenvalue correction, written
to disk as kronfluence always does); scoring: ``compute_pairwise_scores`` with every
query in one batch (a single pass over the training data, as the project does) and
``load_pairwise_scores``. ``--fisher exact`` maps to kronfluence's default true Fisher,
estimated with one label drawn from the model per example; ``--fisher empirical`` to
``use_empirical_fisher=True``, the same curvature as the project's empirical Fisher.
"""

from __future__ import annotations

import logging
import shutil
import warnings

import kronfluence
import torch
import torch.nn.functional as F
from kronfluence import Analyzer, FactorArguments, ScoreArguments, Task, prepare_model
from peer_common import SEED, Batch, load_model, load_workload, runner_arguments, timed, warm_up, write_result
from torch import nn

ANALYSIS = "peers"
FACTORS = "ekfac"
SCORES = "pairwise"


class ClassificationTask(Task):
    """Summed cross-entropy, as kronfluence expects (it never rescales the loss)."""

    def __init__(self, tracked: list[str]):
        super().__init__()
        self.tracked = tracked

    def compute_train_loss(self, batch: Batch, model: nn.Module, sample: bool = False) -> torch.Tensor:
        logits = self._logits(batch, model)
        if not sample:
            return F.cross_entropy(logits, batch["labels"], reduction="sum")
        with torch.no_grad():  # the true Fisher: labels drawn from the model's own distribution
            drawn = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1).flatten()
        return F.cross_entropy(logits, drawn, reduction="sum")

    def compute_measurement(self, batch: Batch, model: nn.Module) -> torch.Tensor:
        return F.cross_entropy(self._logits(batch, model), batch["labels"], reduction="sum")

    def get_influence_tracked_modules(self) -> list[str]:
        return self.tracked

    def get_attention_mask(self, batch: Batch) -> torch.Tensor:
        return batch["attention_mask"]

    @staticmethod
    def _logits(batch: Batch, model: nn.Module) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


class CausalLMTask(ClassificationTask):
    """The summed cross-entropy of the completion tokens (labels ≠ −100, shifted); the true Fisher's
    labels drawn from the model at every completion position."""

    def compute_train_loss(self, batch: Batch, model: nn.Module, sample: bool = False) -> torch.Tensor:
        logits, targets = self._shifted(batch, model)
        if sample:
            with torch.no_grad():
                drawn = torch.multinomial(F.softmax(logits.reshape(-1, logits.shape[-1]), dim=-1), num_samples=1)
            targets = torch.where(targets == -100, targets, drawn.reshape(targets.shape))
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
        )

    def compute_measurement(self, batch: Batch, model: nn.Module) -> torch.Tensor:
        return self.compute_train_loss(batch, model)

    def _shifted(self, batch: Batch, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        return self._logits(batch, model)[:, :-1], batch["labels"][:, 1:]


def examples(batches: list[Batch]) -> list[Batch]:
    """kronfluence takes a dataset of examples; the default collate rebuilds the same batches."""
    return [{key: value[i] for key, value in batch.items()} for batch in batches for i in range(len(batch["labels"]))]


def main() -> None:
    args = runner_arguments(__doc__.splitlines()[0])
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.cuda.amp deprecations, on CPU
    saved = load_workload(args.work)
    model = load_model(args.work, saved)
    warm_up(model, saved.train[0])
    task = CausalLMTask(saved.tracked) if saved.causal_lm else ClassificationTask(saved.tracked)
    model = prepare_model(model, task)
    output_dir = args.out.parent / f"{args.out.name}-kronfluence"
    shutil.rmtree(output_dir, ignore_errors=True)
    analyzer = Analyzer(ANALYSIS, model, task, cpu=True, disable_tqdm=True, output_dir=str(output_dir))
    train, test = examples(saved.train), examples(saved.test)
    factor_args = FactorArguments(strategy="ekfac", use_empirical_fisher=args.fisher == "empirical")
    score_args = ScoreArguments(damping_factor=args.regularization)
    torch.manual_seed(SEED)

    def fit() -> None:
        # per_device_batch_size given, else kronfluence probes batch sizes from 4096 first.
        analyzer.fit_all_factors(
            FACTORS, train, per_device_batch_size=saved.batch_size, factor_args=factor_args, overwrite_output_dir=True
        )

    def score() -> torch.Tensor:
        analyzer.compute_pairwise_scores(
            SCORES,
            FACTORS,
            query_dataset=test,
            train_dataset=train,
            per_device_query_batch_size=saved.test_count,
            per_device_train_batch_size=saved.batch_size,
            score_args=score_args,
            overwrite_output_dir=True,
        )
        return analyzer.load_pairwise_scores(SCORES)["all_modules"]

    _, fit_s = timed(fit)
    scores, score_s = timed(score)
    shutil.rmtree(output_dir, ignore_errors=True)
    curvature = "empirical" if args.fisher == "empirical" else "sampled"
    write_result(args.out, "kronfluence", kronfluence.__version__, curvature, fit_s, score_s, scores)


if __name__ == "__main__":
    main()
