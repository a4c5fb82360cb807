"""EK-FAC influence functions for sequence classifiers: the engine's public face.

Influence of training example n on test example q, per tracked layer ℓ:

    I_ℓ(q, n) = Σ_ij q̃_ij ñ_ij / (Λ_ij + λ),   x̃ = Q_Sᵀ DW_x Q_A,

the total being the sum over layers (the Fisher is block-diagonal across layers).
Positive means that n helps q: up-weighting n lowers q's loss.

Every method takes one batch or any iterable of batches (a ``DataLoader``, a list) on
either side, and scores every pair in one call. The stages are exposed one by one
(covariance, eigendecomposition, eigenvalue correction, queries, scores); :meth:`fit` is
the one orchestration of the factor stages, for the Python API and, with a journal that
records them in the store, for the resumable pipeline.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Optional, Sequence

import torch
from torch import nn

from influence.batches import Batch, BatchData, as_batches, batch_size, length, row_count, rows_of
from influence.caches import CapturedBatch, QueryCache, TrainCache, batch_key, weights_version
from influence.capture import LayerCapture, tensor_bytes
from influence.distributed import Ranks
from influence.dtypes import torch_dtype
from influence.factors import (
    CovarianceMeans,
    CovarianceSums,
    Eigenbasis,
    EigenvalueSums,
    LayerFactors,
    RotatedTokens,
    TokenCounts,
    corrected_eigenvalues,
    per_example_products,
)
from influence.journal import WHOLE_PASS, FitJournal, PassControl
from influence.layers import TrackedLayer, resolve_layers
from influence.model_state import analysis_mode
from influence.task import LABEL_KEY, CaptureRequest, detect_task, model_inputs, task_of
from influence.workspace import Workspace
from job.options import EngineOptions
from job.progress import ProgressCallback, ProgressEvent, check_cancel, report
from job.stages import STAGE_CORRECTION, STAGE_COVARIANCE, STAGE_EIGEN, STAGE_QUERIES, STAGE_SCORES

LOW_RANK_BYTES = 256 * 2**20  # a low-rank layer's products' temporaries: queries taken in groups that fit
SELF_INFLUENCE_ROWS = 64  # queries whose dense gradients are formed at a time for their self-influence


@dataclass
class Queries:
    """Rotated loss gradients of the test examples, per layer: dense (n_test, out, in') in ``rotated``,
    or, for a layer kept at rank r (``EngineOptions.query_rank``), q̃ ≈ left @ rightᵀ in ``low_rank``
    with left (n_test, out, r) and right (n_test, in', r)."""

    rotated: dict[str, torch.Tensor]
    low_rank: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        for tensor in self.rotated.values():
            return tensor.shape[0]
        return next(iter(self.low_rank.values()))[0].shape[0]

    @property
    def nbytes(self) -> int:
        return tensor_bytes([*self.rotated.values(), *(t for pair in self.low_rank.values() for t in pair)])

    def dense(self, name: str, rows: slice = slice(None)) -> torch.Tensor:
        """Layer ``name``'s q̃ of the queries in ``rows``, (rows, out, in'), formed where it is kept at low rank."""
        if name in self.rotated:
            return self.rotated[name][rows]
        left, right = self.low_rank[name]
        return left[rows] @ right[rows].transpose(1, 2)

    def products(self, name: str, weighted: torch.Tensor) -> torch.Tensor:
        """(m, n_test): m weighted training gradients (m, out, in') against every query of layer ``name``.
        At rank r each product is r contractions, taken for as many queries at a time as LOW_RANK_BYTES allow."""
        if name in self.rotated:
            return weighted.flatten(1) @ self.rotated[name].flatten(1).T
        left, right = self.low_rank[name]
        m, out, inner = weighted.shape
        rank = left.shape[2]
        group = max(1, LOW_RANK_BYTES // (m * out * rank * weighted.element_size()))
        parts = []
        for start in range(0, self.count, group):
            lefts, rights = left[start : start + group], right[start : start + group]  # (g, out, r), (g, in', r)
            projected = weighted @ rights.permute(1, 0, 2).reshape(inner, -1)  # (m, out, g·r)
            parts.append((projected.view(m, out, -1, rank) * lefts.permute(1, 0, 2)).sum(dim=(1, 3)))
        return torch.cat(parts, dim=1)


@dataclass
class ScoreBatch:
    """Scores of every query against one batch of training examples.

    ``layers``: (variants, regularizations, layers, n_test, batch); ``self_influence``:
    (variants, regularizations, batch), the training examples' own Σ ñ²/(Λ+λ), when asked for.
    """

    index: int
    layers: torch.Tensor
    self_influence: Optional[torch.Tensor]

    @property
    def total(self) -> torch.Tensor:
        return self.layers.sum(dim=2)


@dataclass
class TokenShares:
    """How each pair's influence splits over tokens, exactly: the score is linear in either side's
    token rows. ``train``: (n_test, n_train, T_train), the share of each token of the training
    example; ``test``: (n_test, n_train, T_test), of each token of the query; 0 at padding.
    ``pooled``: (n_test, n_train), the share of the layers that read one pooled vector per example
    (a classifier's head), which belongs to no position of its own. On either side,
    Σ_t share + pooled = the pair's influence, summed over the layers."""

    train: torch.Tensor
    test: torch.Tensor
    pooled: torch.Tensor


class _Step(NamedTuple):
    """One batch of a pass: its index, the position of its first example, its capture, the
    batch itself on the engine's device (its labels are read from here, never from a cache),
    and its cache key."""

    index: int
    position: int
    captured: CapturedBatch
    batch: dict[str, Any]
    key: Optional[bytes]


class EkfacInfluence:
    """Fit (E)K-FAC curvature on a classifier and score test × train influence.

    ``options`` (:class:`~job.options.EngineOptions`) says how: the Fisher, EK-FAC or K-FAC,
    the eigendecomposition precision, dtypes, the cache budget. Its fields may also be given
    as keywords, ``EkfacInfluence(model, fisher="empirical", mode="kfac")``, which override
    ``options``. ``layers``: module names or glob patterns (default: the MLP blocks and the
    head). ``seed`` seeds the sampled Fisher's labels. ``ranks``: under torchrun, this process's
    place (``influence.distributed.join``): :meth:`fit` then takes every ``world``-th training batch,
    all-reduces the sums and shares the eigendecompositions, so that every rank ends with the
    factors of the whole data.

    What is computed once is reused while the model's weights and the factors stay as they
    are: the training batches :meth:`fit` captured (for scoring the same batches), and the
    rotated gradients of the latest test sets (for scoring one test batch against many
    training batches in a loop). Both are bounded by ``cache_bytes``; neither changes a result.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Optional[Sequence[str]] = None,
        options: Optional[EngineOptions] = None,
        *,
        seed: int = 0,
        ranks: Optional[Ranks] = None,
        **choices: Any,
    ):
        options = (options or EngineOptions()).replace(**choices)
        self.options = options.for_task(options.task or detect_task(model))
        self.task = task_of(self.options.task)
        self.model = model
        self.layers: list[TrackedLayer] = resolve_layers(model, layers)
        self.seed = seed
        first = next(model.parameters())
        self.ranks = ranks or Ranks(device=first.device)
        self.device = first.device
        self.factor_dtype = torch_dtype(self.options.factor_dtype) if self.options.factor_dtype else first.dtype
        self.autocast_dtype = torch_dtype(self.options.autocast) if self.options.autocast else None
        self.factors: dict[str, LayerFactors] = {}
        self.train_cache = TrainCache(self.options.cache_bytes)
        self.query_cache = QueryCache(self.options.cache_bytes)

    # ------------------------------------------------------------------ basics
    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @property
    def is_fitted(self) -> bool:
        return len(self.factors) == len(self.layers)

    @property
    def tracked_parameters(self) -> int:
        return sum(layer.num_parameters for layer in self.layers)

    def __repr__(self) -> str:
        state = "fitted" if self.is_fitted else "not fitted"
        return (
            f"EkfacInfluence(mode={self.options.mode!r}, fisher={self.options.fisher!r}, layers={len(self.layers)}, "
            f"tracked_parameters={self.tracked_parameters:,}, {state})"
        )

    def clear_caches(self) -> None:
        """Forget captured batches and test gradients (after changing weights through ``.data``,
        which torch does not count as a change)."""
        self.train_cache.clear()
        self.query_cache.clear()

    def _to_device(self, batch: Batch) -> dict[str, Any]:
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def _capture(self, batch: dict[str, Any], request: CaptureRequest) -> CapturedBatch:
        """One forward pass, and one backward pass per objective the task asks for."""
        inputs = model_inputs(batch)
        autocast = torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)
        with LayerCapture(self.layers) as capture:
            with autocast:
                output = self.model(**inputs)
            objectives, vectors = self.task.objectives(output, batch, request)
            for j, objective in enumerate(objectives):
                objective.backward(retain_graph=j < len(objectives) - 1)
            mask = inputs.get("attention_mask")
            tokens = {layer.name: capture.tokens(layer, mask, self.factor_dtype) for layer in self.layers}
        return CapturedBatch(tokens, vectors)

    def _request(self, label_key: str, fisher: bool, position: int, gradient: bool = True) -> CaptureRequest:
        return CaptureRequest(label_key, fisher, self.options.fisher, self.seed, position, gradient)

    def _fisher_vectors(self, step: _Step, label_key: str) -> torch.Tensor:
        return step.captured.vectors.fisher_factor(self._request(label_key, True, step.position), step.batch)

    def _passes(
        self,
        data: BatchData,
        stage: str,
        control: PassControl,
        label_key: str,
        fisher: bool,
        cache: Optional[TrainCache] = None,
        bases: Optional[Mapping[str, Eigenbasis]] = None,
        sharded: bool = False,
    ) -> Iterator[_Step]:
        """The batches from ``control.start_batch`` on (``sharded``: this rank's alone), each captured for
        ``label_key`` (and the Fisher's vectors when ``fisher``) or taken from ``cache`` (when kept raw,
        or in ``bases``, and made for that); after each one, ``control.on_batch`` and a progress event.
        Positions count every batch, so that a sampled label is the same on any number of ranks."""
        batches = as_batches(data)
        total = length(batches)
        position = 0
        if cache is not None:
            cache.bind(weights_version(self.model))
        with analysis_mode(self.model):
            for index, batch in enumerate(batches):
                size = batch_size(batch)
                if index >= control.start_batch and sharded and not self.ranks.owns(index):
                    report(control.progress, ProgressEvent(stage, index + 1, total, "batches"))  # another rank's
                elif index >= control.start_batch:
                    check_cancel(control.cancel)
                    # A fit's pass wants the loss gradient too only where the cache may keep the batch for
                    # the scores (a causal LM's capture serves only what it backpropagated).
                    gradient = not fisher or (cache is not None and cache.has_room())
                    request = self._request(label_key, fisher, position, gradient)
                    key = batch_key(batch, self.task.cache_names(batch, label_key)) if cache is not None else None
                    on_device = self._to_device(batch)
                    captured = cache.get(key, bases, request) if cache is not None else None
                    if captured is None:
                        captured = self._capture(on_device, request)
                        if cache is not None:
                            cache.offer(key, captured)
                    yield _Step(index, position, captured, on_device, key)
                    if control.on_batch is not None:
                        control.on_batch(index)
                    report(control.progress, ProgressEvent(stage, index + 1, total, "batches"))
                position += size

    # ---------------------------------------------------------------- fitting
    def new_covariance(self) -> dict[str, CovarianceSums]:
        return {
            layer.name: CovarianceSums.zeros(layer.augmented_in, layer.out_features, self.factor_dtype, self.device)
            for layer in self.layers
        }

    def accumulate_covariance(
        self,
        data: BatchData,
        sums: Optional[dict[str, CovarianceSums]] = None,
        *,
        label_key: str = LABEL_KEY,
        cache: Optional[TrainCache] = None,
        control: PassControl = WHOLE_PASS,
    ) -> dict[str, CovarianceSums]:
        """Stage 1: Σ āāᵀ and Σ ggᵀ over real tokens, continuing ``sums`` from ``control.start_batch``
        (on several ranks, each rank's batches, then the sums of all)."""
        sums = sums if sums is not None else self.new_covariance()
        for step in self._passes(data, STAGE_COVARIANCE, control, label_key, True, cache, sharded=True):
            fisher = self._fisher_vectors(step, label_key)
            for layer in self.layers:
                sums[layer.name].add(step.captured.raw(layer.name), fisher)
        self.ranks.all_reduce_sums(sums)
        return sums

    def eigendecompose(
        self,
        means: Mapping[str, CovarianceMeans],
        done: Optional[Mapping[str, Eigenbasis]] = None,
        *,
        on_layer: Optional[Callable[[int, str, Eigenbasis], None]] = None,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[threading.Event] = None,
    ) -> dict[str, Eigenbasis]:
        """Stage 2: eigendecompositions of A and S layer by layer, those in ``done`` excepted; on several
        ranks, one layer per rank at a time, each shared from the rank that decomposed it."""
        eigen = dict(done or {})
        todo = [(index, layer) for index, layer in enumerate(self.layers) if layer.name not in eigen]
        for turn in self.ranks.rounds(todo):
            mine = None
            if self.ranks.rank < len(turn):
                check_cancel(cancel)
                name = turn[self.ranks.rank][1].name
                mine = Eigenbasis.of(means[name], self.factor_dtype, self.options.eigen_precision)
            for owner, (index, layer) in enumerate(turn):
                eigen[layer.name] = self.ranks.share(mine, owner)
                if on_layer is not None:
                    on_layer(index, layer.name, eigen[layer.name])
                report(progress, ProgressEvent(STAGE_EIGEN, index + 1, len(self.layers), "layers", layer.name))
        return eigen

    def new_eigenvalue_sums(self) -> dict[str, EigenvalueSums]:
        return {
            layer.name: EigenvalueSums.zeros(layer.out_features, layer.augmented_in, self.factor_dtype, self.device)
            for layer in self.layers
        }

    def accumulate_eigenvalues(
        self,
        data: BatchData,
        eigen: Mapping[str, Eigenbasis],
        sums: Optional[dict[str, EigenvalueSums]] = None,
        *,
        label_key: str = LABEL_KEY,
        cache: Optional[TrainCache] = None,
        control: PassControl = WHOLE_PASS,
    ) -> dict[str, EigenvalueSums]:
        """Stage 3 (EK-FAC): Σ_n (Q_Sᵀ DW_n Q_A)² over the Fisher vectors of every example."""
        sums = sums if sums is not None else self.new_eigenvalue_sums()
        workspace = Workspace()
        for step in self._passes(data, STAGE_CORRECTION, control, label_key, True, cache, eigen, sharded=True):
            fisher = self._fisher_vectors(step, label_key)
            for layer in self.layers:
                sums[layer.name].add(_in_basis(step, layer.name, eigen[layer.name], cache), fisher, workspace)
        self.ranks.all_reduce_sums(sums)
        return sums

    def set_factors(
        self,
        eigen: Mapping[str, Eigenbasis],
        eigenvalues: Mapping[str, torch.Tensor],
        covariance: Optional[Mapping[str, CovarianceSums]] = None,
    ) -> None:
        """Install fitted (or stored) factors: the eigenbases and the corrected eigenvalues (and,
        to keep them at hand, the covariance sums)."""
        self.factors = {
            name: LayerFactors(eigen[name], eigenvalues[name], None if covariance is None else covariance[name])
            for name in self.layer_names
        }
        self.query_cache.clear()  # gradients rotated into the old bases

    def fit(
        self,
        data: BatchData,
        *,
        journal: Optional[FitJournal] = None,
        label_key: str = LABEL_KEY,
        cache: Optional[TrainCache] = None,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[threading.Event] = None,
    ) -> "EkfacInfluence":
        """Every factor stage on ``data`` (one batch, a loader or any iterable of batches).

        The captured token matrices are kept (up to ``cache_bytes``) for the eigenvalue
        correction and for scoring the same training batches afterwards. ``journal`` is where
        the stages are recorded and found done (the pipeline's store); by default nowhere.
        """
        journal = journal if journal is not None else FitJournal()
        cache = self.train_cache if cache is None else cache
        cache.clear()  # batches of an earlier fit would hold the budget
        need_eigen = not journal.finished(STAGE_EIGEN)
        need_values = not journal.finished(STAGE_CORRECTION)
        sums: Optional[dict[str, CovarianceSums]] = None
        means = None
        if need_eigen or (need_values and self.options.mode == "kfac"):
            if journal.finished(STAGE_COVARIANCE):
                means = journal.covariance()
            else:
                sums = self.new_covariance()
                with journal.stage(STAGE_COVARIANCE, length(as_batches(data)), "batches"):
                    control = _journaled(journal, STAGE_COVARIANCE, sums, progress, cancel)
                    self.accumulate_covariance(data, sums, label_key=label_key, cache=cache, control=control)
                    means = self._means(sums)
                    journal.covariance_done(means)
        counts = None if means is None else {name: layer_means.counts for name, layer_means in means.items()}
        eigen = journal.eigenbases()
        if need_eigen:

            def decomposed(index: int, name: str, basis: Eigenbasis) -> None:
                del means[name]  # A and S are let go as soon as their layer's basis is there
                journal.basis_done(index, name, basis)

            with journal.stage(STAGE_EIGEN, len(self.layers), "layers"):
                eigen = self.eigendecompose(means, eigen, on_layer=decomposed, progress=progress, cancel=cancel)
        if need_values:
            values = self._corrected_eigenvalues(data, counts, eigen, journal, label_key, cache, progress, cancel)
        else:
            values = journal.eigenvalues()
        self.set_factors(eigen, values, sums if self.options.keep_covariance else None)
        return self

    def _means(self, sums: dict[str, CovarianceSums]) -> dict[str, CovarianceMeans]:
        """Each layer's means; its sums' matrices are let go as soon as it has them, unless kept."""
        means = {}
        for name, layer_sums in sums.items():
            means[name] = layer_sums.means()
            if not self.options.keep_covariance:
                sums[name] = layer_sums.counts_only()
        return means

    def _corrected_eigenvalues(
        self,
        data: BatchData,
        counts: Optional[Mapping[str, TokenCounts]],
        eigen: Mapping[str, Eigenbasis],
        journal: FitJournal,
        label_key: str,
        cache: TrainCache,
        progress: Optional[ProgressCallback],
        cancel: Optional[threading.Event],
    ) -> dict[str, torch.Tensor]:
        """Stage 3: EK-FAC's pass over the data, or K-FAC's products of eigenvalues (no pass)."""
        mode = self.options.mode
        if mode == "kfac":
            with journal.stage(STAGE_CORRECTION, len(self.layers), "layers"):
                values = {
                    name: corrected_eigenvalues(mode, counts[name], eigen[name], None) for name in self.layer_names
                }
                journal.eigenvalues_done(values)
            return values
        sums = self.new_eigenvalue_sums()
        with journal.stage(STAGE_CORRECTION, length(as_batches(data)), "batches"):
            control = _journaled(journal, STAGE_CORRECTION, sums, progress, cancel)
            self.accumulate_eigenvalues(data, eigen, sums, label_key=label_key, cache=cache, control=control)
            values = {name: corrected_eigenvalues(mode, None, eigen[name], sums[name]) for name in self.layer_names}
            journal.eigenvalues_done(values)
        return values

    # ---------------------------------------------------------------- scoring
    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("call fit() (or set_factors()) before computing influences")

    def _bases(self) -> dict[str, Eigenbasis]:
        return {name: factors.eigen for name, factors in self.factors.items()}

    def _kept_rank(self, layer: TrackedLayer) -> Optional[int]:
        """The rank a layer's query gradients are kept at: ``query_rank`` where that is smaller than dense."""
        rank = self.options.query_rank
        out, inner = layer.out_features, layer.augmented_in
        return rank if rank is not None and rank * (out + inner) < out * inner else None

    @property
    def query_row_bytes(self) -> int:
        """What one test example's gradients take, every tracked layer (at ``query_rank`` where it saves)."""
        numbers = 0
        for layer in self.layers:
            rank = self._kept_rank(layer)
            out, inner = layer.out_features, layer.augmented_in
            numbers += out * inner if rank is None else rank * (out + inner)
        return numbers * torch.empty((), dtype=self.factor_dtype).element_size()

    def query_gradients(
        self, data: BatchData, *, label_key: str = LABEL_KEY, control: PassControl = WHOLE_PASS
    ) -> Queries:
        """Stage 4: the test examples' rotated loss gradients q̃, kept for every train batch (at rank
        ``query_rank`` by a truncated SVD of each, where that is smaller)."""
        self._require_fitted()
        bases = self._bases()
        parts: dict[str, list[Any]] = {name: [] for name in self.layer_names}
        ranks = {layer.name: self._kept_rank(layer) for layer in self.layers}
        for step in self._passes(data, STAGE_QUERIES, control, label_key, False):
            coordinates = step.captured.vectors.label_gradient(step.batch, label_key)
            for name in self.layer_names:
                gradients = step.captured.in_basis(name, bases[name]).combined(coordinates)
                parts[name].append(gradients if ranks[name] is None else _truncated(gradients, ranks[name]))
        # Layer by layer, letting each layer's parts go once joined: the test gradients are the
        # largest thing a run holds, and joining them all before freeing any would double them.
        queries = Queries({})
        for name in self.layer_names:
            layer_parts = parts.pop(name)
            if ranks[name] is None:
                queries.rotated[name] = _joined(layer_parts)
            else:
                queries.low_rank[name] = (_joined([p[0] for p in layer_parts]), _joined([p[1] for p in layer_parts]))
        return queries

    def query_self_influence(self, queries: Queries, regularizations: Sequence[float]) -> torch.Tensor:
        """(regularizations, n_test): each test example's Σ q̃²/(Λ+λ), summed over layers (a low-rank
        layer's q̃ formed for SELF_INFLUENCE_ROWS queries at a time)."""
        self._require_fitted()
        totals = torch.zeros(len(regularizations), queries.count, dtype=self.factor_dtype, device=self.device)
        for name in self.layer_names:
            weights = [self.factors[name].inverse_weights(reg) for reg in regularizations]
            for start in range(0, queries.count, SELF_INFLUENCE_ROWS):
                rows = slice(start, start + SELF_INFLUENCE_ROWS)
                squares = queries.dense(name, rows).square()
                for k, weight in enumerate(weights):
                    totals[k, rows] += (squares * weight).flatten(1).sum(1)
        return totals

    def iter_scores(
        self,
        queries: Queries,
        data: BatchData,
        regularizations: Sequence[float],
        *,
        label_keys: Sequence[str] = (LABEL_KEY,),
        cache: Optional[TrainCache] = None,
        with_self_influence: bool = True,
        control: PassControl = WHOLE_PASS,
    ) -> Iterator[ScoreBatch]:
        """Stage 5: one pass over the training data, yielding every query's scores batch by batch.

        Each training label set in ``label_keys`` is a variant (clean, corrupted…); all
        variants and all regularization values come from the same forward/backward pass.
        The training examples' self-influence costs a pass over their gradients of its own:
        ``with_self_influence=False`` skips it.
        """
        self._require_fitted()
        bases = self._bases()
        workspace = Workspace()
        for step in self._passes(data, STAGE_SCORES, control, label_keys[0], False, cache, bases):
            size = step.captured.vectors.batch_size
            shape = (len(label_keys), len(regularizations))
            layers = torch.zeros(
                *shape, len(self.layers), queries.count, size, dtype=self.factor_dtype, device=self.device
            )
            self_influence = (
                torch.zeros(*shape, size, dtype=self.factor_dtype, device=self.device) if with_self_influence else None
            )
            coordinates = [step.captured.vectors.label_gradient(step.batch, key) for key in label_keys]
            # Layer by layer, so that only one layer's per-example gradients are alive at a time;
            # every λ at once, (λ, batch, parameters), so that a sweep adds no Python-level work.
            for layer_index, name in enumerate(self.layer_names):
                rotated = _in_basis(step, name, bases[name], cache)
                eigenvalues = self.factors[name].eigenvalues
                parameters = eigenvalues.numel()
                # 1/(Λ+λ) again for every batch: keeping it for every layer would hold another
                # λ-count copies of the tracked parameters, and it costs two passes over one layer.
                inverse = workspace.take("inverse", (len(regularizations), parameters), eigenvalues)
                for k, reg in enumerate(regularizations):
                    self.factors[name].inverse_weights(reg, out=inverse[k].view_as(self.factors[name].eigenvalues))
                for v, coords in enumerate(coordinates):
                    buffer = workspace.take("gradients", rotated.shape, eigenvalues)
                    gradients = rotated.combined(coords, buffer).flatten(1)
                    weighted = workspace.take("weighted", (len(regularizations), size, parameters), eigenvalues)
                    torch.mul(gradients.unsqueeze(0), inverse.unsqueeze(1), out=weighted)  # (λ, batch, parameters)
                    # One product reading the queries once: (λ·batch, P) @ (P, n_test).
                    products = queries.products(name, weighted.view(-1, *eigenvalues.shape))
                    layers[v, :, layer_index] = products.reshape(len(regularizations), size, -1).transpose(1, 2)
                    if self_influence is not None:
                        self_influence[v] += weighted.mul_(gradients).sum(dim=2)
            yield ScoreBatch(step.index, layers, self_influence)

    # ---------------------------------------------------- pyDVL-style helpers
    def _cached_queries(self, test: BatchData) -> Queries:
        """The test side's gradients, computed once per distinct test set while the weights and
        factors stay as they are: a loop scoring one test batch against each training batch
        in turn computes them once, not once per pair. A loader is read once, so that a
        shuffled one gives the scores in the order its gradients were taken."""
        batches = list(as_batches(test))
        digest = hashlib.blake2b(digest_size=16)
        for batch in batches:
            digest.update(batch_key(batch))
        key = digest.digest()
        state = (weights_version(self.model), _factors_version(self.factors))
        queries = self.query_cache.get(key, state)
        if queries is None:
            queries = self.query_gradients(batches)
            self.query_cache.put(key, state, queries)
        return queries

    def _query_chunks(self, test: BatchData) -> list[list[Batch]]:
        """The test batches in chunks of rows whose gradients fit ``options.query_bytes`` (one chunk without it)."""
        batches = list(as_batches(test))
        if self.options.query_bytes is None:
            return [batches]
        rows, total = max(1, self.options.query_bytes // self.query_row_bytes), row_count(batches)
        return [rows_of(batches, start, min(start + rows, total)) for start in range(0, total, rows)]

    def _score_matrix(self, test: BatchData, train: BatchData, regularizations: Sequence[float]) -> torch.Tensor:
        """(regularizations, layers, n_test, n_train) for the clean labels, chunk by chunk of test rows."""
        chunks = self._query_chunks(test)
        if len(chunks) > 1 and iter(train) is train:
            raise ValueError("query_bytes scores the test set in chunks, each a pass over train: pass a list or loader")
        parts = []
        for chunk in chunks:  # several chunks: each one's gradients are let go, never cached
            queries = self._cached_queries(chunk) if len(chunks) == 1 else self.query_gradients(chunk)
            scores = self.iter_scores(
                queries, train, regularizations, cache=self.train_cache, with_self_influence=False
            )
            parts.append(torch.cat([block.layers[0] for block in scores], dim=-1))
            del queries
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-2)

    def influences(self, test: BatchData, train: BatchData, regularization: float = 1e-5) -> torch.Tensor:
        """(n_test, n_train): the influence of each training example on each test example.

        ``test`` and ``train`` are each one batch or an iterable of batches (a ``DataLoader``,
        a list): pass whole loaders to score every pair in one call, rows and columns in the
        loaders' order. Positive: the training example helps (lowers the test example's loss).
        """
        return self._score_matrix(test, train, [regularization])[0].sum(dim=0)

    def influences_by_layer(
        self, test: BatchData, train: BatchData, regularization: float = 1e-5
    ) -> dict[str, torch.Tensor]:
        """{layer name: (n_test, n_train)}, batches or loaders on either side as in :meth:`influences`;
        the layers sum to :meth:`influences`."""
        scores = self._score_matrix(test, train, [regularization])[0]
        return dict(zip(self.layer_names, scores))

    def explore_hessian_regularization(
        self, test: BatchData, train: BatchData, regularizations: Sequence[float]
    ) -> dict[float, dict[str, torch.Tensor]]:
        """{λ: {layer: (n_test, n_train)}} for every λ from a single pass over ``train``; batches or
        loaders on either side as in :meth:`influences`."""
        scores = self._score_matrix(test, train, list(regularizations))
        return {reg: dict(zip(self.layer_names, by_layer)) for reg, by_layer in zip(regularizations, scores)}

    def token_shares(
        self, test: Batch, train: Batch, regularization: float = 1e-5, *, label_key: str = LABEL_KEY
    ) -> TokenShares:
        """Every pair of one test batch and one training batch, its influence split over the tokens of
        either side (positions as in each batch's ``input_ids``): why a training example matters,
        word by word. Per layer, a training token t of n gives g̃_tᵀ (q̃ ∘ 1/(Λ+λ)) ã_t, its rotated
        output gradient and input, and a query token the same against ñ."""
        self._require_fitted()
        queries, examples = self._token_rows(test, label_key), self._token_rows(train, label_key)
        q_count, n_count = len(test["input_ids"]), len(train["input_ids"])
        shares = TokenShares(
            torch.zeros(q_count, n_count, train["input_ids"].shape[1], dtype=self.factor_dtype, device=self.device),
            torch.zeros(q_count, n_count, test["input_ids"].shape[1], dtype=self.factor_dtype, device=self.device),
            torch.zeros(q_count, n_count, dtype=self.factor_dtype, device=self.device),
        )
        for name in self.layer_names:
            weights = self.factors[name].inverse_weights(regularization)
            (q_tokens, q_grads, q_acts, q_counts), (n_tokens, n_grads, n_acts, n_counts) = queries[name], examples[name]
            q_tilde = per_example_products(q_grads, q_acts, q_counts).mul_(weights)  # q̃ ∘ W: (Q, out, in')
            if n_tokens.mask.shape[1] != shares.train.shape[2]:  # one pooled vector per example
                shares.pooled += torch.einsum("qoi,noi->qn", q_tilde, per_example_products(n_grads, n_acts, n_counts))
                continue
            n_tilde = per_example_products(n_grads, n_acts, n_counts).mul_(weights)  # ñ ∘ W: (N, out, in')
            per_train = torch.einsum("ro,qoi,ri->rq", n_grads, q_tilde, n_acts)  # (training rows, Q)
            per_test = torch.einsum("ro,noi,ri->rn", q_grads, n_tilde, q_acts)  # (test rows, N)
            shares.train += n_tokens.scatter(per_train).permute(2, 0, 1)  # (Q, N, T_train)
            shares.test += q_tokens.scatter(per_test).permute(0, 2, 1)  # (Q, N, T_test)
        return shares

    def _token_rows(self, batch: Batch, label_key: str) -> dict[str, tuple[Any, torch.Tensor, torch.Tensor, list[int]]]:
        """Per layer: the batch's token positions, and its rotated gradient and input rows over the real tokens."""
        rows = {}
        with analysis_mode(self.model):
            on_device = self._to_device(batch)
            captured = self._capture(on_device, self._request(label_key, False, 0))
            coordinates = captured.vectors.label_gradient(on_device, label_key)
        for layer in self.layers:
            tokens = captured.raw(layer.name)
            rotated = self.factors[layer.name].eigen.rotate(tokens, rows=True)
            rows[layer.name] = (tokens, rotated.gradient_rows(coordinates), rotated.activations, rotated.counts)
        return rows

    def self_influences(self, data: BatchData, regularization: float = 1e-5) -> torch.Tensor:
        """(n,): each example's influence on itself, ∇Lᵀ(F + λI)⁻¹∇L; one batch or an iterable of batches."""
        self._require_fitted()
        empty = Queries({layer.name: self._empty_query(layer) for layer in self.layers})
        scores = self.iter_scores(empty, data, [regularization], cache=self.train_cache)
        return torch.cat([b.self_influence[0, 0] for b in scores])

    def _empty_query(self, layer: TrackedLayer) -> torch.Tensor:
        return torch.zeros(0, layer.out_features, layer.augmented_in, dtype=self.factor_dtype, device=self.device)


def _factors_version(factors: Mapping[str, LayerFactors]) -> tuple[tuple[int, int], ...]:
    """Changes when a layer's factors are replaced or modified in place (as ``weights_version``)."""
    return tuple((id(t), t._version) for layer in factors.values() for t in layer.tensors())


def _journaled(
    journal: FitJournal,
    stage: str,
    sums: Mapping[str, Any],
    progress: Optional[ProgressCallback],
    cancel: Optional[threading.Event],
) -> PassControl:
    """A pass that starts where ``journal`` has ``sums`` checkpointed and tells it of every batch."""
    start = journal.resume(stage, sums)
    return PassControl(start, lambda index: journal.batch_done(stage, index, sums), progress, cancel)


def _in_basis(step: _Step, name: str, basis: Eigenbasis, cache: Optional[TrainCache]) -> RotatedTokens:
    """A layer of a training batch in ``basis``; a cached batch keeps it so, in place of its raw tokens."""
    rotated = step.captured.in_basis(name, basis)
    if cache is not None:
        cache.keep_rotated(step.key, step.captured, name, rotated)
    return rotated


def _truncated(gradients: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each example's best rank-``rank`` approximation, (B, out, in') ≈ left @ rightᵀ: left (B, out, r)
    with the singular values in it, right (B, in', r). From the eigenvectors of the smaller Gram
    matrix (in float64), not a full SVD: the same top singular vectors at a matrix product's cost
    (a full SVD of every 1376 × 513 query gradient took 6× the whole scoring time on the LM workload)."""
    flipped = gradients.shape[1] < gradients.shape[2]
    tall = gradients.transpose(1, 2) if flipped else gradients  # (B, m, n), n ≤ m
    gram = (tall.transpose(1, 2) @ tall).double()
    _, vectors = torch.linalg.eigh(gram)  # ascending
    basis = vectors[..., -rank:].to(tall.dtype)  # (B, n, r): the top right singular vectors
    projected = tall @ basis  # (B, m, r): U Σ
    return (basis, projected) if flipped else (projected, basis)


def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)
