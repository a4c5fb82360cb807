"""The views' side of the store: cached, honest reads over one StoreReader.

Honest means a score is one of three things, and the views show which: computed,
pending (its training column is not written yet) or invalid (written as NaN or ±inf,
a numerical failure of the engine); a relative score may also be not available (the
training review's self-influence is not > 0, ``store.analysis.relative_scale``). Rows are
cached because every view asks for the same few rows; ``refresh`` drops the caches only
when the store really changed.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Hashable, TypeVar

import numpy as np

from job.stages import STAGE_SCORES, STATUS_DONE
from store.analysis import RELATIVE, relative_influence
from store.layout import VARIANT_CORRUPTED, LayerInfo
from store.reader import ExampleView, StoreReader
from store.stages import StageRecord
from tui import format as fmt
from tui.sorting import text_keys
from tui.words import Words, words_for

ROW_CACHE_SIZE = 48
SUMMARY_GENERATED_WIDTH = 40  # characters of a completion in a one-line summary
NO_PAIR = -1  # no training review selected: views fall back to the top of the ranking
PREDICTIONS_PENDING = -1

T = TypeVar("T")


@dataclass(frozen=True)
class Row:
    """Influence of every training review on one test review, with what is not there yet.

    ``values`` is the raw influence I(q, n) as stored; ``train_self`` the training reviews'
    self-influence I(n, n) at the same λ and variant, which relative influence divides by.
    """

    values: np.ndarray
    scored: np.ndarray
    train_self: np.ndarray

    @property
    def invalid(self) -> np.ndarray:
        """Written but not finite: the engine produced NaN or ±inf."""
        return self.scored & ~np.isfinite(self.values)

    @cached_property
    def shown(self) -> np.ndarray:
        """The values with pending and invalid entries as NaN, for sorting and statistics."""
        return np.where(self.scored & np.isfinite(self.values), self.values, np.nan)

    @cached_property
    def relative(self) -> np.ndarray:
        """Relative influence I(q, n) / sqrt(I(n, n)); NaN where pending, invalid or not available."""
        return relative_influence(self.shown, self.train_self)

    def score(self, kind: str) -> np.ndarray:
        """The ranking's values under ``kind`` (store.analysis.INFLUENCE or RELATIVE), NaN where not there."""
        return self.relative if kind == RELATIVE else self.shown

    @property
    def unavailable(self) -> np.ndarray:
        """A raw score is there but no relative one: the training review's I(n, n) is not > 0."""
        return np.isfinite(self.shown) & np.isnan(self.relative)

    @property
    def n_scored(self) -> int:
        return int(self.scored.sum())


@dataclass(frozen=True)
class Changes:
    """What a refresh found: new scores or predictions (``content``), new stage records (``stages``)."""

    content: bool
    stages: bool


class StoreData:
    """One open store as the views use it; call from the UI thread (workers use ``reader`` directly)."""

    def __init__(self, reader: StoreReader) -> None:
        self.reader = reader
        self._cache: OrderedDict[Hashable, object] = OrderedDict()
        self._load_markers()

    @classmethod
    def open(cls, path: Path) -> "StoreData":
        """Open ``path`` read-only; raises a StoreError subclass with a one-line message when it cannot."""
        return cls(StoreReader(path))

    def close(self) -> None:
        self.reader.close()

    def _load_markers(self) -> None:
        self.scored = self.reader.train_columns_done()
        self.stages: dict[str, StageRecord] = self.reader.stages()
        self.train: ExampleView = self.reader.examples("train")
        self.test: ExampleView = self.reader.examples("test")
        self.corrupted = self.train.label != self.train.corrupted_label

    def refresh(self) -> Changes:
        """Make the engine's latest writes visible and say what changed."""
        scored, stages, predictions = self.scored, self.stages, self.test.prediction
        self.reader.refresh()
        self._load_markers()
        changes = Changes(
            content=not (np.array_equal(scored, self.scored) and np.array_equal(predictions, self.test.prediction)),
            stages=stages != self.stages,
        )
        if changes.content:
            self._cache.clear()
        return changes

    # ------------------------------------------------------------ the layout
    @property
    def path(self) -> Path:
        return self.reader.path

    @property
    def n_train(self) -> int:
        return self.reader.n_train

    @property
    def n_test(self) -> int:
        return self.reader.n_test

    @property
    def layers(self) -> list[LayerInfo]:
        return self.reader.layers

    @cached_property
    def layer_labels(self) -> list[str]:
        """The layers' names as the views show them: the part that tells them apart (``fmt.short_names``)."""
        return fmt.short_names([layer.name for layer in self.layers])

    @cached_property
    def layer_note(self) -> str:
        """What the labels leave out, for a view's detail line ("layer names without distilbert.transformer.")."""
        return fmt.names_note([layer.name for layer in self.layers])

    @property
    def variants(self) -> list[str]:
        return self.reader.variants

    @property
    def regularizations(self) -> list[float]:
        return self.reader.regularizations

    @property
    def has_corrupted(self) -> bool:
        return VARIANT_CORRUPTED in self.variants

    @property
    def no_corrupted_variant(self) -> str:
        """Why a store has no corrupted variant, as a sentence."""
        if self.is_causal_lm and self.reader.config.get("corrupt") is not None:
            why = "plain documents have no completion to swap"
        else:
            why = "it was computed with --corrupt none"
        return f"This store has no corrupted-{self.words.label} variant ({why})."

    @property
    def scores_done(self) -> bool:
        record = self.stages.get(STAGE_SCORES)
        return record is not None and record.status == STATUS_DONE

    @property
    def is_causal_lm(self) -> bool:
        return self.reader.layout.is_causal_lm

    @cached_property
    def words(self) -> Words:
        return words_for(self.reader.task)

    def label_name(self, label: int, split: str = "train") -> str:
        """A classifier's class name; for a causal LM the completion of example ``label`` of ``split`` (labels
        are example indices there, the corrupted variant's naming the example whose completion it took)."""
        if self.is_causal_lm:
            table = (self.train if split == "train" else self.test).completions
            return table.completion[label] if 0 <= label < len(table.completion) else fmt.PENDING
        names = self.reader.label_names
        return names[label] if 0 <= label < len(names) else fmt.PENDING

    def label_sort_keys(self, labels: np.ndarray, split: str = "train") -> np.ndarray:
        """Sort keys of ``labels`` as :meth:`label_name` shows them: a classifier's class ids, a causal LM's
        completions as texts (its labels are example indices, whose order says nothing)."""
        if not self.is_causal_lm:
            return labels
        return text_keys([self.label_name(int(label), split) for label in labels])

    def prediction_text(self, index: int) -> str:
        """What the model says for test example ``index``: its class, or its greedy completion."""
        if self.is_causal_lm:
            generated = self.test.completions.generated[index]
            return generated if self.test.prediction[index] >= 0 else fmt.PENDING
        return self.label_name(int(self.test.prediction[index]))

    def prediction_wrong(self, index: int) -> bool | None:
        """Whether the prediction misses the label (for a causal LM: the greedy completion does not begin
        with the reference); None until it is written."""
        prediction = int(self.test.prediction[index])
        if prediction < 0:
            return None
        return prediction == 0 if self.is_causal_lm else prediction != int(self.test.label[index])

    def train_labels(self, variant: str) -> np.ndarray:
        """The labels the scores of ``variant`` were computed with."""
        return self.train.corrupted_label if variant == VARIANT_CORRUPTED else self.train.label

    def test_confidence(self) -> np.ndarray:
        """Per test example (NaN until predictions are written): the probability of the predicted class,
        or for a causal LM the reference completion's mean loss per token (lower is surer)."""
        if self.is_causal_lm:
            completions = self.test.completions
            return completions.completion_loss / np.maximum(completions.completion_tokens, 1)
        probabilities = self.test.probabilities
        return np.max(probabilities, axis=1) if probabilities.size else np.full(self.n_test, np.nan)

    def test_summary(self, index: int) -> str:
        """``true positive, predicted negative``, or ``reference “ positive”, generated “positive” ✓``."""
        reference = self.label_name(int(self.test.label[index]), "test")
        predicted = self.prediction_text(index)
        if not self.is_causal_lm:
            return f"true {reference}, predicted {predicted}"
        wrong = self.prediction_wrong(index)
        mark = "" if wrong is None else (" ✗" if wrong else " ✓")
        shown = fmt.clip(predicted, SUMMARY_GENERATED_WIDTH)
        return f"reference “{fmt.clip(reference, SUMMARY_GENERATED_WIDTH)}”, generated “{shown}”{mark}"

    # ------------------------------------------------------------ scores
    def _cached(self, key: Hashable, load: Callable[[], T]) -> T:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]  # type: ignore[return-value]
        value = load()
        self._cache[key] = value
        while len(self._cache) > ROW_CACHE_SIZE:
            self._cache.popitem(last=False)
        return value

    def row(self, variant: str, reg_index: int, test_index: int) -> Row:
        """Total influence of every training review on test review ``test_index`` (and its relative version)."""
        return self._cached(
            ("row", variant, reg_index, test_index),
            lambda: Row(
                self.reader.influence_row(variant, reg_index, test_index),
                self.scored,
                self.train_self(variant, reg_index),
            ),
        )

    def train_self(self, variant: str, reg_index: int) -> np.ndarray:
        """Self-influence I(n, n) of every training review (NaN until its column is written)."""
        return self._cached(
            ("train_self", variant, reg_index), lambda: self.reader.self_influence(variant, reg_index, "train")
        )

    def layer_rows(self, variant: str, reg_index: int, test_index: int) -> np.ndarray:
        """Per-layer influence on one test review: (n_layers, n_train), NaN where pending."""
        return self._cached(
            ("layers", variant, reg_index, test_index), lambda: self.reader.layer_rows(variant, reg_index, test_index)
        )

    def test_self(self, variant: str, reg_index: int) -> np.ndarray:
        return self._cached(
            ("test_self", variant, reg_index), lambda: self.reader.self_influence(variant, reg_index, "test")
        )
