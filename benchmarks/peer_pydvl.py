"""pyDVL's EkfacInfluence on the saved peer workload (run by peers.py in its own environment).

pyDVL calls ``model(x)`` with a single tensor, so the input ids and the attention mask
travel stacked in one (batch, 2, seq) tensor that a thin wrapper unpacks: the model sees
exactly the mask the other libraries pass. Its per-example gradients go through
``torch.func`` (vmap of jacrev), which needs eager attention (sdpa branches on data) and
transformers 4. Fit: ``fit`` with ``update_diagonal=True`` (EK-FAC); scoring: the test
examples' preconditioned gradients once (``influence_factors``), then
``influences_from_factors`` batch by batch over the training data — what
``influences(x_test, y_test, x, y)`` does, without holding every training gradient at once.
pyDVL has one curvature only, a rank-one surrogate of the true Fisher (``--fisher`` does
not apply).
"""

from __future__ import annotations

import pydvl
import torch
from peer_common import Batch, load_model, load_workload, runner_arguments, timed, warm_up, write_result
from pydvl.influence.torch import EkfacInfluence
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

PACKED_DIM = 1  # input_ids and attention_mask are stacked along this dimension


class PackedInputs(nn.Module):
    """The classifier as pyDVL wants it: one input tensor in, logits out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        input_ids, attention_mask = packed.unbind(PACKED_DIM)
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def pack(batch: Batch) -> torch.Tensor:
    return torch.stack((batch["input_ids"], batch["attention_mask"]), dim=PACKED_DIM)


def main() -> None:
    args = runner_arguments(__doc__.splitlines()[0], takes_fisher=False)
    saved = load_workload(args.work)
    model = load_model(args.work, saved, attn_implementation="eager")
    warm_up(model, saved.train[0])
    wrapped = PackedInputs(model).eval()
    train = TensorDataset(torch.cat([pack(b) for b in saved.train]), torch.cat([b["labels"] for b in saved.train]))
    loader = DataLoader(train, batch_size=saved.batch_size, shuffle=False)
    influence = EkfacInfluence(wrapped, update_diagonal=True, hessian_regularization=args.regularization)

    def score() -> torch.Tensor:
        factors = torch.cat([influence.influence_factors(pack(b), b["labels"]) for b in saved.test])
        blocks = [influence.influences_from_factors(factors, pack(b), b["labels"], mode="up") for b in saved.train]
        return torch.cat(blocks, dim=1)

    _, fit_s = timed(lambda: influence.fit(loader))
    scores, score_s = timed(score)
    write_result(args.out, "pyDVL", pydvl.__version__, "surrogate", fit_s, score_s, scores)


if __name__ == "__main__":
    main()
