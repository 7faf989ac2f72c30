"""Temporal pretext tasks: order verification (Shuffle and Learn) and clip order prediction (VCOP).

Both read clips B×C×T×H×W (``method.modality: video``) and sample their inputs inside each clip, so
``data.num_frames`` must cover what they sample (5 frames for ``temporal_order``; N·clip_frames +
(N−1)·gap for ``vcop``).

``temporal_order`` (Misra et al. 2016): five frames a < b < c < d < e of a high-motion window (frame
differences), at random gaps; (b, c, d) or (d, c, b) is in order (label 1), (b, a, d) or (b, e, d) (or
reversed) is not (label 0); the three items share the encoder, their features are concatenated and a
classifier verifies the order. Keys: ``positive_ratio`` (0.25, the paper's share of positives),
``window`` (frames of the high-motion window; None = the whole clip), ``frames_per_item`` (1: single
frames; k > 1: k-frame clips starting at each chosen frame, for video encoders that need time), ``hidden``
(512, the classifier's width).

``vcop`` (Xu et al. 2019): N sub-clips of ``clip_frames`` frames, ``gap`` frames apart, are shuffled by one
of the N! permutations; each is encoded, pairs of features are combined and a classifier names the
permutation. Keys: ``num_clips`` (3), ``clip_frames`` (16 in the paper; the configs here use 2–4 on
small CPUs), ``gap`` (8), ``hidden`` (512).
"""
from __future__ import annotations

from typing import Optional

import torch

from avssl.data.pretext import frame_motion, gather_clips, gather_frames, order_tuples, permutations, vcop_starts
from avssl.losses.pretext import VCOPLoss, temporal_order_loss
from avssl.methods.pretext import PRETEXT_TASKS, ClassificationTask, register_pretext_method


def _need_clips(x: torch.Tensor, task: str) -> None:
    if x.dim() != 5:
        raise ValueError(f"{task} needs clips B×C×T×H×W (method.modality: video), got shape {tuple(x.shape)}")


@PRETEXT_TASKS.register("temporal_order")
class TemporalOrder(ClassificationTask):
    """Shuffle and Learn's order verification (see the module docstring for the keys)."""

    def __init__(self, feat_dim: int, positive_ratio: float = 0.25, window: Optional[int] = None,
                 frames_per_item: int = 1, hidden: int = 512) -> None:
        super().__init__(feat_dim)
        if frames_per_item < 1:
            raise ValueError(f"frames_per_item must be >= 1, got {frames_per_item}")
        self.positive_ratio, self.window, self.frames_per_item = float(positive_ratio), window, int(frames_per_item)
        self.loss = temporal_order_loss(feat_dim, hidden)

    def sample(self, x: torch.Tensor, generator: Optional[torch.Generator] = None):
        """clips B×C×T×H×W -> (items B×3×C×H×W or B×3×C×k×H×W, frame indices B×3, labels B)."""
        _need_clips(x, "temporal_order")
        t = x.shape[2]
        usable = t - self.frames_per_item + 1  # every item's k frames must fit in the clip
        motion = frame_motion(x)[:, :usable]
        idx, label = order_tuples(motion, self.positive_ratio, window=self.window, generator=generator)
        if self.frames_per_item == 1:
            items = gather_frames(x, idx)
        else:
            items = gather_clips(x, idx, self.frames_per_item)
        return items, idx, label.to(x.device)

    def sample_items(self, x: torch.Tensor, generator: Optional[torch.Generator] = None):
        items, _, label = self.sample(x, generator)
        return items, label


@PRETEXT_TASKS.register("vcop")
class ClipOrder(ClassificationTask):
    """VCOP's clip order prediction (see the module docstring for the keys)."""

    def __init__(self, feat_dim: int, num_clips: int = 3, clip_frames: int = 16, gap: int = 8,
                 hidden: int = 512) -> None:
        super().__init__(feat_dim)
        if clip_frames < 1 or gap < 0:
            raise ValueError(f"clip_frames must be >= 1 and gap >= 0, got {clip_frames}, {gap}")
        self.num_clips, self.clip_frames, self.gap = int(num_clips), int(clip_frames), int(gap)
        self.register_buffer("perms", permutations(self.num_clips), persistent=False)
        self.loss = VCOPLoss(feat_dim, self.num_clips, hidden)

    def sample(self, x: torch.Tensor, generator: Optional[torch.Generator] = None):
        """clips B×C×T×H×W -> (shuffled sub-clips B×N×C×L×H×W, their start frames B×N, permutation labels B).

        Slot j of the shuffled sequence holds the clip originally at position ``perms[label][j]``.
        """
        _need_clips(x, "vcop")
        b, t = x.shape[0], x.shape[2]
        starts = vcop_starts(t, self.num_clips, self.clip_frames, self.gap, b, generator)
        label = (torch.rand(b, generator=generator) * len(self.perms)).long().clamp(max=len(self.perms) - 1)
        order = self.perms.cpu()[label]  # B×N
        shuffled = starts.gather(1, order)
        return gather_clips(x, shuffled, self.clip_frames), shuffled, label.to(x.device)

    def sample_items(self, x: torch.Tensor, generator: Optional[torch.Generator] = None):
        items, _, label = self.sample(x, generator)
        return items, label


register_pretext_method("temporal_order")
register_pretext_method("vcop")
