"""Distributed set-up: one process per device, launched by torchrun or torch.distributed.launch.

Both launchers export RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; the deprecated
`torch.distributed.launch` also passes `--local_rank N` / `--local-rank=N` on the command line, which
the scripts accept and hand to `init_distributed(local_rank=...)`. Without those variables the run
is a plain single process and nothing here touches torch.distributed.

    dist = init_distributed()                 # DistInfo(rank, local_rank, world_size, device, backend)
    model = wrap_model(model, dist)           # DDP when world_size > 1, unchanged otherwise
    total = all_reduce_sum(tensor, dist)      # in place on every rank, returns the tensor
    if dist.is_main: ...                      # rank 0 alone prints and writes
    cleanup_distributed(dist)

The backend is NCCL when the process drives a CUDA device and gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as torch_dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None  # None when torch.distributed is not initialised

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(local_rank: int | None = None, device: str | None = None,
                     timeout_minutes: float = 30.0) -> DistInfo:
    """Join the process group described by the launcher's environment, or run as one process.

    local_rank: the `--local_rank` flag of torch.distributed.launch (the LOCAL_RANK variable wins
        when both are present, they agree anyway). device: "cpu", "cuda" or None (CUDA when present).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    env_local_rank = os.environ.get("LOCAL_RANK")
    local_rank = int(env_local_rank) if env_local_rank is not None else max(local_rank or 0, 0)

    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")

    if world_size == 1:
        return DistInfo(rank=0, local_rank=local_rank, world_size=1, device=dev, backend=None)

    backend = "nccl" if use_cuda else "gloo"
    if not torch_dist.is_initialized():
        kwargs = dict(backend=backend, timeout=timedelta(minutes=timeout_minutes))
        if use_cuda:
            kwargs["device_id"] = dev  # lets NCCL bind the communicator eagerly
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        if restart is not None:
            # torchrun --max-restarts: the workers of a restart meet in the store the dead ones
            # used, where the process group's keys (each rank's gloo/NCCL address) still hold the
            # old values; a rank that read one before its peer rewrote it connected to a dead
            # port ("Gloo connectFullMesh failed ... Connection refused", 2 restarts in 5 here).
            # Keys under a per-attempt prefix cannot be stale.
            store, rank, size = next(torch_dist.rendezvous("env://", timeout=kwargs["timeout"]))
            kwargs.update(store=torch_dist.PrefixStore(f"vilbert/attempt-{restart}", store), rank=rank, world_size=size)
        torch_dist.init_process_group(**kwargs)
    return DistInfo(rank=torch_dist.get_rank(), local_rank=local_rank,
                    world_size=torch_dist.get_world_size(), device=dev, backend=backend)


def cleanup_distributed(dist: DistInfo) -> None:
    if dist.backend is not None and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def barrier(dist: DistInfo) -> None:
    if dist.is_distributed:
        if dist.device.type == "cuda":
            torch_dist.barrier(device_ids=[dist.device.index])
        else:
            torch_dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, dist: DistInfo) -> torch.Tensor:
    """Sum `tensor` over all ranks, in place; asynchronous on the host with NCCL (no .item())."""
    if dist.is_distributed:
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj, dist: DistInfo) -> list:
    """Every rank's `obj` as a list indexed by rank (pickled by torch.distributed; trusted peers only)."""
    if not dist.is_distributed:
        return [obj]
    out = [None] * dist.world_size
    torch_dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, dist: DistInfo, src: int = 0):
    """Rank `src`'s `obj` on every rank."""
    if not dist.is_distributed:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=src)
    return box[0]


def wrap_model(model: torch.nn.Module, dist: DistInfo, find_unused_parameters: bool = False) -> torch.nn.Module:
    """DistributedDataParallel around `model` (already on dist.device) when there are several ranks."""
    if not dist.is_distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [dist.device.index] if dist.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside DDP (and torch.compile) wrappers, for saving and for evaluation."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    while True:
        if isinstance(model, (DistributedDataParallel, DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model
