"""The process group seen by the trainer: one process, or several under `torchrun` (torch.distributed).

Everything here is a no-op in a single process, so the trainer runs the same code either way.
`init_from_env` joins the group that torchrun describes in the environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT): NCCL on CUDA devices, gloo on the CPU.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["all_reduce_sum", "barrier", "broadcast_object", "init_from_env", "is_main", "launched_by_torchrun",
           "local_rank", "rank", "shutdown", "world_size"]


def launched_by_torchrun() -> bool:
    """Whether the environment describes a process group of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: torch.device) -> bool:
    """Join torchrun's process group (once); True if this process is one of several."""
    if not launched_by_torchrun():
        return False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
    return True


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0: the process that writes checkpoints, metrics and plots and shows progress."""
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of `t` over all processes (in place; `t` itself in a single process)."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj, src: int = 0):
    """`obj` of process `src`, on every process."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shutdown(ok: bool = True) -> None:
    """Leave the process group (a process that exits inside one is aborted by gloo's threads); ``ok``:
    wait for the others first."""
    if dist.is_initialized():
        if ok:
            dist.barrier()
        dist.destroy_process_group()
