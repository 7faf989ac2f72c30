"""Samplers of the temporal pretext tasks: frame tuples (Shuffle and Learn) and shuffled sub-clips (VCOP).

They work on index tensors and motion profiles only, so what a task will see — which frames, in which
order, with which label — can be checked without a model.
"""
from __future__ import annotations

import itertools
from typing import List, Optional, Tuple

import torch


def frame_motion(x: torch.Tensor) -> torch.Tensor:
    """Clips B×C×T×H×W -> B×T motion profile: mean absolute difference of each frame to the previous one
    (frame 0 takes frame 1's value), the frame-difference measure of Shuffle and Learn's window choice."""
    if x.dim() != 5:
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


__all__: List[str] = ["frame_motion", "motion_windows", "order_tuples", "permutations", "vcop_starts",
                      "gather_frames", "gather_clips", "inverse_permutation"]
