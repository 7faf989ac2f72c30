"""What every pretext task shares: the registry, the task interface, encoding sampled items.

A :class:`PretextTask` takes an encoder and a batch of inputs (clips B×C×T×H×W or images B×C×H×W) and
returns a dict with at least ``"loss"``. It samples what it needs from the inputs itself (frame tuples,
shuffled sub-clips, rotated or tiled copies, tracked patches), owns its head (built from
:mod:`avssl.models.heads`) and computes its objective. A :class:`ClassificationTask` samples K items per
input with a class label, encodes them, and computes the logits, the cross-entropy and the accuracy itself.
"""
from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Any, ClassVar, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from avssl.data.batch import is_batch, layout
from avssl.registry import Registry

PRETEXT_TASKS: Registry[Any] = Registry("pretext task")

#: Where an :class:`~avssl.models.heads.ItemsClassifier`'s weights were in checkpoints written before the heads
#: moved from the loss registry into the tasks.
ITEMS_HEAD_LEGACY = (("loss.head.weight", "head.mlp.layers.0.weight"), ("loss.head.bias", "head.mlp.layers.0.bias"),
                     ("loss.head.", "head.mlp.layers."))

#: How errors call a batch of each modality.
_PLURAL = {"video": "clips", "image": "images", "audio": "spectrograms"}


class PretextTask(nn.Module, metaclass=ABCMeta):
    """Base of every pretext task.

    Args:
        feat_dim: the pooled feature size of the encoder the task will be given (``encoder.out_dim``),
            so heads can be built up front (and are in the optimiser and the checkpoint from the start).

    Subclasses set ``name`` and ``inputs`` (the modalities whose batches they take) and implement
    :meth:`forward`. Randomness comes from ``generator`` when given, else from torch's global RNG (seeded by
    the run and saved in checkpoints). ``legacy_keys`` renames state-dict keys of checkpoints written by
    earlier versions ((old prefix, new prefix), first match wins).
    """

    name: ClassVar[str] = "pretext task"
    inputs: ClassVar[Tuple[str, ...]] = ("video",)
    legacy_keys: ClassVar[Tuple[Tuple[str, str], ...]] = ()

    def __init__(self, feat_dim: int) -> None:
        super().__init__()
        if int(feat_dim) < 1:
            raise ValueError(f"feat_dim must be >= 1, got {feat_dim}")
        self.feat_dim = int(feat_dim)
        if self.legacy_keys:
            self._register_load_state_dict_pre_hook(self._rename_legacy_keys)

    def _rename_legacy_keys(self, state_dict: Dict[str, Any], prefix: str, *args: Any) -> None:
        from avssl.checkpoint import rename_keys

        rename_keys(state_dict, prefix, self.legacy_keys)

    def check_input(self, x: torch.Tensor) -> str:
        """The modality of which ``x`` is a batch (one of ``inputs``); a ValueError naming the layouts otherwise."""
        for modality in self.inputs:
            if is_batch(x, modality):
                return modality
        want = " or ".join(f"{_PLURAL[m]} {layout(m)}" for m in self.inputs)
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{self.name} needs {want}, got shape {shape}")

    @abstractmethod
    def forward(self, encoder: nn.Module, x: torch.Tensor,
                generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        """encoder: inputs -> B×feat_dim; x: B×C×T×H×W or B×C×H×W -> {"loss": scalar, diagnostics...}."""


class ClassificationTask(PretextTask):
    """A task that samples K items per input with a class label and classifies their features.

    Subclasses build ``self.head`` (item features B×K×D -> B×classes) and implement :meth:`sample_items`.
    """

    head: nn.Module

    @abstractmethod
    def sample_items(self, x: torch.Tensor, generator: Optional[torch.Generator] = None
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
        """x -> (items B×K×C×[L×]H×W, labels B)."""

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """Item features B×K×D -> B×classes, in fp32 with autocast off (safe under mixed precision)."""
        with torch.autocast(feats.device.type, enabled=False):
            return self.head(feats.float())

    def classify(self, feats: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Item features B×K×D and labels B -> {"loss": mean cross-entropy, "acc": fraction right}."""
        logits = self.logits(feats)
        labels = labels.to(logits.device).long()
        loss = F.cross_entropy(logits, labels)
        return {"loss": loss, "acc": (logits.detach().argmax(1) == labels).float().mean()}

    def forward(self, encoder: nn.Module, x: torch.Tensor,
                generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        items, label = self.sample_items(x, generator)
        return self.classify(encode_items(encoder, items), label)


def is_image_encoder(encoder: nn.Module) -> bool:
    """Whether ``encoder`` takes images (its first convolution is 2-D) rather than clips or spectrograms in 3-D."""
    for m in encoder.modules():
        if isinstance(m, nn.Conv3d):
            return False
        if isinstance(m, nn.Conv2d):
            return True
    raise ValueError(f"{type(encoder).__name__} has no convolution to tell its input layout from")


def encode_items(encoder: nn.Module, items: torch.Tensor) -> torch.Tensor:
    """Encode a batch of task items with one forward pass -> B×K×D.

    ``items`` is B×K×C×H×W (frames, tiles of images: image samples) or B×K×C×L×H×W (short clips, tiles of
    clips: video samples). A video encoder sees frames as one-frame clips; an image encoder sees frames
    directly and cannot take clips.
    """
    b, k = items.shape[:2]
    flat = items.flatten(0, 1)
    image = is_image_encoder(encoder)
    if is_batch(flat, "image") and not image:
        flat = flat.unsqueeze(2)  # N×C×1×H×W
    elif is_batch(flat, "video") and image:
        raise ValueError("an image encoder cannot encode clips: use a video encoder, or one-frame items")
    return encoder(flat).view(b, k, -1)


__all__ = ["ITEMS_HEAD_LEGACY", "PRETEXT_TASKS", "PretextTask", "ClassificationTask", "encode_items", "is_image_encoder"]
