"""Redundancy-reduction objectives: Barlow Twins and VICReg."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from avssl.losses import LOSSES
from avssl.losses.distributed import check_pair, full_precision, gather_with_global_grad, no_autocast
from avssl.losses.distributed import world_info


def _off_diagonal_sq_sum(m: torch.Tensor) -> torch.Tensor:
    """Σ_{i≠j} m_ij² of a square matrix."""
    return m.pow(2).sum() - torch.diagonal(m).pow(2).sum()


class BarlowTwinsLoss(nn.Module):
    """Barlow Twins: drive the cross-correlation of two views' embeddings to the identity.

    Each of ``z_a``, ``z_b`` (B×D) is standardised over the batch, ``ẑ = (z - mean) / sqrt(var + eps)``
    with the biased variance (as a BatchNorm without affine parameters in training mode), then::

        C = ẑ_aᵀ ẑ_b / B   (D×D),      L = Σ_i (1 - C_ii)² + λ Σ_{i≠j} C_ij²

    C_ii is then the Pearson correlation of feature i across the two views (up to ``eps``).
    With ``gather_distributed=True`` statistics and C are taken over the global batch (every rank
    computes the same global loss; gradients reach every rank's rows through
    :func:`gather_with_global_grad`). Computed in fp32 with autocast off.

    Args:
        lambd: λ, the weight of the redundancy-reduction (off-diagonal) term.
        eps: added to the variance before the square root.
        gather_distributed: compute the loss over all ranks' embeddings.
    """

    def __init__(self, lambd: float = 5.1e-3, eps: float = 1e-5, gather_distributed: bool = False) -> None:
        super().__init__()
        if lambd < 0:
            raise ValueError(f"lambd must be >= 0, got {lambd}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.lambd, self.eps, self.gather_distributed = lambd, eps, gather_distributed

    def _standardise(self, z: torch.Tensor) -> torch.Tensor:
        return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + self.eps)

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        """z_a, z_b: B×D (B ≥ 2) -> scalar."""
        check_pair(z_a, z_b)
        with no_autocast(z_a):
            a, b = full_precision(z_a), full_precision(z_b)
            if self.gather_distributed and world_info()[1] > 1:
                a, b = gather_with_global_grad(a), gather_with_global_grad(b)
            if a.shape[0] < 2:
                raise ValueError(f"z_a needs a batch of at least 2 to standardise, got {tuple(z_a.shape)}")
            c = self._standardise(a).t() @ self._standardise(b) / a.shape[0]
            on_diag = (1.0 - torch.diagonal(c)).pow(2).sum()
            return on_diag + self.lambd * _off_diagonal_sq_sum(c)


class VICRegLoss(nn.Module):
    """VICReg: variance-invariance-covariance regularisation (Bardes et al., 2022).

    For ``z_a``, ``z_b`` (B×D)::

        inv  = mean((z_a - z_b)²)                                    (MSE over all B·D entries)
        var  = ½ Σ_{z ∈ {z_a, z_b}} mean_d relu(1 - sqrt(Var_b(z_d) + eps))   (unbiased variance)
        cov  = Σ_{z ∈ {z_a, z_b}} Σ_{i≠j} Cov(z)_ij² / D              (Cov with 1/(B-1))
        L    = sim_coeff·inv + std_coeff·var + cov_coeff·cov

    With ``gather_distributed=True`` the variance and covariance terms use the global batch gathered
    from every rank (the invariance term stays local: its mean over ranks is already the global MSE),
    so the mean over ranks of the per-rank loss, and the DDP-averaged gradient, equal the
    single-process ones. Computed in fp32 with autocast off.

    Args:
        sim_coeff, std_coeff, cov_coeff: the three weights (λ, μ, ν in the paper).
        eps: added to the variance before the square root.
        gather_distributed: variance/covariance over all ranks' embeddings.
    """

    def __init__(self, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0,
                 eps: float = 1e-4, gather_distributed: bool = False) -> None:
        super().__init__()
        for name, value in (("sim_coeff", sim_coeff), ("std_coeff", std_coeff), ("cov_coeff", cov_coeff),
                            ("eps", eps)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.sim_coeff, self.std_coeff, self.cov_coeff = sim_coeff, std_coeff, cov_coeff
        self.eps, self.gather_distributed = eps, gather_distributed

    def _variance(self, z: torch.Tensor) -> torch.Tensor:
        return F.relu(1.0 - torch.sqrt(z.var(dim=0, unbiased=True) + self.eps)).mean()

    @staticmethod
    def _covariance(z: torch.Tensor) -> torch.Tensor:
        zc = z - z.mean(dim=0)
        cov = zc.t() @ zc / (z.shape[0] - 1)
        return _off_diagonal_sq_sum(cov) / z.shape[1]

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        """z_a, z_b: B×D -> scalar (the global batch must hold at least 2 rows)."""
        check_pair(z_a, z_b)
        with no_autocast(z_a):
            a, b = full_precision(z_a), full_precision(z_b)
            inv = F.mse_loss(a, b)
            if self.gather_distributed and world_info()[1] > 1:
                a, b = gather_with_global_grad(a), gather_with_global_grad(b)
            if a.shape[0] < 2:
                raise ValueError(f"z_a needs a batch of at least 2 for variances, got {tuple(z_a.shape)}")
            var = 0.5 * (self._variance(a) + self._variance(b))
            cov = self._covariance(a) + self._covariance(b)
            return self.sim_coeff * inv + self.std_coeff * var + self.cov_coeff * cov


@LOSSES.register("barlow_twins")
def _barlow_twins(**kw) -> nn.Module:
    return BarlowTwinsLoss(**kw)


@LOSSES.register("vicreg")
def _vicreg(**kw) -> nn.Module:
    return VICRegLoss(**kw)
