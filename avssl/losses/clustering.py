"""Clustering objectives: SwAV (with Sinkhorn-Knopp codes), DEC, k-means and clustering regularisers.

The regularisers (balanced assignment, locality preserving, group sparsity) follow the
"clustering with deep learning" taxonomy (Aljalbout et al., 2018) that collects them:
k-means ``Σ_i Σ_k s_ik ‖z_i - μ_k‖²``, cluster-assignment hardening (DEC), balanced assignment
``KL(p̄ ‖ uniform)``, locality preserving ``Σ_i Σ_{j∈N_k(i)} s(x_i, x_j) ‖z_i - z_j‖²`` and group
sparsity ``Σ_i Σ_g λ√n_g ‖z_{i,g}‖``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from avssl.losses import LOSSES
from avssl.losses.distributed import full_precision, no_autocast
from avssl.losses.distributed import world_info

_REDUCTIONS = ("mean", "sum")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_matrix(x: torch.Tensor, name: str, shape: str) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name} must be {shape}, got shape {tuple(x.shape)}")


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between the rows of a (N×D) and b (M×D): N×M, ≥ 0."""
    d = a.pow(2).sum(dim=1, keepdim=True) + b.pow(2).sum(dim=1) - 2.0 * a @ b.t()
    return d.clamp_min(0.0)  # the expansion can dip below zero by rounding


# --------------------------------------------------------------------------------------- Sinkhorn
def _logsumexp_over_samples(log_q: torch.Tensor, world: int) -> torch.Tensor:
    """log Σ_b exp(log_q[:, b]) over the samples of every rank: K×1."""
    top = log_q.max(dim=1, keepdim=True).values
    if world > 1:
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
    total = torch.exp(log_q - top).sum(dim=1, keepdim=True)
    if world > 1:
        dist.all_reduce(total)
    return top + torch.log(total)


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3,
             distributed: bool = True) -> torch.Tensor:
    """Sinkhorn-Knopp codes of SwAV: an equipartitioned soft assignment of samples to prototypes.

    ``scores`` (B×K) are prototype scores. With Q = exp(scores/ε)ᵀ (K×B) the iterations alternately
    rescale prototype rows to sum 1/K and sample columns to sum 1/B; the result is returned as B·Qᵀ
    (B×K): every row sums to 1 (the last step normalises samples) and, at the fixed point, every
    prototype receives B/K of the mass (approximately so after the usual 3 iterations). The scaling
    runs in the log domain (the same iterates as SwAV's, where exp(scores/ε) is normalised
    directly), so large scores/ε can neither overflow nor underflow a whole sample to zero.

    When ``distributed`` and ``torch.distributed`` is initialised, the prototype sums are
    all-reduced across ranks and B counts the global batch: each rank gets its rows of the codes one
    process would compute for the whole (concatenated) batch. Every rank must call it, with the
    same B. No gradient; computed in fp32 (fp64 stays fp64).
    """
    _check_matrix(scores, "scores", "B×K")
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    _, world = world_info() if distributed else (0, 1)
    with no_autocast(scores):
        log_q = full_precision(scores.detach()).t() / epsilon              # K×B
        log_k = math.log(log_q.shape[0])
        log_b = math.log(log_q.shape[1] * world)
        for _ in range(iterations):
            log_q = log_q - _logsumexp_over_samples(log_q, world) - log_k   # prototypes sum to 1/K
            log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - log_b  # samples sum to 1/B
        return torch.exp(log_q + log_b).t()


class SwAVLoss(nn.Module):
    """SwAV's swapped prediction with multi-crop (Caron et al., 2020).

    ``scores_a``, ``scores_b`` (B×K) are the two large crops' prototype scores (dot products of
    normalised embeddings with normalised prototypes); ``small_scores`` any number of further crops
    (each B×K). Codes come from the two large crops only, without gradient, via :func:`sinkhorn`;
    given ``queue_scores_a``/``queue_scores_b`` (Q×K, scores of earlier batches' large crops) they are
    appended before Sinkhorn and only the batch rows are kept. The code of a is predicted from every
    other view (b and the small crops), the code of b from a and the small crops::

        ℓ(q, s) = -mean_i Σ_k q_ik · log_softmax(s_i / τ)_k,
        L = [Σ_{v≠a} ℓ(q_a, s_v) + Σ_{v≠b} ℓ(q_b, s_v)] / (2·(V-1))     (V views in all)

    With ``gather_distributed=True`` (the default, as in SwAV) Sinkhorn equipartitions over all
    ranks' batches (see :func:`sinkhorn`); each rank's loss is the mean over its own samples, so the
    mean over ranks equals the single-process loss on the whole batch. Computed in fp32, autocast off.

    Args:
        temperature: τ of the softmax over prototypes.
        epsilon: ε of the Sinkhorn codes.
        sinkhorn_iterations: Sinkhorn iterations.
        gather_distributed: equipartition codes over the global batch.
    """

    def __init__(self, temperature: float = 0.1, epsilon: float = 0.05, sinkhorn_iterations: int = 3,
                 gather_distributed: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}")
        if sinkhorn_iterations < 1:
            raise ValueError(f"sinkhorn_iterations must be >= 1, got {sinkhorn_iterations}")
        self.temperature, self.epsilon = temperature, epsilon
        self.sinkhorn_iterations, self.gather_distributed = sinkhorn_iterations, gather_distributed

    def _codes(self, scores: torch.Tensor, queue: Optional[torch.Tensor], name: str) -> torch.Tensor:
        s = full_precision(scores.detach())
        if queue is not None:
            if queue.dim() != 2 or queue.shape[1] != scores.shape[1]:
                raise ValueError(f"{name} must be Q×{scores.shape[1]}, got shape {tuple(queue.shape)}")
            s = torch.cat([s, full_precision(queue.detach()).to(s.dtype)], dim=0)
        codes = sinkhorn(s, self.epsilon, self.sinkhorn_iterations, distributed=self.gather_distributed)
        return codes[:scores.shape[0]]

    def _cross_entropy(self, codes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(full_precision(scores) / self.temperature, dim=1)
        return -(codes.to(log_p.dtype) * log_p).sum(dim=1).mean()

    def forward(self, scores_a: torch.Tensor, scores_b: torch.Tensor, *small_scores: torch.Tensor,
                queue_scores_a: Optional[torch.Tensor] = None,
                queue_scores_b: Optional[torch.Tensor] = None) -> torch.Tensor:
        """scores_a, scores_b, *small_scores: B×K; queue_scores_a/_b: Q×K or None -> scalar."""
        _check_matrix(scores_a, "scores_a", "B×K")
        views = [scores_a, scores_b, *small_scores]
        for i, v in enumerate(views[1:], start=1):
            if v.shape != scores_a.shape:
                name = "scores_b" if i == 1 else f"small_scores[{i - 2}]"
                raise ValueError(f"{name} has shape {tuple(v.shape)}, expected {tuple(scores_a.shape)} like scores_a")
        if (queue_scores_a is None) != (queue_scores_b is None):
            raise ValueError("give both queue_scores_a and queue_scores_b, or neither")
        with no_autocast(scores_a):
            codes_a = self._codes(scores_a, queue_scores_a, "queue_scores_a")
            codes_b = self._codes(scores_b, queue_scores_b, "queue_scores_b")
            total = scores_a.new_zeros((), dtype=full_precision(scores_a).dtype)
            for i, v in enumerate(views):
                if i != 0:
                    total = total + self._cross_entropy(codes_a, v)
                if i != 1:
                    total = total + self._cross_entropy(codes_b, v)
            return total / (2 * (len(views) - 1))


@LOSSES.register("swav")
def _swav(**kw) -> nn.Module:
    return SwAVLoss(**kw)


# -------------------------------------------------------------------------------------------- DEC
def student_t_log_assignment(z: torch.Tensor, centroids: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """DEC's soft assignment in log space: log q_ij with q_ij ∝ (1 + ‖z_i - μ_j‖²/α)^(-(α+1)/2),
    normalised over j. z: B×D, centroids: K×D -> B×K."""
    logits = -(alpha + 1.0) / 2.0 * torch.log1p(squared_distances(z, centroids) / alpha)
    return torch.log_softmax(logits, dim=1)


def dec_target(q: torch.Tensor) -> torch.Tensor:
    """DEC's sharpened target: p_ij = (q_ij²/f_j) / Σ_j' (q_ij'²/f_j') with f_j = Σ_i q_ij. q: B×K -> B×K."""
    weight = q.pow(2) / q.sum(dim=0)
    return weight / weight.sum(dim=1, keepdim=True)


class DECLoss(nn.Module):
    """Deep Embedded Clustering's cluster-assignment hardening (Xie et al., 2016).

    For embeddings ``z`` (B×D) and centroids μ (K×D): soft assignments q (Student-t kernel with
    ``alpha`` degrees of freedom, see :func:`student_t_log_assignment`), target p = :func:`dec_target`
    (q) computed from the batch and detached, and::

        L = KL(P ‖ Q) = Σ_i Σ_j p_ij log(p_ij / q_ij) / B        ("batchmean"; "sum" drops the /B)

    Gradients reach ``z`` and ``centroids``. Computed in fp32 with autocast off.

    Args:
        alpha: Student-t degrees of freedom.
        reduction: "batchmean" (default) or "sum".
    """

    def __init__(self, alpha: float = 1.0, reduction: str = "batchmean") -> None:
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        if reduction not in ("batchmean", "sum"):
            raise ValueError(f"reduction must be 'batchmean' or 'sum', got {reduction!r}")
        self.alpha, self.reduction = alpha, reduction

    def forward(self, z: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
        """z: B×D, centroids: K×D -> scalar."""
        _check_matrix(z, "z", "B×D")
        if centroids.dim() != 2 or centroids.shape[1] != z.shape[1]:
            raise ValueError(f"centroids must be K×{z.shape[1]}, got shape {tuple(centroids.shape)}")
        with no_autocast(z):
            zf, mu = full_precision(z), full_precision(centroids).to(full_precision(z).dtype)
            log_q = student_t_log_assignment(zf, mu, self.alpha)
            p = dec_target(log_q.detach().exp())
            kl = (torch.xlogy(p, p) - p * log_q).sum()
            return kl / z.shape[0] if self.reduction == "batchmean" else kl


@LOSSES.register("dec")
def _dec(**kw) -> nn.Module:
    return DECLoss(**kw)


# ---------------------------------------------------------------------------------------- k-means
class KMeansLoss(nn.Module):
    """k-means loss ``Σ_i Σ_k s_ik ‖z_i - μ_k‖²`` (divided by B with the default ``reduction="mean"``).

    ``z``: B×D, ``centroids``: K×D. ``assignments`` may be a B×K matrix s (hard one-hot or soft
    weights), a length-B LongTensor of cluster indices, or None for the hard nearest-centroid
    assignment of each row. Gradients reach ``z`` and ``centroids``; computed in fp32.

    Args:
        reduction: "mean" (over the batch) or "sum" (the plain sum of the taxonomy's formula).
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        _check_reduction(reduction)
        self.reduction = reduction

    def forward(self, z: torch.Tensor, centroids: torch.Tensor,
                assignments: Optional[torch.Tensor] = None) -> torch.Tensor:
        """z: B×D, centroids: K×D, assignments: B×K, B (indices) or None -> scalar."""
        _check_matrix(z, "z", "B×D")
        if centroids.dim() != 2 or centroids.shape[1] != z.shape[1]:
            raise ValueError(f"centroids must be K×{z.shape[1]}, got shape {tuple(centroids.shape)}")
        batch, k = z.shape[0], centroids.shape[0]
        with no_autocast(z):
            zf = full_precision(z)
            d = squared_distances(zf, full_precision(centroids).to(zf.dtype))      # B×K
            if assignments is None:
                loss = d.gather(1, d.detach().argmin(dim=1, keepdim=True)).sum()
            elif assignments.dim() == 1 and not assignments.is_floating_point():
                in_range = bool(((assignments >= 0) & (assignments < k)).all())
                if assignments.shape[0] != batch or not in_range:
                    raise ValueError(f"assignments must hold {batch} cluster indices in [0, {k}), "
                                     f"got {assignments.tolist()}")
                loss = d.gather(1, assignments.view(-1, 1).to(d.device)).sum()
            elif assignments.shape == (batch, k):
                loss = (full_precision(assignments).to(d.dtype) * d).sum()
            else:
                raise ValueError(f"assignments must be {batch}×{k} or {batch} indices, "
                                 f"got shape {tuple(assignments.shape)}")
            return loss / batch if self.reduction == "mean" else loss


@LOSSES.register("kmeans")
def _kmeans(**kw) -> nn.Module:
    return KMeansLoss(**kw)


# ----------------------------------------------------------------------------- balanced assignment
class BalancedAssignmentLoss(nn.Module):
    """Balanced-assignment loss (Dizaji et al., 2017): ``KL(p̄ ‖ U) = Σ_k p̄_k log(p̄_k·K)``.

    ``probs`` (B×K) are soft cluster assignments (rows summing to 1); p̄ = mean over the batch and
    U the uniform distribution over K clusters. 0 when clusters are used equally, log K when the
    whole batch falls into one cluster. Computed in fp32.
    """

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        """probs: B×K -> scalar."""
        _check_matrix(probs, "probs", "B×K")
        with no_autocast(probs):
            mean = full_precision(probs).mean(dim=0)
            return torch.xlogy(mean, mean * probs.shape[1]).sum()


@LOSSES.register("balanced_assignment")
def _balanced_assignment(**kw) -> nn.Module:
    return BalancedAssignmentLoss(**kw)


# ------------------------------------------------------------------------------ locality preserving
class LocalityPreservingLoss(nn.Module):
    """Locality-preserving loss (Huang et al., 2014): neighbours in input space stay close in ``z``::

        L = Σ_i Σ_{j∈N_k(i)} s(x_i, x_j) ‖z_i - z_j‖²,     s(x_i, x_j) = exp(-‖x_i - x_j‖² / σ)

    N_k(i) are the k nearest neighbours of x_i (never i itself). The formula leaves the similarity s
    open; the heat kernel of the original paper is used, and ``sigma=None`` gives the unweighted
    form s = 1. Neighbours and weights come from ``x`` (B×…, flattened per row)
    or, when ``x`` is None, from ``z`` itself; they are constants (no gradient). As in the formula,
    the default ``reduction="sum"`` sums over samples; ``"mean"`` divides by B.

    Args:
        k: neighbours per sample (the batch must hold more than k rows).
        sigma: heat-kernel bandwidth σ (> 0), or None for unit weights.
        reduction: "sum" or "mean".
    """

    def __init__(self, k: int = 5, sigma: Optional[float] = 1.0, reduction: str = "sum") -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if sigma is not None and sigma <= 0:
            raise ValueError(f"sigma must be > 0 or None, got {sigma}")
        _check_reduction(reduction)
        self.k, self.sigma, self.reduction = k, sigma, reduction

    def forward(self, z: torch.Tensor, x: Optional[torch.Tensor] = None) -> torch.Tensor:
        """z: B×D, x: B×… or None -> scalar."""
        _check_matrix(z, "z", "B×D")
        batch = z.shape[0]
        if batch <= self.k:
            raise ValueError(f"k={self.k} neighbours need a batch of more than {self.k} rows, got {batch}")
        if x is not None and x.shape[0] != batch:
            raise ValueError(f"x has {x.shape[0]} rows but z has {batch}")
        with no_autocast(z):
            zf = full_precision(z)
            with torch.no_grad():
                ref = full_precision((z if x is None else x).detach().reshape(batch, -1)).to(zf.dtype)
                dx = squared_distances(ref, ref)
                dx.fill_diagonal_(float("inf"))
                dist_nn, idx = dx.topk(self.k, dim=1, largest=False)                       # B×k
                w = torch.ones_like(dist_nn) if self.sigma is None else torch.exp(-dist_nn / self.sigma)
            diff = zf.unsqueeze(1) - zf[idx]                                                # B×k×D
            loss = (w * diff.pow(2).sum(dim=2)).sum()
            return loss / batch if self.reduction == "mean" else loss


@LOSSES.register("locality_preserving")
def _locality_preserving(**kw) -> nn.Module:
    return LocalityPreservingLoss(**kw)


# ----------------------------------------------------------------------------------- group sparsity
GroupSpec = Union[torch.Tensor, Sequence[int]]


class GroupSparsityLoss(nn.Module):
    """Group-sparsity (group-lasso) penalty on features: ``L = Σ_i Σ_g λ√n_g ‖z_{i,g}‖₂``.

    The feature dimensions of ``z`` (B×D) are split into groups g of n_g dimensions; each sample's
    group vectors are penalised by their Euclidean norm weighted by λ√n_g (so large groups are not
    favoured), an ℓ2,1 norm that drives whole groups to zero. (Written ``‖·‖₁`` in some summaries,
    meaning the ℓ1 sum over groups of the groups' ℓ2 norms, not an ℓ1 inside groups.) As in the
    formula, the default ``reduction="sum"`` sums over samples; ``"mean"`` divides by B.

    Groups: ``num_groups`` at construction (D split into equal contiguous groups), or per call
    ``groups`` = a length-D LongTensor of group ids (0…G-1, any order) or a sequence of group sizes
    summing to D (contiguous). Computed in fp32.

    Args:
        num_groups: default number of equal groups, used when forward gets no ``groups``.
        lambd: λ.
        reduction: "sum" or "mean".
    """

    def __init__(self, num_groups: Optional[int] = None, lambd: float = 1.0, reduction: str = "sum") -> None:
        super().__init__()
        if num_groups is not None and num_groups < 1:
            raise ValueError(f"num_groups must be >= 1, got {num_groups}")
        if lambd < 0:
            raise ValueError(f"lambd must be >= 0, got {lambd}")
        _check_reduction(reduction)
        self.num_groups, self.lambd, self.reduction = num_groups, lambd, reduction

    def _group_ids(self, dim: int, groups: Optional[GroupSpec], device: torch.device) -> torch.Tensor:
        if groups is None:
            if self.num_groups is None:
                raise ValueError("pass groups to forward or num_groups to the constructor")
            if dim % self.num_groups:
                raise ValueError(f"num_groups={self.num_groups} does not divide the feature size {dim}")
            return torch.arange(dim, device=device) // (dim // self.num_groups)
        if isinstance(groups, torch.Tensor) and groups.dim() == 1 and groups.shape[0] == dim \
                and not groups.is_floating_point():
            ids = groups.to(device=device, dtype=torch.long)
            if ids.min() < 0:
                raise ValueError("groups holds negative group ids")
            return ids
        sizes = [int(s) for s in groups]
        if sum(sizes) != dim or any(s < 1 for s in sizes):
            raise ValueError(f"groups must be {dim} group ids or positive group sizes summing to {dim}, got {sizes}")
        return torch.repeat_interleave(torch.arange(len(sizes), device=device),
                                       torch.tensor(sizes, device=device))

    def forward(self, z: torch.Tensor, groups: Optional[GroupSpec] = None) -> torch.Tensor:
        """z: B×D; groups: D group ids, group sizes, or None (use num_groups) -> scalar."""
        _check_matrix(z, "z", "B×D")
        ids = self._group_ids(z.shape[1], groups, z.device)
        with no_autocast(z):
            zf = full_precision(z)
            num = int(ids.max()) + 1
            sq = zf.new_zeros(z.shape[0], num).index_add_(1, ids, zf.pow(2))            # B×G
            sizes = torch.bincount(ids, minlength=num).to(zf.dtype)
            present = sizes > 0  # ids may skip numbers; empty groups carry no penalty
            # sqrt's gradient is infinite at 0: a group that is exactly zero gets the subgradient 0
            safe = torch.where(sq > 0, sq, torch.ones_like(sq))
            norms = torch.where(sq > 0, safe.sqrt(), torch.zeros_like(sq))
            loss = (self.lambd * sizes.sqrt() * norms)[:, present].sum()
            return loss / z.shape[0] if self.reduction == "mean" else loss


@LOSSES.register("group_sparsity")
def _group_sparsity(**kw) -> nn.Module:
    return GroupSparsityLoss(**kw)
