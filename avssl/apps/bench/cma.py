"""Cost of the cross-modal agreement search: chunked :func:`avssl.memory.cma_positives` vs the naive N×N one.

For each bank size N, two random banks (video, audio; N×dim, L2-normalised rows, seeded) are searched for
every instance's top-k agreement (``min`` of the two cosine similarities by default):

* **chunked**: ``cma_positives(..., chunk_size)``: queries a chunk at a time against the whole bank;
  memory O(chunk_size·N).
* **naive**: the direct reference: both full N×N similarity matrices, their element-wise minimum, the
  diagonal masked, ``topk`` per row; memory O(N²). Run only where N <= ``naive_max_n``; otherwise the
  row says "skipped" with the size of one N×N fp32 matrix.

Where both run, the table says whether their results are identical and, if not, the fraction of rows
with the same positive set and how many of those list it in another order: ``topk`` leaves the order of
equal scores unspecified (the chunked search puts the lower index first), and a matmul over a row chunk
may round differently in the last bit from the full one, which can only swap near-equal neighbours.

Throughput: the search's matrix products cost 2 × 2·N²·dim flops (both banks against all queries); the
table gives the rate reached and its fraction of what a plain ``torch.mm`` of one chunk against the whole
bank (the same shapes, nothing else) reaches on the same device in the same run — the machine's matmul
throughput for this problem, so the rest is the top-k, the agreement and the bookkeeping.

Measured: wall time of one search (after a small warm-up on CUDA); peak tensor memory of the search above
what is allocated before it (the banks): ``torch.cuda.max_memory_allocated`` on CUDA; on CPU, where PyTorch's
allocations are invisible to ``tracemalloc``, the peak of ``torch.profiler``'s memory timeline
(``profile_memory=True``) in a separate run.
"""
from __future__ import annotations

import argparse
import gc
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from avssl.apps.bench.base import Benchmark, register
from avssl.apps.bench.measure import MIB, peak_bytes, sync
from avssl.apps.options import NON_NEGATIVE_INT, POSITIVE_INT, int_at_least
from avssl.eval.report import Table, fmt
from avssl.memory import agreement_scores, canonical_agreement, cma_positives

GB = 1e9


def naive_cma_positives(video: torch.Tensor, audio: torch.Tensor, k: int, agreement: str = "min") -> torch.Tensor:
    """The direct O(N²)-memory search: full similarity matrices, diagonal masked, ``topk`` (N×k)."""
    agreement = canonical_agreement(agreement)
    v, a = F.normalize(video.float(), dim=1), F.normalize(audio.float(), dim=1)
    score = agreement_scores(v, a, slice(None), agreement)
    score.fill_diagonal_(float("-inf"))
    return score.topk(k, dim=1).indices


def _timed(fn: Callable[[], torch.Tensor], device: torch.device) -> Dict[str, Any]:
    gc.collect()
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return {"seconds": time.perf_counter() - t0, "out": out}


def _banks(n: int, dim: int, device: torch.device, seed: int):
    g = torch.Generator().manual_seed(seed)
    v = F.normalize(torch.randn(n, dim, generator=g), dim=1).to(device)
    a = F.normalize(torch.randn(n, dim, generator=g), dim=1).to(device)
    return v, a


def matmul_gflops(n: int, dim: int, chunk_size: int, device: torch.device, seed: int = 0, repeats: int = 3) -> float:
    """GFLOP/s of a plain fp32 ``torch.mm`` (chunk_size×dim)·(dim×n), best of ``repeats``: the reference rate."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(min(chunk_size, n), dim, generator=g).to(device)
    b = torch.randn(n, dim, generator=g).to(device)
    q @ b.T  # warm-up
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = q @ b.T
        sync(device)
        best = min(best, time.perf_counter() - t0)
        del out
    return 2.0 * q.shape[0] * n * dim / best / 1e9


def measure(
    sizes: Sequence[int] = (10000, 100000, 240000),
    dim: int = 128,
    k: int = 32,
    chunk_size: int = 4096,
    device: Optional[str] = None,
    agreement: str = "min",
    naive_max_n: int = 20000,
    seed: int = 0,
    measure_memory: bool = True,
) -> List[Dict[str, Any]]:
    """Time and peak memory of chunked vs naive CMA positive search; one row (a dict) per N."""
    agreement = canonical_agreement(agreement)
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    rows: List[Dict[str, Any]] = []
    for n in sizes:
        v, a = _banks(int(n), dim, dev, seed)
        chunked = lambda: cma_positives(v, a, k=k, agreement=agreement, chunk_size=chunk_size)  # noqa: E731
        naive = lambda: naive_cma_positives(v, a, k, agreement)  # noqa: E731
        if dev.type == "cuda":  # warm up kernels and the allocator on a small problem
            cma_positives(v[:256], a[:256], k=min(k, 255), agreement=agreement, chunk_size=64)
        row: Dict[str, Any] = {
            "n": int(n), "dim": dim, "k": k, "chunk_size": chunk_size, "agreement": agreement,
            "device": str(dev), "device_name": device_name,
            "memory_method": "cuda_max_allocated" if dev.type == "cuda" else "profiler_timeline",
            "nxn_fp32_gb": n * n * 4 / GB,
        }
        res = _timed(chunked, dev)
        row["chunked_s"] = res["seconds"]
        row["chunked_gflops"] = 2 * 2.0 * n * n * dim / res["seconds"] / 1e9
        row["matmul_gflops"] = matmul_gflops(int(n), dim, chunk_size, dev, seed)
        row["matmul_fraction"] = row["chunked_gflops"] / row["matmul_gflops"]
        row["chunked_peak_mib"] = peak_bytes(chunked, dev) / MIB if measure_memory else None
        chunk_out = res["out"]
        del res
        if n <= naive_max_n:
            nres = _timed(naive, dev)
            row["naive_s"] = nres["seconds"]
            row["naive_peak_mib"] = peak_bytes(naive, dev) / MIB if measure_memory else None
            same_rows = (chunk_out.sort(dim=1).values == nres["out"].sort(dim=1).values).all(dim=1)
            row["identical"] = bool(torch.equal(chunk_out, nres["out"]))
            row["rows_matching"] = float(same_rows.float().mean())
            row["rows_reordered"] = int((same_rows & (chunk_out != nres["out"]).any(dim=1)).sum())
            row["naive_note"] = ""
            del nres
        else:
            row.update(naive_s=None, naive_peak_mib=None, identical=None, rows_matching=None, rows_reordered=None,
                       naive_note=f"skipped (N×N = {n * n * 4 / GB:.1f} GB)")
        rows.append(row)
        del v, a, chunk_out
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows


@register
class CmaBenchmark(Benchmark):
    name = "cma"
    help = "CMA positive-set search: chunked vs the naive full N×N similarity matrices"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--sizes", type=int_at_least(2), nargs="+", default=[10000, 100000, 240000])
        p.add_argument("--dim", type=POSITIVE_INT, default=128)
        p.add_argument("--k", type=POSITIVE_INT, default=32)
        p.add_argument("--chunk-size", type=POSITIVE_INT, default=4096)
        p.add_argument("--agreement", default="min", choices=["min", "max", "video", "audio"])
        p.add_argument("--naive-max-n", type=NON_NEGATIVE_INT, default=20000)
        p.add_argument("--device", default=None)
        p.add_argument("--no-memory", action="store_true", help="skip the memory measurement (a second run per search)")

    def run(self, args: argparse.Namespace) -> List[Dict[str, Any]]:
        return measure(args.sizes, dim=args.dim, k=args.k, chunk_size=args.chunk_size, device=args.device,
                       agreement=args.agreement, naive_max_n=args.naive_max_n, measure_memory=not args.no_memory)

    def table(self, rows: Sequence[Dict[str, Any]]) -> Table:
        r0 = rows[0] if rows else {}
        mem = {"cuda_max_allocated": "peak allocated CUDA memory above the banks",
               "profiler_timeline": "peak tensor memory above the banks (torch.profiler timeline)"}
        cells = []
        for r in rows:
            if r["naive_s"] is None:
                same = r["naive_note"]
            elif r["identical"]:
                same = "yes"
            else:  # equal (or last-bit different) scores may come in another order: topk does not order ties
                same = f"same sets in {100 * r['rows_matching']:.2f} % of rows"
                if r["rows_reordered"]:
                    same += f"; order of ties differs in {r['rows_reordered']}"
            cells.append([f"{r['n']:,}", fmt(r["chunked_s"], ".2f"), fmt(r["chunked_peak_mib"], ".0f"),
                          fmt(r.get("chunked_gflops"), ".1f"),
                          fmt(None if r.get("matmul_fraction") is None else 100 * r["matmul_fraction"], ".0f", " %"),
                          fmt(r["naive_s"], ".2f"), fmt(r["naive_peak_mib"], ".0f"), same])
        return Table(
            title=f"CMA positive search on {r0.get('device_name', '?')}: agreement {r0.get('agreement', '?')}, "
                  f"k={r0.get('k', '?')}, dim={r0.get('dim', '?')}, chunk_size={r0.get('chunk_size', '?')}",
            columns=["N", "chunked s", "chunked MiB", "GFLOP/s", "of matmul", "naive s", "naive MiB", "identical"],
            rows=cells,
            align=["r"] * 7 + ["l"],
            caption=f"memory: {mem.get(str(r0.get('memory_method')), 'peak memory')}; naive: full N×N matrices + topk; "
                    f"of matmul: the search's matmul flops per second against a plain chunk×N torch.mm "
                    f"({r0.get('matmul_gflops', 0):.0f} GFLOP/s here)",
        )
