"""Audio-visual objectives."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from avssl.losses import LOSSES
from avssl.losses.distributed import gather_with_grad, world_info


class CrossModalNCE(nn.Module):
    """Symmetric cross-modal InfoNCE with in-batch negatives (audio-visual correspondence).

    For video embeddings ``v`` and audio embeddings ``a`` (B×D each, row i of both from the same clip)::

        L = ½·[ CE(v·aᵀ/τ, diag) + CE(a·vᵀ/τ, diag) ]

    i.e. each clip must pick its own sound among the batch's sounds and vice versa. This is the
    memory-bank-free form of cross-modal instance discrimination (Cross-AVID); with
    ``gather_distributed=True`` negatives come from the global batch across ranks, and the loss equals
    the single-process loss over the same global batch. Computed in fp32 (safe under autocast).

    Args:
        temperature: τ.
        gather_distributed: use every rank's embeddings as negatives.
    """

    def __init__(self, temperature: float = 0.07, gather_distributed: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """video, audio: B×D (normalised inside) -> scalar."""
        if video.shape != audio.shape or video.dim() != 2:
            raise ValueError(f"expected two B×D tensors of one shape, got {tuple(video.shape)} and {tuple(audio.shape)}")
        v = F.normalize(video.float(), dim=1)
        a = F.normalize(audio.float(), dim=1)
        rank, world = world_info() if self.gather_distributed else (0, 1)
        v_all = gather_with_grad(v) if world > 1 else v
        a_all = gather_with_grad(a) if world > 1 else a
        target = torch.arange(v.shape[0], device=v.device) + rank * v.shape[0]
        loss_v = F.cross_entropy(v @ a_all.t() / self.temperature, target)
        loss_a = F.cross_entropy(a @ v_all.t() / self.temperature, target)
        return 0.5 * (loss_v + loss_a)


@LOSSES.register("xmodal_nce")
def _xmodal_nce(**kw) -> nn.Module:
    return CrossModalNCE(**kw)
