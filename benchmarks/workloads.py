"""The benchmark workloads: DistilBERT-architecture classifiers at fixed seeds, padded random batches.

Shared by ``engine.py`` (the engine against its floor) and ``peers.py`` (the engine next
to kronfluence and pyDVL), so that every figure is measured on the same work.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DistilBertConfig, DistilBertForSequenceClassification

# The notebook's tracked layers on DistilBERT: the FFN of every block and the head.
TRACKED_PATTERNS = ("*.ffn.lin1", "*.ffn.lin2", "pre_classifier", "classifier")
VOCAB_SIZE = 30522  # DistilBERT's own vocabulary size
MIN_LENGTH_FRACTION = 0.25  # sequences are padded from a random real length in [¼ seq, seq]


@dataclass(frozen=True)
class Workload:
    name: str
    dim: int
    layers: int
    hidden: int
    heads: int
    seq: int
    train: int
    test: int
    batch: int


WORKLOADS = {
    "tiny": Workload("tiny", 64, 2, 256, 2, 64, 32, 8, 8),
    "small": Workload("small", 256, 2, 1024, 4, 128, 64, 16, 8),
    "base": Workload("base", 768, 6, 3072, 12, 128, 32, 8, 8),
}


def build_model(workload: Workload, seed: int = 0) -> DistilBertForSequenceClassification:
    """Random initialisation with a fixed seed, in evaluation mode."""
    torch.manual_seed(seed)
    config = DistilBertConfig(
        vocab_size=VOCAB_SIZE,
        dim=workload.dim,
        n_layers=workload.layers,
        n_heads=workload.heads,
        hidden_dim=workload.hidden,
        max_position_embeddings=max(512, workload.seq),
        num_labels=2,
    )
    return DistilBertForSequenceClassification(config).eval()


def build_batches(workload: Workload, count: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """``count`` examples of random tokens, right-padded from random lengths, in batches."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, VOCAB_SIZE, (count, workload.seq), generator=generator)
    low = max(1, int(workload.seq * MIN_LENGTH_FRACTION))
    lengths = torch.randint(low, workload.seq + 1, (count,), generator=generator)
    mask = (torch.arange(workload.seq).unsqueeze(0) < lengths.unsqueeze(1)).long()
    labels = torch.randint(0, 2, (count,), generator=generator)
    data = {"input_ids": ids * mask, "attention_mask": mask, "labels": labels}
    return [{k: v[i : i + workload.batch] for k, v in data.items()} for i in range(0, count, workload.batch)]


def tracked_parameters(model: torch.nn.Module) -> int:
    from influence.layers import resolve_layers

    return sum(layer.num_parameters for layer in resolve_layers(model, TRACKED_PATTERNS))
