"""How the engine behaves: invariances, the Fisher variants, the sign, and the model's safety."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from reference import (
    exact_fisher,
    influence_matrix,
    label_gradients,
    label_vectors,
    reference_eigenvalues,
    reference_factors,
    relative_error,
    unpadded_examples,
)
from tiny_models import padded_batch, rebatch, repad, tiny_distilbert, tiny_llama

from influence import EkfacInfluence
from influence.caches import batch_key
from influence.layers import LayerSelectionError
from influence.task import model_inputs
from job.progress import Cancelled, ProgressEvent

REGULARIZATION = 1e-3


def _train(count: int = 3, size: int = 4, length: int = 6) -> list[dict]:
    return [padded_batch(size, length, seed=s) for s in range(count)]


def test_one_example_of_one_token_kfac_ekfac_and_exact_agree():
    """With a single token, Ā and G are vectors, so every approximation is exact."""
    model = tiny_distilbert()
    single = {"input_ids": torch.tensor([[5]]), "attention_mask": torch.tensor([[1]]), "labels": torch.tensor([1])}
    probe = padded_batch(3, 5, seed=4)
    ekfac = EkfacInfluence(model, mode="ekfac").fit([single])
    kfac = EkfacInfluence(model, mode="kfac").fit([single])
    reference = reference_factors(model, ekfac.layer_names, [single])
    fishers = {name: exact_fisher(ref) for name, ref in reference.items()}
    exact = influence_matrix(
        label_gradients(model, ekfac.layer_names, unpadded_examples([probe])),
        label_gradients(model, ekfac.layer_names, [single]),
        fishers,
        REGULARIZATION,
    )
    expected = sum(exact.values())
    assert relative_error(ekfac.influences(probe, single, REGULARIZATION), expected) < 1e-6
    assert relative_error(kfac.influences(probe, single, REGULARIZATION), expected) < 1e-6


@pytest.mark.parametrize("builder", [tiny_distilbert, tiny_llama])
def test_extra_padding_and_batch_size_change_nothing(builder):
    model = builder()
    train = _train()
    test = padded_batch(3, 6, seed=50)
    baseline = EkfacInfluence(model).fit(train).influences(test, train, REGULARIZATION)
    padded = [repad(b, 11) for b in train]
    regrouped = rebatch(train, 5)
    for variant in (padded, regrouped):
        engine = EkfacInfluence(model).fit(variant)
        scores = engine.influences(repad(test, 9), variant, REGULARIZATION)
        assert relative_error(scores, baseline) < 1e-9


def _with_labels(batches: list[dict], labels_from: int) -> list[dict]:
    generator = torch.Generator().manual_seed(labels_from)
    return [{**b, "labels": torch.randint(0, 2, b["labels"].shape, generator=generator)} for b in batches]


def test_exact_fisher_ignores_labels_and_empirical_uses_them():
    model = tiny_distilbert()
    train = _train()
    relabelled = _with_labels(train, labels_from=123)
    assert not all(torch.equal(a["labels"], b["labels"]) for a, b in zip(train, relabelled))

    def eigenvalues(fisher: str, data: list[dict]) -> torch.Tensor:
        engine = EkfacInfluence(model, fisher=fisher).fit(data)
        return torch.cat([f.eigenvalues.flatten() for f in engine.factors.values()])

    assert torch.equal(eigenvalues("exact", train), eigenvalues("exact", relabelled))
    assert relative_error(eigenvalues("empirical", train), eigenvalues("empirical", relabelled)) > 1e-5


def test_empirical_fisher_equals_its_brute_force():
    model = tiny_llama()
    train = _train()
    engine = EkfacInfluence(model, fisher="empirical", keep_covariance=True).fit(train)
    reference = reference_factors(model, engine.layer_names, unpadded_examples(train), label_vectors)
    for name in engine.layer_names:
        factors = engine.factors[name]
        assert relative_error(factors.covariance.gradient / factors.covariance.tokens, reference[name].gradient) < 1e-6
        expected = reference_eigenvalues(
            reference[name], factors.eigen.gradient_vectors, factors.eigen.activation_vectors
        )
        assert relative_error(factors.eigenvalues, expected) < 1e-6


def test_sampled_fisher_is_seeded_and_does_not_depend_on_batching():
    model = tiny_distilbert()
    train = _train()

    def eigenvalues(seed: int, data: list[dict]) -> torch.Tensor:
        engine = EkfacInfluence(model, fisher="sampled", seed=seed).fit(data)
        return torch.cat([f.eigenvalues.flatten() for f in engine.factors.values()])

    first = eigenvalues(1, train)
    assert torch.equal(first, eigenvalues(1, train))
    assert relative_error(eigenvalues(1, rebatch(train, 5)), first) < 1e-9
    assert relative_error(eigenvalues(2, train), first) > 1e-6


def test_positive_influence_means_the_training_example_lowers_the_test_loss():
    """Up-weighting n moves the weights by −ε(F+λI)⁻¹∇L_n; to first order the test loss then
    changes by −ε·I(q, n). Checked by applying that step to a copy of the model."""
    model = tiny_llama(seed=1)
    train = _train()
    test = padded_batch(2, 6, seed=77)
    engine = EkfacInfluence(model).fit(train)
    reg = 1e-2
    scores = engine.influences(test, train[0], reg)
    n = 1
    example = {k: v[n : n + 1] for k, v in train[0].items()}
    queries = engine.query_gradients(example)  # the training example's own rotated gradient
    epsilon = 1e-4
    stepped = copy.deepcopy(model)
    modules = dict(stepped.named_modules())
    with torch.no_grad():
        for name, factors in engine.factors.items():
            q_s, q_a = factors.eigen.gradient_vectors, factors.eigen.activation_vectors
            natural = q_s @ (queries.rotated[name][0] * factors.inverse_weights(reg)) @ q_a.T
            modules[name].weight -= epsilon * natural  # bias-free: the whole block is the weight

    def losses(m) -> torch.Tensor:
        logits = m(input_ids=test["input_ids"], attention_mask=test["attention_mask"]).logits
        return torch.nn.functional.cross_entropy(logits, test["labels"], reduction="none")

    change = losses(stepped) - losses(model)
    assert torch.allclose(change, -epsilon * scores[:, n], rtol=1e-3, atol=1e-12)
    assert (scores[:, n].sign() == -change.sign()).all()


def _state(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {name: m.training for name, m in model.named_modules()},
        {name: p.requires_grad for name, p in model.named_parameters()},
    )


def _hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())


def test_the_model_is_left_as_it_was_found():
    model = tiny_distilbert()
    model.train()
    model.distilbert.embeddings.requires_grad_(False)
    model.classifier.eval()
    before = _state(model)
    train = _train()
    engine = EkfacInfluence(model).fit(train)
    engine.influences(train[0], train[1], REGULARIZATION)
    engine.self_influences(train[0])
    after = _state(model)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1:] == after[1:]
    assert all(p.grad is None for p in model.parameters())
    assert _hook_count(model) == 0


def test_hooks_are_removed_and_state_restored_when_a_call_fails():
    model = tiny_distilbert()
    model.train()
    before = _state(model)
    broken = {"input_ids": torch.full((2, 4), 10_000), "attention_mask": torch.ones(2, 4), "labels": torch.zeros(2)}
    with pytest.raises(IndexError):
        EkfacInfluence(model).fit([broken])
    assert _hook_count(model) == 0
    assert before[1:] == _state(model)[1:]
    assert all(p.grad is None for p in model.parameters())


def test_progress_is_reported_and_cancel_stops_within_one_batch():
    model = tiny_distilbert()
    train = _train(count=5)
    events: list[ProgressEvent] = []
    EkfacInfluence(model).fit(train, progress=events.append)
    stages = [e.stage for e in events]
    assert stages.count("covariance") == 5 and stages.count("eigenvalue_correction") == 5
    assert stages.count("eigendecomposition") == 6
    assert events[-1].done == events[-1].total == 5

    cancel = threading.Event()
    seen: list[ProgressEvent] = []

    def cancel_after_two(event: ProgressEvent) -> None:
        seen.append(event)
        if event.done == 2:
            cancel.set()

    with pytest.raises(Cancelled):
        EkfacInfluence(model).fit(train, progress=cancel_after_two, cancel=cancel)
    assert [e.done for e in seen] == [1, 2]
    assert _hook_count(model) == 0


def test_layer_selection_errors_name_the_culprit():
    model = tiny_distilbert()
    with pytest.raises(LayerSelectionError, match="distilbert.embeddings.word_embeddings.*Embedding"):
        EkfacInfluence(model, layers=["distilbert.embeddings.word_embeddings"])
    with pytest.raises(LayerSelectionError, match="'\\*nothing\\*' matches no module"):
        EkfacInfluence(model, layers=["*nothing*"])
    with pytest.raises(LayerSelectionError, match="only non-linear"):
        EkfacInfluence(model, layers=["*LayerNorm"])
    engine = EkfacInfluence(model, layers=["*.ffn.lin1", "classifier"])
    assert engine.layer_names == [
        "distilbert.transformer.layer.0.ffn.lin1",
        "distilbert.transformer.layer.1.ffn.lin1",
        "classifier",
    ]


def test_unknown_fisher_and_mode_are_refused():
    model = tiny_distilbert()
    with pytest.raises(ValueError, match="unknown Fisher"):
        EkfacInfluence(model, fisher="true")
    with pytest.raises(ValueError, match="unknown mode"):
        EkfacInfluence(model, mode="diag")


def test_the_train_cache_changes_costs_not_results():
    model = tiny_distilbert()
    train = _train(count=4)
    test = padded_batch(3, 6, seed=31)
    cached = EkfacInfluence(model).fit(train)
    uncached = EkfacInfluence(model, cache_bytes=0).fit(train)
    assert len(cached.train_cache) == 4 and len(uncached.train_cache) == 0
    for name in cached.layer_names:
        assert torch.equal(cached.factors[name].eigenvalues, uncached.factors[name].eigenvalues)
    assert torch.equal(cached.influences(test, train, REGULARIZATION), uncached.influences(test, train, REGULARIZATION))
    # Other batches at the same positions are captured afresh, not taken from the cache.
    others = [padded_batch(4, 6, seed=40 + s) for s in range(4)]
    assert torch.equal(
        cached.influences(test, others, REGULARIZATION), uncached.influences(test, others, REGULARIZATION)
    )


@pytest.mark.parametrize("length, form", [(6, "gradients"), (16, "products")])
def test_the_cache_keeps_batches_in_the_eigenbasis_and_never_serves_a_stale_one(length, form):
    """Short sequences keep rotated token matrices, long ones (here, past ~10 tokens for the
    FFN layers) their products; a batch kept in another eigenbasis is captured again."""
    model = tiny_distilbert()
    train = _train(count=3, length=length)
    test = padded_batch(3, length, seed=33)
    cached = EkfacInfluence(model).fit(train)
    bases = {name: factors.eigen for name, factors in cached.factors.items()}
    key = batch_key(train[0], model_inputs(train[0]))
    entry = cached.train_cache.get(key, bases)
    assert entry is not None
    assert getattr(entry.layers["distilbert.transformer.layer.0.ffn.lin1"], form) is not None
    assert cached.train_cache.get(key) is None  # a pass needing raw tokens cannot use it
    other = EkfacInfluence(model, fisher="empirical", cache_bytes=0).fit(train)
    cached.factors = other.factors
    assert torch.equal(cached.influences(test, train, REGULARIZATION), other.influences(test, train, REGULARIZATION))


def test_float32_eigendecompositions_agree_with_float64():
    """The speed-up's accuracy cost, measured: influences within 1e-3 relative of float64's."""
    model = tiny_distilbert(dtype=torch.float32)
    train = _train(count=4)
    test = padded_batch(3, 6, seed=32)
    exact = EkfacInfluence(model).fit(train).influences(test, train, REGULARIZATION)
    fast = EkfacInfluence(model, eigen_precision="float32").fit(train).influences(test, train, REGULARIZATION)
    assert relative_error(fast, exact) < 1e-3
    assert float(torch.corrcoef(torch.stack([fast.flatten(), exact.flatten()]))[0, 1]) > 0.9999


def test_a_float32_eigendecomposition_is_checked_and_redone_when_inaccurate(monkeypatch):
    from influence import factors

    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(64, 40, generator=generator, dtype=torch.float64)
    matrix = rows.T @ rows / 64
    values, vectors = factors.symmetric_eigh(matrix, "float32")
    assert vectors.dtype == torch.float32
    assert factors.eigh_error(matrix.float(), values, vectors) <= factors.FLOAT32_EIGEN_TOLERANCE
    monkeypatch.setattr(factors, "FLOAT32_EIGEN_TOLERANCE", 0.0)  # no float32 result can pass now
    values, vectors = factors.symmetric_eigh(matrix, "float32")
    assert vectors.dtype == torch.float64
    assert relative_error(vectors @ torch.diag(values) @ vectors.T, matrix) < 1e-12
