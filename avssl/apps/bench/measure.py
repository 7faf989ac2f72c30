"""Measuring helpers the benchmarks share: device synchronisation and peak tensor memory."""
from __future__ import annotations

import gc
import json
import os
import tempfile
from typing import Any, Callable

import torch

MIB = 2.0**20


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak tensor memory of ``fn()`` above what is allocated before it: CUDA's peak-allocation counter
    on a GPU, the torch.profiler memory timeline on the CPU."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    # The memory timeline needs shapes and stacks to attribute allocations to tensors.
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    with tempfile.TemporaryDirectory(prefix="avssl-bench-") as tmp:
        path = os.path.join(tmp, "memory.json")
        prof.export_memory_timeline(path, device="cpu")
        with open(path) as f:
            _, sizes = json.load(f)  # [timestamps, [bytes per category] per timestamp]
    totals = [sum(s) for s in sizes]
    # The first point holds the tensors that existed before (parameters, inputs).
    return int(max(totals) - totals[0]) if totals else 0
