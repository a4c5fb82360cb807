"""The loss of a sequence classifier, seen through the vectors the engine backpropagates.

Every vector the engine needs at the logits is a difference of probability vectors, so it
lies in the sum-zero subspace of R^C: the label gradient p − e_y, the true-Fisher factor
(diag(p) − ppᵀ = BBᵀ has B's columns in that subspace), a sampled label's gradient.
Backpropagating an orthonormal basis P of that subspace (C − 1 vectors, one for binary
classification) therefore gives, by linearity, the token gradients of *any* of them:
g(v) = Σ_j (Pᵀv)_j g(P_j). One backward pass per basis vector serves the Fisher, the
clean labels and the corrupted labels at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
from torch import nn

from job.options import FISHER_KINDS

LABEL_KEY = "labels"


def is_label_key(key: str) -> bool:
    """Batch entries named ``labels`` or ``*_labels`` (e.g. ``corrupted_labels``) are label sets."""
    return key == LABEL_KEY or key.endswith("_" + LABEL_KEY)


def model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The batch without its label sets: what the model is called with."""
    return {k: v for k, v in batch.items() if not is_label_key(k)}


def logits_of(output: Any) -> torch.Tensor:
    """Logits from a model output: a tensor, or an object with ``.logits`` (Hugging Face)."""
    logits = getattr(output, "logits", output)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise TypeError("the model must return (batch, classes) logits or an object with .logits")
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

    def coordinates(self, vectors: torch.Tensor) -> torch.Tensor:
        """Coordinates (…, C−1) of sum-zero vectors (…, C) in the basis."""
        return vectors.to(self.basis.dtype) @ self.basis

    def label_gradient(self, labels: torch.Tensor) -> torch.Tensor:
        """Coordinates (B, C−1) of ∂CE/∂logits = p − e_y."""
        one_hot = nn.functional.one_hot(labels.long(), self.probabilities.shape[1]).to(self.basis.dtype)
        return self.coordinates(self.probabilities.to(self.basis.dtype) - one_hot)

    def fisher_factor(
        self, kind: str, labels: Optional[torch.Tensor], uniforms: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """Coordinates (B, R, C−1) of vectors v_r with Σ_r v_r v_rᵀ the chosen Fisher's logit block.

        ``exact``: the R = C−1 columns of a square root of Pᵀ(diag p − ppᵀ)P, no sampling;
        ``empirical``: R = 1, the true labels' gradient; ``sampled``: R = 1, a label drawn
        from the model's own distribution by inverting its CDF at ``uniforms`` (B,), which
        the caller derives from the seed and each example's position so that the draw does
        not depend on how the data is batched.
        """
        if kind == "exact":
            p = self.probabilities
            hessian = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)
            reduced = self.basis.T @ hessian @ self.basis
            values, vectors = torch.linalg.eigh(reduced)
            root = vectors * values.clamp_min(0).sqrt().unsqueeze(1)  # columns = factor vectors
            return root.transpose(1, 2)
        if kind == "empirical":
            if labels is None:
                raise ValueError("the empirical Fisher needs labels")
            return self.label_gradient(labels).unsqueeze(1)
        if kind == "sampled":
            if uniforms is None:
                raise ValueError("the sampled Fisher needs one uniform number per example")
            cdf = self.probabilities.cumsum(dim=1)
            drawn = (cdf < uniforms.to(cdf).unsqueeze(1)).sum(dim=1).clamp_max(cdf.shape[1] - 1)
            return self.label_gradient(drawn).unsqueeze(1)
        raise ValueError(f"unknown Fisher {kind!r}: choose one of {', '.join(FISHER_KINDS)}")


def logit_vectors(logits: torch.Tensor) -> LogitVectors:
    """Probabilities (in float64, so that a confident prediction keeps its tiny curvature) and the basis."""
    probabilities = torch.softmax(logits.detach().to(torch.float64), dim=1)
    return LogitVectors(probabilities, sum_zero_basis(logits.shape[1], torch.float64, logits.device))
