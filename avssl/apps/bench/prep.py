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

import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from avssl.utils import atomic_write_text

AUDIO_RATE = 44100  # sources carry CD-rate audio, as downloaded corpora do


def _write_clip(path: str, seconds: float, size: int, fps: int, seed: int) -> None:
    """A clip with moving texture and noise (so the encoder has real work) and a noisy tone."""
    import av

    rng = np.random.default_rng(seed)
    height, width = size, (size * 4 // 3) // 2 * 2
    n = int(round(seconds * fps))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    fx, fy, speed = rng.uniform(0.02, 0.08), rng.uniform(0.02, 0.08), rng.uniform(1.0, 4.0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(path, "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "18"}
        st = c.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        for i in range(n):
            base = 127 + 80 * np.sin(fx * (xx + speed * i)) * np.cos(fy * (yy - speed * i))
            img = np.clip(base[..., None] + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for p in vs.encode(frame):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        total = int(seconds * AUDIO_RATE)
        t = np.arange(total) / AUDIO_RATE
        wave = (0.3 * np.sin(2 * np.pi * rng.uniform(200, 800) * t) + 0.05 * rng.normal(size=total)).astype(np.float32)
        stereo = np.stack([wave, wave[::-1]])
        for k in range(0, total, 1024):
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(stereo[:, k : k + 1024]), format="fltp", layout="stereo")
            f.sample_rate, f.pts, f.time_base = AUDIO_RATE, k, Fraction(1, AUDIO_RATE)
            for p in st.encode(f):
                c.mux(p)
        for p in st.encode():
            c.mux(p)


def make_corpus(root: str, n_videos: int, seconds: float, size: int, workers: int) -> str:
    """A folder-per-class corpus of ``n_videos`` clips (the synthetic corpus when that module is there,
    else clips drawn here); returns the folder of class folders."""
    classes = 4
    try:
        from avssl.apps.synthetic import synthesize
    except ImportError:
        synthesize = None
    if synthesize is not None:
        synthesize(
            root,
            classes=classes,
            per_class=max(1, -(-n_videos // classes)),
            seconds=seconds,
            size=size,
            audio_rate=AUDIO_RATE,
            workers=workers,
            progress=False,
        )
        return os.path.join(root, "videos")
    videos = os.path.join(root, "videos")
    jobs = [(os.path.join(videos, f"class{i % classes}", f"clip{i:04d}.mp4"), i) for i in range(n_videos)]
    with ThreadPoolExecutor(workers) as pool:  # libx264 releases the GIL while encoding
        list(pool.map(lambda j: _write_clip(j[0], seconds, size, 25, j[1]), jobs))
    return videos


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


def run(
    n_videos: int = 24,
    seconds: float = 4.0,
    size: int = 256,
    short_side: int = 128,
    workers: Optional[int] = None,
    out: Optional[str] = None,
    print_table: bool = True,
    repeats: int = 3,
) -> List[Dict[str, Any]]:
    """Time both sides on a generated corpus; print a table; return its rows (and write them to ``out``).

    Args:
        n_videos: clips in the corpus (4 classes).
        seconds: length of each clip (25 fps, 44.1 kHz AAC).
        size: source short side (:func:`avssl.apps.synthetic.synthesize` draws square frames; without
            that module a built-in generator draws 4:3 frames with stereo sound).
        short_side: output short side.
        workers: parallel jobs on both sides (default: the CPUs this process may use).
        out: write the rows as JSON here.
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
    if print_table:
        _print(results, seconds=seconds, size=size, short_side=short_side)
    if out:
        atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    return results


def _print(results: List[Dict[str, Any]], seconds: float, size: int, short_side: int) -> None:
    from rich.console import Console
    from rich.table import Table

    r0 = results[0]
    table = Table(
        title=f"prep: {r0['videos']} clips of {seconds:g} s, short side {size} -> {short_side}, "
        f"{r0['workers']} parallel jobs × {r0['threads_per_job']} threads, best of {r0['repeats']}"
    )
    for col, just in (("pipeline", "left"), ("seconds", "right"), ("videos/s", "right"), ("ratio vs ffmpeg", "right"), ("CPU s/video", "right"), ("output size", "left")):
        table.add_column(col, justify=just)
    for r in results:
        table.add_row(
            r["pipeline"], f"{r['seconds']:.2f}", f"{r['videos_per_s']:.2f}", f"{r['ratio_vs_ffmpeg']:.2f}×",
            f"{r['cpu_s_per_video']:.3f}", ", ".join(r["output_sizes"])
        )
    Console().print(table)
