"""Hooks that capture each tracked layer's inputs and output gradients for one batch.

The engine never asks autograd for weight gradients: every parameter is frozen while it
runs, and the first tracked layer's output is turned into a leaf that requires grad, so
the backward pass computes only what flows between tracked layers. Per-example weight
gradients are assembled from the captured token matrices instead, which is cheaper and
keeps examples apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import torch

from influence.layers import TrackedLayer


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class LayerTokens:
    """One layer's token matrices for a batch, padding rows zeroed.

    ``activations``: (B, T, in') with a column of ones appended for the bias;
    ``gradients``: one (B, T, out) tensor per backpropagated basis vector.
    """

    activations: torch.Tensor
    gradients: list[torch.Tensor]
    mask: torch.Tensor  # (B, T), 1 for real tokens
    _rows: Optional[torch.Tensor] = field(default=None, init=False, repr=False)

    @property
    def nbytes(self) -> int:
        return tensor_bytes([self.activations, *self.gradients])

    @property
    def token_count(self) -> int:
        return int(self.mask.sum().item())

    @property
    def padded(self) -> bool:
        return self.token_count < self.mask.numel()

    def _row_index(self) -> torch.Tensor:
        if self._rows is None:
            self._rows = self.mask.reshape(-1).nonzero().squeeze(1)
        return self._rows

    def real_rows(self, matrix: torch.Tensor) -> torch.Tensor:
        """(B, T, d) → (real tokens, d): padding rows cost nothing in the products that follow."""
        flat = matrix.reshape(-1, matrix.shape[-1])
        return flat.index_select(0, self._row_index()) if self.padded else flat

    def scatter(self, rows: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`real_rows`: (real tokens, d) → (B, T, d) with zero padding."""
        batch, length = self.mask.shape
        if not self.padded:
            return rows.reshape(batch, length, -1)
        full = rows.new_zeros(batch * length, rows.shape[-1])
        full.index_copy_(0, self._row_index(), rows)
        return full.reshape(batch, length, -1)


@dataclass
class _Captured:
    inputs: Optional[torch.Tensor] = None
    gradients: list[torch.Tensor] = field(default_factory=list)


class LayerCapture:
    """Context manager: registers the hooks on entry and always removes them on exit."""

    def __init__(self, layers: list[TrackedLayer]):
        self.layers = layers
        self._captured: dict[str, _Captured] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> "LayerCapture":
        for layer in self.layers:
            self._handles.append(layer.module.register_forward_hook(self._forward_hook(layer.name)))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._captured.clear()

    def _forward_hook(self, name: str):
        def hook(module: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
            captured = _Captured(inputs=args[0].detach())
            self._captured[name] = captured
            if not output.requires_grad:
                # The earliest tracked layer: nothing below it needs a gradient. Adding a
                # scalar leaf (rather than making the output itself a leaf) keeps autograd
                # from accumulating into a .grad buffer that would alias the captured gradient.
                anchor = torch.zeros((), dtype=output.dtype, device=output.device, requires_grad=True)
                output = output + anchor
            output.register_hook(lambda grad: captured.gradients.append(grad.detach()))
            return output

        return hook

    def tokens(self, layer: TrackedLayer, attention_mask: Optional[torch.Tensor], dtype: torch.dtype) -> LayerTokens:
        """The captured matrices of ``layer`` as (B, T, ·) tensors in ``dtype`` with padding masked out
        (under autocast the model computes in bf16, the factors are accumulated in ``dtype``)."""
        captured = self._captured.get(layer.name)
        if captured is None or captured.inputs is None:
            raise RuntimeError(f"layer {layer.name!r} was not called in the forward pass")
        if not captured.gradients:
            raise RuntimeError(f"layer {layer.name!r} received no gradient: it does not reach the loss")
        inputs = captured.inputs.to(dtype)
        batch = inputs.shape[0]
        mask = _token_mask(inputs.shape, attention_mask, inputs.device)
        tokens = mask.shape[1]
        activations = inputs.reshape(batch, tokens, layer.in_features)
        if layer.has_bias:
            ones = activations.new_ones(batch, tokens, 1)
            activations = torch.cat([activations, ones], dim=2)
        weights = mask.unsqueeze(2).to(activations.dtype)
        gradients = [g.to(dtype).reshape(batch, tokens, layer.out_features) * weights for g in captured.gradients]
        return LayerTokens(activations * weights, gradients, mask)


def _token_mask(shape: torch.Size, attention_mask: Optional[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Which rows of a layer input are real tokens, shaped (B, T).

    (B, d) inputs (a pooled head) are one row per example; (B, T, d) inputs over the
    sequence follow the attention mask; any other sequence-like shape counts every row.
    """
    batch = shape[0]
    if len(shape) == 2:
        return torch.ones(batch, 1, dtype=torch.bool, device=device)
    rows = 1
    for size in shape[1:-1]:
        rows *= size
    if attention_mask is not None and len(shape) == 3 and tuple(shape[:2]) == tuple(attention_mask.shape):
        return attention_mask.to(device=device, dtype=torch.bool)
    return torch.ones(batch, rows, dtype=torch.bool, device=device)
