"""Which layers the engine tracks, and how it reads their shapes.

EK-FAC needs, per layer, an affine map ``s = W a (+ b)`` applied token by token. Two
module types provide it: ``torch.nn.Linear`` (weight out×in) and Hugging Face's GPT-2
``Conv1D`` (weight in×out). Both may lack a bias (Llama-style), in which case no column
of ones is appended to the activations.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from torch import nn

try:  # transformers is a dependency, but keep the engine usable on plain torch models
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - exercised only without transformers
    Conv1D = None  # type: ignore[assignment,misc]

# The notebook's choice on DistilBERT (FFN + pre_classifier + classifier) and the
# equivalent MLP-and-head layers of other families, keyed by ``config.model_type``. A
# classification head (``score``, ``classifier``) is tracked where there is one; a causal
# LM's output embedding (``lm_head``, vocabulary × width) never by default.
_ENCODER_MLP = (r"\.intermediate\.dense$", r"\.layer\.\d+\.output\.dense$")
_LLAMA_LIKE = (r"\.mlp\.(gate|up|down)_proj$", r"^score$")
DEFAULT_LAYER_PATTERNS: dict[str, tuple[str, ...]] = {
    "distilbert": (r"\.ffn\.lin[12]$", r"^pre_classifier$", r"^classifier$"),
    "bert": _ENCODER_MLP + (r"^bert\.pooler\.dense$", r"^classifier$"),
    "roberta": _ENCODER_MLP + (r"^classifier\.(dense|out_proj)$",),
    "xlm-roberta": _ENCODER_MLP + (r"^classifier\.(dense|out_proj)$",),
    "gpt2": (r"\.mlp\.c_(fc|proj)$", r"^score$"),
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "phi3": (r"\.mlp\.(gate_up|down)_proj$", r"^score$"),
    "gpt_neox": (r"\.mlp\.dense_(h_to_4h|4h_to_h)$", r"^score$"),
    "opt": (r"\.fc[12]$", r"^score$"),
}
# Fallback for families without an entry: every supported layer outside attention blocks.
_ATTENTION_NAME = re.compile(r"attn|attention", re.IGNORECASE)


class LayerSelectionError(ValueError):
    """A requested layer name or pattern cannot be tracked."""


@dataclass(frozen=True)
class TrackedLayer:
    """A module whose curvature block the engine estimates."""

    name: str
    module: nn.Module
    in_features: int
    out_features: int
    has_bias: bool
    kind: str  # "linear" or "conv1d"

    @property
    def augmented_in(self) -> int:
        """Width of the activation vector ā: the inputs plus a 1 for the bias."""
        return self.in_features + int(self.has_bias)

    @property
    def num_parameters(self) -> int:
        return self.out_features * self.augmented_in


def as_tracked(name: str, module: nn.Module) -> Optional[TrackedLayer]:
    """Describe ``module`` as a tracked layer, or return None when it is not a supported linear map."""
    if isinstance(module, nn.Linear):
        return TrackedLayer(name, module, module.in_features, module.out_features, module.bias is not None, "linear")
    if Conv1D is not None and isinstance(module, Conv1D):
        n_in, n_out = module.weight.shape
        return TrackedLayer(name, module, n_in, n_out, module.bias is not None, "conv1d")
    return None


def _model_type(model: nn.Module) -> Optional[str]:
    return getattr(getattr(model, "config", None), "model_type", None)


def default_layer_names(model: nn.Module) -> list[str]:
    """The layers tracked when none are named: the MLP blocks, and the classification head if any."""
    output_embeddings = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    candidates = [
        (name, m)
        for name, m in model.named_modules()
        if as_tracked(name, m) is not None and (output_embeddings is None or m is not output_embeddings)
    ]
    patterns = DEFAULT_LAYER_PATTERNS.get(_model_type(model) or "")
    if patterns is None:
        names = [name for name, _ in candidates if not _ATTENTION_NAME.search(name)]
    else:
        names = [name for name, _ in candidates if any(re.search(p, name) for p in patterns)]
    if not names:
        raise LayerSelectionError(
            "no default layers found in this model: name them with --layers (module names or glob patterns)"
        )
    return names


def _describe(module: nn.Module) -> str:
    return type(module).__name__


def resolve_layers(model: nn.Module, requested: Optional[Sequence[str]] = None) -> list[TrackedLayer]:
    """Turn module names or glob patterns into tracked layers, in the model's own order.

    An exact module name must be a supported linear layer; a glob pattern must match at
    least one. Errors name the offending entry so that a user can fix the command line.
    """
    modules = dict(model.named_modules())
    if requested is None:
        chosen = set(default_layer_names(model))
    else:
        chosen = set()
        for entry in requested:
            if entry in modules:
                if as_tracked(entry, modules[entry]) is None:
                    raise LayerSelectionError(
                        f"layer {entry!r} is a {_describe(modules[entry])}, not a linear layer "
                        "(supported: torch.nn.Linear and transformers' Conv1D)"
                    )
                chosen.add(entry)
                continue
            matches = [n for n in modules if n and fnmatch.fnmatchcase(n, entry)]
            linear = [n for n in matches if as_tracked(n, modules[n]) is not None]
            if not matches:
                raise LayerSelectionError(f"layer pattern {entry!r} matches no module of the model")
            if not linear:
                kinds = sorted({_describe(modules[n]) for n in matches})
                raise LayerSelectionError(
                    f"layer pattern {entry!r} matches only non-linear modules ({', '.join(kinds)})"
                )
            chosen.update(linear)
    return [as_tracked(name, m) for name, m in model.named_modules() if name in chosen]  # type: ignore[misc]
