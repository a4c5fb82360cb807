"""The engine's options: one frozen dataclass, and the only definition of each choice.

``EkfacInfluence`` takes an :class:`EngineOptions`, ``RunConfig.engine`` holds one, the
command line's choices are read from here, and the store records the options that change
the numbers (:meth:`EngineOptions.analysis_settings`). Pure Python: the dtypes are named,
and the engine maps the names to torch's (``influence.dtypes``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from job.errors import UserError

TASK_CLASSIFICATION, TASK_CAUSAL_LM = "classification", "causal-lm"
TASKS = (TASK_CLASSIFICATION, TASK_CAUSAL_LM)
FISHER_KINDS = ("exact", "sampled", "empirical")
# The Fisher when none is asked for: the true one exactly where it is affordable (a class basis per
# example), a label sampled from the model per token where it is not (a vocabulary per token).
DEFAULT_FISHER = {TASK_CLASSIFICATION: "exact", TASK_CAUSAL_LM: "sampled"}
MODES = ("ekfac", "kfac")
EIGEN_PRECISIONS = ("float64", "float32")
FACTOR_DTYPES = ("float32", "float64")
AUTOCAST_DTYPES = ("bf16",)
DEFAULT_CACHE_BYTES = 2 * 2**30  # token matrices kept between passes over the same training batches

# What a choice is called in messages.
_CHOICES = {
    "task": ("task", TASKS),
    "fisher": ("Fisher", FISHER_KINDS),
    "mode": ("mode", MODES),
    "eigen_precision": ("eigen precision", EIGEN_PRECISIONS),
    "factor_dtype": ("factor dtype", FACTOR_DTYPES),
    "autocast": ("autocast dtype", AUTOCAST_DTYPES),
}
# Other spellings a Python caller may use (torch's dtype names): normalised on construction.
_ALIASES = {"torch.float32": "float32", "torch.float64": "float64", "torch.bfloat16": "bf16", "bfloat16": "bf16"}
# Metadata of the fields that change what a run costs, never what it computes: left out of
# the store's recorded settings, so that another budget can resume the same store.
RUNTIME = {"runtime": True}
# Metadata of a field that stores record only when it is set: stores made before it existed resume unchanged.
WHEN_SET = {"when_set": True}
OPTIONAL = ("task", "fisher", "factor_dtype", "autocast")  # None: detected, or the task's default


class OptionError(UserError, ValueError):
    """An option outside its choices: a ValueError to Python callers, a one-line message on the command line."""

    def __init__(self, name: str, value: object, choices: tuple[str, ...]):
        self.option = name
        label = _CHOICES[name][0]
        super().__init__(f"unknown {label} {value!r}: choose one of {', '.join(choices)}")


class UnsupportedOption(UserError, ValueError):
    """A choice these options cannot have (for this model, or at all): one line, as a UserError."""


@dataclass(frozen=True)
class EngineOptions:
    """How the engine computes: the task, the curvature, the numerics, and what it may keep in memory.

    ``task``: ``classification`` (a ``*ForSequenceClassification``: (batch, classes) logits)
    or ``causal-lm`` (an ``*ForCausalLM``: the summed loss of the completion tokens, the
    positions whose ``labels`` are not -100); None detects it from the model. ``fisher``:
    ``exact`` (the true Fisher, no sampling; classification only), ``sampled`` (labels drawn
    from the model, seeded) or ``empirical`` (the true labels); None is the task's default
    (``DEFAULT_FISHER``). ``mode``: ``ekfac`` or ``kfac``, scaled
    so that a regularization value means the same in both. ``eigen_precision="float32"``
    decomposes in float32 where a residual and orthogonality check passes (else in float64):
    1.7x faster on a CPU, influences 1e-3 to 1e-2 (relative) from float64's. ``factor_dtype``:
    covariances, eigenbases and scores in this dtype (None: the model's). ``autocast``:
    forward passes under autocast in that dtype; factors stay in ``factor_dtype``.
    ``cache_bytes`` bounds what is kept between passes over the same data (captured
    training batches, and as much again of test gradients); 0 keeps nothing, and results are
    identical either way. ``query_bytes`` bounds the test gradients ``influences`` and its kin
    hold at once: the test batches are scored in chunks of rows that fit, each chunk another
    pass over the training batches (None: all at once). ``query_rank`` keeps each test
    gradient, layer by layer, as its best rank-r approximation (a truncated SVD, as
    kronfluence offers): r·(out + in) numbers instead of out·in, each pair's product r times
    the work (None: exact). ``keep_covariance`` keeps A and S after fitting (scoring needs
    only the eigenbases, and the covariances are as large).
    """

    fisher: Optional[str] = None
    mode: str = "ekfac"
    eigen_precision: str = "float64"
    factor_dtype: Optional[str] = None
    autocast: Optional[str] = None
    task: Optional[str] = None
    query_rank: Optional[int] = field(default=None, metadata=WHEN_SET)
    cache_bytes: int = field(default=DEFAULT_CACHE_BYTES, metadata=RUNTIME)
    query_bytes: Optional[int] = field(default=None, metadata=RUNTIME)
    keep_covariance: bool = field(default=False, metadata=RUNTIME)

    def __post_init__(self) -> None:
        for name, (_, choices) in _CHOICES.items():
            value = getattr(self, name)
            if value is None and name in OPTIONAL:
                continue
            value = _ALIASES.get(str(value), value)
            if value not in choices:
                raise OptionError(name, getattr(self, name), choices)
            object.__setattr__(self, name, value)
        if not isinstance(self.cache_bytes, int) or self.cache_bytes < 0:
            raise ValueError(f"cache_bytes must be a whole number of bytes >= 0 (got {self.cache_bytes!r})")
        if self.query_rank is not None and (not isinstance(self.query_rank, int) or self.query_rank < 1):
            raise UnsupportedOption(f"the query rank must be a whole number >= 1 (got {self.query_rank!r})")
        if self.query_bytes is not None and (not isinstance(self.query_bytes, int) or self.query_bytes < 1):
            raise ValueError(f"query_bytes must be None or a whole number of bytes >= 1 (got {self.query_bytes!r})")

    def replace(self, **changes: Any) -> "EngineOptions":
        """These options with ``changes``; an unknown name is a TypeError that lists the known ones."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            known = ", ".join(f.name for f in dataclasses.fields(self))
            raise TypeError(f"unknown engine option {', '.join(sorted(unknown))}: options are {known}")
        return dataclasses.replace(self, **changes)

    def for_task(self, task: str) -> "EngineOptions":
        """These options for ``task``: the task recorded, the Fisher resolved; a Fisher the task cannot
        afford is refused with the reason."""
        if self.task is not None and self.task != task:
            raise UnsupportedOption(f"the model is a {task} model, but the options say task={self.task!r}")
        fisher = self.fisher or DEFAULT_FISHER[task]
        if task == TASK_CAUSAL_LM and fisher == "exact":
            raise UnsupportedOption(
                "the exact Fisher is not available for causal LMs: it sums over the whole vocabulary at every "
                "token (one backward pass per vocabulary entry); use the sampled Fisher (the default) or the "
                "empirical one"
            )
        return dataclasses.replace(self, task=task, fisher=fisher)

    def analysis_settings(self) -> dict[str, Any]:
        """The options that change the numbers, as a store records and compares them."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if not f.metadata.get("runtime") and not (f.metadata.get("when_set") and getattr(self, f.name) is None)
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EngineOptions":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def engine_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The engine options a store's recorded config holds: under ``engine`` (format 1.1), or at
    the top level as format 1.0 recorded them."""
    nested = config.get("engine")
    if isinstance(nested, dict):
        return nested
    return {name: config[name] for name in _CHOICES if name in config}
