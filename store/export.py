"""``--export``: the tables a batch job leaves beside the store (summary.json and three CSV files, and
for a causal LM a fourth, its queries with their reference and greedy completions).

Reads through StoreReader and ranks through store.analysis, so the numbers are the
ones the terminal UI shows. Scores not computed yet (NaN) are left out. Pairs are
ranked twice, by raw influence and by relative influence (``score`` column).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from store.analysis import (
    INFLUENCE,
    RELATIVE,
    ROW_BATCH,
    SCORES,
    RegularizationReport,
    regularization_report,
    relative_influence,
    score_extremes,
    top_k,
)
from store.layout import VARIANT_CORRUPTED
from store.reader import StoreReader

SUMMARY_FILE = "summary.json"
TOP_FILE = "top_influences.csv"
LAYERS_FILE = "layers.csv"
REGULARIZATION_FILE = "regularization.csv"
QUERIES_FILE = "queries.csv"
HELPFUL, HARMFUL = "helpful", "harmful"
PAIR_COLUMNS = [
    "variant",
    "test_index",
    "test_dataset_index",
    "score",
    "direction",
    "rank",
    "train_index",
    "train_dataset_index",
]
SCORE_COLUMNS = ["influence", "relative_influence"]
# What a training example says: its label (a classifier) or its completion (a causal LM), clean and as used.
TRAIN_COLUMNS = {
    False: ["train_label", "train_label_used", "corrupted"],
    True: ["train_completion", "train_completion_used", "corrupted"],
}
QUERY_COLUMNS = [
    "test_index",
    "test_dataset_index",
    "prompt",
    "reference",
    "generated",
    "completion_loss",
    "completion_tokens",
    "exact_match",
]
REGULARIZATION_COLUMNS = [
    "variant",
    "series",
    "lambda_from",
    "lambda_to",
    "pearson",
    "spearman",
    "stable",
    "in_plateau",
    "recommended",
    "recommended_lambda",
]


def _score(value: float) -> str:
    """A float32 score with the digits it has; an empty cell when it is not available (NaN)."""
    return format(float(value), ".8g") if math.isfinite(value) else ""


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _jsonable(value: Any) -> Any:
    """Plain JSON (NaN becomes null) from dicts, lists, numpy scalars and arrays."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(item) for item in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(value) else float(value)
    return value


def _top_pairs(
    reader: StoreReader, variant: str, k: int
) -> Iterator[tuple[int, str, str, int, int, float, float, np.ndarray]]:
    """(test, score, direction, rank, train, influence, relative influence, per-layer influence) of every
    exported pair: per test example, the k most helpful and harmful by influence, then by relative influence."""
    reg_index = reader.main_regularization_index
    train_self = reader.self_influence(variant, reg_index, "train")
    for first in range(0, reader.n_test, ROW_BATCH):
        rows = slice(first, min(first + ROW_BATCH, reader.n_test))
        totals = reader.influence_matrix(variant, reg_index, tests=rows)
        relatives = relative_influence(totals, train_self)
        layers = np.stack(
            [reader.influence_matrix(variant, reg_index, layer, tests=rows) for layer in range(len(reader.layers))]
        )
        for offset, (row, relative) in enumerate(zip(totals, relatives)):
            for score, ranked in zip(SCORES, (row, relative)):
                for direction, indices in zip((HELPFUL, HARMFUL), top_k(ranked, k)):
                    for rank, train in enumerate(indices, start=1):
                        yield (
                            first + offset,
                            score,
                            direction,
                            rank,
                            int(train),
                            float(row[train]),
                            float(relative[train]),
                            layers[:, offset, train],
                        )


def _train_cells(train, variant: str, n: int) -> list:
    """A training example's label (or completion), the one the variant used, and whether they differ."""
    corrupted = train.label[n] != train.corrupted_label[n]
    used = variant == VARIANT_CORRUPTED
    if train.completions is not None:
        completions = train.completions
        chosen = completions.corrupted_completion if used else completions.completion
        return [completions.completion[n], chosen[n], _flag(corrupted)]
    return [int(train.label[n]), int((train.corrupted_label if used else train.label)[n]), _flag(corrupted)]


def _write_pairs(reader: StoreReader, out_dir: Path, k: int) -> list[Path]:
    train, test = reader.examples("train"), reader.examples("test")
    top_path, layers_path = out_dir / TOP_FILE, out_dir / LAYERS_FILE
    layer_names = [layer.name for layer in reader.layers]
    with open(top_path, "w", newline="") as top_file, open(layers_path, "w", newline="") as layers_file:
        top_csv, layers_csv = csv.writer(top_file), csv.writer(layers_file)
        top_csv.writerow(PAIR_COLUMNS + SCORE_COLUMNS + TRAIN_COLUMNS[reader.layout.is_causal_lm])
        layers_csv.writerow(PAIR_COLUMNS + layer_names + ["total"])
        for variant in reader.variants:
            for q, score, direction, rank, n, influence, relative, per_layer in _top_pairs(reader, variant, k):
                pair = [variant, q, int(test.dataset_index[q]), score, direction, rank, n, int(train.dataset_index[n])]
                scores = [_score(influence), _score(relative)]
                top_csv.writerow(pair + scores + _train_cells(train, variant, n))
                layers_csv.writerow(pair + [_score(value) for value in per_layer] + [_score(influence)])
    return [top_path, layers_path]


def _write_queries(reader: StoreReader, out_dir: Path) -> Path:
    """A causal LM's queries: prompt, reference and greedy completion, the reference's loss, exact match."""
    test = reader.examples("test")
    completions = test.completions
    path = out_dir / QUERIES_FILE
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(QUERY_COLUMNS)
        for q in range(reader.n_test):
            writer.writerow(
                [
                    q,
                    int(test.dataset_index[q]),
                    completions.prompt[q],
                    completions.completion[q],
                    completions.generated[q],
                    _score(float(completions.completion_loss[q])),
                    int(completions.completion_tokens[q]),
                    int(test.prediction[q]) if test.prediction[q] >= 0 else "",
                ]
            )
    return path


def _write_regularization(reports: list[RegularizationReport], out_dir: Path) -> Path:
    path = out_dir / REGULARIZATION_FILE
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(REGULARIZATION_COLUMNS)
        for report in reports:
            recommended = "" if report.recommended is None else repr(report.recommended)
            for s, series in enumerate(report.series):
                for j in range(len(report.regularizations) - 1):
                    in_plateau = report.plateau is not None and report.plateau[0] <= j < report.plateau[1]
                    writer.writerow(
                        [
                            report.variant,
                            series,
                            repr(report.regularizations[j]),
                            repr(report.regularizations[j + 1]),
                            repr(float(report.pearson[s, j])),
                            repr(float(report.spearman[s, j])),
                            _flag(bool(report.stable[j])),
                            _flag(in_plateau),
                            _flag(report.recommended == report.regularizations[j]),
                            recommended,
                        ]
                    )
    return path


def _extremes(reader: StoreReader, variant: str, k: int) -> dict[str, list[dict]]:
    """Per score, the k most positive and k most negative pairs of the whole matrix, each with both scores."""
    train, test = reader.examples("train"), reader.examples("test")
    reg_index = reader.main_regularization_index
    train_self = reader.self_influence(variant, reg_index, "train")
    extremes: dict[str, list[dict]] = {}
    for score, pairs in score_extremes(reader, variant, reg_index, k).items():
        extremes[score] = []
        for q, n, value in pairs:
            influence = value if score == INFLUENCE else float(reader.influence_row(variant, reg_index, q)[n])
            extremes[score].append(
                {
                    "test_index": q,
                    "train_index": n,
                    "test_dataset_index": test.dataset_index[q],
                    "train_dataset_index": train.dataset_index[n],
                    "influence": influence,
                    "relative_influence": float(relative_influence(np.float32(influence), train_self[n])),
                }
            )
    return extremes


def _summary(reader: StoreReader, reports: list[RegularizationReport], k: int) -> dict:
    extremes = {variant: _extremes(reader, variant, k) for variant in reader.variants}
    return {
        "store": str(reader.path),
        "format_version": reader.format_version,
        "config": reader.config,
        "library_versions": reader.library_versions,
        "model_fingerprint": reader.model_fingerprint,
        "data_fingerprint": reader.data_fingerprint,
        "task": reader.task,
        "label_names": reader.label_names,
        "layers": [asdict(layer) for layer in reader.layers],
        "n_train": reader.n_train,
        "n_test": reader.n_test,
        "variants": reader.variants,
        "regularizations": reader.regularizations,
        "main_regularization": reader.main_regularization,
        "metrics": reader.metrics(),
        "stages": {key: record.as_dict() for key, record in reader.stages().items()},
        "summary": reader.summaries(),
        "extreme_pairs": {variant: found[INFLUENCE] for variant, found in extremes.items()},
        "relative_extreme_pairs": {variant: found[RELATIVE] for variant, found in extremes.items()},
        "regularization": {
            report.variant: {
                "recommended": report.recommended,
                "plateau": report.plateau,
                "threshold": report.threshold,
            }
            for report in reports
        },
    }


def export_tables(reader: StoreReader, out_dir: str | Path, k: int = 10) -> list[Path]:
    """Write summary.json, top_influences.csv, layers.csv and regularization.csv; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = [regularization_report(reader, variant) for variant in reader.variants]
    summary_path = out_dir / SUMMARY_FILE
    summary_path.write_text(json.dumps(_jsonable(_summary(reader, reports, k)), indent=2, allow_nan=False) + "\n")
    tables = [summary_path, *_write_pairs(reader, out_dir, k), _write_regularization(reports, out_dir)]
    if reader.layout.is_causal_lm:
        tables.append(_write_queries(reader, out_dir))
    return tables
