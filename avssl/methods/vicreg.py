"""VICReg (Bardes et al., 2022): variance, invariance and covariance terms on two views' embeddings.

Recipe: encoder → ``ProjectionHead(out_dim, 8192, 8192, num_layers=3)`` → z; loss
``25·MSE(z1, z2) + 25·var + 1·cov`` (see :class:`avssl.losses.redundancy.VICRegLoss`; variance and
covariance over the global batch). Shapes: views B×… → z B×proj_dim.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch

from avssl.methods import METHODS
from avssl.methods.views import MultiViewMethod, ViewsMethodConfig, pair_cosine


@dataclass
class VICRegConfig(ViewsMethodConfig):
    name: str = "vicreg"
    proj_hidden: int = 8192
    proj_dim: int = 8192
    proj_layers: int = 3
    sim_coeff: float = 25.0  # λ, invariance
    std_coeff: float = 25.0  # μ, variance
    cov_coeff: float = 1.0  # ν, covariance
    gather_distributed: bool = True  # variance/covariance over the global batch


@METHODS.register("vicreg")
class VICReg(MultiViewMethod):
    Config = VICRegConfig
    loss = "vicreg"
    loss_keys = ("sim_coeff", "std_coeff", "cov_coeff", "gather_distributed")
    augment = "vicreg"

    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """Loss, ``pos_cos`` (two views' cosine) and ``z_std`` (mean per-dimension std of z)."""
        z1, z2 = self.embed(self.views(batch), head=self.projector)
        loss = self.criterion(z1, z2)
        with torch.no_grad():
            z_std = torch.cat([z1, z2]).detach().float().std(dim=0).mean()
        return {"loss": loss, "pos_cos": pair_cosine(z1, z2), "z_std": z_std}
