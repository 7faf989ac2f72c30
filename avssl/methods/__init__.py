"""Methods: encoders + heads + losses + their training step, as LightningModules built by name."""
from __future__ import annotations

from typing import Any, List, Type

from avssl.registry import Registry

METHODS: Registry[Any] = Registry("method")


def build_method(name: str, cfg: Any) -> Any:
    """Build the method ``name`` from a validated config (see :mod:`avssl.config`)."""
    return METHODS.build(name, cfg)


def available_methods() -> List[str]:
    return METHODS.names()


def method_config_class(name: str) -> Type[Any]:
    """The dataclass of the keys ``method:`` takes for this method (its ``Config``)."""
    return METHODS.get(name).Config


from avssl.methods import (  # noqa: E402,F401  (registration)
    audio_clusters, avid_cma, barlow_twins, byol, image_pretext, moco, simclr, simsiam, supervised, swav,
    temporal_order, tracking, vicreg, xmodal_nce)

__all__ = ["METHODS", "build_method", "available_methods", "method_config_class"]
