"""Shared fixtures: small media files (good and broken) generated once per test session."""
from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
import media  # noqa: E402

# One intra-op thread: the tests' tiny tensors gain nothing from more, and OpenMP threads spinning
# for a busy core make them several times slower on a shared machine.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory):
    """A folder of generated media: good files and every kind of broken one.

    good.mp4: 40 frames at 10 fps (4 s), 64×48, 440 Hz tone at 16 kHz
    fps30.mp4: 45 frames at 30 fps; fps7.mp4: 14 frames at 7 fps
    noaudio.mp4: 20 frames, no audio track
    vfr.mp4: variable frame rate (frame times in VFR_TIMES), no audio
    odd.mp4: 63×47 (MPEG-4 Part 2, which allows odd sizes)
    one.mp4: a single frame
    clicks.mp4: audio bursts at CLICK_TIMES
    truncated.mp4: first half of good.mp4 (index at the end, so it is lost)
    truncated_faststart.mp4: first half of a faststart copy (index survives, data does not)
    ffmpeg.avi: MPEG-4 + MP3 in AVI written by the ffmpeg binary (UCF/HMDB-style container)
    text.mp4: a text file; empty.mp4: zero bytes; audio_only.m4a: AAC without video
    """
    d = tmp_path_factory.mktemp("media")
    p = lambda name: str(d / name)  # noqa: E731
    media.write_video(p("good.mp4"), num_frames=40, fps=10)
    media.write_video(p("fps30.mp4"), num_frames=45, fps=30)
    media.write_video(p("fps7.mp4"), num_frames=14, fps=7)
    media.write_video(p("noaudio.mp4"), num_frames=20, fps=10, audio=False)
    media.write_video(p("vfr.mp4"), frame_times=media.VFR_TIMES, audio=False)
    media.write_video(p("odd.mp4"), num_frames=20, fps=10, width=63, height=47, codec="mpeg4")
    media.write_video(p("one.mp4"), num_frames=1, fps=10)
    media.write_video(p("clicks.mp4"), num_frames=40, fps=10, clicks=media.CLICK_TIMES)
    media.truncate(p("good.mp4"), p("truncated.mp4"), 0.5)
    media.write_video(p("fs.mp4"), num_frames=40, fps=10, faststart=True)
    media.truncate(p("fs.mp4"), p("truncated_faststart.mp4"), 0.5)
    os.remove(p("fs.mp4"))
    with open(p("text.mp4"), "w") as f:
        f.write("this is not a video\n" * 20)
    open(p("empty.mp4"), "wb").close()
    media.write_audio_only(p("audio_only.m4a"))
    media.write_avi_with_ffmpeg(p("ffmpeg.avi"))
    return d


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory):
    """A small synthetic corpus: 4 classes × 8 videos × 2 s at 64², 6 train / 2 val per class."""
    from avssl.apps.synthetic import synthesize

    out = tmp_path_factory.mktemp("synth")
    synthesize(str(out), classes=4, per_class=8, seconds=2.0, size=64, seed=0, val_fraction=0.25,
               workers=2, progress=False)
    return out


