"""Gathering embeddings across ranks for losses that need the global batch."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.distributed as dist


def world_info() -> Tuple[int, int]:
    """(rank, world size); (0, 1) outside ``torch.distributed``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather B×D tensors from every rank into (world·B)×D, rank-major.

    The local slot is the input itself, so gradients flow through the local part (the other ranks'
    parts are constants here; each rank back-propagates its own). Every rank must pass the same B.
    """
    rank, world = world_info()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = x
    return torch.cat(parts, dim=0)
