"""Losses of the pretext tasks: classifiers over (combinations of) encoder features, PIRL's invariance
NCE, and the tracking triplet ranking loss.

The classification losses own their heads (a pretext task's head is part of its objective), take
features and integer labels, and return the mean cross-entropy; ``logits(...)`` gives the head's output
for accuracies. All are computed in fp32 with autocast off.

=====================  ==================================================  ===========================
name                   input                                               head -> classes
=====================  ==================================================  ===========================
``temporal_order``     B×3×D features of a frame tuple                     MLP(3D) -> 2 (in order or not)
``vcop``               B×N×D features of N shuffled clips                  pairwise MLP(2D), MLP -> N!
``rotation``           B×D features of a rotated input                     Linear -> 4
``jigsaw``             B×9×D features of shuffled tiles                    MLP(9D) -> P permutations
``relative_position``  B×2×D features (centre tile, neighbour)             MLP(2D) -> 8
``pirl``               B×E, B×E embeddings of an input and its transform   symmetric InfoNCE, in-batch
``tracking_triplet``   anchors, positives B×E                              ranking loss, hard negatives
=====================  ==================================================  ===========================
"""
from __future__ import annotations

import itertools
import math
from abc import ABCMeta, abstractmethod
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from avssl.losses import LOSSES
from avssl.losses.distributed import full_precision, no_autocast


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))


class _LogitsCrossEntropy(nn.Module, metaclass=ABCMeta):
    """Cross-entropy of ``self.logits(feats)``; keeps the last logits (detached) for accuracies."""

    @abstractmethod
    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """feats B×K×D -> B×classes."""

    def forward(self, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """feats B×K×D, labels B (class indices) -> mean cross-entropy."""
        with no_autocast(feats):
            logits = self.logits(feats)
            self.last_logits = logits.detach()  # for accuracies, without a second pass through the head
            return F.cross_entropy(logits, labels.to(feats.device).long())


class PretextClassifierLoss(_LogitsCrossEntropy):
    """Cross-entropy of a head over the concatenated features of K items: B×K×D (or B×D for K = 1).

    Args:
        feat_dim: D, the encoder's pooled feature size.
        num_items: K, the items whose features are concatenated (in the order given).
        num_classes: the pretext task's classes.
        hidden: hidden width of the MLP head; 0 for a linear head.
    """

    def __init__(self, feat_dim: int, num_items: int, num_classes: int, hidden: int = 512) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_items, self.num_classes = int(num_items), int(num_classes)
        in_dim = int(feat_dim) * self.num_items
        self.head = nn.Linear(in_dim, num_classes) if hidden <= 0 else _mlp(in_dim, hidden, num_classes)

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """feats B×K×D (or B×D when K = 1) -> B×num_classes."""
        if feats.dim() == 2 and self.num_items == 1:
            feats = feats[:, None]
        if feats.dim() != 3 or feats.shape[1] != self.num_items:
            raise ValueError(f"expected features B×{self.num_items}×D, got shape {tuple(feats.shape)}")
        with no_autocast(feats):
            return self.head(full_precision(feats).flatten(1))


@LOSSES.register("temporal_order")
def temporal_order_loss(feat_dim: int, hidden: int = 512) -> PretextClassifierLoss:
    """Shuffle and Learn's verification head: features of (frame, frame, frame) -> in order (1) or not (0)."""
    return PretextClassifierLoss(feat_dim, 3, 2, hidden)


@LOSSES.register("rotation")
def rotation_loss(feat_dim: int, hidden: int = 0) -> PretextClassifierLoss:
    """RotNet's head: features of an input rotated by k·90° -> k (linear by default, as in the paper)."""
    return PretextClassifierLoss(feat_dim, 1, 4, hidden)


@LOSSES.register("jigsaw")
def jigsaw_loss(feat_dim: int, num_permutations: int = 1000, hidden: int = 1024) -> PretextClassifierLoss:
    """The context-free network's head: the 9 tiles' features in shuffled order -> which permutation."""
    return PretextClassifierLoss(feat_dim, 9, num_permutations, hidden)


@LOSSES.register("relative_position")
def relative_position_loss(feat_dim: int, hidden: int = 512) -> PretextClassifierLoss:
    """Doersch et al.'s head: features of (centre tile, neighbour tile) -> which of the 8 neighbours."""
    return PretextClassifierLoss(feat_dim, 2, 8, hidden)


@LOSSES.register("vcop")
class VCOPLoss(_LogitsCrossEntropy):
    """Clip order prediction (Xu et al. 2019): N clip features in shuffled order -> which of the N! orders.

    Every pair i < j of clip features is concatenated and passed through a shared MLP (2D -> ``hidden``);
    the N(N−1)/2 pair features are concatenated and a linear layer gives the N! scores.

    Args:
        feat_dim: D.  num_clips: N (2..6).  hidden: width of the pair features.
    """

    def __init__(self, feat_dim: int, num_clips: int = 3, hidden: int = 512) -> None:
        super().__init__()
        if not 2 <= num_clips <= 6:
            raise ValueError(f"num_clips must be in 2..6, got {num_clips}")
        self.num_clips = int(num_clips)
        self.pairs = list(itertools.combinations(range(self.num_clips), 2))
        self.pair_mlp = nn.Sequential(nn.Linear(2 * feat_dim, hidden), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(hidden * len(self.pairs), math.factorial(self.num_clips))

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """feats B×N×D -> B×N! scores."""
        if feats.dim() != 3 or feats.shape[1] != self.num_clips:
            raise ValueError(f"expected features B×{self.num_clips}×D, got shape {tuple(feats.shape)}")
        with no_autocast(feats):
            f = full_precision(feats)
            i, j = zip(*self.pairs)
            pair = torch.cat([f[:, list(i)], f[:, list(j)]], dim=2)  # B×P×2D
            return self.classifier(self.pair_mlp(pair).flatten(1))


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
            self.last_active = float((d_pos[:, None] - d_neg + self.margin > 0).float().mean())
            return F.relu(d_pos[:, None] - d_neg + self.margin).mean()
