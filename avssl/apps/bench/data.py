"""``avssl bench data``: clips/s of avssl's data loading against the decoder's own floor and against pytorchvideo, all
measured in the same run; with ``--rows``, what building a dataset over a large manifest costs, against the rows
held as objects.

Clips (the default): on a prepared corpus (default: 12 Kinetics-like clips, 10 s at 25 fps, 340×256 with AAC
stereo, generated and put through ``avssl prep --short-side 128 --audio-rate 16000``), every pipeline reads
8 frames of a random 2 s window per clip, the same windows for all, through a DataLoader at 0, 1 and 2 workers:

* decoder floor: a raw ``decord.VideoReader`` opened per clip and ``get_batch`` on exactly the frames avssl reads;
* avssl video: :class:`~avssl.data.VideoDataset` returning the decoded frames (no augmentation), and audio-visual:
  the same with the window's 2 s of sound (from the WAV ``avssl prep`` extracted);
* training sample: avssl's full sample (short side scaled, random 112² crop, flip, log-mel), and pytorchvideo's
  ``LabeledVideoDataset`` with its PyAV ``EncodedVideo`` decoder (audio decoded), random clip sampler and a
  temporal subsample to 8 frames, through the same transform code: the difference is decoding and sampling.

Each rate is the median of ``--reps`` runs, the pipelines taking turns, so that a busy machine slows all alike.

Rows (``--rows N ...``): a synthetic ``avssl prep`` manifest of N rows (Kinetics-like: 400 classes, every column
set, sorted by path) is written, and a fresh process builds a ``VideoDataset`` over it (rows held as columns)
or reads it as a list of ``ManifestRow`` objects, as avssl did before (the reference). Reported: build time
(wall and CPU), the process's resident memory added by the build and its peak, and the private memory of each of
two forked loader workers at the first and at the last batch of an epoch that reads every row (rows held as
objects are copied page by page as the workers touch their reference counts).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from avssl.apps.bench.base import Benchmark, register
from avssl.apps.options import NON_NEGATIVE_INT, POSITIVE_INT, existing_dir
from avssl.eval.report import Table

CLIP_SECONDS = 2.0
FRAMES = 8
CROP = 112
AUDIO_RATE = 16000
MIB = 2.0**20


# -- the corpus ---------------------------------------------------------------------------------------------------
def make_corpus(folder: str, videos: int = 12, seconds: float = 10.0, seed: int = 0) -> str:
    """Kinetics-like clips (``seconds`` long, 25 fps, 340×256 H.264 with AAC stereo at 44.1 kHz: a texture
    drifting over the frame, two tones and noise), prepared with ``avssl prep --short-side 128 --audio-rate
    16000``. Returns the prepared manifest's path."""
    import av

    from avssl.data.prep import prepare

    rng = np.random.default_rng(seed)
    src = os.path.join(folder, "src")
    fps, width, height, rate = 25, 340, 256, 44100
    for i in range(videos):
        path = os.path.join(src, f"class{i % 3}", f"clip{i:02d}.mp4")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        texture = rng.integers(0, 255, (height + 64, width + 64, 3), dtype=np.uint8)
        with av.open(path, "w") as c:
            vs = c.add_stream("libx264", rate=fps)
            vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
            vs.options = {"preset": "veryfast", "crf": "23", "threads": "1"}
            st = c.add_stream("aac", rate=rate)
            st.layout = "stereo"
            for k in range(int(seconds * fps)):
                dx, dy = int(32 + 30 * np.sin(k / 20 + i)), int(32 + 30 * np.cos(k / 17 + i))
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(texture[dy : dy + height, dx : dx + width]),
                                                   format="rgb24")
                frame.pts = k
                c.mux(vs.encode(frame))
            c.mux(vs.encode())
            t = np.arange(int(seconds * rate)) / rate
            sound = np.stack([0.3 * np.sin(2 * np.pi * (220 + 20 * i) * t), 0.3 * np.sin(2 * np.pi * (330 + 10 * i) * t)])
            sound = (sound + 0.05 * rng.standard_normal(sound.shape)).astype(np.float32)
            for s in range(0, sound.shape[1], 1024):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(sound[:, s : s + 1024]), format="fltp",
                                                layout="stereo")
                af.sample_rate, af.pts, af.time_base = rate, s, Fraction(1, rate)
                c.mux(st.encode(af))
            c.mux(st.encode())
    out = os.path.join(folder, "prepared")
    prepare(src, out, short_side=128, audio_rate=AUDIO_RATE, progress=False)
    return os.path.join(out, "manifest.csv")


def _corpus(corpus: Optional[str], videos: int, workdir: str) -> str:
    """The manifest (or folder) the clips are read from: ``corpus``'s ``manifest.csv`` when it has one, the
    folder itself otherwise, or a generated prepared corpus."""
    if corpus is None:
        return make_corpus(os.path.join(workdir, "corpus"), videos=videos)
    manifest = os.path.join(corpus, "manifest.csv")
    return manifest if os.path.isfile(manifest) else corpus


# -- the pipelines ------------------------------------------------------------------------------------------------
def _frames(frames: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    return frames


def _wave(wave: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    return wave


def _decoding(source: Any, audio: bool, seed: int = 0):
    """avssl's dataset returning what it decodes: frames T×H×W×3 (and the window's waveform)."""
    from avssl.data import VideoDataset

    return VideoDataset(source, split=None, num_frames=FRAMES, clip_duration=CLIP_SECONDS, audio=audio,
                        audio_rate=AUDIO_RATE, audio_duration=CLIP_SECONDS, video_transform=_frames,
                        audio_transform=_wave if audio else None, seed=seed)


def _training(source: Any, seed: int = 0):
    """avssl's training sample: augmented frames and a log-mel spectrogram."""
    from avssl.data import VideoDataset

    return VideoDataset(source, split=None, num_frames=FRAMES, clip_duration=CLIP_SECONDS, sampling="random",
                        crop_size=CROP, audio=True, audio_rate=AUDIO_RATE, audio_duration=CLIP_SECONDS, seed=seed)


class DecoderFloor(Dataset):
    """The raw decoder on the frames avssl reads: per item, a ``decord.VideoReader`` and one ``get_batch``."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        import decord

        row = self.dataset.rows[index]
        times = np.concatenate([t for _, _, t in self.dataset.clip_windows(index)])
        reader = decord.VideoReader(row.path, ctx=decord.cpu(0), num_threads=1)
        # At a constant rate the frame shown at t is floor(t·fps), as avssl picks it.
        fps = float(row.fps or reader.get_avg_fps())
        wanted = np.minimum((times * fps + 1e-5).astype(np.int64), len(reader) - 1)
        frames = reader.get_batch(sorted(set(wanted.tolist()))).asnumpy()
        del reader
        return {"video": torch.from_numpy(frames)}


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


def _reference_dataset(rows: Sequence[Any]):
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


def _cpu_seconds(pids: Sequence[int]) -> float:
    """CPU time (user + system) used so far by the processes ``pids``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _time_loader(dataset: Any, workers: int, n_clips: int, batch_size: int = 4) -> Dict[str, float]:
    """Clips/s over ``n_clips`` clips in a shuffled (seeded) order, after a first batch that absorbs start-up
    (worker fork, codec init), and the CPU seconds per clip of the loading processes (the main one and its
    workers): unlike clips/s, that does not change when other programs share the machine."""
    iterable = isinstance(dataset, torch.utils.data.IterableDataset)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=not iterable,
                        generator=None if iterable else torch.Generator().manual_seed(0),
                        persistent_workers=workers > 0)
    it = iter(loader)
    next(it)
    pids = [os.getpid()] + [w.pid for w in getattr(it, "_workers", [])]
    seen = 0
    cpu0, t0 = _cpu_seconds(pids), time.perf_counter()
    while seen < n_clips:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        seen += batch["video"].shape[0]
    elapsed, cpu = time.perf_counter() - t0, _cpu_seconds(pids) - cpu0
    del it, loader
    return {"clips_per_s": seen / elapsed, "cpu_ms_per_clip": 1000.0 * cpu / seen}


def measure(
    corpus: Optional[str] = None,
    n_videos: int = 12,
    n_clips: int = 48,
    workers: Sequence[int] = (0, 1, 2),
    reps: int = 3,
    reference: bool = True,
) -> List[Dict[str, Any]]:
    """Clips/s of every pipeline at each worker count (median of ``reps`` interleaved runs); one row per count.

    Args:
        corpus: a prepared corpus folder (its ``manifest.csv``) or a folder of videos (default: generated).
        n_videos: videos generated (when no corpus is given).
        n_clips: clips timed per pipeline, worker count and run.
        workers: DataLoader worker counts.
        reps: runs per measurement (the median is kept).
        reference: also measure pytorchvideo (and avssl's training sample).
    """
    from avssl.data.decoding import decord_available

    torch.set_num_threads(1)  # one decode thread per worker process, as in a real data loader
    with tempfile.TemporaryDirectory(prefix="avssl-bench-data-") as tmp:
        source = _corpus(corpus, n_videos, tmp)
        video, av = _decoding(source, audio=False), _decoding(source, audio=True)
        pipelines: Dict[str, Any] = {"video": video, "av": av}
        if decord_available():
            pipelines["floor"] = DecoderFloor(video)
        if reference:
            pipelines["train"] = _training(source)
            pipelines["pytorchvideo"] = _reference_dataset(video.rows)
        for dataset in pipelines.values():  # first reads (page cache, codec tables, imports) are not timed
            _time_loader(dataset, 0, 8)
        results: List[Dict[str, Any]] = []
        for w in workers:
            runs: Dict[str, List[Dict[str, float]]] = {name: [] for name in pipelines}
            for _ in range(reps):
                for name, dataset in pipelines.items():
                    runs[name].append(_time_loader(dataset, w, n_clips))
            rate = {name: statistics.median(m["clips_per_s"] for m in r) for name, r in runs.items()}
            cpu = {name: statistics.median(m["cpu_ms_per_clip"] for m in r) for name, r in runs.items()}
            floor = rate.get("floor")
            row: Dict[str, Any] = {
                "mode": "clips", "workers": w, "videos": len(video), "clips": n_clips, "reps": reps,
                "backend": video.backend,
                "floor_clips_per_s": round(floor, 2) if floor else None,
                "video_clips_per_s": round(rate["video"], 2),
                "av_clips_per_s": round(rate["av"], 2),
                "video_vs_floor": round(rate["video"] / floor, 3) if floor else None,
                "av_vs_video": round(rate["av"] / rate["video"], 3),
                "av_vs_floor": round(rate["av"] / floor, 3) if floor else None,
                **{f"{name}_cpu_ms_per_clip": round(ms, 2) for name, ms in cpu.items()},
                # The same ratios by CPU time per clip (clips per CPU second).
                "video_vs_floor_cpu": round(cpu["floor"] / cpu["video"], 3) if floor else None,
                "av_vs_video_cpu": round(cpu["video"] / cpu["av"], 3),
            }
            if reference:
                row.update(train_clips_per_s=round(rate["train"], 2),
                           pytorchvideo_clips_per_s=round(rate["pytorchvideo"], 2),
                           ratio=round(rate["train"] / rate["pytorchvideo"], 2),
                           ratio_cpu=round(cpu["pytorchvideo"] / cpu["train"], 2))
            results.append(row)
    return results


# -- rows: building a dataset over a large manifest ----------------------------------------------------------------
def write_large_manifest(path: str, rows: int, seed: int = 0) -> None:
    """A synthetic ``avssl prep`` manifest of ``rows`` Kinetics-like rows (400 classes, every column set, sorted
    by path), whose first row is a real 4-frame video next to it (so that a dataset over it finds a file)."""
    import av

    folder = os.path.dirname(os.path.abspath(path))
    real = os.path.join(folder, "videos", "train", "aaa", "real.mp4")
    os.makedirs(os.path.dirname(real), exist_ok=True)
    with av.open(real, "w") as c:
        vs = c.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        for k in range(4):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * k, np.uint8), format="rgb24")
            frame.pts = k
            c.mux(vs.encode(frame))
        c.mux(vs.encode())
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
    lines = []
    for _ in range(rows - 1):
        label = rng.randrange(400)
        split = "train" if rng.random() < 0.9 else "val"
        t0 = rng.randrange(300)
        stem = f"{''.join(rng.choices(alphabet, k=11))}_{t0:06d}_{t0 + 10:06d}"
        where = f"{split}/class_{label:03d}"
        lines.append(f"videos/{where}/{stem}.mp4,class_{label:03d},{label},{split},{rng.uniform(9.5, 10.0)!r},25.0,"
                     f"{rng.choice((170, 227, 128))},128,250,true,44100,audio/{where}/{stem}.wav,"
                     f"/data/kinetics/{where}/{stem}.mp4,{t0}.0,{t0 + 10}.0")
    lines.sort()
    from avssl.data.manifest import COLUMNS

    with open(path, "w", encoding="utf-8") as f:
        f.write(",".join(COLUMNS) + "\n")
        f.write("videos/train/aaa/real.mp4,aaa,0,train,0.4,10.0,64,48,4,false,,,,,\n")
        f.write("\n".join(lines) + "\n")


def _private_mib() -> float:
    """This process's private memory (MiB): pages only it holds, copies of shared ones included."""
    with open("/proc/self/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith(("Private_Clean", "Private_Dirty"))) / 1024


def _resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


class _TouchRows(Dataset):
    """An epoch that reads every row, as a loader's workers do, without decoding: each batch reports the worker's
    private memory when it was made."""

    def __init__(self, rows: Sequence[Any]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> int:
        return len(self.rows[index].path)


def _collate_memory(items: List[int]) -> Dict[str, Any]:
    info = torch.utils.data.get_worker_info()
    return {"worker": info.id if info else -1, "private_mib": _private_mib(), "n": len(items)}


def _rows_as_objects(manifest: str) -> List[Any]:
    """The manifest as a list of ManifestRow objects, read cell by cell with the csv module (avssl's reader
    before columnar manifests)."""
    import csv

    from avssl.data.manifest import COLUMNS, _PATH_COLUMNS, ManifestRow, _parse_cell

    base = os.path.dirname(os.path.abspath(manifest))
    rows = []
    with open(manifest, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader)]
        known = [(i, h) for i, h in enumerate(header) if h in COLUMNS]
        for cells in reader:
            values = {h: _parse_cell(h, cells[i], manifest, reader.line_num) for i, h in known}
            for col in _PATH_COLUMNS:
                if values.get(col):
                    values[col] = os.path.normpath(os.path.join(base, str(values[col])))
            rows.append(ManifestRow(**values))
    return rows


def rows_child(manifest: str, held_as: str, workers: int) -> Dict[str, Any]:
    """In a fresh process: build the dataset (``columns``) or the list of rows (``objects``) over ``manifest``,
    then run an epoch reading every row with ``workers`` forked loader workers."""
    import avssl.data.transforms  # noqa: F401  (imported before timing: the build is what is measured)
    from avssl.data import VideoDataset

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # restart the peak (VmHWM) here: imports are not the build
    before = _resident_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    if held_as == "columns":
        rows: Sequence[Any] = VideoDataset(manifest, split=None, audio=False).rows
    else:
        rows = _rows_as_objects(manifest)
    build_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    added = _resident_mib() - before
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024 - before
    first: Dict[int, float] = {}
    last: Dict[int, float] = {}
    loader = DataLoader(_TouchRows(rows), batch_size=4096, num_workers=workers, collate_fn=_collate_memory)
    for batch in loader:
        first.setdefault(batch["worker"], batch["private_mib"])
        last[batch["worker"]] = batch["private_mib"]
    return {"build_s": build_s, "build_cpu_s": cpu_s, "memory_mib": added, "peak_mib": peak,
            "worker_start_mib": max(first.values()), "worker_end_mib": max(last.values())}


def measure_rows(sizes: Sequence[int], reference: bool = True, workers: int = 2) -> List[Dict[str, Any]]:
    """Build cost and worker memory for each manifest size, each in a fresh process; one row per size and way of
    holding the rows."""
    results: List[Dict[str, Any]] = []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(os.path.dirname(here)))  # the checkout avssl is imported from
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="avssl-bench-rows-") as tmp:
        for n in sizes:
            manifest = os.path.join(tmp, f"m{n}", "manifest.csv")
            os.makedirs(os.path.dirname(manifest))
            write_large_manifest(manifest, n)
            for held_as in ("columns", "objects") if reference else ("columns",):
                code = (f"import json; from avssl.apps.bench.data import rows_child; "
                        f"print(json.dumps(rows_child({manifest!r}, {held_as!r}, {workers})))")
                done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
                if done.returncode:
                    raise RuntimeError(f"measuring {held_as} over {n} rows failed:\n{done.stderr[-2000:]}")
                got = json.loads(done.stdout.strip().splitlines()[-1])
                results.append({"mode": "rows", "rows": n, "held_as": held_as, "workers": workers,
                                **{k: round(v, 2) for k, v in got.items()}})
    return results


@register
class DataBenchmark(Benchmark):
    name = "data"
    help = ("clips/s of avssl's loading against the decoder's floor and pytorchvideo; --rows: dataset build time "
            "and memory over a large manifest")

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--corpus", type=existing_dir, default=None,
                       help="a prepared corpus folder (its manifest.csv) or a folder of videos (default: generate "
                            "12 Kinetics-like clips and prepare them)")
        p.add_argument("--videos", type=POSITIVE_INT, default=12, help="videos to generate (without --corpus)")
        p.add_argument("--clips", type=POSITIVE_INT, default=48, help="clips timed per setting and run")
        p.add_argument("--workers", type=NON_NEGATIVE_INT, nargs="+", default=[0, 1, 2])
        p.add_argument("--reps", type=POSITIVE_INT, default=3, help="runs per measurement (the median is kept)")
        p.add_argument("--no-reference", action="store_true",
                       help="skip pytorchvideo and avssl's training sample (clips), or the rows held as objects (--rows)")
        p.add_argument("--rows", type=POSITIVE_INT, nargs="+", default=None, metavar="N",
                       help="instead: build a dataset over synthetic manifests of N rows (e.g. 240000 1800000)")

    def run(self, args: argparse.Namespace) -> List[Dict[str, Any]]:
        if args.rows:
            return measure_rows(args.rows, reference=not args.no_reference)
        return measure(corpus=args.corpus, n_videos=args.videos, n_clips=args.clips, workers=args.workers,
                       reps=args.reps, reference=not args.no_reference)

    def table(self, rows: Sequence[Dict[str, Any]]) -> Table:
        if rows and rows[0].get("mode") == "rows":
            return _rows_table(rows)
        return _clips_table(rows)


def _times(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:.2f}×"


def _rate(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:.1f}"


def _clips_table(rows: Sequence[Dict[str, Any]]) -> Table:
    r0 = rows[0] if rows else {"videos": 0, "clips": 0, "reps": 0, "backend": "?"}
    reference = bool(rows) and "ratio" in rows[0]
    columns = ["workers", "decoder floor", "video", "video ÷ floor", "audio-visual", "AV ÷ video"]
    if reference:
        columns += ["training sample", "pytorchvideo", "ratio"]
    cells = []
    for r in rows:
        row = [str(r["workers"]), _rate(r["floor_clips_per_s"]), _rate(r["video_clips_per_s"]),
               _times(r["video_vs_floor"]), _rate(r["av_clips_per_s"]), _times(r["av_vs_video"])]
        if reference:
            row += [_rate(r["train_clips_per_s"]), _rate(r["pytorchvideo_clips_per_s"]), _times(r["ratio"])]
        cells.append(row)
    return Table(
        title=f"clips/s: {FRAMES} frames of a random {CLIP_SECONDS:g} s window (+ its sound) from {r0['videos']} "
              f"prepared videos, {r0['clips']} clips, median of {r0['reps']} runs ({r0['backend']})",
        columns=columns, rows=cells, align=["r"] * len(columns),
        caption="decoder floor: raw decord on the same frames; video / audio-visual: avssl's VideoDataset returning "
                "the decoded frames (and 2 s of 16 kHz sound)" + (
                    "; training sample: avssl's augmented clip + log-mel, against pytorchvideo's LabeledVideoDataset "
                    "with the same transforms" if reference else ""),
        notes=[_cpu_note(r) for r in rows],
    )


def _cpu_note(r: Dict[str, Any]) -> str:
    """The row's ratios by CPU time per clip, which a busy machine does not move."""
    parts = [f"{r['workers']} workers, CPU ms per clip:"]
    for name, label in (("floor", "floor"), ("video", "video"), ("av", "audio-visual"), ("train", "training sample"),
                        ("pytorchvideo", "pytorchvideo")):
        if f"{name}_cpu_ms_per_clip" in r:
            parts.append(f"{label} {r[f'{name}_cpu_ms_per_clip']:.1f}")
    ratios = [f"video ÷ floor {_times(r['video_vs_floor_cpu'])}", f"AV ÷ video {_times(r['av_vs_video_cpu'])}"]
    if "ratio_cpu" in r:
        ratios.append(f"ratio {_times(r['ratio_cpu'])}")
    return " ".join(parts[:1]) + " " + ", ".join(parts[1:]) + " (by CPU: " + ", ".join(ratios) + ")"


def _rows_table(rows: Sequence[Dict[str, Any]]) -> Table:
    held = {"columns": "columns (avssl)", "objects": "ManifestRow objects"}
    cells = [[f"{r['rows']:,}", held[r["held_as"]], f"{r['build_s']:.2f}", f"{r['build_cpu_s']:.2f}",
              f"{r['memory_mib']:.0f}", f"{r['peak_mib']:.0f}",
              f"{r['worker_start_mib']:.0f} → {r['worker_end_mib']:.0f}"] for r in rows]
    workers = rows[0]["workers"] if rows else 2
    return Table(
        title="building a VideoDataset over a synthetic manifest (Kinetics-like, every column), in a fresh process",
        columns=["rows", "held as", "build s", "CPU s", "MiB per process", "peak MiB",
                 f"worker MiB, epoch start → end ({workers} workers)"],
        rows=cells, align=["r", "l", "r", "r", "r", "r", "r"],
        caption="MiB per process: resident memory the build added (peak: the most it added while building); worker "
                "MiB: a forked loader worker's private memory at its first and last batch of an epoch reading every "
                "row (the most of the workers)",
    )
