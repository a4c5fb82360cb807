"""The names of the engine's stages and of their statuses: the only copy.

The engine names its progress events after them, the store keys its stage records by
them, and the UI shows them; ``store.schema`` derives the record keys of a store.
"""

from __future__ import annotations

STAGE_PREDICTIONS = "predictions"
STAGE_COVARIANCE = "covariance"
STAGE_EIGEN = "eigendecomposition"
STAGE_CORRECTION = "eigenvalue_correction"
STAGE_QUERIES = "queries"
STAGE_SCORES = "scores"
STAGES = (STAGE_PREDICTIONS, STAGE_COVARIANCE, STAGE_EIGEN, STAGE_CORRECTION, STAGE_QUERIES, STAGE_SCORES)
# The stages that fit curvature factors: run once per factor variant (a refit on other labels).
FACTOR_STAGES = (STAGE_COVARIANCE, STAGE_EIGEN, STAGE_CORRECTION)

STATUS_PENDING = "pending"
STATUS_RUNNING = "running"
STATUS_DONE = "done"
STATUS_FAILED = "failed"
STATUS_CANCELLED = "cancelled"
STATUSES = (STATUS_PENDING, STATUS_RUNNING, STATUS_DONE, STATUS_FAILED, STATUS_CANCELLED)
