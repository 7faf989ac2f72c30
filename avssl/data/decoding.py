"""Decoding video clips and their sound.

Two backends read video frames:

* ``decord`` (default, fast): frame-accurate random access with an index of presentation timestamps;
* ``pyav`` (fallback, and the only one used for audio): seek + decode with PyAV.

Frames are chosen by *time*, not by index: for every sample time ``t`` the frame whose presentation
interval ``[pts_i, pts_{i+1})`` contains ``t`` is returned, which is correct for variable frame rate
and for any fps. Audio is decoded with PyAV, down-mixed to mono and resampled to ``audio_rate``.

Frames come out upright with square pixels: a display rotation (phone videos) and a non-square sample
aspect ratio (anamorphic video) are applied, so both backends return the display size :func:`probe`
reports.

A file's header is never trusted on its own: :func:`probe` checks the declared frame count and duration
against the packets and rejects a header that lies about them, and a file whose header would make decord
allocate beyond reason (it aborts the process on such files) or that decord mishandles (rotation) is
read with PyAV instead.

Every failure to read a file becomes a :class:`DecodeError` naming the path; a file with no audio
track gives ``audio=None``; a window that runs past the end of the file is clamped.
"""
from __future__ import annotations

import logging
import math
import os
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from avssl.errors import UserError

log = logging.getLogger(__name__)

VIDEO_BACKENDS = ("decord", "pyav")


class DecodeError(UserError, RuntimeError):
    """A media file could not be read. ``path`` and ``reason`` are kept as attributes."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot decode {self.path}: {reason}")

    def __reduce__(self):  # keep the two-argument form picklable across worker processes
        return (DecodeError, (self.path, self.reason))


@dataclass
class Clip:
    """A decoded window of a video.

    Attributes:
        video: uint8 tensor T×H×W×3 (RGB).
        audio: float32 tensor 1×S in [-1, 1] (mono at ``audio_rate``), or None when the file has no
            audio track or audio was not requested.
        fps: the source's average frame rate.
        start: start of the window actually read, in seconds (after clamping).
        duration: length of the window actually read, in seconds (after clamping).
        frame_times: float64 tensor T, the presentation time (s) of each returned frame.
        audio_rate: sample rate of ``audio`` (None when there is no audio).
    """

    video: torch.Tensor
    audio: Optional[torch.Tensor]
    fps: float
    start: float
    duration: float
    frame_times: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    audio_rate: Optional[int] = None


def _require_file(path: str) -> None:
    if not os.path.exists(path):
        raise DecodeError(path, "file not found")
    if not os.path.isfile(path):
        raise DecodeError(path, "not a regular file")
    if os.path.getsize(path) == 0:
        raise DecodeError(path, "empty file")


def _open_container(path: str):
    import av

    try:
        # Small probe limits keep a garbage file from being scanned for long.
        return av.open(path, mode="r", options={"probesize": "5000000", "analyzeduration": "5000000"})
    except av.error.FFmpegError as e:  # InvalidDataError, FileNotFoundError, ...
        raise DecodeError(path, f"not a readable media file ({type(e).__name__}: {e})") from None
    except Exception as e:  # noqa: BLE001 - anything else PyAV raises on open is still a bad file
        raise DecodeError(path, f"could not open ({type(e).__name__}: {e})") from None


def _stream_duration(stream, container) -> Optional[float]:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000.0
    return None


# -- geometry: display rotation and pixel aspect ---------------------------------------------
#: Sample (pixel) aspect ratios outside this range are taken for a corrupt header, not a real format
#: (anamorphic formats in use lie between 10:11 and 2:1).
SAR_RANGE = (0.25, 4.0)
#: Frames larger than this (pixels, declared) are not handed to decord, which allocates them up front.
_DECORD_MAX_PIXELS = 1 << 26
#: decord reserves 32 bytes per frame it expects (the header's count, or fps × declared duration) before
#: reading a packet; a lying header makes that allocation abort the process, so such files go to PyAV.
_DECORD_MAX_FRAMES = 10_000_000
#: A container may declare more time than its packets cover (audio padding, a cut download), but not this
#: much more: beyond it the header is corrupt, and decoders that trust it misbehave.
_DURATION_SLACK = (4.0, 60.0)  # (factor, seconds): declared > factor * data + seconds is rejected


@dataclass(frozen=True)
class Geometry:
    """How coded frames become upright, square-pixel display frames.

    Attributes:
        coded_width, coded_height: the decoded frame size.
        rotation: display rotation in degrees counterclockwise (0, 90, 180 or 270), applied after scaling.
        sar: sample (pixel) aspect ratio, width / height of one coded pixel.
    """

    coded_width: int
    coded_height: int
    rotation: int = 0
    sar: float = 1.0

    @property
    def scaled_size(self) -> Tuple[int, int]:
        """``(width, height)`` with square pixels, before rotation: the short way is stretched, never shrunk."""
        w, h = self.coded_width, self.coded_height
        if abs(self.sar - 1.0) < 1e-6:
            return w, h
        if self.sar > 1.0:
            return max(1, int(round(w * self.sar))), h
        return w, max(1, int(round(h / self.sar)))

    @property
    def display_size(self) -> Tuple[int, int]:
        """``(width, height)`` of the upright, square-pixel frames."""
        w, h = self.scaled_size
        return (h, w) if self.rotation in (90, 270) else (w, h)

    @property
    def is_identity(self) -> bool:
        return self.rotation == 0 and self.scaled_size == (self.coded_width, self.coded_height)

    def upright(self, frames: np.ndarray) -> np.ndarray:
        """Rotate scaled frames (…×H×W×C, already at :attr:`scaled_size`) to display orientation."""
        k = self.rotation // 90
        return np.rot90(frames, k=k, axes=(-3, -2)) if k else frames

    @classmethod
    def from_info(cls, info: Dict[str, Any]) -> "Geometry":
        return cls(int(info["coded_width"]), int(info["coded_height"]), int(info["rotation"]),
                   float(info["sample_aspect_ratio"]))

    def to_info(self) -> Dict[str, Any]:
        """The probe keys that describe this geometry (``width``/``height`` are the display size)."""
        width, height = self.display_size
        return {"width": width, "height": height, "coded_width": self.coded_width, "coded_height": self.coded_height,
                "rotation": self.rotation, "sample_aspect_ratio": self.sar}


def _sar_of(stream) -> float:
    for sar in (stream.sample_aspect_ratio, stream.codec_context.sample_aspect_ratio):
        if sar is not None and sar.numerator > 0 and sar.denominator > 0:
            return float(sar)
    return 1.0  # 0:1 means "unknown": square


def _mirrored(frame) -> bool:
    """Whether the frame's display matrix flips the picture (a negative determinant)."""
    for sd in getattr(frame, "side_data", ()):
        if getattr(sd.type, "name", "") == "DISPLAYMATRIX":
            m = struct.unpack("=9i", bytes(sd)[:36])
            return m[0] * m[4] - m[1] * m[3] < 0
    return False


def _geometry(path: str, stream, frame) -> Geometry:
    """The geometry of ``stream`` from its first decoded ``frame`` (display matrix side data and SAR)."""
    if _mirrored(frame):
        raise DecodeError(path, "the display matrix mirrors the picture (a flip), which is not supported")
    angle = float(getattr(frame, "rotation", 0) or 0)
    rotation = int(round(angle / 90.0)) * 90 % 360
    if abs(angle - round(angle / 90.0) * 90) > 1.0:
        raise DecodeError(path, f"display rotation of {angle:g} degrees is not a multiple of 90")
    sar = _sar_of(stream)
    if not SAR_RANGE[0] <= sar <= SAR_RANGE[1]:
        raise DecodeError(path, f"implausible sample aspect ratio {sar:g} (corrupt header?)")
    return Geometry(int(frame.width), int(frame.height), rotation, sar)


def _decord_risk(geom: Geometry, declared_size: Tuple[int, int], expected_frames: float, file_size: int) -> Optional[str]:
    """Why decord must not open this file (it would allocate from a lying header, or mishandle
    rotation), or None. ``expected_frames`` is the count decord derives from the header."""
    if geom.rotation:
        return f"display rotation {geom.rotation}"  # decord 0.6 swaps the sides but not the frames
    if declared_size != (geom.coded_width, geom.coded_height):
        return f"the header declares {declared_size[0]}x{declared_size[1]}, the frames are {geom.coded_width}x{geom.coded_height}"
    if declared_size[0] * declared_size[1] > _DECORD_MAX_PIXELS:
        return f"frames of {declared_size[0]}x{declared_size[1]}"
    if not math.isfinite(expected_frames) or expected_frames < 0:
        return "no frame count or frame rate in the header"
    # Every frame takes at least one byte of the file.
    if expected_frames > min(file_size, _DECORD_MAX_FRAMES):
        return f"the header implies {expected_frames:.4g} frames in {file_size} bytes"
    return None


def _decord_expected_frames(stream, container) -> float:
    """The frame count decord reserves for: the header's, else average fps × container duration."""
    if stream.frames and stream.frames > 0:
        return float(stream.frames)
    rate = stream.average_rate
    if not rate or container.duration is None:
        return 0.0 if container.duration is None else math.inf
    return float(rate) * container.duration / 1_000_000.0


def _first_frame(container, stream, path: str):
    import av

    try:
        container.seek(0, stream=stream)
        for frame in container.decode(stream):
            return frame
    except av.error.FFmpegError as e:
        raise DecodeError(path, f"no video frame could be decoded ({type(e).__name__}: {e})") from None
    raise DecodeError(path, "no video frame could be decoded")


def geometry_info(path: str | os.PathLike) -> Dict[str, Any]:
    """The keys :func:`read_clip` needs beyond a manifest row, read cheaply (header and first frame):
    ``width``/``height`` (display), ``coded_width``, ``coded_height``, ``rotation``,
    ``sample_aspect_ratio`` and ``decord_risk`` (why decord must not open the file, or None).

    Raises:
        DecodeError: the file cannot be opened or its first frame cannot be decoded.
    """
    path = os.fspath(path)
    _require_file(path)
    container = _open_container(path)
    try:
        if not container.streams.video:
            raise DecodeError(path, "no video stream")
        vs = container.streams.video[0]
        geom = _geometry(path, vs, _first_frame(container, vs, path))
        declared = (int(vs.codec_context.width), int(vs.codec_context.height))
        risk = _decord_risk(geom, declared, _decord_expected_frames(vs, container), os.path.getsize(path))
        return {**geom.to_info(), "decord_risk": risk}
    finally:
        container.close()


GEOMETRY_KEYS = ("coded_width", "coded_height", "rotation", "sample_aspect_ratio", "decord_risk")


def probe(path: str | os.PathLike) -> Dict[str, Any]:
    """Read a file's metadata, check it against the file's packets, and check that a frame decodes.

    Returns a dict with ``duration`` (s), ``fps``, ``width``, ``height`` (the upright, square-pixel
    display size), ``num_frames``, ``has_audio``, ``audio_rate`` (None without audio), ``video_codec``,
    ``audio_codec``, ``start_time``, and the geometry: ``coded_width``, ``coded_height``, ``rotation``
    (display rotation, degrees counterclockwise), ``sample_aspect_ratio``; ``decord_risk`` says why
    decord must not open the file (None when it may). ``duration`` is the video stream's, measured
    from its packets where the header says more.

    Raises:
        DecodeError: missing, empty, corrupt or truncated file, no video, or a header that lies about
            the file's length (its frame count or duration far beyond the packets it holds).
    """
    import av

    path = os.fspath(path)
    _require_file(path)
    container = _open_container(path)
    try:
        if not container.streams.video:
            raise DecodeError(path, "no video stream")
        vs = container.streams.video[0]
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        fps = float(rate) if rate else 0.0
        declared_size = (int(vs.codec_context.width), int(vs.codec_context.height))
        if declared_size[0] <= 0 or declared_size[1] <= 0:
            raise DecodeError(path, "video stream has no frame size")
        num_frames = int(vs.frames or 0)
        # Demux every stream (no decoding but the first frame): this counts the video's frames, finds
        # truncation the header alone does not show, and measures how much time the packets cover.
        first = None
        counted = 0
        last_end = None
        data_lo = data_hi = None
        try:
            for packet in container.demux():
                if packet.size == 0 and packet.pts is None:
                    continue  # a demuxer's end-of-stream flush packet
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is not None and packet.time_base is not None:
                    lo = float(stamp * packet.time_base)
                    hi = float((stamp + (packet.duration or 0)) * packet.time_base)
                    data_lo = lo if data_lo is None else min(data_lo, lo)
                    data_hi = hi if data_hi is None else max(data_hi, hi)
                if packet.stream.index != vs.index:
                    continue
                counted += 1  # empty packets with a time (AVI "drop" entries) are frames the header counts
                if packet.size == 0:
                    continue
                if first is None:
                    for frame in packet.decode():
                        first = frame
                        break
                if packet.pts is not None and packet.time_base is not None:
                    end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                    last_end = end if last_end is None else max(last_end, end)
        except av.error.FFmpegError as e:
            raise DecodeError(path, f"truncated or corrupt video data ({type(e).__name__}: {e})") from None
        if counted == 0:
            raise DecodeError(path, "video stream has no frames")
        if first is None:
            first = _first_frame(container, vs, path)  # some decoders hold the first frame back until flushed
        # AVI headers written by ffmpeg count one frame more than they hold: allow that one.
        if num_frames > counted + 1:
            raise DecodeError(path, f"truncated: the header lists {num_frames} frames, {counted} are present")
        span = (data_hi - data_lo) if data_hi is not None else math.inf  # no timestamps: nothing to compare
        header_seconds = max(
            (container.duration or 0) / 1_000_000.0,
            float(vs.duration * vs.time_base) if vs.duration is not None and vs.time_base is not None else 0.0,
        )
        if header_seconds > _DURATION_SLACK[0] * span + _DURATION_SLACK[1]:
            raise DecodeError(
                path,
                f"the header declares a duration of {header_seconds:.6g} s but the packets cover {span:.3f} s "
                "(corrupt header or truncated file)",
            )
        geom = _geometry(path, vs, first)
        risk = _decord_risk(geom, declared_size, _decord_expected_frames(vs, container), os.path.getsize(path))
        num_frames = counted
        duration = _stream_duration(vs, container)
        start_time = float(vs.start_time * vs.time_base) if vs.start_time is not None else 0.0
        if last_end is not None:
            data_duration = last_end - start_time
            if duration is None or data_duration < duration - 1.0 / max(fps, 1.0):
                duration = data_duration
        if duration is None or duration <= 0:
            duration = num_frames / fps if fps > 0 else 0.0
        if fps <= 0 and duration > 0:
            fps = num_frames / duration
        has_audio = bool(container.streams.audio)
        audio_rate = int(container.streams.audio[0].codec_context.sample_rate) if has_audio else None
        return {
            "duration": float(duration),
            "fps": float(fps),
            **geom.to_info(),
            "num_frames": int(num_frames),
            "has_audio": has_audio,
            "audio_rate": audio_rate,
            "video_codec": vs.codec_context.name,
            "audio_codec": container.streams.audio[0].codec_context.name if has_audio else None,
            # Clip times count from the first video frame; this is that frame's time in the container.
            "start_time": start_time,
            "decord_risk": risk,
        }
    finally:
        container.close()


def clamp_window(start: float, duration: float, total: float) -> Tuple[float, float]:
    """Clamp ``[start, start + duration)`` into ``[0, total]``.

    A window that starts past the end is moved back so that it ends at the end of the file; one
    longer than the file becomes the whole file. Returns ``(start, duration)``.
    """
    if total <= 0:
        return 0.0, 0.0
    duration = max(0.0, min(float(duration), total))
    start = min(max(0.0, float(start)), total - duration)
    return start, duration


def sample_times(start: float, duration: float, num_frames: int) -> np.ndarray:
    """The ``num_frames`` sample times of a window: the centres of ``num_frames`` equal bins."""
    step = duration / num_frames
    return start + (np.arange(num_frames) + 0.5) * step


def _frames_at(times: np.ndarray, frame_starts: np.ndarray) -> np.ndarray:
    """Index of the frame whose interval [start_i, start_{i+1}) contains each time."""
    # The tolerance absorbs float32 timestamps (decord) landing a hair after a frame boundary.
    idx = np.searchsorted(frame_starts, times + 1e-5, side="right") - 1
    return np.clip(idx, 0, len(frame_starts) - 1)


def _read_video_decord(path: str, times: np.ndarray, size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Frames at ``times`` scaled to ``size`` = (width, height); never for rotated files (see _decord_risk)."""
    import decord

    try:
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1, width=size[0], height=size[1])
    except Exception as e:  # noqa: BLE001 - decord raises its own DECORDError or RuntimeError
        raise DecodeError(path, f"decord could not open ({e})") from None
    try:
        n = len(vr)
        if n == 0:
            raise DecodeError(path, "decord found no frames")
        # Count from the first frame, as every other path does.
        stamps = vr.get_frame_timestamp(np.arange(n))[:, 0].astype(np.float64)
        stamps = stamps - stamps.min()
        idx = _frames_at(times, stamps)
        frames = vr.get_batch(idx.tolist()).asnumpy()
        return frames, stamps[idx]
    except DecodeError:
        raise
    except Exception as e:  # noqa: BLE001
        raise DecodeError(path, f"decord failed to decode ({e})") from None
    finally:
        # decord keeps decoder buffers alive with the reader: drop it now, not at the next GC.
        del vr


def _read_video_pyav(
    path: str, times: np.ndarray, origin: float = 0.0, size: Optional[Tuple[int, int]] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """Frames at ``times`` (RGB, scaled to ``size`` = (width, height) when given), and their times."""
    import av

    container = _open_container(path)
    try:
        vs = container.streams.video[0]
        # Slice threading only: with frame threading, closing the container after leaving the decode
        # loop early (as a clip read does) can deadlock in FFmpeg's frame-thread teardown.
        vs.thread_type = "SLICE"
        tb = float(vs.time_base)
        t0, t1 = float(times[0]), float(times[-1])
        try:
            # Seek in container time; everything after counts from the first frame (``origin``).
            container.seek(max(0, int((t0 + origin) / tb) - 1), stream=vs, backward=True, any_frame=False)
        except av.error.FFmpegError:
            container.seek(0, stream=vs)
        starts: List[float] = []
        images: List[np.ndarray] = []
        try:
            for frame in container.decode(vs):
                if frame.pts is None:
                    continue
                ts = frame.pts * tb - origin
                # Keep the last frame at or before t0 (it contains t0) and every frame up to t1.
                if ts <= t0 and starts and starts[-1] <= ts:
                    starts, images = [], []
                starts.append(ts)
                if size is None:
                    images.append(frame.to_ndarray(format="rgb24"))
                else:
                    images.append(frame.to_ndarray(format="rgb24", width=size[0], height=size[1]))
                if ts > t1:
                    break
        except av.error.FFmpegError as e:
            if not images:
                raise DecodeError(path, f"corrupt video data ({type(e).__name__}: {e})") from None
            log.warning("%s: decoding stopped early (%s); using the frames read so far", path, e)
        if not images:
            raise DecodeError(path, "no frames decoded in the requested window")
        order = np.argsort(starts, kind="stable")
        starts_arr = np.asarray(starts)[order]
        idx = _frames_at(times, starts_arr)
        return np.stack([images[order[i]] for i in idx]), starts_arr[idx]
    finally:
        container.close()


def read_audio(
    path: str | os.PathLike, start: float, duration: float, rate: int = 16000
) -> Optional[torch.Tensor]:
    """Decode ``[start, start + duration)`` of the first audio track, mono, resampled to ``rate``.

    Returns a float32 tensor 1×S (S = round(duration·rate), zero-padded where the track is shorter),
    or None when the file has no audio track.
    """
    import av

    path = os.fspath(path)
    _require_file(path)
    num = int(round(duration * rate))
    container = _open_container(path)
    try:
        if not container.streams.audio:
            return None
        st = container.streams.audio[0]
        tb = float(st.time_base) if st.time_base else 1.0 / rate
        stream_start = float(st.start_time * st.time_base) if st.start_time is not None else 0.0
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        try:
            container.seek(max(0, int((start - 0.1) / tb)), stream=st, backward=True)
        except av.error.FFmpegError:
            container.seek(0, stream=st)
        chunks: List[np.ndarray] = []
        first_time: Optional[float] = None
        end = start + duration
        try:
            for frame in container.decode(st):
                ftime = frame.pts * tb if frame.pts is not None else None
                if ftime is not None and ftime >= end:
                    break
                for out in resampler.resample(frame):
                    if first_time is None:
                        first_time = (out.pts / rate) if out.pts is not None else (ftime or 0.0)
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as e:
            if not chunks:
                raise DecodeError(path, f"corrupt audio data ({type(e).__name__}: {e})") from None
            log.warning("%s: audio decoding stopped early (%s)", path, e)
        wave = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        first_time = stream_start if first_time is None else first_time
        offset = int(round((start - first_time) * rate))
        out = np.zeros(num, np.float32)
        src_lo = max(0, offset)
        dst_lo = max(0, -offset)
        n = max(0, min(num - dst_lo, len(wave) - src_lo))
        if n > 0:
            out[dst_lo : dst_lo + n] = wave[src_lo : src_lo + n]
        return torch.from_numpy(np.clip(out, -1.0, 1.0)).unsqueeze(0)
    finally:
        container.close()


def read_clip(
    path: str | os.PathLike,
    start: float = 0.0,
    duration: float = 2.0,
    num_frames: int = 8,
    audio: bool = True,
    audio_rate: int = 16000,
    backend: str = "decord",
    info: Optional[Dict[str, Any]] = None,
    audio_start: Optional[float] = None,
) -> Clip:
    """Decode ``num_frames`` frames sampled uniformly in time over ``[start, start + duration)``.

    Args:
        path: the media file.
        start, duration: the window in seconds; clamped to the file (never an error).
        num_frames: T, the number of frames returned (frames repeat when T exceeds what the window
            holds, as for a 1-frame video).
        audio: also decode the audio of the window (mono, ``audio_rate`` Hz).
        backend: ``"decord"`` (falls back to PyAV if decord cannot read the file) or ``"pyav"``.
        info: a :func:`probe` result for the file, to skip probing again (a dict without the geometry
            keys, e.g. a manifest row's fields, gets them from :func:`geometry_info`).
        audio_start: start of the audio window when it differs from the video's (audio-visual offsets);
            the audio window has the same duration and is clamped to the file.

    Returns:
        :class:`Clip` with ``video`` uint8 T×H×W×3, upright with square pixels (H×W is the display size
        :func:`probe` reports), and ``audio`` float32 1×S or None.

    Raises:
        DecodeError: the file is missing, corrupt, truncated or not a video.
    """
    if backend not in VIDEO_BACKENDS:
        raise ValueError(f"backend must be one of {VIDEO_BACKENDS}, got {backend!r}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    path = os.fspath(path)
    info = info if info is not None else probe(path)
    total = float(info["duration"])
    start, duration = clamp_window(start, duration, total)
    fps = float(info["fps"]) or 1.0
    # A zero-length window (e.g. a 1-frame file) still yields its frame.
    times = sample_times(start, max(duration, 1e-6), num_frames)

    origin = float(info.get("start_time", 0.0))
    if any(k not in info for k in GEOMETRY_KEYS):  # e.g. a manifest row's fields
        info = {**info, **geometry_info(path)}
    geom = Geometry.from_info(info)
    frames = stamps = None
    if backend == "decord":
        if info["decord_risk"]:
            # decord could abort the process (or return sideways frames): PyAV reads this file.
            log.debug("reading %s with PyAV, not decord: %s", path, info["decord_risk"])
        else:
            try:
                frames, stamps = _read_video_decord(path, times, geom.scaled_size)
            except DecodeError as e:
                log.debug("decord failed on %s (%s); falling back to PyAV", path, e.reason)
    if frames is None:
        frames, stamps = _read_video_pyav(path, times, origin, geom.scaled_size)
    frames = geom.upright(frames)

    wave = None
    if audio and info.get("has_audio"):
        a_start = start
        if audio_start is not None:
            a_start, _ = clamp_window(audio_start, duration, total)
        wave = read_audio(path, a_start + origin, duration, audio_rate)
    return Clip(
        video=torch.from_numpy(np.ascontiguousarray(frames)),
        audio=wave,
        fps=fps,
        start=start,
        duration=duration,
        frame_times=torch.from_numpy(np.asarray(stamps, dtype=np.float64)),
        audio_rate=audio_rate if wave is not None else None,
    )


def is_decodable(path: str | os.PathLike) -> bool:
    """True when :func:`probe` succeeds."""
    try:
        probe(path)
        return True
    except DecodeError:
        return False


__all__: Sequence[str] = [
    "DecodeError", "Clip", "Geometry", "probe", "geometry_info", "read_clip", "read_audio", "clamp_window", "sample_times",
]
