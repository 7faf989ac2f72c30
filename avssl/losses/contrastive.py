"""Contrastive objectives: SimCLR's NT-Xent and MoCo's queue-based InfoNCE."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from avssl.losses import LOSSES
from avssl.losses.distributed import (
    check_pair, full_precision, gather_no_grad, gather_with_global_grad, no_autocast, world_info)


def _check_temperature(temperature: float) -> None:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


# ------------------------------------------------------------------------------------------ NT-Xent
class NTXentLoss(nn.Module):
    """SimCLR's normalised-temperature cross entropy (NT-Xent) over 2N views.

    For views ``z_a``, ``z_b`` (N×D each, row i of both from sample i) the 2N rows are L2-normalised and
    every row is an anchor whose positive is the other view of its sample and whose negatives are the
    remaining 2N-2 rows::

        ℓ(i) = -log( exp(s(i, p(i))/τ) / Σ_{j≠i} exp(s(i, j)/τ) ),   L = mean of ℓ over the 2N anchors

    with s the cosine similarity (self-similarity is masked out). A collapsed batch (all rows equal)
    gives log(2N-1).

    With ``gather_distributed=True`` every rank's anchors are its local 2B rows, contrasted with the
    2N rows of the global batch (N = world·B). The mean over ranks of the per-rank losses equals the
    single-process loss on the whole batch, and (through :func:`gather_with_global_grad`) so do the
    DDP-averaged gradients. Computed in fp32 with autocast off.

    Args:
        temperature: τ (> 0).
        gather_distributed: use every rank's embeddings as negatives.
    """

    def __init__(self, temperature: float = 0.1, gather_distributed: bool = False) -> None:
        super().__init__()
        _check_temperature(temperature)
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        """z_a, z_b: B×D (normalised inside) -> scalar."""
        check_pair(z_a, z_b)
        if z_a.shape[0] < 1:
            raise ValueError("z_a is empty: NT-Xent needs at least one sample")
        with no_autocast(z_a):
            a = F.normalize(full_precision(z_a), dim=1)
            b = F.normalize(full_precision(z_b), dim=1)
            rank, world = world_info() if self.gather_distributed else (0, 1)
            a_all = gather_with_global_grad(a) if world > 1 else a
            b_all = gather_with_global_grad(b) if world > 1 else b
            n_local, n_global = a.shape[0], a_all.shape[0]
            anchors = torch.cat([a, b], dim=0)                      # 2B×D
            keys = torch.cat([a_all, b_all], dim=0)                 # 2N×D
            logits = anchors @ keys.t() / self.temperature          # 2B×2N
            idx = torch.arange(n_local, device=a.device) + rank * n_local
            self_idx = torch.cat([idx, idx + n_global])
            pos_idx = torch.cat([idx + n_global, idx])
            rows = torch.arange(2 * n_local, device=a.device)
            is_self = torch.zeros_like(logits, dtype=torch.bool)
            is_self[rows, self_idx] = True
            logits = logits.masked_fill(is_self, float("-inf"))
            return F.cross_entropy(logits, pos_idx)


@LOSSES.register("nt_xent")
@LOSSES.register("info_nce")
def _nt_xent(**kw) -> nn.Module:
    return NTXentLoss(**kw)


# --------------------------------------------------------------------------------------------- MoCo
class MoCoLoss(nn.Module):
    """MoCo v2 InfoNCE with a FIFO queue of negative keys.

    For queries ``q`` and keys ``k`` (B×D, ``k`` from the momentum encoder; detached inside, both
    L2-normalised inside) and the queue Q (K×D, rows unit-norm)::

        logits_i = [q_i·k_i, q_i·Q_1, …, q_i·Q_K] / τ,    L = mean_i CE(logits_i, 0)

    i.e. the loss uses the queue *before* this batch is added. Afterwards (in training mode only, so
    validation leaves the queue alone) the keys of the global batch — gathered across ranks in rank
    order, without gradient — are written at ``queue_ptr`` and the pointer advances. The queue is a
    ring buffer: writes wrap around the end correctly, so ``queue_size`` need not be a multiple of the
    global batch; when one step brings more than ``queue_size`` keys, only the last ``queue_size``
    survive (as if written one by one). Every rank holds the same queue (same seeded init, same
    writes). ``queue`` and ``queue_ptr`` are buffers, so they are saved in checkpoints.

    Args:
        queue_size: K, the number of negatives.
        dim: D, the embedding size.
        temperature: τ (> 0).
        seed: seeds the random unit-norm initial queue (a private generator, so no global RNG use).
    """

    queue: torch.Tensor
    queue_ptr: torch.Tensor

    def __init__(self, queue_size: int = 65536, dim: int = 128, temperature: float = 0.2,
                 seed: int = 0) -> None:
        super().__init__()
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        _check_temperature(temperature)
        self.queue_size, self.dim, self.temperature = queue_size, dim, temperature
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim, generator=gen), dim=1))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """q, k: B×D (D = ``dim``) -> scalar; enqueues ``k`` afterwards when training."""
        check_pair(q, k, ("q", "k"))
        if q.shape[1] != self.dim:
            raise ValueError(f"q has {q.shape[1]} features but the queue has dim={self.dim}")
        with no_autocast(q):
            qn = F.normalize(full_precision(q), dim=1)
            kn = F.normalize(full_precision(k.detach()), dim=1)
            queue = self.queue.detach().clone().to(qn.dtype)  # clone: the enqueue below writes in place
            l_pos = (qn * kn).sum(dim=1, keepdim=True)
            l_neg = qn @ queue.t()
            logits = torch.cat([l_pos, l_neg], dim=1) / self.temperature
            loss = F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
        if self.training:
            self.enqueue(kn)
        return loss

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write the global batch of ``keys`` (B×D per rank, gathered here) into the ring buffer."""
        keys = gather_no_grad(keys).to(device=self.queue.device, dtype=self.queue.dtype)
        n = keys.shape[0]
        ptr = int(self.queue_ptr)
        idx = (ptr + torch.arange(n, device=self.queue.device)) % self.queue_size
        if n > self.queue_size:  # later writes overwrite earlier ones: keep the last K keys
            idx, keys = idx[-self.queue_size:], keys[-self.queue_size:]
        self.queue[idx] = F.normalize(keys, dim=1)
        self.queue_ptr[0] = (ptr + n) % self.queue_size


@LOSSES.register("moco")
def _moco(**kw) -> nn.Module:
    return MoCoLoss(**kw)
