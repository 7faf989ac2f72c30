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

Everything is done with PyAV (no ffmpeg binary needed).
"""
from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging
import math
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.connection import wait as _mp_wait
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from avssl.data import decoding
from avssl.data.manifest import (
    ManifestRow,
    kinetics_name,
    read_kinetics_csv,
    scan_folder,
    write_manifest,
)
from avssl.errors import UserError
from avssl.utils import atomic_write_text

log = logging.getLogger(__name__)

AUDIO_FORMATS = ("wav", "flac")
GEOMETRY_MODES = ("fix", "refuse")
#: Sample rates the AAC encoder takes; other source rates are resampled to ``audio_rate``.
_AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
_PART = ".avssl-part"  # marks temporary outputs (hidden names: readers skip them)
_LOCK = ".avssl-prep.lock"
_X264 = {"crf": "23", "preset": "veryfast"}
#: Transcoding may take this many seconds per second of video on top of ``timeout`` before it is
#: taken for a hang (generous: a slow machine decoding 4K is still well within it).
_SECONDS_PER_SECOND = 20.0


# ---------------------------------------------------------------------------------------------
# errors a user sees
# ---------------------------------------------------------------------------------------------
class PrepError(UserError, ValueError):
    """A mistake in how a prep run was asked for: its arguments, source or output folder."""


class PrepLockedError(PrepError, RuntimeError):
    """Another prep run holds the output folder."""


class OutputError(UserError, OSError):
    """An output file or folder cannot be written (read-only, full, gone); it stops the run."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"cannot write {path}: {reason}")

    def __reduce__(self):  # crosses the worker pipe with both arguments
        return (OutputError, (self.path, self.reason))

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.reason}"


#: errno values that say the output side failed, whatever file the decoder was reading.
_OUTPUT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
def output_size(width: int, height: int, short_side: Optional[int]) -> Tuple[int, int]:
    """Output ``(width, height)``: the short side scaled to ``short_side`` (aspect kept), both even.

    With ``short_side=None`` the size is kept, rounded down to even (yuv420p needs even sizes).
    """
    if short_side is None:
        return max(2, width - width % 2), max(2, height - height % 2)
    if width <= height:
        w, h = short_side, height * short_side / width
        return w, max(2, int(round(h / 2.0)) * 2)
    w, h = width * short_side / height, short_side
    return max(2, int(round(w / 2.0)) * 2), h


def _temp_path(final: str) -> str:
    folder, name = os.path.split(final)
    stem, ext = os.path.splitext(name)
    return os.path.join(folder, f".{stem}.{os.getpid()}{_PART}{ext}")


def _remove_partials(final: str) -> None:
    folder, name = os.path.split(final)
    for p in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(os.path.splitext(name)[0])}.*{_PART}*")):
        try:
            os.remove(p)
        except OSError:
            pass


def _error_text(e: BaseException) -> str:
    if isinstance(e, decoding.DecodeError):
        return e.reason
    return f"{type(e).__name__}: {e}"


def _inside(child: str, parent: str) -> bool:
    child, parent = os.path.realpath(child), os.path.realpath(parent)
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


# ---------------------------------------------------------------------------------------------
# transcoding (runs in worker processes)
# ---------------------------------------------------------------------------------------------
class _AudioSink:
    """Resamples decoded audio, keeps the window ``[0, length)`` (seconds, window time) and encodes it.

    The first decoded frame fixes where the audio starts; samples then follow contiguously. Audio that
    starts after the window start is preceded by silence so that sample 0 is at window time 0 (as the
    video's first frame is).
    """

    def __init__(self, stream, fmt: str, layout: str, rate: int, length: float) -> None:
        import av

        self.av = av
        self.stream = stream
        self.fmt, self.layout, self.rate = fmt, layout, rate
        self.channels = av.AudioLayout(layout).nb_channels
        self.planar = av.AudioFormat(fmt).is_planar
        self.resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
        self.limit = math.inf if math.isinf(length) else int(round(length * rate))
        stream.codec_context.open()
        self.chunk = stream.codec_context.frame_size or 4096
        self.dtype = np.int16 if fmt.startswith("s16") else np.float32
        self.next_index: Optional[int] = None  # window sample index of the next resampled sample
        self.written = 0
        self.buffer: List[np.ndarray] = []
        self.buffered = 0
        self.done = False

    def push(self, frame, t_window: Optional[float], output) -> None:
        for out in self.resampler.resample(frame):
            self._take(out, t_window, output)

    def _take(self, out, t_window: Optional[float], output) -> None:
        arr = out.to_ndarray().reshape(self.channels, -1) if self.planar else out.to_ndarray().reshape(1, -1)
        n = arr.shape[1] if self.planar else arr.shape[1] // self.channels
        if self.next_index is None:
            self.next_index = int(round((t_window or 0.0) * self.rate))
        lo_idx, hi_idx = self.next_index, self.next_index + n
        self.next_index = hi_idx
        keep_lo = max(lo_idx, self.written, 0)
        keep_hi = min(hi_idx, self.limit)
        if keep_hi <= keep_lo:
            self.done = self.done or lo_idx >= self.limit
            return
        if keep_lo > self.written:  # audio starts late: silence until it does
            self._add(np.zeros((arr.shape[0], (keep_lo - self.written) * (1 if self.planar else self.channels)), self.dtype), output)
        step = 1 if self.planar else self.channels
        self._add(arr[:, (keep_lo - lo_idx) * step : (keep_hi - lo_idx) * step], output)
        self.done = hi_idx >= self.limit

    def _add(self, arr: np.ndarray, output) -> None:
        self.buffer.append(arr)
        self.buffered += arr.shape[1] // (1 if self.planar else self.channels)
        self.written += arr.shape[1] // (1 if self.planar else self.channels)
        while self.buffered >= self.chunk:
            self._emit(self.chunk, output)

    def _emit(self, n: int, output) -> None:
        data = np.concatenate(self.buffer, axis=1) if len(self.buffer) > 1 else self.buffer[0]
        step = 1 if self.planar else self.channels
        head, tail = data[:, : n * step], data[:, n * step :]
        self.buffer = [tail] if tail.shape[1] else []
        self.buffered -= n
        frame = self.av.AudioFrame.from_ndarray(np.ascontiguousarray(head), format=self.fmt, layout=self.layout)
        frame.sample_rate = self.rate
        frame.time_base = Fraction(1, self.rate)
        frame.pts = self.written - self.buffered - n
        for packet in self.stream.encode(frame):
            output.mux(packet)

    def finish(self, output) -> None:
        if self.next_index is not None:
            for out in self.resampler.resample(None):
                self._take(out, None, output)
        if self.buffered:
            self._emit(self.buffered, output)
        for packet in self.stream.encode(None):
            output.mux(packet)


def _transcode(
    src: str,
    video_dst: Optional[str],
    audio_dst: Optional[str],
    *,
    start: Optional[float],
    end: Optional[float],
    short_side: Optional[int],
    fps: Optional[float],
    audio_rate: int,
    audio_format: Optional[str],
    threads: int,
    with_audio: bool = True,
    source_duration: Optional[float] = None,
    geometry: Optional[decoding.Geometry] = None,
) -> Dict[str, Any]:
    """Decode ``src`` once; write the re-encoded video (when ``video_dst``) and the audio file.

    The video comes out upright with square pixels: frames are scaled to the ``geometry``'s display
    aspect (short side ``short_side``), then turned by its display rotation.

    Times count from the first video frame (as :func:`avssl.data.decoding.read_clip` does); the window
    ``[start, end)`` is cut exactly. Video frames go out at a constant rate (``fps``, or the source's
    average rate): output frame k shows the source frame displayed at time ``start + k / fps``.
    Audio is cut at the end of the window or, without one, at ``source_duration`` (the video's
    length: codec padding makes audio tracks run a little past the last frame).
    Writes to temporary names only; returns what was written (``frames``, ``audio_samples``, …).
    """
    import av

    w0 = float(start or 0.0)
    w1 = min(math.inf if end is None else float(end), math.inf if source_duration is None else float(source_duration))
    length = w1 - w0
    stats: Dict[str, Any] = {"frames": 0, "audio_samples": 0, "warnings": []}
    inp = av.open(src, mode="r", options={"probesize": "5000000", "analyzeduration": "5000000"})
    outputs: List[Any] = []
    try:
        vin = inp.streams.video[0]
        # Slice threading only: frame threading can deadlock when a trimmed read stops early and closes.
        vin.thread_type = "SLICE"
        vin.codec_context.thread_count = threads
        # Audio is decoded only when something takes it: the mp4's track or the extracted file.
        wants_audio = with_audio and (video_dst is not None or (audio_dst is not None and audio_format is not None))
        ain = inp.streams.audio[0] if (wants_audio and inp.streams.audio) else None
        vtb = float(vin.time_base)
        origin = float(vin.start_time * vin.time_base) if vin.start_time is not None else 0.0
        rate = _source_rate(vin)
        src_fps = float(rate)
        out_rate = Fraction(fps).limit_denominator(1001) if fps else Fraction(rate).limit_denominator(100000)
        out_fps = float(out_rate)
        # Timestamps in containers are rounded; a quarter frame absorbs that without changing the rule.
        eps = 0.25 / max(src_fps, out_fps)

        vout = vcont = None
        sinks: List[Tuple[_AudioSink, Any]] = []  # (sink, its output container)
        if video_dst is not None:
            vcont = av.open(video_dst, mode="w", format="mp4")
            outputs.append(vcont)
            geom = geometry or decoding.Geometry(vin.codec_context.width, vin.codec_context.height)
            width, height = output_size(*geom.display_size, short_side)
            turns = geom.rotation // 90
            scaled_size = (height, width) if turns % 2 else (width, height)  # before turning upright
            vout = vcont.add_stream("libx264", rate=out_rate)
            vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
            vout.options = dict(_X264)
            vout.codec_context.thread_count = threads
            if ain is not None:
                # The mp4 keeps the source's rate (when AAC has it) and mono/stereo layout.
                in_rate = ain.codec_context.sample_rate or audio_rate
                a_rate = in_rate if in_rate in _AAC_RATES else audio_rate
                layout = "mono" if ain.codec_context.layout.nb_channels == 1 else "stereo"
                aout = vcont.add_stream("aac", rate=a_rate, layout=layout)
                sinks.append((_AudioSink(aout, "fltp", layout, a_rate, length), vcont))
        if ain is not None and audio_dst is not None and audio_format:
            acont = av.open(audio_dst, mode="w", format=audio_format)
            outputs.append(acont)
            codec = "pcm_s16le" if audio_format == "wav" else "flac"
            wstream = acont.add_stream(codec, rate=audio_rate, layout="mono")
            sinks.append((_AudioSink(wstream, "s16", "mono", audio_rate, length), acont))

        if w0 > 1.0:
            try:
                inp.seek(max(0, int((w0 + origin - 1.0) / vtb)), stream=vin, backward=True, any_frame=False)
            except av.error.FFmpegError:
                inp.seek(0, stream=vin)

        scaler = av.video.reformatter.VideoReformatter()  # keeps its scaling context from frame to frame
        k = 0  # next output frame
        prev = None  # (time, decoded frame, reformatted frame or None)
        video_done = vout is None
        audio_ok = ain is not None

        def emit_until(t_limit: float) -> None:
            """Write output frames k with k/out_fps < t_limit, each showing ``prev``."""
            nonlocal k, prev
            while k / out_fps < t_limit and k / out_fps < length - 1e-9:
                if prev[2] is None:
                    scaled = scaler.reformat(
                        prev[1],
                        width=scaled_size[0],
                        height=scaled_size[1],
                        format="yuv420p",
                        interpolation="BICUBIC",
                        # Full-range (JPEG) sources must be mapped to the limited range yuv420p means.
                        dst_color_range=av.video.reformatter.ColorRange.MPEG,
                    )
                    if turns:
                        scaled = _turn_yuv420p(scaled, turns)
                    prev = (prev[0], None, scaled)
                frame = prev[2]
                frame.pts = k
                frame.time_base = Fraction(1) / out_rate
                for packet in vout.encode(frame):
                    vcont.mux(packet)
                k += 1

        streams = [vin] + ([ain] if ain is not None else [])
        n_decoded = 0
        for packet in inp.demux(*streams):
            if packet.stream is vin:
                if video_done:
                    continue
                for frame in packet.decode():
                    n_decoded += 1
                    t_src = frame.time if frame.pts is not None else (n_decoded - 1) / src_fps
                    t = t_src - origin - w0
                    if prev is None:
                        prev = (t, frame, None)
                        if t > eps:  # the first frame comes late: it also stands for the slots before it
                            emit_until(t - eps)
                        continue
                    emit_until(t - eps)
                    if t - eps >= length:
                        video_done = True
                        break
                    prev = (t, frame, None)
            elif audio_ok:
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as e:
                    stats["warnings"].append(f"audio decoding stopped at {packet.pts}: {e}")
                    audio_ok = False
                    continue
                for frame in frames:
                    t = (frame.time - origin - w0) if frame.pts is not None else None
                    for sink, cont in sinks:
                        sink.push(frame, t, cont)
                if sinks and all(s.done for s, _ in sinks):
                    audio_ok = False
            if video_done and not audio_ok:
                break
        if vout is not None:
            if prev is None:
                raise decoding.DecodeError(src, "no video frame decoded in the window")
            if not video_done:
                last_duration = (prev[1].duration * vtb) if getattr(prev[1], "duration", None) else 1.0 / src_fps
                emit_until(prev[0] + last_duration - eps)
            if k == 0:  # a window shorter than one output frame still gets its frame
                emit_until(1.0 / out_fps)
            for packet in vout.encode(None):
                vcont.mux(packet)
            stats["frames"] = k
        for sink, cont in sinks:
            sink.finish(cont)
        stats["audio_samples"] = max((s.written for s, _ in sinks), default=0)
        stats["audio_written"] = ain is not None and stats["audio_samples"] > 0
    finally:
        for c in outputs:
            c.close()
        inp.close()
    return stats


def _turn_yuv420p(frame, turns: int):
    """``frame`` (yuv420p, even sides) turned ``turns`` quarter turns counterclockwise, plane by plane
    (exact: no colour conversion, no resampling)."""
    import av

    w, h = frame.width, frame.height
    flat = frame.to_ndarray().reshape(-1)  # Y, then U, then V, each row-major
    y_end, c_size = w * h, (w // 2) * (h // 2)
    planes = (
        flat[:y_end].reshape(h, w),
        flat[y_end : y_end + c_size].reshape(h // 2, w // 2),
        flat[y_end + c_size : y_end + 2 * c_size].reshape(h // 2, w // 2),
    )
    turned = [np.rot90(p, turns) for p in planes]
    data = np.concatenate([p.reshape(-1) for p in turned]).reshape(-1, turned[0].shape[1])
    return av.VideoFrame.from_ndarray(data, format="yuv420p")


def _source_rate(vin) -> Fraction:
    """The source's frame rate: the nominal rate when the average agrees with it to 1 % (timestamps
    rounded to a coarse time base make the average a little off), else the average (variable rate)."""
    avg, nominal = vin.average_rate, vin.guessed_rate or vin.base_rate
    if avg and nominal and abs(float(avg) - float(nominal)) <= 0.01 * float(nominal):
        return Fraction(nominal)
    return Fraction(avg or nominal or 25)


def _audio_file_ok(path: Optional[str], rate: int, source: str, seconds: float) -> bool:
    """An existing extracted audio file at ``rate``, newer than its source, ``seconds`` long."""
    import av

    if not path or not os.path.isfile(path) or os.path.getmtime(path) < os.path.getmtime(source):
        return False
    try:
        with av.open(path) as c:
            if not c.streams.audio or c.streams.audio[0].codec_context.sample_rate != rate:
                return False
            length = (c.duration or 0) / 1_000_000.0
    except Exception:  # noqa: BLE001 - any failure means "redo it"
        return False
    # Audio may legitimately end early (a short track), never run past the window.
    return length <= seconds + 0.05


def _video_ok(job: Dict[str, Any], s: Dict[str, Any], src_info: Dict[str, Any], span: float) -> Optional[Dict[str, Any]]:
    """Probe of an existing output video when it can be kept: newer than its source, and what the
    current settings make of it (size, frame rate, length)."""
    dst = job["video_out"]
    if not os.path.isfile(dst) or os.path.getmtime(dst) < os.path.getmtime(job["source"]):
        return None
    try:
        info = decoding.probe(dst)
    except decoding.DecodeError:
        return None
    if (info["width"], info["height"]) != output_size(src_info["width"], src_info["height"], s["short_side"]):
        return None
    fps = s["fps"] or src_info["fps"]
    if abs(info["fps"] - fps) > 0.01 * fps or abs(info["duration"] - span) > 1.5 / max(fps, 1e-3):
        return None
    return info


def _window(job: Dict[str, Any], s: Dict[str, Any], duration: float, warnings: List[str]) -> Tuple[Optional[float], Optional[float]]:
    """The job's trim window checked against the video's duration, with ``max_duration`` applied."""
    start, end = job["start"], job["end"]
    if start is not None and start >= duration:
        raise ValueError(f"trim window starts at {start}s, after the end of the video ({duration:.3f}s)")
    if end is not None and end > duration + 1e-6:
        warnings.append(f"trim window end {end}s clamped to the video's {duration:.3f}s")
        end = duration
    if s["max_duration"] is not None:
        limit = (start or 0.0) + s["max_duration"]
        if limit < (duration if end is None else end):
            end = limit
    return start, end


def _stats_for(path: str, rate: int) -> Any:
    """Per-frequency log-mel statistics of one extracted audio file (mono at ``rate``)."""
    import torch

    from avssl.data.audio import LogMelSpectrogram, SpectrogramStats

    torch.set_num_threads(1)  # one thread per worker process; never torch's pool in a forked child
    wave = _read_mono(path)
    stats = SpectrogramStats()
    if wave.size:
        with torch.no_grad():
            stats.update(LogMelSpectrogram(sample_rate=rate)(torch.from_numpy(wave)[None]))
    return stats


def _read_mono(path: str) -> np.ndarray:
    """All samples of an extracted (s16 mono) audio file as float32 in [-1, 1]."""
    import av

    with av.open(path) as c:
        chunks = [f.to_ndarray().reshape(-1) for f in c.decode(c.streams.audio[0])]
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    return data.astype(np.float32) / 32768.0


def _process(job: Dict[str, Any], s: Dict[str, Any], stage: Callable[[str, float], None]) -> Dict[str, Any]:
    """One file: probe it, (re-)write what is missing, and describe the result as a manifest row.

    Re-encoding (``job["video_out"]`` set): the row describes the output video. Otherwise the row
    describes the source itself (its window, if any, kept in ``start``/``end``) and only audio is written.
    """
    src = job["source"]
    src_info = decoding.probe(src)
    geom = decoding.Geometry.from_info(src_info)
    if not geom.is_identity and s["geometry"] == "refuse":
        raise decoding.DecodeError(src, f"{_geometry_text(geom)} would need correcting; refused (strict geometry)")
    if s["check_only"]:
        return {"status": "ok", "info": src_info}

    warnings: List[str] = []
    audio_out = job["audio_out"]
    reencode = job["video_out"] is not None
    start, end = _window(job, s, src_info["duration"], warnings)
    job = dict(job, start=start, end=end)
    span = (src_info["duration"] if end is None else end) - (start or 0.0)
    budget = s["timeout"] + _SECONDS_PER_SECOND * max(span, 1.0)
    status = "skipped"
    info = _video_ok(job, s, src_info, span) if reencode else src_info
    if info is None:
        stage("transcoding", budget)
        warnings += _write_outputs(job, s, src_info, video=True)
        status = "ok"
        try:
            info = decoding.probe(job["video_out"])
        except decoding.DecodeError as e:
            _remove(job["video_out"])
            raise RuntimeError(f"the written output does not probe: {e.reason}") from None
    elif audio_out and info["has_audio"] and not _audio_file_ok(audio_out, s["audio_rate"], src, span):
        # The video is fine (or stays where it is); only its audio file is missing: extract just that.
        stage("extracting audio", budget)
        warnings += _write_outputs(job, s, src_info, video=False)
        status = "ok"
    audio_path = audio_out if (audio_out and info["has_audio"] and os.path.isfile(audio_out)) else None
    row = ManifestRow(
        path=job["video_out"] if reencode else src,
        label=job["label"],
        label_index=job["label_index"],
        split=job["split"],
        duration=float(info["duration"]),
        fps=float(info["fps"]),
        width=int(info["width"]),
        height=int(info["height"]),
        num_frames=int(info["num_frames"]),
        has_audio=bool(info["has_audio"]),
        audio_rate=info["audio_rate"],
        audio_path=audio_path,
        source=src,
        start=job["start"],
        end=job["end"],
    )
    result: Dict[str, Any] = {"status": status, "warnings": warnings, "row": row.to_dict()}
    if reencode and not geom.is_identity:
        result["corrected"] = {
            "rotation": geom.rotation,
            "sample_aspect_ratio": _ratio_text(geom.sar),
            "coded_size": [geom.coded_width, geom.coded_height],
            "display_size": list(geom.display_size),
            "output_size": [row.width, row.height],
            "correction": _geometry_text(geom),
        }
    if s["audio_stats"] and audio_path is not None:
        result["audio_stats"] = _stats_for(audio_path, s["audio_rate"])
    return result


def _ratio_text(x: float) -> str:
    r = Fraction(x).limit_denominator(1000)
    return f"{r.numerator}:{r.denominator}"


def _geometry_text(geom: decoding.Geometry) -> str:
    """What turning ``geom``'s frames upright and square takes, in words."""
    parts = []
    if geom.rotation:
        parts.append(f"display rotation {geom.rotation}° counterclockwise")
    if geom.scaled_size != (geom.coded_width, geom.coded_height):
        parts.append(f"sample aspect ratio {_ratio_text(geom.sar)} ({geom.coded_width}x{geom.coded_height} coded, "
                     f"{geom.display_size[0]}x{geom.display_size[1]} displayed)")
    return " and ".join(parts)


def _remove(path: Optional[str]) -> None:
    if path and os.path.exists(path):
        os.remove(path)


def _write_outputs(job: Dict[str, Any], s: Dict[str, Any], src_info: Dict[str, Any], video: bool) -> List[str]:
    """Write the job's video (when ``video``) and audio through temporary files, then move them into
    place, the video last (an existing video marks a finished job). Returns warnings."""
    src, v_final, a_final = job["source"], job["video_out"] if video else None, job["audio_out"]
    v_tmp = _temp_path(v_final) if v_final else None
    a_tmp = _temp_path(a_final) if a_final else None
    warnings: List[str] = []
    kwargs = dict(
        start=job["start"],
        end=job["end"],
        short_side=s["short_side"],
        fps=s["fps"],
        audio_rate=s["audio_rate"],
        audio_format=s["audio_format"],
        threads=s["threads"],
        source_duration=src_info["duration"],
        geometry=decoding.Geometry.from_info(src_info),
    )
    try:
        for p in (v_tmp, a_tmp):
            if p:
                _claim_output(p)
        try:
            stats = _transcode(src, v_tmp, a_tmp, **kwargs)
        except OSError as e:
            if e.errno in _OUTPUT_ERRNOS:  # a full or read-only disk says nothing about the source
                raise OutputError(os.path.dirname(v_tmp or a_tmp), e.strerror or str(e)) from None
            raise
        if src_info["has_audio"] and not stats["audio_written"] and v_tmp:
            # An audio track with nothing decodable in the window: keep the video, without sound.
            warnings.append("the audio track has no decodable samples in the window; written without audio")
            for p in (v_tmp, a_tmp):
                _remove(p)
            stats = _transcode(src, v_tmp, None, with_audio=False, **kwargs)
        warnings += stats["warnings"]
        try:
            if a_tmp and os.path.exists(a_tmp):
                if stats["audio_written"]:
                    os.replace(a_tmp, a_final)
                else:
                    os.remove(a_tmp)
            if v_tmp:
                os.replace(v_tmp, v_final)
        except OSError as e:
            raise OutputError(os.path.dirname(e.filename or v_final or a_final), e.strerror or str(e)) from None
    finally:
        for p in (v_tmp, a_tmp):
            with contextlib.suppress(OSError):
                _remove(p)
    return warnings


def _claim_output(path: str) -> None:
    """Create the (temporary) output ``path`` and its folders now: a folder that cannot be written is
    then told apart from a bad source, as an :class:`OutputError` that stops the run."""
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise OutputError(str(e.filename or folder), e.strerror or str(e)) from None
    try:
        with open(path, "wb"):
            pass
    except OSError as e:
        raise OutputError(folder, e.strerror or str(e)) from None


# ---------------------------------------------------------------------------------------------
# worker pool with per-file isolation
# ---------------------------------------------------------------------------------------------
def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies, however it dies (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the request: nothing will signal us
        os._exit(1)


def _worker_main(conn, fn: Callable, settings: Dict[str, Any], parent_pid: int, inherited: Sequence[Any] = ()) -> None:
    _die_with_parent(parent_pid)
    # A forked worker holds copies of the parent's pipe ends (its own and the other workers'): closed,
    # the parent's death reads as end-of-file here even where no parent-death signal exists.
    for c in inherited:
        c.close()
    # Ctrl-C reaches the whole process group; the parent decides and stops the workers itself. SIGTERM
    # ends a worker at once (not through the parent's handler, which a fork copies).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        idx, job = msg

        def stage(name: str, budget: float, _idx: int = idx) -> None:
            conn.send(("stage", _idx, name, budget))

        try:
            result = fn(job, settings, stage)
        except OutputError as e:  # the output side failed, not the file: the parent stops the run
            result = {"status": "output_error", "error": e}
        except Exception as e:  # noqa: BLE001 - every per-file failure is reported, never fatal
            result = {"status": "bad", "reason": _error_text(e)}
        try:
            conn.send(("done", idx, result))
        except Exception as e:  # noqa: BLE001 - e.g. an unpicklable result
            conn.send(("done", idx, {"status": "bad", "reason": f"result could not be returned: {e}"}))


@dataclass
class _Worker:
    proc: Any
    conn: Any
    job: Optional[int] = None
    stage: str = "idle"
    deadline: float = math.inf


def _mp_context():
    # fork: workers start instantly and need no re-import; they only run PyAV (whose threads are
    # created per file), never torch's thread pools, so forking a process that has threads is safe.
    if sys.platform.startswith("linux"):
        return mp.get_context("fork")
    return mp.get_context("spawn")


def run_isolated(
    jobs: Sequence[Dict[str, Any]],
    fn: Callable[[Dict[str, Any], Dict[str, Any], Callable[[str, float], None]], Dict[str, Any]],
    settings: Dict[str, Any],
    workers: int,
    timeout: float,
    on_result: Callable[[int, Dict[str, Any]], None],
    on_tick: Optional[Callable[[], None]] = None,
    on_lost: Optional[Callable[[int], None]] = None,
) -> None:
    """Run ``fn(job, settings, stage)`` for every job in ``workers`` processes, one job at a time each.

    A job gets ``timeout`` seconds until it calls ``stage(name, budget)``, which gives it ``budget``
    more seconds from then. A job that overruns is killed; a worker that dies (crash, signal,
    ``os._exit``) reports its job as bad; either way a fresh worker takes its place. Results come to
    ``on_result(index, result)`` in completion order; ``on_lost(index)`` runs after a killed or crashed
    job (to clean up), ``on_tick()`` at least every 0.2 s. An :class:`OutputError` raised by ``fn``
    (the output cannot be written) stops the run: it is raised here once the workers are stopped.

    Workers never outlive this call: they are stopped when it returns or raises (SIGTERM included, see
    :func:`prepare`), and on Linux the kernel kills them if this process dies (even by SIGKILL).
    """
    ctx = _mp_context()
    forking = ctx.get_start_method() == "fork"
    pending = deque(range(len(jobs)))
    pool: List[_Worker] = []

    def spawn() -> _Worker:
        parent, child = ctx.Pipe(duplex=True)
        inherited = [parent] + [w.conn for w in pool] if forking else []
        proc = ctx.Process(target=_worker_main, args=(child, fn, settings, os.getpid(), inherited), daemon=True)
        proc.start()
        child.close()
        return _Worker(proc, parent)

    def retire(w: _Worker, reason: str) -> None:
        idx = w.job
        try:
            w.conn.close()
        except OSError:
            pass
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(5)
        pool.remove(w)
        if idx is not None:
            if on_lost is not None:
                on_lost(idx)
            on_result(idx, {"status": "bad", "reason": reason})
        if pending:
            pool.append(spawn())

    try:
        for _ in range(max(1, min(workers, len(jobs)))):
            pool.append(spawn())
        while True:
            for w in pool:
                if w.job is None and pending:
                    w.job = pending.popleft()
                    w.stage, w.deadline = "probing", time.monotonic() + timeout
                    w.conn.send((w.job, jobs[w.job]))
            busy = [w for w in pool if w.job is not None]
            if not busy:
                break
            now = time.monotonic()
            wait_s = max(0.0, min(0.2, min(w.deadline for w in busy) - now))
            ready = set(_mp_wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=wait_s))
            for w in busy:
                if w.conn in ready or w.proc.sentinel in ready:
                    try:
                        got = w.conn.poll()
                        msg = w.conn.recv() if got else None
                    except (EOFError, OSError):
                        msg = None
                    if msg is None:
                        w.proc.join(1)
                        code = w.proc.exitcode
                        if code is not None and code < 0:
                            try:
                                how = f"was killed by {signal.Signals(-code).name}"
                            except ValueError:
                                how = f"was killed by signal {-code}"
                        else:
                            how = f"exited with code {code}"
                        retire(w, f"the worker process {how} while {w.stage} (decoder crash)")
                        continue
                    if msg[0] == "stage":
                        w.stage, w.deadline = msg[2], time.monotonic() + float(msg[3])
                    else:
                        idx = w.job
                        w.job, w.stage, w.deadline = None, "idle", math.inf
                        if msg[2].get("status") == "output_error":
                            raise msg[2]["error"]
                        on_result(idx, msg[2])
                elif time.monotonic() > w.deadline:
                    retire(w, f"timed out while {w.stage} (no result within the time limit)")
            if on_tick is not None:
                on_tick()
        for w in pool:
            try:
                w.conn.send(None)
            except OSError:
                pass
        for w in pool:
            w.proc.join(5)
    finally:
        for w in pool:
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(5)
            try:
                w.conn.close()
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------
def _collect(src: str, csv: Optional[str]) -> Tuple[List[ManifestRow], List[Dict[str, str]]]:
    if csv is None:
        return scan_folder(src), []
    rows = read_kinetics_csv(csv, src)
    bad = [{"path": f"{m.name} ({os.path.basename(m.annotation)} line {m.line})", "reason": f"file not found: {m.reason}"} for m in rows.missing]
    return list(rows), bad


def _plan(rows: List[ManifestRow], src: str, out: str, s: Dict[str, Any], reencode: bool) -> List[Dict[str, Any]]:
    """Jobs with their output names: the source's relative layout under ``out/videos`` and ``out/audio``."""
    taken: Dict[str, str] = {}
    jobs = []
    for r in rows:
        rel = os.path.relpath(r.source or r.path, src)
        rel_dir, name = os.path.split(rel)
        stem, ext = os.path.splitext(name)
        if r.start is not None or r.end is not None:
            stem = kinetics_name(stem, r.start or 0.0, r.end or 0.0)
        out_ext = ".mp4"
        candidate, n = stem, 1
        while os.path.join(rel_dir, candidate + out_ext).lower() in taken:
            # a.avi and a.mp4 would both become a.mp4: keep them apart by their source extension.
            candidate = f"{stem}_{ext.lstrip('.')}" if n == 1 else f"{stem}_{ext.lstrip('.')}{n}"
            n += 1
        key = os.path.join(rel_dir, candidate + out_ext)
        taken[key.lower()] = rel
        jobs.append(
            {
                "source": os.path.abspath(r.source or r.path),
                "rel": rel,
                "label": r.label,
                "label_index": r.label_index,
                "split": r.split,
                "start": r.start,
                "end": r.end,
                "video_out": os.path.join(out, "videos", key) if reencode else None,
                "audio_out": os.path.join(out, "audio", rel_dir, candidate + "." + s["audio_format"]) if s["audio_format"] else None,
            }
        )
    return jobs


def _try_flock(fd: int) -> Optional[bool]:
    """Take an exclusive flock without waiting: True taken, False held elsewhere, None unsupported here."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            return None  # e.g. Lustre mounted without flock
        raise


def _same_file(fd: int, path: str) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _acquire_lock(out: str) -> int:
    """Make this process the only prep run writing to ``out``; returns the lock's file descriptor.

    The lock file is written (pid, then ``flock`` when held that way) and flocked under a temporary
    name, then linked to ``.avssl-prep.lock``, which fails if a lock exists: a reader never sees a
    lock without its pid. An existing lock is alive while its flock is held (the kernel drops it when
    the holder dies, whatever its pid later becomes) or, for a lock written without flock (a file
    system without locks, an older avssl), while its pid runs. A dead one is replaced in one rename,
    done while holding its flock, so two runs that find it together cannot both take it over (on a file
    system without flock, that last step is not protected).

    Raises:
        PrepLockedError: another run holds the lock.
        OutputError: ``out`` is not writable.
    """
    path = os.path.join(out, _LOCK)
    tmp = os.path.join(out, f"{_LOCK}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise OutputError(out, f"the output folder is not writable ({e.strerror})") from None
    try:
        flocked = _try_flock(fd)
        os.write(fd, f"{os.getpid()}\n{'flock' if flocked else ''}\n".encode())
        for _ in range(100):
            try:
                os.link(tmp, path)
                return fd
            except FileExistsError:
                pass
            if _take_over(path, tmp):
                return fd
        raise PrepLockedError(f"could not take the lock {path}: it keeps changing")
    except BaseException:
        os.close(fd)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def _take_over(path: str, tmp: str) -> bool:
    """Replace the lock at ``path`` by ``tmp`` if its holder is gone. False: look again (it changed)."""
    try:
        other = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False  # released meanwhile
    try:
        text = os.read(other, 256).decode("ascii", "replace").split()
        pid = int(text[0]) if text and text[0].isdigit() else None
        # Its flock: held by its owner while it lives (a lock written with flock), and by whoever is
        # taking a dead lock over (any lock), so that only one run can.
        got = _try_flock(other)
        if "flock" in text[1:]:
            alive = got is False or (got is None and pid is not None and _pid_alive(pid))
        else:
            if got is False:
                return False  # another run is taking this dead lock over: look again
            young = time.time() - os.fstat(other).st_mtime < 5.0  # an older avssl writes its pid just after
            alive = (pid is not None and pid != os.getpid() and _pid_alive(pid)) or (pid is None and young)
        if not _same_file(other, path):
            return False  # replaced meanwhile
        if alive:
            who = f"pid {pid}" if pid is not None else "pid unknown"
            raise PrepLockedError(
                f"another `avssl prep` ({who}) is writing to {os.path.dirname(path)}; if none is, remove {path}"
            )
        os.replace(tmp, path)  # its holder is gone: ours, complete and flocked, takes its place
        return True
    finally:
        os.close(other)


def _release_lock(out: str, fd: int) -> None:
    """Remove the lock (while still holding it, so that no one can take the old file) and close it."""
    path = os.path.join(out, _LOCK)
    try:
        if _same_file(fd, path):
            os.remove(path)
    finally:
        os.close(fd)


def _clean_stale_partials(out: str) -> int:
    n = 0
    for sub in ("videos", "audio"):
        for dirpath, _, filenames in os.walk(os.path.join(out, sub)):
            for name in filenames:
                if name.startswith(".") and _PART in name:
                    with contextlib.suppress(OSError):  # a read-only folder: reported by the run itself
                        os.remove(os.path.join(dirpath, name))
                        n += 1
    return n


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class _Terminated(BaseException):
    """SIGTERM arrived during a run: unwinds it (workers stopped, partial files and lock removed)."""


def _unwinds_on_sigterm(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` with SIGTERM turned into an exception (main thread only), so that its ``finally``
    blocks stop the workers and remove partial outputs and the lock; then the signal takes its course
    (the process ends by it, or the caller's own handler runs). A caller that ignores SIGTERM keeps it so."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return fn(*args, **kwargs)
        previous = signal.getsignal(signal.SIGTERM)
        if previous in (signal.SIG_IGN, None):
            return fn(*args, **kwargs)

        def on_term(signum: int, frame: Any) -> None:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
            raise _Terminated(signum)

        signal.signal(signal.SIGTERM, on_term)
        try:
            return fn(*args, **kwargs)
        except _Terminated:
            log.error("avssl prep stopped by SIGTERM; partial outputs removed, finished ones kept")
            signal.signal(signal.SIGTERM, previous)
            os.kill(os.getpid(), signal.SIGTERM)  # SIG_DFL ends the process here, by the signal
            raise InterruptedError("avssl prep was stopped by SIGTERM") from None
        finally:
            if signal.getsignal(signal.SIGTERM) in (on_term, signal.SIG_IGN):
                signal.signal(signal.SIGTERM, previous)

    return wrapper


@_unwinds_on_sigterm
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
    workers = _default_workers() if workers is None else int(workers)
    if workers < 1:
        raise PrepError(f"workers must be >= 1, got {workers}")

    out_dir: Optional[str] = None
    if report_path is not None:
        report_path = os.path.abspath(os.fspath(report_path))
    if check_only:
        if report_path is None and out is not None:
            out = os.path.abspath(os.fspath(out))
            report_path = os.path.join(out, "prep_report.json") if os.path.isdir(out) else out
        if report_path is not None and _inside(report_path, src):
            raise PrepError(f"--check writes nothing into {src}; give a report path outside it (got {report_path})")
    else:
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
        "video_codec": "libx264 yuv420p crf {crf} preset {preset}".format(**_X264),
        "audio_codec": "aac",
    }
    rows, bad = _collect(src, os.fspath(csv) if csv else None)
    n_missing = len(bad)
    wsettings = dict(settings, threads=max(1, _default_workers() // workers))
    results: Dict[int, Dict[str, Any]] = {}
    lock = None
    if check_only:
        jobs = [
            {"source": os.path.abspath(r.path), "rel": os.path.relpath(r.path, src), "start": r.start, "end": r.end}
            for r in rows
        ]
    else:
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as e:
            raise OutputError(out_dir, f"the output folder cannot be created ({e.strerror})") from None
        jobs = _plan(rows, src, out_dir, wsettings, reencode)
        lock = _acquire_lock(out_dir)
    try:
        if lock is not None:
            _clean_stale_partials(out_dir)
        # Longest first: a big file started last would leave the other workers idle at the end.
        order = sorted(range(len(jobs)), key=lambda i: -_size(jobs[i]["source"]))
        ordered = [jobs[i] for i in order]
        counts = {"ok": 0, "skipped_existing": 0, "bad": len(bad)}

        with _Progress(len(ordered), enabled=progress, title="check" if check_only else "prep") as bar:

            def on_result(i: int, res: Dict[str, Any]) -> None:
                results[order[i]] = res
                key = {"ok": "ok", "skipped": "skipped_existing"}.get(res["status"], "bad")
                counts[key] += 1
                bar.advance(counts)

            def on_lost(i: int) -> None:
                job = ordered[i]
                for p in (job.get("video_out"), job.get("audio_out")):
                    if p:
                        _remove_partials(p)

            run_isolated(ordered, _process, wsettings, workers, timeout, on_result, bar.refresh, on_lost)
    finally:
        if lock is not None:
            # Workers are gone by now (finished or killed): nothing can be writing a partial file.
            try:
                _clean_stale_partials(out_dir)
            finally:
                _release_lock(out_dir, lock)

    warnings: List[Dict[str, str]] = []
    corrected: List[Dict[str, Any]] = []
    manifest_rows: List[ManifestRow] = []
    audio_acc = None
    n_audio = 0
    for i, job in enumerate(jobs):
        res = results.get(i, {"status": "bad", "reason": "not processed"})
        if res["status"] == "bad":
            bad.append({"path": job["source"], "reason": res.get("reason", "unknown error")})
            continue
        for w in res.get("warnings", []):
            warnings.append({"path": job["source"], "warning": w})
        if res.get("corrected"):
            corrected.append({"path": job["source"], **res["corrected"]})
        if check_only:
            manifest_rows.append(ManifestRow(path=job["source"], source=job["source"], **_info_fields(res["info"])))
            continue
        manifest_rows.append(ManifestRow(**res["row"]))
        if res.get("audio_stats") is not None:
            n_audio += 1
            audio_acc = res["audio_stats"] if audio_acc is None else audio_acc.merge(res["audio_stats"])
    manifest_rows.sort(key=lambda r: r.path)
    bad.sort(key=lambda b: b["path"])
    total = len(jobs) + n_missing
    wall = time.perf_counter() - t_start
    done = counts["ok"] + counts["skipped_existing"]
    report: Dict[str, Any] = {
        "mode": "check" if check_only else "prepare",
        "src": src,
        "out": out_dir,
        "counts": {
            "total": total,
            "ok": counts["ok"],
            "skipped_existing": counts["skipped_existing"],
            "bad": len(bad),
            "no_audio": sum(1 for r in manifest_rows if r.has_audio is False),
        },
        "bad_files": bad,
        "corrected": sorted(corrected, key=lambda c: c["path"]),
        "warnings": warnings,
        "settings": settings,
        "duration_s": float(sum(r.duration or 0.0 for r in manifest_rows)),
        "wall_time_s": wall,
        "videos_per_s": (done / wall) if wall > 0 else 0.0,
    }
    if check_only:
        report["files"] = [
            {"path": r.path, "duration": r.duration, "fps": r.fps, "width": r.width, "height": r.height, "has_audio": r.has_audio}
            for r in manifest_rows
        ]
        if report_path:
            report["report"] = report_path
            with _writing(report_path):
                atomic_write_text(report_path, json.dumps(report, indent=2) + "\n")
        return report
    manifest_path = os.path.join(out_dir, "manifest.csv")
    with _writing(manifest_path):
        write_manifest(manifest_rows, manifest_path)
    report["manifest"] = manifest_path
    if audio_stats:
        stats_path = os.path.join(out_dir, "audio_stats.json")
        if audio_acc is not None:
            audio_acc.meta.update({"feature": "LogMelSpectrogram", "sample_rate": audio_rate, "files": n_audio})
            with _writing(stats_path):
                audio_acc.save(stats_path)
            report["audio_stats"] = stats_path
            report["audio_stats_files"] = n_audio
        else:
            report["audio_stats"] = None
    report["report"] = os.path.join(out_dir, "prep_report.json")
    for path in dict.fromkeys(p for p in (report["report"], report_path) if p):
        with _writing(path):
            atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    return report


@contextlib.contextmanager
def _writing(path: str):
    """Turn a failure to write ``path`` into an :class:`OutputError` naming it."""
    try:
        yield
    except OSError as e:
        raise OutputError(path, e.strerror or str(e)) from None


def _info_fields(info: Dict[str, Any]) -> Dict[str, Any]:
    return {k: info[k] for k in ("duration", "fps", "width", "height", "num_frames", "has_audio", "audio_rate")}


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


class _Progress:
    """A rich progress bar refreshed from the main loop (no refresh thread in a forking process)."""

    def __init__(self, total: int, enabled: bool, title: str) -> None:
        self.total, self.enabled, self.title = total, enabled, title
        self.progress = None
        self.task = None

    def __enter__(self) -> "_Progress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                auto_refresh=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(self.title, total=self.total)
            self.progress.refresh()
        return self

    def advance(self, counts: Dict[str, int]) -> None:
        if self.progress is not None:
            skipped = f" · skipped {counts['skipped_existing']}" if self.title == "prep" else ""
            desc = f"{self.title} ok {counts['ok']}{skipped} · bad {counts['bad']}"
            self.progress.update(self.task, advance=1, description=desc)
            self.progress.refresh()

    def refresh(self) -> None:
        if self.progress is not None:
            self.progress.refresh()

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.refresh()
            self.progress.stop()


def print_summary(report: Dict[str, Any], console: Any = None, max_bad: int = 50) -> None:
    """Print a readable summary of a :func:`prepare` report: counts, bad files, where things went."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    c = report["counts"]
    check = report.get("mode") == "check"
    table = Table(title="avssl prep --check" if check else "avssl prep", show_header=True)
    table.add_column("videos")
    table.add_column("count", justify="right")
    table.add_row("total", str(c["total"]))
    table.add_row("ok" if check else "prepared now", f"[green]{c['ok']}")
    if not check:
        table.add_row("already prepared (skipped)", str(c["skipped_existing"]))
    table.add_row("bad", f"[red]{c['bad']}" if c["bad"] else "0")
    table.add_row("without audio", str(c.get("no_audio", 0)))
    if report.get("corrected"):
        table.add_row("turned upright / made square", str(len(report["corrected"])))
    table.add_row("hours of video", f"{report.get('duration_s', 0.0) / 3600:.2f}")
    table.add_row("wall time", f"{report['wall_time_s']:.1f} s ({report.get('videos_per_s', 0.0):.2f} videos/s)")
    console.print(table)
    bad = report.get("bad_files", [])
    if bad:
        t = Table(title=f"bad files (under {report.get('src')})", show_header=True)
        t.add_column("path", overflow="fold")
        t.add_column("reason", overflow="fold")
        src = report.get("src") or ""
        for b in bad[:max_bad]:
            path = b["path"]
            if src and path.startswith(src.rstrip(os.sep) + os.sep):
                path = os.path.relpath(path, src)
            t.add_row(path, b["reason"])
        console.print(t)
        if len(bad) > max_bad:
            console.print(f"… and {len(bad) - max_bad} more (all listed in the JSON report)")
    if report.get("warnings"):
        console.print(f"[yellow]{len(report['warnings'])} warning(s)[/] (listed in the JSON report)")
    for key in ("manifest", "report", "audio_stats"):
        if report.get(key):
            console.print(f"{key}: {report[key]}")


__all__ = [
    "AUDIO_FORMATS", "GEOMETRY_MODES", "OutputError", "PrepError", "PrepLockedError", "output_size", "prepare",
    "print_summary", "run_isolated",
]
