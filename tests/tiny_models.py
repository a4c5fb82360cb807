"""Small transformer classifiers built from configs, and padded batches for them."""

from __future__ import annotations

import torch
from transformers import (
    DistilBertConfig,
    DistilBertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
)

VOCAB = 40
PAD = 0


def tiny_distilbert(num_labels: int = 2, seed: int = 0, dtype: torch.dtype = torch.float64):
    torch.manual_seed(seed)
    config = DistilBertConfig(
        vocab_size=VOCAB,
        dim=8,
        n_layers=2,
        n_heads=2,
        hidden_dim=12,
        max_position_embeddings=64,
        num_labels=num_labels,
        pad_token_id=PAD,
        dropout=0.1,
        attention_dropout=0.1,
        seq_classif_dropout=0.2,
    )
    return DistilBertForSequenceClassification(config).to(dtype)


def tiny_llama(num_labels: int = 2, seed: int = 0, dtype: torch.dtype = torch.float64):
    """Bias-free Linear layers everywhere (MLP gate/up/down and the score head)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=8,
        intermediate_size=12,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        num_labels=num_labels,
        pad_token_id=PAD,
    )
    return LlamaForSequenceClassification(config).to(dtype)


def tiny_gpt2(num_labels: int = 2, seed: int = 0, dtype: torch.dtype = torch.float64):
    """GPT-2's MLP uses transformers' Conv1D (weight stored in × out)."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_embd=8,
        n_layer=1,
        n_head=2,
        n_positions=64,
        num_labels=num_labels,
        pad_token_id=PAD,
    )
    return GPT2ForSequenceClassification(config).to(dtype)


def padded_batch(size: int, length: int, seed: int, num_labels: int = 2, min_length: int = 2) -> dict:
    """Right-padded random token ids with random lengths and labels."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (size, length), generator=generator)
    lengths = torch.randint(min_length, length + 1, (size,), generator=generator)
    mask = (torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)).long()
    return {
        "input_ids": ids * mask,
        "attention_mask": mask,
        "labels": torch.randint(0, num_labels, (size,), generator=generator),
    }


def repad(batch: dict, length: int) -> dict:
    """The same examples with extra padding up to ``length``."""
    extra = length - batch["input_ids"].shape[1]

    def pad(tensor: torch.Tensor) -> torch.Tensor:
        return torch.cat([tensor, torch.zeros(tensor.shape[0], extra, dtype=tensor.dtype)], dim=1)

    return {
        "input_ids": pad(batch["input_ids"]),
        "attention_mask": pad(batch["attention_mask"]),
        "labels": batch["labels"],
    }


def rebatch(batches: list[dict], size: int) -> list[dict]:
    """The same examples (same order) regrouped into batches of ``size``, padded to a common length."""
    length = max(b["input_ids"].shape[1] for b in batches)
    merged = {k: torch.cat([repad(b, length)[k] for b in batches]) for k in ("input_ids", "attention_mask", "labels")}
    n = merged["labels"].shape[0]
    return [{k: v[i : i + size] for k, v in merged.items()} for i in range(0, n, size)]
