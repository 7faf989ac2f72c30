"""Methods: encoders + heads + losses + their training step, as LightningModules built by name.

Every registered pretext task (:mod:`avssl.pretext`) is also a method of the same name: a
:class:`~avssl.methods.pretext.PretextMethod` training one encoder with that task.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Type

from avssl.registry import Registry


def _pretext_methods() -> Dict[str, Callable[..., Any]]:
    from avssl.methods.pretext import PretextMethod
    from avssl.pretext import available_pretext_tasks

    return {name: PretextMethod for name in available_pretext_tasks()}


METHODS: Registry[Any] = Registry("method", derived=_pretext_methods)


def method_class(name: str) -> Type[Any]:
    """The class of the method ``name`` (a registered method, or a pretext task's :class:`PretextMethod`)."""
    return METHODS.get(name)  # type: ignore[return-value]


def build_method(name: str, cfg: Any) -> Any:
    """Build the method ``name`` from a validated config (see :mod:`avssl.config`), with the extra objectives
    its ``method.extra_objectives`` names (:func:`avssl.pretext.build_extra_objectives`) handed in."""
    cls = method_class(name)
    extra = None
    if getattr(cfg.method, "extra_objectives", None):
        from avssl.pretext import build_extra_objectives

        extra = build_extra_objectives(cfg)
    return cls(cfg, extra_objectives=extra)


def available_methods() -> List[str]:
    return METHODS.names()


def method_config_class(name: str) -> Type[Any]:
    """The dataclass of the keys ``method:`` takes for this method (its ``Config``)."""
    return method_class(name).Config


from avssl.methods import (  # noqa: E402,F401  (registration)
    audio_clusters, avid_cma, barlow_twins, byol, moco, simclr, simsiam, supervised, swav, vicreg, xmodal_nce)

__all__ = ["METHODS", "build_method", "available_methods", "method_class", "method_config_class"]
