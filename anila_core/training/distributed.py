"""Multi-process training under ``torchrun``: read its environment, start and end the process group, and the few
collectives the trainer needs.

``torchrun --nproc_per_node N -m anila_core train ...`` starts N copies of the command with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set. Each copy runs its own chains; the energy
network is wrapped in ``DistributedDataParallel``, so its gradients are averaged over all
copies before every Adam step and the parameters stay identical. Only rank 0 writes files.
Without those variables (or with ``WORLD_SIZE=1``) everything here is a no-op.
"""

from __future__ import annotations

import datetime
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "from_env",
    "current",
    "backend_for",
    "init_from_env",
    "process_group",
    "shutdown",
    "broadcast_object",
    "gather_objects",
    "all_reduce_sum",
    "device_for_rank",
]

# Rank 0 evaluates (FID with Inception can take many minutes) while the others wait at the
# next gradient all-reduce: give that wait far more room than the default timeout.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: ``rank`` of ``world_size``, on node-local GPU ``local_rank``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}: expected an integer (set by torchrun), got {value!r}") from None


def from_env() -> DistInfo:
    """What torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` say (one process when unset)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK/WORLD_SIZE: expected 0 <= RANK < WORLD_SIZE, got RANK={rank}, WORLD_SIZE={world}")
    return DistInfo(rank, world, local)


def current() -> DistInfo:
    """This process's place in the running process group (one process when none is running)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", dist.get_rank()))


def backend_for(use_cuda: bool) -> str:
    """The process group's backend: NCCL for runs on CUDA, Gloo on CPUs."""
    return "nccl" if use_cuda else "gloo"


def init_from_env(use_cuda: bool) -> DistInfo:
    """Start the process group when torchrun launched us: NCCL for CUDA runs, Gloo on CPUs.

    ``use_cuda``: whether the run trains on CUDA (then each rank also selects GPU
    ``LOCAL_RANK``, which NCCL and its object collectives need). Returns the rank layout;
    a single process gets ``DistInfo()`` and no process group.
    """
    info = from_env()
    if not info.enabled or (dist.is_available() and dist.is_initialized()):
        return current() if info.enabled else info
    if not dist.is_available():
        raise ValueError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    if use_cuda:
        if info.local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK: {info.local_rank} but only {torch.cuda.device_count()} CUDA device(s) are visible; "
                "use --nproc_per_node at most the number of GPUs"
            )
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend=backend_for(use_cuda), timeout=COLLECTIVE_TIMEOUT)
    return current()


@contextmanager
def process_group(use_cuda: bool):
    """``with process_group(use_cuda) as info:`` starts the group under torchrun and ends it after, if it started it.

    A group that is already running (a caller started it) is used and left running.
    """
    running = dist.is_available() and dist.is_initialized()
    info = init_from_env(use_cuda)
    try:
        yield info
    finally:
        if not running:
            shutdown()


def shutdown() -> None:
    """End the process group if one is running (safe to call always)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for_rank(device: torch.device, info: DistInfo) -> torch.device:
    """``cuda`` means this rank's own GPU under torchrun; an explicit index would put every rank on one GPU."""
    if not info.enabled or device.type != "cuda":
        return device
    if device.index is not None and device.index != info.local_rank:
        raise ValueError(
            f"device: {device} under torchrun would put every rank on one GPU; pass --device cuda or auto "
            f"(each rank then uses cuda:LOCAL_RANK)"
        )
    return torch.device("cuda", info.local_rank)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (the value itself without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any, dst: int = 0) -> list | None:
    """Every rank's ``obj``, in rank order, on rank ``dst`` (``None`` elsewhere); ``[obj]`` without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size() if dist.get_rank() == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The elementwise sum of ``tensor`` over all ranks, in place (unchanged without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor
