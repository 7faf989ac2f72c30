"""Encoders, non-local blocks and heads behind one builder, :func:`build_encoder`."""
from __future__ import annotations

from typing import Any, List

import torch.nn as nn

from avssl.registry import Registry

ENCODERS: Registry[nn.Module] = Registry("encoder")


def build_encoder(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered encoder by name; unknown names raise ``KeyError`` listing the known ones."""
    return ENCODERS.build(name, **kwargs)


def available_encoders() -> List[str]:
    return ENCODERS.names()


# Importing the modules registers their encoders.
from avssl.models import audio, image, resnet3d, slowfast  # noqa: E402,F401
from avssl.models.nonlocal_block import NonLocalBlock  # noqa: E402

__all__ = ["ENCODERS", "build_encoder", "available_encoders", "NonLocalBlock"]
