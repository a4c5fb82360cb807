"""The stages of an analysis against an open store writer, each resumable.

Stages, in order (``store.schema.STAGES``): predictions; per factor variant the
covariance, eigendecomposition and eigenvalue correction; queries; scores. Each stage
records its progress in the store; a run that finds a stage done skips it, one that
finds it part-way continues: running sums from their checkpoint beside the store
(``store.checkpoint``), eigenbases layer by layer, scores block by block. Because sums
are checkpointed in the dtype they are accumulated in and the data order is fixed, a
resumed run gives the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from influence.ekfac import EkfacInfluence, Queries, ScoreBatch, TrainCache
from influence.factors import CovarianceSums, Eigenbasis, EigenvalueSums, LayerFactors, corrected_eigenvalues
from influence.memory import cache_budget, check_query_memory
from influence.preparation import Analysis, run_fingerprint, tokenized_batches
from influence.progress import Cancelled, ProgressCallback, ProgressEvent, check_cancel, report
from store.checkpoint import Checkpoint, load_checkpoint, remove_checkpoint, save_checkpoint
from store.errors import StoreWriteError
from store.layout import VARIANT_CLEAN
from store.schema import STAGES, stage_key
from store.writer import StoreWriter

STAGE_PREDICTIONS, STAGE_COVARIANCE, STAGE_EIGEN, STAGE_CORRECTION, STAGE_QUERIES, STAGE_SCORES = STAGES
LABEL_KEYS = {"clean": "labels", "corrupted": "corrupted_labels"}
INFERENCE_BATCH = 64  # examples per forward pass when only predictions are needed
# Store dataset name -> Eigenbasis attribute.
EIGEN_FIELDS = {
    "activation_eigenvectors": "activation_vectors",
    "activation_eigenvalues": "activation_values",
    "gradient_eigenvectors": "gradient_vectors",
    "gradient_eigenvalues": "gradient_values",
}


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu").numpy()


def _tensor(array: np.ndarray, engine: EkfacInfluence) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(array), device=engine.device)


class _Checkpoints:
    """Say when partial sums are due to be saved: every ``seconds`` (0 = after every batch)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.last = time.monotonic()

    def due(self) -> bool:
        if time.monotonic() - self.last >= self.seconds:
            self.last = time.monotonic()
            return True
        return False


def classification_metrics(labels: np.ndarray, predictions: np.ndarray, num_labels: int) -> dict:
    """Accuracy, F1 (of class 1 for binary tasks, as sklearn's default; macro otherwise), confusion."""
    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    true_pos = np.diag(confusion).astype(float)
    precision = np.divide(true_pos, confusion.sum(0), out=np.zeros(num_labels), where=confusion.sum(0) > 0)
    recall = np.divide(true_pos, confusion.sum(1), out=np.zeros(num_labels), where=confusion.sum(1) > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(num_labels), where=denominator > 0)
    return {
        "accuracy": float((labels == predictions).mean()),
        "f1": float(f1[1] if num_labels == 2 else f1.mean()),
        "f1_average": "binary (class 1)" if num_labels == 2 else "macro",
        "f1_per_class": f1.tolist(),
        "confusion": confusion.tolist(),
        "count": int(len(labels)),
    }


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
        self.progress = progress
        self.cancel = cancel
        self.config = analysis.config
        self.layout = analysis.layout
        self.path = writer.path
        self.fingerprint = run_fingerprint(analysis.layout)
        budget = cache_budget(analysis.engine) // len(analysis.engines)
        self.caches = {variant: TrainCache(budget) for variant in analysis.engines}

    # ---------------------------------------------------------------- plumbing
    def _report(self, key: str, done: int, total: int, unit: str, message: str = "") -> None:
        report(self.progress, ProgressEvent(key, done, total, unit, message))

    @contextmanager
    def _stage(self, key: str, total: int, unit: str) -> Iterator[None]:
        """Mark ``key`` running, then done, cancelled or failed; a store write error stays itself."""
        self.writer.set_stage(key, "running", total=total, unit=unit)
        self._report(key, self._done_count(key), total, unit)
        try:
            yield
        except Cancelled:
            self.writer.set_stage(key, "cancelled", message="cancelled by the user")
            raise
        except StoreWriteError:
            raise
        except Exception as error:
            self.writer.set_stage(key, "failed", message=f"{type(error).__name__}: {error}"[:200])
            raise
        self.writer.set_stage(key, "done", done=total)
        self._report(key, total, total, unit)

    def _done(self, key: str) -> bool:
        return self.writer.stage(key).status == "done"

    def _done_count(self, key: str) -> int:
        """Units a stage recorded as finished (checkpointed), 0 when it never started."""
        return self.writer.stage(key).done or 0

    # ------------------------------------------------------------- predictions
    def predictions(self) -> None:
        key = STAGE_PREDICTIONS
        if self._done(key):
            return
        # Larger batches than the analysis uses: without a backward pass, bigger is faster.
        tokenizer, data, max_length = self.analysis.loaded.tokenizer, self.analysis.data, self.config.max_length
        batches = {
            "train": tokenized_batches(tokenizer, data.train, None, INFERENCE_BATCH, max_length),
            "test": tokenized_batches(tokenizer, data.test, None, INFERENCE_BATCH, max_length),
        }
        total = sum(len(b) for b in batches.values())
        model = self.analysis.loaded.model
        with self._stage(key, total, "batches"):
            done = 0
            for split, split_batches in batches.items():
                probabilities = []
                for batch in split_batches:
                    check_cancel(self.cancel)
                    inputs = {k: v.to(self.analysis.engine.device) for k, v in batch.items() if "labels" not in k}
                    with torch.no_grad():
                        logits = model(**inputs).logits
                    probabilities.append(torch.softmax(logits.float(), dim=1).cpu())
                    done += 1
                    self._report(key, done, total, "batches")
                probs = torch.cat(probabilities).numpy()
                self.writer.write_predictions(split, probs.argmax(axis=1).astype(np.int64), probs)
                if split == "test":
                    labels = self.layout.test.label
                    self.writer.write_metrics(
                        classification_metrics(labels, probs.argmax(axis=1), len(self.analysis.label_names))
                    )

    # ----------------------------------------------------------------- factors
    def fit(self, variant: str) -> EkfacInfluence:
        """Covariance, eigendecomposition and eigenvalue correction of one factor variant."""
        engine = self.analysis.engines[variant]
        covariance = self._covariance(engine, variant)
        eigen = self._eigendecomposition(engine, variant, covariance)
        covariance = {name: sums.counts_only() for name, sums in covariance.items()}  # stored; free the memory
        eigenvalues = self._eigenvalue_correction(engine, variant, covariance, eigen)
        engine.factors = {
            name: LayerFactors(covariance[name], eigen[name], eigenvalues[name]) for name in engine.layer_names
        }
        return engine

    def _read_covariance(self, engine: EkfacInfluence, variant: str) -> dict[str, CovarianceSums]:
        sums = {}
        for index, name in enumerate(engine.layer_names):
            counts = self.writer.read_factor_counts(variant, index)
            sums[name] = CovarianceSums(
                _tensor(self.writer.read_factor(variant, index, "activation_covariance"), engine),
                _tensor(self.writer.read_factor(variant, index, "gradient_covariance"), engine),
                counts["tokens"],
                counts["examples"],
            )
        return sums

    def _write_covariance(self, engine: EkfacInfluence, variant: str, sums: dict[str, CovarianceSums]) -> None:
        for index, name in enumerate(engine.layer_names):
            self.writer.write_factor(variant, index, "activation_covariance", _numpy(sums[name].activation))
            self.writer.write_factor(variant, index, "gradient_covariance", _numpy(sums[name].gradient))
            self.writer.write_factor_counts(variant, index, sums[name].tokens, sums[name].examples)

    def _pass_options(
        self, key: str, variant: str, checkpoint: Optional[Checkpoint], arrays: Callable[[], dict[str, np.ndarray]]
    ) -> dict:
        """What an accumulating pass over the training data is given: where to start, which labels,
        when to checkpoint, the cache, progress and cancellation."""
        return {
            "start_batch": checkpoint.batches if checkpoint else 0,
            "label_key": LABEL_KEYS[variant],
            "on_batch": self._checkpointer(key, len(self.analysis.train_batches), arrays),
            "cache": self.caches[variant],
            "progress": self._forward(key),
            "cancel": self.cancel,
        }

    def _checkpointer(self, key: str, batches: int, arrays: Callable[[], dict[str, np.ndarray]]):
        """An ``on_batch`` hook saving the running sums (atomically, beside the store) when due."""
        checkpoints = _Checkpoints(self.config.checkpoint_seconds)

        def on_batch(index: int, _: object) -> None:
            if index + 1 < batches and checkpoints.due():
                save_checkpoint(self.path, key, self.fingerprint, index + 1, arrays())
                self.writer.set_stage(key, "running", done=index + 1)

        return on_batch

    def _covariance(self, engine: EkfacInfluence, variant: str) -> dict[str, CovarianceSums]:
        key = stage_key(STAGE_COVARIANCE, variant)
        if self._done(key):
            return self._read_covariance(engine, variant)
        batches = self.analysis.train_batches
        names = engine.layer_names
        checkpoint = load_checkpoint(self.path, key, self.fingerprint)
        sums = engine.new_covariance()
        if checkpoint is not None:
            for name in names:
                counts = checkpoint.arrays[f"{name}/counts"]
                sums[name] = CovarianceSums(
                    _tensor(checkpoint.arrays[f"{name}/activation"], engine),
                    _tensor(checkpoint.arrays[f"{name}/gradient"], engine),
                    int(counts[0]),
                    int(counts[1]),
                )

        def arrays() -> dict[str, np.ndarray]:
            saved = {}
            for name in names:
                saved[f"{name}/activation"] = _numpy(sums[name].activation)
                saved[f"{name}/gradient"] = _numpy(sums[name].gradient)
                saved[f"{name}/counts"] = np.array([sums[name].tokens, sums[name].examples], dtype=np.int64)
            return saved

        with self._stage(key, len(batches), "batches"):
            engine.accumulate_covariance(batches, sums, **self._pass_options(key, variant, checkpoint, arrays))
            self._write_covariance(engine, variant, sums)
        remove_checkpoint(self.path, key)
        return sums

    def _eigendecomposition(
        self, engine: EkfacInfluence, variant: str, covariance: dict[str, CovarianceSums]
    ) -> dict[str, Eigenbasis]:
        key = stage_key(STAGE_EIGEN, variant)
        record = self.writer.stage(key)
        finished = len(engine.layers) if record.status == "done" else self._done_count(key)
        eigen: dict[str, Eigenbasis] = {}
        for index, name in enumerate(engine.layer_names[:finished]):
            eigen[name] = Eigenbasis(
                **{
                    attr: _tensor(self.writer.read_factor(variant, index, field), engine)
                    for field, attr in EIGEN_FIELDS.items()
                }
            )
        if record.status == "done":
            return eigen
        with self._stage(key, len(engine.layers), "layers"):
            for index, name in enumerate(engine.layer_names):
                if name in eigen:
                    continue
                check_cancel(self.cancel)
                basis = Eigenbasis.of(covariance[name], engine.factor_dtype, engine.eigen_precision)
                for field, attr in EIGEN_FIELDS.items():
                    self.writer.write_factor(variant, index, field, _numpy(getattr(basis, attr)))
                eigen[name] = basis
                self.writer.set_stage(key, "running", done=index + 1)
                self._report(key, index + 1, len(engine.layers), "layers", name)
        return eigen

    def _eigenvalue_correction(
        self,
        engine: EkfacInfluence,
        variant: str,
        covariance: dict[str, CovarianceSums],
        eigen: dict[str, Eigenbasis],
    ) -> dict[str, torch.Tensor]:
        key = stage_key(STAGE_CORRECTION, variant)
        record = self.writer.stage(key)
        names = engine.layer_names
        if record.status == "done":
            return {
                name: _tensor(self.writer.read_factor(variant, i, "corrected_eigenvalues"), engine)
                for i, name in enumerate(names)
            }
        batches = self.analysis.train_batches
        if engine.mode == "kfac":
            with self._stage(key, len(names), "layers"):
                values = {name: corrected_eigenvalues("kfac", covariance[name], eigen[name], None) for name in names}
                for index, name in enumerate(names):
                    self.writer.write_factor(variant, index, "corrected_eigenvalues", _numpy(values[name]))
            return values
        checkpoint = load_checkpoint(self.path, key, self.fingerprint)
        sums = engine.new_eigenvalue_sums()
        if checkpoint is not None:
            examples = int(checkpoint.arrays["examples"])
            sums = {name: EigenvalueSums(_tensor(checkpoint.arrays[name], engine), examples) for name in names}

        def arrays() -> dict[str, np.ndarray]:
            saved = {name: _numpy(sums[name].squares) for name in names}
            saved["examples"] = np.int64(sums[names[0]].examples)
            return saved

        with self._stage(key, len(batches), "batches"):
            engine.accumulate_eigenvalues(batches, eigen, sums, **self._pass_options(key, variant, checkpoint, arrays))
            values = {name: corrected_eigenvalues("ekfac", covariance[name], eigen[name], sums[name]) for name in names}
            for index, name in enumerate(names):
                self.writer.write_factor(variant, index, "corrected_eigenvalues", _numpy(values[name]))
        remove_checkpoint(self.path, key)
        return values

    def _forward(self, key: str, offset: int = 0, total: Optional[int] = None) -> Optional[ProgressCallback]:
        """Engine progress events renamed to this run's stage key (variant suffix included), and
        shifted by ``offset`` units of ``total`` when one stage runs several engines in turn."""
        if self.progress is None:
            return None
        progress = self.progress

        def forward(event: ProgressEvent) -> None:
            progress(ProgressEvent(key, event.done + offset, total or event.total, event.unit, event.message))

        return forward

    # ----------------------------------------------------------------- queries
    def queries(self, engines: dict[str, EkfacInfluence]) -> dict[str, Queries]:
        """The test gradients, kept in memory (they are recomputed, not stored, on resume)."""
        key = STAGE_QUERIES
        batches = self.analysis.test_batches
        check_query_memory(self.analysis.engine, len(self.layout.test) * len(engines))
        queries: dict[str, Queries] = {}
        total = len(batches) * len(engines)
        with self._stage(key, total, "batches"):
            for offset, (variant, engine) in enumerate(engines.items()):
                progress = self._forward(key, offset=offset * len(batches), total=total)
                queries[variant] = engine.query_gradients(batches, progress=progress, cancel=self.cancel)
            for variant in self.layout.variants:
                own = self.layout.factor_variant_of(variant)
                values = engines[own].query_self_influence(queries[own], self.layout.regularizations)
                for reg_index in range(len(self.layout.regularizations)):
                    self.writer.write_test_self(variant, reg_index, _numpy(values[reg_index]).astype(np.float32))
        return queries

    # ------------------------------------------------------------------ scores
    def _score_stream(
        self, engines: dict[str, EkfacInfluence], queries: dict[str, Queries], start: int, stop: int
    ) -> Iterator[ScoreBatch]:
        """Training batches [start, stop) scored for every variant (axis 0), in one pass when the
        factors are shared; batch indices stay those of the whole training set, as the cache keys them."""
        regs = self.layout.regularizations
        batches = self.analysis.train_batches[:stop]
        if len(engines) == 1:
            label_keys = [LABEL_KEYS[v] for v in self.layout.variants]
            yield from engines[VARIANT_CLEAN].iter_scores(
                queries[VARIANT_CLEAN],
                batches,
                regs,
                label_keys=label_keys,
                start_batch=start,
                cache=self.caches[VARIANT_CLEAN],
                cancel=self.cancel,
            )
            return
        streams = [
            engines[v].iter_scores(
                queries[v],
                batches,
                regs,
                label_keys=[LABEL_KEYS[v]],
                start_batch=start,
                cache=self.caches[v],
                cancel=self.cancel,
            )
            for v in self.layout.variants
        ]
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
        with self._stage(key, layout.n_train, "examples"):
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
                        per_layer[(variant, k)] = _numpy(layers[v, k]).astype(np.float32)
                        totals[(variant, k)] = _numpy(layers[v, k].sum(dim=0)).astype(np.float32)
                        train_self[(variant, k)] = _numpy(self_influence[v, k]).astype(np.float32)
                self.writer.write_score_block(block, total=totals, layers=per_layer, train_self=train_self)
                done += layers.shape[-1]
                self.writer.set_stage(key, "running", done=done)
                self._report(key, done, layout.n_train, "examples")

    # --------------------------------------------------------------------- all
    def run(self) -> None:
        self.predictions()
        engines = {variant: self.fit(variant) for variant in self.layout.factor_variants}
        if self._done(STAGE_SCORES):
            return
        queries = self.queries(engines)
        self.scores(engines, queries)
