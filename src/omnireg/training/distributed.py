"""Data-parallel training across processes (PyTorch DDP): gloo on CPU, NCCL on CUDA.

Launch with ``torchrun --nproc-per-node N -m omnireg train ...``; :func:`init_distributed` reads
torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), starts the process group and returns
a :class:`DistContext`. Without torchrun (``WORLD_SIZE`` unset or 1) the context is a single process
and every method is a no-op, so training code is the same either way.

The global batch of a step is split evenly between the ranks (:meth:`DistContext.shard`); each item
draws its randomness from a generator seeded by the run's seed, the step and the item's *global*
index, so the global batch, and with DDP's gradient averaging the update, do not depend on the number
of processes (up to the order of floating-point sums).
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["DistContext", "init_distributed", "shutdown_distributed"]

log = logging.getLogger(__name__)


@dataclass
class DistContext:
    """Where this process stands in a data-parallel run.

    Attributes:
        rank: this process's rank (0 = the main process, which writes files and logs).
        world_size: number of processes.
        local_rank: rank on this machine (selects the CUDA device).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, global_batch: int) -> range:
        """Global indices of the batch items this rank computes.

        Raises:
            ValueError: ``global_batch`` not divisible by the number of processes.
        """
        if global_batch % self.world_size:
            raise ValueError(f"batch_size: the global batch {global_batch} must be divisible by the number of processes {self.world_size}")
        per = global_batch // self.world_size
        return range(self.rank * per, (self.rank + 1) * per)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean of ``values`` over the processes (a copy; unchanged when single-process)."""
        if not self.enabled:
            return values.detach().clone()
        out = values.detach().clone()
        torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.SUM)
        return out / self.world_size

    def any(self, flag: bool, device: torch.device | str = "cpu") -> bool:
        """True if ``flag`` is true on any process (every process gets the same answer)."""
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def wrap(self, model: nn.Module, device: torch.device | str) -> nn.Module:
        """``model`` wrapped in DistributedDataParallel (gradients averaged over processes), or itself."""
        if not self.enabled:
            return model
        dev = torch.device(device)
        ids = [dev.index if dev.index is not None else self.local_rank] if dev.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def init_distributed(device: str | torch.device = "cpu", *, timeout_minutes: float = 30.0) -> tuple[DistContext, torch.device]:
    """Start the process group when launched by torchrun; returns the context and this rank's device.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. With several processes on CUDA each rank uses
            ``cuda:LOCAL_RANK`` (NCCL); on CPU the backend is gloo.
        timeout_minutes: collective timeout (validation runs on rank 0 while the others wait).

    Returns:
        ``(context, device)``.

    Raises:
        ValueError: CUDA requested but not available.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: CUDA was requested but is not available")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(), dev
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not torch.distributed.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
        log.info("process group: backend %s, rank %d of %d", backend, rank, world)
    return DistContext(rank, world, local), dev


def shutdown_distributed(context: DistContext) -> None:
    """Destroy the process group started by :func:`init_distributed` (no-op for one process)."""
    if context.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
