"""Several processes, one analysis: torch.distributed's ranks, what each owns, and how results meet.

``torchrun`` (or ``influence-explorer --nproc N``, which starts it) launches the processes and
sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous; :func:`join` opens the process
group (NCCL on GPUs, gloo on CPUs). The split (docs/architecture.md, "Ranks"):

* the passes over training batches (covariance, eigenvalue correction) take every
  ``world``-th batch (:meth:`Ranks.owns`) and their sums are all-reduced;
* eigendecompositions go round the ranks layer by layer and are broadcast from their owner;
* every rank takes the test gradients of a chunk of queries itself; the score blocks go
  round the ranks and are gathered on rank 0, the only one that opens the store.

One process is ``Ranks()`` (rank 0 of 1), for which every method here is a no-op or the identity.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Mapping, Optional, Sequence, TypeVar

import torch
import torch.distributed as dist

from job.channel import LOCAL_RANK_ENV, RANK_ENV, WORLD_SIZE_ENV
from job.errors import UserError

T = TypeVar("T")
COLLECTIVE_TIMEOUT = timedelta(hours=2)  # rank 0 alone computes the predictions while the others wait


@dataclass(frozen=True)
class Ranks:
    """This process's place among ``world`` ranks; ``device`` is where its collectives' tensors live."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def leads(self) -> bool:
        """Rank 0: it alone reads and writes the store and reports progress."""
        return self.rank == 0

    def owner(self, index: int) -> int:
        return index % self.world

    def owns(self, index: int) -> bool:
        """Whether work item ``index`` (a batch, a layer, a score block) is this rank's."""
        return self.owner(index) == self.rank

    def agree(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (the others pass anything, None say)."""
        return self.share(value, 0)

    def share(self, value: T, owner: int) -> T:
        """``owner``'s ``value`` (tensors and dataclasses of them included) on every rank, on its device."""
        if self.world == 1:
            return value
        box = [_moved(value, torch.device("cpu")) if self.rank == owner else None]
        dist.broadcast_object_list(box, src=owner, device=_object_device(self.device))
        return _moved(box[0], self.device)

    def gather(self, value: Any) -> Optional[list[Any]]:
        """Every rank's ``value`` on rank 0, in rank order; None on the others."""
        if self.world == 1:
            return [value]
        gathered: Optional[list[Any]] = [None] * self.world if self.leads else None
        dist.gather_object(_moved(value, torch.device("cpu")), gathered, dst=0)
        return gathered

    def all_reduce_sums(self, sums: Mapping[str, Any]) -> None:
        """Add every rank's running sums (``CovarianceSums``, ``EigenvalueSums``: anything with
        ``state``/``load_state``) into each, layer by layer."""
        if self.world == 1:
            return
        for layer_sums in sums.values():
            state = {name: tensor.to(self.device) for name, tensor in layer_sums.state().items()}
            for tensor in state.values():
                dist.all_reduce(tensor)
            layer_sums.load_state(state)

    def rounds(self, items: Sequence[T]) -> list[list[T]]:
        """``items`` in rounds of one per rank: round r's item i belongs to rank i."""
        return [list(items[start : start + self.world]) for start in range(0, len(items), self.world)]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def join(device: torch.device) -> Ranks:
    """This process's ranks: one process unless torchrun started several, in which case the process
    group is opened here (NCCL where ``device`` is a GPU, else gloo) and each rank takes its own GPU."""
    world = int(os.environ.get(WORLD_SIZE_ENV, "1"))
    if world == 1:
        return Ranks(device=device)
    rank, local = int(os.environ[RANK_ENV]), int(os.environ.get(LOCAL_RANK_ENV, "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise UserError(f"rank {rank} wants GPU {local} but torch sees {torch.cuda.device_count()}")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    return Ranks(dist.get_rank(), dist.get_world_size(), device)


def leave(ranks: Ranks) -> None:
    """Close the process group :func:`join` opened (after a last barrier, so no rank leaves early)."""
    if ranks.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _object_device(device: torch.device) -> Optional[torch.device]:
    """Where object collectives stage their bytes: the rank's GPU under NCCL, else the CPU."""
    return device if device.type == "cuda" else None


def _moved(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor in it (in dicts, lists, tuples, dataclasses) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {key: _moved(item, device) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_moved(item, device) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _moved(getattr(value, f.name), device) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **changes)
    return value
