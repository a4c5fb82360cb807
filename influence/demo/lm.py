"""The demo causal LM: a tiny Llama-architecture model with its own word-level tokenizer.

It is trained, the first time it is needed, on the chosen data's training examples as
prompt → completion (the demo's reviews read "Review: … Sentiment:" → " positive"), the
loss on the completion tokens only, then kept in the user cache under a fingerprint of its
training data and settings, and saved with ``save_pretrained`` so that the analysis loads
it through the same code as any causal LM. Deterministic the same way as the demo
classifier: the vocabulary is counted, not trained, and every draw is seeded.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

from influence.completions import Example, lm_batches, tokenize_all
from influence.demo.model import DemoSettings, build_tokenizer, cached_model, train_model
from job.progress import ProgressCallback

MAX_TRAIN_EXAMPLES = 4000


@dataclass(frozen=True)
class LMSettings(DemoSettings):
    """The classifier demo's widths and optimizer for the causal LM (part of the cache fingerprint)."""

    version: int = 2  # 2: completions end with </s>
    warmup_fraction: float = 0.0  # a linear decay from the first step


def fingerprint(examples: Sequence[Example], max_length: int, seed: int, settings: LMSettings) -> str:
    digest = hashlib.sha256()
    digest.update(repr((asdict(settings), max_length, seed)).encode())
    for example in examples:
        for segment in example.segments:
            digest.update(f"{int(segment.completion)}{segment.text}\0".encode())
    return digest.hexdigest()[:16]


def build_lm(vocab_size: int, max_length: int, settings: LMSettings, pad_token_id: int):
    """A Llama: bias-free Linear layers, RMSNorm, rotary positions."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=settings.dim,
        intermediate_size=settings.hidden,
        num_hidden_layers=settings.layers,
        num_attention_heads=settings.heads,
        num_key_value_heads=settings.heads,
        max_position_embeddings=max(max_length, 128),
        pad_token_id=pad_token_id,
        bos_token_id=2,
        eos_token_id=3,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def _train(
    model,
    tokenizer,
    examples: Sequence[Example],
    max_length: int,
    seed: int,
    settings: LMSettings,
    progress: Optional[ProgressCallback],
    cancel: Optional[threading.Event],
) -> None:
    """The completion tokens' loss (Hugging Face's shift, −100 ignored). Each completion is followed by
    the end-of-sequence token, so that the model's greedy completions stop."""
    ended = [example.with_completion(example.completion + tokenizer.eos_token) for example in examples]
    tokenized = tokenize_all(ended, tokenizer, max_length)

    def batch_of(rows: list[int]) -> dict:
        return lm_batches([tokenized[i] for i in rows], tokenizer.pad_token_id, len(rows))[0]

    train_model(model, len(tokenized), batch_of, settings, seed, progress, cancel)


def ensure_demo_lm(
    examples: Sequence[Example],
    *,
    max_length: int,
    seed: int,
    settings: LMSettings = LMSettings(),
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[threading.Event] = None,
) -> Path:
    """The folder of a demo LM trained on ``examples``: from the cache, or trained now."""
    examples = list(examples[:MAX_TRAIN_EXAMPLES])

    def train() -> tuple:
        texts = [example.text for example in examples]
        tokenizer = build_tokenizer(texts, max_length, settings, causal=True)
        model = build_lm(len(tokenizer), max_length, settings, tokenizer.pad_token_id)
        _train(model, tokenizer, examples, max_length, seed, settings, progress, cancel)
        return model, tokenizer

    return cached_model("demo-lms", fingerprint(examples, max_length, seed, settings), seed, train)
