"""Leave the user's model exactly as it was found, whatever happens inside a call."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


@contextmanager
def analysis_mode(model: nn.Module) -> Iterator[None]:
    """Evaluation mode with every parameter frozen, restored on exit even after an error.

    Freezing keeps autograd from computing weight gradients the engine does not use, and
    guarantees that no ``.grad`` is accumulated on the user's parameters. The training
    flag is restored module by module, so a model that mixed modes gets its mix back.
    """
    training = {module: module.training for module in model.modules()}
    requires_grad = {param: param.requires_grad for param in model.parameters()}
    model.eval()
    for param in requires_grad:
        param.requires_grad_(False)
    try:
        with torch.enable_grad():
            yield
    finally:
        for param, flag in requires_grad.items():
            param.requires_grad_(flag)
        for module, flag in training.items():
            module.training = flag
