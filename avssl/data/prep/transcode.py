"""One file's outputs: decode it once with PyAV, write the re-encoded video and the extracted audio.

Everything here runs in a worker process (see :mod:`avssl.data.prep.pool`). Outputs are written under
hidden temporary names (marked :data:`PART`) and moved into place when complete, the video last, so an
interrupted run never leaves a partial file under a final name.
"""
from __future__ import annotations

import contextlib
import glob
import math
import os
from fractions import Fraction
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from avssl.data import decoding
from avssl.data.prep.errors import OUTPUT_ERRNOS, OutputError

#: Sample rates the AAC encoder takes; other source rates are resampled to ``audio_rate``.
AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
PART = ".avssl-part"  # marks temporary outputs (hidden names: readers skip them)
X264 = {"crf": "23", "preset": "veryfast"}


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


def temp_path(final: str) -> str:
    """The hidden temporary name an output is written under before it is moved to ``final``."""
    folder, name = os.path.split(final)
    stem, ext = os.path.splitext(name)
    return os.path.join(folder, f".{stem}.{os.getpid()}{PART}{ext}")


def remove_partials(final: str) -> None:
    """Remove the temporary files of output ``final`` (left by a killed job)."""
    folder, name = os.path.split(final)
    for p in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(os.path.splitext(name)[0])}.*{PART}*")):
        try:
            os.remove(p)
        except OSError:
            pass


def clean_stale_partials(out: str) -> int:
    """Remove every temporary output under ``out/videos`` and ``out/audio``; returns how many."""
    n = 0
    for sub in ("videos", "audio"):
        for dirpath, _, filenames in os.walk(os.path.join(out, sub)):
            for name in filenames:
                if name.startswith(".") and PART in name:
                    with contextlib.suppress(OSError):  # a read-only folder: reported by the run itself
                        os.remove(os.path.join(dirpath, name))
                        n += 1
    return n


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


def transcode(
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
            vout.options = dict(X264)
            vout.codec_context.thread_count = threads
            if ain is not None:
                # The mp4 keeps the source's rate (when AAC has it) and mono/stereo layout.
                in_rate = ain.codec_context.sample_rate or audio_rate
                a_rate = in_rate if in_rate in AAC_RATES else audio_rate
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


def audio_stats(path: str, rate: int) -> Any:
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


def remove_file(path: Optional[str]) -> None:
    if path and os.path.exists(path):
        os.remove(path)


def write_outputs(job: Dict[str, Any], s: Dict[str, Any], src_info: Dict[str, Any], video: bool) -> List[str]:
    """Write the job's video (when ``video``) and audio through temporary files, then move them into
    place, the video last (an existing video marks a finished job). Returns warnings."""
    src, v_final, a_final = job["source"], job["video_out"] if video else None, job["audio_out"]
    v_tmp = temp_path(v_final) if v_final else None
    a_tmp = temp_path(a_final) if a_final else None
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
            stats = transcode(src, v_tmp, a_tmp, **kwargs)
        except OSError as e:
            if e.errno in OUTPUT_ERRNOS:  # a full or read-only disk says nothing about the source
                raise OutputError(os.path.dirname(v_tmp or a_tmp), e.strerror or str(e)) from None
            raise
        if src_info["has_audio"] and not stats["audio_written"] and v_tmp:
            # An audio track with nothing decodable in the window: keep the video, without sound.
            warnings.append("the audio track has no decodable samples in the window; written without audio")
            for p in (v_tmp, a_tmp):
                remove_file(p)
            stats = transcode(src, v_tmp, None, with_audio=False, **kwargs)
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
                remove_file(p)
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

