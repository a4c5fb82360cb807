"""What every peer runner shares: the saved workload, the timing protocol, the result file.

``peers.py`` starts each runner (``peer_engine.py``, ``peer_kronfluence.py``,
``peer_pydvl.py``) as a subprocess in its library's own virtual environment, so that the
peak memory is that library's alone. This module therefore imports nothing beyond
torch, transformers and numpy, which every environment has, and never the project.

Protocol, identical for every library: load the saved weights and batches, freeze all
but the tracked layers, one untimed forward+backward on a training batch (first-call
costs), build the library's object (untimed: no work happens there), then time the fit
and the scoring separately. Peak memory is the process's peak resident set size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import numpy as np
import torch
import transformers
from transformers import DistilBertConfig, DistilBertForSequenceClassification, LlamaConfig, LlamaForCausalLM

THREADS = 2
SEED = 0  # for kronfluence's sampled labels; the rest is deterministic
SPEC_FILE = "spec.json"
WEIGHTS_FILE = "weights.pt"
BATCHES_FILE = "batches.pt"
SCORES_SUFFIX = ".npy"
RESULT_SUFFIX = ".json"
FISHERS = ("exact", "empirical")  # the project's names; each runner maps them to its library's

Batch = dict[str, torch.Tensor]
T = TypeVar("T")


@dataclass(frozen=True)
class SavedWorkload:
    """The workload as exported once by ``peers.py``: the same weights and data for every library."""

    spec: dict[str, Any]
    train: list[Batch]
    test: list[Batch]

    @property
    def tracked(self) -> list[str]:
        """Exact module names of the tracked layers (FFN, pre_classifier, classifier)."""
        return list(self.spec["tracked"])

    @property
    def batch_size(self) -> int:
        return int(self.spec["workload"]["batch"])

    @property
    def test_count(self) -> int:
        return sum(len(batch["labels"]) for batch in self.test)

    @property
    def causal_lm(self) -> bool:
        return self.spec["workload"].get("kind") == "causal-lm"


def runner_arguments(
    description: str, takes_fisher: bool = True, extra: Optional[Callable[[argparse.ArgumentParser], None]] = None
) -> argparse.Namespace:
    """The runner's options (``extra`` adds a runner's own); also sets the thread count, before any work."""
    parser = argparse.ArgumentParser(description=description)
    if extra is not None:
        extra(parser)
    parser.add_argument("--work", type=Path, required=True, help="folder written by peers.py")
    parser.add_argument("--out", type=Path, required=True, help="result path without suffix")
    if takes_fisher:
        parser.add_argument("--fisher", choices=FISHERS, default="exact")
    parser.add_argument("--regularization", type=float, required=True, help="absolute damping λ")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    return args


def load_workload(work: Path) -> SavedWorkload:
    spec = json.loads((work / SPEC_FILE).read_text())
    batches = torch.load(work / BATCHES_FILE, weights_only=True)
    return SavedWorkload(spec, batches["train"], batches["test"])


def load_model(work: Path, saved: SavedWorkload, **config_overrides: Any) -> torch.nn.Module:
    """The saved weights, loaded strictly (a key renamed between transformers 4 and 5 fails
    loudly), in evaluation mode, with gradients on the tracked layers only."""
    if saved.causal_lm:
        model = LlamaForCausalLM(LlamaConfig(**saved.spec["config"], **config_overrides))
    else:
        model = DistilBertForSequenceClassification(DistilBertConfig(**saved.spec["config"], **config_overrides))
    model.load_state_dict(torch.load(work / WEIGHTS_FILE, weights_only=True), strict=True)
    model.eval()
    tracked = tuple(name + "." for name in saved.tracked)
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(tracked))
    return model


def warm_up(model: torch.nn.Module, batch: Batch) -> None:
    """One untimed forward+backward, so that no library pays the first-call costs in its timings."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    summed_loss(logits, batch["labels"]).backward()
    model.zero_grad(set_to_none=True)


def summed_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A classifier's summed cross-entropy, or a causal LM's over its completion tokens (labels ≠ −100, shifted)."""
    if logits.dim() == 2:
        return torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
    predicting = logits[:, :-1].reshape(-1, logits.shape[-1])
    return torch.nn.functional.cross_entropy(predicting, labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum")


def timed(function: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_result(
    out: Path, library: str, version: str, curvature: str, fit_s: float, score_s: float, scores: torch.Tensor
) -> None:
    """``out.json`` (timings, memory, versions, machine load) and ``out.npy`` (the n_test × n_train scores)."""
    np.save(out.with_suffix(SCORES_SUFFIX), scores.detach().double().numpy())
    result = {
        "library": library,
        "version": version,
        "curvature": curvature,
        "fit_s": fit_s,
        "score_s": score_s,
        "peak_rss_mb": peak_rss_mb(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "load_1min": os.getloadavg()[0],  # the machine is shared: how busy it was, for the record
    }
    out.with_suffix(RESULT_SUFFIX).write_text(json.dumps(result, indent=2))
