"""SimSiam (Chen & He, 2021): a siamese network with a predictor and a stop-gradient, no negatives.

Recipe: encoder → ``ProjectionHead(out_dim, 2048, 2048, num_layers=3, last_bn=True,
last_bn_affine=False)`` → z; ``PredictionHead(2048, 512, 2048)`` → p. Loss
``½[D(p1, z2) + D(p2, z1)]`` with ``D(p, z) = −cos(p, stopgrad(z))``, in [−1, 1]. The logged ``z_std``
(std of the normalised z over the batch, mean over dimensions) is ~1/√proj_dim when healthy and 0
when the representation collapses. Shapes: views B×… → z, p B×proj_dim.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch

from avssl.methods import METHODS
from avssl.methods.views import MultiViewMethod, ViewsMethodConfig, normalized_std


@dataclass
class SimSiamConfig(ViewsMethodConfig):
    name: str = "simsiam"
    proj_hidden: int = 2048
    proj_dim: int = 2048
    proj_layers: int = 3
    proj_last_bn: bool = True
    proj_last_bn_affine: bool = False
    pred_hidden: int = 512


@METHODS.register("simsiam")
class SimSiam(MultiViewMethod):
    Config = SimSiamConfig
    loss = "simsiam"
    has_predictor = True
    augment = "simsiam"

    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """Loss and ``z_std`` (collapse monitor)."""
        z1, z2 = self.embed(self.views(batch), head=self.projector)
        p1, p2 = self.predictor(torch.cat([z1, z2])).split(z1.shape[0])
        loss = 0.5 * (self.criterion(p1, z2) + self.criterion(p2, z1))
        return {"loss": loss, "z_std": normalized_std(torch.cat([z1, z2]))}
