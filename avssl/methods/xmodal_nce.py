"""Audio-visual correspondence by cross-modal instance discrimination with in-batch negatives.

A video encoder and an audio encoder, each followed by an MLP projection (512→512→128 in the AVID
recipe, with BatchNorm here), are trained so that each clip's embedding picks its own sound among the
batch's sounds and vice versa (:class:`avssl.losses.audiovisual.CrossModalNCE`). No labels are used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch
import torch.nn.functional as F

from avssl.data.batch import flatten_views
from avssl.losses import build_loss
from avssl.methods import METHODS
from avssl.methods.audiovisual import AudioVisualConfig, AudioVisualMethod


@dataclass
class XModalNCEConfig(AudioVisualConfig):
    name: str = "xmodal_nce"
    proj_batch_norm: bool = True
    temperature: float = 0.07
    # freeze_audio_encoder keeps the audio encoder at its initialisation (eval mode, no gradient): the audio
    # embedding becomes a fixed target the video encoder learns to predict, as in learning from ambient sound
    # (Owens et al. 2016). Useful when the audio encoder's starting features already tell sounds apart (a
    # pretrained audio net, or a random conv net on distinctive sounds) and the video data are few.


@METHODS.register("xmodal_nce")
class XModalNCE(AudioVisualMethod):
    Config = XModalNCEConfig

    def __init__(self, cfg: Any, **kw: Any) -> None:
        super().__init__(cfg, **kw)
        self.criterion = build_loss("xmodal_nce", temperature=cfg.method.temperature)

    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        video, _ = flatten_views(batch["video"], "video")
        audio, _ = flatten_views(batch["audio"], "audio")
        zv, za = self.embed(video, audio)
        loss = self.criterion(zv, za)
        with torch.no_grad():
            sim = F.normalize(zv.float(), dim=1) @ F.normalize(za.float(), dim=1).t()
            acc = (sim.argmax(1) == torch.arange(sim.shape[0], device=sim.device)).float().mean()
        return {"loss": loss, "v2a_acc": acc}
