"""The curvature of one tracked layer: covariances, eigenbases, corrected eigenvalues.

For a layer with activation rows ā_t (a 1 appended when it has a bias) and output
gradients g_t, example n's weight gradient is DW_n = Σ_t g_t ā_tᵀ. The per-example
Fisher block E_n[vec DW_n vec DW_nᵀ] is approximated as

* K-FAC (expanded over tokens): T̄ · A ⊗ S, with A and S the per-token means of āāᵀ and
  ggᵀ and T̄ the mean number of real tokens per example, so that for one token the
  approximation is exact and a regularization value means the same as in EK-FAC;
* EK-FAC: the same eigenbasis Q_S ⊗ Q_A, with the eigenvalues replaced by the data's
  own second moments in that basis, Λ = E_n[(Q_Sᵀ DW_n Q_A)²].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np
import torch

from influence.capture import LayerTokens, tensor_bytes
from influence.workspace import Workspace
from job.options import EIGEN_PRECISIONS, MODES

EIGEN_DTYPE = torch.float64
# A float32 eigendecomposition is kept only when, on a spread of its eigenvectors, the relative
# residual ‖Aq − λq‖/‖A‖ and the loss of orthogonality |Qᵀq − e| stay below this (float32 on
# a 3072-wide covariance lands near 1e-5); otherwise it is redone in float64.
FLOAT32_EIGEN_TOLERANCE = 1e-4
EIGEN_CHECK_VECTORS = 64  # eigenvectors checked, spread evenly over the spectrum: O(d²) not O(d³)


def combine(
    basis_tensors: list[torch.Tensor], coordinates: torch.Tensor, out: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Σ_j coordinates[b, j] · basis_tensors[j][b]: the quantity for any logit vector, by linearity."""
    shape = (coordinates.shape[0],) + (1,) * (basis_tensors[0].dim() - 1)
    coords = coordinates.to(basis_tensors[0].dtype)
    total = torch.mul(basis_tensors[0], coords[:, 0].reshape(shape), out=out)
    for j in range(1, len(basis_tensors)):
        total.addcmul_(basis_tensors[j], coords[:, j].reshape(shape))
    return total


@dataclass
class CovarianceSums:
    """Running sums over real tokens: Σ āāᵀ, Σ_r g_r g_rᵀ (r over Fisher vectors), and counts.

    The covariance stage ends with :meth:`means`, which is what is decomposed and stored; the
    sums themselves are kept only on request (``keep_covariance``), else just their counts
    (:meth:`counts_only`, K-FAC's T̄).
    """

    activation: Optional[torch.Tensor]
    gradient: Optional[torch.Tensor]
    tokens: int = 0
    examples: int = 0

    def counts_only(self) -> "CovarianceSums":
        return CovarianceSums(None, None, self.tokens, self.examples)

    @classmethod
    def zeros(cls, in_features: int, out_features: int, dtype: torch.dtype, device: torch.device):
        return cls(
            torch.zeros(in_features, in_features, dtype=dtype, device=device),
            torch.zeros(out_features, out_features, dtype=dtype, device=device),
        )

    def add(self, tokens: LayerTokens, fisher: torch.Tensor) -> None:
        """Add a batch; ``fisher`` holds the Fisher vectors' basis coordinates (B, R, C−1)."""
        rows = tokens.real_rows(tokens.activations)
        self.activation.addmm_(rows.T, rows)
        for r in range(fisher.shape[1]):
            grads = tokens.real_rows(combine(tokens.gradients, fisher[:, r]))
            self.gradient.addmm_(grads.T, grads)
        self.tokens += tokens.token_count
        self.examples += tokens.activations.shape[0]

    def means(self) -> "CovarianceMeans":
        """A and S: the sums' symmetric parts over the token count, formed in float64, kept in the sums' dtype."""
        if self.tokens == 0 or self.activation is None or self.gradient is None:
            raise ValueError("no tokens were seen: the covariance is empty")
        scale = 1.0 / self.tokens
        return CovarianceMeans(
            _symmetrized(self.activation, EIGEN_DTYPE, scale).to(self.activation.dtype),
            _symmetrized(self.gradient, EIGEN_DTYPE, scale).to(self.gradient.dtype),
            self.tokens,
            self.examples,
        )

    def state(self) -> dict[str, torch.Tensor]:
        """The running state, for a checkpoint."""
        counts = torch.tensor([self.tokens, self.examples], dtype=torch.int64)
        return {"activation": self.activation, "gradient": self.gradient, "counts": counts}

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Continue from a checkpoint's :meth:`state`."""
        self.activation.copy_(state["activation"])
        self.gradient.copy_(state["gradient"])
        self.tokens, self.examples = (int(count) for count in state["counts"])


@dataclass(frozen=True)
class TokenCounts:
    """The tokens and examples a layer's covariances averaged over: all K-FAC needs of them after the
    eigendecomposition (its T̄, tokens per example)."""

    tokens: int
    examples: int


@dataclass
class CovarianceMeans:
    """A = E[āāᵀ] and S = E[ggᵀ] over real tokens, exactly symmetric, with the counts behind them.

    The store keeps these, and the eigenbases are computed from them, so a run resumed after
    its covariance stage decomposes the very matrices an uninterrupted run does.
    """

    activation: torch.Tensor
    gradient: torch.Tensor
    tokens: int
    examples: int

    @property
    def counts(self) -> TokenCounts:
        return TokenCounts(self.tokens, self.examples)


@dataclass
class Eigenbasis:
    """Eigenvectors (columns) and eigenvalues of the per-token mean covariances A and S."""

    activation_vectors: torch.Tensor
    activation_values: torch.Tensor
    gradient_vectors: torch.Tensor
    gradient_values: torch.Tensor

    @classmethod
    def of(cls, means: CovarianceMeans, dtype: torch.dtype, precision: str = "float64") -> "Eigenbasis":
        """Decompose in float64 whatever the model's dtype (small eigenvalues decide the inverse),
        or, with ``precision="float32"``, in float32 where its residual and orthogonality check
        passes: a speed option whose influences miss float64's by 1e-3 to 1e-2 (docs/benchmarks.md)."""
        a_values, a_vectors = symmetric_eigh(means.activation, precision)
        s_values, s_vectors = symmetric_eigh(means.gradient, precision)
        return cls(a_vectors.to(dtype), a_values.to(dtype), s_vectors.to(dtype), s_values.to(dtype))

    def rotate(self, tokens: LayerTokens, rows: bool = False) -> "RotatedTokens":
        """The batch in this eigenbasis, in the form that is cheaper to use (``rows``: always as
        rotated token rows, which a split of a score over tokens needs).

        Rotating the token matrices, (G Q_S)ᵀ(Ā Q_A), costs T(out² + in² + out·in) per
        example, against out·in·(T + out + in) for forming DW and rotating it; the cheaper
        order is taken (rotate-first whenever sequences are shorter than the layer), and
        rotate-first keeps the rotated token matrices rather than their product: as small
        as the raw ones, where Q_Sᵀ DW Q_A is out·in per example.
        """
        activations = tokens.activations
        _, length, n_in = activations.shape
        n_out = self.gradient_vectors.shape[0]
        rotate_first = length * (n_out * n_out + n_in * n_in + n_out * n_in)
        form_first = n_out * n_in * (length + n_out + n_in)
        if rows or rotate_first <= form_first:
            # Only real tokens are rotated, and kept packed: padding costs neither time nor memory.
            return RotatedTokens(
                self,
                activations=tokens.real_rows(activations) @ self.activation_vectors,
                gradients=[tokens.real_rows(g) @ self.gradient_vectors for g in tokens.gradients],
                counts=tokens.mask.sum(dim=1).tolist(),
            )
        products = [
            self.gradient_vectors.T @ (g.transpose(1, 2) @ activations) @ self.activation_vectors
            for g in tokens.gradients
        ]
        return RotatedTokens(self, products=products)


@dataclass
class RotatedTokens:
    """One layer's batch in an eigenbasis: either its rotated token rows (G Q_S, Ā Q_A) over
    the real tokens, examples one after another, whose per-example products give
    Q_Sᵀ DW Q_A on demand, or those products themselves (B, out, in')."""

    basis: Eigenbasis
    activations: Optional[torch.Tensor] = None  # (real tokens, in')
    gradients: Optional[list[torch.Tensor]] = None  # (real tokens, out), one per basis vector
    counts: Optional[list[int]] = None  # real tokens of each example
    products: Optional[list[torch.Tensor]] = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(B, out, in') of :meth:`combined`."""
        if self.products is not None:
            return tuple(self.products[0].shape)
        return len(self.counts), self.gradients[0].shape[1], self.activations.shape[1]

    def combined(self, coordinates: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Q_Sᵀ DW Q_A (B, out, in') for the logit vector with these basis ``coordinates`` (B, C−1),
        written into ``out`` when given."""
        if self.products is not None:
            return combine(self.products, coordinates, out)
        return per_example_products(self.gradient_rows(coordinates), self.activations, self.counts, out)

    def gradient_rows(self, coordinates: torch.Tensor) -> torch.Tensor:
        """(real tokens, out): each token's rotated output gradient for these basis ``coordinates`` (B, C−1)."""
        repeats = torch.tensor(self.counts, device=coordinates.device)
        return combine(self.gradients, coordinates.repeat_interleave(repeats, dim=0))

    @property
    def nbytes(self) -> int:
        if self.products is not None:
            return tensor_bytes(self.products)
        return tensor_bytes([self.activations, *self.gradients])


def per_example_products(
    gradients: torch.Tensor, activations: torch.Tensor, counts: list[int], out: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Σ_t g_t ā_tᵀ for each example, from token rows packed example after example."""
    result = out if out is not None else gradients.new_empty(len(counts), gradients.shape[1], activations.shape[1])
    if len(set(counts)) <= 1:  # equal lengths: one batched product
        length = counts[0] if counts else 0
        batch = len(counts)
        return torch.bmm(
            gradients.reshape(batch, length, -1).transpose(1, 2), activations.reshape(batch, length, -1), out=result
        )
    for index, (g, a) in enumerate(zip(gradients.split(counts), activations.split(counts))):
        torch.mm(g.T, a, out=result[index])
    return result


def symmetric_eigh(
    matrix: torch.Tensor, precision: str = "float64", scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (clamped at 0: the matrices are covariances) and eigenvectors of the
    symmetric part of ``scale · matrix``."""
    if precision not in EIGEN_PRECISIONS:
        raise ValueError(f"unknown eigendecomposition precision {precision!r}: choose {', '.join(EIGEN_PRECISIONS)}")
    if precision == "float32":
        single = _symmetrized(matrix, torch.float32, scale)
        values, vectors = _eigh(single)
        if eigh_error(single, values, vectors) <= FLOAT32_EIGEN_TOLERANCE:
            return values.clamp_min(0.0), vectors
        del single
    values, vectors = _eigh(_symmetrized(matrix, EIGEN_DTYPE, scale))
    return values.clamp_min(0.0), vectors


def _eigh(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LAPACK's divide-and-conquer ``syevd`` from whichever build is fastest for the dtype.

    On the 2-core benchmark machine, for a 3072-wide covariance: float64 through NumPy
    (OpenBLAS) 2.6 s against torch (MKL) 3.7 s, at the same accuracy; float32 through torch
    1.3 s against NumPy 2.6 s (``docs/benchmarks.md``). On an accelerator, torch's solver.
    """
    if matrix.device.type == "cpu" and matrix.dtype == torch.float64:
        values, vectors = np.linalg.eigh(matrix.numpy())
        return torch.from_numpy(values), torch.from_numpy(vectors)
    return torch.linalg.eigh(matrix)


def eigh_error(matrix: torch.Tensor, values: torch.Tensor, vectors: torch.Tensor) -> float:
    """The largest relative residual and loss of orthogonality over a spread of eigenvectors."""
    size = matrix.shape[0]
    columns = torch.linspace(0, size - 1, min(size, EIGEN_CHECK_VECTORS), device=matrix.device).round().long()
    picked = vectors[:, columns]
    scale = matrix.norm().clamp_min(torch.finfo(matrix.dtype).tiny)
    residual = (matrix @ picked - picked * values[columns]).norm(dim=0).max() / scale
    identity = torch.eye(size, dtype=matrix.dtype, device=matrix.device)[:, columns]
    orthogonality = (vectors.T @ picked - identity).abs().max()
    return float(torch.maximum(residual, orthogonality))


def _symmetrized(matrix: torch.Tensor, dtype: torch.dtype, scale: float) -> torch.Tensor:
    """½(M + Mᵀ)·scale in ``dtype``, in one new matrix: at 3072 wide in float64 each is 75 MB."""
    work = matrix.to(dtype, copy=True)
    return work.add_(matrix.T).mul_(0.5 * scale)


@dataclass
class EigenvalueSums:
    """Running Σ_n Σ_r (Q_Sᵀ DW_n^(r) Q_A)² and the number of examples."""

    squares: torch.Tensor
    examples: int = 0

    @classmethod
    def zeros(cls, out_features: int, in_features: int, dtype: torch.dtype, device: torch.device):
        return cls(torch.zeros(out_features, in_features, dtype=dtype, device=device))

    def state(self) -> dict[str, torch.Tensor]:
        """The running state, for a checkpoint."""
        return {"squares": self.squares, "examples": torch.tensor(self.examples, dtype=torch.int64)}

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Continue from a checkpoint's :meth:`state`."""
        self.squares.copy_(state["squares"])
        self.examples = int(state["examples"])

    def add(self, rotated: RotatedTokens, fisher: torch.Tensor, workspace: Optional[Workspace] = None) -> None:
        for r in range(fisher.shape[1]):
            out = workspace.take("squares", rotated.shape, self.squares) if workspace is not None else None
            self.squares.add_(rotated.combined(fisher[:, r], out).square_().sum(dim=0))
        self.examples += fisher.shape[0]


def corrected_eigenvalues(
    mode: str, counts: Optional[TokenCounts], eigen: Eigenbasis, lam: Optional[EigenvalueSums]
) -> torch.Tensor:
    """The diagonal (out, in') of the layer's Fisher in the Kronecker eigenbasis; K-FAC needs only
    the eigenbasis and ``counts``' tokens per example, EK-FAC the eigenvalue-correction sums."""
    if mode == "kfac":
        mean_tokens = counts.tokens / counts.examples
        return mean_tokens * torch.outer(eigen.gradient_values, eigen.activation_values)
    if mode == "ekfac":
        if lam is None or lam.examples == 0:
            raise ValueError("EK-FAC needs the eigenvalue-correction pass")
        return lam.squares / lam.examples
    raise ValueError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")


@dataclass
class LayerFactors:
    """Everything the scores need for one layer: the eigenbasis and the corrected eigenvalues
    (and the covariance sums, when kept)."""

    eigen: Eigenbasis
    eigenvalues: torch.Tensor  # (out, in'): Λ (EK-FAC) or T̄ λ_S λ_Aᵀ (K-FAC)
    covariance: Optional[CovarianceSums] = None

    def tensors(self) -> list[torch.Tensor]:
        e = self.eigen
        return [e.activation_vectors, e.activation_values, e.gradient_vectors, e.gradient_values, self.eigenvalues]

    def inverse_weights(self, regularization: float, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """1 / (Λ + λ): the damped inverse of the Fisher block, diagonal in the eigenbasis."""
        return torch.add(self.eigenvalues, regularization, out=out).reciprocal_()
