"""BYOL (Grill et al., 2020): an online network predicts the projection of a slowly moving target.

Recipe: online = encoder → ``ProjectionHead(out_dim, 4096, 256)`` → ``PredictionHead(256, 4096, 256)``;
target = EMA copies of the online encoder and projector (no gradient). After every optimiser step
``w_t ← τ·w_t + (1 − τ)·w_o`` with τ following ``τ_k = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2`` from
τ_base = 0.996 at k = 0 to 1 at k = K (K = the trainer's ``estimated_stepping_batches``). Loss
(symmetric, as the paper's L + L̃): ``byol(p1, z2') + byol(p2, z1')`` with ``byol = 2 − 2·cos`` and z'
the target projections; range [0, 8]. The target is in the checkpoint, so a resumed run continues
exactly. Shapes: views B×… → p, z' B×proj_dim.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch

from avssl.methods import METHODS
from avssl.methods.views import MomentumMethod, ViewsMethodConfig, pair_cosine


@dataclass
class BYOLConfig(ViewsMethodConfig):
    name: str = "byol"
    proj_hidden: int = 4096
    proj_dim: int = 256
    pred_hidden: int = 4096
    tau_base: float = 0.996  # target EMA momentum at step 0 ...
    tau_final: float = 1.0  # ... rising along a cosine to this at the last step


@METHODS.register("byol")
class BYOL(MomentumMethod):
    Config = BYOLConfig
    loss = "byol"
    has_predictor = True
    augment = "byol"

    def __init__(self, cfg: Any, **kw: Any) -> None:
        m = cfg.method
        for key in ("tau_base", "tau_final"):
            if not 0.0 <= getattr(m, key) <= 1.0:
                raise ValueError(f"method.{key} must be in [0, 1], got {getattr(m, key)}")
        super().__init__(cfg, **kw)
        self.momentum_base, self.momentum_final = m.tau_base, m.tau_final
        self.target_encoder = self.make_target(self.encoder)
        self.target_projector = self.make_target(self.projector)

    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """Loss, ``tau`` (τ of the update after this step) and ``pos_cos`` (prediction/target cosine)."""
        views = self.views(batch)
        p1, p2 = self.embed(views, head=lambda f: self.predictor(self.projector(f)))
        with torch.no_grad():
            t1, t2 = self.embed(views, encoder=self.target_encoder, head=self.target_projector)
        loss = self.criterion(p1, t2) + self.criterion(p2, t1)
        tau = torch.tensor(self.momentum_at(self.global_step, self.total_steps()), device=loss.device)
        return {"loss": loss, "tau": tau, "pos_cos": 0.5 * (pair_cosine(p1, t2) + pair_cosine(p2, t1))}
