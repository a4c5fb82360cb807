"""Low-rank query gradients (``query_rank``): each layer's q̃ kept as its truncated SVD, scored exactly as that."""

from __future__ import annotations

import pytest
import torch
from tiny_models import padded_batch, tiny_distilbert

from influence import EkfacInfluence
from influence.ekfac import Queries
from job.options import EngineOptions, UnsupportedOption

REGULARIZATIONS = [1e-4, 1e-1]


@pytest.fixture(scope="module")
def fitted():
    model = tiny_distilbert()  # float64: every identity below holds to rounding
    train = [padded_batch(4, 7, seed=80 + s) for s in range(3)]
    test = [padded_batch(3, 7, seed=90 + s) for s in range(2)]
    exact = EkfacInfluence(model).fit(train)
    return model, exact, train, test


def at_rank(fitted, rank: int) -> EkfacInfluence:
    model, exact, _, _ = fitted
    engine = EkfacInfluence(model, query_rank=rank)
    engine.set_factors(exact._bases(), {name: f.eigenvalues for name, f in exact.factors.items()})
    return engine


def truncated(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    return (u[..., :rank] * s[..., None, :rank]) @ vh[..., :rank, :]


def test_a_layer_is_kept_at_the_rank_where_that_is_smaller(fitted):
    engine = at_rank(fitted, 3)
    queries = engine.query_gradients(fitted[3])
    # lin1 is 12 × 9 (108 numbers; rank 3 keeps 63), the classifier 2 × 9 (18; rank 3 would keep 33)
    assert set(queries.low_rank) == {n for n in engine.layer_names if "classifier" not in n or "pre_" in n}
    assert "classifier" in queries.rotated
    dense = fitted[1].query_row_bytes
    assert engine.query_row_bytes < dense == fitted[1].tracked_parameters * 8


def test_low_rank_queries_are_the_truncated_gradients_and_score_as_them(fitted):
    model, exact, train, test = fitted
    engine = at_rank(fitted, 2)
    full, low = exact.query_gradients(test), engine.query_gradients(test)
    for name in low.low_rank:
        torch.testing.assert_close(low.dense(name), truncated(full.rotated[name], 2), rtol=1e-10, atol=1e-12)
    as_dense = Queries({name: low.dense(name) for name in engine.layer_names})
    scored = torch.cat([b.layers[0] for b in engine.iter_scores(low, train, REGULARIZATIONS)], dim=-1)
    expected = torch.cat([b.layers[0] for b in engine.iter_scores(as_dense, train, REGULARIZATIONS)], dim=-1)
    torch.testing.assert_close(scored, expected, rtol=1e-10, atol=1e-12 * float(expected.abs().max()))
    torch.testing.assert_close(
        engine.query_self_influence(low, REGULARIZATIONS), engine.query_self_influence(as_dense, REGULARIZATIONS)
    )


def test_the_error_falls_with_the_rank_and_vanishes_where_the_gradient_has_that_rank(fitted):
    """A classifier's last block and head see only the first token's output (the rest of the sequence
    never reaches the head after the last attention), so their query gradients are rank 1 exactly;
    the first block's are not, and their error falls as the rank grows."""
    model, exact, train, test = fitted
    reference = exact.influences_by_layer(test, train, 1e-4)

    def errors(rank: int) -> dict[str, float]:
        low = at_rank(fitted, rank).influences_by_layer(test, train, 1e-4)
        return {name: float((low[name] - reference[name]).norm() / reference[name].norm()) for name in reference}

    first = "distilbert.transformer.layer.0.ffn.lin1"
    by_rank = {rank: errors(rank) for rank in (1, 2, 4)}
    assert all(error < 1e-12 for name, error in by_rank[1].items() if ".layer.0." not in name)
    assert by_rank[1][first] > by_rank[2][first] > by_rank[4][first] > 0
    assert torch.equal(at_rank(fitted, 9).influences(test, train, 1e-4), exact.influences(test, train, 1e-4))


def test_low_rank_queries_in_chunks_give_the_same_numbers(fitted):
    model, exact, train, test = fitted
    whole = at_rank(fitted, 2).influences(test, train, 1e-4)
    chunked = EkfacInfluence(model, query_rank=2, query_bytes=at_rank(fitted, 2).query_row_bytes * 2)
    chunked.set_factors(exact._bases(), {name: f.eigenvalues for name, f in exact.factors.items()})
    torch.testing.assert_close(chunked.influences(test, train, 1e-4), whole, rtol=1e-10, atol=1e-12)


def test_the_rank_is_recorded_only_when_set_and_must_be_positive():
    assert "query_rank" not in EngineOptions().analysis_settings()  # stores made before it resume unchanged
    assert EngineOptions(query_rank=8).analysis_settings()["query_rank"] == 8
    with pytest.raises(UnsupportedOption, match="query rank must be a whole number >= 1"):
        EngineOptions(query_rank=0)
