"""Where to cut clips: pure functions of durations and times (seconds). Nothing here decodes.

Randomness comes from the ``generator`` argument: a ``torch.Generator``, a ``random.Random``, or None
(torch's global RNG). The same generator state gives the same answers.

* :func:`random_clip` — one random window (training);
* :func:`uniform_clips` — K evenly spaced windows covering the video (multi-view testing);
* :func:`ordered_clips` — N ordered, non-overlapping windows with fixed gaps (temporal-order tasks);
* :func:`av_offset` — where the audio window starts, in or out of sync with the video window;
* :func:`frame_times` — the T sample times inside a window.

Clips longer than the video start at 0 (the decoder clamps windows to the file).
"""
from __future__ import annotations

import math
import random
from typing import List, Optional, Tuple, Union

import torch

__all__ = ["Generator", "random_clip", "uniform_clips", "ordered_clips", "av_offset", "frame_times"]

Generator = Union[torch.Generator, random.Random, None]


def _uniform(lo: float, hi: float, generator: Generator) -> float:
    """A float uniform in [lo, hi] (lo when hi <= lo)."""
    if hi <= lo:
        return float(lo)
    if isinstance(generator, random.Random):
        u = generator.random()
    else:
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
    return lo + (hi - lo) * u


def _check(name: str, value: float, positive: bool = False) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        need = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {need}, got {value}")
    return value


def random_clip(video_duration: float, clip_duration: float, generator: Generator = None) -> float:
    """Start (s) of a window of ``clip_duration`` uniform over the video: in [0, video − clip].

    A clip longer than the video starts at 0.

    Example::

        >>> s = random_clip(10.0, 2.0, torch.Generator().manual_seed(0))
        >>> 0.0 <= s <= 8.0
        True
        >>> random_clip(1.0, 2.0)
        0.0
    """
    video_duration = _check("video_duration", video_duration)
    clip_duration = _check("clip_duration", clip_duration, positive=True)
    return _uniform(0.0, max(0.0, video_duration - clip_duration), generator)


def uniform_clips(video_duration: float, clip_duration: float, k: int) -> List[float]:
    """Starts (s) of ``k`` evenly spaced windows covering the video (test views).

    For k > 1 the first starts at 0 and the last ends at the end of the video, with equal steps
    between; k = 1 gives the centred window. (PySlowFast and pytorchvideo step by (video − clip)/k,
    which leaves the last (video − clip)/k seconds unseen; here the whole video is covered.) A clip longer
    than the video gives k starts at 0.

    Example::

        >>> uniform_clips(10.0, 2.0, 5)
        [0.0, 2.0, 4.0, 6.0, 8.0]
        >>> uniform_clips(10.0, 2.0, 1)
        [4.0]
    """
    video_duration = _check("video_duration", video_duration)
    clip_duration = _check("clip_duration", clip_duration, positive=True)
    if int(k) != k or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k}")
    k = int(k)
    span = max(0.0, video_duration - clip_duration)
    if k == 1:
        return [span / 2.0]
    starts = [span * i / (k - 1) for i in range(k)]
    starts[-1] = span  # exactly at the end, whatever the rounding
    return starts


def ordered_clips(
    video_duration: float, clip_duration: float, n: int, gap: float = 0.0, generator: Generator = None
) -> List[float]:
    """Starts (s) of ``n`` consecutive windows, each ``gap`` seconds after the end of the previous one.

    ``starts[i] = s0 + i·(clip_duration + gap)``; the whole run (n·clip + (n − 1)·gap seconds) is placed
    uniformly at random inside the video. For temporal-order tasks (shuffle-and-learn, clip order
    prediction) the clips must not overlap, so a run that does not fit raises ValueError.

    Example::

        >>> ordered_clips(10.0, 1.0, 3, gap=0.5, generator=random.Random(0))   # s0 in [0, 6]
        [5.0665..., 6.5665..., 8.0665...]
        >>> ordered_clips(3.0, 1.0, 3, gap=0.5)
        Traceback (most recent call last):
        ValueError: ordered_clips: 3 clips of 1 s with 0.5 s gaps need 4 s, but the video lasts 3 s
    """
    video_duration = _check("video_duration", video_duration)
    clip_duration = _check("clip_duration", clip_duration, positive=True)
    gap = _check("gap", gap)
    if int(n) != n or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n}")
    n = int(n)
    step = clip_duration + gap
    needed = n * clip_duration + (n - 1) * gap
    # A hair of tolerance so that a run which fits exactly is not refused over rounding.
    if needed > video_duration + 1e-9:
        raise ValueError(
            f"ordered_clips: {n} clips of {clip_duration:g} s with {gap:g} s gaps need {needed:g} s, "
            f"but the video lasts {video_duration:g} s"
        )
    s0 = _uniform(0.0, max(0.0, video_duration - needed), generator)
    return [s0 + i * step for i in range(n)]


def av_offset(
    video_start: float,
    clip_duration: float,
    video_duration: float,
    max_offset: float,
    in_sync: bool,
    min_offset: Optional[float] = None,
    generator: Generator = None,
) -> Tuple[float, float]:
    """Start (s) of the audio window of ``clip_duration`` seconds, and its offset from ``video_start``.

    * ``in_sync=True``: ``(video_start, 0.0)``.
    * ``in_sync=False``: the audio is shifted by an offset with ``min_offset <= |offset| <= max_offset``
      (default ``min_offset = max_offset / 2``, so that negatives are clearly out of sync), earlier or
      later, drawn uniformly over the offsets whose window lies inside the file
      (``0 <= audio_start <= video_duration − clip_duration``). When no such offset exists (a file too
      short), the drawn offset is clamped into the file and the smaller offset actually applied is
      returned — callers that need a hard minimum should check it.

    Returns ``(audio_start, offset)`` with ``offset = audio_start − video_start``.

    Example::

        >>> av_offset(4.0, 1.0, 10.0, max_offset=2.0, in_sync=True)
        (4.0, 0.0)
        >>> a, off = av_offset(4.0, 1.0, 10.0, max_offset=2.0, in_sync=False, generator=random.Random(0))
        >>> 1.0 <= abs(off) <= 2.0 and a == 4.0 + off
        True
    """
    video_start = float(video_start)
    if in_sync:
        return video_start, 0.0
    clip_duration = _check("clip_duration", clip_duration, positive=True)
    video_duration = _check("video_duration", video_duration)
    max_offset = _check("max_offset", max_offset)
    min_offset = max_offset / 2.0 if min_offset is None else _check("min_offset", min_offset)
    if min_offset > max_offset:
        raise ValueError(f"min_offset={min_offset} is larger than max_offset={max_offset}")
    last = max(0.0, video_duration - clip_duration)  # latest audio start inside the file
    lo, hi = -video_start, last - video_start  # offsets that keep the window inside
    # Feasible offsets: [min, max] ∩ [lo, hi] (later) and [−max, −min] ∩ [lo, hi] (earlier).
    later = (max(min_offset, lo), min(max_offset, hi))
    earlier = (max(-max_offset, lo), min(-min_offset, hi))
    pieces = [p for p in (earlier, later) if p[1] >= p[0]]
    if pieces:
        lengths = [p[1] - p[0] for p in pieces]
        total = sum(lengths)
        if total > 0:
            u = _uniform(0.0, total, generator)
            for (a, b), length in zip(pieces, lengths):
                if u <= length or (a, b) == pieces[-1]:
                    offset = min(a + u, b)
                    break
                u -= length
        else:  # only isolated points fit: pick one of them
            offset = pieces[0][0] if len(pieces) == 1 or _uniform(0.0, 1.0, generator) < 0.5 else pieces[1][0]
    else:
        magnitude = _uniform(min_offset, max_offset, generator)
        sign = 1.0 if _uniform(0.0, 1.0, generator) < 0.5 else -1.0
        offset = sign * magnitude
    audio_start = min(max(video_start + offset, 0.0), last)
    return audio_start, audio_start - video_start


def frame_times(start: float, duration: float, num_frames: int) -> torch.Tensor:
    """The ``num_frames`` sample times (s) of a window, float64: the centres of equal bins.

    ``t_i = start + (i + 0.5)·duration / num_frames``: frames are spaced ``duration / num_frames``
    apart and sit half a step inside both ends, so K consecutive windows sample a video at one regular
    rate, and a window never samples its exact end (which belongs to the next window). This is the rule
    the decoder uses (:func:`avssl.data.decoding.sample_times`); for each time it takes the frame whose
    presentation interval contains it.

    Example::

        >>> frame_times(1.0, 2.0, 4)
        tensor([1.2500, 1.7500, 2.2500, 2.7500], dtype=torch.float64)
    """
    start = float(start)
    if not math.isfinite(start):
        raise ValueError(f"start must be finite, got {start}")
    duration = _check("duration", duration)
    if int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"num_frames must be an integer >= 1, got {num_frames}")
    num_frames = int(num_frames)
    step = duration / num_frames
    return start + (torch.arange(num_frames, dtype=torch.float64) + 0.5) * step
