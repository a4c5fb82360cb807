"""The benchmark workloads at fixed seeds, padded random batches: DistilBERT-architecture classifiers,
and Llama-architecture causal LMs whose examples are a prompt and a completion (``labels`` −100 on
the prompt and the padding).

Shared by ``engine.py`` (the engine against its floor) and ``peers.py`` (the engine next
to kronfluence and pyDVL), so that every figure is measured on the same work.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DistilBertConfig, DistilBertForSequenceClassification, LlamaConfig, LlamaForCausalLM

CLASSIFIER, CAUSAL_LM = "classification", "causal-lm"
# The notebook's tracked layers on DistilBERT: the FFN of every block and the head; a causal LM's MLP blocks.
TRACKED = {CLASSIFIER: ("*.ffn.lin1", "*.ffn.lin2", "pre_classifier", "classifier"), CAUSAL_LM: ("*.mlp.*_proj",)}
TRACKED_PATTERNS = TRACKED[CLASSIFIER]
VOCAB_SIZE = 30522  # DistilBERT's own vocabulary size
LM_VOCAB_SIZE = 32000  # Llama's
MIN_LENGTH_FRACTION = 0.25  # sequences are padded from a random real length in [¼ seq, seq]
PROMPT_FRACTION = 0.5  # a causal LM's example: the first half (at most) is the prompt


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
    kind: str = CLASSIFIER

    @property
    def tracked(self) -> tuple[str, ...]:
        return TRACKED[self.kind]


WORKLOADS = {
    "tiny": Workload("tiny", 64, 2, 256, 2, 64, 32, 8, 8),
    "small": Workload("small", 256, 2, 1024, 4, 128, 64, 16, 8),
    "base": Workload("base", 768, 6, 3072, 12, 128, 32, 8, 8),
    # Causal LMs: a tiny one for the empirical-Fisher agreement, the Llama shape for speed.
    "lm-tiny": Workload("lm-tiny", 64, 2, 176, 4, 64, 32, 8, 8, CAUSAL_LM),
    "lm": Workload("lm", 512, 4, 1376, 8, 256, 64, 16, 8, CAUSAL_LM),
    # A 0.5B-class Llama shape (Qwen2-0.5B's widths), for a lent GPU: 1,000 documents × 100 queries, 512 tokens.
    "lm-0.5b": Workload("lm-0.5b", 896, 24, 4864, 14, 512, 1000, 100, 8, CAUSAL_LM),
}


def build_model(workload: Workload, seed: int = 0) -> torch.nn.Module:
    """Random initialisation with a fixed seed, in evaluation mode."""
    torch.manual_seed(seed)
    if workload.kind == CAUSAL_LM:
        return LlamaForCausalLM(lm_config(workload)).eval()
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


def lm_config(workload: Workload) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=LM_VOCAB_SIZE,
        hidden_size=workload.dim,
        intermediate_size=workload.hidden,
        num_hidden_layers=workload.layers,
        num_attention_heads=workload.heads,
        num_key_value_heads=workload.heads,
        max_position_embeddings=max(512, workload.seq),
        pad_token_id=0,
        tie_word_embeddings=False,
    )


def build_batches(workload: Workload, count: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """``count`` examples of random tokens, right-padded from random lengths, in batches; a causal LM's
    labels copy the completion's tokens (a random split point in the first half) and −100 elsewhere."""
    generator = torch.Generator().manual_seed(seed)
    vocabulary = LM_VOCAB_SIZE if workload.kind == CAUSAL_LM else VOCAB_SIZE
    ids = torch.randint(1000, vocabulary, (count, workload.seq), generator=generator)
    low = max(2, int(workload.seq * MIN_LENGTH_FRACTION))
    lengths = torch.randint(low, workload.seq + 1, (count,), generator=generator)
    positions = torch.arange(workload.seq).unsqueeze(0)
    mask = (positions < lengths.unsqueeze(1)).long()
    if workload.kind == CAUSAL_LM:
        prompts = (torch.rand(count, generator=generator) * PROMPT_FRACTION * lengths).long().clamp_min(1)
        completion = mask.bool() & (positions >= prompts.unsqueeze(1))
        labels = torch.where(completion, ids * mask, torch.full_like(ids, -100))
    else:
        labels = torch.randint(0, 2, (count,), generator=generator)
    data = {"input_ids": ids * mask, "attention_mask": mask, "labels": labels}
    return [{k: v[i : i + workload.batch] for k, v in data.items()} for i in range(0, count, workload.batch)]


def tracked_parameters(model: torch.nn.Module, patterns: tuple[str, ...] = TRACKED_PATTERNS) -> int:
    from influence.layers import resolve_layers

    return sum(layer.num_parameters for layer in resolve_layers(model, patterns))
