"""What the model says, stored beside the influences: class probabilities, or completions and their losses.

For a classifier: each example's class probabilities, and accuracy, F1 and the confusion
matrix on the test set. For a causal LM: each example's summed completion loss; for each
query also the loss of every token, the model's own greedy completion and whether it
reproduces the reference (exact match on the reference's tokens); and the mean loss per
completion token, its perplexity and the exact-match rate.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from influence.task import IGNORE_INDEX, shifted_targets
from job.progress import check_cancel

INFERENCE_BATCH = 64  # examples per forward pass when only predictions are needed
OnBatch = Callable[[], None]


def classification_metrics(labels: np.ndarray, predictions: np.ndarray, num_labels: int) -> dict:
    """Accuracy, F1 (of class 1 for binary tasks, as sklearn's default; macro otherwise), confusion."""
    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    true_pos = np.diag(confusion).astype(float)
    precision = np.divide(true_pos, confusion.sum(0), out=np.zeros(num_labels), where=confusion.sum(0) > 0)
    recall = np.divide(true_pos, confusion.sum(1), out=np.zeros(num_labels), where=confusion.sum(1) > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(num_labels), where=denominator > 0)
    return {
        "accuracy": float((labels == predictions).mean()),
        "f1": float(f1[1] if num_labels == 2 else f1.mean()),
        "f1_average": "binary (class 1)" if num_labels == 2 else "macro",
        "f1_per_class": f1.tolist(),
        "confusion": confusion.tolist(),
        "count": int(len(labels)),
    }


def class_probabilities(
    model: nn.Module,
    batches: Sequence[dict[str, torch.Tensor]],
    device: torch.device,
    cancel: Optional[threading.Event],
    on_batch: OnBatch,
) -> np.ndarray:
    """(n, C) softmax probabilities, batch by batch without gradients."""
    probabilities = []
    for batch in batches:
        check_cancel(cancel)
        inputs = {k: v.to(device) for k, v in batch.items() if "labels" not in k}
        with torch.no_grad():
            logits = model(**inputs).logits
        probabilities.append(torch.softmax(logits.float(), dim=1).cpu())
        on_batch()
    return torch.cat(probabilities).numpy()


def token_losses(
    model: nn.Module,
    batches: Sequence[dict[str, torch.Tensor]],
    length: int,
    device: torch.device,
    cancel: Optional[threading.Event],
    on_batch: OnBatch,
) -> np.ndarray:
    """(n, length): −log p of each completion token given those before it, at the token's own position
    (aligned with its id); NaN where no loss is taken (prompt, padding, the first token)."""
    rows = []
    for batch in batches:
        check_cancel(cancel)
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        targets = shifted_targets(batch["labels"])
        losses = nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2), targets.clamp_min(0), reduction="none"
        ).masked_fill(targets == IGNORE_INDEX, math.nan)
        padded = torch.full((losses.shape[0], length), math.nan)
        padded[:, 1 : losses.shape[1] + 1] = losses.cpu()
        rows.append(padded)
        on_batch()
    return torch.cat(rows).numpy()


@dataclass(frozen=True)
class Generated:
    text: list[str]
    exact_match: np.ndarray  # int64: 1 where the greedy tokens begin with the reference's


def last_completion(mask: np.ndarray) -> np.ndarray:
    """The positions of the last run of completion tokens: what a query asks the model to write (a
    chat's last assistant turn), as ``Example.completion`` is its last completion segment."""
    scored = np.flatnonzero(mask)
    breaks = np.flatnonzero(np.diff(scored) > 1)
    return scored[breaks[-1] + 1 :] if breaks.size else scored


def greedy_completions(
    model: nn.Module,
    tokenizer: Any,
    token_ids: np.ndarray,
    completion_mask: np.ndarray,
    max_new_tokens: int,
    device: torch.device,
    cancel: Optional[threading.Event],
    on_example: OnBatch,
) -> Generated:
    """Each query's greedy continuation of its prompt (the tokens before its last completion), at least
    as long as its reference, and whether it begins with the reference."""
    texts, exact = [], []
    for ids, mask in zip(token_ids, completion_mask):
        check_cancel(cancel)
        scored = last_completion(mask)
        start = int(scored[0])
        reference = ids[scored].tolist()
        prompt = torch.as_tensor(ids[:start], dtype=torch.long, device=device).unsqueeze(0)
        with torch.no_grad():
            output = model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=max(max_new_tokens, len(reference)),
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = output[0, start:].tolist()
        texts.append(tokenizer.decode(new[:max_new_tokens], skip_special_tokens=True))
        exact.append(int(new[: len(reference)] == reference))
        on_example()
    return Generated(texts, np.asarray(exact, dtype=np.int64))


def completion_metrics(losses: np.ndarray, tokens: np.ndarray, exact_match: np.ndarray) -> dict:
    """Mean loss per completion token over the queries, its perplexity, and the exact-match rate."""
    total_loss, total_tokens = float(np.sum(losses)), int(np.sum(tokens))
    per_token = total_loss / max(total_tokens, 1)
    return {
        "mean_loss": per_token,
        "perplexity": float(math.exp(per_token)) if per_token < 700 else math.inf,
        "exact_match": float(np.mean(exact_match)),
        "completion_tokens": total_tokens,
        "count": int(len(losses)),
    }
