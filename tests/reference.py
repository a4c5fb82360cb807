"""Brute-force references for the engine: explicit per-example gradients and explicit matrices.

Nothing here shares code with ``influence``: gradients come from autograd on the
parameters, one example at a time with its padding removed, and the curvature is built
as dense float64 matrices and inverted with ``torch.linalg.solve``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D


@dataclass
class ExampleGradients:
    """One example: per layer, real-token activations (T, in'), and for each logit vector
    its token output-gradients (T, out) and its weight gradient (out, in')."""

    activations: dict[str, torch.Tensor]
    token_gradients: list[dict[str, torch.Tensor]]
    weight_gradients: list[dict[str, torch.Tensor]]


def _weight_gradient(module: nn.Module, grads: tuple[torch.Tensor, ...]) -> torch.Tensor:
    weight = grads[0].T if isinstance(module, Conv1D) else grads[0]
    if module.bias is None:
        return weight
    return torch.cat([weight, grads[1].unsqueeze(1)], dim=1)


def _gradients(model: nn.Module, layer_names: list[str], features: dict, objectives) -> ExampleGradients:
    """One unpadded example's forward pass; ``objectives(logits)`` gives the scalars whose gradients are wanted."""
    modules = dict(model.named_modules())
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for name in layer_names:

        def hook(module, args, output, name=name):
            inputs[name] = args[0]
            outputs[name] = output

        handles.append(modules[name].register_forward_hook(hook))
    model.eval()
    try:
        out = model(**features)
        logits = getattr(out, "logits", out)[0]
    finally:
        for handle in handles:
            handle.remove()
    activations = {}
    for name in layer_names:
        module = modules[name]
        rows = inputs[name].detach().reshape(-1, inputs[name].shape[-1])
        if module.bias is not None:
            rows = torch.cat([rows, torch.ones(rows.shape[0], 1, dtype=rows.dtype)], dim=1)
        activations[name] = rows
    token_gradients, weight_gradients = [], []
    for objective in objectives(logits):
        targets = [outputs[n] for n in layer_names]
        grads = torch.autograd.grad(objective, targets, retain_graph=True)
        token_gradients.append({n: g.reshape(-1, g.shape[-1]) for n, g in zip(layer_names, grads)})
        per_layer = {}
        for name in layer_names:
            module = modules[name]
            params = [module.weight] + ([module.bias] if module.bias is not None else [])
            per_layer[name] = _weight_gradient(module, torch.autograd.grad(objective, params, retain_graph=True))
        weight_gradients.append(per_layer)
    return ExampleGradients(activations, token_gradients, weight_gradients)


def example_gradients(
    model: nn.Module, layer_names: list[str], example: dict[str, torch.Tensor], vectors_fn
) -> ExampleGradients:
    """``example``: one unpadded example (batch of 1). ``vectors_fn(probabilities, label)`` returns
    the logit vectors (k, C) whose gradients are wanted."""
    features = {k: v for k, v in example.items() if k != "labels"}

    def objectives(logits: torch.Tensor) -> list[torch.Tensor]:
        vectors = vectors_fn(torch.softmax(logits.detach(), dim=0), int(example["labels"][0]))
        return [logits @ vector for vector in vectors]

    return _gradients(model, layer_names, features, objectives)


def lm_example_gradients(
    model: nn.Module, layer_names: list[str], example: dict[str, torch.Tensor], target_sets: list[torch.Tensor]
) -> ExampleGradients:
    """A causal LM's example (batch of 1, unpadded): for each label set (T,) with −100 outside the
    completion, the gradient of Σ_t −log p(label_t | tokens < t), written out as cross-entropy here."""
    features = {k: v for k, v in example.items() if k != "labels"}

    def objectives(logits: torch.Tensor) -> list[torch.Tensor]:
        scalars = []
        for labels in target_sets:
            keep = labels[1:] != -100
            log_probabilities = torch.log_softmax(logits[:-1], dim=-1)
            scalars.append(-log_probabilities[keep, labels[1:][keep]].sum())
        return scalars

    return _gradients(model, layer_names, features, objectives)


def exact_fisher_vectors(probabilities: torch.Tensor, label: int) -> torch.Tensor:
    """Columns of B = diag(√p) − p√pᵀ (as rows), BBᵀ = diag(p) − ppᵀ; the label plays no part."""
    root = probabilities.sqrt()
    return (torch.diag(root) - probabilities.unsqueeze(1) * root.unsqueeze(0)).T


def label_vectors(probabilities: torch.Tensor, label: int) -> torch.Tensor:
    """The cross-entropy gradient p − e_y: the loss gradient, and the empirical Fisher's vector."""
    one_hot = torch.zeros_like(probabilities)
    one_hot[label] = 1.0
    return (probabilities - one_hot).unsqueeze(0)


def unpadded_examples(batches: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Each example alone with its padding cut off (right padding)."""
    examples = []
    for batch in batches:
        for i in range(batch["input_ids"].shape[0]):
            length = int(batch["attention_mask"][i].sum())
            examples.append(
                {
                    "input_ids": batch["input_ids"][i : i + 1, :length],
                    "attention_mask": batch["attention_mask"][i : i + 1, :length],
                    "labels": batch["labels"][i : i + 1],
                }
            )
    return examples


@dataclass
class ReferenceFactors:
    activation: torch.Tensor  # A: mean over real tokens of āāᵀ
    gradient: torch.Tensor  # S: mean over real tokens of Σ_c g_c g_cᵀ
    per_example: list[list[torch.Tensor]]  # Fisher weight gradients [example][vector] (out, in')


def reference_factors(model, layer_names, examples, fisher_vectors=exact_fisher_vectors) -> dict[str, ReferenceFactors]:
    grads = [example_gradients(model, layer_names, ex, fisher_vectors) for ex in examples]
    return factors_of(grads, layer_names)


def factors_of(grads: list[ExampleGradients], layer_names: list[str]) -> dict[str, ReferenceFactors]:
    """A and S as means over every example's real tokens, and the per-example weight gradients."""
    result = {}
    for name in layer_names:
        tokens = sum(g.activations[name].shape[0] for g in grads)
        a = sum(g.activations[name].T @ g.activations[name] for g in grads) / tokens
        s = sum(tg[name].T @ tg[name] for g in grads for tg in g.token_gradients) / tokens
        per_example = [[wg[name] for wg in g.weight_gradients] for g in grads]
        result[name] = ReferenceFactors(a, s, per_example)
    return result


def reference_eigenvalues(factors: ReferenceFactors, q_s: torch.Tensor, q_a: torch.Tensor) -> torch.Tensor:
    """Λ = (1/N) Σ_n Σ_c (Q_Sᵀ DW Q_A)², from explicit weight gradients."""
    total = sum((q_s.T @ dw @ q_a).square() for grads in factors.per_example for dw in grads)
    return total / len(factors.per_example)


def kron_fisher(q_s: torch.Tensor, q_a: torch.Tensor, eigenvalues: torch.Tensor) -> torch.Tensor:
    """The explicit matrix (Q_S ⊗ Q_A) diag(Λ) (Q_S ⊗ Q_A)ᵀ acting on row-major vec(DW)."""
    basis = torch.kron(q_s, q_a)
    return basis @ torch.diag(eigenvalues.reshape(-1)) @ basis.T


def exact_fisher(factors: ReferenceFactors) -> torch.Tensor:
    """(1/N) Σ_n Σ_c vec(DW) vec(DW)ᵀ: the layer's exact Fisher block."""
    vecs = [dw.reshape(-1) for grads in factors.per_example for dw in grads]
    return sum(torch.outer(v, v) for v in vecs) / len(factors.per_example)


def label_gradients(model, layer_names, examples) -> list[dict[str, torch.Tensor]]:
    """∇L per example per layer (out, in'), with each example's own label."""
    return [example_gradients(model, layer_names, ex, label_vectors).weight_gradients[0] for ex in examples]


def influence_matrix(
    test_grads: list[dict[str, torch.Tensor]],
    train_grads: list[dict[str, torch.Tensor]],
    fishers: dict[str, torch.Tensor],
    regularization: float,
) -> dict[str, torch.Tensor]:
    """Per layer: I[q, n] = vec(∇L_q)ᵀ (F + λI)⁻¹ vec(∇L_n), by a dense solve."""
    result = {}
    for name, fisher in fishers.items():
        damped = fisher + regularization * torch.eye(fisher.shape[0], dtype=fisher.dtype)
        train = torch.stack([g[name].reshape(-1) for g in train_grads], dim=1)
        test = torch.stack([g[name].reshape(-1) for g in test_grads])
        result[name] = test @ torch.linalg.solve(damped, train)
    return result


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-300))


def assert_covariances_match(engine, reference: dict[str, ReferenceFactors], tolerance: float) -> None:
    """The engine's A and S (sums over tokens) as means, against the explicit ones."""
    for name in engine.layer_names:
        sums = engine.factors[name].covariance
        assert relative_error(sums.activation / sums.tokens, reference[name].activation) < tolerance, name
        assert relative_error(sums.gradient / sums.tokens, reference[name].gradient) < tolerance, name


def assert_eigenvalues_match(engine, reference: dict[str, ReferenceFactors], tolerance: float) -> None:
    """The corrected eigenvalues against Λ from explicit gradients, in the engine's own eigenbasis."""
    for name in engine.layer_names:
        factors = engine.factors[name]
        expected = reference_eigenvalues(
            reference[name], factors.eigen.gradient_vectors, factors.eigen.activation_vectors
        )
        assert relative_error(factors.eigenvalues, expected) < tolerance, name


def assert_influences_match(
    engine,
    test,
    train,
    test_grads: list[dict[str, torch.Tensor]],
    train_grads: list[dict[str, torch.Tensor]],
    regularization: float,
    tolerance: float,
) -> None:
    """Per layer and in total, the engine's influences against a dense solve with its own curvature."""
    fishers = {
        name: kron_fisher(f.eigen.gradient_vectors, f.eigen.activation_vectors, f.eigenvalues)
        for name, f in engine.factors.items()
    }
    expected = influence_matrix(test_grads, train_grads, fishers, regularization)
    by_layer = engine.influences_by_layer(test, train, regularization=regularization)
    for name in engine.layer_names:
        assert relative_error(by_layer[name], expected[name]) < tolerance, name
    total = engine.influences(test, train, regularization=regularization)
    assert relative_error(total, sum(expected.values())) < tolerance
    assert torch.allclose(total, sum(by_layer.values()), rtol=1e-12, atol=1e-12)
