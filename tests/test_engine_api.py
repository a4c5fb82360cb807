"""The public API as the README shows it: loaders on both sides, one call or a loop, caches that change no result."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from local_assets import corpus_rows, save_tiny_model
from tiny_models import padded_batch, tiny_distilbert
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from influence import EkfacInfluence, EngineOptions
from job.options import OptionError

ROOT = Path(__file__).resolve().parent.parent
REGULARIZATION = 1e-3


def readme_python_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The engine from Python") :]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """The README's example run as written, on a tiny local classifier and tokenized reviews."""
    rows = corpus_rows(num_train=40, num_test=12)
    folder = save_tiny_model(tmp_path_factory.mktemp("model"), rows)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder)

    def tokenized(split: str) -> list[dict]:
        return [
            {**tokenizer(row["text"], truncation=True, max_length=64), "labels": row["label"]} for row in rows[split]
        ]

    namespace = {"model": model, "tokenizer": tokenizer, "train_set": tokenized("train"), "test_set": tokenized("test")}
    exec(compile(readme_python_example(), "README.md", "exec"), namespace)
    return namespace


def test_the_readme_example_scores_every_pair_in_one_call(readme_run):
    ekfac, test_loader, train_loader = readme_run["ekfac"], readme_run["test_loader"], readme_run["train_loader"]
    scores = ekfac.influences(test_loader, train_loader, regularization=1e-5)
    assert scores.shape == (12, 40) and torch.isfinite(scores).all()
    by_layer = ekfac.influences_by_layer(test_loader, train_loader, regularization=1e-5)
    torch.testing.assert_close(sum(by_layer.values()), scores, rtol=1e-5, atol=1e-7 * float(scores.abs().max()))


@pytest.mark.parametrize("outer", ["test", "train"])
def test_a_pairwise_loop_gives_the_one_call_and_recomputes_nothing(readme_run, outer, monkeypatch):
    """Each test batch's gradients are taken once, and no training batch is captured again."""
    ekfac, test_loader, train_loader = readme_run["ekfac"], readme_run["test_loader"], readme_run["train_loader"]
    whole = ekfac.influences(test_loader, train_loader, REGULARIZATION)
    ekfac.query_cache.clear()
    calls = {"queries": 0, "captures": 0}
    real_queries, real_capture = ekfac.query_gradients, ekfac._capture

    def counted_queries(*args, **kwargs):
        calls["queries"] += 1
        return real_queries(*args, **kwargs)

    def counted_capture(*args, **kwargs):
        calls["captures"] += 1
        return real_capture(*args, **kwargs)

    monkeypatch.setattr(ekfac, "query_gradients", counted_queries)
    monkeypatch.setattr(ekfac, "_capture", counted_capture)
    tests, trains = list(test_loader), list(train_loader)
    if outer == "test":
        blocks = torch.cat([torch.cat([ekfac.influences(q, n, REGULARIZATION) for n in trains], 1) for q in tests])
    else:
        blocks = torch.cat([torch.cat([ekfac.influences(q, n, REGULARIZATION) for q in tests]) for n in trains], 1)
    torch.testing.assert_close(blocks, whole, rtol=1e-5, atol=1e-7 * float(whole.abs().max()))
    assert calls["queries"] == len(tests)
    assert calls["captures"] == len(tests)  # the test batches' own forward passes; none for training batches


def _engine_and_data(**choices):
    model = tiny_distilbert()
    train = [padded_batch(4, 6, seed=50 + s) for s in range(3)]
    test = padded_batch(3, 6, seed=60)
    return model, EkfacInfluence(model, **choices).fit(train), train, test


def test_a_batch_with_other_labels_is_scored_with_its_own_labels():
    """The caches key batches by their inputs; labels always come from the batch being scored."""
    model, cached, train, test = _engine_and_data()
    flipped = [{**batch, "labels": 1 - batch["labels"]} for batch in train]
    uncached = EkfacInfluence(model, cache_bytes=0)
    uncached.set_factors(cached._bases(), {name: f.eigenvalues for name, f in cached.factors.items()})
    cached.influences(test, train, REGULARIZATION)  # fill both caches with the clean labels
    assert torch.equal(
        cached.influences(test, flipped, REGULARIZATION), uncached.influences(test, flipped, REGULARIZATION)
    )
    flipped_test = {**test, "labels": 1 - test["labels"]}
    assert torch.equal(
        cached.influences(flipped_test, train, REGULARIZATION), uncached.influences(flipped_test, train, REGULARIZATION)
    )


def test_changed_weights_are_never_served_from_a_cache():
    model, cached, train, test = _engine_and_data()
    before = cached.influences(test, train, REGULARIZATION)
    with torch.no_grad():  # an optimizer step would do the same: an in-place write torch counts
        next(model.parameters()).mul_(1.5)
    uncached = EkfacInfluence(model, cache_bytes=0)
    uncached.set_factors(cached._bases(), {name: f.eigenvalues for name, f in cached.factors.items()})
    after = cached.influences(test, train, REGULARIZATION)
    assert not torch.equal(after, before)
    assert torch.equal(after, uncached.influences(test, train, REGULARIZATION))


def test_options_come_as_one_dataclass_or_as_keywords():
    model = tiny_distilbert()
    options = EngineOptions(fisher="empirical", mode="kfac")
    assert (
        EkfacInfluence(model, options=options).options == EkfacInfluence(model, fisher="empirical", mode="kfac").options
    )
    assert EkfacInfluence(model, None, options, mode="ekfac").options.mode == "ekfac"  # keywords override
    with pytest.raises(OptionError, match="unknown Fisher 'true': choose one of exact, sampled, empirical"):
        EkfacInfluence(model, fisher="true")
    with pytest.raises(TypeError, match="unknown engine option fishr"):
        EkfacInfluence(model, fishr="exact")
    assert EngineOptions(factor_dtype=torch.float64).factor_dtype == "float64"
    assert "cache_bytes" not in EngineOptions().analysis_settings()


def test_query_bytes_scores_the_test_set_in_chunks_with_the_same_numbers(readme_run, monkeypatch):
    """Chunks of two test rows (cut inside the loader's batches): six passes over train, the same matrix."""
    ekfac, test_loader, train_loader = readme_run["ekfac"], readme_run["test_loader"], readme_run["train_loader"]
    whole = ekfac.explore_hessian_regularization(test_loader, train_loader, [1e-5, 1e-2])
    chunked = EkfacInfluence(ekfac.model, options=ekfac.options.replace(query_bytes=2 * 4 * ekfac.tracked_parameters))
    chunked.set_factors(ekfac._bases(), {name: f.eigenvalues for name, f in ekfac.factors.items()})
    counted = []
    real = chunked.query_gradients
    monkeypatch.setattr(chunked, "query_gradients", lambda data, **kw: counted.append(data) or real(data, **kw))
    result = chunked.explore_hessian_regularization(test_loader, train_loader, [1e-5, 1e-2])
    assert [sum(len(b["labels"]) for b in chunk) for chunk in counted] == [2] * 6 and not chunked.query_cache
    for reg in whole:
        for name, scores in whole[reg].items():
            torch.testing.assert_close(result[reg][name], scores, rtol=1e-5, atol=1e-6 * float(scores.abs().max()))
    with pytest.raises(ValueError, match="pass a list or loader"):
        chunked.influences(test_loader, iter(list(train_loader)))
