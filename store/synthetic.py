"""A realistic-looking store without torch: for the UI's tests, demos of the format and benchmarks.

Scores are low rank plus noise per layer (the total is their sum), the regularization
shrinks the signal so that a very large λ decorrelates the ranking (as in the
reference notebook's appendix), a few planted pairs stand out, and in the corrupted
variant the corrupted training examples' influence flips sign. All goes through
StoreWriter, so the file is exactly what the engine would produce.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from job.options import TASK_CAUSAL_LM, TASK_CLASSIFICATION, EngineOptions
from job.stages import (
    FACTOR_STAGES,
    STAGE_CORRECTION,
    STAGE_COVARIANCE,
    STAGE_EIGEN,
    STAGE_PREDICTIONS,
    STAGE_QUERIES,
    STAGE_SCORES,
    STATUS_DONE,
    STATUS_RUNNING,
)
from store.layout import VARIANT_CORRUPTED, CompletionTable, ExampleTable, LayerInfo, StoreLayout
from store.schema import stage_key
from store.writer import StoreWriter

LABEL_NAMES = ["negative", "positive"]
CORRUPT_FRACTION = 0.1
SIGNAL_RANK = 4
NOISE_LEVEL = 0.3
REGULARIZATION_SCALE = 1e-2  # λ at which the signal halves
PLANTED_PAIRS = 4
PLANTED_STRENGTH = 25.0
ACCURACY_LOGIT_MEAN, ACCURACY_LOGIT_SD = 2.5, 1.5
TOKENS_PER_EXAMPLE = 120

_OPENINGS = [
    "I watched this film last night.",
    "My friends recommended this movie.",
    "I went in with no expectations.",
    "This was on television yesterday.",
    "I rented this one on a whim.",
]
_SUBJECTS = [
    "The acting",
    "The plot",
    "The soundtrack",
    "The ending",
    "The director's vision",
    "The dialogue",
    "The cinematography",
    "The lead performance",
    "The pacing",
    "The script",
]
_WORDS = {
    0: ["dull", "clumsy", "forgettable", "painfully slow", "a mess", "wooden", "predictable", "a waste of time"],
    1: ["wonderful", "gripping", "beautifully made", "a delight", "moving", "superb", "clever", "unforgettable"],
}
_CLOSINGS = {
    0: ["I would not recommend it.", "Skip this one.", "Two hours I will not get back."],
    1: ["Highly recommended.", "I would watch it again.", "One of the best this year."],
}


def _review(rng: np.random.Generator, label: int) -> str:
    """One review whose tone follows ``label``, between one and ten sentences long."""
    sentences = [_OPENINGS[rng.integers(len(_OPENINGS))]]
    for _ in range(rng.integers(0, 9)):
        tone = label if rng.random() < 0.8 else 1 - label  # mixed reviews exist
        sentences.append(
            f"{_SUBJECTS[rng.integers(len(_SUBJECTS))]} was {_WORDS[tone][rng.integers(len(_WORDS[tone]))]}."
        )
    sentences.append(_CLOSINGS[label][rng.integers(len(_CLOSINGS[label]))])
    return " ".join(sentences)


def _table(rng: np.random.Generator, n: int, pool: int, corrupt: bool) -> ExampleTable:
    label = rng.integers(0, 2, size=n).astype(np.int64)
    corrupted = label.copy()
    if corrupt:
        flipped = rng.choice(n, size=max(1, int(CORRUPT_FRACTION * n)), replace=False)
        corrupted[flipped] = 1 - corrupted[flipped]
    return ExampleTable(
        text=[_review(rng, int(y)) for y in label],
        label=label,
        dataset_index=np.sort(rng.choice(pool, size=n, replace=False)).astype(np.int64),
        corrupted_label=corrupted,
    )


def _as_completions(table: ExampleTable, swap: bool) -> ExampleTable:
    """A causal LM's view of a synthetic table: the review as the prompt, its sentiment as the completion;
    a flipped label becomes a swap with the first example of the other sentiment. Tokens are words."""
    prompts = [f"Review: {text}\nSentiment:" for text in table.text]
    completions = [f" {LABEL_NAMES[int(y)]}" for y in table.label]
    n = len(table)
    donors = np.arange(n, dtype=np.int64)
    if swap:
        first = {y: int(np.flatnonzero(table.label == y)[0]) for y in (0, 1) if (table.label == y).any()}
        for i in np.flatnonzero(table.label != table.corrupted_label):
            donors[i] = first.get(int(table.corrupted_label[i]), i)
    words = [len(prompt.split()) + 2 for prompt in prompts]  # <s>, the prompt's words, the completion's one
    length = max(words)
    token_ids = np.full((n, length), -1, dtype=np.int32)
    mask = np.zeros((n, length), dtype=np.uint8)
    for row, count in enumerate(words):
        token_ids[row, :count] = np.arange(count) % 97
        mask[row, count - 1] = 1
    corrupted = [completions[int(j)] for j in donors]
    return ExampleTable(
        text=[p + c for p, c in zip(prompts, completions)],
        label=np.arange(n, dtype=np.int64),
        dataset_index=table.dataset_index,
        corrupted_label=donors,
        completions=CompletionTable(prompts, completions, corrupted, token_ids, mask),
    )


def _layers(n_layers: int) -> list[LayerInfo]:
    """Small DistilBERT-like names; every third layer is bias-free, as in Llama-style models."""
    return [
        LayerInfo(
            name=f"transformer.layer.{i // 2}.ffn.lin{1 + i % 2}",
            in_features=6 + 2 * (i % 3),
            out_features=4 + (i % 2) * 2,
            has_bias=i % 3 != 2,
            kind="linear",
        )
        for i in range(n_layers)
    ]


def _predictions(rng: np.random.Generator, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    confidence = 1 / (1 + np.exp(-rng.normal(ACCURACY_LOGIT_MEAN, ACCURACY_LOGIT_SD, size=label.size)))
    p_positive = np.where(label == 1, confidence, 1 - confidence)
    return (p_positive > 0.5).astype(np.int64), np.stack([1 - p_positive, p_positive], axis=1).astype(np.float32)


def _metrics(label: np.ndarray, prediction: np.ndarray) -> dict:
    n_classes = len(LABEL_NAMES)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (label, prediction), 1)
    tp = np.diag(confusion).astype(float)
    precision = np.divide(tp, confusion.sum(axis=0), out=np.zeros(n_classes), where=confusion.sum(axis=0) > 0)
    recall = np.divide(tp, confusion.sum(axis=1), out=np.zeros(n_classes), where=confusion.sum(axis=1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n_classes), where=precision + recall > 0)
    return {"accuracy": float(tp.sum() / label.size), "f1": float(f1.mean()), "confusion_matrix": confusion.tolist()}


def _write_factors(writer: StoreWriter, rng: np.random.Generator) -> None:
    """Random covariances and their real eigendecompositions, stage by stage as the engine writes them."""
    layout = writer.layout
    for variant in layout.factor_variants:
        covariances = {}
        eigenvalues = {}
        for stage in FACTOR_STAGES:
            key = stage_key(stage, variant)
            writer.set_stage(key, STATUS_RUNNING, done=0, total=len(layout.layers), unit="layers")
            for index, layer in enumerate(layout.layers):
                sides = {"activation": layer.augmented_in, "gradient": layer.out_features}
                for side, size in sides.items():
                    if stage == STAGE_COVARIANCE:
                        x = rng.standard_normal((4 * size, size))
                        covariances[index, side] = x.T @ x / len(x)
                        writer.write_factor(variant, index, f"{side}_covariance", covariances[index, side])
                    elif stage == STAGE_EIGEN:
                        eigenvalues[index, side], vectors = np.linalg.eigh(covariances[index, side])
                        writer.write_factor(variant, index, f"{side}_eigenvalues", eigenvalues[index, side])
                        writer.write_factor(variant, index, f"{side}_eigenvectors", vectors)
                if stage == STAGE_COVARIANCE:
                    writer.write_factor_counts(variant, index, TOKENS_PER_EXAMPLE * layout.n_train, layout.n_train)
                elif stage == STAGE_CORRECTION:
                    outer = np.outer(eigenvalues[index, "gradient"], eigenvalues[index, "activation"])
                    writer.write_factor(
                        variant, index, "corrected_eigenvalues", outer * rng.uniform(0.8, 1.2, outer.shape)
                    )
                writer.set_stage(key, STATUS_RUNNING, done=index + 1)
            writer.set_stage(key, STATUS_DONE)


class _ScoreModel:
    """Low-rank-plus-noise scores, generated block by block from a fixed seed."""

    def __init__(self, layout: StoreLayout, seed: int) -> None:
        rng = np.random.default_rng([seed, 1])
        n_layers = len(layout.layers)
        self.layout, self.seed = layout, seed
        self.left = rng.standard_normal((n_layers, layout.n_test, SIGNAL_RANK)).astype(np.float32)
        self.right = rng.standard_normal((n_layers, SIGNAL_RANK, layout.n_train)).astype(np.float32)
        self.layer_scale = (1.0 / (1.0 + np.arange(n_layers))).astype(np.float32)[:, None, None]
        self.shrink = [1.0 / (1.0 + reg / REGULARIZATION_SCALE) for reg in layout.regularizations]
        self.sign = np.where(layout.train.label == layout.train.corrupted_label, 1.0, -1.0).astype(np.float32)
        picks = rng.choice(
            layout.n_test * layout.n_train, size=min(PLANTED_PAIRS, layout.n_test * layout.n_train), replace=False
        )
        self.planted = [
            (int(p // layout.n_train), int(p % layout.n_train), 1.0 if i % 2 == 0 else -1.0)
            for i, p in enumerate(picks)
        ]

    def block(self, block_index: int) -> tuple[dict, dict, dict]:
        start, stop = self.layout.block_columns(block_index)
        rng = np.random.default_rng([self.seed, 2, block_index])
        signal = np.einsum("ltr,lrn->ltn", self.left, self.right[:, :, start:stop]) * self.layer_scale
        noise = rng.standard_normal(signal.shape, dtype=np.float32) * NOISE_LEVEL * self.layer_scale
        for test, train, sign in self.planted:
            if start <= train < stop:
                signal[:, test, train - start] = sign * PLANTED_STRENGTH * self.layer_scale[:, 0, 0]
        self_influence = (self.right[:, :, start:stop] ** 2).sum(axis=(0, 1))
        total, layers, train_self = {}, {}, {}
        for variant in self.layout.variants:
            flip = self.sign[start:stop] if variant == VARIANT_CORRUPTED else 1.0
            for k, shrink in enumerate(self.shrink):
                values = ((shrink * signal + noise) * flip).astype(np.float32)
                layers[variant, k] = values
                total[variant, k] = values.sum(axis=0)
                train_self[variant, k] = (shrink * self_influence).astype(np.float32)
        return total, layers, train_self

    def test_self(self, k: int) -> np.ndarray:
        return (self.shrink[k] * (self.left**2).sum(axis=(0, 2))).astype(np.float32)


def synthetic_layout(
    *,
    n_test: int,
    n_train: int,
    n_layers: int,
    regularizations: Sequence[float],
    variants: Sequence[str],
    seed: int,
    score_block: int,
    task: str = TASK_CLASSIFICATION,
) -> StoreLayout:
    """The layout of a synthetic store (examples, layers, sweep); a causal LM's reads the same reviews as
    prompts and their sentiments as completions."""
    rng = np.random.default_rng([seed, 0])
    corrupt = VARIANT_CORRUPTED in variants
    train, test = _table(rng, n_train, 5 * n_train, corrupt), _table(rng, n_test, 5 * n_test, corrupt=False)
    lm = task == TASK_CAUSAL_LM
    if lm:
        train, test = _as_completions(train, corrupt), _as_completions(test, False)
    return StoreLayout(
        config={
            "model": "synthetic",
            "dataset": "synthetic-reviews",
            "seed": seed,
            "engine": EngineOptions().for_task(task).analysis_settings(),
        },
        library_versions={"numpy": np.__version__},
        model_fingerprint=f"synthetic-model-{seed}",
        data_fingerprint=f"synthetic-data-{seed}-{n_test}x{n_train}",
        label_names=[] if lm else list(LABEL_NAMES),
        layers=_layers(n_layers),
        train=train,
        test=test,
        variants=list(variants),
        factor_variants=[variants[0]],
        regularizations=[float(r) for r in regularizations],
        main_regularization=float(regularizations[0]),
        factor_dtype="float64",
        score_block=score_block,
        task=task,
    )


def _completion_predictions(writer: StoreWriter, rng: np.random.Generator) -> None:
    """Losses of the reference completions (low, mostly right) and greedy completions, one wrong in six."""
    layout = writer.layout
    for split in ("train", "test"):
        table = layout.split(split).completions
        losses = rng.gamma(2.0, 0.1, size=len(table.completion)).astype(np.float32)
        if split == "train":
            writer.write_completion_predictions(split, losses)
            continue
        token_losses = np.where(table.completion_mask == 1, losses[:, None], np.nan).astype(np.float32)
        right = np.arange(len(losses)) % 6 != 5
        other = {" positive": "negative", " negative": "positive"}
        generated = [c.strip() if ok else other[c] for c, ok in zip(table.completion, right)]
        writer.write_completion_predictions(split, losses, token_losses, generated, right.astype(np.int64))
        tokens = table.completion_mask.sum(axis=1)
        writer.write_metrics(
            {
                "mean_loss": float(losses.sum() / tokens.sum()),
                "perplexity": float(np.exp(losses.sum() / tokens.sum())),
                "exact_match": float(right.mean()),
                "count": len(losses),
            }
        )


def make_synthetic_store(
    path: str | Path,
    *,
    n_test: int,
    n_train: int,
    n_layers: int = 3,
    regularizations: Sequence[float] = (1e-5, 1e-3),
    variants: Sequence[str] = ("clean", "corrupted"),
    seed: int = 0,
    complete: bool = True,
    score_block: int = 256,
    stage_status: dict[str, str] | None = None,
    task: str = TASK_CLASSIFICATION,
) -> Path:
    """Write a synthetic store at ``path`` and return the path.

    ``complete=False`` stops after the first half of the score blocks, with the
    scores stage left running; ``stage_status`` then overrides the final status of
    the given stage keys (e.g. ``{"scores": "failed"}``). The planted pairs are in
    the summary slot ``synthetic``.
    """
    path = Path(path)
    layout = synthetic_layout(
        n_test=n_test,
        n_train=n_train,
        n_layers=n_layers,
        regularizations=regularizations,
        variants=variants,
        seed=seed,
        score_block=score_block,
        task=task,
    )
    rng = np.random.default_rng([seed, 3])
    model = _ScoreModel(layout, seed)
    with StoreWriter.create(path, layout) as writer:
        writer.set_stage(STAGE_PREDICTIONS, STATUS_RUNNING, done=0, total=2, unit="splits")
        if layout.is_causal_lm:
            _completion_predictions(writer, rng)
        for done, split in enumerate(("train", "test"), start=1):
            if not layout.is_causal_lm:
                prediction, probabilities = _predictions(rng, layout.split(split).label)
                writer.write_predictions(split, prediction, probabilities)
                if split == "test":
                    writer.write_metrics(_metrics(layout.test.label, prediction))
            writer.set_stage(STAGE_PREDICTIONS, STATUS_RUNNING, done=done)
        writer.set_stage(STAGE_PREDICTIONS, STATUS_DONE)
        _write_factors(writer, rng)
        writer.set_stage(STAGE_QUERIES, STATUS_DONE, done=n_test, total=n_test, unit="examples")
        blocks = layout.n_blocks if complete else (layout.n_blocks + 1) // 2
        writer.set_stage(STAGE_SCORES, STATUS_RUNNING, done=0, total=layout.n_blocks, unit="blocks")
        for block in range(blocks):
            total, layers, train_self = model.block(block)
            writer.write_score_block(block, total=total, layers=layers, train_self=train_self)
            writer.set_stage(STAGE_SCORES, STATUS_RUNNING, done=block + 1)
        if complete:
            for variant in layout.variants:
                for k in range(len(layout.regularizations)):
                    writer.write_test_self(variant, k, model.test_self(k))
            writer.set_stage(STAGE_SCORES, STATUS_DONE)
        writer.write_summary("timings", {key: record.elapsed for key, record in writer.stages().items()})
        writer.write_summary("synthetic", {"seed": seed, "planted_pairs": [list(p) for p in model.planted]})
        for key, status in (stage_status or {}).items():
            writer.set_stage(key, status)
    return path
