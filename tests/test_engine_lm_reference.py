"""The engine on causal LMs against brute force: autograd on the weights, one unpadded example at a time.

An example's loss is the summed cross-entropy of its completion tokens (labels ≠ −100, each
predicted from the position before). Its gradient reaches the prompt's positions through
attention, so the prompt's rows belong to the per-example gradient; padding belongs to
nothing. Both models are float64: GPT-2 (Conv1D with biases) and Llama (bias-free Linear).
"""

from __future__ import annotations

import pytest
import torch
from reference import (
    assert_covariances_match,
    assert_eigenvalues_match,
    assert_influences_match,
    factors_of,
    influence_matrix,
    kron_fisher,
    lm_example_gradients,
    reference_eigenvalues,
    relative_error,
)
from tiny_models import lm_batch, lm_unpadded, rebatch, repad, tiny_gpt2_lm, tiny_llama_lm, tiny_neox_lm

from influence import EkfacInfluence
from influence.task import IGNORE_INDEX, completion_logits, sampled_tokens, shifted_targets
from job.options import UnsupportedOption

TOLERANCE = 1e-6
REGULARIZATION = 1e-3
SEED = 7
MODELS = {"gpt2-conv1d": tiny_gpt2_lm, "llama-bias-free": tiny_llama_lm}
EXPECTED_LAYERS = {
    "gpt2": [f"transformer.h.{i}.mlp.{name}" for i in range(2) for name in ("c_fc", "c_proj")],
    "llama": [f"model.layers.{i}.mlp.{name}" for i in range(2) for name in ("gate_proj", "up_proj", "down_proj")],
}


def train_batches() -> list[dict]:
    return [lm_batch(3, 7, seed=20 + s, min_prompt=2) for s in range(3)]


def engine_sampled_labels(model, batches: list[dict]) -> list[torch.Tensor]:
    """The labels the engine draws for the sampled Fisher, per example (1, T), from each batch's own logits."""
    labels, position = [], 0
    for batch in batches:
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        targets = shifted_targets(batch["labels"])
        completion = targets != IGNORE_INDEX
        drawn = torch.full_like(targets, IGNORE_INDEX)
        drawn[completion] = sampled_tokens(
            completion_logits(logits, targets), completion.sum(dim=1).tolist(), SEED, position
        )
        for i in range(batch["input_ids"].shape[0]):
            length = int(batch["attention_mask"][i].sum())
            full = torch.cat([torch.full((1,), -100), drawn[i]])  # back to unshifted positions
            labels.append(full[:length])
        position += batch["input_ids"].shape[0]
    return labels


@pytest.fixture(scope="module", params=[(m, f) for m in sorted(MODELS) for f in ("empirical", "sampled")])
def fitted(request):
    name, fisher = request.param
    model = MODELS[name]()
    train = train_batches()
    test = lm_batch(2, 7, seed=99, min_prompt=2)
    engine = EkfacInfluence(model, fisher=fisher, keep_covariance=True, seed=SEED).fit(train)
    examples = lm_unpadded(train)
    fisher_labels = (
        [ex["labels"][0] for ex in examples] if fisher == "empirical" else engine_sampled_labels(model, train)
    )
    grads = [lm_example_gradients(model, engine.layer_names, ex, [t]) for ex, t in zip(examples, fisher_labels)]
    return engine, model, train, test, examples, factors_of(grads, engine.layer_names)


def label_gradients(model, names, examples) -> list[dict[str, torch.Tensor]]:
    return [lm_example_gradients(model, names, ex, [ex["labels"][0]]).weight_gradients[0] for ex in examples]


def test_the_task_is_detected_and_the_mlp_blocks_are_tracked(fitted):
    engine, model, *_ = fitted
    assert engine.options.task == "causal-lm"
    assert engine.layer_names == EXPECTED_LAYERS[model.config.model_type]


def test_covariances_over_every_real_position_equal_brute_force(fitted):
    """A and S are means over prompt and completion positions, padding excluded."""
    engine, *_, reference = fitted
    assert_covariances_match(engine, reference, TOLERANCE)


def test_corrected_eigenvalues_equal_brute_force(fitted):
    engine, *_, reference = fitted
    assert_eigenvalues_match(engine, reference, TOLERANCE)


def test_influences_equal_a_dense_solve(fitted):
    engine, model, train, test, examples, _ = fitted
    test_grads = label_gradients(model, engine.layer_names, lm_unpadded([test]))
    train_grads = label_gradients(model, engine.layer_names, examples)
    assert_influences_match(engine, test, train, test_grads, train_grads, REGULARIZATION, TOLERANCE)
    assert (
        relative_error(
            engine.self_influences(test, REGULARIZATION), torch.diagonal(engine.influences(test, test, REGULARIZATION))
        )
        < 1e-10
    )


def test_the_per_example_gradient_is_autograds_prompt_rows_included(fitted):
    """Rotated back, the engine's query gradient is autograd's weight gradient, and the prompt's
    positions contribute to it (the completion's loss reaches them through attention)."""
    engine, model, _, test, *_ = fitted
    example = lm_unpadded([test])[0]
    queries = engine.query_gradients(example)
    autograd = label_gradients(model, engine.layer_names, [example])[0]
    prompt_only = lm_example_gradients(model, engine.layer_names, example, [example["labels"][0]])
    for name in engine.layer_names:
        eigen = engine.factors[name].eigen
        gradient = eigen.gradient_vectors @ queries.rotated[name][0] @ eigen.activation_vectors.T
        assert relative_error(gradient, autograd[name]) < TOLERANCE, name
    # The prompt rows' share: Σ over prompt positions of g_t ā_tᵀ is not zero in the first block's layers.
    first = engine.layer_names[0]
    prompt = int((example["labels"][0] == -100).sum())
    rows = prompt_only.token_gradients[0][first][:prompt].T @ prompt_only.activations[first][:prompt]
    assert rows.abs().max() > 1e-8 * autograd[first].abs().max()


def test_a_fused_attention_projection_and_the_output_embedding_can_be_tracked():
    """GPT-NeoX's query_key_value (one Linear for all three) and lm_head (vocabulary × width), on request."""
    model = tiny_neox_lm()
    train, test = train_batches(), lm_batch(2, 7, seed=99, min_prompt=2)
    layers = ["*.attention.query_key_value", "*.mlp.dense_4h_to_h", "lm_head"]
    engine = EkfacInfluence(model, layers, fisher="empirical").fit(train)
    assert engine.layer_names[-1] == "lm_head" and len(engine.layer_names) == 5
    examples = lm_unpadded(train)
    grads = [lm_example_gradients(model, engine.layer_names, ex, [ex["labels"][0]]) for ex in examples]
    reference = factors_of(grads, engine.layer_names)
    fishers = {}
    for name, factors in engine.factors.items():
        expected = reference_eigenvalues(
            reference[name], factors.eigen.gradient_vectors, factors.eigen.activation_vectors
        )
        assert relative_error(factors.eigenvalues, expected) < TOLERANCE, name
        fishers[name] = kron_fisher(factors.eigen.gradient_vectors, factors.eigen.activation_vectors, expected)
    test_grads = label_gradients(model, engine.layer_names, lm_unpadded([test]))
    expected = influence_matrix(test_grads, [g.weight_gradients[0] for g in grads], fishers, REGULARIZATION)
    assert relative_error(engine.influences(test, train, REGULARIZATION), sum(expected.values())) < TOLERANCE


def test_padding_and_batching_change_no_score():
    model = tiny_llama_lm()
    train = train_batches()
    test = lm_batch(2, 7, seed=99, min_prompt=2)
    scores = EkfacInfluence(model, fisher="sampled", seed=SEED).fit(train).influences(test, train, REGULARIZATION)
    padded = [repad(batch, 11) for batch in train]
    regrouped = rebatch(train, 2)
    for other in (padded, regrouped):
        again = EkfacInfluence(model, fisher="sampled", seed=SEED).fit(other)
        assert relative_error(again.influences(repad(test, 10), other, REGULARIZATION), scores) < 1e-9


def test_the_exact_fisher_is_refused_with_the_reason():
    with pytest.raises(UnsupportedOption, match="sums over the whole vocabulary at every token"):
        EkfacInfluence(tiny_gpt2_lm(), fisher="exact")
    assert EkfacInfluence(tiny_gpt2_lm()).options.fisher == "sampled"
