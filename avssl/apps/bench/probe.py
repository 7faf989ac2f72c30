"""Linear probe at Kinetics scale: features/s and peak memory of :func:`avssl.eval.linear.train_linear_probe`.

Kinetics-400's train part is 240k videos; with ``eval.train_views: mean`` the probe sees one 512-d row per video
(240k × 512 fp32 = 0.49 GB), with ``flatten`` every test view (10 clips × 3 crops: 7.2M rows, 14.7 GB). For each
row count the benchmark draws seeded features with planted classes (class means ± unit noise, fp32, ``--classes``
classes) and trains the probe as ``avssl eval`` does (SGD, batch 256, cosine schedule, standardised features) for
``--epochs`` epochs on ``--device``.

Measured: wall time of the training, features/s (rows × epochs / s), the final train top-1 (the planted classes
make it high: a check that the probe learned), and the peak tensor memory of the training above the features
themselves (:func:`avssl.apps.bench.measure.peak_bytes`: the CUDA peak, or the torch.profiler timeline on the
CPU, in a separate one-epoch run), next to the size of the features and of one fp64 copy of them — what the probe
used to allocate to standardise them. The last column gives the size the same rows would take with every view
flattened (×``--views``).
"""
from __future__ import annotations

import argparse
import gc
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

from avssl.apps.bench.base import Benchmark, register
from avssl.apps.bench.measure import MIB, peak_bytes, sync
from avssl.apps.options import POSITIVE_INT, int_at_least
from avssl.eval.linear import train_linear_probe
from avssl.eval.report import Table, fmt


def planted_features(rows: int, dim: int, classes: int, seed: int = 0):
    """(rows×dim fp32 features, rows labels): class means drawn N(0, 1), then unit Gaussian noise (seeded)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(classes, dim, generator=g)
    labels = torch.randint(classes, (rows,), generator=g)
    feats = torch.randn(rows, dim, generator=g).add_(means[labels])
    return feats, labels


def measure(sizes: Sequence[int] = (240000,), dim: int = 512, classes: int = 400, epochs: int = 1,
            batch_size: int = 256, device: Optional[str] = None, views: int = 30, seed: int = 0,
            measure_memory: bool = True) -> List[Dict[str, Any]]:
    """One row per row count (see the module docstring)."""
    dev = torch.device(device or "cpu")
    rows_out: List[Dict[str, Any]] = []
    for n in sizes:
        feats, labels = planted_features(int(n), dim, classes, seed)
        feats, labels = feats.to(dev), labels.to(dev)

        def train(e: int = epochs) -> Any:
            return train_linear_probe(feats, labels, classes, epochs=e, lr=0.1, weight_decay=0.0,
                                      batch_size=batch_size, seed=seed, device=dev)

        gc.collect()
        sync(dev)
        t0 = time.perf_counter()
        _, history = train()
        sync(dev)
        seconds = time.perf_counter() - t0
        feature_bytes = feats.numel() * feats.element_size()
        rows_out.append({
            "rows": int(n), "dim": dim, "classes": classes, "epochs": epochs, "batch": batch_size,
            "device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU",
            "train_s": seconds, "features_per_s": n * epochs / seconds, "train_top1": history[-1]["train_top1"],
            "peak_mib": peak_bytes(lambda: train(1), dev) / MIB if measure_memory else None,
            "features_mib": feature_bytes / MIB, "fp64_copy_mib": 2 * feature_bytes / MIB,
            "flatten_mib": views * feature_bytes / MIB, "views": views,
            "memory_method": "cuda_max_allocated" if dev.type == "cuda" else "profiler_timeline",
        })
        del feats, labels
        gc.collect()
    return rows_out


@register
class ProbeBenchmark(Benchmark):
    name = "probe"
    help = "linear probe on Kinetics-size frozen features (240k × 512): features/s and peak memory"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--sizes", type=int_at_least(2), nargs="+", default=[240000], help="rows (videos)")
        p.add_argument("--dim", type=POSITIVE_INT, default=512)
        p.add_argument("--classes", type=int_at_least(2), default=400)
        p.add_argument("--epochs", type=POSITIVE_INT, default=1)
        p.add_argument("--batch", type=POSITIVE_INT, default=256)
        p.add_argument("--views", type=POSITIVE_INT, default=30, help="views per video that flatten would keep")
        p.add_argument("--device", default=None, help="default: cpu")
        p.add_argument("--no-memory", action="store_true", help="skip the memory measurement (a second run)")

    def run(self, args: argparse.Namespace) -> List[Dict[str, Any]]:
        return measure(args.sizes, dim=args.dim, classes=args.classes, epochs=args.epochs, batch_size=args.batch,
                       device=args.device, views=args.views, measure_memory=not args.no_memory)

    def table(self, rows: Sequence[Dict[str, Any]]) -> Table:
        r0 = rows[0] if rows else {}
        cells = [[f"{r['rows']:,}", str(r["epochs"]), fmt(r["train_s"], ".1f"), fmt(r["features_per_s"], ",.0f"),
                  fmt(100 * r["train_top1"], ".1f"), fmt(r["peak_mib"], ".0f"), fmt(r["features_mib"], ".0f"),
                  fmt(r["fp64_copy_mib"], ".0f"), fmt(r["flatten_mib"], ",.0f")] for r in rows]
        mem = {"cuda_max_allocated": "peak allocated CUDA memory",
               "profiler_timeline": "peak tensor memory (torch.profiler timeline)"}.get(str(r0.get("memory_method")), "")
        return Table(
            title=f"linear probe on {r0.get('device_name', '?')}: {r0.get('dim', '?')}-d features, "
                  f"{r0.get('classes', '?')} planted classes, batch {r0.get('batch', '?')}",
            columns=["rows", "epochs", "train s", "features/s", "train top-1 %", "peak MiB", "features MiB",
                     "fp64 copy MiB", f"flatten ×{r0.get('views', '?')} MiB"],
            rows=cells,
            caption=f"peak: {mem} of one training epoch above the features; fp64 copy: what standardising them "
                    "in one piece would add; flatten: the features with every view of every video kept",
        )
