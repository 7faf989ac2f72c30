"""Non-local block (Wang et al., "Non-local Neural Networks", CVPR 2018).

The generic non-local operation is

    y_i = 1 / C(x) · Σ_j f(x_i, x_j) g(x_j),        z_i = W_z y_i + x_i

where i runs over every position of the input (N = T·H·W for video) and j over every position of the
(optionally sub-sampled) φ/g maps (M positions). ``g``, ``θ``, ``φ`` are 1×1(×1) convolutions to
``inter_channels`` and ``W_z`` is a 1×1(×1) convolution back to ``channels`` followed by a BatchNorm whose
weight (γ) and bias are zero-initialised, so that a freshly built block is the identity and can be inserted
into a pre-trained network without changing its output.

Instantiations of ``f`` and ``C(x)`` (``mode``):

===================== ======================================= =======================
mode                  f(x_i, x_j)                             C(x)
===================== ======================================= =======================
``gaussian``          exp(x_iᵀ x_j)  (raw input, no θ/φ)      Σ_j f (softmax over j)
``embedded_gaussian`` exp(θ(x_i)ᵀ φ(x_j))                     Σ_j f (softmax over j)
``dot_product``       θ(x_i)ᵀ φ(x_j)                          M
``concatenation``     ReLU(w_fᵀ [θ(x_i), φ(x_j)])             M
===================== ======================================= =======================

Memory: every mode materialises one B×N×M affinity matrix (M = N, or about N/4 with ``sub_sample``
which max-pools φ and g by 1×2×2 in 3D, 2×2 in 2D and 2 in 1D). For a res4 map of 8×14×14 that is
N = 1568 positions, i.e. 2.5 M entries per clip (×4 bytes in fp32, plus the same again for the gradient),
and the cost grows quadratically with T·H·W, which is why the block is used at coarse stages only.
``concatenation`` never builds the B×N×M×2C' pair tensor: since w_f is linear,
w_fᵀ[θ_i, φ_j] = a_i + b_j with a = w_f,θᵀ θ and b = w_f,φᵀ φ, so ReLU(a_i + b_j) is a broadcast sum of a
B×N×1 and a B×1×M tensor.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

#: std of the normal init of θ, φ, g, W_z and w_f.
INIT_STD = 0.01
_MODES = ("gaussian", "embedded_gaussian", "dot_product", "concatenation")

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
# Sub-sampling keeps time intact in 3D (as in the paper's video models) and halves every spatial axis.
_POOL_KERNEL = {1: 2, 2: (2, 2), 3: (1, 2, 2)}


class NonLocalBlock(nn.Module):
    """Non-local block with a residual connection: ``z = W_z(y) + x``.

    Args:
        channels: C, the input (and output) channels.
        mode: ``gaussian``, ``embedded_gaussian`` (default), ``dot_product`` or ``concatenation``.
        inter_channels: C', the width of θ, φ and g; default ``channels // 2`` (at least 1).
        sub_sample: max-pool the φ and g maps (1×2×2 / 2×2 / 2 for dim 3 / 2 / 1) after their convolution,
            which divides M by ~4 in 2D/3D. Pooling uses ``ceil_mode`` so odd-sized (and 1-sized) maps keep
            their border positions.
        dim: 1 (B×C×L), 2 (B×C×H×W) or 3 (B×C×T×H×W).
        bn_layer: follow W_z by a BatchNorm (γ = β = 0 at init); if False, W_z's conv weight and bias are
            zero-initialised instead. Either way a new block is the identity.

    Shapes: input and output B×C×(spatial dims); the output keeps the input's memory format.
    Init: see :meth:`reset_parameters` (θ/φ/g/W_z ~ N(0, 0.01²), W_z's BN γ = β = 0).
    """

    def __init__(
        self,
        channels: int,
        mode: str = "embedded_gaussian",
        inter_channels: Optional[int] = None,
        sub_sample: bool = False,
        dim: int = 3,
        bn_layer: bool = True,
    ) -> None:
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"NonLocalBlock: unknown mode {mode!r}; expected one of {', '.join(_MODES)}")
        if dim not in _CONV:
            raise ValueError(f"NonLocalBlock: dim must be 1, 2 or 3, got {dim!r}")
        if channels < 1:
            raise ValueError(f"NonLocalBlock: channels must be positive, got {channels}")
        self.channels = channels
        self.mode = mode
        self.dim = dim
        self.sub_sample = sub_sample
        self.inter_channels = inter_channels if inter_channels is not None else max(channels // 2, 1)
        conv, ci = _CONV[dim], self.inter_channels

        self.g = conv(channels, ci, kernel_size=1)
        if mode == "gaussian":
            # f works on the raw input: no θ/φ embeddings.
            self.theta: Optional[nn.Module] = None
            self.phi: Optional[nn.Module] = None
        else:
            self.theta = conv(channels, ci, kernel_size=1)
            self.phi = conv(channels, ci, kernel_size=1)
        # w_f of the concatenation mode: a linear map of [θ_i, φ_j] (2C') to a scalar.
        self.w_f: Optional[nn.Linear] = nn.Linear(2 * ci, 1, bias=False) if mode == "concatenation" else None
        self.pool: Optional[nn.Module] = (
            _POOL[dim](kernel_size=_POOL_KERNEL[dim], stride=_POOL_KERNEL[dim], ceil_mode=True) if sub_sample else None
        )
        self.w_z = conv(ci, channels, kernel_size=1)
        self.bn: Optional[nn.Module] = _BN[dim](channels) if bn_layer else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Convolutions (and w_f) ~ N(0, 0.01²) with zero biases, as in the non-local paper's released
        code: θᵀφ starts near 0, so attention starts near uniform instead of saturated (un-scaled
        logits from fan-based inits are large enough to make the softmax one-hot and bf16 brittle).
        Then :meth:`reset_identity`."""
        for conv in (self.g, self.theta, self.phi, self.w_z):
            if conv is not None:
                nn.init.normal_(conv.weight, 0.0, INIT_STD)
                nn.init.zeros_(conv.bias)
        if self.w_f is not None:
            nn.init.normal_(self.w_f.weight, 0.0, INIT_STD)
        if self.bn is not None:
            self.bn.reset_running_stats()
        self.reset_identity()

    def reset_identity(self) -> None:
        """Zero the last affine map so that the block is the identity (called at construction)."""
        if self.bn is not None:
            nn.init.zeros_(self.bn.weight)
            nn.init.zeros_(self.bn.bias)
        else:
            nn.init.zeros_(self.w_z.weight)
            nn.init.zeros_(self.w_z.bias)

    def _sub(self, t: torch.Tensor) -> torch.Tensor:
        return self.pool(t) if self.pool is not None else t

    def affinity(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised affinity f(x_i, x_j) / C(x): B×N×M (rows i over x, columns j over φ/g)."""
        b = x.shape[0]
        if self.theta is None:  # gaussian
            theta = x.reshape(b, self.channels, -1)
            phi = self._sub(x).reshape(b, self.channels, -1)
        else:
            theta = self.theta(x).reshape(b, self.inter_channels, -1)
            phi = self._sub(self.phi(x)).reshape(b, self.inter_channels, -1)
        m = phi.shape[-1]
        if self.mode in ("gaussian", "embedded_gaussian"):
            return torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)
        if self.mode == "dot_product":
            return (theta.transpose(1, 2) @ phi) / m
        # concatenation: ReLU(a_i + b_j) / M, with a = w_θᵀθ (B×N×1) and b = w_φᵀφ (B×1×M).
        w = self.w_f.weight  # 1×2C'
        a = (w[:, : self.inter_channels] @ theta).transpose(1, 2)
        bj = w[:, self.inter_channels :] @ phi
        return torch.relu(a + bj) / m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×(L | H×W | T×H×W) -> z of the same shape."""
        if x.dim() != self.dim + 2 or x.shape[1] != self.channels:
            axes = {1: "L", 2: "H×W", 3: "T×H×W"}[self.dim]
            raise ValueError(
                f"NonLocalBlock(channels={self.channels}, dim={self.dim}) expects a B×{self.channels}×{axes} "
                f"tensor, got shape {tuple(x.shape)}"
            )
        b = x.shape[0]
        attn = self.affinity(x)  # B×N×M
        g = self._sub(self.g(x)).reshape(b, self.inter_channels, -1)  # B×C'×M
        y = (g @ attn.transpose(1, 2).to(g.dtype)).reshape(b, self.inter_channels, *x.shape[2:])  # B×C'×...
        z = self.w_z(y)
        if self.bn is not None:
            z = self.bn(z)
        # x first: an elementwise op takes its output layout from the first operand, so a channels-last
        # input stays channels-last.
        return x + z

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, inter_channels={self.inter_channels}, mode={self.mode!r}, "
            f"sub_sample={self.sub_sample}, dim={self.dim}"
        )
