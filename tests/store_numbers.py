"""Every number a reader can get from a finished store, and their comparison to float32 rounding.

"The same" is float32 rounding: partial sums resume bit for bit, but BLAS kernels may round
differently when the same product meets differently shaped or aligned memory (a cached batch
against a recaptured one, a chunk of queries against the whole set), so values are compared to
a few units in the last place.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from store.reader import StoreReader

ROUNDING = 1e-5  # float32 rounding, a few units in the last place


def snapshot(path: Path) -> dict[str, np.ndarray]:
    """The scores (total and per layer), self-influences, corrected eigenvalues and predictions."""
    with StoreReader(path) as reader:
        assert all(record.status == "done" for record in reader.stages().values()), reader.stages()
        numbers = {}
        for variant in reader.variants:
            for k in range(len(reader.regularizations)):
                numbers[f"{variant}/{k}/total"] = reader.influence_matrix(variant, k)
                for split in ("train", "test"):
                    numbers[f"{variant}/{k}/{split}_self"] = reader.self_influence(variant, k, split)
                for layer in range(len(reader.layers)):
                    numbers[f"{variant}/{k}/layer{layer}"] = reader.influence_matrix(variant, k, layer=layer)
        for layer in range(len(reader.layers)):
            numbers[f"lambda{layer}"] = reader.factor("clean", layer, "corrected_eigenvalues")
        numbers["probabilities"] = reader.examples("test").probabilities
        return numbers


def assert_same_numbers(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray]) -> None:
    assert set(actual) == set(expected)
    for key, value in expected.items():
        scale = float(np.abs(value).max()) if value.size else 0.0
        np.testing.assert_allclose(actual[key], value, rtol=ROUNDING, atol=ROUNDING * scale, err_msg=key)
