"""One machine or many: torchrun's environment, device choice, DDP wrapping and small collectives.

Under `torchrun` (RANK, WORLD_SIZE, LOCAL_RANK set) the process group is initialised with NCCL on
CUDA and gloo on CPU; otherwise everything here is a no-op for a single process. Nothing home-made
replaces torch.distributed.
"""

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "Distributed",
    "all_gather_objects",
    "autocast",
    "barrier",
    "cleanup",
    "mean_over_processes",
    "setup_distributed",
    "wrap_ddp",
]


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _device(preference: str, local_rank: int) -> torch.device:
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(preference)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for, but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def setup_distributed(device: str = "auto") -> tuple[Distributed, torch.device]:
    """Read torchrun's environment, start the process group when there is more than one process,
    and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = Distributed(int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world)
    dev = _device(device, info.local_rank)
    if info.enabled and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return info, dev


def cleanup(info: Distributed) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: Distributed) -> None:
    if info.enabled:
        dist.barrier()


def wrap_ddp(module: nn.Module, info: Distributed, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """DDP around `module` when there are several processes (parameters are broadcast from rank 0).

    `find_unused_parameters` is needed only when some parameters may get no gradient in a step
    (layerdrop skipping blocks)."""
    if not info.enabled:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False,
                                               find_unused_parameters=find_unused_parameters)


def mean_over_processes(values: dict[str, float], info: Distributed, device: torch.device) -> dict[str, float]:
    """Average a dict of floats over the processes (NaN-free entries only; same keys everywhere)."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / info.world_size for k, v in zip(keys, t.tolist(), strict=True)}


def all_gather_objects(obj: Any, info: Distributed) -> list[Any]:
    """Every process's `obj`, in rank order."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for "bf16", or for "auto" on CUDA devices that support bf16; else nothing."""
    use_bf16 = precision == "bf16" or (
        precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    )
    if use_bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
