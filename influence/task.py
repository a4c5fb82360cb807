"""The tasks: what a model's output is, and which vectors the engine backpropagates from it.

The engine's stages see only a tracked layer's token rows and the output gradients of a
few backward passes per batch. A task says which passes (objectives) a batch needs and,
for each quantity a stage uses — the loss gradient of a label set, the Fisher's vectors —
the coefficients that combine the passes' gradients into it, by linearity:
g(v) = Σ_j c_j g(pass j). The cache, the factors and the scores are the same code for
every task.

* **Classification** (``(batch, classes)`` logits, cross-entropy). Every vector the engine
  needs at the logits is a difference of probability vectors, so it lies in the sum-zero
  subspace of R^C: the label gradient p − e_y, the true-Fisher factor (diag(p) − ppᵀ = BBᵀ
  has B's columns in that subspace), a sampled label's gradient. Backpropagating an
  orthonormal basis P of that subspace (C − 1 passes, one for binary classification)
  therefore gives the token gradients of *any* of them: one capture serves the Fisher,
  the clean labels and the corrupted labels at once.
* **Causal LM** (``(batch, tokens, vocabulary)`` logits). An example's loss is the sum of
  the cross-entropies of its completion tokens: the positions whose ``labels`` are not
  −100, each predicted from the position before (Hugging Face's shift). One pass
  backpropagates that loss: its gradient is the scores' and the empirical Fisher's vector.
  The sampled Fisher adds a pass with one label per completion token drawn from the
  model. A vocabulary-sized basis is out of the question, so a capture serves only the
  label set it was made with; the coefficients are one-hot.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Protocol

import torch
from torch import nn

from job.options import FISHER_KINDS, TASK_CAUSAL_LM, TASK_CLASSIFICATION

LABEL_KEY = "labels"
IGNORE_INDEX = -100  # Hugging Face's label for positions outside the loss (prompt, padding)


def is_label_key(key: str) -> bool:
    """Batch entries named ``labels`` or ``*_labels`` (e.g. ``corrupted_labels``) are label sets."""
    return key == LABEL_KEY or key.endswith("_" + LABEL_KEY)


def model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The batch without its label sets: what the model is called with."""
    return {k: v for k, v in batch.items() if not is_label_key(k)}


def example_seed(seed: int, position: int) -> int:
    """A reproducible 64-bit seed per example position, independent of batching."""
    digest = hashlib.blake2b(f"{seed}:{position}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def example_uniforms(seed: int, start: int, count: int) -> torch.Tensor:
    """One reproducible U(0,1) number per example position, independent of batching."""
    return torch.tensor([example_seed(seed, p) / 2.0**64 for p in range(start, start + count)], dtype=torch.float64)


@dataclass(frozen=True)
class CaptureRequest:
    """What a pass needs from a batch's backward passes: the loss gradient of ``label_key`` when
    ``gradient`` (the scores; a fit asks for it only where a cache may keep the batch for them), and
    the Fisher's vectors when ``fisher``; ``position`` is the batch's first example in its data."""

    label_key: str
    fisher: bool
    fisher_kind: str
    seed: int
    position: int
    gradient: bool = True


class PassVectors(Protocol):
    """The coefficients that turn one capture's backward passes into what a stage uses."""

    @property
    def batch_size(self) -> int: ...

    def serves(self, request: CaptureRequest) -> bool:
        """Whether this capture can answer ``request`` (a cached one may have been made for another)."""

    def label_gradient(self, batch: Mapping[str, Any], label_key: str) -> torch.Tensor:
        """(B, K): the loss gradient of the labels under ``label_key``."""

    def fisher_factor(self, request: CaptureRequest, batch: Mapping[str, Any]) -> torch.Tensor:
        """(B, R, K): vectors v_r with Σ_r v_r v_rᵀ the chosen Fisher's block at the output."""


class Task(Protocol):
    kind: str

    def objectives(
        self, output: Any, batch: Mapping[str, Any], request: CaptureRequest
    ) -> tuple[list[torch.Tensor], PassVectors]:
        """The scalars to backpropagate, one pass each, and how their gradients combine."""

    def cache_names(self, batch: Mapping[str, Any], label_key: str) -> list[str]:
        """The batch entries a capture depends on (what a cache keys it by)."""


# ------------------------------------------------------------------ classification
def classification_logits(output: Any) -> torch.Tensor:
    """Logits from a model output: a tensor, or an object with ``.logits`` (Hugging Face)."""
    logits = getattr(output, "logits", output)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise TypeError("a classifier must return (batch, classes) logits or an object with .logits")
    return logits


def sum_zero_basis(num_classes: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An orthonormal basis (C × (C−1)) of {v ∈ R^C : Σv = 0}, Helmert's."""
    if num_classes < 2:
        raise ValueError("classification needs at least two classes")
    basis = torch.zeros(num_classes, num_classes - 1, dtype=torch.float64)
    for j in range(1, num_classes):
        basis[:j, j - 1] = 1.0
        basis[j, j - 1] = -float(j)
        basis[:, j - 1] /= (j * (j + 1)) ** 0.5
    return basis.to(dtype=dtype, device=device)


@dataclass(frozen=True)
class LogitVectors:
    """What one forward pass tells about a batch, in the coordinates of the basis."""

    probabilities: torch.Tensor  # (B, C) float64
    basis: torch.Tensor  # (C, C−1)

    @property
    def batch_size(self) -> int:
        return self.probabilities.shape[0]

    def serves(self, request: CaptureRequest) -> bool:
        return True  # the basis spans every vector the logits can need

    def coordinates(self, vectors: torch.Tensor) -> torch.Tensor:
        """Coordinates (…, C−1) of sum-zero vectors (…, C) in the basis."""
        return vectors.to(self.basis.dtype) @ self.basis

    def gradient_of(self, labels: torch.Tensor) -> torch.Tensor:
        """Coordinates (B, C−1) of ∂CE/∂logits = p − e_y."""
        one_hot = nn.functional.one_hot(labels.long(), self.probabilities.shape[1]).to(self.basis.dtype)
        return self.coordinates(self.probabilities.to(self.basis.dtype) - one_hot)

    def label_gradient(self, batch: Mapping[str, Any], label_key: str) -> torch.Tensor:
        return self.gradient_of(batch[label_key])

    def fisher_factor(self, request: CaptureRequest, batch: Mapping[str, Any]) -> torch.Tensor:
        """``exact``: the R = C−1 columns of a square root of Pᵀ(diag p − ppᵀ)P, no sampling;
        ``empirical``: R = 1, the true labels' gradient; ``sampled``: R = 1, a label drawn
        from the model's own distribution by inverting its CDF at a uniform number derived
        from the seed and each example's position, so that the draw does not depend on how
        the data is batched."""
        kind = request.fisher_kind
        if kind == "exact":
            p = self.probabilities
            hessian = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)
            reduced = self.basis.T @ hessian @ self.basis
            values, vectors = torch.linalg.eigh(reduced)
            root = vectors * values.clamp_min(0).sqrt().unsqueeze(1)  # columns = factor vectors
            return root.transpose(1, 2)
        if kind == "empirical":
            return self.gradient_of(batch[request.label_key]).unsqueeze(1)
        if kind == "sampled":
            uniforms = example_uniforms(request.seed, request.position, self.batch_size)
            cdf = self.probabilities.cumsum(dim=1)
            drawn = (cdf < uniforms.to(cdf).unsqueeze(1)).sum(dim=1).clamp_max(cdf.shape[1] - 1)
            return self.gradient_of(drawn).unsqueeze(1)
        raise ValueError(f"unknown Fisher {kind!r}: choose one of {', '.join(FISHER_KINDS)}")


def logit_vectors(logits: torch.Tensor) -> LogitVectors:
    """Probabilities (in float64, so that a confident prediction keeps its tiny curvature) and the basis."""
    probabilities = torch.softmax(logits.detach().to(torch.float64), dim=1)
    return LogitVectors(probabilities, sum_zero_basis(logits.shape[1], torch.float64, logits.device))


class ClassificationTask:
    """A sequence classifier: one backward pass per basis vector of the sum-zero logit space."""

    kind = TASK_CLASSIFICATION

    def objectives(
        self, output: Any, batch: Mapping[str, Any], request: CaptureRequest
    ) -> tuple[list[torch.Tensor], LogitVectors]:
        logits = classification_logits(output)
        vectors = logit_vectors(logits)
        basis = vectors.basis.to(logits.dtype)
        return [(logits * basis[:, j]).sum() for j in range(basis.shape[1])], vectors

    def cache_names(self, batch: Mapping[str, Any], label_key: str) -> list[str]:
        return list(model_inputs(batch))  # labels enter only the coefficients


# ------------------------------------------------------------------ causal LM
def lm_logits(output: Any) -> torch.Tensor:
    logits = getattr(output, "logits", output)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise TypeError("a causal LM must return (batch, tokens, vocabulary) logits or an object with .logits")
    return logits


def shifted_targets(labels: torch.Tensor) -> torch.Tensor:
    """(B, T−1): the token each position predicts, −100 where no loss is taken."""
    return labels[:, 1:]


def completion_logits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(completion tokens, V): the logits that predict a completion token, in float32 at least. Only
    these enter the loss, so only these are kept for the backward passes (a small share of B·T·V)."""
    scored = logits[:, :-1][targets != IGNORE_INDEX]
    return scored if scored.dtype in (torch.float32, torch.float64) else scored.float()


def sampled_tokens(scored: torch.Tensor, counts: list[int], seed: int, position: int) -> torch.Tensor:
    """One token per completion position drawn from the model's own distribution there: example i's
    draws come from its own generator (``seed``, ``position + i``) in token order, so they do not depend
    on how the data is batched or padded (they do on the device type, whose generators differ)."""
    with torch.no_grad():
        probabilities = torch.softmax(scored.detach(), dim=-1)
        drawn = []
        for index, rows in enumerate(probabilities.split(counts)):
            generator = torch.Generator(device=rows.device).manual_seed(example_seed(seed, position + index))
            drawn.append(torch.multinomial(rows, 1, generator=generator).squeeze(1) if len(rows) else rows.new_zeros(0))
        return torch.cat(drawn).long()


@dataclass(frozen=True)
class TokenVectors:
    """The passes of one causal-LM capture, by index: the loss of ``label_key`` (``label_pass``) and the
    Fisher's (``fisher_pass``: the same pass for the empirical Fisher); None where it was not captured."""

    batch_size: int
    label_key: str
    passes: int
    label_pass: Optional[int]
    fisher_pass: Optional[int]
    fisher_kind: str

    def serves(self, request: CaptureRequest) -> bool:
        fisher_ok = not request.fisher or (self.fisher_pass is not None and self.fisher_kind == request.fisher_kind)
        gradient_ok = not request.gradient or self.label_pass is not None
        return request.label_key == self.label_key and fisher_ok and gradient_ok

    def _one_hot(self, index: int) -> torch.Tensor:
        coefficients = torch.zeros(self.batch_size, self.passes, dtype=torch.float64)
        coefficients[:, index] = 1.0
        return coefficients

    def label_gradient(self, batch: Mapping[str, Any], label_key: str) -> torch.Tensor:
        if label_key != self.label_key:
            raise ValueError(
                f"this causal-LM batch was captured for {self.label_key!r}, not {label_key!r}: another label set "
                "changes the completion tokens, so it is another batch"
            )
        if self.label_pass is None:
            raise RuntimeError("this batch was captured without its loss gradient")
        return self._one_hot(self.label_pass)

    def fisher_factor(self, request: CaptureRequest, batch: Mapping[str, Any]) -> torch.Tensor:
        if self.fisher_pass is None or self.fisher_kind != request.fisher_kind:
            raise RuntimeError("this batch was captured without the Fisher's pass")
        return self._one_hot(self.fisher_pass).unsqueeze(1)


class CausalLMTask:
    """A causal language model: the loss of the completion tokens, and the sampled Fisher's labels."""

    kind = TASK_CAUSAL_LM

    def objectives(
        self, output: Any, batch: Mapping[str, Any], request: CaptureRequest
    ) -> tuple[list[torch.Tensor], TokenVectors]:
        logits = lm_logits(output)
        labels = batch.get(request.label_key)
        if labels is None or labels.dim() != 2:
            raise ValueError(
                f"a causal-LM batch needs {request.label_key!r}: (batch, tokens), −100 at prompt and padding positions"
            )
        targets = shifted_targets(labels)
        completion = targets != IGNORE_INDEX
        scored = completion_logits(logits, targets)
        kept = targets[completion]
        objectives: list[torch.Tensor] = []
        label_pass = fisher_pass = None
        empirical = request.fisher and request.fisher_kind == "empirical"
        if request.gradient or empirical:
            label_pass = len(objectives)
            objectives.append(nn.functional.cross_entropy(scored, kept, reduction="sum"))
            fisher_pass = label_pass if empirical else None
        if request.fisher and not empirical:
            if request.fisher_kind != "sampled":
                raise ValueError(f"the {request.fisher_kind} Fisher is not available for causal LMs")
            drawn = sampled_tokens(scored, completion.sum(dim=1).tolist(), request.seed, request.position)
            fisher_pass = len(objectives)
            objectives.append(nn.functional.cross_entropy(scored, drawn, reduction="sum"))
        vectors = TokenVectors(
            labels.shape[0], request.label_key, len(objectives), label_pass, fisher_pass, request.fisher_kind
        )
        return objectives, vectors

    def cache_names(self, batch: Mapping[str, Any], label_key: str) -> list[str]:
        return [*model_inputs(batch), label_key]  # the labels decide what was backpropagated


TASK_TYPES: dict[str, type] = {TASK_CLASSIFICATION: ClassificationTask, TASK_CAUSAL_LM: CausalLMTask}


def detect_task(model: nn.Module) -> str:
    """``causal-lm`` for the models transformers loads as causal LMs (``*ForCausalLM``, GPT-2's
    ``GPT2LMHeadModel``…), ``classification`` otherwise."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    name = type(model).__name__
    causal = {value for value in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values() if isinstance(value, str)}
    return TASK_CAUSAL_LM if name in causal or name.endswith("ForCausalLM") else TASK_CLASSIFICATION


def task_of(kind: str) -> Task:
    return TASK_TYPES[kind]()
