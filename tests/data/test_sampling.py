"""Clip sampling: window starts, ordered runs, audio offsets, frame times."""
from __future__ import annotations

import random

import pytest
import torch

from avssl.data import decoding
from avssl.data.sampling import av_offset, frame_times, ordered_clips, random_clip, uniform_clips


def test_random_clip_always_inside_and_covers_the_range():
    g = torch.Generator().manual_seed(0)
    starts = [random_clip(10.0, 2.5, g) for _ in range(500)]
    assert all(0.0 <= s <= 7.5 for s in starts)
    assert min(starts) < 0.5 and max(starts) > 7.0  # spread over the whole range, not stuck
    assert random_clip(2.0, 3.0, g) == 0.0 and random_clip(3.0, 3.0, g) == 0.0


def test_random_clip_is_reproducible_with_either_generator_kind():
    a = [random_clip(10.0, 1.0, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert a[0] == a[1]
    r1, r2 = random.Random(3), random.Random(3)
    assert [random_clip(10.0, 1.0, r1) for _ in range(5)] == [random_clip(10.0, 1.0, r2) for _ in range(5)]


def test_uniform_clips_endpoints_and_equal_spacing():
    starts = uniform_clips(10.0, 2.0, 5)
    assert starts == pytest.approx([0.0, 2.0, 4.0, 6.0, 8.0])
    starts = uniform_clips(7.3, 1.1, 10)
    assert len(starts) == 10 and starts[0] == 0.0 and starts[-1] + 1.1 == pytest.approx(7.3)
    steps = [b - a for a, b in zip(starts, starts[1:])]
    assert steps == pytest.approx([(7.3 - 1.1) / 9] * 9)
    assert uniform_clips(10.0, 2.0, 1) == [4.0]  # centred
    assert uniform_clips(1.0, 2.0, 3) == [0.0, 0.0, 0.0]  # clip longer than the video


def test_ordered_clips_order_gaps_and_fit():
    g = torch.Generator().manual_seed(1)
    for _ in range(100):
        starts = ordered_clips(10.0, 1.0, 4, gap=0.5, generator=g)
        assert len(starts) == 4 and starts[0] >= 0.0 and starts[-1] + 1.0 <= 10.0 + 1e-9
        assert [b - a for a, b in zip(starts, starts[1:])] == pytest.approx([1.5] * 3)
    assert ordered_clips(4.0, 1.0, 3, gap=0.5) == pytest.approx([0.0, 1.5, 3.0])  # fits exactly
    assert 0.0 <= ordered_clips(5.0, 1.0, 1)[0] <= 4.0


def test_ordered_clips_error_message_says_what_does_not_fit():
    with pytest.raises(ValueError, match=r"3 clips of 1 s with 0.5 s gaps need 4 s, but the video lasts 3.9 s"):
        ordered_clips(3.9, 1.0, 3, gap=0.5)
    with pytest.raises(ValueError, match="gap"):
        ordered_clips(10.0, 1.0, 3, gap=-1.0)
    with pytest.raises(ValueError, match="n must be"):
        ordered_clips(10.0, 1.0, 0)


def test_av_offset_in_sync_is_the_same_start():
    assert av_offset(3.25, 1.0, 10.0, max_offset=2.0, in_sync=True) == (3.25, 0.0)


def test_av_offset_out_of_sync_within_bounds_and_inside_the_file():
    g = torch.Generator().manual_seed(2)
    signs = set()
    for video_start in (0.0, 0.3, 2.0, 5.0, 8.7, 9.0):
        for _ in range(50):
            a, off = av_offset(video_start, 1.0, 10.0, max_offset=2.0, min_offset=0.5, in_sync=False, generator=g)
            assert 0.5 - 1e-12 <= abs(off) <= 2.0 + 1e-12
            assert 0.0 <= a <= 9.0 and a == pytest.approx(video_start + off)
            signs.add(off > 0)
    assert signs == {True, False}
    # At the start of the file only later audio fits; at the end only earlier.
    assert all(av_offset(0.0, 1.0, 10.0, 2.0, False, generator=g)[1] > 0 for _ in range(20))
    assert all(av_offset(9.0, 1.0, 10.0, 2.0, False, generator=g)[1] < 0 for _ in range(20))


def test_av_offset_default_min_is_half_max_and_short_files_clamp():
    g = random.Random(0)
    offs = [av_offset(5.0, 1.0, 20.0, max_offset=3.0, in_sync=False, generator=g)[1] for _ in range(200)]
    assert min(abs(o) for o in offs) >= 1.5 and max(abs(o) for o in offs) <= 3.0
    # 1.2 s file, 1 s window: no offset of >= 0.5 s fits, so the shift is clamped into the file.
    for _ in range(20):
        a, off = av_offset(0.1, 1.0, 1.2, max_offset=1.0, min_offset=0.5, in_sync=False, generator=g)
        assert 0.0 <= a <= 0.2 + 1e-12 and off == pytest.approx(a - 0.1)
    with pytest.raises(ValueError, match="min_offset"):
        av_offset(0.0, 1.0, 10.0, max_offset=0.5, min_offset=1.0, in_sync=False)


def test_frame_times_count_spacing_and_decoder_agreement():
    t = frame_times(1.0, 2.0, 8)
    assert t.dtype == torch.float64 and t.shape == (8,)
    torch.testing.assert_close(t[1:] - t[:-1], torch.full((7,), 0.25, dtype=torch.float64))
    assert float(t[0]) == 1.125 and float(t[-1]) == 2.875  # centres: half a step inside each end
    # consecutive windows sample one regular grid
    both = torch.cat([frame_times(0.0, 1.0, 4), frame_times(1.0, 1.0, 4)])
    torch.testing.assert_close(both[1:] - both[:-1], torch.full((7,), 0.25, dtype=torch.float64))
    # same rule as the decoder
    torch.testing.assert_close(t, torch.from_numpy(decoding.sample_times(1.0, 2.0, 8)))
    with pytest.raises(ValueError, match="num_frames"):
        frame_times(0.0, 1.0, 0)


def test_bad_durations_name_the_argument():
    with pytest.raises(ValueError, match="clip_duration"):
        random_clip(10.0, 0.0)
    with pytest.raises(ValueError, match="video_duration"):
        uniform_clips(float("nan"), 1.0, 3)
    with pytest.raises(ValueError, match="k must be"):
        uniform_clips(10.0, 1.0, 0)
