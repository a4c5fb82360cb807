"""The pipeline for causal LMs, end to end on a saved tiny Llama: pairs, chat messages and documents."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from local_assets import lm_rows, save_tiny_lm, write_pairs

from influence.ekfac import EkfacInfluence
from influence.preparation import prepare
from job.cli import main
from job.config import RunConfig
from store.reader import StoreReader

SMALL = ["--num-train", "16", "--num-test", "4", "--batch-size", "4", "--max-length", "96", "--sweep", "1e-3"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm-assets")
    rows = lm_rows()
    pairs = root / "pairs"
    write_pairs(pairs, rows)
    chat = root / "chat"
    write_pairs(
        chat,
        {
            split: [
                {
                    "messages": [
                        {"role": "user", "content": r["prompt"]},
                        {"role": "assistant", "content": r["completion"]},
                    ]
                }
                for r in split_rows
            ]
            for split, split_rows in rows.items()
        },
    )
    documents = root / "documents"
    write_pairs(documents, {split: [{"text": r["prompt"] + r["completion"]} for r in rs] for split, rs in rows.items()})
    return {
        "rows": rows,
        "model": save_tiny_lm(root / "model", rows),
        "pairs": pairs,
        "chat": chat,
        "documents": documents,
        "root": root,
    }


def run(args: list[str], capsys) -> list[str]:
    main(args)
    return capsys.readouterr().out.split()


@pytest.mark.slow  # the command line end to end, twice over the data
def test_prompt_completion_pairs_end_to_end(assets, tmp_path, capsys):
    out = tmp_path / "out"
    paths = run(
        ["--export", str(out), "--model", str(assets["model"]), "--dataset", str(assets["pairs"]), *SMALL], capsys
    )
    assert paths[-1] == str(out / "queries.csv")
    with StoreReader(out / "influence.h5") as reader:
        assert reader.task == "causal-lm" and reader.variants == ["clean", "corrupted"]
        assert reader.config["engine"]["fisher"] == "sampled" and reader.factor_variants == ["clean"]
        assert all(record.status == "done" for record in reader.stages().values())
        test = reader.examples("test")
        completions = test.completions
        assert len(completions.completion) == 4 and set(completions.completion) <= {" positive", " negative"}
        assert np.isfinite(completions.completion_loss).all() and set(test.prediction.tolist()) <= {0, 1}
        assert all(isinstance(text, str) for text in completions.generated)
        # Per-token losses sit on the completion tokens, and sum to the completion's loss.
        masked = np.where(np.isfinite(completions.token_losses), completions.token_losses, 0).sum(axis=1)
        np.testing.assert_allclose(masked, completions.completion_loss, rtol=1e-5)
        train = reader.examples("train")
        swapped = train.label != train.corrupted_label
        assert swapped.all()  # --corrupt all: every completion taken from an example with another one
        for n in range(reader.n_train):
            assert (
                train.completions.corrupted_completion[n] == train.completions.completion[int(train.corrupted_label[n])]
            )
            assert train.completions.corrupted_completion[n] != train.completions.completion[n]
        metrics = reader.metrics()
        assert set(metrics) >= {"mean_loss", "perplexity", "exact_match"}
        reg_index = reader.regularizations.index(1e-3)
        stored = {v: reader.influence_matrix(v, reg_index) for v in reader.variants}
    with open(out / "queries.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and rows[0]["reference"] in (" positive", " negative")
    # The store's scores are the engine's on the same batches: the corrupted variant on its own batches.
    analysis = prepare(
        RunConfig(
            model=str(assets["model"]),
            dataset=str(assets["pairs"]),
            num_train=16,
            num_test=4,
            batch_size=4,
            max_length=96,
            sweep=[1e-3],
            seed=42,
        ).validate()
    )
    engine = EkfacInfluence(analysis.loaded.model, seed=42).fit(analysis.train_batches["clean"])
    for variant in ("clean", "corrupted"):
        expected = engine.influences(
            analysis.test_batches, analysis.train_batches[variant], regularization=1e-3
        ).numpy()
        np.testing.assert_allclose(stored[variant], expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_chat_messages_score_the_assistant_turns(assets):
    analysis = prepare(
        RunConfig(
            model=str(assets["model"]),
            dataset=str(assets["chat"]),
            num_train=8,
            num_test=2,
            batch_size=4,
            max_length=96,
        ).validate()
    )
    example = analysis.data.train.examples[0]
    assert example.completion.strip().startswith(
        assets["rows"]["train"][0]["completion"].strip()
    )  # with the template's end of turn
    batch = analysis.train_batches["clean"][0]
    scored = batch["labels"][0] != -100
    assert 0 < int(scored.sum()) < int(batch["attention_mask"][0].sum())  # the assistant's tokens, not the user's


def test_documents_are_completions_and_have_no_corrupted_variant(assets, tmp_path, capsys):
    out = tmp_path / "docs"
    args = [
        "--export",
        str(out),
        "--model",
        str(assets["model"]),
        "--dataset",
        str(assets["documents"]),
        "--text-column",
        "text",
        *SMALL,
    ]
    run(args, capsys)
    with StoreReader(out / "influence.h5") as reader:
        assert reader.variants == ["clean"]
        train = reader.examples("train")
        mask = train.completions.completion_mask
        tokens = (train.completions.token_ids >= 0).sum(axis=1)
        assert (mask.sum(axis=1) == tokens - 1).all()  # every token of a document but <s> is its completion


def test_the_exact_fisher_is_refused_for_a_causal_lm_on_the_command_line(assets, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "--export",
                "/tmp/never",
                "--model",
                str(assets["model"]),
                "--dataset",
                str(assets["pairs"]),
                "--fisher",
                "exact",
                *SMALL,
            ]
        )
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "exact Fisher is not available for causal LMs" in error and len(error.strip().splitlines()) == 1
