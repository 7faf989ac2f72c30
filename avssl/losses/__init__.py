"""One registry for every objective: ``build_loss(name, **kw)`` returns an ``nn.Module`` giving a scalar."""
from __future__ import annotations

from typing import Any, List

import torch.nn as nn

from avssl.registry import Registry

LOSSES: Registry[nn.Module] = Registry("loss")


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered loss by name; unknown names raise ``KeyError`` listing the known ones."""
    return LOSSES.build(name, **kwargs)


def available_losses() -> List[str]:
    return LOSSES.names()


from avssl.losses import (  # noqa: E402,F401  (registration)
    audiovisual, clustering, contrastive, distillation, pretext, redundancy)

__all__ = ["LOSSES", "build_loss", "available_losses"]
