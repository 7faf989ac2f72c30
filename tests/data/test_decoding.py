"""Decoding: frame choice by time, audio, clamping, and errors on broken files."""
from __future__ import annotations

import gc
import os
import resource

import numpy as np
import pytest
import torch

import media
from avssl.data import DecodeError, probe, read_clip
from avssl.data import decoding
from avssl.data.decoding import read_audio

BACKENDS = ["decord", "pyav"]


def codes(clip) -> list[int]:
    return [media.read_code(f.numpy()) for f in clip.video]


def expected_codes(start: float, duration: float, num_frames: int, frame_starts) -> list[int]:
    """Independent statement of the rule: frame i is shown during [t_i, t_{i+1})."""
    times = [start + (k + 0.5) * duration / num_frames for k in range(num_frames)]
    out = []
    for t in times:
        i = max(j for j, s in enumerate(frame_starts) if s <= t + 1e-9)
        out.append(i)
    return out


def test_probe_good_file(media_dir):
    info = probe(media_dir / "good.mp4")
    assert info["duration"] == pytest.approx(4.0, abs=1e-6)
    assert info["fps"] == pytest.approx(10.0)
    assert (info["width"], info["height"]) == (64, 48)
    assert info["num_frames"] == 40
    assert info["has_audio"] is True and info["audio_rate"] == 16000
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "name,fps,n,start,duration,T",
    [
        ("good.mp4", 10, 40, 1.0, 2.0, 8),
        ("good.mp4", 10, 40, 0.0, 4.0, 40),  # every frame exactly once
        ("fps30.mp4", 30, 45, 0.2, 1.0, 8),
        ("fps7.mp4", 7, 14, 0.5, 1.2, 5),
    ],
)
def test_frames_are_chosen_by_time(media_dir, backend, name, fps, n, start, duration, T):
    clip = read_clip(media_dir / name, start=start, duration=duration, num_frames=T, audio=False, backend=backend)
    assert clip.video.shape == (T, 48, 64, 3) and clip.video.dtype == torch.uint8
    frame_starts = [round(i / fps, 3) for i in range(n)]  # the writer stores times in ms
    want = expected_codes(start, duration, T, frame_starts)
    assert codes(clip) == want
    assert torch.allclose(clip.frame_times, torch.tensor([frame_starts[i] for i in want], dtype=torch.float64), atol=1e-4)
    assert clip.fps == pytest.approx(fps, rel=1e-3)
    assert (clip.start, clip.duration) == (pytest.approx(start), pytest.approx(duration))


@pytest.mark.parametrize("backend", BACKENDS)
def test_variable_frame_rate(media_dir, backend):
    info = probe(media_dir / "vfr.mp4")
    assert info["num_frames"] == len(media.VFR_TIMES)
    clip = read_clip(media_dir / "vfr.mp4", start=0.0, duration=2.0, num_frames=10, backend=backend)
    assert codes(clip) == expected_codes(0.0, 2.0, 10, media.VFR_TIMES)
    assert clip.audio is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_window_past_the_end_is_clamped(media_dir, backend):
    clip = read_clip(media_dir / "good.mp4", start=3.5, duration=2.0, num_frames=4, backend=backend)
    assert clip.start == pytest.approx(2.0) and clip.duration == pytest.approx(2.0)
    assert codes(clip) == expected_codes(2.0, 2.0, 4, [i / 10 for i in range(40)])
    assert clip.audio.shape == (1, 32000)
    longer = read_clip(media_dir / "good.mp4", start=-1.0, duration=10.0, num_frames=4, backend=backend)
    assert (longer.start, longer.duration) == (0.0, pytest.approx(4.0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_frame_video_repeats_its_frame(media_dir, backend):
    clip = read_clip(media_dir / "one.mp4", start=0.0, duration=2.0, num_frames=4, backend=backend)
    assert clip.video.shape[0] == 4 and codes(clip) == [0, 0, 0, 0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_odd_frame_size(media_dir, backend):
    info = probe(media_dir / "odd.mp4")
    assert (info["width"], info["height"]) == (63, 47)
    clip = read_clip(media_dir / "odd.mp4", 0.0, 2.0, 4, backend=backend)
    assert clip.video.shape == (4, 47, 63, 3)
    assert codes(clip) == expected_codes(0.0, 2.0, 4, [i / 10 for i in range(20)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_ffmpeg_avi(media_dir, backend):
    info = probe(media_dir / "ffmpeg.avi")
    assert info["video_codec"] == "mpeg4" and info["has_audio"] and info["num_frames"] == 30
    clip = read_clip(media_dir / "ffmpeg.avi", 0.0, 1.2, 6, audio_rate=16000, backend=backend)
    assert clip.video.shape == (6, 48, 64, 3) and clip.audio.shape == (1, 19200)
    assert clip.frame_times.tolist() == pytest.approx([0.08, 0.28, 0.48, 0.68, 0.88, 1.08], abs=1e-6)


def test_audio_tone_rate_and_level(media_dir):
    clip = read_clip(media_dir / "good.mp4", start=1.0, duration=2.0, num_frames=2, audio_rate=16000)
    wave = clip.audio
    assert wave.shape == (1, 32000) and wave.dtype == torch.float32
    assert clip.audio_rate == 16000
    spectrum = torch.fft.rfft(wave[0]).abs()
    peak_hz = spectrum.argmax().item() * 16000 / 32000
    assert peak_hz == pytest.approx(440, abs=2)
    rms = wave.pow(2).mean().sqrt().item()
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.05)  # a 0.5-amplitude sine
    resampled = read_clip(media_dir / "good.mp4", 1.0, 2.0, 2, audio_rate=8000).audio
    assert resampled.shape == (1, 16000)
    peak8 = torch.fft.rfft(resampled[0]).abs().argmax().item() * 8000 / 16000
    assert peak8 == pytest.approx(440, abs=2)


@pytest.mark.parametrize("start", [0.0, 1.0, 2.0])
def test_audio_is_aligned_with_the_window(media_dir, start):
    """Bursts written at known times appear at those times relative to the window start."""
    rate = 16000
    wave = read_audio(media_dir / "clicks.mp4", start=start, duration=2.0, rate=rate)[0]
    env = wave.abs().unfold(0, 80, 80).amax(dim=1)  # 5 ms envelope
    onsets = [(i * 80) / rate for i in range(1, len(env)) if env[i] > 0.3 and env[i - 1] <= 0.3]
    want = [c - start for c in media.CLICK_TIMES if 0 <= c - start < 2.0 - 0.01]
    assert len(onsets) == len(want)
    for got, exp in zip(onsets, want):
        assert got == pytest.approx(exp, abs=0.006)


def test_no_audio_track_gives_none(media_dir):
    info = probe(media_dir / "noaudio.mp4")
    assert info["has_audio"] is False and info["audio_rate"] is None
    clip = read_clip(media_dir / "noaudio.mp4", 0.0, 1.0, 4, audio=True)
    assert clip.audio is None and clip.audio_rate is None
    assert read_audio(media_dir / "noaudio.mp4", 0.0, 1.0) is None


@pytest.mark.parametrize(
    "name,reason",
    [
        ("missing.mp4", "not found"),
        ("empty.mp4", "empty"),
        ("text.mp4", "not a readable media file"),
        ("truncated.mp4", "not a readable media file"),
        ("truncated_faststart.mp4", "truncated"),
        ("audio_only.m4a", "no video stream"),
    ],
)
def test_broken_files_raise_decode_error_naming_the_path(media_dir, name, reason):
    path = str(media_dir / name)
    with pytest.raises(DecodeError) as err:
        probe(path)
    assert path in str(err.value) and reason in err.value.reason
    assert err.value.path == path
    with pytest.raises(DecodeError, match=name):
        read_clip(path, 0.0, 1.0, 4)


def test_decode_error_survives_pickling():
    import pickle

    e = pickle.loads(pickle.dumps(DecodeError("/x.mp4", "bad")))
    assert (e.path, e.reason) == ("/x.mp4", "bad") and "/x.mp4" in str(e)


def test_decord_failure_falls_back_to_pyav(media_dir, monkeypatch):
    def broken(*a, **k):
        raise DecodeError("x", "decord cannot")

    ref = read_clip(media_dir / "good.mp4", 0.5, 1.0, 4, backend="pyav")
    monkeypatch.setattr(decoding, "_read_video_decord", broken)
    clip = read_clip(media_dir / "good.mp4", 0.5, 1.0, 4, backend="decord")
    assert torch.equal(clip.video, ref.video)


def test_bad_arguments(media_dir):
    with pytest.raises(ValueError, match="backend"):
        read_clip(media_dir / "good.mp4", backend="opencv")
    with pytest.raises(ValueError, match="num_frames"):
        read_clip(media_dir / "good.mp4", num_frames=0)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_memory_growth_over_many_clips(media_dir, backend):
    path = str(media_dir / "good.mp4")
    info = probe(path)
    for _ in range(50):  # warm-up: allocator pools, codec tables
        read_clip(path, 0.5, 1.0, 8, info=info, backend=backend)
    gc.collect()
    before = _rss_mb()
    for i in range(600):
        read_clip(path, (i % 20) * 0.1, 1.0, 8, info=info, backend=backend)
    gc.collect()
    growth = _rss_mb() - before
    # A leak of the decoded frames (8×48×64×3 B) or of a reader per call would add well over 20 MB.
    assert growth < 20, f"RSS grew by {growth:.1f} MB over 600 clips"
