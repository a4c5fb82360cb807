"""The demo classifier: a small DistilBERT-architecture model with its own word-level tokenizer.

It is trained on the chosen dataset's train split the first time it is needed, then kept
in the user cache under a fingerprint of its training data and settings. It is saved
with ``save_pretrained``, so that the analysis loads it through exactly the same code as
any real model.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from job.config import cache_root
from job.progress import ProgressCallback, ProgressEvent, check_cancel, report

STAGE_TRAINING = "training"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# A causal LM's: padding, unknown, beginning and end of sequence; a text reads "<s> words".
LM_SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>")
MAX_TRAIN_EXAMPLES = 4000  # enough for the demo model to learn; keeps first runs short on real data


@dataclass(frozen=True)
class DemoSettings:
    """Everything that determines the trained weights (part of the cache fingerprint)."""

    version: int = 2  # 2: deterministic vocabulary order
    vocab_size: int = 6000
    min_frequency: int = 2
    dim: int = 64
    layers: int = 2
    heads: int = 4
    hidden: int = 128
    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 3e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1


def fingerprint(
    texts: Sequence[str], labels: np.ndarray, num_labels: int, max_length: int, seed: int, settings: DemoSettings
) -> str:
    digest = hashlib.sha256()
    digest.update(repr((asdict(settings), num_labels, max_length, seed)).encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    digest.update(np.asarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


def build_tokenizer(texts: Sequence[str], max_length: int, settings: DemoSettings, causal: bool = False):
    """A lower-cased word-level tokenizer over ``texts``, as a transformers fast tokenizer: BERT's
    special tokens around a text for the classifier, ``<s>`` before it for a causal LM.

    The vocabulary is counted here rather than by the tokenizers library's trainer, whose
    order among equally frequent words changes from one process to the next: token ids,
    and with them the trained demo model, must be the same on every run.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()])
    pre_tokenizer = pre_tokenizers.Whitespace()
    counts = Counter(
        word for text in texts for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
    )
    frequent = sorted((w for w, c in counts.items() if c >= settings.min_frequency), key=lambda w: (-counts[w], w))
    specials = LM_SPECIAL_TOKENS if causal else SPECIAL_TOKENS
    words = list(specials) + frequent[: settings.vocab_size - len(specials)]
    unknown = specials[1]
    core = Tokenizer(models.WordLevel({word: i for i, word in enumerate(words)}, unk_token=unknown))
    core.normalizer = normalizer
    core.pre_tokenizer = pre_tokenizer
    if causal:
        core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
        tokens = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}
    else:
        cls_id, sep_id = core.token_to_id("[CLS]"), core.token_to_id("[SEP]")
        core.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
        )
        tokens = {
            "unk_token": "[UNK]",
            "pad_token": "[PAD]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
        }
    return PreTrainedTokenizerFast(tokenizer_object=core, model_max_length=max_length, **tokens)


def build_model(vocab_size: int, label_names: Sequence[str], max_length: int, settings: DemoSettings):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = DistilBertConfig(
        vocab_size=vocab_size,
        dim=settings.dim,
        n_layers=settings.layers,
        n_heads=settings.heads,
        hidden_dim=settings.hidden,
        max_position_embeddings=max(max_length, 128),
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        pad_token_id=0,
    )
    return DistilBertForSequenceClassification(config)


def _train(
    model,
    tokenizer,
    texts: Sequence[str],
    labels: np.ndarray,
    max_length: int,
    seed: int,
    settings: DemoSettings,
    progress: Optional[ProgressCallback],
    cancel: Optional[threading.Event],
) -> None:
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    targets = torch.as_tensor(labels, dtype=torch.long)

    def batch_of(rows: list[int]) -> dict:
        return {
            **tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, return_tensors="pt"),
            "labels": targets[rows],
        }

    train_model(model, len(encoded), batch_of, settings, seed, progress, cancel)


def train_model(
    model,
    count: int,
    batch_of: Callable[[list[int]], dict],
    settings: DemoSettings,
    seed: int,
    progress: Optional[ProgressCallback],
    cancel: Optional[threading.Event],
) -> None:
    """AdamW with a linear warmup (none at warmup_fraction 0) and decay, gradients clipped at 1, the
    examples in a seeded order; ``batch_of(rows)`` is the model's batch (its loss included) of those rows."""
    generator = torch.Generator().manual_seed(seed)
    total_steps = (count + settings.batch_size - 1) // settings.batch_size * settings.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    warmup = max(1, int(settings.warmup_fraction * total_steps)) if settings.warmup_fraction > 0 else 0

    def rate(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / (total_steps - warmup))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    model.train()
    step = 0
    for _ in range(settings.epochs):
        order = torch.randperm(count, generator=generator).tolist()
        for start in range(0, count, settings.batch_size):
            check_cancel(cancel)
            loss = model(**batch_of(order[start : start + settings.batch_size])).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            step += 1
            report(progress, ProgressEvent(STAGE_TRAINING, step, total_steps, "steps"))
    model.eval()


def ensure_demo_model(
    texts: Sequence[str],
    labels: np.ndarray,
    label_names: Sequence[str],
    *,
    max_length: int,
    seed: int,
    settings: DemoSettings = DemoSettings(),
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[threading.Event] = None,
) -> Path:
    """The folder of a demo model trained on (texts, labels): from the cache, or trained now."""
    texts, labels = list(texts[:MAX_TRAIN_EXAMPLES]), np.asarray(labels[:MAX_TRAIN_EXAMPLES])

    def train() -> tuple:
        tokenizer = build_tokenizer(texts, max_length, settings)
        model = build_model(len(tokenizer), label_names, max_length, settings)
        _train(model, tokenizer, texts, labels, max_length, seed, settings, progress, cancel)
        return model, tokenizer

    key = fingerprint(texts, labels, len(label_names), max_length, seed, settings)
    return cached_model("demo-models", key, seed, train)


def cached_model(kind: str, key: str, seed: int, train: Callable[[], tuple]) -> Path:
    """``cache_root()/kind/key``: there already, or ``train()``'s (model, tokenizer) saved there.

    Saving goes into a temporary folder renamed into place when complete, so an interrupted
    first run never leaves a half-written model behind.
    """
    folder = cache_root() / kind / key
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    from influence.modeling import quiet_libraries

    quiet_libraries()
    torch.manual_seed(seed)
    model, tokenizer = train()
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, folder)
    except OSError:
        if (folder / "config.json").is_file():  # another process finished the same model first
            return folder
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
