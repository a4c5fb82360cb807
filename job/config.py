"""What a run is asked to do: the configuration shared by ``--export``, the UI and the store.

Pure Python (no torch): the command line parses and validates it before anything heavy
is imported, so that bad input fails in milliseconds with a one-line message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from job.errors import UserError
from job.options import TASK_CAUSAL_LM, TASK_CLASSIFICATION, EngineOptions

DEMO = "demo"
DEMO_LM = "demo-lm"  # the demo's causal LM, trained on the data's prompts and completions
DEMO_TASKS = {DEMO: TASK_CLASSIFICATION, DEMO_LM: TASK_CAUSAL_LM}
DEFAULT_STORE_NAME = "influence.h5"
CACHE_ENV = "INFLUENCE_EXPLORER_CACHE"  # overrides the user cache folder (tests point it at a temporary one)
DEFAULT_REGULARIZATION = 1e-5
DEFAULT_SWEEP = (1e-9, 1e-7, 1e-5, 1e-3, 1e-1)
SCORE_BLOCK_TARGET = 64  # train examples per scores write (rounded to whole batches)
DEFAULT_CHECKPOINT_SECONDS = 30.0
DEFAULT_MAX_NEW_TOKENS = 16  # a causal LM's greedy completion of each query

# Fields that change the numbers: a store is reused only when all of them match.
# Everything else (device, paths, checkpoint cadence) may differ between runs.
RUNTIME_FIELDS = ("store", "device", "checkpoint_seconds", "preset", "export", "memory_budget", "nproc")


@dataclass
class RunConfig:
    """One analysis: which model, which data, which curvature (``engine``), which regularization values.

    ``seed`` seeds everything random in a run: the subsets, the corruption, the demo model
    and the sampled Fisher's labels.
    """

    model: str = DEMO
    dataset: str = DEMO
    text_column: Optional[str] = None
    label_column: Optional[str] = None
    train_split: str = "train"
    test_split: str = "test"
    num_train: Optional[int] = None
    num_test: Optional[int] = None
    seed: int = 42
    max_length: int = 128
    batch_size: int = 8
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    layers: Optional[list[str]] = None
    engine: EngineOptions = field(default_factory=EngineOptions)
    regularization: float = DEFAULT_REGULARIZATION
    sweep: list[float] = field(default_factory=lambda: list(DEFAULT_SWEEP))
    corrupt: Optional[str] = "all"
    trust_remote_code: bool = False
    preset: Optional[str] = None
    store: Optional[str] = None
    export: Optional[str] = None
    device: str = "auto"
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS
    memory_budget: Optional[int] = None  # bytes for test gradients and the train cache; None: what is free
    nproc: int = 1  # processes (ranks) the engine runs on, through torchrun

    # ----------------------------------------------------------- derived
    @property
    def is_demo_data(self) -> bool:
        return self.dataset == DEMO

    @property
    def regularizations(self) -> list[float]:
        """The sweep with the main value, ascending and without repeats: one scoring pass covers all."""
        return sorted(set(self.sweep) | {self.regularization})

    @property
    def corruption_fraction(self) -> Optional[float]:
        if self.corrupt is None:
            return None
        return 1.0 if self.corrupt == "all" else float(self.corrupt)

    @property
    def variants(self) -> list[str]:
        return ["clean"] if self.corrupt is None else ["clean", "corrupted"]

    @property
    def factor_variants(self) -> list[str]:
        """Labels enter the factors only through the empirical Fisher, so only then is a refit needed."""
        return self.variants if self.engine.fisher == "empirical" else ["clean"]

    @property
    def score_block(self) -> int:
        return self.batch_size * max(1, round(SCORE_BLOCK_TARGET / self.batch_size))

    @property
    def uses_cache_store(self) -> bool:
        """Neither --store nor --export: the store lives in (and belongs to) the user cache."""
        return not self.store and not self.export

    def store_path(self) -> Path:
        """--store, else OUT/influence.h5 with --export, else a folder of the user cache named
        after the analysis settings, so that the UI reopens a finished analysis at once."""
        if self.store:
            return Path(self.store)
        if self.export:
            return Path(self.export) / DEFAULT_STORE_NAME
        settings = json.dumps(self.analysis_settings(), sort_keys=True).encode()
        return cache_root() / "runs" / hashlib.sha256(settings).hexdigest()[:16] / DEFAULT_STORE_NAME

    def analysis_settings(self) -> dict[str, Any]:
        """The fields that determine the numbers, as stored and compared on reuse."""
        data = self.to_dict()
        for name in RUNTIME_FIELDS:
            data.pop(name)
        data["engine"] = self.engine.analysis_settings()
        return data

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if isinstance(values.get("engine"), dict):
            values["engine"] = EngineOptions.from_dict(values["engine"])
        return cls(**values)

    # ------------------------------------------------------- validation
    def validate(self) -> "RunConfig":
        """Refuse what cannot work, with a message that names the option."""
        for name in ("num_train", "num_test"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1 (got {value})")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1 (got {self.batch_size})")
        if self.max_length < 2:
            raise UserError(f"--max-length must be at least 2 (got {self.max_length})")
        if self.max_new_tokens < 1:
            raise UserError(f"--max-new-tokens must be at least 1 (got {self.max_new_tokens})")
        check_regularization(self.regularization, "--regularization")
        if not self.sweep:
            raise UserError("--sweep needs at least one value")
        for value in self.sweep:
            check_regularization(value, "--sweep")
        if self.corrupt is not None and self.corrupt != "all":
            try:
                fraction = float(self.corrupt)
            except ValueError:
                raise UserError(f"--corrupt must be 'all' or a fraction in (0, 1] (got {self.corrupt!r})") from None
            if not 0.0 < fraction <= 1.0:
                raise UserError(f"--corrupt must be 'all' or a fraction in (0, 1] (got {self.corrupt!r})")
        if self.checkpoint_seconds < 0:
            raise UserError("--checkpoint-every must be zero or positive")
        if self.nproc < 1:
            raise UserError(f"--nproc must be at least 1 (got {self.nproc})")
        if self.memory_budget is not None and self.memory_budget < 1:
            raise UserError(f"--memory-budget must be at least one byte (got {self.memory_budget})")
        demo_task = DEMO_TASKS.get(self.model)
        if demo_task is not None and self.engine.task not in (None, demo_task):
            raise UserError(f"--model {self.model} is a {demo_task} model: drop --task {self.engine.task}")
        return self


def cache_root() -> Path:
    """Where the demo models and the UI's analyses live between runs."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("influence-explorer"))


def check_regularization(value: float, option: str) -> None:
    if not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value) or value <= 0:
        raise UserError(f"{option} values must be finite and > 0 (got {value})")


NOTEBOOK_PRESET: dict[str, Any] = {
    "model": "assemblyai/distilbert-base-uncased-sst2",
    "dataset": "imdb",
    "seed": 42,
    "num_train": 100,
    "num_test": 100,
    "max_length": 512,
    "regularization": 1e-5,
    "sweep": [1e-15, 1e-9, 1e-5, 1.0],
    "layers": None,
    "corrupt": "all",
}
PRESETS = {"notebook": NOTEBOOK_PRESET}

# The generated demo corpus (train, test), and the subset sizes when none are given: the
# demo scores its whole train split (so every planted near-duplicate of a test review is
# there to be found) against 100 test reviews; any other data gets the notebook's 100 × 100.
DEMO_CORPUS_SIZE = (2000, 500)
DEMO_SUBSET = (DEMO_CORPUS_SIZE[0], 100)
DEFAULT_SUBSET = (100, 100)


def default_subset(config: RunConfig) -> tuple[int, int]:
    return DEMO_SUBSET if config.is_demo_data else DEFAULT_SUBSET
