"""Tracking as supervision (Wang & Gupta 2015): the first and last patch of a track are the same thing.

For each clip B×C×T×H×W (``method.modality: video``) the most moving patch of the first frames
(frame differences, :func:`avssl.data.tracking.salient_centres`) is followed through the clip by
normalised cross-correlation template matching (:func:`avssl.data.tracking.track_ncc`). The patch at the
start of the track (anchor) and at its end (positive) are encoded by the shared encoder — as one frame,
or as a short tube of ``tube_frames`` frames for a video encoder — and projected; the other clips' patches
of the batch are the negatives of the triplet ranking loss on cosine distance with half hard, half random
negatives (``tracking_triplet`` loss). Tracks whose forward-backward round trip misses their start by
more than ``max_fb_error`` px are dropped (a lost track is not a positive pair).

Keys: ``patch`` (crop side in px, default 24; about the object's size), ``patch_size`` (side the crops are
resized to for the encoder, 32), ``search`` (tracker search radius in px per frame, 12), ``tube_frames``
(1), ``margin`` (0.5, the paper's), ``num_negatives`` (4), ``hard_fraction`` (0.5), ``embed_dim`` (128),
``max_fb_error`` (None: keep every track).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from avssl.data.tracking import crop, forward_backward_error, salient_centres, track_ncc
from avssl.losses.pretext import TrackingTripletLoss
from avssl.methods.pretext import PRETEXT_TASKS, PretextTask, encode_items, register_pretext_method


@PRETEXT_TASKS.register("tracking_triplet")
class TrackingTriplet(PretextTask):
    """Wang & Gupta's tracking triplets (see the module docstring for the keys)."""

    def __init__(self, feat_dim: int, patch: int = 24, patch_size: int = 32, search: int = 12, tube_frames: int = 1,
                 margin: float = 0.5, num_negatives: int = 4, hard_fraction: float = 0.5, embed_dim: int = 128,
                 max_fb_error: Optional[float] = None) -> None:
        super().__init__(feat_dim)
        if patch < 2 or patch_size < 2 or tube_frames < 1 or search < 1:
            raise ValueError("patch, patch_size and search must be >= 2, 2 and 1 px, tube_frames >= 1")
        self.patch, self.patch_size, self.search = int(patch), int(patch_size), int(search)
        self.tube_frames, self.max_fb_error = int(tube_frames), max_fb_error
        self.head = nn.Sequential(nn.Linear(feat_dim, feat_dim), nn.ReLU(inplace=True), nn.Linear(feat_dim, embed_dim))
        self.loss = TrackingTripletLoss(margin, num_negatives, hard_fraction)

    def tracks(self, x: torch.Tensor) -> tuple:
        """clips B×C×T×H×W -> (tracks B×T×2 (y, x), kept B bool: tracks that passed the round-trip check)."""
        if x.dim() != 5 or x.shape[2] < 2:
            raise ValueError(f"tracking_triplet needs clips B×C×T×H×W with T >= 2, got shape {tuple(x.shape)}")
        out, kept = [], []
        with torch.no_grad():
            for clip in x.detach().float().transpose(1, 2):  # T×C×H×W
                start = salient_centres(clip, self.patch)[0]
                start_yx = (int(start[0]), int(start[1]))
                if self.max_fb_error is None:
                    out.append(track_ncc(clip, start_yx, self.patch, self.search))
                    kept.append(True)
                else:
                    fwd, err = forward_backward_error(clip, start_yx, self.patch, self.search)
                    out.append(fwd)
                    kept.append(err <= self.max_fb_error)
        return torch.stack(out), torch.tensor(kept)

    def _tube(self, clip: torch.Tensor, centre: torch.Tensor, first: int) -> torch.Tensor:
        """C×T×H×W -> C×k×p×p (k = tube_frames from frame ``first``) or C×p×p (k = 1), resized to patch_size."""
        frames = [crop(clip[:, f], (int(centre[0]), int(centre[1])), self.patch)
                  for f in range(first, first + self.tube_frames)]
        tube = F.interpolate(torch.stack(frames), size=self.patch_size, mode="bilinear", align_corners=False)
        return tube[0] if self.tube_frames == 1 else tube.transpose(0, 1)

    def sample(self, x: torch.Tensor):
        """clips -> (anchors, positives: B'×C×[k×]p×p, tracks B×T×2, kept B); B' = kept tracks."""
        tracks, kept = self.tracks(x)
        t = x.shape[2]
        k = min(self.tube_frames, t)
        anchors, positives = [], []
        for i in kept.nonzero(as_tuple=True)[0].tolist():
            anchors.append(self._tube(x[i], tracks[i, 0], 0))
            positives.append(self._tube(x[i], tracks[i, -1], t - k))
        if len(anchors) < 2:
            return None, None, tracks, kept
        return torch.stack(anchors), torch.stack(positives), tracks, kept

    def forward(self, encoder: nn.Module, x: torch.Tensor,
                generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        anchors, positives, _, kept = self.sample(x)
        if anchors is None:
            # Fewer than two usable tracks: no triplet to form; a zero loss that keeps the graph connected.
            zero = sum(p.sum() for p in self.head.parameters()) * 0.0
            return {"loss": zero, "kept": kept.float().mean().to(x.device)}
        feats = encode_items(encoder, torch.stack([anchors, positives], dim=1))  # B'×2×D
        z = self.head(feats)
        loss = self.loss(z[:, 0], z[:, 1], generator)
        return {"loss": loss, "active": torch.tensor(self.loss.last_active, device=x.device),
                "kept": kept.float().mean().to(x.device)}


register_pretext_method("tracking_triplet")
