"""The stages of an analysis against an open store writer, each resumable.

Stages, in order (``job.stages.STAGES``): predictions; per factor variant the covariance,
eigendecomposition and eigenvalue correction; queries; scores. The factor stages are
``EkfacInfluence.fit`` itself, given a :class:`~influence.recording.StoreJournal` that finds
in the store what is done and records what gets done; this module adds the stages only a
stored analysis has (predictions, the queries chunk by chunk within the memory budget, the
scores written tile by tile) and the order. On several ranks every rank runs the same
stages; rank 0 alone holds the writer and answers for all what the store holds.
"""

from __future__ import annotations

import dataclasses
import threading
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Callable, Iterator, Optional, TypeVar

import numpy as np
import torch

from influence.batches import rows_of
from influence.caches import TrainCache
from influence.ekfac import EkfacInfluence, Queries, ScoreBatch
from influence.journal import FitJournal, PassControl, SharedJournal
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
from store.layout import VARIANT_CLEAN, StoreLayout
from store.schema import stage_key
from store.writer import StoreWriter

T = TypeVar("T")
Chunk = tuple[int, int]  # query tiles [first, stop): the test rows one pass over the training side scores


def query_chunks(layout: StoreLayout, chunk_rows: int) -> list[Chunk]:
    """The store's tiles in chunks of about ``chunk_rows`` test rows (whole tiles, at least one each)."""
    per_chunk = max(1, chunk_rows // layout.tile_rows)
    return [(first, min(first + per_chunk, layout.n_tiles)) for first in range(0, layout.n_tiles, per_chunk)]


class StageRunner:
    """Runs the stages of one analysis against an open store writer."""

    def __init__(
        self,
        analysis: Analysis,
        writer: Optional[StoreWriter],
        progress: Optional[ProgressCallback],
        cancel: Optional[threading.Event],
    ):
        """``writer``: the open store, on rank 0 (the only rank given one, and progress) of a distributed run."""
        self.analysis = analysis
        self.ranks = analysis.engine.ranks
        self.writer = writer
        self.recorder = StageRecorder(writer, progress) if writer is not None else None
        self.progress = progress
        self.cancel = cancel
        self.config = analysis.config
        # The analysis's layout with the store's own query tiles, and rank 0's chunks on every rank.
        query_tile = self._leader_says(lambda: writer.layout.query_tile)
        self.layout = dataclasses.replace(analysis.layout, query_tile=query_tile)
        self.chunks = query_chunks(self.layout, self._leader_says(lambda: analysis.memory.chunk_rows))
        # One cache per set of training batches: a causal LM's corrupted variant has batches of its own.
        keyed = analysis.layout.variants if not analysis.shares_batches else analysis.engines
        budget = analysis.memory.cache_bytes // len(keyed)
        self.caches = {variant: TrainCache(budget) for variant in keyed}

    def _leader_says(self, question: Callable[[], T]) -> T:
        """Rank 0's answer to ``question`` (about the store, which only rank 0 opens), on every rank."""
        return self.ranks.agree(question() if self.ranks.leads else None)

    def _stage(self, key: str, total: Optional[int], unit: str) -> AbstractContextManager[None]:
        """The stage's record around its work, kept by rank 0."""
        return self.recorder.stage(key, total, unit) if self.recorder is not None else nullcontext()

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
        journal: FitJournal = FitJournal()
        if self.recorder is not None:
            journal = StoreJournal(
                self.recorder,
                variant,
                engine.layer_names,
                run_fingerprint(self.layout),
                self.config.checkpoint_seconds,
                engine.device,
            )
        if self.ranks.world > 1:
            journal = SharedJournal(self.ranks, journal)
        return engine.fit(
            self.analysis.train_batches[variant],
            journal=journal,
            label_key=self.analysis.label_key(variant),
            cache=self.caches[variant],
            progress=self._renamed(variant),
            cancel=self.cancel,
        )

    # ----------------------------------------------------------------- queries
    def _chunk_batches(self, chunk: Chunk) -> list[dict[str, torch.Tensor]]:
        return rows_of(self.analysis.test_batches, *self.layout.tile_rows_of(*chunk))

    def _chunk_queries(
        self, engines: dict[str, EkfacInfluence], chunk: Chunk, offset: int = 0, total: Optional[int] = None
    ) -> dict[str, Queries]:
        """The rotated test gradients of one chunk of queries, per factor variant; progress events of the
        queries stage from ``offset`` batches of ``total`` when a total is given."""
        batches = self._chunk_batches(chunk)
        queries = {}
        for index, (variant, engine) in enumerate(engines.items()):
            progress = None if total is None else self._renamed(VARIANT_CLEAN, offset + index * len(batches), total)
            queries[variant] = engine.query_gradients(
                batches, control=PassControl(progress=progress, cancel=self.cancel)
            )
        return queries

    def queries(self, engines: dict[str, EkfacInfluence]) -> Optional[tuple[Chunk, dict[str, Queries]]]:
        """Every query's self-influence, from its gradients taken chunk by chunk; the last chunk's
        gradients are kept for the scores (the others are taken again there, one chunk at a time).
        None when the stage is done: the scores then take every chunk's gradients themselves."""
        key = STAGE_QUERIES
        if self._leader_says(lambda: self.recorder.is_done(key)):
            return None
        layout, regs = self.layout, self.layout.regularizations
        test_self = np.zeros((len(layout.variants), len(regs), layout.n_test), dtype=np.float32)
        sizes = [len(self._chunk_batches(chunk)) * len(engines) for chunk in self.chunks]
        queries: dict[str, Queries] = {}
        with self._stage(key, sum(sizes), "batches"):
            for index, chunk in enumerate(self.chunks):
                queries = {}  # the previous chunk's gradients go before the next one's are taken
                queries = self._chunk_queries(engines, chunk, sum(sizes[:index]), sum(sizes))
                start, stop = layout.tile_rows_of(*chunk)
                for v, variant in enumerate(layout.variants):
                    own = layout.factor_variant_of(variant)
                    test_self[v, :, start:stop] = numpy_of(engines[own].query_self_influence(queries[own], regs))
            if self.writer is not None:
                for v, variant in enumerate(layout.variants):
                    for k in range(len(regs)):
                        self.writer.write_test_self(variant, k, test_self[v, k])
        return self.chunks[-1], queries

    # ------------------------------------------------------------------ scores
    def _score_stream(
        self,
        engines: dict[str, EkfacInfluence],
        queries: dict[str, Queries],
        start: int,
        stop: int,
        with_self_influence: bool,
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
                with_self_influence=with_self_influence,
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
                    with_self_influence=with_self_influence,
                    control=control,
                )
            )
        for parts in zip(*streams):
            self_influence = None if not with_self_influence else torch.cat([p.self_influence for p in parts])
            yield ScoreBatch(parts[0].index, torch.cat([p.layers for p in parts]), self_influence)

    def _block_scores(
        self, engines: dict[str, EkfacInfluence], queries: dict[str, Queries], chunk: Chunk, block: int
    ) -> dict[str, Any]:
        """One block of training columns against one chunk of queries: ``write_score_block``'s arrays."""
        layout = self.layout
        batches_per_block = layout.score_block // self.config.batch_size
        first = block * batches_per_block
        with_self = chunk[0] == 0  # the training self-influence does not depend on the queries: once
        parts = list(self._score_stream(engines, queries, first, first + batches_per_block, with_self))
        layers = torch.cat([p.layers for p in parts], dim=-1)  # (V, K, L, chunk rows, w)
        self_influence = torch.cat([p.self_influence for p in parts], dim=-1) if with_self else None  # (V, K, w)
        totals, per_layer, train_self = {}, {}, {}
        for v, variant in enumerate(layout.variants):
            for k in range(len(layout.regularizations)):
                per_layer[(variant, k)] = numpy_of(layers[v, k]).astype(np.float32)
                totals[(variant, k)] = numpy_of(layers[v, k].sum(dim=0)).astype(np.float32)
                if self_influence is not None:
                    train_self[(variant, k)] = numpy_of(self_influence[v, k]).astype(np.float32)
        return {"total": totals, "layers": per_layer, "train_self": train_self if with_self else None, "tiles": chunk}

    def scores(self, engines: dict[str, EkfacInfluence], kept: Optional[tuple[Chunk, dict[str, Queries]]]) -> None:
        """Chunk by chunk of queries (the one ``kept`` from the queries stage first), one pass over the
        training blocks that chunk still lacks, the blocks round the ranks and written by rank 0 as
        each round arrives; resumed tile by tile."""
        key = STAGE_SCORES
        layout = self.layout
        completed = self._leader_says(lambda: self.writer.completed_tiles())
        rows = np.diff([layout.tile_rows_of(t, t + 1) for t in range(layout.n_tiles)], axis=1)[:, 0]
        widths = np.diff([layout.block_columns(b) for b in range(layout.n_blocks)], axis=1)[:, 0]
        pairs = np.outer(rows, widths)
        done = int(pairs[completed].sum())
        order = self.chunks if kept is None else [kept[0]] + [c for c in self.chunks if c != kept[0]]
        with self._stage(key, layout.n_test * layout.n_train, "pairs"):
            for chunk in order:
                tiles = slice(*chunk)
                todo = [b for b in range(layout.n_blocks) if not completed[tiles, b].all()]
                if not todo:
                    continue
                queries = kept[1] if kept is not None and kept[0] == chunk else self._chunk_queries(engines, chunk)
                kept = None  # its gradients go with this chunk
                for turn in self.ranks.rounds(todo):
                    mine = turn[self.ranks.rank] if self.ranks.rank < len(turn) else None
                    arrays = None if mine is None else self._block_scores(engines, queries, chunk, mine)
                    for block, block_arrays in zip(turn, self.ranks.gather(arrays) or []):
                        self.writer.write_score_block(block, **block_arrays)
                        done += int(pairs[tiles, block][~completed[tiles, block]].sum())
                        completed[tiles, block] = True
                        self.writer.set_stage(key, STATUS_RUNNING, done=done)
                        self.recorder.report(key, done, layout.n_test * layout.n_train, "pairs")
                del queries

    # --------------------------------------------------------------------- all
    def run(self) -> None:
        if self.ranks.leads:
            self.predictions()  # the other ranks wait for it at the fit's first question
        engines = {variant: self.fit(variant) for variant in self.layout.factor_variants}
        if self._leader_says(lambda: self.recorder.is_done(STAGE_SCORES)):
            return
        self.scores(engines, self.queries(engines))
