"""What a run has to do: the sources, each one's output names, and which finished outputs can stay."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

from avssl.data import decoding
from avssl.data.manifest import ManifestRow, kinetics_name, read_kinetics_csv, scan_folder
from avssl.data.prep.transcode import output_size


def collect(src: str, csv: Optional[str]) -> Tuple[List[ManifestRow], List[Dict[str, str]]]:
    """The source videos (a folder tree, or the rows of a Kinetics CSV under ``src``) and, as bad-file
    entries, the CSV rows whose file is missing."""
    if csv is None:
        return scan_folder(src), []
    rows = read_kinetics_csv(csv, src)
    bad = [{"path": f"{m.name} ({os.path.basename(m.annotation)} line {m.line})", "reason": f"file not found: {m.reason}"} for m in rows.missing]
    return list(rows), bad


def plan_jobs(rows: List[ManifestRow], src: str, out: str, s: Dict[str, Any], reencode: bool) -> List[Dict[str, Any]]:
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


def check_jobs(rows: List[ManifestRow], src: str) -> List[Dict[str, Any]]:
    """Jobs of a check-only run: the sources to probe, nothing to write."""
    return [{"source": os.path.abspath(r.path), "rel": os.path.relpath(r.path, src), "start": r.start, "end": r.end}
            for r in rows]


def video_ok(job: Dict[str, Any], s: Dict[str, Any], src_info: Dict[str, Any], span: float) -> Optional[Dict[str, Any]]:
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


def audio_file_ok(path: Optional[str], rate: int, source: str, seconds: float) -> bool:
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

