"""Audio-visual correspondence by cross-modal instance discrimination with in-batch negatives.

A video encoder and an audio encoder, each followed by an MLP projection (512→512→128 in the AVID
recipe), are trained so that each clip's embedding picks its own sound among the batch's sounds and
vice versa (:class:`avssl.losses.audiovisual.CrossModalNCE`). No labels are used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch

from avssl.losses import build_loss
from avssl.methods import METHODS
from avssl.methods.base import BaseMethodConfig, Method, flatten_views


@dataclass
class XModalNCEConfig(BaseMethodConfig):
    name: str = "xmodal_nce"
    proj_hidden: int = 512
    proj_dim: int = 128
    temperature: float = 0.07
    # Keep the audio encoder at its initialisation (eval mode, no gradient): the audio embedding becomes a
    # fixed target the video encoder learns to predict, as in learning from ambient sound (Owens et al.
    # 2016). Useful when the audio encoder's starting features already tell sounds apart (a pretrained
    # audio net, or a random conv net on distinctive sounds) and the video data are few.
    freeze_audio_encoder: bool = False


@METHODS.register("xmodal_nce")
class XModalNCE(Method):
    Config = XModalNCEConfig
    modalities = ("video", "audio")

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        from avssl.models.heads import ProjectionHead

        m = cfg.method
        self.video_encoder = self.make_encoder(cfg.model.video)
        self.audio_encoder = self.make_encoder(cfg.model.audio)
        self.video_head = ProjectionHead(self.video_encoder.out_dim, m.proj_hidden, m.proj_dim)
        self.audio_head = ProjectionHead(self.audio_encoder.out_dim, m.proj_hidden, m.proj_dim)
        self.criterion = build_loss("xmodal_nce", temperature=m.temperature)
        if m.freeze_audio_encoder:
            self.freeze("audio_encoder")

    def embed(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """video B×C×T×H×W, audio B×1×F×T' -> (B×proj_dim, B×proj_dim) projections."""
        return self.video_head(self.video_encoder(video)), self.audio_head(self.audio_encoder(audio))

    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        video, _ = flatten_views(batch["video"], 5)
        audio, _ = flatten_views(batch["audio"], 4)
        zv, za = self.embed(video, audio)
        loss = self.criterion(zv, za)
        with torch.no_grad():
            sim = torch.nn.functional.normalize(zv.float(), dim=1) @ torch.nn.functional.normalize(za.float(), dim=1).t()
            acc = (sim.argmax(1) == torch.arange(sim.shape[0], device=sim.device)).float().mean()
        return {"loss": loss, "v2a_acc": acc}
