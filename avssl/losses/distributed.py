"""What every loss shares: gathering embeddings across ranks (global batch), and fp32 under autocast."""
from __future__ import annotations

import contextlib
from typing import Iterator, Tuple

import torch
import torch.distributed as dist



def world_info() -> Tuple[int, int]:
    """(rank, world size); (0, 1) outside ``torch.distributed``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """``x`` as fp32 (fp64 stays fp64): losses are computed at least in single precision."""
    return x if x.dtype == torch.float64 else x.float()


@contextlib.contextmanager
def no_autocast(x: torch.Tensor) -> Iterator[None]:
    """Disable autocast for ``x``'s device: casting the inputs alone is not enough, because matmuls
    inside an autocast region would run in half precision again."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        yield


class _GatherGlobalGrad(torch.autograd.Function):
    """All-gather whose backward sums every rank's gradient for each slot (all-reduce)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        rank, world = world_info()
        ctx.rank, ctx.world, ctx.rows = rank, world, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()  # all_reduce works in place; autograd may share `grad`
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_global_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather B×D tensors from every rank into (world·B)×D, rank-major, with a global backward.

    Unlike a plain all-gather with only the local slot differentiable (other ranks'
    slots constant), the backward all-reduces the gradient, so each rank receives the sum over ranks
    of the gradient of their losses with respect to its rows. With every rank holding B rows and
    the per-rank losses averaged by DDP, parameter gradients then equal the single-process gradient
    of the mean per-rank loss on the whole batch (the other form silently drops the terms where a
    row is another rank's negative). Every rank must call it (and back-propagate) with the same B.
    Outside ``torch.distributed`` it returns ``x``.
    """
    _, world = world_info()
    if world == 1:
        return x
    return _GatherGlobalGrad.apply(x)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather B×D tensors into (world·B)×D, rank-major, without gradient (``x`` outside DDP)."""
    _, world = world_info()
    if world == 1:
        return x.detach()
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts, dim=0)


def check_pair(a: torch.Tensor, b: torch.Tensor, names: Tuple[str, str] = ("z_a", "z_b")) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` are two B×D tensors of one shape."""
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(
            f"expected {names[0]} and {names[1]} to be B×D tensors of one shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}")


# One name for the differentiable gather; its backward is the correct (all-reduced) one.
gather_with_grad = gather_with_global_grad
