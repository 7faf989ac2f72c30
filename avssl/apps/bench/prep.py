"""``avssl bench prep``: videos/s of ``avssl prep`` against one ffmpeg process per file, in the same run.

Both sides get the same generated corpus, the same number of parallel jobs and the same threads per
job, and do the same work per file: scale the short side to ``short_side`` (bicubic, even sizes),
encode H.264 (libx264, yuv420p, crf 23, preset veryfast) and AAC.

* avssl: :func:`avssl.data.prep.prepare` (PyAV in worker processes), once as used (also extracting a
  mono wav, probing every input and output and writing the manifest) and once without audio extraction;
* reference: ``ffmpeg -i IN -vf scale=… -c:v libx264 … -c:a aac OUT`` launched per file from a pool of
  threads (the static binary of ``imageio-ffmpeg``).
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Tuple

from avssl.apps.bench.base import Benchmark, register
from avssl.apps.options import NON_NEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT, int_at_least
from avssl.eval.report import Table

AUDIO_RATE = 44100  # sources carry CD-rate audio, as downloaded corpora do


def make_corpus(root: str, n_videos: int, seconds: float, size: int, workers: int) -> str:
    """A folder-per-class corpus of ``n_videos`` synthetic clips (4 classes, CD-rate audio); returns the
    folder of class folders."""
    from avssl.apps.synthetic import synthesize

    classes = 4
    synthesize(root, classes=classes, per_class=max(1, -(-n_videos // classes)), seconds=seconds, size=size,
               audio_rate=AUDIO_RATE, workers=workers, progress=False)
    return os.path.join(root, "videos")


def _videos(root: str) -> List[str]:
    return sorted(
        os.path.join(d, n) for d, _, names in os.walk(root) for n in names if n.endswith(".mp4") and not n.startswith(".")
    )


def _cpu_children() -> float:
    """CPU seconds (user + system) of this process's finished children (ffmpeg runs, prep workers)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _ffmpeg_per_file(src: str, out: str, short_side: int, workers: int, threads: int) -> float:
    """Seconds to convert every video with one ffmpeg process per file, ``workers`` at a time."""
    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    s = short_side
    # -2: the other side keeps the aspect ratio, rounded to an even size (as avssl does).
    scale = f"scale='if(gt(iw,ih),-2,{s})':'if(gt(iw,ih),{s},-2)':flags=bicubic"

    def one(path: str) -> None:
        dst = os.path.join(out, os.path.relpath(path, src))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        cmd = [
            exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
            "-threads", str(threads), "-i", path,
            "-vf", scale, "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-threads", str(threads), dst,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg failed on {path}: {proc.stderr.strip()[-500:]}")

    files = _videos(src)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, files))
    return time.perf_counter() - t0


def _sizes(root: str) -> List[str]:
    from avssl.data.decoding import probe

    return sorted({f"{i['width']}×{i['height']}" for i in (probe(p) for p in _videos(root))})


def measure(
    n_videos: int = 24,
    seconds: float = 4.0,
    size: int = 256,
    short_side: int = 128,
    workers: Optional[int] = None,
    repeats: int = 3,
) -> List[Dict[str, Any]]:
    """Time both sides on a generated corpus; one row per pipeline.

    Args:
        n_videos: clips in the corpus (4 classes).
        seconds: length of each clip (25 fps, 44.1 kHz AAC).
        size: source frame size (:func:`avssl.apps.synthetic.synthesize` draws square frames).
        short_side: output short side.
        workers: parallel jobs on both sides (default: the CPUs this process may use).
        repeats: rounds over the three pipelines; each keeps its fastest round (and that round's CPU).
    """
    from avssl.data.prep import default_workers, prepare

    workers = workers or default_workers()
    threads = max(1, default_workers() // workers)
    with tempfile.TemporaryDirectory() as tmp:
        src = make_corpus(os.path.join(tmp, "corpus"), n_videos, seconds, size, workers)
        n = len(_videos(src))
        sizes: Dict[str, List[str]] = {}
        pipelines = [
            ("avssl prep (mp4 + wav + probes + manifest)", "wav"),
            ("avssl prep (mp4 only)", None),
            ("ffmpeg per file (reference)", "ffmpeg"),
        ]
        best: Dict[str, Tuple[float, float]] = {}  # name -> (seconds, CPU seconds) of its fastest round
        for r in range(repeats):
            # Each round starts with another pipeline, so that warm-up and load from elsewhere hit all alike.
            for name, kind in pipelines[r % 3 :] + pipelines[: r % 3]:
                folder = os.path.join(tmp, f"{kind or 'mp4'}_{r}")
                c0, t0 = _cpu_children() + _cpu_self(), time.perf_counter()
                if kind == "ffmpeg":
                    _ffmpeg_per_file(src, folder, short_side, workers, threads)
                else:
                    rep = prepare(src, folder, short_side=short_side, audio_format=kind, workers=workers, progress=False)
                    if rep["counts"]["bad"]:
                        raise RuntimeError(f"{name}: {rep['counts']['bad']} files failed: {rep['bad_files'][:3]}")
                secs, cpu = time.perf_counter() - t0, _cpu_children() + _cpu_self() - c0
                if name not in best or secs < best[name][0]:
                    best[name] = (secs, cpu)
                    sizes[name] = _sizes(os.path.join(folder, "videos") if kind != "ffmpeg" else folder)
                shutil.rmtree(folder)
        ref_s = best[pipelines[-1][0]][0]
        results: List[Dict[str, Any]] = []
        for name, _ in pipelines:
            secs, cpu = best[name]
            results.append(
                {
                    "pipeline": name,
                    "videos": n,
                    "clip_seconds": seconds,
                    "source_size": size,
                    "short_side": short_side,
                    "workers": workers,
                    "threads_per_job": threads,
                    "repeats": repeats,
                    "seconds": round(secs, 3),
                    "videos_per_s": round(n / secs, 3),
                    "ratio_vs_ffmpeg": round(ref_s / secs, 3),
                    "cpu_s_per_video": round(cpu / n, 4),
                    "output_sizes": sizes[name],
                }
            )
    return results


@register
class PrepBenchmark(Benchmark):
    name = "prep"
    help = "videos/s of avssl prep vs one ffmpeg process per file"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--videos", type=POSITIVE_INT, default=24)
        p.add_argument("--seconds", type=POSITIVE_FLOAT, default=4.0)
        p.add_argument("--size", type=int_at_least(16), default=256)
        p.add_argument("--short-side", type=int_at_least(2), default=128)
        p.add_argument("--workers", type=NON_NEGATIVE_INT, default=None)

    def run(self, args: argparse.Namespace) -> List[Dict[str, Any]]:
        return measure(n_videos=args.videos, seconds=args.seconds, size=args.size, short_side=args.short_side,
                       workers=args.workers)

    def table(self, rows: Sequence[Dict[str, Any]]) -> Table:
        r0 = rows[0]
        return Table(
            title=f"prep: {r0['videos']} clips of {r0['clip_seconds']:g} s, short side {r0['source_size']} -> "
                  f"{r0['short_side']}, {r0['workers']} parallel jobs × {r0['threads_per_job']} threads, "
                  f"best of {r0['repeats']}",
            columns=["pipeline", "seconds", "videos/s", "ratio vs ffmpeg", "CPU s/video", "output size"],
            rows=[[r["pipeline"], f"{r['seconds']:.2f}", f"{r['videos_per_s']:.2f}", f"{r['ratio_vs_ffmpeg']:.2f}×",
                   f"{r['cpu_s_per_video']:.3f}", ", ".join(r["output_sizes"])] for r in rows],
            align=["l", "r", "r", "r", "r", "l"],
        )
