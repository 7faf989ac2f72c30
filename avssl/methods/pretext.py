"""Pretext tasks: objectives computed from one encoder and the raw inputs of a batch.

A :class:`PretextTask` takes an encoder and a batch of inputs (B×C×T×H×W clips, or B×C×H×W images)
and returns a dict with at least ``"loss"``. It samples what it needs from the inputs itself
(frame tuples, shuffled sub-clips, rotated or tiled copies, tracked patches) and owns its small heads,
so the same task runs

* alone, as a method of its own (``build_method("rotation", cfg)``, ``method.name: rotation`` in a
  config): :class:`PretextMethod` trains ``model.<method.modality>`` with the task; its keys go under
  ``method.task``;
* as a weighted extra objective of any other method, from the config::

      method:
        name: avid_cma
        extra_objectives:
          temporal_order: {weight: 0.5, modality: video, positive_ratio: 0.25}

  (:meth:`avssl.methods.base.Method.training_step` adds ``weight × loss`` of each task, computed with
  the method's own encoder for that modality, and logs ``<task>/<key>``).

Tasks are registered in :data:`PRETEXT_TASKS`; each registered task is also a method of the same name.
"""
from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from avssl.registry import Registry

PRETEXT_TASKS: Registry[Any] = Registry("pretext task")

#: Dimensions of one sample of each modality a task can take (C×T×H×W, C×H×W, 1×F×T').
SAMPLE_DIMS: Dict[str, int] = {"video": 4, "image": 3, "audio": 3}


class PretextTask(nn.Module, metaclass=ABCMeta):
    """Base of every pretext task.

    Args:
        feat_dim: the pooled feature size of the encoder the task will be given (``encoder.out_dim``),
            so heads can be built up front (and are in the optimiser and the checkpoint from the start).

    Subclasses implement :meth:`forward`. Randomness comes from ``generator`` when given, else from
    torch's global RNG (seeded by the run and saved in checkpoints).
    """

    def __init__(self, feat_dim: int) -> None:
        super().__init__()
        if int(feat_dim) < 1:
            raise ValueError(f"feat_dim must be >= 1, got {feat_dim}")
        self.feat_dim = int(feat_dim)

    @abstractmethod
    def forward(self, encoder: nn.Module, x: torch.Tensor,
                generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        """encoder: inputs -> B×feat_dim; x: B×C×T×H×W or B×C×H×W -> {"loss": scalar, diagnostics...}."""


class ClassificationTask(PretextTask):
    """A task that samples K items per input with a class label and classifies their features.

    Subclasses set ``self.loss`` (a classifier loss with ``last_logits``, see
    :mod:`avssl.losses.pretext`) and implement :meth:`sample_items`.
    """

    loss: nn.Module

    @abstractmethod
    def sample_items(self, x: torch.Tensor, generator: Optional[torch.Generator] = None
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
        """x -> (items B×K×C×[L×]H×W, labels B)."""

    def forward(self, encoder: nn.Module, x: torch.Tensor,
                generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        items, label = self.sample_items(x, generator)
        loss = self.loss(encode_items(encoder, items), label)
        return {"loss": loss, "acc": (self.loss.last_logits.argmax(1) == label).float().mean()}


def available_pretext_tasks() -> List[str]:
    _register_all()
    return PRETEXT_TASKS.names()


def build_pretext_task(name: str, feat_dim: int, **kwargs: Any) -> PretextTask:
    """Build the registered task ``name`` for an encoder of ``feat_dim`` pooled features.

    Unknown names raise KeyError listing the known tasks; unknown keyword arguments raise TypeError
    naming the task.
    """
    _register_all()
    builder = PRETEXT_TASKS.get(name)
    try:
        return builder(feat_dim=feat_dim, **kwargs)
    except TypeError as e:
        raise TypeError(f"pretext task {name!r}: {e}") from e


def _register_all() -> None:
    # The task modules register themselves on import; importing here keeps the registry complete
    # whichever module was imported first.
    from avssl.methods import image_pretext, temporal_order, tracking  # noqa: F401


def select_view(x: torch.Tensor, modality: str) -> torch.Tensor:
    """B×V×(sample) -> the first view, B×(sample); a tensor without a view axis is returned as is."""
    dims = SAMPLE_DIMS.get(modality)
    if dims is None:
        raise ValueError(f"modality must be one of {', '.join(SAMPLE_DIMS)}; got {modality!r}")
    if x.dim() == dims + 2:
        return x[:, 0]
    if x.dim() != dims + 1:
        raise ValueError(f"a {modality} batch must be B×{'C×T×H×W' if dims == 4 else 'C×H×W'} "
                         f"(optionally with a view axis); got shape {tuple(x.shape)}")
    return x


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

    ``items`` is B×K×C×H×W (frames, tiles of images) or B×K×C×L×H×W (short clips, tiles of clips). A video
    encoder sees frames as one-frame clips; an image encoder sees frames directly and cannot take clips.
    """
    b, k = items.shape[:2]
    flat = items.flatten(0, 1)
    image = is_image_encoder(encoder)
    if flat.dim() == 4 and not image:
        flat = flat.unsqueeze(2)  # N×C×1×H×W
    elif flat.dim() == 5 and image:
        raise ValueError("an image encoder cannot encode clips: use a video encoder, or one-frame items")
    return encoder(flat).view(b, k, -1)


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
        if modality not in SAMPLE_DIMS:
            raise ValueError(f"method.extra_objectives.{name}.modality must be one of {', '.join(SAMPLE_DIMS)}; "
                             f"got {modality!r}")
        enc_cfg = getattr(cfg.model, modality, None)
        if enc_cfg is None:
            raise ValueError(f"method.extra_objectives.{name} reads {modality} but model.{modality} is not set")
        task = build_pretext_task(str(name), encoder_out_dim(enc_cfg), **entry)
        out[str(name)] = ExtraObjective(str(name), task, modality, weight)
    return out


# -- a task as a method of its own ---------------------------------------------------------------------
from avssl.methods import METHODS  # noqa: E402
from avssl.methods.base import BaseMethodConfig, Method  # noqa: E402


@dataclass
class PretextMethodConfig(BaseMethodConfig):
    """Keys of a pretext task trained alone (``method.name`` is the task's name)."""

    name: str = "rotation"
    modality: str = "video"  # the batch entry and the encoder (model.<modality>): video | image
    task: Dict[str, Any] = field(default_factory=dict)  # the task's own keys, e.g. {positive_ratio: 0.25}


class PretextMethod(Method):
    """One encoder (``model.<method.modality>``) trained by the pretext task ``method.name``."""

    Config = PretextMethodConfig

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        m = cfg.method
        modality = str(m.modality)
        if modality not in ("video", "image"):
            raise ValueError(f"method.modality must be video or image for {m.name!r}; got {modality!r}")
        enc_cfg = getattr(cfg.model, modality, None)
        if enc_cfg is None:
            raise ValueError(f"method {m.name!r} with method.modality={modality} needs model.{modality}; it is not set")
        self.modality = modality
        self.modalities: Tuple[str, ...] = (modality,)
        setattr(self, f"{modality}_encoder", self.make_encoder(enc_cfg))
        self.task = build_pretext_task(str(m.name), int(self.encoder.out_dim), **dict(m.task or {}))

    @property
    def encoder(self) -> nn.Module:
        return getattr(self, f"{self.modality}_encoder")

    def encoder_for(self, modality: str) -> nn.Module:
        if modality != self.modality:
            raise ValueError(f"{self.cfg.method.name} was trained on {self.modality} (method.modality); "
                             f"it has no {modality} encoder")
        return self.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """batch[modality] B×C×T×H×W (or B×C×H×W; a view axis is reduced to its first view) -> the task's dict."""
        return self.task(self.encoder, select_view(batch[self.modality], self.modality))


def register_pretext_method(name: str) -> None:
    """Make the task ``name`` a method of the same name (:class:`PretextMethod`)."""
    if name not in METHODS:
        METHODS.register(name)(PretextMethod)
