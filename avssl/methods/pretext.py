"""A pretext task trained alone: one encoder, ``model.<method.modality>``, trained by the task ``method.name``.

Every task registered in :mod:`avssl.pretext` is a method of the same name (``build_method("rotation",
cfg)``, ``method.name: rotation`` in a config), without a registration of its own: the methods registry
resolves a task's name to :class:`PretextMethod`. The task's keys go under ``method.task``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Tuple

import torch

from avssl.config import Check
from avssl.data.batch import first_view
from avssl.methods.base import SingleEncoderConfig, SingleEncoderMethod


@dataclass
class PretextMethodConfig(SingleEncoderConfig):
    """Keys of a pretext task trained alone (``method.name`` is the task's name)."""

    name: str = "rotation"
    modality: str = "video"  # the batch entry and the encoder (model.<modality>): video | image
    task: Dict[str, Any] = field(default_factory=dict)  # the task's own keys, e.g. {positive_ratio: 0.25}

    checks: ClassVar[Dict[str, Check]] = {"modality": Check(choices=("video", "image"))}


class PretextMethod(SingleEncoderMethod):
    """One encoder (``model.<method.modality>``) trained by the pretext task ``method.name``."""

    Config = PretextMethodConfig
    accepts: ClassVar[Tuple[str, ...]] = ("video", "image")

    def __init__(self, cfg: Any, **kw: Any) -> None:
        from avssl.pretext import build_pretext_task

        super().__init__(cfg, **kw)
        m = cfg.method
        self.task = build_pretext_task(str(m.name), int(self.encoder.out_dim), **dict(m.task or {}))

    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """batch[modality] B×C×T×H×W (or B×C×H×W; a view axis is reduced to its first view) -> the task's dict."""
        return self.task(self.encoder, first_view(batch[self.modality], self.modality))


def __getattr__(name: str) -> Any:
    # The task registry and builders lived here before avssl.pretext; kept for one release.
    if name in ("PRETEXT_TASKS", "available_pretext_tasks", "build_pretext_task", "build_extra_objectives",
                "ExtraObjective", "PretextTask", "ClassificationTask", "encode_items", "encoder_out_dim"):
        import warnings

        import avssl.pretext

        warnings.warn(f"avssl.methods.pretext.{name} moved to avssl.pretext.{name}", DeprecationWarning, stacklevel=2)
        return getattr(avssl.pretext, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PretextMethodConfig", "PretextMethod"]
