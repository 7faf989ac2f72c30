"""One file's job, run in a worker: probe it, keep what is finished, (re-)write the rest, describe it."""
from __future__ import annotations

import os
from fractions import Fraction
from typing import Any, Callable, Dict, List, Optional, Tuple

from avssl.data import decoding
from avssl.data.manifest import ManifestRow
from avssl.data.prep import transcode
from avssl.data.prep.plan import audio_file_ok, video_ok

#: Transcoding may take this many seconds per second of video on top of ``timeout`` before it is
#: taken for a hang (generous: a slow machine decoding 4K is still well within it).
SECONDS_PER_SECOND = 20.0


def process(job: Dict[str, Any], s: Dict[str, Any], stage: Callable[[str, float], None]) -> Dict[str, Any]:
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
    budget = s["timeout"] + SECONDS_PER_SECOND * max(span, 1.0)
    status = "skipped"
    info = video_ok(job, s, src_info, span) if reencode else src_info
    if info is None:
        stage("transcoding", budget)
        warnings += transcode.write_outputs(job, s, src_info, video=True)
        status = "ok"
        try:
            info = decoding.probe(job["video_out"])
        except decoding.DecodeError as e:
            transcode.remove_file(job["video_out"])
            raise RuntimeError(f"the written output does not probe: {e.reason}") from None
    elif audio_out and info["has_audio"] and not audio_file_ok(audio_out, s["audio_rate"], src, span):
        # The video is fine (or stays where it is); only its audio file is missing: extract just that.
        stage("extracting audio", budget)
        warnings += transcode.write_outputs(job, s, src_info, video=False)
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
        result["audio_stats"] = transcode.audio_stats(audio_path, s["audio_rate"])
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

