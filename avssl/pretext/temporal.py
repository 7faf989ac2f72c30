"""Temporal pretext tasks: order verification (Shuffle and Learn) and clip order prediction (VCOP).

Both read clips B×C×T×H×W (``method.modality: video``) and sample their inputs inside each clip, so
``data.num_frames`` must cover what they sample (5 frames for ``temporal_order``; N·clip_frames +
(N−1)·gap for ``vcop``). The samplers work on index tensors and motion profiles only, so what a task will
see — which frames, in which order, with which label — can be checked without a model.

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

import itertools
from typing import List, Optional, Tuple

import torch

from avssl.data.batch import is_batch
from avssl.models.heads import ItemsClassifier, PairwiseClassifier
from avssl.pretext.base import ITEMS_HEAD_LEGACY, PRETEXT_TASKS, ClassificationTask


def frame_motion(x: torch.Tensor) -> torch.Tensor:
    """Clips B×C×T×H×W -> B×T motion profile: mean absolute difference of each frame to the previous one
    (frame 0 takes frame 1's value), the frame-difference measure of Shuffle and Learn's window choice."""
    if not is_batch(x, "video"):
        raise ValueError(f"frame_motion needs clips B×C×T×H×W, got shape {tuple(x.shape)}")
    if x.shape[2] < 2:
        return torch.zeros(x.shape[0], x.shape[2], device=x.device)
    d = (x[:, :, 1:] - x[:, :, :-1]).abs().float().mean(dim=(1, 3, 4))
    return torch.cat([d[:, :1], d], dim=1)


def _rand(shape: Tuple[int, ...], generator: Optional[torch.Generator]) -> torch.Tensor:
    return torch.rand(shape, generator=generator)


def motion_windows(motion: torch.Tensor, window: int, generator: Optional[torch.Generator] = None,
                   tolerance: float = 0.9) -> torch.Tensor:
    """B×T motion -> B window starts: a window of ``window`` frames with high motion.

    Among the starts whose window's mean motion is at least ``tolerance`` × the best one, one is drawn
    uniformly, so the sampler does not always return the same frames of a video.
    """
    b, t = motion.shape
    if window > t:
        raise ValueError(f"window of {window} frames is longer than the clip ({t} frames)")
    scores = motion.float().cpu().unfold(1, window, 1).mean(dim=2)  # B×(T-window+1)
    best = scores.max(dim=1, keepdim=True).values
    ok = scores >= tolerance * best - 1e-12
    weights = ok.float() * (_rand(tuple(scores.shape), generator) + 1e-6)
    return weights.argmax(dim=1)


def order_tuples(
    motion: torch.Tensor,
    positive_ratio: float = 0.25,
    window: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Shuffle and Learn's frame tuples from B×T motion profiles -> (indices B×3, labels B).

    For each clip, five frames a < b < c < d < e are drawn in a high-motion window of ``window`` frames
    (default: the whole clip) at random (so gaps vary); a positive (label 1) is (b, c, d) or its reverse
    (d, c, b) — the order is ambiguous in direction, as in the paper — and a negative (label 0) is
    (b, a, d) or (b, e, d), or one of their reverses. Positives and negatives share their first and last
    frames (b and d), so the spacing of the tuple's ends carries no label information; only the middle
    frame's content tells them apart.
    """
    if not 0.0 <= positive_ratio <= 1.0:
        raise ValueError(f"positive_ratio must be in [0, 1], got {positive_ratio}")
    b, t = motion.shape
    window = t if window is None else int(window)
    if window < 5 or t < 5:
        raise ValueError(f"temporal order tuples need at least 5 frames in the window (window={window}, clip={t})")
    start = motion_windows(motion, window, generator)
    # Five distinct sorted frames of the window: the first five of a random permutation, sorted.
    picks = _rand((b, window), generator).argsort(dim=1)[:, :5].sort(dim=1).values + start[:, None]
    a, bb, c, d, e = picks.unbind(dim=1)
    label = (_rand((b,), generator) < positive_ratio).long()
    middle_neg = torch.where(_rand((b,), generator) < 0.5, a, e)
    middle = torch.where(label.bool(), c, middle_neg)
    idx = torch.stack([bb, middle, d], dim=1)
    flip = _rand((b,), generator) < 0.5
    idx = torch.where(flip[:, None], idx.flip(1), idx)
    return idx, label


def permutations(n: int) -> torch.Tensor:
    """All n! permutations of range(n) in lexicographic order (n!×n); VCOP's classes."""
    if not 1 <= n <= 6:
        raise ValueError(f"clip order prediction takes 1 to 6 clips (6! = 720 classes), got {n}")
    return torch.tensor(list(itertools.permutations(range(n))), dtype=torch.long)


def vcop_starts(num_frames: int, num_clips: int, clip_frames: int, gap: int, batch: int,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Start frames B×N of N sub-clips of ``clip_frames`` frames, ``gap`` frames apart, in order.

    The first clip starts at a random offset within the slack the clip leaves.
    """
    need = num_clips * clip_frames + (num_clips - 1) * gap
    if need > num_frames:
        raise ValueError(f"vcop needs num_clips·clip_frames + (num_clips−1)·gap = {num_clips}·{clip_frames} + "
                         f"{num_clips - 1}·{gap} = {need} frames, but the clips have {num_frames}; lower "
                         "method.task.clip_frames / gap / num_clips or raise data.num_frames")
    slack = num_frames - need
    off = (_rand((batch,), generator) * (slack + 1)).long().clamp(max=slack)
    return off[:, None] + torch.arange(num_clips)[None, :] * (clip_frames + gap)


def gather_frames(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x B×C×T×H×W, index B×K (frame numbers) -> B×K×C×H×W, the chosen frames of each clip."""
    b, c, t, h, w = x.shape
    idx = index.to(x.device).clamp(0, t - 1)
    flat = x.permute(0, 2, 1, 3, 4)  # B×T×C×H×W
    return flat[torch.arange(b, device=x.device)[:, None], idx]


def gather_clips(x: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
    """x B×C×T×H×W, starts B×K -> B×K×C×length×H×W: K sub-clips of ``length`` frames (clamped at the end)."""
    idx = starts.to(x.device)[:, :, None] + torch.arange(length, device=x.device)[None, None, :]
    frames = gather_frames(x, idx.flatten(1))  # B×(K·L)×C×H×W
    b, _, c, h, w = frames.shape
    return frames.view(b, starts.shape[1], length, c, h, w).transpose(2, 3)


def inverse_permutation(perm: torch.Tensor) -> torch.Tensor:
    """perm ...×N -> its inverse (inv[perm[i]] = i)."""
    return perm.argsort(dim=-1)


# -- the tasks --------------------------------------------------------------------------------------
@PRETEXT_TASKS.register("temporal_order")
class TemporalOrder(ClassificationTask):
    """Shuffle and Learn's order verification (see the module docstring for the keys)."""

    name = "temporal_order"
    legacy_keys = ITEMS_HEAD_LEGACY

    def __init__(self, feat_dim: int, positive_ratio: float = 0.25, window: Optional[int] = None,
                 frames_per_item: int = 1, hidden: int = 512) -> None:
        super().__init__(feat_dim)
        if frames_per_item < 1:
            raise ValueError(f"frames_per_item must be >= 1, got {frames_per_item}")
        self.positive_ratio, self.window, self.frames_per_item = float(positive_ratio), window, int(frames_per_item)
        self.head = self.make_head(feat_dim, hidden)

    @staticmethod
    def make_head(feat_dim: int, hidden: int = 512) -> ItemsClassifier:
        """Shuffle and Learn's verification head: features of (frame, frame, frame) -> in order (1) or not (0)."""
        return ItemsClassifier(feat_dim, 3, 2, hidden)

    def sample(self, x: torch.Tensor, generator: Optional[torch.Generator] = None):
        """clips B×C×T×H×W -> (items B×3×C×H×W or B×3×C×k×H×W, frame indices B×3, labels B)."""
        self.check_input(x)
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

    name = "vcop"
    legacy_keys = (("loss.", "head."),)  # the pairwise head was kept inside a loss

    def __init__(self, feat_dim: int, num_clips: int = 3, clip_frames: int = 16, gap: int = 8,
                 hidden: int = 512) -> None:
        super().__init__(feat_dim)
        if clip_frames < 1 or gap < 0:
            raise ValueError(f"clip_frames must be >= 1 and gap >= 0, got {clip_frames}, {gap}")
        self.num_clips, self.clip_frames, self.gap = int(num_clips), int(clip_frames), int(gap)
        self.register_buffer("perms", permutations(self.num_clips), persistent=False)
        self.head = self.make_head(feat_dim, self.num_clips, hidden)

    @staticmethod
    def make_head(feat_dim: int, num_clips: int = 3, hidden: int = 512) -> PairwiseClassifier:
        """Pairs of the N clips' features -> which of the N! orders."""
        return PairwiseClassifier(feat_dim, num_clips, hidden)

    def sample(self, x: torch.Tensor, generator: Optional[torch.Generator] = None):
        """clips B×C×T×H×W -> (shuffled sub-clips B×N×C×L×H×W, their start frames B×N, permutation labels B).

        Slot j of the shuffled sequence holds the clip originally at position ``perms[label][j]``.
        """
        self.check_input(x)
        b, t = x.shape[0], x.shape[2]
        starts = vcop_starts(t, self.num_clips, self.clip_frames, self.gap, b, generator)
        label = (torch.rand(b, generator=generator) * len(self.perms)).long().clamp(max=len(self.perms) - 1)
        order = self.perms.cpu()[label]  # B×N
        shuffled = starts.gather(1, order)
        return gather_clips(x, shuffled, self.clip_frames), shuffled, label.to(x.device)

    def sample_items(self, x: torch.Tensor, generator: Optional[torch.Generator] = None):
        items, _, label = self.sample(x, generator)
        return items, label


__all__: List[str] = ["frame_motion", "motion_windows", "order_tuples", "permutations", "vcop_starts",
                      "gather_frames", "gather_clips", "inverse_permutation", "TemporalOrder", "ClipOrder"]
