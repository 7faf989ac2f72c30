"""Distillation (student/teacher) objectives: BYOL and SimSiam.

Both compare a student's prediction ``p`` with a teacher's target ``z`` by cosine similarity; the
target is detached inside, so no gradient reaches the teacher branch (the stop-gradient that keeps
these methods from collapsing).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from avssl.losses import LOSSES
from avssl.losses.distributed import check_pair, full_precision, no_autocast


def _cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of two B×D tensors (B), z detached, in fp32."""
    check_pair(p, z, ("p", "z"))
    pn = F.normalize(full_precision(p), dim=1)
    zn = F.normalize(full_precision(z.detach()), dim=1)
    return (pn * zn).sum(dim=1)


class BYOLLoss(nn.Module):
    """BYOL's normalised regression loss: ``L = mean_i (2 - 2·cos(p_i, z_i))``.

    ``p`` (B×D) is the online network's prediction, ``z`` (B×D) the target network's projection
    (detached inside). Equals mean ‖p̂ - ẑ‖² of the unit-normalised rows: 0 for aligned rows, 4 for
    opposite ones. Symmetrise by calling it twice with the views swapped. Computed in fp32.
    """

    def forward(self, p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """p, z: B×D -> scalar."""
        with no_autocast(p):
            return (2.0 - 2.0 * _cosine(p, z)).mean()


class SimSiamLoss(nn.Module):
    """SimSiam's negative cosine similarity: ``L = mean_i -cos(p_i, stopgrad(z_i))``.

    ``p`` (B×D) is the predictor's output, ``z`` (B×D) the other view's projection (detached
    inside). Ranges over [-1, 1]. Computed in fp32.
    """

    def forward(self, p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """p, z: B×D -> scalar."""
        with no_autocast(p):
            return -_cosine(p, z).mean()


@LOSSES.register("byol")
def _byol(**kw) -> nn.Module:
    return BYOLLoss(**kw)


@LOSSES.register("simsiam")
def _simsiam(**kw) -> nn.Module:
    return SimSiamLoss(**kw)
