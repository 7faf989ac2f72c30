"""SwAV (Caron et al., 2020): predict the Sinkhorn cluster code of one view from the other views.

Recipe: encoder → ``ProjectionHead(out_dim, 2048, 128)`` → z → ``PrototypeHead(128, 3000)`` → scores
(cosines of the normalised z with the unit-norm prototypes, which are re-normalised before every
training forward). Codes: Sinkhorn-Knopp (ε = 0.05, 3 iterations, equipartition over the global batch)
of the two *large* crops' scores only; each large crop's code is predicted, through a softmax at
temperature 0.1, from every other view, i.e. 2·(V − 1) swapped terms (:class:`~avssl.losses.clustering.SwAVLoss`).

Multi-crop: ``batch[modality]`` may be a list of V views, the first two the large crops, the rest small
crops (any size); crops of one size share an encoder pass.

Prototype freezing: for the first ``freeze_prototypes_iters`` optimiser steps the prototypes'
gradients are dropped after every backward (set to None, as in SwAV, so that neither weight decay nor
momentum moves them either).

Queue (``queue_length`` > 0): from epoch ``queue_start_epoch`` the normalised embeddings of the two
large crops of every global batch (gathered across ranks, every rank holding the same queue) are pushed
into a FIFO of ``queue_length`` rows per crop (the ``queue`` buffer, 2×Q×proj_dim, in the checkpoint).
Once the queue is full, its scores against the current prototypes join the batch's scores in Sinkhorn
(more samples for the equipartition when the batch is small) — with R ranks, each rank passes its own
1/R of the queue, so the distributed Sinkhorn sees every queued row exactly once (Q//R rows per rank;
with Q not divisible by R the last Q mod R rows are unused).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from avssl.losses.distributed import gather_no_grad, world_info
from avssl.methods import METHODS
from avssl.methods.views import MultiViewMethod, ViewsMethodConfig, pair_cosine


@dataclass
class SwAVConfig(ViewsMethodConfig):
    name: str = "swav"
    num_prototypes: int = 3000
    temperature: float = 0.1
    epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    freeze_prototypes_iters: int = 313  # optimiser steps with the prototypes held fixed
    queue_length: int = 0  # past large-crop embeddings kept per crop (0: no queue)
    queue_start_epoch: int = 15  # the queue is filled from this epoch on, and used once full


@METHODS.register("swav")
class SwAV(MultiViewMethod):
    Config = SwAVConfig
    syncs_own_buffers = True  # the queue: every rank pushes the gathered global batch
    num_views = None  # 2 large crops + any number of small crops

    queue: torch.Tensor
    queue_count: torch.Tensor

    loss = "swav"
    loss_keys = ("temperature", "epsilon", "sinkhorn_iterations")
    augment = "swav"

    def __init__(self, cfg: Any, **kw: Any) -> None:
        from avssl.models.heads import PrototypeHead

        m = cfg.method
        if m.queue_length < 0:
            raise ValueError(f"method.queue_length must be >= 0, got {m.queue_length}")
        super().__init__(cfg, **kw)
        self.prototypes = PrototypeHead(m.proj_dim, m.num_prototypes)
        self.register_buffer("queue", torch.zeros(2, m.queue_length, m.proj_dim))
        self.register_buffer("queue_count", torch.zeros((), dtype=torch.long))  # rows written, at most Q

    # -- queue -----------------------------------------------------------------------------------
    def queue_active(self) -> bool:
        """Whether this step fills the queue (queue on, and epoch ≥ ``queue_start_epoch``)."""
        m = self.cfg.method
        return m.queue_length > 0 and self.current_epoch >= m.queue_start_epoch

    def queue_scores(self) -> Optional[List[torch.Tensor]]:
        """This rank's share of the full queue scored against the prototypes (2 tensors Q/R×K), or None
        while the queue is off or not yet full. No gradient."""
        q = self.cfg.method.queue_length
        if not self.queue_active() or int(self.queue_count) < q:
            return None
        rank, world = world_info()
        per_rank = q // world
        if per_rank == 0:
            return None
        with torch.no_grad():
            part = self.queue[:, rank * per_rank:(rank + 1) * per_rank]
            return [self.prototypes(part[i]).detach() for i in range(2)]

    @torch.no_grad()
    def enqueue(self, emb_a: torch.Tensor, emb_b: torch.Tensor) -> None:
        """Push the two large crops' embeddings (B×proj_dim each, normalised here) of the global batch
        (gathered across ranks) to the front of the queue; the oldest rows fall off the end."""
        q = self.cfg.method.queue_length
        for i, emb in enumerate((emb_a, emb_b)):
            new = F.normalize(gather_no_grad(emb).to(self.queue.dtype), dim=1)
            n = new.shape[0]
            self.queue[i] = torch.cat([new, self.queue[i]])[:q]
        self.queue_count.fill_(min(q, int(self.queue_count) + n))

    # -- training --------------------------------------------------------------------------------
    def embed_and_score(self, views: List[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Per-view embeddings z (V tensors B×proj_dim) and prototype scores (V tensors B×num_prototypes)."""
        z = self.embed(views, head=self.projector)
        return z, list(self.prototypes(torch.cat(z)).split(z[0].shape[0]))

    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """Loss and ``pos_cos`` (cosine between the two large crops' embeddings)."""
        views = self.views(batch)
        if self.training:
            self.prototypes.normalize_()
        z, scores = self.embed_and_score(views)
        qs = self.queue_scores()
        loss = self.criterion(scores[0], scores[1], *scores[2:],
                              queue_scores_a=None if qs is None else qs[0],
                              queue_scores_b=None if qs is None else qs[1])
        if self.training and self.queue_active():
            self.enqueue(z[0].detach(), z[1].detach())
        return {"loss": loss, "pos_cos": pair_cosine(z[0], z[1]),
                "queue_used": torch.tensor(float(qs is not None), device=loss.device)}

    def loss_kwargs(self) -> Dict[str, Any]:
        return {**super().loss_kwargs(), "gather_distributed": True}  # the codes' equipartition spans all ranks

    def on_after_backward(self) -> None:
        if self.global_step < self.cfg.method.freeze_prototypes_iters:
            for p in self.prototypes.parameters():
                p.grad = None
