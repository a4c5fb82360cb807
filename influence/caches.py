"""What the engine keeps between calls, so that the same work is never done twice.

* :class:`TrainCache`: the token matrices captured from training batches (raw, or rotated
  into the eigenbasis once a pass has done it), so that the eigenvalue correction and the
  scores skip forward and backward passes over batches the covariance pass has seen.
* :class:`QueryCache`: the rotated gradients of recent query sets, so that scoring one
  test batch against every training batch in a loop computes them once, not once per pair.

Both key batches by their contents (``batch_key``), never by their position, and both
hold only for the model's current weights (``weights_version``) and, for queries, the
current factors: the caches change what a call costs, never what it computes.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Hashable, Iterable, Mapping, Optional

import torch
from torch import nn

from influence.capture import LayerTokens
from influence.factors import Eigenbasis, RotatedTokens
from influence.task import CaptureRequest, PassVectors

if TYPE_CHECKING:
    from influence.ekfac import Queries


def batch_key(batch: Mapping[str, Any], names: Optional[Iterable[str]] = None) -> bytes:
    """A digest of a batch's entries (``names``, default all): their names, dtypes, shapes and values."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(batch if names is None else names):
        value = batch[name]
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):
            digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
            digest.update(value.detach().to("cpu").contiguous().numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.digest()


def weights_version(model: nn.Module) -> tuple[tuple[int, int], ...]:
    """Changes whenever a parameter or buffer is replaced or modified in place (an optimizer step,
    ``load_state_dict``): torch counts in-place writes to each tensor. Writes through ``.data``
    bypass the count; after those, call ``EkfacInfluence.clear_caches()``."""
    tensors = [*model.parameters(), *model.buffers()]
    return tuple((id(tensor), tensor._version) for tensor in tensors)


@dataclass
class CapturedBatch:
    """What one forward/backward pass over a batch gave: per layer its token matrices (raw, or
    once a cache has kept them rotated, in an eigenbasis), and the coefficients of its passes."""

    layers: dict[str, LayerTokens | RotatedTokens]
    vectors: PassVectors

    def raw(self, name: str) -> LayerTokens:
        tokens = self.layers[name]
        if not isinstance(tokens, LayerTokens):
            raise RuntimeError(f"layer {name!r} of this batch was kept only in an eigenbasis")
        return tokens

    def in_basis(self, name: str, basis: Eigenbasis) -> RotatedTokens:
        tokens = self.layers[name]
        if isinstance(tokens, RotatedTokens) and tokens.basis is basis:
            return tokens
        return basis.rotate(self.raw(name))

    def serves(self, bases: Optional[Mapping[str, Eigenbasis]]) -> bool:
        """Whether a pass needing raw tokens (``bases`` None) or these eigenbases can use this batch."""
        return all(
            isinstance(tokens, LayerTokens) or (bases is not None and tokens.basis is bases.get(name))
            for name, tokens in self.layers.items()
        )

    @property
    def nbytes(self) -> int:
        return sum(tokens.nbytes for tokens in self.layers.values())


class TrainCache:
    """Captured training batches up to ``max_bytes``, by content, for one state of the weights.

    The first pass that rotates a cached layer into an eigenbasis keeps the rotated matrices in
    place of the raw ones (the same size), so that the scores do not rotate again. Batches beyond
    the budget are simply captured again; one kept in another eigenbasis than a pass needs is
    dropped and captured again.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: dict[bytes, CapturedBatch] = {}
        self._weights: Optional[Hashable] = None

    def __len__(self) -> int:
        return len(self._entries)

    def bind(self, weights: Hashable) -> None:
        """Serve only captures of these weights (``weights_version``): a change empties the cache."""
        if weights != self._weights:
            self.clear()
            self._weights = weights

    def get(
        self, key: bytes, bases: Optional[Mapping[str, Eigenbasis]] = None, request: Optional[CaptureRequest] = None
    ) -> Optional[CapturedBatch]:
        """The batch under ``key`` if kept in a form a pass needing raw tokens (``bases`` None) or these
        eigenbases can use, and captured for what ``request`` asks (a causal LM's Fisher pass, say)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if not entry.serves(bases) or (request is not None and not entry.vectors.serves(request)):
            self.bytes -= entry.nbytes
            del self._entries[key]
            return None
        return entry

    def has_room(self) -> bool:
        """Whether a batch might still be kept (the budget is not spent)."""
        return self.bytes < self.max_bytes

    def offer(self, key: bytes, entry: CapturedBatch) -> None:
        size = entry.nbytes
        if key not in self._entries and self.bytes + size <= self.max_bytes:
            self._entries[key] = entry
            self.bytes += size

    def keep_rotated(self, key: bytes, entry: CapturedBatch, name: str, rotated: RotatedTokens) -> None:
        """Keep a cached batch's layer in the eigenbasis it was just rotated into."""
        if self._entries.get(key) is not entry or entry.layers[name] is rotated:
            return
        change = rotated.nbytes - entry.layers[name].nbytes
        if self.bytes + change <= self.max_bytes:
            entry.layers[name] = rotated
            self.bytes += change

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0


class QueryCache:
    """The rotated gradients of recent query sets, up to ``max_bytes``, the least recently used
    evicted first: a loop over training batches reuses the latest one at every step.

    ``state`` is what the gradients were computed under (the weights' version and the
    factors'): an entry of another state is never served.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, tuple[Hashable, "Queries"]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return sum(queries.nbytes for _, queries in self._entries.values())

    def get(self, key: bytes, state: Hashable) -> Optional["Queries"]:
        found = self._entries.get(key)
        if found is None or found[0] != state:
            return None
        self._entries.move_to_end(key)
        return found[1]

    def put(self, key: bytes, state: Hashable, queries: "Queries") -> None:
        self._entries.pop(key, None)
        if queries.nbytes > self.max_bytes:
            return
        total = self.bytes + queries.nbytes
        while total > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            total -= evicted.nbytes
        self._entries[key] = (state, queries)

    def clear(self) -> None:
        self._entries.clear()
