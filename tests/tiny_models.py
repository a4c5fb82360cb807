"""Small transformer classifiers and causal LMs built from configs, and padded batches for them."""

from __future__ import annotations

import torch
from transformers import (
    DistilBertConfig,
    DistilBertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
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


def _llama_config(**choices) -> LlamaConfig:
    """The tiny Llama's widths, shared by the classifier and the causal LM."""
    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=8,
        intermediate_size=12,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=PAD,
        **choices,
    )


def tiny_llama(num_labels: int = 2, seed: int = 0, dtype: torch.dtype = torch.float64):
    """Bias-free Linear layers everywhere (MLP gate/up/down and the score head)."""
    torch.manual_seed(seed)
    config = _llama_config(num_hidden_layers=1, num_labels=num_labels)
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
    """The same examples with extra right padding up to ``length`` (token-level labels padded with −100)."""
    extra = length - batch["input_ids"].shape[1]

    def pad(tensor: torch.Tensor, value: int = 0) -> torch.Tensor:
        return torch.cat([tensor, torch.full((tensor.shape[0], extra), value, dtype=tensor.dtype)], dim=1)

    labels = batch["labels"]
    return {
        "input_ids": pad(batch["input_ids"]),
        "attention_mask": pad(batch["attention_mask"]),
        "labels": pad(labels, -100) if labels.dim() == 2 else labels,
    }


def rebatch(batches: list[dict], size: int) -> list[dict]:
    """The same examples (same order) regrouped into batches of ``size``, padded to a common length."""
    length = max(b["input_ids"].shape[1] for b in batches)
    merged = {k: torch.cat([repad(b, length)[k] for b in batches]) for k in ("input_ids", "attention_mask", "labels")}
    n = merged["labels"].shape[0]
    return [{k: v[i : i + size] for k, v in merged.items()} for i in range(0, n, size)]


def tiny_llama_lm(seed: int = 0, dtype: torch.dtype = torch.float64):
    """A causal LM with bias-free Linear layers everywhere (Llama, Qwen, Mistral style)."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(_llama_config(num_hidden_layers=2, tie_word_embeddings=False)).to(dtype)


def tiny_gpt2_lm(seed: int = 0, dtype: torch.dtype = torch.float64):
    """A causal LM whose MLP is transformers' Conv1D, with biases (GPT-2)."""
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_embd=8, n_layer=2, n_head=2, n_positions=64, pad_token_id=PAD)
    return GPT2LMHeadModel(config).to(dtype)


def tiny_neox_lm(seed: int = 0, dtype: torch.dtype = torch.float64):
    """GPT-NeoX (Pythia): one fused query-key-value Linear per attention block, biases, an untied lm_head."""
    torch.manual_seed(seed)
    config = GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=64,
        pad_token_id=PAD,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    return GPTNeoXForCausalLM(config).to(dtype)


def lm_batch(size: int, length: int, seed: int, min_prompt: int = 1, min_completion: int = 1) -> dict:
    """Right-padded prompt + completion token ids; ``labels`` copies them with −100 at prompt and padding."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (size, length), generator=generator)
    lengths = torch.randint(min_prompt + min_completion, length + 1, (size,), generator=generator)
    prompts = torch.stack(
        [torch.randint(min_prompt, int(n) - min_completion + 1, (1,), generator=generator)[0] for n in lengths]
    )
    positions = torch.arange(length).unsqueeze(0)
    mask = (positions < lengths.unsqueeze(1)).long()
    completion = mask.bool() & (positions >= prompts.unsqueeze(1))
    ids = ids * mask
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": torch.where(completion, ids, torch.full_like(ids, -100)),
    }


def lm_unpadded(batches: list[dict]) -> list[dict]:
    """Each causal-LM example alone with its right padding cut off; ``labels`` (1, T) as in the batch."""
    examples = []
    for batch in batches:
        for i in range(batch["input_ids"].shape[0]):
            length = int(batch["attention_mask"][i].sum())
            examples.append({k: v[i : i + 1, :length] for k, v in batch.items()})
    return examples
