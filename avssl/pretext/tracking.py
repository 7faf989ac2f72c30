"""Tracking as supervision (Wang & Gupta 2015): the first and last patch of a track are the same thing.

For each clip B×C×T×H×W (``method.modality: video``) the most moving patch of the first frames (frame
differences, :func:`salient_centres`) is followed through the clip by normalised cross-correlation template
matching (:func:`track_ncc`). The patch at the start of the track (anchor) and at its end (positive) are
encoded by the shared encoder — as one frame, or as a short tube of ``tube_frames`` frames for a video
encoder — and projected; the other clips' patches of the batch are the negatives of the triplet ranking
loss on cosine distance with half hard, half random negatives (the ``tracking_triplet`` loss). Tracks whose
forward-backward round trip misses their start by more than ``max_fb_error`` px are dropped (a lost track
is not a positive pair).

Keys: ``patch`` (crop side in px, default 24; about the object's size), ``patch_size`` (side the crops are
resized to for the encoder, 32), ``search`` (tracker search radius in px per frame, 12), ``tube_frames``
(1), ``margin`` (0.5, the paper's), ``num_negatives`` (4), ``hard_fraction`` (0.5), ``embed_dim`` (128),
``max_fb_error`` (None: keep every track).

The tracker on tensors:

* :func:`motion_map` / :func:`salient_centres`: where a clip moves (frame differences), and the centres
  of the most moving patches, kept apart by non-maximum suppression (Wang & Gupta pick patches by motion
  before tracking them).
* :func:`track_ncc`: normalised cross-correlation template matching frame to frame within a search
  radius; the template follows the object (a running blend of the last match and the first template,
  so it adapts to rotation and deformation without drifting freely).
* :func:`forward_backward_error`: track forward then back; the round-trip error flags lost tracks.

Coordinates are (y, x) = (row, column) of a patch centre in pixels.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from avssl.data.batch import is_batch
from avssl.losses import build_loss
from avssl.models.heads import mlp_head
from avssl.pretext.base import PRETEXT_TASKS, PretextTask, encode_items


def motion_map(frames: torch.Tensor, patch: int = 1) -> torch.Tensor:
    """frames T×C×H×W -> H×W mean absolute frame difference, averaged over ``patch``×``patch`` windows."""
    if not is_batch(frames, "image") or frames.shape[0] < 2:
        raise ValueError(f"motion_map needs frames T×C×H×W with T >= 2, got shape {tuple(frames.shape)}")
    m = (frames[1:] - frames[:-1]).abs().float().mean(dim=(0, 1))
    if patch > 1:
        m = F.avg_pool2d(m[None, None], patch, stride=1, padding=patch // 2, count_include_pad=False)[0, 0]
        m = m[: frames.shape[2], : frames.shape[3]]
    return m


def salient_centres(frames: torch.Tensor, patch: int, num: int = 1, window: int = 3) -> torch.Tensor:
    """The ``num`` most moving patch centres (num×2, (y, x)) over the first ``window`` frames.

    Centres are kept at least half a patch from the border (a whole patch fits) and at least a patch
    apart from each other (non-maximum suppression).
    """
    t, _, h, w = frames.shape
    if patch > min(h, w):
        raise ValueError(f"patch {patch} is larger than the frames ({h}×{w})")
    m = motion_map(frames[: max(2, min(window, t))], patch).clone()
    half = patch // 2
    valid = torch.full_like(m, float("-inf"))
    valid[half: h - (patch - half) + 1, half: w - (patch - half) + 1] = 0.0
    m = m + valid
    out = []
    for _ in range(num):
        i = int(m.argmax())
        y, x = divmod(i, w)
        out.append((y, x))
        m[max(0, y - patch + 1): y + patch, max(0, x - patch + 1): x + patch] = float("-inf")
    return torch.tensor(out, dtype=torch.long)


def crop(frame: torch.Tensor, centre: Tuple[int, int], patch: int) -> torch.Tensor:
    """C×H×W -> C×patch×patch around ``centre`` (y, x), shifted inside the frame where it would leave it."""
    _, h, w = frame.shape
    top = min(max(int(centre[0]) - patch // 2, 0), h - patch)
    left = min(max(int(centre[1]) - patch // 2, 0), w - patch)
    return frame[:, top: top + patch, left: left + patch]


def ncc_map(search: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """Normalised cross-correlation of ``template`` (C×p×p) at every valid position of ``search`` (C×S×S).

    Returns (S−p+1)×(S−p+1) scores in [−1, 1]: for each position the Pearson correlation between the
    template and the window (over all channels and pixels).
    """
    c, p, _ = template.shape
    t = template.float() - template.float().mean()
    t_norm = t.norm().clamp_min(1e-8)
    win = F.unfold(search.float()[None], p)[0]  # (C·p·p)×L
    win = win - win.mean(dim=0, keepdim=True)
    score = (t.reshape(-1, 1) * win).sum(0) / (win.norm(dim=0).clamp_min(1e-8) * t_norm)
    side = search.shape[1] - p + 1
    return score.view(side, search.shape[2] - p + 1)


def track_ncc(frames: torch.Tensor, start: Tuple[int, int], patch: int, search: int = 8,
              update: float = 0.5) -> torch.Tensor:
    """Follow the patch centred at ``start`` (y, x) in frame 0 through frames T×C×H×W -> T×2 centres.

    In each frame the best NCC match of the template within ±``search`` px of the last position is taken;
    the template then becomes ``update``·(matched patch) + (1 − update)·(first template).
    """
    t, c, h, w = frames.shape
    if patch > min(h, w):
        raise ValueError(f"patch {patch} is larger than the frames ({h}×{w})")
    first = crop(frames[0], start, patch).float()
    template = first
    half = patch // 2
    y = min(max(int(start[0]), half), h - (patch - half))
    x = min(max(int(start[1]), half), w - (patch - half))
    out = [(y, x)]
    for k in range(1, t):
        top = max(0, y - half - search)
        left = max(0, x - half - search)
        bottom = min(h, y - half + patch + search)
        right = min(w, x - half + patch + search)
        region = frames[k, :, top:bottom, left:right]
        score = ncc_map(region, template)
        i = int(score.argmax())
        dy, dx = divmod(i, score.shape[1])
        y, x = top + dy + half, left + dx + half
        out.append((y, x))
        template = update * crop(frames[k], (y, x), patch).float() + (1.0 - update) * first
    return torch.tensor(out, dtype=torch.long)


def forward_backward_error(frames: torch.Tensor, start: Tuple[int, int], patch: int, search: int = 8,
                           update: float = 0.5) -> Tuple[torch.Tensor, float]:
    """Track forward, then from the last position backward in time -> (forward track T×2, round-trip px).

    A large round-trip error (the backward track does not return to ``start``) marks a lost track.
    """
    fwd = track_ncc(frames, start, patch, search, update)
    back = track_ncc(frames.flip(0), (int(fwd[-1, 0]), int(fwd[-1, 1])), patch, search, update)
    err = float((back[-1] - fwd[0]).float().norm())
    return fwd, err


def track_batch(x: torch.Tensor, patch: int, search: int = 8, update: float = 0.5,
                window: int = 3) -> torch.Tensor:
    """Clips B×C×T×H×W -> B×T×2 tracks of each clip's most moving patch."""
    tracks = []
    for clip in x.detach().transpose(1, 2):  # T×C×H×W
        centre = salient_centres(clip, patch, num=1, window=window)[0]
        tracks.append(track_ncc(clip, (int(centre[0]), int(centre[1])), patch, search, update))
    return torch.stack(tracks)


# -- the task ---------------------------------------------------------------------------------------
@PRETEXT_TASKS.register("tracking_triplet")
class TrackingTriplet(PretextTask):
    """Wang & Gupta's tracking triplets (see the module docstring for the keys)."""

    name = "tracking_triplet"
    legacy_keys = (("head.0.", "head.layers.0."), ("head.2.", "head.layers.2."))  # a plain Sequential before

    def __init__(self, feat_dim: int, patch: int = 24, patch_size: int = 32, search: int = 12, tube_frames: int = 1,
                 margin: float = 0.5, num_negatives: int = 4, hard_fraction: float = 0.5, embed_dim: int = 128,
                 max_fb_error: Optional[float] = None) -> None:
        super().__init__(feat_dim)
        if patch < 2 or patch_size < 2 or tube_frames < 1 or search < 1:
            raise ValueError("patch, patch_size and search must be >= 2, 2 and 1 px, tube_frames >= 1")
        self.patch, self.patch_size, self.search = int(patch), int(patch_size), int(search)
        self.tube_frames, self.max_fb_error = int(tube_frames), max_fb_error
        self.head = mlp_head(feat_dim, feat_dim, embed_dim)
        self.loss = build_loss("tracking_triplet", margin=margin, num_negatives=num_negatives,
                               hard_fraction=hard_fraction)

    def tracks(self, x: torch.Tensor) -> tuple:
        """clips B×C×T×H×W -> (tracks B×T×2 (y, x), kept B bool: tracks that passed the round-trip check)."""
        self.check_input(x)
        if x.shape[2] < 2:
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
        z = self.head(feats.flatten(0, 1)).view(feats.shape[0], 2, -1)
        loss, active = self.loss.terms(z[:, 0], z[:, 1], generator)
        return {"loss": loss, "active": active.to(x.device), "kept": kept.float().mean().to(x.device)}
