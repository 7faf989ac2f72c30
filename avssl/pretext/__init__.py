"""Pretext tasks: objectives computed from one encoder and the raw inputs of a batch.

A task (:class:`PretextTask`) is its sampler, its head and its objective, registered once, by name:

=====================  =============================  ===============================================
module                 tasks                          inputs
=====================  =============================  ===============================================
:mod:`.temporal`       ``temporal_order``, ``vcop``   clips B×C×T×H×W
:mod:`.spatial`        ``rotation``, ``jigsaw``,      images B×C×H×W or clips (every frame alike)
                       ``relative_position``,
                       ``pirl``
:mod:`.tracking`       ``tracking_triplet``           clips
=====================  =============================  ===============================================

The same task runs

* alone, as a method of its own (``build_method("rotation", cfg)``, ``method.name: rotation`` in a config):
  :class:`avssl.methods.pretext.PretextMethod` trains ``model.<method.modality>`` with the task, whose keys
  go under ``method.task``; every registered task is a method of the same name;
* as a weighted extra objective of any method, from the config::

      method:
        name: avid_cma
        extra_objectives:
          temporal_order: {weight: 0.5, modality: video, positive_ratio: 0.25}

  :func:`build_extra_objectives` builds them from the config and :func:`avssl.methods.build_method` hands
  them to the method, whose training step adds ``weight × loss`` of each task, computed with the method's
  own encoder for that modality, and logs ``<task>/<key>``.
"""
from __future__ import annotations

from typing import Any, Dict, List

import torch
import torch.nn as nn

from avssl.data.batch import first_view, modalities
from avssl.pretext.base import PRETEXT_TASKS, ClassificationTask, PretextTask, encode_items, is_image_encoder
from avssl.pretext import spatial, temporal, tracking  # noqa: F401  (registration)


def available_pretext_tasks() -> List[str]:
    return PRETEXT_TASKS.names()


def build_pretext_task(name: str, feat_dim: int, **kwargs: Any) -> PretextTask:
    """Build the registered task ``name`` for an encoder of ``feat_dim`` pooled features.

    Unknown names raise KeyError listing the known tasks; unknown keyword arguments raise TypeError
    naming the task.
    """
    builder = PRETEXT_TASKS.get(name)
    try:
        return builder(feat_dim=feat_dim, **kwargs)
    except TypeError as e:
        raise TypeError(f"pretext task {name!r}: {e}") from e


def encoder_out_dim(enc_cfg: Any) -> int:
    """The pooled feature size of the encoder ``enc_cfg`` would build (built on the meta device: no memory)."""
    from avssl.models import build_encoder

    with torch.device("meta"):
        enc = build_encoder(enc_cfg.name, **dict(enc_cfg.kwargs or {}))
    return int(enc.out_dim)


class ExtraObjective(nn.Module):
    """One weighted extra objective: a task, the batch entry it reads and its weight."""

    def __init__(self, name: str, task: PretextTask, modality: str, weight: float) -> None:
        super().__init__()
        self.name, self.task, self.modality, self.weight = name, task, modality, float(weight)

    def forward(self, encoder: nn.Module, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """The task's dict on the first view of ``batch[modality]``, computed with ``encoder``."""
        if self.modality not in batch:
            raise KeyError(f"method.extra_objectives.{self.name} reads batch[{self.modality!r}], which this "
                           f"method's batches do not have (keys: {sorted(batch)})")
        x = first_view(batch[self.modality], self.modality, who=f"method.extra_objectives.{self.name}: "
                                                                  f"batch[{self.modality!r}]")
        return self.task(encoder, x)


def build_extra_objectives(cfg: Any) -> nn.ModuleDict:
    """``method.extra_objectives`` -> a ModuleDict of :class:`ExtraObjective` (empty when none).

    Each entry is ``<task name>: {weight: w, modality: video, <task keys>...}``; ``weight`` defaults to
    1 and ``modality`` to ``video``. The encoder ``model.<modality>`` must be configured.
    """
    spec = getattr(cfg.method, "extra_objectives", None) or {}
    out = nn.ModuleDict()
    for name, entry in dict(spec).items():
        entry = dict(entry or {})
        weight = float(entry.pop("weight", 1.0))
        modality = str(entry.pop("modality", "video"))
        if modality not in modalities():
            raise ValueError(f"method.extra_objectives.{name}.modality must be one of {', '.join(modalities())}; "
                             f"got {modality!r}")
        enc_cfg = getattr(cfg.model, modality, None)
        if enc_cfg is None:
            raise ValueError(f"method.extra_objectives.{name} reads {modality} but model.{modality} is not set")
        task = build_pretext_task(str(name), encoder_out_dim(enc_cfg), **entry)
        out[str(name)] = ExtraObjective(str(name), task, modality, weight)
    return out


__all__ = ["PRETEXT_TASKS", "PretextTask", "ClassificationTask", "ExtraObjective", "available_pretext_tasks",
           "build_pretext_task", "build_extra_objectives", "encode_items", "encoder_out_dim", "is_image_encoder"]
