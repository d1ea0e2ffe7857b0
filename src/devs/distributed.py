"""Multi-process runs on torch.distributed (launched by ``torchrun``): who computes which rows, and the
few collective operations DEvS and evaluation need.

The design keeps a distributed run's result equal to a single process's: every rank draws the same
random numbers (same seeds), reads the same *global* batch and augments it identically, then computes
only its own contiguous slice of rows; DistributedDataParallel averages gradients whose loss was scaled
so that the average is the single-process mean over the global batch. Dropout masks are drawn for the
global batch and sliced (``models.ShardedDropout``). The only differences left are floating-point
summation order.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Group:
    """This process's rank among ``world_size`` processes (a single process is rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def rows(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` rows; shares differ in size by at most one row."""
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    # ---------------------------------------------------------------- collectives (no-ops for one process)
    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``tensor`` over all ranks (returned; the input is not changed)."""
        if not self.active:
            return tensor
        buffer = tensor.to(_comm_device(), copy=True)
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        return buffer.to(tensor.device)

    def gather_rows(self, local: torch.Tensor, total: int) -> torch.Tensor | None:
        """Rows computed by each rank for its share of ``total`` rows, concatenated in rank order on the
        main rank (other ranks get None)."""
        if not self.active:
            return local
        width = -(-total // self.world_size)  # every rank sends the same padded size
        padded = torch.zeros((width, *local.shape[1:]), dtype=local.dtype, device=_comm_device())
        padded[: len(local)] = local.to(padded.device)
        pieces = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(pieces, padded)
        if not self.is_main:
            return None
        sizes = [Group(rank, self.world_size).rows(total) for rank in range(self.world_size)]
        return torch.cat([piece[: s.stop - s.start] for piece, s in zip(pieces, sizes)]).to(local.device)

    def broadcast_object(self, value: Any) -> Any:
        """The main rank's ``value`` on every rank (pickled between our own processes only)."""
        if not self.active:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=_comm_device())
        return box[0]

    def all_gather_object(self, value: Any) -> list[Any]:
        if not self.active:
            return [value]
        boxes: list[Any] = [None] * self.world_size
        dist.all_gather_object(boxes, value)
        return boxes

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """The main rank's tensor on every rank (shape and dtype must already agree)."""
        if not self.active:
            return tensor
        buffer = tensor.to(_comm_device(), copy=True)
        dist.broadcast(buffer, src=0)
        return buffer.to(tensor.device)


def _comm_device() -> torch.device:
    """NCCL moves CUDA tensors only; gloo is used with CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def current_group() -> Group:
    """The default process group as a Group; a single process outside torchrun is rank 0 of 1."""
    if dist.is_available() and dist.is_initialized():
        return Group(dist.get_rank(), dist.get_world_size())
    return Group()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_environment(device: str = "auto") -> Group:
    """Join the process group torchrun describes in the environment (NCCL on CUDA, gloo otherwise).

    On CUDA each process takes the GPU of its LOCAL_RANK, so ``device="cuda"`` means that GPU.
    """
    if not launched_by_torchrun() or dist.is_initialized():
        return current_group()
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    group = current_group()
    logger.debug("rank %d of %d joined (%s)", group.rank, group.world_size, dist.get_backend())
    return group


def shutdown(synchronize: bool = False) -> None:
    """Leave the process group. With ``synchronize`` (a command that finished on every rank) wait for the others
    first: a rank that tears gloo down while a peer still talks to it can make that peer abort (SIGABRT)."""
    if dist.is_available() and dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()


__all__ = ["Group", "current_group", "init_from_environment", "launched_by_torchrun", "shutdown"]
