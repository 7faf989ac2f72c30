"""How fast a step runs: channels-last memory format and ``torch.compile`` for a method's encoders.

``trainer.channels_last`` stores every 5-D weight (Conv3d) as ``torch.channels_last_3d`` and every 4-D one (Conv2d)
as ``torch.channels_last``, and the batches' 5-D and 4-D inputs likewise (:class:`ChannelsLastInputs`): cuDNN's
fastest bf16 convolutions want the channels innermost. ``trainer.compile`` compiles each encoder in place
(``nn.Module.compile``), so parameter names, and with them checkpoints, stay as they are; the banks, heads and
losses run eagerly. Both change the arithmetic's order only: outputs equal the eager fp32 ones within rounding.
"""
from __future__ import annotations

from typing import Any, Dict, List

import torch
import torch.nn as nn
from lightning.pytorch.callbacks import Callback


def channels_last(t: torch.Tensor) -> torch.Tensor:
    """``t`` in channels-last memory format: ``channels_last_3d`` for 5-D, ``channels_last`` for 4-D tensors;
    other tensors as they are."""
    if t.dim() == 5:
        return t.contiguous(memory_format=torch.channels_last_3d)
    if t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    return t


def to_channels_last(module: nn.Module) -> nn.Module:
    """Every 4-D and 5-D parameter and buffer of ``module`` in channels-last format, in place (the parameters
    stay the same objects, so an optimiser built before still holds them); returns ``module``."""
    return module._apply(channels_last)


class ChannelsLastInputs(Callback):
    """Puts the 4-D and 5-D floating-point tensors of every training and validation batch (a dict) in channels-last
    format before the step."""

    @staticmethod
    def convert(batch: Any) -> None:
        if not isinstance(batch, dict):
            return
        for key, value in batch.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                batch[key] = channels_last(value)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.convert(batch)

    def on_validation_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        self.convert(batch)


def encoders(method: nn.Module) -> Dict[str, nn.Module]:
    """The method's encoders by attribute name (``video_encoder``, ``audio_encoder``, ``momentum_encoder``, …)."""
    return {name: child for name, child in method.named_children() if name.endswith("encoder")}


def compile_encoders(method: nn.Module, **kwargs: Any) -> List[str]:
    """``torch.compile`` each of the method's encoders in place (``kwargs`` go to ``torch.compile``); their names."""
    found = encoders(method)
    for module in found.values():
        module.compile(**kwargs)
    return list(found)


def apply_speed_options(method: nn.Module, trainer_cfg: Any) -> List[Callback]:
    """``trainer.channels_last`` and ``trainer.compile`` applied to ``method``; the callbacks they need."""
    callbacks: List[Callback] = []
    if trainer_cfg.channels_last:
        to_channels_last(method)
        callbacks.append(ChannelsLastInputs())
    if trainer_cfg.compile:
        compile_encoders(method, **dict(trainer_cfg.compile_kwargs or {}))
    return callbacks


__all__ = ["ChannelsLastInputs", "apply_speed_options", "channels_last", "compile_encoders", "encoders",
           "to_channels_last"]
