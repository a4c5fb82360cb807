"""The stages of an analysis against an open store writer, each resumable.

Stages, in order (``job.stages.STAGES``): predictions; per factor variant the covariance,
eigendecomposition and eigenvalue correction; queries; scores. The factor stages are
``EkfacInfluence.fit`` itself, given a :class:`~influence.recording.StoreJournal` that finds
in the store what is done and records what gets done; this module adds the stages only a
stored analysis has (predictions, and the scores written block by block) and the order.
"""

from __future__ import annotations

import threading
from typing import Iterator, Optional

import numpy as np
import torch

from influence.caches import TrainCache
from influence.ekfac import EkfacInfluence, Queries, ScoreBatch
from influence.journal import PassControl
from influence.memory import cache_budget, check_query_memory
from influence.predictions import (
    INFERENCE_BATCH,
    class_probabilities,
    classification_metrics,
    completion_metrics,
    greedy_completions,
    token_losses,
)
from influence.preparation import Analysis, run_fingerprint, tokenized_batches
from influence.recording import StageRecorder, StoreJournal, numpy_of
from job.progress import ProgressCallback, ProgressEvent
from job.stages import STAGE_PREDICTIONS, STAGE_QUERIES, STAGE_SCORES, STATUS_RUNNING
from store.layout import VARIANT_CLEAN
from store.schema import stage_key
from store.writer import StoreWriter


class StageRunner:
    """Runs the stages of one analysis against an open store writer."""

    def __init__(
        self,
        analysis: Analysis,
        writer: StoreWriter,
        progress: Optional[ProgressCallback],
        cancel: Optional[threading.Event],
    ):
        self.analysis = analysis
        self.writer = writer
        self.recorder = StageRecorder(writer, progress)
        self.progress = progress
        self.cancel = cancel
        self.config = analysis.config
        self.layout = analysis.layout
        # One cache per set of training batches: a causal LM's corrupted variant has batches of its own.
        keyed = analysis.layout.variants if not analysis.shares_batches else analysis.engines
        budget = cache_budget(analysis.engine) // len(keyed)
        self.caches = {variant: TrainCache(budget) for variant in keyed}

    def _renamed(self, variant: str, offset: int = 0, total: Optional[int] = None) -> Optional[ProgressCallback]:
        """Engine progress events under this run's stage keys (the variant's suffix included),
        shifted by ``offset`` units of ``total`` when one stage runs several engines in turn."""
        if self.progress is None:
            return None
        progress = self.progress

        def forward(event: ProgressEvent) -> None:
            key = stage_key(event.stage, variant)
            progress(ProgressEvent(key, event.done + offset, total or event.total, event.unit, event.message))

        return forward

    # ------------------------------------------------------------- predictions
    def predictions(self) -> None:
        """What the model says of every example (``influence.predictions``), and the test metrics."""
        key = STAGE_PREDICTIONS
        if self.recorder.is_done(key):
            return
        if self.layout.is_causal_lm:
            self._completion_predictions(key)
        else:
            self._class_predictions(key)

    def _counter(self, key: str, total: int, unit: str):
        done = [0]

        def step() -> None:
            done[0] += 1
            self.recorder.report(key, done[0], total, unit)

        return step

    def _class_predictions(self, key: str) -> None:
        # Larger batches than the analysis uses: without a backward pass, bigger is faster.
        tokenizer, data, max_length = self.analysis.loaded.tokenizer, self.analysis.data, self.config.max_length
        batches = {
            "train": tokenized_batches(tokenizer, data.train, None, INFERENCE_BATCH, max_length),
            "test": tokenized_batches(tokenizer, data.test, None, INFERENCE_BATCH, max_length),
        }
        total = sum(len(b) for b in batches.values())
        model, device = self.analysis.loaded.model, self.analysis.engine.device
        with self.recorder.stage(key, total, "batches"):
            step = self._counter(key, total, "batches")
            for split, split_batches in batches.items():
                probs = class_probabilities(model, split_batches, device, self.cancel, step)
                self.writer.write_predictions(split, probs.argmax(axis=1).astype(np.int64), probs)
                if split == "test":
                    labels = self.layout.test.label
                    self.writer.write_metrics(
                        classification_metrics(labels, probs.argmax(axis=1), len(self.analysis.label_names))
                    )

    def _completion_predictions(self, key: str) -> None:
        """Every example's completion loss; each query's token losses and greedy completion."""
        analysis = self.analysis
        model, tokenizer, device = analysis.loaded.model, analysis.loaded.tokenizer, analysis.engine.device
        train, test = self.layout.train.completions, self.layout.test.completions
        total = len(analysis.train_batches[VARIANT_CLEAN]) + len(analysis.test_batches) + self.layout.n_test
        with self.recorder.stage(key, total, "steps"):
            step = self._counter(key, total, "steps")
            train_losses = token_losses(
                model, analysis.train_batches[VARIANT_CLEAN], train.sequence_length, device, self.cancel, step
            )
            self.writer.write_completion_predictions("train", np.nansum(train_losses, axis=1))
            losses = token_losses(model, analysis.test_batches, test.sequence_length, device, self.cancel, step)
            generated = greedy_completions(
                model,
                tokenizer,
                test.token_ids,
                test.completion_mask,
                self.config.max_new_tokens,
                device,
                self.cancel,
                step,
            )
            sums = np.nansum(losses, axis=1)
            self.writer.write_completion_predictions("test", sums, losses, generated.text, generated.exact_match)
            tokens = np.isfinite(losses).sum(axis=1)
            self.writer.write_metrics(completion_metrics(sums, tokens, generated.exact_match))

    # ----------------------------------------------------------------- factors
    def fit(self, variant: str) -> EkfacInfluence:
        """The factor stages of one variant: the engine's own fit, recorded in (and resumed from) the store."""
        engine = self.analysis.engines[variant]
        journal = StoreJournal(
            self.recorder,
            variant,
            engine.layer_names,
            run_fingerprint(self.layout),
            self.config.checkpoint_seconds,
            engine.device,
        )
        return engine.fit(
            self.analysis.train_batches[variant],
            journal=journal,
            label_key=self.analysis.label_key(variant),
            cache=self.caches[variant],
            progress=self._renamed(variant),
            cancel=self.cancel,
        )

    # ----------------------------------------------------------------- queries
    def queries(self, engines: dict[str, EkfacInfluence]) -> dict[str, Queries]:
        """The test gradients, kept in memory (they are recomputed, not stored, on resume)."""
        key = STAGE_QUERIES
        batches = self.analysis.test_batches
        check_query_memory(self.analysis.engine, len(self.layout.test) * len(engines))
        queries: dict[str, Queries] = {}
        total = len(batches) * len(engines)
        with self.recorder.stage(key, total, "batches"):
            for offset, (variant, engine) in enumerate(engines.items()):
                progress = self._renamed(VARIANT_CLEAN, offset=offset * len(batches), total=total)
                control = PassControl(progress=progress, cancel=self.cancel)
                queries[variant] = engine.query_gradients(batches, control=control)
            for variant in self.layout.variants:
                own = self.layout.factor_variant_of(variant)
                values = engines[own].query_self_influence(queries[own], self.layout.regularizations)
                for reg_index in range(len(self.layout.regularizations)):
                    self.writer.write_test_self(variant, reg_index, numpy_of(values[reg_index]).astype(np.float32))
        return queries

    # ------------------------------------------------------------------ scores
    def _score_stream(
        self, engines: dict[str, EkfacInfluence], queries: dict[str, Queries], start: int, stop: int
    ) -> Iterator[ScoreBatch]:
        """Training batches [start, stop) scored for every variant (axis 0): in one pass when the variants
        share their batches and factors (a classifier's exact or sampled Fisher), else in lockstep;
        batch indices stay those of the whole training set."""
        regs, layout, analysis = self.layout.regularizations, self.layout, self.analysis
        control = PassControl(start_batch=start, cancel=self.cancel)
        if analysis.shares_batches and len(engines) == 1:
            yield from engines[VARIANT_CLEAN].iter_scores(
                queries[VARIANT_CLEAN],
                analysis.train_batches[VARIANT_CLEAN][:stop],
                regs,
                label_keys=[analysis.label_key(v) for v in layout.variants],
                cache=self.caches[VARIANT_CLEAN],
                control=control,
            )
            return
        streams = []
        for variant in layout.variants:
            own = layout.factor_variant_of(variant)
            streams.append(
                engines[own].iter_scores(
                    queries[own],
                    analysis.train_batches[variant][:stop],
                    regs,
                    label_keys=[analysis.label_key(variant)],
                    cache=self.caches.get(variant, self.caches.get(own)),
                    control=control,
                )
            )
        for parts in zip(*streams):
            yield ScoreBatch(
                parts[0].index,
                torch.cat([p.layers for p in parts]),
                torch.cat([p.self_influence for p in parts]),
            )

    def scores(self, engines: dict[str, EkfacInfluence], queries: dict[str, Queries]) -> None:
        key = STAGE_SCORES
        layout = self.layout
        completed = self.writer.completed_blocks()
        batches_per_block = layout.score_block // self.config.batch_size
        with self.recorder.stage(key, layout.n_train, "examples"):
            done = int(sum(layout.block_columns(b)[1] - layout.block_columns(b)[0] for b in np.flatnonzero(completed)))
            for block in range(layout.n_blocks):
                if completed[block]:
                    continue
                first = block * batches_per_block
                parts = list(self._score_stream(engines, queries, first, first + batches_per_block))
                layers = torch.cat([p.layers for p in parts], dim=-1)  # (V, K, L, n_test, w)
                self_influence = torch.cat([p.self_influence for p in parts], dim=-1)  # (V, K, w)
                totals, per_layer, train_self = {}, {}, {}
                for v, variant in enumerate(layout.variants):
                    for k in range(len(layout.regularizations)):
                        per_layer[(variant, k)] = numpy_of(layers[v, k]).astype(np.float32)
                        totals[(variant, k)] = numpy_of(layers[v, k].sum(dim=0)).astype(np.float32)
                        train_self[(variant, k)] = numpy_of(self_influence[v, k]).astype(np.float32)
                self.writer.write_score_block(block, total=totals, layers=per_layer, train_self=train_self)
                done += layers.shape[-1]
                self.writer.set_stage(key, STATUS_RUNNING, done=done)
                self.recorder.report(key, done, layout.n_train, "examples")

    # --------------------------------------------------------------------- all
    def run(self) -> None:
        self.predictions()
        engines = {variant: self.fit(variant) for variant in self.layout.factor_variants}
        if self.recorder.is_done(STAGE_SCORES):
            return
        queries = self.queries(engines)
        self.scores(engines, queries)
