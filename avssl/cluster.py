"""k-means on the device, batched: k-means++ seeding (greedy, as scikit-learn), Lloyd iterations, restarts.

Sized for a training set's features (AudioSet: 1.8M × 512): distances are computed in row chunks with one
matmul per chunk (memory ``chunk_size × k``), centres are updated with ``index_add_`` and ``bincount`` (no loop
over clusters), and everything runs where ``x`` is, or on ``device`` (a GPU when given one).

Seeding is greedy k-means++ (Arthur & Vassilvitskii 2007, as ``sklearn.cluster.KMeans`` does it): each new
centre is the best, by the resulting potential (sum of squared distances to the nearest centre), of
``2 + ⌊ln k⌋`` candidates drawn with probability ∝ squared distance. Lloyd iterations stop when no label
changes or when the centres move by less than ``tol`` × the mean per-dimension variance of ``x`` (squared
Frobenius norm), scikit-learn's criterion. A cluster left empty takes the point farthest from its centre,
as in scikit-learn. Of ``restarts`` runs the one with the lowest inertia wins.

Distances and assignments are computed in fp32 (``x`` centred on its mean first, so the norms stay small);
centre sums and the inertia are accumulated in fp64. Deterministic for a given ``seed`` and device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch

Device = Union[str, torch.device, None]


@dataclass
class KMeansResult:
    """``labels`` N (long), ``centres`` k×D (fp32, in ``x``'s coordinates), ``inertia`` (sum of squared
    distances to the assigned centres), ``iterations`` (Lloyd steps of the winning restart), all on the device
    the clustering ran on (``inertia`` and ``iterations`` as Python numbers)."""

    labels: torch.Tensor
    centres: torch.Tensor
    inertia: float
    iterations: int


def _nearest(x: torch.Tensor, x_sq: torch.Tensor, centres: torch.Tensor,
             chunk_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """For N×D ``x`` (``x_sq`` its squared row norms) and k×D ``centres``: (labels N, squared distance N) to the
    nearest centre, ``chunk_size`` rows at a time."""
    c_sq = centres.pow(2).sum(1)
    labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dist = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for s in range(0, x.shape[0], chunk_size):
        d = torch.addmm(c_sq, x[s:s + chunk_size], centres.t(), alpha=-2.0).add_(x_sq[s:s + chunk_size, None])
        best, lab = d.min(dim=1)
        dist[s:s + chunk_size], labels[s:s + chunk_size] = best.clamp_(min=0), lab
    return labels, dist


def _sq_dist_to(x: torch.Tensor, x_sq: torch.Tensor, points: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """N×P squared distances of ``x`` to a few ``points`` (P×D)."""
    p_sq = points.pow(2).sum(1)
    out = torch.empty(x.shape[0], points.shape[0], dtype=x.dtype, device=x.device)
    for s in range(0, x.shape[0], chunk_size):
        out[s:s + chunk_size] = torch.addmm(p_sq, x[s:s + chunk_size], points.t(), alpha=-2.0).add_(
            x_sq[s:s + chunk_size, None]).clamp_(min=0)
    return out


def kmeans_plusplus(x: torch.Tensor, k: int, generator: torch.Generator, chunk_size: int = 65536,
                    x_sq: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Greedy k-means++ seeding: k×D initial centres chosen among the rows of N×D ``x`` (see the module docstring)."""
    n = x.shape[0]
    x_sq = x.pow(2).sum(1) if x_sq is None else x_sq
    trials = 2 + int(math.log(k))
    first = int(torch.randint(n, (1,), generator=generator, device=generator.device))
    centres = x.new_empty(k, x.shape[1])
    centres[0] = x[first]
    closest = _sq_dist_to(x, x_sq, x[first:first + 1], chunk_size)[:, 0]
    for c in range(1, k):
        total = closest.double().sum()
        if float(total) <= 0:  # every point sits on a centre: any point will do
            cand = torch.randint(n, (trials,), generator=generator, device=generator.device).to(x.device)
        else:
            cand = torch.multinomial((closest.double() / total).to(generator.device), trials, replacement=True,
                                     generator=generator).to(x.device)
        d = torch.minimum(_sq_dist_to(x, x_sq, x[cand], chunk_size), closest[:, None])  # N×trials
        best = int(d.double().sum(0).argmin())
        centres[c] = x[cand[best]]
        closest = d[:, best].contiguous()
    return centres


def _lloyd(x: torch.Tensor, x_sq: torch.Tensor, centres: torch.Tensor, iterations: int, tol: float,
           chunk_size: int) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Lloyd iterations from ``centres``; (labels, centres, iterations run)."""
    k = centres.shape[0]
    labels, dist = _nearest(x, x_sq, centres, chunk_size)
    done = 0
    for done in range(1, iterations + 1):
        sums = torch.zeros(k, x.shape[1], dtype=torch.float64, device=x.device)
        for s in range(0, x.shape[0], chunk_size):
            sums.index_add_(0, labels[s:s + chunk_size], x[s:s + chunk_size].double())
        counts = torch.bincount(labels, minlength=k)
        new = (sums / counts.clamp(min=1)[:, None]).to(x.dtype)
        empty = (counts == 0).nonzero().flatten()
        if empty.numel():  # each empty cluster takes one of the points farthest from their centres
            far = dist.topk(int(empty.numel())).indices
            new[empty] = x[far]
        shift = float((new.double() - centres.double()).pow(2).sum())
        centres = new
        new_labels, dist = _nearest(x, x_sq, centres, chunk_size)
        changed = bool((new_labels != labels).any())
        labels = new_labels
        if not changed or shift <= tol:
            break
    return labels, centres, done


def kmeans_fit(x: torch.Tensor, k: int, iterations: int = 50, restarts: int = 5, seed: int = 0,
               device: Device = None, tol: float = 1e-4, chunk_size: int = 65536,
               init: Optional[torch.Tensor] = None) -> KMeansResult:
    """k-means of N×D ``x`` into ``k`` clusters on ``device`` (default: ``x``'s); the best of ``restarts`` runs.

    ``init`` (k×D) starts a single run from those centres instead of k-means++ seeding.
    Raises ValueError unless 1 <= k <= N and ``x`` is a finite N×D matrix.
    """
    if x.dim() != 2:
        raise ValueError(f"k-means needs an N×D matrix, got shape {tuple(x.shape)}")
    n = x.shape[0]
    if not 1 <= int(k) <= n:
        raise ValueError(f"k-means needs 1 <= k <= N, got k={k} for N={n}")
    k = int(k)
    dev = torch.device(device) if device is not None else x.device
    x = x.to(dev, torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("k-means: the features contain NaN or infinite values")
    mean = x.double().mean(0)
    xc = x - mean.to(x.dtype)  # centred: smaller norms, so the expanded distance loses less to rounding
    x_sq = xc.pow(2).sum(1)
    threshold = tol * float(xc.double().var(0, unbiased=False).mean())
    g = torch.Generator(device=dev).manual_seed(int(seed))
    best: Optional[KMeansResult] = None
    if init is not None and tuple(init.shape) != (k, x.shape[1]):
        raise ValueError(f"k-means: init must be k×D = {k}×{x.shape[1]}, got {tuple(init.shape)}")
    for _ in range(1 if init is not None else max(1, int(restarts))):
        centres = (init.to(dev, torch.float32) - mean.to(torch.float32) if init is not None
                   else kmeans_plusplus(xc, k, g, chunk_size, x_sq))
        labels, centres, its = _lloyd(xc, x_sq, centres, int(iterations), threshold, chunk_size)
        inertia = _inertia(xc, labels, centres, chunk_size)
        if best is None or inertia < best.inertia:
            best = KMeansResult(labels, centres, inertia, its)
    assert best is not None
    best.centres = best.centres + mean.to(best.centres.dtype)
    return best


def _inertia(x: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor, chunk_size: int) -> float:
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for s in range(0, x.shape[0], chunk_size):
        total += (x[s:s + chunk_size].double() - centres[labels[s:s + chunk_size]].double()).pow(2).sum()
    return float(total)


def kmeans(x: torch.Tensor, k: int, iterations: int = 50, restarts: int = 5, seed: int = 0,
           device: Device = None) -> torch.Tensor:
    """The labels (N, long, on ``x``'s device) of :func:`kmeans_fit`: k-means of N×D ``x``, computed on
    ``device`` (default ``x``'s)."""
    return kmeans_fit(x, k, iterations, restarts, seed, device).labels.to(x.device)


__all__ = ["KMeansResult", "kmeans", "kmeans_fit", "kmeans_plusplus"]
