"""Small media files for tests, written with PyAV.

Frame ``i`` of a generated video shows ``i`` in binary as 8 vertical stripes (white = bit set), which
survives H.264 compression, so tests can tell which frame a decoder returned.
"""
from __future__ import annotations

import os
from fractions import Fraction
from typing import Optional, Sequence

import av
import numpy as np

BITS = 8


def code_frame(i: int, width: int, height: int) -> np.ndarray:
    """H×W×3 uint8 frame showing ``i`` in binary (stripe b is white when bit b is set)."""
    img = np.full((height, width, 3), 16, np.uint8)
    edges = np.linspace(0, width, BITS + 1).astype(int)
    for b in range(BITS):
        if (i >> b) & 1:
            img[:, edges[b] : edges[b + 1]] = 235
    return img


def read_code(frame: np.ndarray) -> int:
    """Inverse of :func:`code_frame` on a decoded H×W×3 frame."""
    width = frame.shape[1]
    edges = np.linspace(0, width, BITS + 1).astype(int)
    value = 0
    for b in range(BITS):
        lo, hi = edges[b], edges[b + 1]
        pad = max(1, (hi - lo) // 4)
        if frame[:, lo + pad : hi - pad].mean() > 128:
            value |= 1 << b
    return value


def write_video(
    path: str,
    num_frames: int = 20,
    fps: int = 10,
    width: int = 64,
    height: int = 48,
    audio: bool = True,
    audio_rate: int = 16000,
    tone_hz: float = 440.0,
    frame_times: Optional[Sequence[float]] = None,
    codec: str = "libx264",
    clicks: Optional[Sequence[float]] = None,
    faststart: bool = False,
) -> str:
    """Write an mp4 with coded frames and (optionally) a sine tone; returns ``path``.

    ``frame_times`` (seconds, increasing) gives a variable frame rate; otherwise frames are 1/fps apart.
    ``clicks`` (seconds) replaces the tone by short 2 kHz bursts starting at those times (for sync checks);
    ``faststart`` puts the index at the front of the file (so a truncated copy still opens).
    Width/height may be odd: they are encoded as given where the codec allows (mpeg4), else rounded down
    to even for libx264's yuv420p.
    """
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if codec == "libx264":
        width, height = width - width % 2, height - height % 2
    container = av.open(path, mode="w", options={"movflags": "faststart"} if faststart else {})
    vs = container.add_stream(codec, rate=fps)
    vs.width, vs.height = width, height
    vs.pix_fmt = "yuv420p"
    vs.codec_context.time_base = Fraction(1, 1000)
    if codec == "libx264":
        vs.options = {"preset": "ultrafast", "crf": "18", "threads": "1"}
    a_st = None
    if audio:
        a_st = container.add_stream("aac", rate=audio_rate)
        a_st.layout = "mono"
    times = list(frame_times) if frame_times is not None else [i / fps for i in range(num_frames)]
    for i, t in enumerate(times):
        frame = av.VideoFrame.from_ndarray(code_frame(i, width, height), format="rgb24")
        frame.pts = int(round(t * 1000))
        frame.time_base = Fraction(1, 1000)
        for p in vs.encode(frame):
            container.mux(p)
    for p in vs.encode():
        container.mux(p)
    if a_st is not None:
        total = (times[-1] + (times[-1] - times[-2] if len(times) > 1 else 1.0 / fps))
        n = int(round(total * audio_rate))
        t = np.arange(n) / audio_rate
        if clicks is None:
            wave = (0.5 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
        else:
            wave = np.zeros(n, np.float32)
            for c in clicks:
                k0 = int(round(c * audio_rate))
                k1 = min(n, k0 + audio_rate // 100)  # 10 ms bursts
                wave[k0:k1] = 0.8 * np.sin(2 * np.pi * 2000.0 * t[k0:k1])
        hop = 1024
        for k in range(0, n, hop):
            chunk = wave[k : k + hop][None, :]
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="flt", layout="mono")
            af.sample_rate = audio_rate
            af.pts = k
            af.time_base = Fraction(1, audio_rate)
            for p in a_st.encode(af):
                container.mux(p)
        for p in a_st.encode():
            container.mux(p)
    container.close()
    return path


def truncate(src: str, dst: str, fraction: float = 0.5) -> str:
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data[: int(len(data) * fraction)])
    return dst


VFR_TIMES = [0.0, 0.1, 0.15, 0.5, 0.6, 1.2, 1.25, 1.3, 1.9]
CLICK_TIMES = [0.5, 1.3, 2.25, 3.1]


def write_audio_only(path: str, seconds: float = 1.0, rate: int = 16000) -> str:
    """An .m4a file with an AAC track and no video."""
    container = av.open(path, mode="w")
    st = container.add_stream("aac", rate=rate)
    st.layout = "mono"
    n = int(seconds * rate)
    wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)[None, :]
    for k in range(0, n, 1024):
        af = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, k : k + 1024]), format="flt", layout="mono")
        af.sample_rate = rate
        af.pts = k
        af.time_base = Fraction(1, rate)
        for p in st.encode(af):
            container.mux(p)
    for p in st.encode():
        container.mux(p)
    container.close()
    return path


def write_avi_with_ffmpeg(path: str, seconds: float = 1.2, fps: int = 25) -> str:
    """An AVI (MPEG-4 Part 2 + MP3) made by the ffmpeg command-line tool, whose header frame count
    differs from the packets it holds, as in UCF-101/HMDB-51 files."""
    import subprocess

    import imageio_ffmpeg

    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error",
         "-f", "lavfi", "-i", f"testsrc=size=64x48:rate={fps}:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
         "-c:v", "mpeg4", "-c:a", "libmp3lame", path],
        check=True,
    )
    return path


# -- odd media: lying headers, display rotation, non-square pixels ------------------------------
def orientation_image(width: int, height: int) -> np.ndarray:
    """H×W×3 uint8 display picture: dark, with a bright block over the top half of the left quarter.
    Turned, mirrored or stretched, the block lands elsewhere or changes shape."""
    img = np.full((height, width, 3), 40, np.uint8)
    img[: height // 2, : width // 4] = 220
    return img


def assert_upright(frame: np.ndarray, tol: int = 12) -> None:
    """``frame`` (H×W×3) shows :func:`orientation_image` at its own size: the block is where it belongs
    and fills it (so a turned, mirrored, squashed or stretched picture fails)."""
    h, w = frame.shape[:2]
    want = orientation_image(w, h).astype(np.float32)
    got = frame.astype(np.float32)
    # Away from the block's edges (scaling blurs them), every pixel is the expected level.
    edge = np.zeros((h, w), bool)
    by, bx = h // 2, w // 4
    edge[max(0, by - 3) : by + 3, : bx + 3] = True
    edge[: by + 3, max(0, bx - 3) : bx + 3] = True
    err = np.abs(got - want).mean(axis=2)[~edge]
    assert err.max() < 60 and err.mean() < tol, f"not upright and undistorted: mean error {err.mean():.1f}"


def write_oriented(
    path: str,
    display_width: int = 64,
    display_height: int = 48,
    rotation: int = 0,
    sar: Fraction = Fraction(1),
    num_frames: int = 10,
    fps: int = 10,
) -> str:
    """An mp4 whose *display* (rotation ``rotation`` degrees counterclockwise, then pixels of aspect
    ``sar`` = 1, 2 or 1/2 made square) is :func:`orientation_image` at display size; the coded frames
    are that picture turned back and squeezed, as a phone or an anamorphic camera stores them."""
    picture = orientation_image(display_width, display_height)
    coded = np.ascontiguousarray(np.rot90(picture, -(rotation // 90)))  # undo the display rotation
    if sar == 2:
        coded = np.ascontiguousarray(coded[:, ::2])  # wide pixels: half as many columns
    elif sar == Fraction(1, 2):
        coded = np.ascontiguousarray(coded[::2, :])  # tall pixels: half as many rows
    elif sar != 1:
        raise ValueError("sar must be 1, 2 or 1/2")
    height, width = coded.shape[:2]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with av.open(path, mode="w") as container:
        vs = container.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "10", "threads": "1"}
        vs.codec_context.sample_aspect_ratio = Fraction(sar)
        if rotation:
            vs.set_display_rotation(rotation)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(coded, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for p in vs.encode(frame):
                container.mux(p)
        for p in vs.encode():
            container.mux(p)
    return path


def write_lying_mkv(path: str, declared_seconds: float, num_frames: int = 20, fps: int = 10) -> str:
    """A good Matroska file (H.264 + AAC) whose Segment Info declares a duration of ``declared_seconds``:
    its 8-byte EBML Duration float (ID 0x4489, in TimecodeScale units of 1 ms) is rewritten in place."""
    import struct

    tmp = path + ".good.mkv"
    write_video(tmp, num_frames=num_frames, fps=fps)
    with open(tmp, "rb") as f:
        data = bytearray(f.read())
    os.remove(tmp)
    at = data.find(b"\x44\x89\x88")  # Duration, size 8
    if at < 0:
        raise RuntimeError("no 8-byte Duration element in the Matroska header")
    data[at + 3 : at + 11] = struct.pack(">d", declared_seconds * 1000.0)
    with open(path, "wb") as f:
        f.write(data)
    return path


def write_avi_lying_count(path: str, declared_frames: int = 10**9) -> str:
    """An ffmpeg-written AVI whose headers (avih dwTotalFrames, the video strh dwLength) declare
    ``declared_frames`` frames; it holds about 30."""
    import struct

    tmp = path + ".good.avi"
    write_avi_with_ffmpeg(tmp)
    with open(tmp, "rb") as f:
        data = bytearray(f.read())
    os.remove(tmp)
    avih, strh = data.find(b"avih"), data.find(b"strh")
    if avih < 0 or strh < 0 or data[strh + 8 : strh + 12] != b"vids":
        raise RuntimeError("unexpected AVI layout")
    data[avih + 8 + 16 : avih + 8 + 20] = struct.pack("<I", declared_frames)  # dwTotalFrames
    data[strh + 8 + 32 : strh + 8 + 36] = struct.pack("<I", declared_frames)  # dwLength
    with open(path, "wb") as f:
        f.write(data)
    return path
