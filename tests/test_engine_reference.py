"""The engine against brute force: explicit per-example gradients and dense float64 matrices."""

from __future__ import annotations

import pytest
import torch
from reference import (
    assert_covariances_match,
    assert_eigenvalues_match,
    assert_influences_match,
    exact_fisher,
    influence_matrix,
    label_gradients,
    reference_factors,
    relative_error,
    unpadded_examples,
)
from tiny_models import padded_batch, tiny_distilbert, tiny_gpt2, tiny_llama

from influence import EkfacInfluence

TOLERANCE = 1e-6
REGULARIZATION = 1e-3

MODELS = {
    "distilbert": lambda: tiny_distilbert(),
    "llama-bias-free": lambda: tiny_llama(),
    "gpt2-conv1d": lambda: tiny_gpt2(),
    "distilbert-3-classes": lambda: tiny_distilbert(num_labels=3),
}


def _num_labels(model) -> int:
    return model.config.num_labels


@pytest.fixture(scope="module", params=sorted(MODELS))
def fitted(request):
    """A fitted engine with its data and the brute-force factors of the same data."""
    model = MODELS[request.param]()
    labels = _num_labels(model)
    train = [padded_batch(4, 6, seed=s, num_labels=labels) for s in range(3)]
    test = padded_batch(3, 6, seed=99, num_labels=labels)
    engine = EkfacInfluence(model, keep_covariance=True).fit(train)
    examples = unpadded_examples(train)
    reference = reference_factors(model, engine.layer_names, examples)
    return engine, model, train, test, examples, reference


def test_tracks_the_expected_layers(fitted):
    engine, model, *_ = fitted
    kind = model.config.model_type
    expected = {
        "distilbert": [
            "distilbert.transformer.layer.0.ffn.lin1",
            "distilbert.transformer.layer.0.ffn.lin2",
            "distilbert.transformer.layer.1.ffn.lin1",
            "distilbert.transformer.layer.1.ffn.lin2",
            "pre_classifier",
            "classifier",
        ],
        "llama": [
            "model.layers.0.mlp.gate_proj",
            "model.layers.0.mlp.up_proj",
            "model.layers.0.mlp.down_proj",
            "score",
        ],
        "gpt2": ["transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj", "score"],
    }[kind]
    assert engine.layer_names == expected
    if kind == "llama":
        assert not any(layer.has_bias for layer in engine.layers)


def test_covariances_equal_brute_force(fitted):
    engine, *_, reference = fitted
    assert_covariances_match(engine, reference, TOLERANCE)


def test_eigenvectors_span_the_eigenspaces_of_the_reference(fitted):
    """Q is orthonormal and Qᵀ A_ref Q is diagonal with the engine's eigenvalues:
    the spans agree even where eigenvalues repeat and single vectors are not unique."""
    engine, _, _, _, _, reference = fitted
    for name in engine.layer_names:
        eigen = engine.factors[name].eigen
        for vectors, values, matrix in (
            (eigen.activation_vectors, eigen.activation_values, reference[name].activation),
            (eigen.gradient_vectors, eigen.gradient_values, reference[name].gradient),
        ):
            identity = torch.eye(vectors.shape[0], dtype=vectors.dtype)
            assert relative_error(vectors.T @ vectors, identity) < TOLERANCE
            assert relative_error(vectors.T @ matrix @ vectors, torch.diag(values)) < TOLERANCE, name


def test_corrected_eigenvalues_equal_brute_force(fitted):
    engine, *_, reference = fitted
    assert_eigenvalues_match(engine, reference, TOLERANCE)


def test_influences_equal_a_dense_solve(fitted):
    engine, model, train, test, examples, _ = fitted
    test_grads = label_gradients(model, engine.layer_names, unpadded_examples([test]))
    train_grads = label_gradients(model, engine.layer_names, examples)
    assert_influences_match(engine, test, train, test_grads, train_grads, REGULARIZATION, TOLERANCE)


def test_self_influence_is_the_diagonal(fitted):
    engine, _, train, *_ = fitted
    batch = train[0]
    full = engine.influences(batch, batch, regularization=REGULARIZATION)
    assert relative_error(engine.self_influences(batch, regularization=REGULARIZATION), torch.diagonal(full)) < 1e-10


def test_sweep_entries_equal_direct_calls(fitted):
    engine, _, train, test, *_ = fitted
    values = [1e-7, 1e-5, 1e-3, 1e-1]
    sweep = engine.explore_hessian_regularization(test, train, values)
    assert list(sweep) == values
    for reg in values:
        direct = engine.influences_by_layer(test, train, regularization=reg)
        for name in engine.layer_names:
            assert torch.equal(sweep[reg][name], direct[name])


def test_ekfac_is_closer_than_kfac_to_the_exact_fisher():
    """On a small model, EK-FAC tracks the exact damped-Fisher influence better than K-FAC.

    The reference is the exact Fisher of each layer's block (what both approximate), and λ
    is set relative to the curvature's scale so that it does not wash the difference out.
    """
    model = tiny_llama(seed=0)
    train = [padded_batch(8, 8, seed=100 + s) for s in range(6)]
    test = padded_batch(6, 8, seed=7)
    ekfac = EkfacInfluence(model, mode="ekfac").fit(train)
    kfac = EkfacInfluence(model, mode="kfac").fit(train)
    examples = unpadded_examples(train)
    reference = reference_factors(model, ekfac.layer_names, examples)
    fishers = {name: exact_fisher(ref) for name, ref in reference.items()}
    test_grads = label_gradients(model, ekfac.layer_names, unpadded_examples([test]))
    train_grads = label_gradients(model, ekfac.layer_names, examples)
    mean_eigenvalue = torch.cat([f.eigenvalues.flatten() for f in ekfac.factors.values()]).mean()
    regularization = float(1e-2 * mean_eigenvalue)
    exact = sum(influence_matrix(test_grads, train_grads, fishers, regularization).values()).flatten()

    def correlation(a: torch.Tensor) -> float:
        return float(torch.corrcoef(torch.stack([a.flatten(), exact]))[0, 1])

    ekfac_scores = ekfac.influences(test, train, regularization)
    kfac_scores = kfac.influences(test, train, regularization)
    assert correlation(ekfac_scores) > correlation(kfac_scores)
    assert relative_error(ekfac_scores.flatten(), exact) < relative_error(kfac_scores.flatten(), exact)
    assert correlation(ekfac_scores) > 0.97
