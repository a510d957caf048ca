"""One process or many: `torchrun --nproc_per_node=N -m edgevae train ...` runs DistributedDataParallel.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them (or with WORLD_SIZE=1) this is a no-op.
Backend: NCCL when the device is CUDA (one GPU per process, cuda:LOCAL_RANK), gloo on CPU. Every rank
holds the whole dataset in memory and takes its share of each global batch (positions rank, rank + N,
...); rank 0 alone writes files and prints.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import nn


def pick_device(name: str) -> torch.device:
    """'auto': CUDA when present, else CPU; anything else as torch spells it."""
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)


@dataclass
class Dist:
    rank: int  # this process's index, 0 .. world - 1
    world: int  # number of processes
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """The elementwise sum of t over all processes (t itself when alone)."""
        if self.world == 1:
            return t
        import torch.distributed as dist

        on_device = t.to(self.device)
        dist.all_reduce(on_device)
        return on_device.to(t.device)

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    @contextlib.contextmanager
    def main_first(self):
        """Rank 0 runs the block first (a download, say), then the others."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def wrap(self, module: nn.Module) -> nn.Module:
        """DistributedDataParallel(module) when there are several processes."""
        if self.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def setup(device_name: str) -> Dist:
    """The process group torchrun describes in the environment, or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(0, 1, pick_device(device_name))
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, device)
