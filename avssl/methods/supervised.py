"""Supervised training and fine-tuning: an encoder + a dropout/linear classifier, cross-entropy.

Fine-tuning starts from pretrained weights (``init_checkpoint``: an avssl checkpoint, a weights file of any
format :func:`avssl.models.load_weights` reads, or ``FORMAT:PATH``), trains only the classifier for
``classifier_warmup_epochs`` (so a random head does not wreck the pretrained features), then everything.
Validation averages the softmax over the test views of each video (multi-view testing).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Optional

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×T×H×W (video), B×1×F×T' (audio) or B×C×H×W (image) -> B×num_classes logits."""
        return self.classifier(self.encoder(x))

    def on_train_epoch_start(self) -> None:
        frozen = self.current_epoch < self.cfg.method.classifier_warmup_epochs
        for p in self.encoder.parameters():
            p.requires_grad_(not frozen)
        # Frozen BN statistics during the classifier warm-up, as in linear evaluation.
        self.encoder.train(not frozen)

    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        x, views = flatten_views(batch[self.modality], self.modality)
        labels = batch["label"].repeat_interleave(views)
        logits = self(x)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.cfg.method.label_smoothing)
        acc = (logits.argmax(1) == labels).float().mean()
        return {"loss": loss, "top1": acc}

    def validation_step(self, batch: Dict[str, Any], batch_idx: int) -> None:
        x, views = flatten_views(batch[self.modality], self.modality)
        probs = self(x).float().softmax(1)
        probs = probs.view(-1, views, probs.shape[1]).mean(1)  # multi-view: mean of softmax
        labels = batch["label"]
        top1 = (probs.argmax(1) == labels).float().mean()
        k = min(5, probs.shape[1])
        top5 = (probs.topk(k, dim=1).indices == labels[:, None]).any(1).float().mean()
        self.log("val/top1", top1, prog_bar=True, sync_dist=True, batch_size=labels.shape[0])
        self.log("val/top5", top5, sync_dist=True, batch_size=labels.shape[0])
