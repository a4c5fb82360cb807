"""Token shares: each pair's influence split exactly over the tokens of either side."""

from __future__ import annotations

import pytest
import torch
from tiny_models import lm_batch, padded_batch, tiny_distilbert, tiny_llama_lm

from influence import EkfacInfluence

REGULARIZATION = 1e-3
MODELS = {
    "classifier": (tiny_distilbert, lambda size, seed: padded_batch(size, 7, seed=seed)),
    "causal-lm": (tiny_llama_lm, lambda size, seed: lm_batch(size, 8, seed=seed)),
}


@pytest.mark.parametrize("kind", list(MODELS))
def test_the_shares_of_either_side_sum_to_every_pairs_influence(kind):
    build, batch = MODELS[kind]
    model = build()
    train = [batch(4, 70 + s) for s in range(2)]
    engine = EkfacInfluence(model).fit(train)
    test, one = batch(3, 90), train[1]
    shares = engine.token_shares(test, one, REGULARIZATION)
    influence = engine.influences(test, one, REGULARIZATION)
    assert shares.train.shape == (3, 4, one["input_ids"].shape[1])
    assert shares.test.shape == (3, 4, test["input_ids"].shape[1])
    scale = float(influence.abs().max())
    for side in (shares.train, shares.test):
        torch.testing.assert_close(side.sum(-1) + shares.pooled, influence, rtol=1e-10, atol=1e-12 * scale)
    # a classifier's head reads the pooled first token; a causal LM has no pooled layer
    assert bool(shares.pooled.abs().gt(0).all()) == (kind == "classifier")
    assert not shares.train[:, one["attention_mask"] == 0].any()  # padding takes no share
    assert not shares.test.permute(0, 2, 1)[test["attention_mask"] == 0].any()
    assert shares.train.abs().gt(0).sum() > influence.numel()  # spread over tokens, not one per pair
