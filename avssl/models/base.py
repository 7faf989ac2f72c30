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
