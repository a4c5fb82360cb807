"""The built-in demo and the real IMDB reviews, end to end through the command line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from local_assets import IMDB

from influence.demo.corpus import LABEL_NAMES, generate_corpus
from influence.demo.model import ensure_demo_model
from influence.modeling import load_model
from job.cli import main
from job.config import DEMO_CORPUS_SIZE, RunConfig
from store.reader import StoreReader

pytestmark = pytest.mark.slow  # trains and analyses the demo end to end

DEMO_ACCURACY = 0.85
NEAR_DUPLICATE_TOP = 0.01  # the top 1% of the training reviews, by relative influence


def test_the_demo_model_learns_the_demo_corpus():
    config = RunConfig()
    corpus = generate_corpus(*DEMO_CORPUS_SIZE, seed=config.seed)
    folder = ensure_demo_model(
        [r.text for r in corpus.train],
        np.array([r.label for r in corpus.train]),
        LABEL_NAMES,
        max_length=config.max_length,
        seed=config.seed,
    )
    assert (
        ensure_demo_model(  # cached: the same folder, no training
            [r.text for r in corpus.train],
            np.array([r.label for r in corpus.train]),
            LABEL_NAMES,
            max_length=config.max_length,
            seed=config.seed,
        )
        == folder
    )
    loaded = load_model(str(folder), task=None, trust_remote_code=False, device=torch.device("cpu"))
    encoded = loaded.tokenizer(
        [r.text for r in corpus.test], truncation=True, max_length=config.max_length, padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        predictions = loaded.model(**encoded).logits.argmax(1).numpy()
    accuracy = float((predictions == np.array([r.label for r in corpus.test])).mean())
    assert accuracy >= DEMO_ACCURACY


def test_the_demo_export_finds_the_planted_near_duplicates(tmp_path, capsys):
    out = tmp_path / "out"
    main(["--export", str(out)])
    paths = capsys.readouterr().out.split()
    assert paths[0] == str(out / "influence.h5")
    config = RunConfig()
    corpus = generate_corpus(*DEMO_CORPUS_SIZE, seed=config.seed)
    with StoreReader(out / "influence.h5") as reader:
        assert all(record.status == "done" for record in reader.stages().values())
        assert reader.metrics()["accuracy"] >= DEMO_ACCURACY
        test_rows = {int(i): row for row, i in enumerate(reader.examples("test").dataset_index)}
        train_rows = {int(i): row for row, i in enumerate(reader.examples("train").dataset_index)}
        planted = [(train_rows[a], test_rows[b]) for a, b in corpus.near_duplicates if b in test_rows]
        assert planted, "the demo's test subset holds none of the planted near-duplicates"
        k = reader.main_regularization_index
        train_self = reader.self_influence("clean", k, "train")
        top = 0
        for train_row, test_row in planted:
            scores = reader.influence_row("clean", k, test_row)
            assert scores[train_row] > 0, f"test {test_row}: its near-duplicate does not help it"
            # Relative influence (RelatIF: I(q, n) / sqrt(I(n, n))) sets aside gradient size,
            # which dominates raw influence for confidently classified reviews.
            relative = scores / np.sqrt(train_self)
            top += int((relative > relative[train_row]).sum()) < NEAR_DUPLICATE_TOP * len(scores)
        # Chance would put 1% of them there; measured: 3 of the 5 in the seed-42 demo.
        assert top >= 0.6 * len(planted), f"{top} of {len(planted)} planted near-duplicates in the top 1%"


@pytest.mark.imdb
@pytest.mark.skipif(not IMDB.is_dir(), reason="../shared/data/imdb is absent")
def test_real_imdb_reviews_with_the_demo_model(tmp_path, capsys):
    """The notebook's observation: with every training label flipped, influences turn negative."""
    out = tmp_path / "out"
    main(
        [
            "--export",
            str(out),
            "--model",
            "demo",
            "--dataset",
            str(IMDB),
            "--num-train",
            "100",
            "--num-test",
            "30",
            "--max-length",
            "128",
            "--sweep",
            "1e-3",
        ]
    )
    capsys.readouterr()
    with StoreReader(out / "influence.h5") as reader:
        assert all(record.status == "done" for record in reader.stages().values())
        k = reader.main_regularization_index
        clean = reader.influence_matrix("clean", k)
        corrupted = reader.influence_matrix("corrupted", k)
        assert np.isfinite(clean).all() and np.isfinite(corrupted).all()
        assert corrupted.mean() < clean.mean()
        assert len(reader.examples("train").text) == 100


def test_the_lm_demo_trains_and_exports_its_completions(tmp_path, capsys):
    """--model demo-lm: the demo's reviews as prompt → completion, a tiny Llama trained on them."""
    out = tmp_path / "lm"
    main(["--model", "demo-lm", "--export", str(out), "--num-train", "200", "--num-test", "20"])
    paths = capsys.readouterr().out.split()
    assert paths[-1] == str(out / "queries.csv")
    with StoreReader(out / "influence.h5") as reader:
        assert reader.task == "causal-lm" and all(r.status == "done" for r in reader.stages().values())
        metrics = reader.metrics()
        assert metrics["exact_match"] >= 0.9 and metrics["perplexity"] < 1.5
        test = reader.examples("test")
        assert test.completions.prompt[0].startswith("Review: ") and test.completions.prompt[0].endswith("Sentiment:")
        assert set(test.completions.completion) <= {" positive", " negative"}
        train = reader.examples("train")
        # A swapped completion is the other sentiment: on this data, a label flip.
        assert all(a != b for a, b in zip(train.completions.completion, train.completions.corrupted_completion))
        assert np.isfinite(reader.influence_matrix("corrupted", reader.main_regularization_index)).all()
