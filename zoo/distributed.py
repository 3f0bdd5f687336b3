"""Training in many processes: torchrun's environment, the process group, and what every process must agree on.

zoo uses PyTorch's own machinery: ``torchrun`` (torch.distributed.run) starts the processes and sets
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; the trainer wraps the model in DistributedDataParallel.
Without those variables everything here is a no-op for one process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["ONE", "Group", "current", "process_group"]


@dataclass(frozen=True)
class Group:
    """This process's place among the training processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    """Processes on this machine: they share its CPUs."""
    restarts: int = 0
    """How often torchrun restarted the processes (``--max-restarts``)."""

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and reports progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def device(self, device: torch.device) -> torch.device:
        """Each process of a machine takes its own GPU; CPU processes share the CPU."""
        if device.type == "cuda" and self.active:
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def sum(self, values: list[float]) -> list[float]:
        """Each value summed over all processes (a float64 all-reduce)."""
        if not self.active:
            return values
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.all_reduce(tensor)
        return [float(v) for v in tensor.tolist()]

    def any(self, flag: bool) -> bool:
        """True in every process when it is true in any: how all stop at the same step."""
        return bool(self.sum([float(flag)])[0]) if self.active else flag

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value``, in every process."""
        if not self.active:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0, device=_collective_device())
        return box[0]

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()


ONE = Group()
"""A single process."""


def _collective_device() -> torch.device:
    """NCCL reduces GPU tensors only; gloo CPU tensors."""
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def current() -> Group:
    """This process's group, from the variables torchrun sets (one process without them)."""
    env = os.environ
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return ONE
    return Group(
        rank=int(env["RANK"]),
        world=int(env["WORLD_SIZE"]),
        local_rank=int(env.get("LOCAL_RANK", 0)),
        local_world=int(env.get("LOCAL_WORLD_SIZE", 1)),
        restarts=int(env.get("TORCHELASTIC_RESTART_COUNT", 0)),
    )


@contextmanager
def process_group(group: Group, device: torch.device) -> Iterator[None]:
    """Join the other processes for the duration (NCCL on CUDA, gloo on the CPU); nothing for one process."""
    import torch.distributed as dist

    if not group.active or dist.is_initialized():
        yield
        return
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()
