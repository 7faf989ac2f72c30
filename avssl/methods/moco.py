"""MoCo v2 (Chen et al., 2020): a query network against a momentum key network and a queue of keys.

Recipe: query = ``ProjectionHead(out_dim, 2048, 128, batch_norm=False)`` (MoCo v2's Linear-ReLU-Linear
head) on the encoder; key encoder and key projector = EMA copies of them (no gradient), updated after
every optimiser step with a constant momentum m (default 0.99; the paper's 200-epoch ImageNet run used
0.999). Loss: InfoNCE of q (view 1) against its key k (view 2) and the queue of earlier keys
(``queue_size`` negatives, τ = 0.2); the keys of the global batch then enter the queue. With
``symmetric`` the loss is ½[L(q1, k2) + L(q2, k1)], both computed against the same queue, and both
key batches are enqueued (the queue then advances by 2× the global batch per step).

Shuffle-BN (MoCo's guard against BatchNorm leaking which key matches a query) is not implemented: under
DDP the engine's SyncBatchNorm computes statistics over the global batch, which removes the per-device
shortcut it guarded against; on one device the batch statistics are shared by all samples anyway.

Shapes: views B×… → q, k B×proj_dim; queue K×proj_dim (``criterion.queue``, in the checkpoint).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch

from avssl.methods import METHODS
from avssl.methods.views import MomentumMethod, ViewsMethodConfig, pair_cosine


@dataclass
class MoCoConfig(ViewsMethodConfig):
    name: str = "moco"
    proj_batch_norm: bool = False  # MoCo v2's head has no BatchNorm
    queue_size: int = 65536
    temperature: float = 0.2
    momentum: float = 0.99  # key network EMA momentum m (constant)
    symmetric: bool = False


@METHODS.register("moco")
class MoCo(MomentumMethod):
    Config = MoCoConfig
    syncs_own_buffers = True  # the queue: the global batch's keys enqueued on every rank
    loss = "moco"
    loss_keys = ("queue_size", "temperature")
    augment = "moco"

    def __init__(self, cfg: Any, **kw: Any) -> None:
        m = cfg.method
        if not 0.0 <= m.momentum <= 1.0:
            raise ValueError(f"method.momentum must be in [0, 1], got {m.momentum}")
        super().__init__(cfg, **kw)
        self.momentum_base = self.momentum_final = m.momentum  # constant
        self.key_encoder = self.make_target(self.encoder)
        self.key_projector = self.make_target(self.projector)

    def loss_kwargs(self) -> Dict[str, Any]:
        # The queue holds projections, and its random start comes from the run's seed.
        return {**super().loss_kwargs(), "dim": self.cfg.method.proj_dim, "seed": int(self.cfg.seed)}

    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """Loss and ``pos_cos`` (mean cosine between each query and its key)."""
        views = self.views(batch)
        q1, q2 = self.embed(views, head=self.projector)
        with torch.no_grad():
            k1, k2 = self.embed(views, encoder=self.key_encoder, head=self.key_projector)
        if not self.cfg.method.symmetric:
            return {"loss": self.criterion(q1, k2), "pos_cos": pair_cosine(q1, k2)}
        # Both terms must see the queue as it was before this batch: enqueue by hand afterwards.
        was_training = self.criterion.training
        self.criterion.train(False)
        try:
            loss = 0.5 * (self.criterion(q1, k2) + self.criterion(q2, k1))
        finally:
            self.criterion.train(was_training)
        if was_training:
            self.criterion.enqueue(torch.cat([k2, k1]))
        return {"loss": loss, "pos_cos": 0.5 * (pair_cosine(q1, k2) + pair_cosine(q2, k1))}
