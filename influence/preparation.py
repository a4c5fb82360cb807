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

from influence.data import PreparedData, SplitSelection, prepare_data
from influence.ekfac import EkfacInfluence
from influence.layers import LayerSelectionError
from influence.modeling import (
    LoadedModel,
    hub_offline,
    load_classifier,
    quiet_libraries,
    resolve_device,
    weights_fingerprint,
)
from job.config import DEMO, RunConfig
from job.errors import UserError
from job.progress import ProgressCallback
from store.layout import VARIANT_CLEAN, ExampleTable, LayerInfo, StoreLayout


@dataclass
class Analysis:
    """Everything a run needs, prepared before the store is opened."""

    config: RunConfig
    loaded: LoadedModel
    data: PreparedData
    label_names: list[str]
    engines: dict[str, EkfacInfluence]  # one per factor variant
    train_batches: list[dict[str, torch.Tensor]]
    test_batches: list[dict[str, torch.Tensor]]
    layout: StoreLayout

    @property
    def engine(self) -> EkfacInfluence:
        return self.engines[VARIANT_CLEAN]


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


def _data_fingerprint(data: PreparedData, config: RunConfig, tokenizer) -> str:
    digest = hashlib.sha256()
    digest.update(repr((config.max_length, type(tokenizer).__name__, len(tokenizer))).encode())
    for selection in (data.train, data.test):
        for text in selection.texts:
            digest.update(text.encode())
            digest.update(b"\0")
        digest.update(selection.labels.tobytes())
        digest.update(selection.dataset_index.tobytes())
    digest.update(data.corrupted_labels.tobytes())
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
) -> tuple[LoadedModel, PreparedData]:
    if config.model != DEMO:
        loaded = load_classifier(config.model, trust_remote_code=config.trust_remote_code, device=device)
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
    return load_classifier(str(folder), trust_remote_code=False, device=device), data


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


def prepare(
    config: RunConfig,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[threading.Event] = None,
) -> Analysis:
    """Load the model and data, choose the layers, tokenize, and describe the store to write."""
    device = resolve_device(config.device)
    if config.preset and hub_offline():
        _check_preset_sources(config)
    loaded, data = _load_model_and_data(config, device, progress, cancel)
    try:
        engines = {
            variant: EkfacInfluence(loaded.model, config.layers, config.engine, seed=config.seed)
            for variant in config.factor_variants
        }
    except LayerSelectionError as error:
        raise UserError(str(error)) from None
    corrupted = data.corrupted_labels if config.corrupt is not None else None
    train_batches = tokenized_batches(loaded.tokenizer, data.train, corrupted, config.batch_size, config.max_length)
    test_batches = tokenized_batches(loaded.tokenizer, data.test, None, config.batch_size, config.max_length)
    label_names = _label_names(loaded, data)
    engine = engines[VARIANT_CLEAN]
    settings = config.analysis_settings()
    # The engine's options as resolved for the model (its task, its Fisher), so that the store says what ran.
    settings.update(
        num_train=len(data.train),
        num_test=len(data.test),
        layers=engine.layer_names,
        engine=engine.options.analysis_settings(),
    )
    layout = StoreLayout(
        config=settings,
        library_versions=_library_versions(),
        model_fingerprint=weights_fingerprint(loaded.model),
        data_fingerprint=_data_fingerprint(data, config, loaded.tokenizer),
        label_names=label_names,
        layers=[LayerInfo(t.name, t.in_features, t.out_features, t.has_bias, t.kind) for t in engine.layers],
        train=ExampleTable(data.train.texts, data.train.labels, data.train.dataset_index, data.corrupted_labels),
        test=ExampleTable(data.test.texts, data.test.labels, data.test.dataset_index, data.test.labels),
        variants=config.variants,
        factor_variants=config.factor_variants,
        regularizations=config.regularizations,
        main_regularization=config.regularization,
        factor_dtype=str(engine.factor_dtype).removeprefix("torch."),
        score_block=config.score_block,
    )
    return Analysis(config, loaded, data, label_names, engines, train_batches, test_batches, layout)


# ------------------------------------------------------------------ the stages


def run_fingerprint(layout: StoreLayout) -> str:
    """What a checkpoint must match to be continued: the weights, the data and the settings."""
    settings = json.dumps(layout.config, sort_keys=True)
    return hashlib.sha256(f"{layout.model_fingerprint}:{layout.data_fingerprint}:{settings}".encode()).hexdigest()
