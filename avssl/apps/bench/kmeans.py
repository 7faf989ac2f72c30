"""k-means as ``audio_clusters`` runs it: :func:`avssl.cluster.kmeans_fit` against ``sklearn.cluster.KMeans``.

For each size N the benchmark draws seeded N×D features around ``--k`` planted centres (centres N(0, 2²), unit
noise: overlapping clusters, so iterations matter) and clusters them with both, with the same k, restarts
(``n_init``), iteration cap (``max_iter``) and tolerance (1e-4), k-means++ seeding on both sides (scikit-learn's
greedy variant, which avssl follows). Measured: wall time of each (avssl on ``--device``, CUDA synchronised;
scikit-learn on the CPU with its own threads), the inertia of each (sum of squared distances to the assigned
centres; lower is better) and their ratio, and the adjusted Rand index between the two clusterings and of each
against the planted labels.
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

from avssl.apps.bench.base import Benchmark, register
from avssl.apps.bench.measure import sync
from avssl.apps.options import POSITIVE_INT, int_at_least
from avssl.cluster import kmeans_fit
from avssl.eval.report import Table, fmt


def planted(n: int, dim: int, k: int, seed: int = 0, spread: float = 2.0):
    """(N×dim fp32 features, N planted labels): k centres N(0, spread²), unit Gaussian noise around them."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g) * spread
    labels = torch.randint(k, (n,), generator=g)
    return torch.randn(n, dim, generator=g).add_(centres[labels]), labels


def measure(sizes: Sequence[int] = (100000,), dim: int = 128, k: int = 100, iterations: int = 50, restarts: int = 1,
            device: Optional[str] = None, seed: int = 0) -> List[Dict[str, Any]]:
    """One row per N (see the module docstring)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out: List[Dict[str, Any]] = []
    for n in sizes:
        x, truth = planted(int(n), dim, k, seed)
        xd = x.to(dev)
        if dev.type == "cuda":  # kernels and allocator warmed on a small problem
            kmeans_fit(xd[: 4 * k], k, iterations=2, restarts=1, seed=seed)
        sync(dev)
        t0 = time.perf_counter()
        ours = kmeans_fit(xd, k, iterations=iterations, restarts=restarts, seed=seed)
        sync(dev)
        ours_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = KMeans(k, init="k-means++", n_init=restarts, max_iter=iterations, tol=1e-4, random_state=seed).fit(x.numpy())
        ref_s = time.perf_counter() - t0
        labels = ours.labels.cpu().numpy()
        out.append({
            "n": int(n), "dim": dim, "k": k, "iterations": iterations, "restarts": restarts, "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU",
            "avssl_s": ours_s, "sklearn_s": ref_s, "speedup": ref_s / ours_s,
            "avssl_inertia": ours.inertia, "sklearn_inertia": float(ref.inertia_),
            "inertia_ratio": ours.inertia / float(ref.inertia_),
            "ari_between": float(adjusted_rand_score(ref.labels_, labels)),
            "avssl_ari_truth": float(adjusted_rand_score(truth.numpy(), labels)),
            "sklearn_ari_truth": float(adjusted_rand_score(truth.numpy(), ref.labels_)),
            "avssl_iterations": ours.iterations, "sklearn_iterations": int(ref.n_iter_),
        })
    return out


@register
class KMeansBenchmark(Benchmark):
    name = "kmeans"
    help = "k-means (audio_clusters' pseudo-labels): avssl on the device vs scikit-learn's KMeans"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--sizes", type=int_at_least(2), nargs="+", default=[100000])
        p.add_argument("--dim", type=POSITIVE_INT, default=128)
        p.add_argument("--k", type=int_at_least(2), default=100)
        p.add_argument("--iterations", type=POSITIVE_INT, default=50)
        p.add_argument("--restarts", type=POSITIVE_INT, default=1)
        p.add_argument("--device", default=None, help="where avssl clusters (default: the GPU if any)")

    def run(self, args: argparse.Namespace) -> List[Dict[str, Any]]:
        return measure(args.sizes, dim=args.dim, k=args.k, iterations=args.iterations, restarts=args.restarts,
                       device=args.device)

    def table(self, rows: Sequence[Dict[str, Any]]) -> Table:
        r0 = rows[0] if rows else {}
        cells = [[f"{r['n']:,}", fmt(r["avssl_s"], ".2f"), fmt(r["sklearn_s"], ".2f"), fmt(r["speedup"], ".2f", "×"),
                  fmt(r["inertia_ratio"], ".4f"), fmt(r["ari_between"], ".3f"), fmt(r["avssl_ari_truth"], ".3f"),
                  fmt(r["sklearn_ari_truth"], ".3f"), f"{r['avssl_iterations']} / {r['sklearn_iterations']}"]
                 for r in rows]
        return Table(
            title=f"k-means on {r0.get('device_name', '?')} vs scikit-learn (CPU): k={r0.get('k', '?')}, "
                  f"dim={r0.get('dim', '?')}, {r0.get('restarts', '?')} restart(s), at most "
                  f"{r0.get('iterations', '?')} iterations",
            columns=["N", "avssl s", "sklearn s", "speed-up", "inertia avssl/sklearn", "ARI between",
                     "ARI avssl-planted", "ARI sklearn-planted", "iterations"],
            rows=cells,
            caption="inertia ratio < 1: avssl's clustering is tighter; ARI 1: the same partition",
        )
