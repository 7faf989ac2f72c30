"""Corpus preparation: probe, validate, resize, trim, re-encode, extract audio, write a manifest.

``prepare(src, out)`` turns a folder of videos (folder-per-class tree or a Kinetics CSV) into::

    out/videos/<same relative layout>.mp4   H.264 (yuv420p, short side = short_side) + AAC
    out/audio/<same relative layout>.wav    mono at audio_rate (or .flac)
    out/manifest.csv                        one ManifestRow per good video, probed from the outputs
    out/prep_report.json                    counts, every bad file with its reason, settings, time

With ``reencode=False`` the videos stay where they are: the manifest points to the sources (with the
CSV's trim window in ``start``/``end``) and only the audio is extracted.

Guarantees:

* sources are only ever opened for reading, and ``out`` may not lie inside ``src``;
* every output is written under a hidden temporary name and ``os.replace``-d into place, so an
  interrupted run never leaves a partial file under a final name;
* a rerun skips outputs that exist and probe OK (and are newer than their source), and redoes the rest;
* each file is handled in a worker process with a time limit: a corrupt file, a hang or a crash of the
  decoder (even a segfault) marks that one file bad and the run goes on;
* workers die with the run: killed with it (even by ``kill -9``, through a parent-death signal on Linux),
  and stopped by it on SIGTERM, which also removes partial outputs and the lock before the run exits
  by that signal;
* one run at a time per output folder: a lock file, complete with its pid before it becomes visible,
  and held with ``flock`` so that the kernel releases it when its holder dies;
* a file that cannot be written (read-only or full output folder) stops the run with one error naming
  it: it is not a property of the source, so no source is ever listed as bad for it;
* videos come out upright with square pixels: a display rotation and a non-square sample aspect ratio
  are applied (and listed under ``corrected`` in the report), or, with ``geometry="refuse"``, such a
  file is listed as bad with the reason.

Everything is done with PyAV (no ffmpeg binary needed). The steps live in their own modules:
:mod:`~avssl.data.prep.plan` (sources, output names, finished outputs), :mod:`~avssl.data.prep.lock`,
:mod:`~avssl.data.prep.pool` (the isolated workers), :mod:`~avssl.data.prep.job` and
:mod:`~avssl.data.prep.transcode` (one file), :mod:`~avssl.data.prep.report`.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Tuple

from avssl.data.prep import lock
from avssl.data.prep.errors import OutputError, PrepError, PrepLockedError
from avssl.data.prep.job import process
from avssl.data.prep.plan import check_jobs, collect, plan_jobs
from avssl.data.prep.pool import default_workers, run_isolated, unwinds_on_sigterm
from avssl.data.prep.report import ProgressBar, build_report, print_summary, write_outputs
from avssl.data.prep.transcode import X264, clean_stale_partials, output_size, remove_partials

AUDIO_FORMATS = ("wav", "flac")
GEOMETRY_MODES = ("fix", "refuse")


@unwinds_on_sigterm
def prepare(
    src: str | os.PathLike,
    out: Optional[str | os.PathLike] = None,
    short_side: Optional[int] = 256,
    fps: Optional[float] = None,
    audio_rate: int = 16000,
    audio_format: Optional[str] = "wav",
    csv: Optional[str | os.PathLike] = None,
    workers: Optional[int] = None,
    check_only: bool = False,
    progress: bool = True,
    reencode: bool = True,
    max_duration: Optional[float] = None,
    audio_stats: bool = False,
    timeout: float = 60.0,
    report_path: Optional[str | os.PathLike] = None,
    geometry: str = "fix",
) -> Dict[str, Any]:
    """Prepare a video corpus (or, with ``check_only``, just check it). Returns the report dict.

    Args:
        src: the corpus folder: a folder-per-class tree (``{class}/*.mp4``, ``{split}/{class}/*.mp4``),
            or the video root of ``csv``.
        out: output folder (not inside ``src``). With ``check_only``: optional path of a JSON report
            (a folder gets ``prep_report.json``); nothing is written when it is None.
        short_side: output short side in pixels (even; aspect kept), or None to keep the size.
        fps: output frame rate, or None to keep the source's.
        audio_rate: sample rate of the extracted audio (mono).
        audio_format: ``"wav"``, ``"flac"`` or None (no audio files; the mp4s keep their AAC track).
        csv: a Kinetics annotation CSV; its ``time_start``/``time_end`` trim full-length videos.
        workers: worker processes (default: the CPUs this process may use).
        check_only: only probe every file and report; writes nothing into ``src``.
        progress: show a progress bar (on stderr).
        reencode: False leaves the videos where they are: the manifest rows point to the sources
            (a trim window stays in the row's ``start``/``end``) and only the audio is extracted.
        max_duration: keep at most this many seconds of each video (from its window's start).
        audio_stats: also compute per-frequency log-mel mean/std over the extracted audio
            (``out/audio_stats.json``).
        timeout: seconds a file may take to probe; transcoding gets ``timeout`` plus 20 s per second of
            video. A file that overruns is recorded as bad.
        report_path: also write the JSON report here (with ``check_only``, the only file written).
        geometry: ``"fix"`` writes videos with a display rotation or non-square pixels upright and
            square (listed under ``corrected``); ``"refuse"`` lists them as bad files with the reason.

    Returns:
        The report: ``counts`` (``total``, ``ok``, ``skipped_existing``, ``bad``, ``no_audio``),
        ``bad_files`` (``path``, ``reason``), ``corrected`` (``path``, ``rotation``,
        ``sample_aspect_ratio``, ``coded_size``, ``display_size``, ``output_size``, ``correction``), ``warnings``,
        ``settings``, ``wall_time_s``, ``videos_per_s``, and the output paths (``manifest``, ``report``).

    Raises:
        PrepError: a bad argument, a missing source, an output inside the source.
        PrepLockedError: another run is writing to ``out``.
        OutputError: ``out`` (or a file under it) cannot be written; the run stops, no source is
            blamed, and finished outputs stay.
    """
    t_start = time.perf_counter()
    src = os.path.abspath(os.fspath(src))
    workers = default_workers() if workers is None else int(workers)
    _check_arguments(src, short_side, fps, audio_rate, audio_format, csv, workers, timeout, geometry)
    out_dir, report_path = _output_paths(src, out, check_only, report_path, audio_stats, audio_format)
    settings: Dict[str, Any] = {
        "short_side": short_side,
        "fps": fps,
        "audio_rate": audio_rate,
        "audio_format": audio_format,
        "csv": os.path.abspath(csv) if csv else None,
        "workers": workers,
        "reencode": reencode,
        "max_duration": max_duration,
        "audio_stats": audio_stats,
        "timeout": timeout,
        "check_only": check_only,
        "geometry": geometry,
        "video_codec": "libx264 yuv420p crf {crf} preset {preset}".format(**X264),
        "audio_codec": "aac",
    }
    rows, missing = collect(src, os.fspath(csv) if csv else None)
    if check_only:
        jobs = check_jobs(rows, src)
    else:
        _make_output_dir(out_dir)
        jobs = plan_jobs(rows, src, out_dir, settings, reencode)
    worker_settings = dict(settings, threads=max(1, default_workers() // workers))
    results = _run_jobs(jobs, worker_settings, out_dir, timeout, progress, len(missing))
    report, manifest_rows, stats = build_report(jobs, results, missing, settings, src, out_dir, t_start)
    return write_outputs(report, manifest_rows, stats, report_path)


def _check_arguments(src: str, short_side: Optional[int], fps: Optional[float], audio_rate: int,
                     audio_format: Optional[str], csv: Any, workers: int, timeout: float, geometry: str) -> None:
    if not os.path.isdir(src):
        raise PrepError(f"source folder not found: {src}")
    if short_side is not None and (short_side < 2 or short_side % 2):
        raise PrepError(f"short_side must be an even number >= 2 (H.264 yuv420p needs even sizes), got {short_side}")
    if fps is not None and fps <= 0:
        raise PrepError(f"fps must be positive, got {fps}")
    if audio_format is not None and audio_format not in AUDIO_FORMATS:
        raise PrepError(f"audio_format must be one of {AUDIO_FORMATS} or None, got {audio_format!r}")
    if audio_rate <= 0:
        raise PrepError(f"audio_rate must be positive, got {audio_rate}")
    if timeout <= 0:
        raise PrepError(f"timeout must be positive, got {timeout}")
    if csv is not None and not os.path.isfile(csv):
        raise PrepError(f"Kinetics CSV not found: {csv}")
    if geometry not in GEOMETRY_MODES:
        raise PrepError(f"geometry must be one of {GEOMETRY_MODES}, got {geometry!r}")
    if workers < 1:
        raise PrepError(f"workers must be >= 1, got {workers}")


def _output_paths(src: str, out: Any, check_only: bool, report_path: Any, audio_stats: bool,
                  audio_format: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """(output folder or None for a check, report path or None), checked against the source folder."""
    out_dir: Optional[str] = None
    if report_path is not None:
        report_path = os.path.abspath(os.fspath(report_path))
    if check_only:
        if report_path is None and out is not None:
            out = os.path.abspath(os.fspath(out))
            report_path = os.path.join(out, "prep_report.json") if os.path.isdir(out) else out
        if report_path is not None and _inside(report_path, src):
            raise PrepError(f"--check writes nothing into {src}; give a report path outside it (got {report_path})")
        return None, report_path
    if out is None:
        raise PrepError("out (the output folder) is required unless check_only=True")
    out_dir = os.path.abspath(os.fspath(out))
    if _inside(out_dir, src):
        raise PrepError(f"the output folder {out_dir} must not be {src} or inside it (sources are never written)")
    for sub in ("videos", "audio"):
        if _inside(src, os.path.join(out_dir, sub)):
            raise PrepError(f"the source folder {src} lies inside the output's {sub}/ folder; outputs would overwrite it")
    if audio_stats:
        try:
            import avssl.data.audio  # noqa: F401
        except ImportError as e:
            raise RuntimeError(f"audio_stats needs avssl.data.audio ({e})") from None
        if audio_format is None:
            raise PrepError("audio_stats needs extracted audio files: set audio_format")
    return out_dir, report_path


def _inside(child: str, parent: str) -> bool:
    child, parent = os.path.realpath(child), os.path.realpath(parent)
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def _make_output_dir(out: str) -> None:
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise OutputError(out, f"the output folder cannot be created ({e.strerror})") from None


def _run_jobs(jobs: List[Dict[str, Any]], settings: Dict[str, Any], out: Optional[str], timeout: float,
              progress: bool, n_missing: int) -> Dict[int, Dict[str, Any]]:
    """Every job's result by index, from the isolated workers, under the output folder's lock (a
    check takes none); partial outputs of killed jobs, and any left when the run ends, are removed."""
    results: Dict[int, Dict[str, Any]] = {}
    held = lock.acquire(out) if out is not None else None
    try:
        if held is not None:
            clean_stale_partials(out)
        # Longest first: a big file started last would leave the other workers idle at the end.
        order = sorted(range(len(jobs)), key=lambda i: -_size(jobs[i]["source"]))
        ordered = [jobs[i] for i in order]
        counts = {"ok": 0, "skipped_existing": 0, "bad": n_missing}

        with ProgressBar(len(ordered), enabled=progress, title="check" if out is None else "prep") as bar:

            def on_result(i: int, res: Dict[str, Any]) -> None:
                results[order[i]] = res
                key = {"ok": "ok", "skipped": "skipped_existing"}.get(res["status"], "bad")
                counts[key] += 1
                bar.advance(counts)

            def on_lost(i: int) -> None:
                for p in (ordered[i].get("video_out"), ordered[i].get("audio_out")):
                    if p:
                        remove_partials(p)

            run_isolated(ordered, process, settings, settings["workers"], timeout, on_result, bar.refresh, on_lost)
    finally:
        if held is not None:
            # Workers are gone by now (finished or killed): nothing can be writing a partial file.
            try:
                clean_stale_partials(out)
            finally:
                lock.release(out, held)
    return results


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


__all__ = [
    "AUDIO_FORMATS", "GEOMETRY_MODES", "OutputError", "PrepError", "PrepLockedError", "default_workers",
    "output_size", "prepare", "print_summary", "run_isolated",
]
