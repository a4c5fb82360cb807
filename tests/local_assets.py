"""Builders for the local model folders and dataset files the pipeline tests load."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from influence.demo.corpus import LABEL_NAMES, generate_corpus
from influence.demo.model import DemoSettings, build_model, build_tokenizer

ASSET_SEED = 5
IMDB = Path(__file__).resolve().parents[2] / "shared" / "data" / "imdb"  # real reviews, never copied here
TINY_SETTINGS = DemoSettings(dim=16, layers=1, heads=2, hidden=32, vocab_size=800)


def corpus_rows(num_train: int = 120, num_test: int = 40) -> dict[str, list[dict]]:
    corpus = generate_corpus(num_train, num_test, seed=ASSET_SEED)
    return {
        "train": [{"text": r.text, "label": r.label} for r in corpus.train],
        "test": [{"text": r.text, "label": r.label} for r in corpus.test],
    }


def save_tiny_model(folder: Path, rows: dict[str, list[dict]], max_length: int = 64, seed: int = ASSET_SEED) -> Path:
    """An untrained tiny DistilBERT classifier with its own tokenizer, via save_pretrained."""
    import torch

    torch.manual_seed(seed)
    texts = [r["text"] for r in rows["train"]]
    tokenizer = build_tokenizer(texts, max_length, TINY_SETTINGS)
    model = build_model(len(tokenizer), LABEL_NAMES, max_length, TINY_SETTINGS)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_csv_folder(folder: Path, rows: dict[str, list[dict]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        with open(folder / f"{split}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows(split_rows)
    return folder


def write_jsonl(path: Path, split_rows: list[dict], text_key: str = "text", label_key: str = "label") -> Path:
    with open(path, "w") as handle:
        for row in split_rows:
            handle.write(json.dumps({text_key: row["text"], label_key: row["label"]}) + "\n")
    return path


def write_parquet_folder(folder: Path, rows: dict[str, list[dict]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        table = pa.table({"text": [r["text"] for r in split_rows], "label": np.array([r["label"] for r in split_rows])})
        pq.write_table(table, folder / f"{split}.parquet")
    return folder


def save_to_disk(folder: Path, rows: dict[str, list[dict]]) -> Path:
    import datasets

    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(LABEL_NAMES))}
    )
    dataset = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {"text": [r["text"] for r in split_rows], "label": [r["label"] for r in split_rows]}, features=features
            )
            for split, split_rows in rows.items()
        }
    )
    dataset.save_to_disk(str(folder))
    return folder


CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def lm_rows(num_train: int = 40, num_test: int = 10) -> dict[str, list[dict]]:
    """The demo reviews as prompt/completion pairs (the sentiment as the completion)."""
    rows = corpus_rows(num_train, num_test)
    return {
        split: [{"prompt": f"Review: {r['text']}\nSentiment:", "completion": f" {LABEL_NAMES[r['label']]}"} for r in rs]
        for split, rs in rows.items()
    }


def save_tiny_lm(folder: Path, rows: dict[str, list[dict]], max_length: int = 96, seed: int = ASSET_SEED) -> Path:
    """An untrained tiny Llama causal LM, its own word-level tokenizer and a chat template, via save_pretrained."""
    import torch

    from influence.demo.lm import LMSettings, build_lm
    from influence.demo.model import build_tokenizer

    torch.manual_seed(seed)
    settings = LMSettings(dim=16, layers=1, heads=2, hidden=32, vocab_size=800)
    texts = [r.get("prompt", "") + r.get("completion", "") for r in rows["train"]] + ["user assistant system"] * 2
    tokenizer = build_tokenizer(texts, max_length, settings, causal=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    model = build_lm(len(tokenizer), max_length, settings, tokenizer.pad_token_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_pairs(folder: Path, rows: dict[str, list[dict]]) -> Path:
    """One JSONL file per split, a row per line (pairs, chat messages or documents)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        with open(folder / f"{split}.jsonl", "w") as handle:
            for row in split_rows:
                handle.write(json.dumps(row) + "\n")
    return folder


def tiny_runs(root: Path, num_train: int, num_test: int) -> dict[str, dict[str, str]]:
    """The tiny classifier on a CSV folder and the tiny causal LM on prompt/completion pairs, as
    RunConfig fields (``model``, ``dataset``) under "classifier" and "lm"."""
    rows, pairs = corpus_rows(num_train, num_test), lm_rows(num_train, num_test)
    return {
        "classifier": {
            "model": str(save_tiny_model(root / "model", rows)),
            "dataset": str(write_csv_folder(root / "csv", rows)),
        },
        "lm": {"model": str(save_tiny_lm(root / "lm", pairs)), "dataset": str(write_pairs(root / "pairs", pairs))},
    }
