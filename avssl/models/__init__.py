"""Encoders, non-local blocks and heads behind one builder, :func:`build_encoder`; published weights in and
out with :func:`load_weights` / :func:`export_weights` (:mod:`avssl.models.weights`)."""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Union

import torch.nn as nn

from avssl.registry import Registry

ENCODERS: Registry[nn.Module] = Registry("encoder")


def build_encoder(name: str, weights: Optional[Union[str, Mapping[str, Any]]] = None, **kwargs: Any) -> nn.Module:
    """Build a registered encoder by name; unknown names raise ``KeyError`` listing the known ones.

    ``weights``: a weights file (format detected), ``"FORMAT:PATH"`` (e.g. ``"torchvision:r3d_18.pth"``) or a
    state dict, loaded strictly with :func:`load_weights`.
    """
    encoder = ENCODERS.build(name, **kwargs)
    encoder.avssl_name = name  # names the encoder in weight errors and exports
    if weights is not None:
        load_weights(encoder, weights)
    return encoder


def available_encoders() -> List[str]:
    return ENCODERS.names()


# Importing the modules registers their encoders.
from avssl.models import audio, image, resnet3d, slowfast  # noqa: E402,F401
from avssl.models.nonlocal_block import NonLocalBlock  # noqa: E402
from avssl.models.weights import FORMATS, WeightsError, export_weights, load_weights  # noqa: E402

__all__ = ["ENCODERS", "build_encoder", "available_encoders", "NonLocalBlock", "load_weights", "export_weights",
           "FORMATS", "WeightsError"]
