"""From a dataset specification to the examples an analysis scores.

A dataset is a hub id, a ``save_to_disk`` folder, a data file (CSV/JSON/JSONL/Parquet),
a folder of such files named by split, or ``demo``. Subsets follow the notebook: a
seeded shuffle of the split, then the first N. Every failure is a one-line UserError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from influence.completions import (
    COMPLETION_COLUMN,
    LABELLED_TEMPLATE,
    MESSAGES_COLUMN,
    PROMPT_COLUMN,
    REVIEW_TEMPLATE,
    Example,
    corrupted,
    examples_from_rows,
    swap_completions,
)
from job.config import DEMO, DEMO_CORPUS_SIZE, RunConfig, default_subset
from job.errors import UserError

TEXT_COLUMNS = ("text", "sentence", "review", "content", "document")
LABEL_COLUMNS = ("label", "labels", "sentiment", "target", "class")
FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
ROW_COLUMN = "__influence_row__"


@dataclass
class SplitSelection:
    """The chosen examples of one split, in analysis order."""

    texts: list[str]
    labels: np.ndarray  # int64
    dataset_index: np.ndarray  # int64: row in the original split

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class CompletionSplit:
    """A causal LM's chosen examples of one split, in analysis order."""

    examples: list[Example]
    dataset_index: np.ndarray  # int64: row in the original split

    def __len__(self) -> int:
        return len(self.examples)


@dataclass
class PreparedCompletions:
    """A causal LM's data: the examples, and whose completion each training example's corrupted variant takes."""

    train: CompletionSplit
    test: CompletionSplit
    donors: np.ndarray  # int64, the example's own index where nothing was swapped
    shape: str  # documents, pairs or messages
    full_train: Optional[CompletionSplit] = None

    @property
    def corrupted_train(self) -> list[Example]:
        return corrupted(self.train.examples, self.donors)


@dataclass
class PreparedData:
    train: SplitSelection
    test: SplitSelection
    corrupted_labels: np.ndarray  # int64, equal to train.labels where nothing was corrupted
    label_names: Optional[list[str]]
    full_train: Optional[SplitSelection] = None  # the whole train split, for training the demo model


def open_dataset(spec: str, splits: Sequence[str], seed: int):
    """A ``DatasetDict`` for ``spec``, with at least the named splits."""
    import datasets

    from influence.modeling import quiet_libraries

    quiet_libraries()

    if spec == DEMO:
        return demo_dataset(seed)
    path = Path(spec).expanduser()
    try:
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            loaded = datasets.load_from_disk(str(path))
        elif path.is_file():
            builder = FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise UserError(f"dataset file {spec}: unsupported type (use {', '.join(sorted(FILE_BUILDERS))})")
            options = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
            loaded = datasets.load_dataset(builder, data_files={"train": str(path)}, **options)
        elif path.is_dir():
            loaded = datasets.load_dataset(str(path))
        elif spec.startswith((".", "/", "~")):
            raise UserError(f"dataset {spec} does not exist")
        else:
            loaded = datasets.load_dataset(spec)
    except UserError:
        raise
    except Exception as error:  # datasets raises many types for unreadable input
        raise UserError(_explain_dataset_failure(spec, path.exists(), error)) from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    missing = [s for s in splits if s not in loaded]
    if missing:
        raise UserError(
            f"dataset {spec} has no split {missing[0]!r}; its splits are: {', '.join(loaded.keys()) or 'none'}"
        )
    return loaded


EMPTY_SPLIT = re.compile(r'Instruction "([^"]+)" corresponds to no data')


def _root_cause(error: BaseException) -> BaseException:
    """datasets wraps parser errors ("An error occurred while generating the dataset"): the cause says more."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _explain_dataset_failure(spec: str, local: bool, error: Exception) -> str:
    from influence.modeling import hub_offline

    empty = EMPTY_SPLIT.search(str(error))
    if empty:
        return f"split {empty.group(1)!r} of dataset {spec} is empty"
    cause = _root_cause(error)
    reason = " ".join(str(cause).split())[:300] or type(cause).__name__
    if not local and hub_offline():
        return (
            f"dataset {spec!r} is not a local path and not in the Hugging Face cache, and the hub is offline "
            "(HF_HUB_OFFLINE=1): download it on a connected machine or pass a local file or folder"
        )
    return f"could not read dataset {spec}: {reason}"


def demo_dataset(seed: int):
    """The generated review corpus as a DatasetDict with a ClassLabel column."""
    import datasets

    from influence.demo.corpus import LABEL_NAMES, generate_corpus

    corpus = generate_corpus(*DEMO_CORPUS_SIZE, seed=seed)
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(LABEL_NAMES))}
    )

    def split(reviews) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {"text": [r.text for r in reviews], "label": [r.label for r in reviews]}, features=features
        )

    return datasets.DatasetDict({"train": split(corpus.train), "test": split(corpus.test)})


def _pick_column(
    columns: Sequence[str], requested: Optional[str], candidates: Sequence[str], what: str, spec: str
) -> str:
    if requested is not None:
        if requested not in columns:
            raise UserError(f"dataset {spec} has no {what} column {requested!r}; its columns are: {', '.join(columns)}")
        return requested
    for name in candidates:
        if name in columns:
            return name
    raise UserError(
        f"dataset {spec} has no {what} column (looked for {', '.join(candidates)}); its columns are: "
        f"{', '.join(columns)}; name it with --{what}-column"
    )


def _label_ids(values: list[Any], label2id: dict[str, int], num_labels: int, spec: str) -> np.ndarray:
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        labels = np.asarray(values, dtype=np.int64)
    elif all(isinstance(v, str) for v in values):
        lookup = {k.lower(): v for k, v in label2id.items()}
        unknown = sorted({v for v in values if v.lower() not in lookup})
        if unknown:
            raise UserError(
                f"dataset {spec} has text labels {', '.join(map(repr, unknown[:5]))} that the model does not "
                f"name (its labels: {', '.join(label2id)})"
            )
        labels = np.asarray([lookup[v.lower()] for v in values], dtype=np.int64)
    else:
        raise UserError(f"dataset {spec}: labels must be class ids or class names, got {type(values[0]).__name__}")
    outside = sorted({int(v) for v in labels if not 0 <= v < num_labels})
    if outside:
        raise UserError(
            f"dataset {spec} has labels {', '.join(map(str, outside[:5]))} outside the model's "
            f"{num_labels} classes (0..{num_labels - 1})"
        )
    return labels


def _select(split, count: int, seed: int, name: str, spec: str):
    size = len(split)
    if size == 0:
        raise UserError(f"split {name!r} of dataset {spec} is empty")
    if count > size:
        raise UserError(f"asked for {count} examples from split {name!r} of dataset {spec}, which has {size}")
    with_rows = split.add_column(ROW_COLUMN, list(range(size)))
    return with_rows.shuffle(seed=seed).select(range(count))


def _as_selection(rows, text_column: str, label_column: str, label2id, num_labels: int, spec: str) -> SplitSelection:
    texts = rows[text_column]
    if not all(isinstance(t, str) for t in texts):
        raise UserError(f"dataset {spec}: column {text_column!r} does not hold text")
    labels = _label_ids(rows[label_column], label2id, num_labels, spec)
    return SplitSelection(list(texts), labels, np.asarray(rows[ROW_COLUMN], dtype=np.int64))


def corrupt_labels(labels: np.ndarray, fraction: Optional[float], num_labels: int, seed: int) -> np.ndarray:
    """Flip a seeded fraction of the labels to another class (all of them for 1.0).

    Binary labels flip to the other class, as the notebook's ``1 - y``; with more classes
    each chosen label moves to a uniformly drawn different class.
    """
    corrupted = labels.copy()
    if not fraction:
        return corrupted
    rng = np.random.default_rng(seed)
    count = len(labels) if fraction >= 1.0 else int(round(fraction * len(labels)))
    chosen = np.arange(len(labels)) if count == len(labels) else np.sort(rng.choice(len(labels), count, replace=False))
    shift = rng.integers(1, num_labels, size=len(chosen)) if num_labels > 2 else np.ones(len(chosen), dtype=np.int64)
    corrupted[chosen] = (labels[chosen] + shift) % num_labels
    return corrupted


def _infer_label_space(split, label_column: str, spec: str) -> tuple[int, dict[str, int]]:
    """Classes of a dataset when no model says them (the demo model is trained to fit the data)."""
    feature = split.features.get(label_column)
    if hasattr(feature, "names"):
        return len(feature.names), {name: i for i, name in enumerate(feature.names)}
    values = split[label_column]
    if values and all(isinstance(v, str) for v in values):
        names = sorted(set(values))
        return max(2, len(names)), {name: i for i, name in enumerate(names)}
    if values and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        if min(values) < 0:
            raise UserError(f"dataset {spec} has negative labels; class ids must be 0, 1, ...")
        return max(2, int(max(values)) + 1), {}
    raise UserError(f"dataset {spec}: labels must be class ids or class names")


def prepare_data(
    config: RunConfig,
    num_labels: Optional[int],
    label2id: dict[str, int],
    include_full_train: bool = False,
) -> PreparedData:
    """Load, check and select the train and test examples of ``config``.

    ``num_labels`` None means no model fixes the classes yet (the demo model): they are
    read off the dataset instead.
    """
    dataset = open_dataset(config.dataset, (config.train_split, config.test_split), config.seed)
    train_split, test_split = dataset[config.train_split], dataset[config.test_split]
    columns = list(train_split.column_names)
    text_column = _pick_column(columns, config.text_column, TEXT_COLUMNS, "text", config.dataset)
    label_column = _pick_column(columns, config.label_column, LABEL_COLUMNS, "label", config.dataset)
    for name, split in ((config.test_split, test_split),):
        for column in (text_column, label_column):
            if column not in split.column_names:
                raise UserError(
                    f"split {name!r} of dataset {config.dataset} has no column {column!r}; "
                    f"its columns are: {', '.join(split.column_names)}"
                )
    if num_labels is None:
        num_labels, label2id = _infer_label_space(train_split, label_column, config.dataset)
    num_train, num_test = default_subset(config)
    num_train = config.num_train or num_train
    num_test = config.num_test or num_test
    selections = []
    for name, split, count in ((config.train_split, train_split, num_train), (config.test_split, test_split, num_test)):
        rows = _select(split, count, config.seed, name, config.dataset)
        selections.append(_as_selection(rows, text_column, label_column, label2id, num_labels, config.dataset))
    train, test = selections
    full_train = None
    if include_full_train:
        rows = _select(train_split, len(train_split), config.seed, config.train_split, config.dataset)
        full_train = _as_selection(rows, text_column, label_column, label2id, num_labels, config.dataset)
    label_names = _names_of(train_split, label_column, label2id, num_labels)
    corrupted = corrupt_labels(train.labels, config.corruption_fraction, num_labels, config.seed)
    return PreparedData(train, test, corrupted, label_names, full_train)


def data_shape(columns: Sequence[str], config: RunConfig) -> str:
    """How a causal LM reads a dataset: chat ``messages``, ``prompt``/``completion`` pairs, labelled texts
    (a text and a label column), or documents (a text column alone)."""
    if config.text_column is None and MESSAGES_COLUMN in columns:
        return "messages"
    if config.text_column is None and PROMPT_COLUMN in columns and COMPLETION_COLUMN in columns:
        return "pairs"
    if config.label_column is not None or any(name in columns for name in LABEL_COLUMNS):
        return "labelled"
    return "documents"


def prepare_completions(config: RunConfig, tokenizer: Any, include_full_train: bool = False) -> PreparedCompletions:
    """Load, check and select a causal LM's train and test examples (as ``data_shape`` reads them), and
    draw the corrupted variant's swapped completions."""
    dataset = open_dataset(config.dataset, (config.train_split, config.test_split), config.seed)
    train_split, test_split = dataset[config.train_split], dataset[config.test_split]
    columns = list(train_split.column_names)
    shape = data_shape(columns, config)
    text_column, labels = "", None
    if shape in ("documents", "labelled"):
        text_column = _pick_column(columns, config.text_column, TEXT_COLUMNS, "text", config.dataset)
    if shape == "labelled":
        label_column = _pick_column(columns, config.label_column, LABEL_COLUMNS, "label", config.dataset)
        num_labels, label2id = _infer_label_space(train_split, label_column, config.dataset)
        names = _names_of(train_split, label_column, label2id, num_labels)
        template = REVIEW_TEMPLATE if config.is_demo_data else LABELLED_TEMPLATE
        labels = (label_column, names, template)
    wanted = {
        "documents": [text_column],
        "labelled": [text_column, labels[0] if labels else ""],
        "pairs": [PROMPT_COLUMN, COMPLETION_COLUMN],
        "messages": [MESSAGES_COLUMN],
    }[shape]
    for name, split in ((config.test_split, test_split),):
        missing = [column for column in wanted if column not in split.column_names]
        if missing:
            raise UserError(
                f"split {name!r} of dataset {config.dataset} has no column {missing[0]!r}; "
                f"its columns are: {', '.join(split.column_names)}"
            )
    num_train, num_test = default_subset(config)
    counts = (config.num_train or num_train, config.num_test or num_test)

    def selected(split, count: int, name: str) -> CompletionSplit:
        rows = _select(split, count, config.seed, name, config.dataset)
        if labels is not None:  # class ids, whatever the column holds (names or ids)
            ids = _label_ids(rows[labels[0]], label2id, len(labels[1]), config.dataset)
            rows = rows.remove_columns(labels[0]).add_column(labels[0], ids.tolist())
        examples = examples_from_rows(rows[:], shape, text_column, tokenizer, config.dataset, labels)
        return CompletionSplit(examples, np.asarray(rows[ROW_COLUMN], dtype=np.int64))

    train = selected(train_split, counts[0], config.train_split)
    test = selected(test_split, counts[1], config.test_split)
    full_train = selected(train_split, len(train_split), config.train_split) if include_full_train else None
    fraction = config.corruption_fraction if shape != "documents" else None  # a document has no prompt to keep
    donors = swap_completions(train.examples, fraction, config.seed)
    return PreparedCompletions(train, test, donors, shape, full_train)


def _names_of(split, label_column: str, label2id: dict[str, int], num_labels: int) -> list[str]:
    """Class names: the dataset's ClassLabel names, its text labels, or ``class i``."""
    feature = split.features.get(label_column)
    if hasattr(feature, "names"):
        return list(feature.names)
    if label2id:
        return [name for name, _ in sorted(label2id.items(), key=lambda item: item[1])]
    return [f"class {i}" for i in range(num_labels)]
