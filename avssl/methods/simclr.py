"""SimCLR (Chen et al., 2020): two views of each sample, an MLP projector and the NT-Xent loss.

Recipe: encoder → ``ProjectionHead(out_dim, 2048, 128)`` (Linear-BN-ReLU-Linear) → NT-Xent with
τ = 0.1 over the 2N embeddings of the global batch (negatives gathered from every rank). Shapes:
views B×… each → features B×out_dim → embeddings B×proj_dim.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch
import torch.nn.functional as F

from avssl.methods import METHODS
from avssl.methods.views import MultiViewMethod, ViewsMethodConfig, pair_cosine


@dataclass
class SimCLRConfig(ViewsMethodConfig):
    name: str = "simclr"
    temperature: float = 0.1
    gather_distributed: bool = True  # negatives from every rank's batch


@METHODS.register("simclr")
class SimCLR(MultiViewMethod):
    Config = SimCLRConfig
    loss = "nt_xent"
    loss_keys = ("temperature", "gather_distributed")
    augment = "simclr"

    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """Loss, ``pos_cos`` (mean cosine of the two views' embeddings) and ``acc`` (fraction of anchors
        whose nearest other embedding in the local batch is their positive)."""
        z1, z2 = self.embed(self.views(batch), head=self.projector)
        loss = self.criterion(z1, z2)
        with torch.no_grad():
            z = F.normalize(torch.cat([z1, z2]).detach().float(), dim=1)
            sim = (z @ z.t()).fill_diagonal_(float("-inf"))
            n = z1.shape[0]
            target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
            acc = (sim.argmax(dim=1) == target).float().mean()
        return {"loss": loss, "pos_cos": pair_cosine(z1, z2), "acc": acc}
