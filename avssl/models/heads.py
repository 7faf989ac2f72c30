"""Small heads put on top of an encoder's pooled B×D features; every dimension is an argument.

=========================== ============================================================================
recipe                      head
=========================== ============================================================================
AVID-CMA                    ``ProjectionHead(512, 512, 128, batch_norm=False)``: Linear-ReLU-Linear
SimCLR                      ``ProjectionHead(2048, 2048, 128)``
BYOL                        ``ProjectionHead(2048, 4096, 256)`` + ``PredictionHead(256, 4096, 256)``
SimSiam                     ``ProjectionHead(2048, 2048, 2048, num_layers=3, last_bn=True,
                            last_bn_affine=False)`` + ``PredictionHead(2048, 512, 2048)``
Barlow Twins                ``ProjectionHead(2048, 8192, 8192, num_layers=3)``
SwAV                        ``ProjectionHead(2048, 2048, 128)`` + ``PrototypeHead(128, 3000)``
linear probe / fine-tuning  ``ClassificationHead(2048, num_classes, dropout=0.5)``
pretext tasks               ``ItemsClassifier(D, K, classes, hidden)`` over K items' features (rotation,
                            jigsaw, relative position, temporal order), ``PairwiseClassifier`` (VCOP),
                            ``mlp_head`` (PIRL, tracking)
=========================== ============================================================================

BatchNorm1d layers normalise over the batch, so in training mode they need B > 1.
"""
from __future__ import annotations

import itertools
import math
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F


def _check_features(x: torch.Tensor, in_dim: int, who: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != in_dim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who} expects B×{in_dim} features, got {shape}")


class ProjectionHead(nn.Module):
    """MLP projector: B×in_dim -> B×out_dim.

    ``num_layers`` Linear layers: the first ``num_layers - 1`` map to ``hidden_dim`` and are each followed
    by [BatchNorm1d] and ReLU; the last maps to ``out_dim``, followed by a BatchNorm1d only with
    ``last_bn`` (affine unless ``last_bn_affine=False``; SimSiam's projector ends in such a BN). A Linear
    followed by a BN has no bias (the BN's shift makes it redundant). ``num_layers=1`` is one Linear.

    Args:
        in_dim: input feature size D (the encoder's ``out_dim``).
        hidden_dim: width of the hidden layers.
        out_dim: output size.
        num_layers: number of Linear layers (≥ 1).
        batch_norm: BatchNorm1d after each hidden Linear.
        last_bn: BatchNorm1d after the last Linear.
        last_bn_affine: learnable scale/shift in that last BN.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        batch_norm: bool = True,
        last_bn: bool = False,
        *,
        last_bn_affine: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"{type(self).__name__}: num_layers must be ≥ 1, got {num_layers}")
        for arg, v in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if int(v) < 1:
                raise ValueError(f"{type(self).__name__}: {arg} must be positive, got {v}")
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim
        self.num_layers = num_layers
        layers: List[nn.Module] = []
        d = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(d, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            d = hidden_dim
        layers.append(nn.Linear(d, out_dim, bias=not last_bn))
        if last_bn:
            layers.append(nn.BatchNorm1d(out_dim, affine=last_bn_affine))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×in_dim -> B×out_dim."""
        _check_features(x, self.in_dim, type(self).__name__)
        return self.layers(x)


class PredictionHead(ProjectionHead):
    """BYOL / SimSiam predictor: Linear-[BN]-ReLU-Linear, B×in_dim -> B×out_dim.

    E.g. BYOL ``PredictionHead(256, 4096, 256)``, SimSiam ``PredictionHead(2048, 512, 2048)``.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool = True) -> None:
        super().__init__(in_dim, hidden_dim, out_dim, num_layers=2, batch_norm=batch_norm, last_bn=False)


class PrototypeHead(nn.Module):
    """SwAV prototypes: B×in_dim -> B×num_prototypes scores ``normalize(x) · Cᵀ``.

    C (``weight``, num_prototypes×in_dim) starts with unit-norm rows; as in SwAV, the optimiser updates
    C freely and :meth:`normalize_` projects its rows back onto the unit sphere — call it before (or
    after) every optimiser step. While the rows are unit-norm the scores are cosine similarities in
    [-1, 1]. The gradient is that of SwAV (through the raw C, not through a normalisation).
    """

    def __init__(self, in_dim: int, num_prototypes: int) -> None:
        super().__init__()
        if in_dim < 1 or num_prototypes < 1:
            raise ValueError(
                f"PrototypeHead: in_dim and num_prototypes must be positive, got {in_dim}, {num_prototypes}"
            )
        self.in_dim, self.num_prototypes = in_dim, num_prototypes
        self.prototypes = nn.Linear(in_dim, num_prototypes, bias=False)
        self.normalize_()

    @property
    def weight(self) -> torch.Tensor:
        """The prototypes C, num_prototypes×in_dim."""
        return self.prototypes.weight

    @torch.no_grad()
    def normalize_(self) -> "PrototypeHead":
        """Rescale every prototype (row of C) to unit L2 norm, in place; returns self."""
        w = self.prototypes.weight
        w.copy_(F.normalize(w, dim=1))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×in_dim -> B×num_prototypes; x is L2-normalised first."""
        _check_features(x, self.in_dim, type(self).__name__)
        return self.prototypes(F.normalize(x, dim=1))


class ClassificationHead(nn.Module):
    """Dropout then Linear: B×in_dim -> B×num_classes logits (linear probe / fine-tuning classifier).

    Weights start at N(0, 0.01²), bias 0 (as PySlowFast's heads). Dropout acts only in training mode.
    """

    def __init__(self, in_dim: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        if in_dim < 1 or num_classes < 1:
            raise ValueError(
                f"ClassificationHead: in_dim and num_classes must be positive, got {in_dim}, {num_classes}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ClassificationHead: dropout must be in [0, 1), got {dropout}")
        self.in_dim, self.num_classes = in_dim, num_classes
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_dim, num_classes)
        nn.init.normal_(self.fc.weight, 0.0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×in_dim -> B×num_classes."""
        _check_features(x, self.in_dim, type(self).__name__)
        return self.fc(self.dropout(x))


def mlp_head(in_dim: int, hidden_dim: int, out_dim: int) -> ProjectionHead:
    """Linear-ReLU-Linear without BatchNorm, B×in_dim -> B×out_dim; ``hidden_dim <= 0``: one Linear."""
    if hidden_dim <= 0:
        return ProjectionHead(in_dim, out_dim, out_dim, num_layers=1, batch_norm=False)
    return ProjectionHead(in_dim, hidden_dim, out_dim, num_layers=2, batch_norm=False)


def _check_items(x: torch.Tensor, num_items: int, feat_dim: int, who: str) -> torch.Tensor:
    """B×K×D item features (or B×D when K = 1) -> B×K×D, or a ValueError naming the layout."""
    if isinstance(x, torch.Tensor) and x.dim() == 2 and num_items == 1:
        x = x[:, None]
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[1:] != (num_items, feat_dim):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who} expects features B×{num_items}×{feat_dim}, got {shape}")
    return x


class ItemsClassifier(nn.Module):
    """A classifier over the concatenated features of K items (in the order given): B×K×D -> B×num_classes.

    The head of the pretext tasks that name a class from a few encoded items (the rotation of one input, the
    permutation of 9 tiles, the neighbour of a tile, the order of 3 frames): :func:`mlp_head` of K·D inputs,
    linear when ``hidden <= 0``. B×D is accepted for K = 1.
    """

    def __init__(self, feat_dim: int, num_items: int, num_classes: int, hidden: int = 512) -> None:
        super().__init__()
        if num_classes < 2 or num_items < 1 or feat_dim < 1:
            raise ValueError(f"ItemsClassifier: need feat_dim >= 1, num_items >= 1 and num_classes >= 2, got "
                             f"{feat_dim}, {num_items}, {num_classes}")
        self.feat_dim, self.num_items, self.num_classes = int(feat_dim), int(num_items), int(num_classes)
        self.mlp = mlp_head(self.feat_dim * self.num_items, hidden, self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×K×D (or B×D for K = 1) -> B×num_classes."""
        return self.mlp(_check_items(x, self.num_items, self.feat_dim, type(self).__name__).flatten(1))


class PairwiseClassifier(nn.Module):
    """Clip order prediction's head (Xu et al. 2019): N items' features -> which of the N! orders.

    Every pair i < j of item features is concatenated and passed through a shared Linear-ReLU (2D -> ``hidden``);
    the N(N−1)/2 pair features are concatenated and a Linear gives the N! scores. B×N×D -> B×N!.
    """

    def __init__(self, feat_dim: int, num_items: int = 3, hidden: int = 512) -> None:
        super().__init__()
        if not 2 <= num_items <= 6:
            raise ValueError(f"PairwiseClassifier: num_items must be in 2..6, got {num_items}")
        self.feat_dim, self.num_items = int(feat_dim), int(num_items)
        self.pairs = list(itertools.combinations(range(self.num_items), 2))
        self.pair_mlp = nn.Sequential(nn.Linear(2 * feat_dim, hidden), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(hidden * len(self.pairs), math.factorial(self.num_items))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×N×D -> B×N! scores."""
        x = _check_items(x, self.num_items, self.feat_dim, type(self).__name__)
        i, j = zip(*self.pairs)
        pair = torch.cat([x[:, list(i)], x[:, list(j)]], dim=2)  # B×P×2D
        return self.classifier(self.pair_mlp(pair).flatten(1))


__all__ = ["ProjectionHead", "PredictionHead", "PrototypeHead", "ClassificationHead", "ItemsClassifier",
           "PairwiseClassifier", "mlp_head"]
