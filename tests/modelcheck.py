"""Helpers shared by the model tests: parameter counts and random BatchNorm statistics."""
from __future__ import annotations

import torch
import torch.nn as nn


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def randomise_bn(m: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
                bn.bias.copy_(torch.rand(bn.bias.shape, generator=g) * 0.2 - 0.1)
                bn.running_mean.copy_(torch.rand(bn.running_mean.shape, generator=g) * 0.2 - 0.1)
                bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)
