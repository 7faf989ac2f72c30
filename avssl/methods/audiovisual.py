"""The base of the audio-visual methods: a video and an audio encoder, their heads, a joint embedding.

:class:`AudioVisualMethod` builds ``video_encoder`` (``model.video``) and ``audio_encoder`` (``model.audio``),
a projection head on each (``video_head``, ``audio_head``: ``ProjectionHead(out_dim, proj_hidden, proj_dim)``,
BatchNorm by ``proj_batch_norm`` / ``proj_last_bn``) unless the method sets ``heads = False``, and holds the
audio encoder fixed with ``freeze_audio_encoder``. :meth:`~AudioVisualMethod.embed` maps a clip and its sound
into the joint space; :meth:`~AudioVisualMethod.embed_dataset` does so for every video of a dataset, in one
pass (:func:`avssl.eval.features.extract_features`): memory banks are rebuilt from it, audio clusters are
computed from it, and cross-modal retrieval is evaluated on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from avssl.methods.base import BaseMethodConfig, Method


@dataclass
class AudioVisualConfig(BaseMethodConfig):
    """Keys of every audio-visual method with projection heads."""

    proj_hidden: int = 512
    proj_dim: int = 128
    # BatchNorm in the projections: after the hidden Linear, and/or after the last one.
    proj_batch_norm: bool = False
    proj_last_bn: bool = False
    # Hold the audio net fixed, BatchNorm statistics included (optim.lr_mult.audio_encoder=0 freezes only
    # the weights: in train mode BatchNorm still refits its statistics, which changes the features).
    freeze_audio_encoder: bool = False


class AudioVisualMethod(Method):
    """A video encoder and an audio encoder (and a projection head on each, unless ``heads = False``)."""

    Config = AudioVisualConfig
    modalities: Tuple[str, ...] = ("video", "audio")
    heads: ClassVar[bool] = True

    def __init__(self, cfg: Any, **kw: Any) -> None:
        super().__init__(cfg, **kw)
        from avssl.models.heads import ProjectionHead

        self.video_encoder = self.make_encoder(cfg.model.video, "model.video")
        self.audio_encoder = self.make_encoder(cfg.model.audio, "model.audio")
        m = cfg.method
        if self.heads:
            self.video_head = ProjectionHead(self.video_encoder.out_dim, m.proj_hidden, m.proj_dim,
                                             batch_norm=m.proj_batch_norm, last_bn=m.proj_last_bn)
            self.audio_head = ProjectionHead(self.audio_encoder.out_dim, m.proj_hidden, m.proj_dim,
                                             batch_norm=m.proj_batch_norm, last_bn=m.proj_last_bn)
        if self.audio_frozen():
            self.freeze("audio_encoder")

    def audio_frozen(self) -> bool:
        """Whether the audio encoder is held fixed (``method.freeze_audio_encoder``)."""
        return bool(self.cfg.method.freeze_audio_encoder)

    def project(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """One modality's batch (B×C×T×H×W video or B×1×F×T' audio) -> B×D: its encoder, then its head if any."""
        feats = self.encoder_for(modality)(x)
        return getattr(self, f"{modality}_head")(feats) if self.heads else feats

    def embed(self, video: torch.Tensor, audio: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """video B×C×T×H×W, audio B×1×F×T' -> (B×D, B×D) in the joint space (not normalised)."""
        return self.project(video, "video"), self.project(audio, "audio")

    @torch.no_grad()
    def embed_dataset(self, data: Union[str, Any], modalities: Sequence[str] = ("video", "audio"), *,
                      project: bool = True, normalize: bool = True, batch_size: Optional[int] = None,
                      num_workers: Optional[int] = None, max_batches: Optional[int] = None,
                      progress: bool = False) -> Dict[str, torch.Tensor]:
        """Embeddings of every video of ``data`` (a dataset yielding ``{modality, "index"}``, or ``"train"`` /
        ``"val"``: that part of this method's config, as test views) -> ``{modality: N×D, "index": N}``, rows
        sorted by video index.

        Each video's views (test clips × crops) are averaged; ``project=False`` takes the encoders' features
        instead of the heads' output; ``normalize`` L2-normalises each row. One pass over the data, in eval
        mode (the training flags are restored afterwards), on this method's device; ``batch_size`` and
        ``num_workers`` default to the config's ``data`` keys. Under ``torch.distributed`` every rank embeds its
        share of the videos and receives all the rows (:func:`avssl.eval.features.extract_dataset`): every rank
        must call this together.
        """
        from avssl.eval.features import extract_dataset

        if isinstance(data, str):
            from avssl.data.datamodule import make_dataset

            data = make_dataset(self.cfg, data, train=False, needs_audio="audio" in modalities)
        parts = {m: nn.Sequential(self.encoder_for(m), getattr(self, f"{m}_head")) if project and self.heads
                 else self.encoder_for(m) for m in modalities}
        out = extract_dataset(parts, data, batch_size=int(batch_size or self.cfg.data.batch_size),
                              num_workers=int(self.cfg.data.num_workers if num_workers is None else num_workers),
                              device=self.device, views="mean", progress=progress, max_batches=max_batches)
        order = out["index"].argsort()
        rows: Dict[str, torch.Tensor] = {"index": out["index"][order]}
        for m in modalities:
            z = out["features"][m][order]
            rows[m] = F.normalize(z, dim=1) if normalize else z
        return rows


__all__ = ["AudioVisualConfig", "AudioVisualMethod"]
