"""The interface every encoder keeps."""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn


class Encoder(nn.Module):
    """Base class of every registered encoder.

    Subclasses set ``out_dim`` (the pooled feature size) and implement :meth:`forward_features`, which
    returns an ordered dict ``stage name -> feature map`` (e.g. ``stem, res2, res3, res4, res5``; video maps
    are B×C×T×H×W, audio/image maps B×C×H×W). ``forward`` pools the last map to B×out_dim.
    """

    out_dim: int

    def forward_features(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement forward_features")

    def pool(self, feat: torch.Tensor) -> torch.Tensor:
        """Global average pool over every non-channel axis: B×C×... -> B×C."""
        return feat.flatten(2).mean(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.forward_features(x)
        return self.pool(next(reversed(feats.values())))


def init_conv_bn_(model: nn.Module) -> None:
    """The ResNet init every encoder shares: Kaiming-normal (fan_out) convolutions with zero biases,
    BatchNorm γ=1, β=0."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
