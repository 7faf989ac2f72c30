"""Passes over a whole dataset split across ranks: each rank does its share, every rank gets all the results.

Under ``torch.distributed`` (a DDP run, or ``avssl eval|extract`` launched by torchrun) a pass over every video —
rebuilding the memory banks, embedding the sounds to cluster, extracting features — would otherwise be done in
full by every rank: 8 GPUs doing 8× the work. :func:`run_sharded` gives rank r the contiguous share
``[r·⌈N/R⌉, (r+1)·⌈N/R⌉)`` of the indices (:func:`avssl.memory.split_rows`), runs the function on it, and all-gathers the
results, so that every rank holds them in index order (rank-major concatenation of contiguous shares). Outside
``torch.distributed`` it runs the function on the whole dataset.

The gather goes through ``all_gather_object`` (CPU tensors, pickled; each rank's share may hold any number of
rows, none included), so it works the same under gloo and NCCL.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from typing import Any, Callable, Dict, Iterator, List, Tuple

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Subset

from avssl.losses.distributed import world_info
from avssl.memory import split_rows


def concat_parts(parts: List[Any]) -> Any:
    """Per-rank results (in rank order) -> one: tensors concatenated along their first axis, dicts key by key
    (a key missing from an empty share is skipped), anything else taken from the first rank."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat([p for p in parts if isinstance(p, torch.Tensor)], dim=0)
    if isinstance(first, dict):
        keys = list(dict.fromkeys(k for p in parts if isinstance(p, dict) for k in p))
        return {k: concat_parts([p[k] for p in parts if isinstance(p, dict) and k in p]) for k in keys}
    return first


def gather_shares(local: Any) -> Any:
    """Every rank's ``local`` result (tensors moved to the CPU), concatenated in rank order (:func:`concat_parts`);
    ``local`` itself outside ``torch.distributed``. Every rank must call it."""
    _, world = world_info()
    if world == 1:
        return local
    parts: List[Any] = [None] * world
    dist.all_gather_object(parts, _to_cpu(local))
    return concat_parts(parts)


def _to_cpu(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    return x


def run_sharded(dataset: Dataset, fn: Callable[[Dataset, int], Dict[str, Any]]) -> Dict[str, Any]:
    """``fn(share, start)`` on this rank's contiguous share of ``dataset`` (a ``Subset``; ``start`` is its first
    index), gathered from every rank in index order: rows ``start .. end`` of each tensor come from that share.

    ``fn`` returns a dict of tensors whose first axis follows the share's items (and plain values, taken from
    rank 0). Every rank must call this together; with one process it is ``fn(dataset, 0)``.
    """
    rank, world = world_info()
    if world == 1:
        return fn(dataset, 0)
    start, end = split_rows(len(dataset), world, rank)  # type: ignore[arg-type]
    local = fn(Subset(dataset, range(start, end)), start)
    return gather_shares(local)


@contextlib.contextmanager
def process_group_from_env() -> Iterator[Tuple[int, int]]:
    """A process group for a command launched by torchrun (``WORLD_SIZE`` > 1 in the environment, none initialised
    yet): NCCL with this rank's GPU (``LOCAL_RANK``) when there are GPUs, gloo otherwise; destroyed on exit. Yields
    ``(rank, world size)``, ``(0, 1)`` for a plain launch."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        yield world_info()
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    try:
        yield world_info()
    finally:
        dist.destroy_process_group()


__all__ = ["concat_parts", "gather_shares", "process_group_from_env", "run_sharded"]
