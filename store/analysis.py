"""Rankings and statistics on influence scores, shared by the terminal UI and the export.

numpy only (no scipy), NaN-aware: a NaN score is one not computed yet (or, for
relative influence, one not available: see relative_scale) and is ignored; a
statistic that is undefined (fewer than two values, no spread) is NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from store.reader import StoreReader

SPEARMAN_THRESHOLD = 0.9
ROW_BATCH = 256  # test rows read at a time when a whole matrix is reduced
TOTAL_SERIES = "total"
# The two scores a ranking can use: raw influence I(q, n), or relative influence (RelatIF).
INFLUENCE, RELATIVE = "influence", "relative"
SCORES = (INFLUENCE, RELATIVE)


def relative_scale(train_self: np.ndarray) -> np.ndarray:
    """The divisor of relative influence: sqrt(I(n, n)) where I(n, n) is finite and > 0, NaN elsewhere.

    This is the one rule for a training example whose self-influence is missing (NaN:
    not written yet), zero, negative (a numerical failure: I(n, n) is a squared norm
    under a positive definite metric) or infinite: its relative influence is "not
    available" (NaN), never ±inf and never a division by a meaningless number.
    """
    train_self = np.asarray(train_self, dtype=np.float64)
    usable = np.isfinite(train_self) & (train_self > 0)
    return np.sqrt(np.where(usable, train_self, np.nan))


def relative_influence(row: np.ndarray, train_self: np.ndarray) -> np.ndarray:
    """RelatIF (Barshan et al., 2020): I(q, n) / sqrt(I(n, n)), float64, NaN where not available.

    ``row`` is (n_train,) or (n_test, n_train); ``train_self`` the (n_train,) self-influence
    I(n, n) at the same λ and variant (``StoreReader.self_influence(variant, k, "train")``).
    NaN where I(q, n) is NaN or ±inf (pending or invalid) and where relative_scale gives NaN;
    the result is never infinite.
    """
    with np.errstate(over="ignore"):  # float64 inputs near their limits: the inf becomes NaN below
        relative = np.asarray(row, dtype=np.float64) / relative_scale(train_self)
    return np.where(np.isfinite(relative), relative, np.nan)


def scores(row: np.ndarray, train_self: np.ndarray, score: str) -> np.ndarray:
    """``row`` itself (INFLUENCE) or its relative_influence (RELATIVE), as float64."""
    if score == RELATIVE:
        return relative_influence(row, train_self)
    if score == INFLUENCE:
        return np.asarray(row, dtype=np.float64)
    raise ValueError(f"unknown score {score!r}; scores are {SCORES}")


def top_k(row: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k most helpful (largest positive, first) and k most harmful (most negative, first) indices.

    Only positive values count as helpful and only negative ones as harmful, so
    either list may be shorter than k; NaN is ignored.
    """
    row = np.asarray(row, dtype=np.float64)
    return _largest(row, np.flatnonzero(row > 0), k), _largest(-row, np.flatnonzero(row < 0), k)


def _largest(values: np.ndarray, indices: np.ndarray, k: int) -> np.ndarray:
    """The ``indices`` of the k largest ``values``, largest first (ties by index)."""
    if indices.size > k:
        indices = np.sort(indices[np.argpartition(-values[indices], k - 1)[:k]]) if k > 0 else indices[:0]
    return indices[np.argsort(-values[indices], kind="stable")]


def extreme_pairs(matrix: np.ndarray, k: int, *, first_row: int = 0) -> list[tuple[int, int, float]]:
    """(test, train, value) of the k most positive pairs (largest first), then the k most negative.

    ``first_row`` is the test index of the matrix's first row, for matrices read in row batches.
    """
    matrix = np.asarray(matrix)
    helpful, harmful = top_k(matrix.ravel(), k)
    n_train = matrix.shape[1]
    return [
        (first_row + int(i // n_train), int(i % n_train), float(matrix.flat[i]))
        for i in np.concatenate([helpful, harmful])
    ]


def merge_extremes(pairs: list[tuple[int, int, float]], k: int) -> list[tuple[int, int, float]]:
    """The extremes among extremes: combine extreme_pairs of several row batches."""
    values = np.array([value for _, _, value in pairs], dtype=np.float64)
    helpful, harmful = top_k(values, k)
    return [pairs[i] for i in np.concatenate([helpful, harmful])]


def store_extremes(
    reader: StoreReader, variant: str, reg_index: int, k: int, score: str = INFLUENCE
) -> list[tuple[int, int, float]]:
    """extreme_pairs of a whole total-influence matrix (or its relative influence), ROW_BATCH test rows at a time."""
    return score_extremes(reader, variant, reg_index, k, (score,))[score]


def score_extremes(
    reader: StoreReader, variant: str, reg_index: int, k: int, kinds: tuple[str, ...] = SCORES
) -> dict[str, list[tuple[int, int, float]]]:
    """store_extremes under each score of ``kinds``, reading the matrix once."""
    train_self = reader.self_influence(variant, reg_index, "train") if RELATIVE in kinds else None
    pairs: dict[str, list[tuple[int, int, float]]] = {kind: [] for kind in kinds}
    for first in range(0, reader.n_test, ROW_BATCH):
        rows = slice(first, min(first + ROW_BATCH, reader.n_test))
        block = reader.influence_matrix(variant, reg_index, tests=rows)
        for kind in kinds:
            pairs[kind] += extreme_pairs(scores(block, train_self, kind), k, first_row=first)
    return {kind: merge_extremes(found, k) for kind, found in pairs.items()}


def _finite_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation over the positions where both are finite."""
    return _correlation(*_finite_pairs(a, b))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing the average of their ranks (as scipy.stats.rankdata)."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    boundaries = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1], True])
    averages = (boundaries[:-1] + boundaries[1:] - 1) / 2 + 1
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(averages, np.diff(boundaries))
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation over the positions where both are finite (average ranks for ties)."""
    a, b = _finite_pairs(a, b)
    return _correlation(average_ranks(a), average_ranks(b))


@dataclass(frozen=True)
class RegularizationReport:
    """How stable the ranking of training examples is across the λ sweep (the notebook's appendix).

    ``mean_influence[s, j]``: per training example, the mean influence over the test
    examples for series ``s`` (each layer, then the total) at λ index ``j``.
    ``pearson``/``spearman[s, j]`` compare λ index j with j + 1. A pair is stable when
    the Spearman of every layer with finite scores reaches ``threshold``;
    ``plateau`` is the longest run of stable pairs as λ indices (first, last),
    the run at the smallest λ on ties, and ``recommended`` its smallest λ — the
    least regularization whose ranking no longer changes. None when no pair is stable.
    """

    variant: str
    regularizations: list[float]
    series: list[str]
    mean_influence: np.ndarray
    pearson: np.ndarray
    spearman: np.ndarray
    threshold: float
    stable: np.ndarray
    plateau: tuple[int, int] | None
    recommended: float | None


def column_means(reader: StoreReader, variant: str, reg_index: int) -> np.ndarray:
    """Mean over test examples of each layer's and the total's influence: (n_layers + 1, n_train)."""
    n_series = len(reader.layers) + 1
    sums = np.zeros((n_series, reader.n_train))
    counts = np.zeros((n_series, reader.n_train))
    for first in range(0, reader.n_test, ROW_BATCH):
        rows = slice(first, min(first + ROW_BATCH, reader.n_test))
        for series, layer in enumerate([*range(len(reader.layers)), None]):
            block = reader.influence_matrix(variant, reg_index, layer=layer, tests=rows).astype(np.float64)
            finite = np.isfinite(block)
            sums[series] += np.where(finite, block, 0.0).sum(axis=0)
            counts[series] += finite.sum(axis=0)
    return np.divide(sums, counts, out=np.full_like(sums, np.nan), where=counts > 0)


def _longest_run(stable: np.ndarray) -> tuple[int, int] | None:
    """(first, last) pair index of the longest run of True, the earliest on ties."""
    best: tuple[int, int] | None = None
    start = None
    for index, ok in enumerate([*stable, False]):
        if ok and start is None:
            start = index
        elif not ok and start is not None:
            if best is None or index - 1 - start > best[1] - best[0]:
                best = (start, index - 1)
            start = None
    return best


def regularization_report(
    reader: StoreReader, variant: str, threshold: float = SPEARMAN_THRESHOLD
) -> RegularizationReport:
    """Compare neighbouring λ values of ``variant`` layer by layer; see RegularizationReport for the rule."""
    regs = list(reader.regularizations)
    means = np.stack([column_means(reader, variant, k) for k in range(len(regs))], axis=1)
    n_series, n_pairs = means.shape[0], len(regs) - 1
    pearsons = np.array([[pearson(means[s, j], means[s, j + 1]) for j in range(n_pairs)] for s in range(n_series)])
    spearmans = np.array([[spearman(means[s, j], means[s, j + 1]) for j in range(n_pairs)] for s in range(n_series)])
    layer_spearman = spearmans[:-1]  # the rule looks at the layers; the total is reported alongside
    finite = np.isfinite(layer_spearman)
    stable = finite.any(axis=0) & np.all(~finite | (layer_spearman >= threshold), axis=0)
    run = _longest_run(stable)
    plateau = None if run is None else (run[0], run[1] + 1)
    return RegularizationReport(
        variant=variant,
        regularizations=regs,
        series=[layer.name for layer in reader.layers] + [TOTAL_SERIES],
        mean_influence=means,
        pearson=pearsons,
        spearman=spearmans,
        threshold=threshold,
        stable=stable,
        plateau=plateau,
        recommended=None if plateau is None else regs[plateau[0]],
    )


@dataclass(frozen=True)
class RankChanges:
    """How one test example's ranking of training examples changed from clean to corrupted labels.

    Ranks are 0 for the most helpful; -1 where either score is not finite.
    ``sign_flipped``: training examples whose influence changed sign, largest change first.
    ``moved``: the k whose rank moved most, largest move first.
    """

    sign_flipped: np.ndarray
    moved: np.ndarray
    rank_clean: np.ndarray
    rank_corrupted: np.ndarray


def _descending_ranks(row: np.ndarray, keep: np.ndarray) -> np.ndarray:
    ranks = np.full(row.size, -1, dtype=np.int64)
    indices = np.flatnonzero(keep)
    ranks[indices[np.argsort(-row[indices], kind="stable")]] = np.arange(indices.size)
    return ranks


def rank_changes(clean_row: np.ndarray, corrupted_row: np.ndarray, k: int) -> RankChanges:
    clean, corrupted = np.asarray(clean_row, dtype=np.float64), np.asarray(corrupted_row, dtype=np.float64)
    keep = np.isfinite(clean) & np.isfinite(corrupted)
    rank_clean, rank_corrupted = _descending_ranks(clean, keep), _descending_ranks(corrupted, keep)
    flipped = np.flatnonzero(keep & (np.sign(clean) * np.sign(corrupted) < 0))
    flipped = flipped[np.argsort(-np.abs(corrupted[flipped] - clean[flipped]), kind="stable")]
    candidates = np.flatnonzero(keep)
    moves = np.abs(rank_clean[candidates] - rank_corrupted[candidates])
    moved = candidates[np.argsort(-moves, kind="stable")[:k]]
    return RankChanges(sign_flipped=flipped, moved=moved, rank_clean=rank_clean, rank_corrupted=rank_corrupted)
