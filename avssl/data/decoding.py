"""Decoding video clips and their sound.

Two backends read video frames:

* ``decord`` (fast): frame-accurate random access with an index of presentation timestamps. It is an
  optional extra (``pip install 'avssl[decord]'``; there is no wheel for some platforms);
* ``pyav``: seek + decode with PyAV, always available; it also reads every audio track.

``backend="auto"`` (the default) takes decord where it is installed and PyAV elsewhere; see
:func:`resolve_backend`.

Frames are chosen by *time*, not by index: for every sample time ``t`` the frame whose presentation
interval ``[pts_i, pts_{i+1})`` contains ``t`` is returned, which is correct for variable frame rate
and for any fps. Audio is down-mixed to mono at ``audio_rate``: decoded from the file's track with PyAV,
or sliced from the WAV file ``avssl prep`` extracted (:class:`MediaReader`'s ``audio_path``).

Frames come out upright with square pixels: a display rotation (phone videos) and a non-square sample
aspect ratio (anamorphic video) are applied, so both backends return the display size :func:`probe`
reports.

A file's header is never trusted on its own: :func:`probe` checks the declared frame count and duration
against the packets and rejects a header that lies about them, and a file whose header would make decord
allocate beyond reason (it aborts the process on such files) or that decord mishandles (rotation) is
read with PyAV instead.

:class:`MediaReader` opens a file once for any number of windows (all the views of a dataset item and
their sound); :func:`read_clip` reads one window through it.

Every failure to read a file becomes a :class:`DecodeError` naming the path; a file with no audio
track gives ``audio=None``; a window that runs past the end of the file is clamped.
"""
from __future__ import annotations

import contextlib
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

#: ``auto``: decord where it is installed, else PyAV (see :func:`resolve_backend`).
VIDEO_BACKENDS = ("auto", "decord", "pyav")
#: How to install the optional decord backend.
DECORD_EXTRA = "pip install 'avssl[decord]'"


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


# -- opening files: every open of a media file goes through one of these three -----------------------
def _open_decord(path: str, size: Tuple[int, int]):
    """A decord ``VideoReader`` scaling frames to ``size`` = (width, height); never for rotated files."""
    try:
        import decord
    except Exception as e:  # noqa: BLE001 - its library may fail to load: PyAV reads the file instead
        raise DecodeError(path, f"decord is not available ({e})") from None
    try:
        return decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1, width=size[0], height=size[1])
    except Exception as e:  # noqa: BLE001 - decord raises its own DECORDError or RuntimeError
        raise DecodeError(path, f"decord could not open ({e})") from None


def _open_video_container(path: str):
    """A PyAV container for decoding (slice threading only: with frame threading, closing a container
    after leaving the decode loop early, as a clip read does, can deadlock in FFmpeg's teardown)."""
    container = _open_container(path)
    if container.streams.video:
        container.streams.video[0].thread_type = "SLICE"
    return container


def _open_wav(path: str):
    """A stdlib ``wave`` reader, or None when ``path`` is not a PCM WAV file ``wave`` reads."""
    import wave

    try:
        return wave.open(path, "rb")
    except (wave.Error, EOFError):
        return None
    except OSError as e:
        raise DecodeError(path, f"cannot open the audio file ({e.strerror or e})") from None


# -- reading from open files --------------------------------------------------------------------------
def _read_video_decord(vr, path: str, times: np.ndarray, stamps: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Frames at ``times`` from an open decord reader whose frames start at ``stamps`` (s)."""
    try:
        idx = _frames_at(times, stamps)
        # Each distinct frame is decoded once, in order, however many windows ask for it.
        wanted, where = np.unique(idx, return_inverse=True)
        frames = vr.get_batch(wanted.tolist()).asnumpy()
        return frames[where.ravel()], stamps[idx]
    except Exception as e:  # noqa: BLE001
        raise DecodeError(path, f"decord failed to decode ({e})") from None


def _decord_stamps(vr, path: str) -> np.ndarray:
    """Start time (s) of every frame of an open decord reader, counted from the first."""
    try:
        n = len(vr)
        if n == 0:
            raise DecodeError(path, "decord found no frames")
        stamps = vr.get_frame_timestamp(np.arange(n))[:, 0].astype(np.float64)
    except DecodeError:
        raise
    except Exception as e:  # noqa: BLE001
        raise DecodeError(path, f"decord failed to read the frame index ({e})") from None
    return stamps - stamps.min()


def _read_video_pyav(
    container, path: str, times: np.ndarray, origin: float = 0.0, size: Optional[Tuple[int, int]] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """Frames at ``times`` (RGB, scaled to ``size`` = (width, height) when given) from an open container,
    and their times."""
    import av

    vs = container.streams.video[0]
    tb = float(vs.time_base)
    t0, t1 = float(times.min()), float(times.max())
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


def _place(wave: np.ndarray, first: int, num: int) -> np.ndarray:
    """``num`` samples of a window whose first sample is ``wave``'s sample ``first``: zeros where the
    window runs outside ``wave``."""
    out = np.zeros(num, np.float32)
    src_lo, dst_lo = max(0, first), max(0, -first)
    n = max(0, min(num - dst_lo, len(wave) - src_lo))
    if n > 0:
        out[dst_lo : dst_lo + n] = wave[src_lo : src_lo + n]
    return out


def _read_audio_pyav(container, path: str, start: float, duration: float, rate: int) -> Optional[np.ndarray]:
    """``[start, start + duration)`` (container time) of the first audio track of an open container,
    mono at ``rate``: float32 of round(duration·rate) samples, or None without an audio track.

    The down-mix is the one ``avssl prep`` writes its WAV files with: FFmpeg's to an integer format, normalised
    so that it never clips (stereo: the mean of the two channels), here to 32 bits, whose steps (2⁻³¹) leave
    even faint sound as it was. The sound of a prepared corpus is then the same whether it is read from the WAV
    or from the video's track.
    """
    import av

    if not container.streams.audio:
        return None
    num = int(round(duration * rate))
    st = container.streams.audio[0]
    tb = float(st.time_base) if st.time_base else 1.0 / rate
    stream_start = float(st.start_time * st.time_base) if st.start_time is not None else 0.0
    resampler = av.AudioResampler(format="s32", layout="mono", rate=rate)
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
    wave = (np.concatenate(chunks) / 2.0**31).astype(np.float32) if chunks else np.zeros(0, np.float32)
    first_time = stream_start if first_time is None else first_time
    return _place(wave, int(round((start - first_time) * rate)), num)


#: PCM sample widths (bytes) read straight from a WAV file, and their numpy types.
_WAV_TYPES = {2: "<i2", 4: "<i4"}


def _read_wav(f, path: str, start: float, duration: float, rate: int) -> Optional[np.ndarray]:
    """``[start, start + duration)`` of an open WAV file as mono float32 in [-1, 1]: a sample-accurate
    slice (a seek, then only the window's bytes are read). None when the file's rate is not ``rate`` or
    its samples are not 16/32-bit PCM (the caller then decodes and resamples it)."""
    import wave

    width = f.getsampwidth()
    if f.getframerate() != rate or width not in _WAV_TYPES:
        return None
    num = int(round(duration * rate))
    first = int(round(start * rate))
    lo, hi = max(0, first), min(f.getnframes(), first + num)
    if hi <= lo:
        return np.zeros(num, np.float32)
    try:
        f.setpos(lo)
        raw = f.readframes(hi - lo)
    except (wave.Error, EOFError, OSError) as e:
        raise DecodeError(path, f"cannot read the audio file ({e})") from None
    channels = f.getnchannels()
    samples = np.frombuffer(raw, _WAV_TYPES[width])
    samples = samples[: len(samples) // channels * channels].reshape(-1, channels)
    scale = float(2 ** (8 * width - 1))
    mono = (samples.mean(axis=1) if channels > 1 else samples[:, 0]).astype(np.float32) / scale
    return _place(mono, first - lo, num)


# -- backends ----------------------------------------------------------------------------------------
class BackendUnavailable(UserError, RuntimeError):
    """A video backend that was asked for by name is not installed."""


def decord_available() -> bool:
    """Whether decord imports here (it has no wheel for some platforms, e.g. Linux aarch64, macOS arm64)."""
    try:
        import decord  # noqa: F401
    except Exception:  # noqa: BLE001 - a missing wheel, or one whose library does not load
        return False
    return True


def resolve_backend(backend: str = "auto", strict: bool = True) -> str:
    """The video backend that reads for ``backend``: ``"decord"`` or ``"pyav"``.

    ``"auto"`` is decord where it is installed, else PyAV. ``"decord"`` without decord raises
    :class:`BackendUnavailable` naming what to install (``strict``), or falls back to PyAV with one
    warning (``strict=False``: a config's default). ``"pyav"`` is always available.
    """
    if backend not in VIDEO_BACKENDS:
        raise ValueError(f"backend must be one of {VIDEO_BACKENDS}, got {backend!r}")
    if backend == "pyav":
        return "pyav"
    if decord_available():
        return "decord"
    if backend == "decord":
        if strict:
            raise BackendUnavailable(f"backend 'decord' is not installed here: {DECORD_EXTRA}, or use backend "
                                     "'auto' or 'pyav' (PyAV, slower)")
        log.warning("decord is not installed: video is decoded with PyAV (slower); %s for decord", DECORD_EXTRA)
    return "pyav"


def decoders() -> Dict[str, Any]:
    """What decodes here: ``{"video_backend": the backend "auto" reads with, "decord": its version or
    None, "pyav": PyAV's version, "ffmpeg": the FFmpeg release PyAV is built on (or None), "ffmpeg_libraries":
    {library: "major.minor.micro"}}``."""
    import av

    try:
        import decord

        decord_version: Optional[str] = str(decord.__version__)
    except Exception:  # noqa: BLE001 - not installed, or its library does not load
        decord_version = None
    return {
        "video_backend": resolve_backend("auto"),
        "decord": decord_version,
        "pyav": str(av.__version__),
        "ffmpeg": getattr(av, "ffmpeg_version_info", None),
        "ffmpeg_libraries": {k: ".".join(map(str, v)) for k, v in sorted(av.library_versions.items())},
    }


class MediaReader:
    """A video file (and the audio file extracted from it, if any), each opened once and read many times.

    All the windows of one dataset item, video and sound, come from one reader: the file is opened at
    its first read (by decord for frames, by PyAV for frames decord cannot read and for the file's own
    audio track) and stays open until :meth:`close` (or the end of a ``with`` block).

    Args:
        path: the video file.
        info: its :func:`probe` result (or a manifest row's fields; missing geometry keys are read with
            :func:`geometry_info`); probed when None.
        backend: ``"auto"``, ``"decord"`` or ``"pyav"`` (see :func:`resolve_backend`).
        audio_path: an audio file extracted from ``path`` (``avssl prep``'s WAV/FLAC); sound is read from it
            instead of decoding the video's track. A PCM WAV at the asked rate is sliced sample-accurately;
            any other file is decoded (and resampled) with PyAV.
        audio_origin: the time of the video (s, counted from its first frame) at ``audio_path``'s first
            sample (a prepared file starts with the video: 0; audio extracted for a window of an untrimmed
            video starts at that window).

    Raises:
        DecodeError: the video is missing or unreadable (when probed here), or a read fails.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        info: Optional[Dict[str, Any]] = None,
        backend: str = "auto",
        audio_path: Optional[str | os.PathLike] = None,
        audio_origin: float = 0.0,
    ) -> None:
        self.path = os.fspath(path)
        self.backend = resolve_backend(backend)
        info = info if info is not None else probe(self.path)
        if any(k not in info for k in GEOMETRY_KEYS):  # e.g. a manifest row's fields
            info = {**info, **geometry_info(self.path)}
        self.info = info
        self.geometry = Geometry.from_info(info)
        self.origin = float(info.get("start_time", 0.0))
        self.audio_path = os.fspath(audio_path) if audio_path else None
        self.audio_origin = float(audio_origin)
        self._decord = None  # the decord reader and its frame start times, once opened
        self._stamps: Optional[np.ndarray] = None
        self._use_decord = self.backend == "decord"
        if self._use_decord and info["decord_risk"]:
            # decord could abort the process (or return sideways frames): PyAV reads this file.
            log.debug("reading %s with PyAV, not decord: %s", self.path, info["decord_risk"])
            self._use_decord = False
        self._container = None
        self._audio_file: Any = None  # a wave reader, or a PyAV container for other audio files
        self._closed = False

    # -- frames ---------------------------------------------------------------------------------
    def frames(self, times: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The frames shown at ``times`` (s from the first frame; any order, repeats allowed), upright with
        square pixels: ``(uint8 T×H×W×3, float64 T frame start times)``."""
        times = np.asarray(times, np.float64)
        frames = stamps = None
        if self._use_decord:
            try:
                if self._decord is None:
                    self._decord = _open_decord(self.path, self.geometry.scaled_size)
                    self._stamps = _decord_stamps(self._decord, self.path)
                frames, stamps = _read_video_decord(self._decord, self.path, times, self._stamps)
            except DecodeError as e:
                log.debug("decord failed on %s (%s); falling back to PyAV", self.path, e.reason)
                self._drop_decord()
                self._use_decord = False
        if frames is None:
            frames, stamps = _read_video_pyav(self._pyav(), self.path, times, self.origin, self.geometry.scaled_size)
        return self.geometry.upright(frames), stamps

    def clip(self, start: float, duration: float, num_frames: int) -> Tuple[np.ndarray, np.ndarray, float, float]:
        """``num_frames`` frames sampled uniformly over ``[start, start + duration)`` (clamped to the file):
        ``(frames, frame start times, start, duration)`` after clamping."""
        start, duration, times = window_times(start, duration, num_frames, float(self.info["duration"]))
        frames, stamps = self.frames(times)
        return frames, stamps, start, duration

    # -- sound ----------------------------------------------------------------------------------
    def audio(self, start: float, duration: float, rate: int = 16000) -> Optional[torch.Tensor]:
        """``[start, start + duration)`` (s from the first video frame) of the sound, mono at ``rate``:
        float32 1×round(duration·rate) in [-1, 1], zero-padded outside the track; None when the video has
        no audio track (and no audio file was given)."""
        wave = None
        if self.audio_path is not None:
            wave = self._read_audio_file(start - self.audio_origin, duration, rate)
        elif self.info.get("has_audio", True):
            wave = _read_audio_pyav(self._pyav(), self.path, start + self.origin, duration, rate)
        return None if wave is None else torch.from_numpy(wave).unsqueeze(0)

    def _read_audio_file(self, start: float, duration: float, rate: int) -> np.ndarray:
        path = self.audio_path
        if self._audio_file is None:
            _require_file(path)
            self._audio_file = _open_wav(path) or _open_container(path)
        f = self._audio_file
        if not hasattr(f, "getframerate"):
            wave = _read_audio_pyav(f, path, start, duration, rate)
        else:
            wave = _read_wav(f, path, start, duration, rate)
            if wave is None:  # another rate or sample format: decode and resample it like any file
                f.close()
                self._audio_file = f = _open_container(path)
                wave = _read_audio_pyav(f, path, start, duration, rate)
        if wave is None:
            raise DecodeError(path, "the audio file has no audio track")
        return wave

    # -- lifetime -------------------------------------------------------------------------------
    def _pyav(self):
        if self._container is None:
            self._container = _open_video_container(self.path)
            if not self._container.streams.video:
                raise DecodeError(self.path, "no video stream")
        return self._container

    def _drop_decord(self) -> None:
        # decord keeps decoder buffers alive with the reader: drop it now, not at the next GC.
        self._decord = None
        self._stamps = None

    def close(self) -> None:
        """Release the decoders and files (idempotent)."""
        self._drop_decord()
        for f in (self._container, self._audio_file):
            if f is not None:
                with contextlib.suppress(Exception):
                    f.close()
        self._container = self._audio_file = None
        self._closed = True

    def __enter__(self) -> "MediaReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def window_times(start: float, duration: float, num_frames: int, total: float) -> Tuple[float, float, np.ndarray]:
    """The window clamped to a file of ``total`` seconds, and its ``num_frames`` sample times:
    ``(start, duration, times)``. A zero-length window (a 1-frame file) still samples its frame."""
    start, duration = clamp_window(start, duration, total)
    return start, duration, sample_times(start, max(duration, 1e-6), num_frames)


def read_audio(
    path: str | os.PathLike, start: float, duration: float, rate: int = 16000
) -> Optional[torch.Tensor]:
    """Decode ``[start, start + duration)`` (container time) of the first audio track, mono, resampled to
    ``rate``.

    Returns a float32 tensor 1×S (S = round(duration·rate), zero-padded where the track is shorter),
    or None when the file has no audio track.
    """
    path = os.fspath(path)
    _require_file(path)
    container = _open_container(path)
    try:
        wave = _read_audio_pyav(container, path, start, duration, rate)
    finally:
        container.close()
    return None if wave is None else torch.from_numpy(wave).unsqueeze(0)


def read_clip(
    path: str | os.PathLike,
    start: float = 0.0,
    duration: float = 2.0,
    num_frames: int = 8,
    audio: bool = True,
    audio_rate: int = 16000,
    backend: str = "auto",
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
        backend: ``"auto"`` (decord where installed, else PyAV), ``"decord"`` (an error where it is not
            installed) or ``"pyav"``; decord falls back to PyAV for a file it cannot read.
        info: a :func:`probe` result for the file, to skip probing again (a dict without the geometry
            keys, e.g. a manifest row's fields, gets them from :func:`geometry_info`).
        audio_start: start of the audio window when it differs from the video's (audio-visual offsets);
            the audio window has the same duration and is clamped to the file.

    Returns:
        :class:`Clip` with ``video`` uint8 T×H×W×3, upright with square pixels (H×W is the display size
        :func:`probe` reports), and ``audio`` float32 1×S or None.

    Raises:
        DecodeError: the file is missing, corrupt, truncated or not a video.
        BackendUnavailable: ``backend="decord"`` where decord is not installed.
    """
    if backend not in VIDEO_BACKENDS:
        raise ValueError(f"backend must be one of {VIDEO_BACKENDS}, got {backend!r}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    with MediaReader(path, info=info, backend=backend) as reader:
        frames, stamps, start, duration = reader.clip(start, duration, num_frames)
        wave = None
        if audio and reader.info.get("has_audio"):
            a_start = start
            if audio_start is not None:
                a_start, _ = clamp_window(audio_start, duration, float(reader.info["duration"]))
            wave = reader.audio(a_start, duration, audio_rate)
    return Clip(
        video=torch.from_numpy(np.ascontiguousarray(frames)),
        audio=wave,
        fps=float(reader.info["fps"]) or 1.0,
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
    "DecodeError", "BackendUnavailable", "Clip", "Geometry", "MediaReader", "probe", "geometry_info", "read_clip",
    "read_audio", "clamp_window", "sample_times", "window_times", "resolve_backend", "decord_available", "decoders",
]
