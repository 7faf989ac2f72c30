"""Losses of the pretext tasks: PIRL's invariance NCE and the tracking triplet ranking loss.

=====================  ==================================================  ===========================
name                   input                                               objective
=====================  ==================================================  ===========================
``pirl``               B×E, B×E embeddings of an input and its transform   symmetric InfoNCE, in-batch
``tracking_triplet``   anchors, positives B×E                              ranking loss, hard negatives
=====================  ==================================================  ===========================

The classification tasks (``temporal_order``, ``vcop``, ``rotation``, ``jigsaw``, ``relative_position``)
compute their head's logits and cross-entropy themselves (:mod:`avssl.pretext`); their names here build that
head with a cross-entropy for one more release (deprecated: a DeprecationWarning says where the head lives).
"""
from __future__ import annotations

import warnings
from typing import Any, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from avssl.losses import LOSSES
from avssl.losses.distributed import full_precision, no_autocast


class TaskHeadLoss(nn.Module):
    """Deprecated: cross-entropy of a pretext task's head over item features (B×K×D, labels B)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """feats B×K×D -> B×classes, in fp32."""
        with no_autocast(feats):
            return self.head(full_precision(feats))

    def forward(self, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """feats B×K×D, labels B (class indices) -> mean cross-entropy."""
        return F.cross_entropy(self.logits(feats), labels.to(feats.device).long())


def _deprecated_task_head(name: str) -> None:
    def build(*args: Any, **kwargs: Any) -> TaskHeadLoss:
        from avssl.pretext import PRETEXT_TASKS

        warnings.warn(f"build_loss({name!r}) is deprecated and will be removed: the task computes its head and "
                      f"cross-entropy itself (avssl.pretext.build_pretext_task({name!r}, feat_dim))",
                      DeprecationWarning, stacklevel=3)
        return TaskHeadLoss(PRETEXT_TASKS.get(name).make_head(*args, **kwargs))

    LOSSES.register(name)(build)


for _name in ("temporal_order", "vcop", "rotation", "jigsaw", "relative_position"):
    _deprecated_task_head(_name)


@LOSSES.register("pirl")
def pirl_loss(temperature: float = 0.07, gather_distributed: bool = False) -> nn.Module:
    """PIRL's invariance objective (Misra & van der Maaten 2020), with in-batch negatives.

    ``f`` (B×E): embeddings of the inputs; ``g`` (B×E): embeddings of their transformed versions (e.g.
    jigsaw tiles). Each g_i must pick f_i among the batch's f and each f_i its g_i (symmetric InfoNCE at
    temperature τ on L2-normalised rows) — the same objective as ``xmodal_nce`` with the transform in
    place of the other modality. The paper contrasts against a memory bank of past f embeddings; a task
    gets no dataset indices, so the batch (or, with ``gather_distributed``, every rank's) supplies the
    negatives here.
    """
    from avssl.losses.audiovisual import CrossModalNCE

    return CrossModalNCE(temperature=temperature, gather_distributed=gather_distributed)


@LOSSES.register("tracking_triplet")
class TrackingTripletLoss(nn.Module):
    """Wang & Gupta's ranking loss on cosine distance D(a, b) = 1 − cos(a, b), with hard-negative mining.

    For anchor X_i (start of a track), its positive X_i⁺ (the end of the same track), and K negatives
    X⁻ chosen among the other rows of the batch (every other anchor and positive)::

        L = mean over i and its K negatives of max(0, D(X_i, X_i⁺) − D(X_i, X⁻) + margin)

    Of the K negatives, ``round(hard_fraction·K)`` are the hardest (the smallest D to the anchor) and the
    rest are drawn at random from the remaining candidates (the paper mixes hard and random ones).

    Args:
        margin: m (the paper uses 0.5).  num_negatives: K (capped by the 2B − 2 candidates).
        hard_fraction: fraction of hard negatives (0: all random, 1: all hard).
    """

    def __init__(self, margin: float = 0.5, num_negatives: int = 4, hard_fraction: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= hard_fraction <= 1.0:
            raise ValueError(f"hard_fraction must be in [0, 1], got {hard_fraction}")
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
        self.margin, self.num_negatives, self.hard_fraction = float(margin), int(num_negatives), float(hard_fraction)

    def select_negatives(self, dist: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """dist B×2B (anchor i to every anchor and positive; own pair masked by +inf) -> B×K candidate columns."""
        b, n = dist.shape
        k = min(self.num_negatives, n - 2)
        if k < 1:
            raise ValueError("tracking_triplet needs at least 2 tracks in a batch (negatives come from the others)")
        hard_k = int(round(self.hard_fraction * k))
        order = dist.argsort(dim=1)  # own pair (+inf) sorts last
        hard = order[:, :hard_k]
        rest = order[:, hard_k:n - 2]  # candidates left, without the own anchor and positive
        noise = torch.rand(rest.shape, generator=generator).to(dist.device)
        rand = rest.gather(1, noise.argsort(dim=1)[:, :k - hard_k])
        return torch.cat([hard, rand], dim=1)

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """anchor, positive: B×E (row i of both from track i) -> scalar."""
        return self.terms(anchor, positive, generator)[0]

    def terms(self, anchor: torch.Tensor, positive: torch.Tensor,
              generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """(the loss, the fraction of (anchor, negative) pairs inside the margin, a diagnostic without gradient)."""
        if anchor.shape != positive.shape or anchor.dim() != 2:
            raise ValueError(f"tracking_triplet needs two B×E tensors, got {tuple(anchor.shape)}, {tuple(positive.shape)}")
        with no_autocast(anchor):
            a = F.normalize(full_precision(anchor), dim=1)
            p = F.normalize(full_precision(positive), dim=1)
            b = a.shape[0]
            cand = torch.cat([a, p], dim=0)  # 2B×E
            dist = 1.0 - a @ cand.T  # B×2B
            own = torch.arange(b, device=a.device)
            masked = dist.detach().clone()
            masked[own, own] = float("inf")
            masked[own, own + b] = float("inf")
            neg = self.select_negatives(masked, generator)
            d_pos = dist[own, own + b]
            d_neg = dist.gather(1, neg)
            gap = d_pos[:, None] - d_neg + self.margin
            return F.relu(gap).mean(), (gap.detach() > 0).float().mean()
