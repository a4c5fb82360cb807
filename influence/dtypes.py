"""torch's dtypes for the names ``job.options`` uses (the options are pure Python)."""

from __future__ import annotations

import torch

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bf16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    return TORCH_DTYPES[name]
