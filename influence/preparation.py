"""Preparing a run: the model, the data, the tokenized batches, the engines and the store's layout.

Everything here happens before the store is opened, so that a bad option, a missing
column or an unknown layer fails in seconds, before any file is touched.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from influence.completions import Tokenized, lm_batches, token_table, tokenize_all
from influence.data import (
    CompletionSplit,
    PreparedCompletions,
    PreparedData,
    SplitSelection,
    prepare_completions,
    prepare_data,
)
from influence.distributed import Ranks
from influence.ekfac import EkfacInfluence
from influence.layers import LayerSelectionError
from influence.memory import MemoryPlan, plan_memory
from influence.modeling import (
    LoadedModel,
    hub_offline,
    load_model,
    quiet_libraries,
    resolve_device,
    weights_fingerprint,
)
from influence.task import LABEL_KEY
from job.config import DEMO, DEMO_LM, RunConfig
from job.errors import UserError
from job.options import TASK_CAUSAL_LM
from job.progress import ProgressCallback
from store.layout import VARIANT_CLEAN, VARIANT_CORRUPTED, CompletionTable, ExampleTable, LayerInfo, StoreLayout
from store.schema import target_chunk_rows

CLASSIFICATION_LABEL_KEYS = {VARIANT_CLEAN: LABEL_KEY, VARIANT_CORRUPTED: "corrupted_labels"}


@dataclass
class Analysis:
    """Everything a run needs, prepared before the store is opened.

    ``train_batches`` per variant: a classifier's variants share one list (the corrupted labels
    ride along as ``corrupted_labels``); a causal LM's corrupted variant has other completion
    tokens, so batches of its own, scored under ``labels``.
    """

    config: RunConfig
    loaded: LoadedModel
    data: PreparedData | PreparedCompletions
    label_names: list[str]
    engines: dict[str, EkfacInfluence]  # one per factor variant
    train_batches: dict[str, list[dict[str, torch.Tensor]]]
    test_batches: list[dict[str, torch.Tensor]]
    layout: StoreLayout
    memory: MemoryPlan

    @property
    def engine(self) -> EkfacInfluence:
        return self.engines[VARIANT_CLEAN]

    @property
    def shares_batches(self) -> bool:
        """Whether every variant scores the same batches (a classifier), so one pass serves them all."""
        return not self.layout.is_causal_lm

    def label_key(self, variant: str) -> str:
        return LABEL_KEY if self.layout.is_causal_lm else CLASSIFICATION_LABEL_KEYS[variant]


# --------------------------------------------------------------------- prepare
def tokenized_batches(
    tokenizer, selection: SplitSelection, extra_labels: Optional[np.ndarray], batch_size: int, max_length: int
) -> list[dict[str, torch.Tensor]]:
    """Dynamic padding per batch: the engine ignores padding, so shorter batches cost less."""
    encoded = tokenizer(selection.texts, truncation=True, max_length=max_length)
    features = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    batches = []
    for start in range(0, len(selection), batch_size):
        rows = {k: encoded[k][start : start + batch_size] for k in features}
        batch = dict(tokenizer.pad(rows, return_tensors="pt"))
        batch["labels"] = torch.as_tensor(selection.labels[start : start + batch_size])
        if extra_labels is not None:
            batch["corrupted_labels"] = torch.as_tensor(extra_labels[start : start + batch_size])
        batches.append(batch)
    return batches


def _label_names(loaded: LoadedModel, data: PreparedData) -> list[str]:
    names = loaded.label_names
    generic = all(name == f"LABEL_{i}" for i, name in enumerate(names))
    if generic and data.label_names and len(data.label_names) == len(names):
        return list(data.label_names)
    return names


def _data_fingerprint(layout_tables: tuple[ExampleTable, ExampleTable], config: RunConfig, tokenizer) -> str:
    """What the analysed examples are: texts, labels (or completions and tokens), rows, corruption."""
    digest = hashlib.sha256()
    digest.update(repr((config.max_length, type(tokenizer).__name__, len(tokenizer))).encode())
    for table in layout_tables:
        for text in table.text:
            digest.update(text.encode())
            digest.update(b"\0")
        for array in (table.label, table.dataset_index, table.corrupted_label):
            digest.update(np.ascontiguousarray(array).tobytes())
        if table.completions is not None:
            for column in (table.completions.completion, table.completions.corrupted_completion):
                digest.update("\0".join(column).encode())
            digest.update(table.completions.token_ids.tobytes())
            digest.update(table.completions.completion_mask.tobytes())
    return digest.hexdigest()


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("influence-explorer", "torch", "transformers", "datasets", "h5py", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "unknown"
    return versions


def _load_model_and_data(
    config: RunConfig, device: torch.device, progress: Optional[ProgressCallback], cancel: Optional[threading.Event]
) -> tuple[LoadedModel, PreparedData | PreparedCompletions]:
    task = config.engine.task
    if config.model == DEMO_LM:
        from influence.demo.lm import ensure_demo_lm

        completions = prepare_completions(config, tokenizer=None, include_full_train=True)
        assert completions.full_train is not None
        folder = ensure_demo_lm(
            completions.full_train.examples,
            max_length=config.max_length,
            seed=config.seed,
            progress=progress,
            cancel=cancel,
        )
        return load_model(str(folder), task=TASK_CAUSAL_LM, trust_remote_code=False, device=device), completions
    if config.model != DEMO:
        loaded = load_model(config.model, task=task, trust_remote_code=config.trust_remote_code, device=device)
        if loaded.task == TASK_CAUSAL_LM:
            return loaded, prepare_completions(config, loaded.tokenizer)
        return loaded, prepare_data(config, loaded.num_labels, dict(loaded.model.config.label2id))
    from influence.demo.model import ensure_demo_model

    data = prepare_data(config, None, {}, include_full_train=True)
    assert data.full_train is not None and data.label_names is not None
    folder = ensure_demo_model(
        data.full_train.texts,
        data.full_train.labels,
        data.label_names,
        max_length=config.max_length,
        seed=config.seed,
        progress=progress,
        cancel=cancel,
    )
    return load_model(str(folder), task=task, trust_remote_code=False, device=device), data


def _completion_table(
    split: CompletionSplit, tokenized: list[Tokenized], corrupted_completions: list[str]
) -> CompletionTable:
    ids, mask = token_table(tokenized)
    prompts = [example.prompt for example in split.examples]
    completions = [example.completion for example in split.examples]
    return CompletionTable(prompts, completions, corrupted_completions, ids, mask)


def _classification_parts(
    config: RunConfig, loaded: LoadedModel, data: PreparedData
) -> tuple[dict[str, list], list, ExampleTable, ExampleTable, list[str]]:
    corrupted = data.corrupted_labels if config.corrupt is not None else None
    train = tokenized_batches(loaded.tokenizer, data.train, corrupted, config.batch_size, config.max_length)
    test = tokenized_batches(loaded.tokenizer, data.test, None, config.batch_size, config.max_length)
    tables = (
        ExampleTable(data.train.texts, data.train.labels, data.train.dataset_index, data.corrupted_labels),
        ExampleTable(data.test.texts, data.test.labels, data.test.dataset_index, data.test.labels),
    )
    return {variant: train for variant in config.variants}, test, *tables, _label_names(loaded, data)


def _completion_parts(
    config: RunConfig, loaded: LoadedModel, data: PreparedCompletions, variants: list[str]
) -> tuple[dict[str, list], list, ExampleTable, ExampleTable, list[str]]:
    tokenizer, size, length = loaded.tokenizer, config.batch_size, config.max_length
    train_tokens = tokenize_all(data.train.examples, tokenizer, length)
    test_tokens = tokenize_all(data.test.examples, tokenizer, length)
    batches = {VARIANT_CLEAN: lm_batches(train_tokens, tokenizer.pad_token_id, size)}
    if VARIANT_CORRUPTED in variants:
        corrupted_tokens = tokenize_all(data.corrupted_train, tokenizer, length)
        batches[VARIANT_CORRUPTED] = lm_batches(corrupted_tokens, tokenizer.pad_token_id, size)
    test = lm_batches(test_tokens, tokenizer.pad_token_id, size)
    train_completions = [example.completion for example in data.corrupted_train]
    test_completions = [example.completion for example in data.test.examples]
    n_train, n_test = len(data.train), len(data.test)
    tables = (
        ExampleTable(
            [example.text for example in data.train.examples],
            np.arange(n_train, dtype=np.int64),
            data.train.dataset_index,
            data.donors,
            _completion_table(data.train, train_tokens, train_completions),
        ),
        ExampleTable(
            [example.text for example in data.test.examples],
            np.arange(n_test, dtype=np.int64),
            data.test.dataset_index,
            np.arange(n_test, dtype=np.int64),
            _completion_table(data.test, test_tokens, test_completions),
        ),
    )
    return batches, test, *tables, []


def _check_preset_sources(config: RunConfig) -> None:
    """Offline, say up front which of a preset's hub sources are missing from the cache, and how to get them."""
    from huggingface_hub import try_to_load_from_cache

    quiet_libraries()  # datasets would log its offline fallback attempts on stderr
    missing = []
    if not isinstance(try_to_load_from_cache(config.model, "config.json"), str):
        missing.append(f"the model {config.model} (`hf download {config.model}`)")
    try:
        import datasets

        datasets.load_dataset_builder(config.dataset)
    except Exception:  # any failure here means: not usable offline
        missing.append(
            f"the dataset {config.dataset} (`python -c \"import datasets; datasets.load_dataset('{config.dataset}')\"`)"
        )
    if missing:
        raise UserError(
            f"--preset {config.preset} needs {' and '.join(missing)} from the Hugging Face hub, which is offline "
            "and not in the local cache: run those commands on a connected machine and copy its cache "
            "(~/.cache/huggingface, or set HF_HOME), or pass --model/--dataset with local copies"
        )


def _variants(config: RunConfig, data: PreparedData | PreparedCompletions) -> list[str]:
    """The config's variants; a causal LM's documents have no prompt to keep, so no corrupted variant."""
    if isinstance(data, PreparedCompletions) and data.shape == "documents":
        return [VARIANT_CLEAN]
    return config.variants


def prepare(
    config: RunConfig,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[threading.Event] = None,
    ranks: Optional[Ranks] = None,
) -> Analysis:
    """Load the model and data, choose the layers, tokenize, and describe the store to write;
    ``ranks``: this process's place in a distributed run (and its device), default one process."""
    ranks = ranks or Ranks(device=resolve_device(config.device))
    device = ranks.device
    if config.preset and hub_offline():
        _check_preset_sources(config)
    loaded, data = _load_model_and_data(config, device, progress, cancel)
    variants = _variants(config, data)
    options = config.engine.for_task(loaded.task)  # refuses a --task the model is not
    factor_variants = [v for v in config.factor_variants if v in variants]
    try:
        engines = {
            variant: EkfacInfluence(loaded.model, config.layers, options, seed=config.seed, ranks=ranks)
            for variant in factor_variants
        }
    except LayerSelectionError as error:
        raise UserError(str(error)) from None
    if isinstance(data, PreparedCompletions):
        train_batches, test_batches, train, test, label_names = _completion_parts(config, loaded, data, variants)
    else:
        train_batches, test_batches, train, test, label_names = _classification_parts(config, loaded, data)
    engine = engines[VARIANT_CLEAN]
    memory = plan_memory(list(engines.values()), len(test), config.memory_budget)
    settings = config.analysis_settings()
    # The engine's options as resolved for the model (its task, its Fisher), so that the store says what ran.
    settings.update(
        num_train=len(train),
        num_test=len(test),
        layers=engine.layer_names,
        engine=engine.options.analysis_settings(),
    )
    layout = StoreLayout(
        config=settings,
        library_versions=_library_versions(),
        model_fingerprint=weights_fingerprint(loaded.model),
        data_fingerprint=_data_fingerprint((train, test), config, loaded.tokenizer),
        label_names=label_names,
        layers=[LayerInfo(t.name, t.in_features, t.out_features, t.has_bias, t.kind) for t in engine.layers],
        train=train,
        test=test,
        variants=variants,
        factor_variants=factor_variants,
        regularizations=config.regularizations,
        main_regularization=config.regularization,
        factor_dtype=str(engine.factor_dtype).removeprefix("torch."),
        score_block=config.score_block,
        task=loaded.task,
        query_tile=min(memory.chunk_rows, target_chunk_rows(len(test), len(train), config.score_block)),
    )
    return Analysis(config, loaded, data, label_names, engines, train_batches, test_batches, layout, memory)


# ------------------------------------------------------------------ the stages


def run_fingerprint(layout: StoreLayout) -> str:
    """What a checkpoint must match to be continued: the weights, the data and the settings."""
    settings = json.dumps(layout.config, sort_keys=True)
    return hashlib.sha256(f"{layout.model_fingerprint}:{layout.data_fingerprint}:{settings}".encode()).hexdigest()
