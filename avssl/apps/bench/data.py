"""``avssl bench data``: clips/s of decode + augment, avssl vs pytorchvideo, in the same run.

Both pipelines produce the same training sample from the same files: 8 frames sampled over a random
2 s window, short side scaled and randomly cropped to 112², flipped, and the window's 2 s of audio as a
log-mel spectrogram. They share the transform code (avssl's), so the difference is decoding and sampling:

* avssl: :class:`~avssl.data.VideoDataset` (decord for frames by time, PyAV for audio);
* reference: pytorchvideo's ``LabeledVideoDataset`` with its ``EncodedVideo`` PyAV decoder (the one that
  decodes audio), random clip sampler, and a temporal subsample to 8 frames.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch.utils.data import DataLoader

from avssl.apps.bench.base import Benchmark, register
from avssl.apps.options import NON_NEGATIVE_INT, POSITIVE_INT, existing_dir
from avssl.eval.report import Table

CLIP_SECONDS = 2.0
FRAMES = 8
CROP = 112
AUDIO_RATE = 16000


def _avssl_dataset(rows, seed: int = 0):
    from avssl.data import VideoDataset

    return VideoDataset(
        rows,
        num_frames=FRAMES,
        clip_duration=CLIP_SECONDS,
        sampling="random",
        crop_size=CROP,
        audio=True,
        audio_rate=AUDIO_RATE,
        audio_duration=CLIP_SECONDS,
        seed=seed,
    )


class _ReferenceTransform:
    """pytorchvideo sample dict -> the same tensors avssl produces (using avssl's transform code)."""

    def __init__(self) -> None:
        from avssl.data.audio import build_audio_transform
        from avssl.data.transforms import build_video_transform

        self.video = build_video_transform(train=True, crop_size=CROP)
        self.audio = build_audio_transform("logmel", train=True, sample_rate=AUDIO_RATE)

    def __call__(self, sample: Dict[str, Any]) -> Dict[str, Any]:
        video = sample["video"]  # C×T×H×W float 0..255 (every frame of the window)
        t = video.shape[1]
        idx = torch.linspace(0, t - 1, FRAMES).round().long()
        frames = video.index_select(1, idx).permute(1, 2, 3, 0).to(torch.uint8)  # T×H×W×C
        out = {"video": self.video(frames), "label": sample["label"]}
        audio = sample.get("audio")
        if audio is not None:
            wave = audio.float().reshape(1, -1)
            n = int(CLIP_SECONDS * AUDIO_RATE)
            wave = torch.nn.functional.pad(wave[:, :n], (0, max(0, n - wave.shape[1])))
            out["audio"] = self.audio(wave)
        return out


def _reference_dataset(rows):
    from pytorchvideo.data import LabeledVideoDataset, make_clip_sampler

    paths = [(r.path, {"label": max(0, r.label_index or 0)}) for r in rows]
    return LabeledVideoDataset(
        paths,
        clip_sampler=make_clip_sampler("random", CLIP_SECONDS),
        video_sampler=torch.utils.data.RandomSampler,
        transform=_ReferenceTransform(),
        decode_audio=True,
        decoder="pyav",
    )


def _time_loader(dataset, workers: int, n_clips: int, batch_size: int = 4) -> float:
    """Clips/s over ``n_clips`` clips, after a first batch that absorbs start-up (worker fork, codec init)."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)
    it = iter(loader)
    next(it)
    seen = 0
    t0 = time.perf_counter()
    while seen < n_clips:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        seen += batch["video"].shape[0]
    elapsed = time.perf_counter() - t0
    del it
    return seen / elapsed


def _corpus_rows(corpus: Optional[str], n_videos: int, workdir: str):
    from avssl.data import load_rows

    if corpus is None:
        from avssl.apps.synthetic import synthesize

        classes = 4
        corpus_dir = os.path.join(workdir, "corpus")
        synthesize(corpus_dir, classes=classes, per_class=max(1, n_videos // classes), seconds=4.0, size=128, progress=False)
        corpus = os.path.join(corpus_dir, "videos")
    rows = load_rows(corpus)
    return rows[:n_videos] if n_videos else rows


def measure(
    corpus: Optional[str] = None,
    n_videos: int = 24,
    n_clips: int = 48,
    workers: Sequence[int] = (0, 1, 2),
) -> List[Dict[str, Any]]:
    """Measure both pipelines at each worker count; one row per worker count.

    Args:
        corpus: a folder tree, manifest or CSV of videos (default: a generated synthetic corpus).
        n_videos: videos used from the corpus.
        n_clips: clips timed per pipeline and worker count.
        workers: DataLoader worker counts to measure.
    """
    torch.set_num_threads(1)  # one decode thread per worker process, as in a real data loader
    with tempfile.TemporaryDirectory() as tmp:
        rows = _corpus_rows(corpus, n_videos, tmp)
        results: List[Dict[str, Any]] = []
        for w in workers:
            ours = _time_loader(_avssl_dataset(rows), w, n_clips)
            ref = _time_loader(_reference_dataset(rows), w, n_clips)
            results.append(
                {
                    "workers": w,
                    "avssl_clips_per_s": round(ours, 2),
                    "pytorchvideo_clips_per_s": round(ref, 2),
                    "ratio": round(ours / ref, 2),
                    "videos": len(rows),
                    "clips": n_clips,
                }
            )
    return results


@register
class DataBenchmark(Benchmark):
    name = "data"
    help = "clips/s of decode+augment: avssl vs pytorchvideo's LabeledVideoDataset"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--corpus", type=existing_dir, default=None, help="a corpus folder (default: generate one)")
        p.add_argument("--videos", type=POSITIVE_INT, default=24)
        p.add_argument("--clips", type=POSITIVE_INT, default=48, help="clips timed per setting")
        p.add_argument("--workers", type=NON_NEGATIVE_INT, nargs="+", default=[0, 1, 2])

    def run(self, args: argparse.Namespace) -> List[Dict[str, Any]]:
        return measure(corpus=args.corpus, n_videos=args.videos, n_clips=args.clips, workers=args.workers)

    def table(self, rows: Sequence[Dict[str, Any]]) -> Table:
        r0 = rows[0] if rows else {"videos": 0, "clips": 0}
        return Table(
            title=f"decode + augment: {FRAMES}×{CROP}² video + {CLIP_SECONDS:g} s audio (log-mel), "
                  f"{r0['clips']} clips from {r0['videos']} videos",
            columns=["workers", "avssl clips/s", "pytorchvideo clips/s", "ratio"],
            rows=[[str(r["workers"]), f"{r['avssl_clips_per_s']:.1f}", f"{r['pytorchvideo_clips_per_s']:.1f}",
                   f"{r['ratio']:.2f}×"] for r in rows],
            align=["r"] * 4,
        )
