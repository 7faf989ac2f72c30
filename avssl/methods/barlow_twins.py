"""Barlow Twins (Zbontar et al., 2021): make the cross-correlation of two views' embeddings the identity.

Recipe: encoder → ``ProjectionHead(out_dim, 8192, 8192, num_layers=3)`` → z; loss
``Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²`` with C the cross-correlation of the batch-standardised z1, z2
over the global batch (gathered across ranks), λ = 5.1e-3. Shapes: views B×… → z B×proj_dim,
C proj_dim×proj_dim.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch

from avssl.methods import METHODS
from avssl.methods.views import MultiViewMethod, ViewsMethodConfig, pair_cosine


@dataclass
class BarlowTwinsConfig(ViewsMethodConfig):
    name: str = "barlow_twins"
    proj_hidden: int = 8192
    proj_dim: int = 8192
    proj_layers: int = 3
    lambd: float = 5.1e-3  # weight of the off-diagonal (redundancy) term
    gather_distributed: bool = True  # correlation over the global batch


@METHODS.register("barlow_twins")
class BarlowTwins(MultiViewMethod):
    Config = BarlowTwinsConfig
    loss = "barlow_twins"
    loss_keys = ("lambd", "gather_distributed")
    augment = "barlow_twins"

    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """Loss and ``pos_cos`` (mean cosine between the two views' embeddings)."""
        z1, z2 = self.embed(self.views(batch), head=self.projector)
        return {"loss": self.criterion(z1, z2), "pos_cos": pair_cosine(z1, z2)}
