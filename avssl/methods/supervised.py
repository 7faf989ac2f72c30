"""Supervised training and fine-tuning: an encoder + a dropout/linear classifier, cross-entropy.

Fine-tuning starts from pretrained weights (``init_checkpoint``: an avssl checkpoint, a weights file of any
format :func:`avssl.models.load_weights` reads, or ``FORMAT:PATH``), trains only the classifier for
``classifier_warmup_epochs`` (so a random head does not wreck the pretrained features), then everything.

During the warm-up the encoder is held fixed without touching ``requires_grad`` (which DDP, having wrapped the
model with ``find_unused_parameters=False``, would trip over): its gradients are dropped after they are averaged
across processes and before the optimiser step, so the optimiser skips its parameters altogether (no update, no
weight decay, no momentum or Adam state), and it runs in eval mode, so its BatchNorm statistics stay too.

Validation scores every test view (``data.test_clips`` × ``data.test_crops``), gathers them across processes and
computes video-level metrics with :func:`avssl.eval.metrics.clip_and_video_metrics` (views aggregated by
``eval.aggregation``, ties counted against the true label): the numbers ``avssl test`` gives on the same views.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from avssl.data.batch import flatten_views
from avssl.methods import METHODS
from avssl.methods.base import SingleEncoderConfig, SingleEncoderMethod

log = logging.getLogger(__name__)


@dataclass
class SupervisedConfig(SingleEncoderConfig):
    name: str = "supervised"
    dropout: float = 0.5
    label_smoothing: float = 0.0
    # Weights that initialise the encoder: an avssl checkpoint, a published or exported weights file (format
    # detected), or FORMAT:PATH with FORMAT one of avssl, torchvision, pytorchvideo, pyslowfast, avid_cma.
    init_checkpoint: Optional[str] = None
    classifier_warmup_epochs: int = 0  # train only the classifier for this many epochs first


def load_encoder_weights(encoder: nn.Module, checkpoint: str, modality: str, what: Optional[str] = None) -> None:
    """Load ``checkpoint`` into ``encoder`` (strict): an avssl checkpoint's ``{modality}_encoder`` part, or any
    weights file :func:`~avssl.models.load_weights` reads (format detected), or ``FORMAT:PATH``; ``what`` (the
    config key that named the file) starts the message of an error."""
    from avssl.checkpoint import load_checkpoint
    from avssl.models.weights import load_weights, split_weights_spec

    fmt, path = split_weights_spec(checkpoint)
    state = load_checkpoint(path, what=what)
    sd = state.get("state_dict", state)
    prefix = f"{modality}_encoder."
    part = prefix[:-1] if any(str(k).startswith(prefix) for k in sd) else None
    load_weights(encoder, state, format=fmt, part=part, what=f"{what}: {path}" if what else str(path))


@METHODS.register("supervised")
class Supervised(SingleEncoderMethod):
    Config = SupervisedConfig
    modalities = ("video", "label")
    batch_keys = ("label",)
    monitor = "val/top1"
    monitor_mode = "max"

    def __init__(self, cfg: Any, **kw: Any) -> None:
        if cfg.num_classes is None:
            raise ValueError("the supervised method needs num_classes (set it in the config or let the CLI read it from the data)")
        super().__init__(cfg, **kw)
        m = cfg.method
        if m.init_checkpoint:
            load_encoder_weights(self.encoder, m.init_checkpoint, m.modality, what="method.init_checkpoint")
            log.info("initialised the %s encoder from %s", m.modality, m.init_checkpoint)
        from avssl.models.heads import ClassificationHead

        self.classifier = ClassificationHead(self.encoder.out_dim, cfg.num_classes, dropout=m.dropout)
        self._val_views: List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (logits, labels, index) per batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×T×H×W (video), B×1×F×T' (audio) or B×C×H×W (image) -> B×num_classes logits."""
        return self.classifier(self.encoder(x))

    # -- classifier warm-up ------------------------------------------------------------------------
    @property
    def warming_up(self) -> bool:
        """Whether the current epoch trains the classifier only (``method.classifier_warmup_epochs``)."""
        return self._trainer is not None and self.current_epoch < self.cfg.method.classifier_warmup_epochs

    def on_train_epoch_start(self) -> None:
        self.train(self.training)  # (re)applies the encoder's mode for this epoch

    def train(self, mode: bool = True) -> "Supervised":
        super().train(mode)
        if mode and self.warming_up:
            self.encoder.eval()  # BatchNorm statistics held during the warm-up, as in linear evaluation
        return self

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        if self.warming_up:
            # After DDP has averaged them (every process drops the same), before the step: a parameter without a
            # gradient is skipped by the optimiser entirely.
            for p in self.encoder.parameters():
                p.grad = None

    # -- training and validation -------------------------------------------------------------------
    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        x, views = flatten_views(batch[self.modality], self.modality)
        labels = batch["label"].repeat_interleave(views)
        logits = self(x)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.cfg.method.label_smoothing)
        acc = (logits.argmax(1) == labels).float().mean()
        return {"loss": loss, "top1": acc}

    def on_validation_epoch_start(self) -> None:
        self._val_views = []

    def validation_step(self, batch: Dict[str, Any], batch_idx: int) -> None:
        x, views = flatten_views(batch[self.modality], self.modality)
        self._val_views.append((self(x).float(), batch["label"].repeat_interleave(views),
                                batch["index"].repeat_interleave(views)))

    def on_validation_epoch_end(self) -> None:
        from avssl.eval.metrics import clip_and_video_metrics

        if not self._val_views:
            return
        scores, labels, index = (torch.cat(parts) for parts in zip(*self._val_views))
        self._val_views = []
        if self.trainer.world_size > 1:
            # Every process holds as many views (the sampler pads by repeating videos, whose views then merge into
            # the same video's scores), so the gathered tensors stack; every process computes the same metrics.
            scores, labels, index = (t.flatten(0, 1) for t in self.all_gather((scores, labels, index)))
        m = clip_and_video_metrics(scores, labels, index, num_classes=scores.shape[1], mode=self.cfg.eval.aggregation)
        for key, name in (("video_top1", "top1"), ("video_top5", "top5"),
                          ("mean_class_accuracy", "mean_class_accuracy"), ("clip_top1", "clip_top1")):
            # sync_dist: a mean of equal values, so Lightning knows the metric is global.
            self.log(f"val/{name}", m[key], prog_bar=name == "top1", sync_dist=True)
