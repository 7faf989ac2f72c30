"""A synthetic audio-visual corpus: moving objects whose sounds are synchronised with their motion.

Every class pairs one motion pattern of a main object with one sound. The sound is made of short
events ("grains") whose onsets fall on the frames of the pattern's visual events (a bounce, a turn,
a pulse peak, an appearance), so audio-visual correspondence and synchronisation are learnable.
Everything else is a per-video nuisance drawn independently of the class: object shape and colour,
background colours and texture, 0-2 distractor objects drifting at random, speed, phase and start
position, audio gain, noise level and colour, a background hum and a little pitch jitter. The class
is therefore not readable from colours, but from motion over time and from the sound.

Classes (:data:`CLASS_NAMES`, label order), each ``pattern: visual events -> sound``:

=========  ==========================================  ==========================  ============
name       motion                                      events                      sound grain
=========  ==========================================  ==========================  ============
blink      appears at a random place, jitters, hides   each appearance             square buzz
bounce     straight lines, reflected by the 4 walls    each wall hit               sine blip
fall       falls under gravity, hops off a floor       each floor impact           low thud
figure8    Lissajous figure-eight (1:2)                each left/right turn        two-tone dyad
orbit      circular orbit                              top and bottom passes       chirp up
pendulum   swings on an arc below a pivot              each swing end              click train
pulse      drifts slowly, its size pulsates            each size maximum           AM tone
slide      horizontal back and forth                   each turn                   chirp down
spiral     rotates while its radius goes in and out    innermost/outermost points  FM warble
zigzag     slow horizontal drift, fast vertical zigzag each vertical turn          noise burst
=========  ==========================================  ==========================  ============

More than 10 classes reuse the patterns with another speed (pattern period ×0.6 ``_fast``, ×1.6
``_slow``, ×0.4 ``_rapid``; after the per-video speed jitter the period ranges of a pattern's
variants do not overlap), another grain timbre and another pitch; at most 40 classes.
:func:`class_names` gives the names for ``K`` classes, sorted, so that a label is the same whichever
reader (sorted Kinetics labels, ``classInd.txt``) assigns it.

Output layout of :func:`synthesize` in ``OUT_DIR``::

    videos/{class}/{video_id}.mp4   H.264 (libx264, yuv420p, size×size) + AAC mono at audio_rate;
                                    video_id = "{class}_{i:04d}"; a video may lack an audio track
                                    (no_audio_fraction)
    annotations.csv                 Kinetics columns: label,youtube_id,time_start,time_end,split with
                                    youtube_id = video_id, time_start = 0, time_end = seconds,
                                    split = train|val. Unlike real Kinetics clips, which are named
                                    {youtube_id}_{start:06d}_{end:06d}.mp4, a file here is
                                    {video_id}.mp4 (a full-length video; readers fall back to it).
    splits/classInd.txt             UCF-101 format: "1 blink" (1-based label, class name)
    splits/trainlist0K.txt          "blink/blink_0000.mp4 1" (path relative to videos/, 1-based label)
    splits/testlist0K.txt           "blink/blink_0003.mp4": three splits (K = 1, 2, 3) as UCF-101 has;
                                    split 1 holds out the val videos, split K the same number of
                                    each class's videos just before split K-1's (wrapping around)
    classes.txt                     one class name per line, in label order
    metadata.json                   arguments, classes and, per video: class, label, split, seed,
                                    has_audio, nuisances, the main object's true trajectory and the
                                    audio-visual event times (see below)

``metadata.json`` holds ``{"format", "version", "args", "classes", "videos"}``; ``videos`` maps a
video_id to its entry, whose ``trajectory`` has one value per frame index ``k`` in each list:
``time`` (k / fps, s), ``x``, ``y`` (centre of the main object in pixels: x = column, y = row, the
centre of pixel (row i, column j) being (x=j, y=i)), ``radius`` (px; every shape fits in a circle of
1.2·radius around the centre, and its centroid is the centre), ``angle`` (rad) and ``visible``
(only ``blink`` hides its object). ``events`` lists the frame indices and times (frame / fps) of the
visual events; the sound grain of each starts at that time. The main object is drawn over the
distractors, so it is never occluded.

Generation is deterministic: a video's random numbers come from ``numpy.random.SeedSequence`` of
(seed, CRC-32 of its class name, its index), so a video does not depend on how many classes or
videos are asked for, nor on the number of workers. The same arguments render the same frames and
sound; encoding uses one x264 thread, and the mp4 files come out byte-identical in almost every run
(PyAV 18.1 / its bundled ffmpeg), though inside a long test session x264 has re-encoded the same
frames into a slightly different bitstream (a few levels on some pixels), so nothing relies on byte
identity. All files are written under a temporary name in their folder and renamed into
place; a rerun with the same arguments keeps complete videos, writes the missing ones and rewrites
byte-identical metadata, while a rerun with other arguments into the same folder is refused.
"""
from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing
import os
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from fractions import Fraction
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from avssl.errors import InvalidArgument
from avssl.utils import atomic_write_text

__all__ = [
    "CLASS_NAMES",
    "MAX_CLASSES",
    "class_names",
    "plan_video",
    "motion",
    "render_video",
    "write_mp4",
    "synthesize",
]

FORMAT = "avssl-synthetic"
VERSION = 1

# name -> (motion period in s, grain timbre, grain base frequency in Hz)
_PATTERNS: Dict[str, Tuple[float, str, float]] = {
    "blink": (0.6, "square_buzz", 220.0),
    "bounce": (1.6, "blip", 660.0),
    "fall": (0.9, "thud", 150.0),
    "figure8": (2.0, "dyad", 523.0),
    "orbit": (2.0, "chirp_up", 400.0),
    "pendulum": (1.5, "click_train", 3000.0),
    "pulse": (0.9, "am_tone", 880.0),
    "slide": (1.4, "chirp_down", 1600.0),
    "spiral": (2.0, "fm_tone", 500.0),
    "zigzag": (0.7, "noise_burst", 1.0),
}
CLASS_NAMES: Tuple[str, ...] = tuple(sorted(_PATTERNS))
_TIMBRES = ("blip", "chirp_up", "chirp_down", "noise_burst", "click_train", "am_tone", "fm_tone", "thud",
            "square_buzz", "dyad")
# variant v of a pattern: (name suffix, period factor, timbre shift, pitch factor). Period jitter is
# ×[0.85, 1.18], so the factors are >= 1.5 apart and a variant's periods never meet its base's.
_VARIANTS = (("", 1.0, 0, 1.0), ("_fast", 0.6, 3, 1.5), ("_slow", 1.6, 7, 0.7), ("_rapid", 0.4, 5, 2.0))
MAX_CLASSES = len(CLASS_NAMES) * len(_VARIANTS)
_SHAPES = ("disc", "square", "diamond", "triangle", "ring", "plus")
_BACKGROUNDS = ("flat", "gradient", "stripes", "checker", "blobs")
NUISANCE_LEVELS = ("full", "low")
_SPEED_RANGE = (0.85, 1.18)
_AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)


# -- classes ---------------------------------------------------------------------------------------
def _class_table(num_classes: int) -> Dict[str, Tuple[str, int]]:
    """name -> (pattern, variant) for the first ``num_classes`` classes (generation order)."""
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool):
        raise TypeError(f"classes must be an int, got {num_classes!r}")
    if not 1 <= num_classes <= MAX_CLASSES:
        raise InvalidArgument(f"classes must be in [1, {MAX_CLASSES}], got {num_classes}")
    table: Dict[str, Tuple[str, int]] = {}
    for k in range(num_classes):
        v, p = divmod(k, len(CLASS_NAMES))
        table[CLASS_NAMES[p] + _VARIANTS[v][0]] = (CLASS_NAMES[p], v)
    return table


def class_names(num_classes: int = 10) -> List[str]:
    """The class names of a ``num_classes`` corpus in label order (sorted; label = position).

    ``class_names(10) == list(CLASS_NAMES)``; fewer classes take the first patterns of
    :data:`CLASS_NAMES`; more add the ``_fast``, ``_slow`` and ``_rapid`` variants (at most 40).
    """
    return sorted(_class_table(num_classes))


def _class_spec(name: str) -> Tuple[str, int]:
    """(pattern, variant) of a class name such as ``"bounce"`` or ``"bounce_fast"``."""
    for v, (suffix, *_rest) in enumerate(_VARIANTS):
        if name.endswith(suffix) and name[: len(name) - len(suffix)] in _PATTERNS:
            return name[: len(name) - len(suffix)], v
    raise KeyError(f"unknown synthetic class {name!r}; known: {class_names(MAX_CLASSES)}")


# -- small helpers -----------------------------------------------------------------------------------
def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    # Parameters are rounded when drawn so that metadata.json holds exactly what the renderer uses.
    return round(float(rng.uniform(lo, hi)), 4)


def _to_json(obj: Any, level: int = 0) -> str:
    """JSON with nested objects indented but arrays of plain values on one line (compact trajectories)."""
    def flat(o: Any) -> bool:
        return not isinstance(o, dict) and (not isinstance(o, list) or all(flat(x) for x in o))

    if flat(obj):
        return json.dumps(obj, separators=(",", ":"))
    pad, inner = " " * level, " " * (level + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = (f"{inner}{json.dumps(str(k))}: {_to_json(v, level + 1)}" for k, v in obj.items())
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    return "[\n" + ",\n".join(inner + _to_json(v, level + 1) for v in obj) + "\n" + pad + "]"


def _tri(u: np.ndarray) -> np.ndarray:
    """Triangle wave of period 1 in [0, 1]: 0 at integers, 1 at half-integers."""
    return 1.0 - np.abs(2.0 * np.mod(u, 1.0) - 1.0)


def _seed_entropy(seed: int, name: str, index: int) -> List[int]:
    return [int(seed), zlib.crc32(name.encode("utf-8")), int(index)]


def _seg_dist(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance from points ``p`` (N×3) to segments [a, b] (broadcast to N×3)."""
    ab = b - a
    s = np.clip(np.sum((p - a) * ab, axis=-1) / np.maximum(np.sum(ab * ab, axis=-1), 1e-12), 0.0, 1.0)
    return np.linalg.norm(p - (a + s[..., None] * ab), axis=-1)


def _colour_far(
    rng: np.random.Generator,
    background: Tuple[np.ndarray, np.ndarray],
    min_dist: float,
    protect: Optional[np.ndarray] = None,
) -> List[int]:
    """A random RGB colour (0-255) at least ``min_dist`` (in [0, 1] units) from the background segment.

    A background blends its two colours, so the whole segment between them must be far. With
    ``protect`` (a colour), no blend of the new colour with the background (an anti-aliased edge)
    may come near ``protect`` either, so the protected colour stays unique in the frame. Falls back
    to the best of 256 candidates.
    """
    cands = rng.integers(0, 256, size=(256, 3))
    c = cands / 255.0
    a, b = background
    score = _seg_dist(c, a, b)
    if protect is not None:
        for end in (a, b, (a + b) / 2):
            score = np.minimum(score, _seg_dist(np.broadcast_to(protect, c.shape), c, np.broadcast_to(end, c.shape)))
    ok = np.nonzero(score >= min_dist)[0]
    pick = int(ok[0]) if len(ok) else int(np.argmax(score))
    return [int(v) for v in cands[pick]]


# -- planning (all parameters, trajectories and events; no pixels) -----------------------------------
def plan_video(
    class_name: str,
    index: int,
    *,
    seconds: float = 4.0,
    size: int = 128,
    fps: int = 25,
    audio_rate: int = 16000,
    seed: int = 0,
    nuisance: str = "full",
) -> Dict[str, Any]:
    """The metadata entry of one video: parameters, nuisances, trajectory and events (JSON-able).

    ``nuisance="full"`` draws every background type and 0–2 distractors; ``"low"`` keeps to flat and
    gradient backgrounds and at most one distractor (colours, shape, speed, phase and audio nuisances
    stay random).

    Deterministic in (seed, class_name, index) and the format arguments. :func:`render_video` turns it
    into frames and a waveform; :func:`synthesize` adds ``label``, ``split``, ``has_audio`` and ``path``.
    """
    pattern, variant = _class_spec(class_name)
    num_frames = int(round(seconds * fps))
    entropy = _seed_entropy(seed, class_name, index)
    # three independent streams: plan (here), pixels and sound (render_video re-derives the last two)
    plan_ss = np.random.SeedSequence(entropy).spawn(3)[0]
    rng = np.random.default_rng(plan_ss)
    S = float(size)
    base_period, base_timbre, base_f0 = _PATTERNS[pattern]
    _suffix, period_factor, timbre_shift, pitch_factor = _VARIANTS[variant]
    speed = round(float(math.exp(rng.uniform(*np.log(_SPEED_RANGE)))), 4)
    period = round(base_period * period_factor / speed, 4)

    # Background: two colours blended by a texture, plus static grain.
    if nuisance not in NUISANCE_LEVELS:
        raise ValueError(f"nuisance must be one of {NUISANCE_LEVELS}, got {nuisance!r}")
    backgrounds = _BACKGROUNDS if nuisance == "full" else _BACKGROUNDS[:2]
    bg_type = backgrounds[int(rng.integers(len(backgrounds)))]
    c1 = [int(v) for v in rng.integers(0, 256, 3)]
    # The texture's second colour is a muted variant of the first: busy enough to be a nuisance, not so
    # loud that it drowns the moving object at the small sizes CPU runs use.
    far = rng.integers(0, 256, 3)
    c2 = c1 if bg_type == "flat" else [int(round(0.65 * a + 0.35 * b)) for a, b in zip(c1, far)]
    background: Dict[str, Any] = {
        "type": bg_type,
        "colours": [c1, c2],
        "angle": _u(rng, 0, math.pi),
        "frequency": _u(rng, 1.5, 6.0),
        "phase": _u(rng, 0, 2 * math.pi),
        "cells": int(rng.integers(3, 8)),
        "grain": _u(rng, 0.0, 0.04),
    }
    bg_seg = (np.array(c1) / 255.0, np.array(c2) / 255.0)

    # Main object.
    r0 = round(max(3.0, float(rng.uniform(0.10, 0.13)) * S), 4)
    shape = _SHAPES[int(rng.integers(len(_SHAPES)))]
    colour = _colour_far(rng, bg_seg, 0.4)
    obj_c = np.array(colour) / 255.0
    spin = _u(rng, -1.5, 1.5)
    angle0 = _u(rng, 0, 2 * math.pi)
    params = _draw_pattern(rng, pattern, period, r0, S, num_frames, fps)

    # Distractors: smaller objects drifting smoothly at random, drawn behind the main object.
    distractors = []
    for _ in range(int(rng.integers(0, 3 if nuisance == "full" else 2))):
        rd = round(max(2.0, float(rng.uniform(0.03, 0.06)) * S), 4)
        margin = 1.2 * rd + 1.5
        amp = [[_u(rng, 0.03, 0.2) * S for _ in range(2)] for _ in range(2)]
        centre = []
        for a in amp:
            room = max(0.0, (S - 1 - 2 * margin) / 2 - sum(a))
            centre.append(round((S - 1) / 2 + float(rng.uniform(-1, 1)) * room, 4))
        distractors.append(
            {
                "shape": _SHAPES[int(rng.integers(len(_SHAPES)))],
                "colour": _colour_far(rng, bg_seg, 0.3, protect=obj_c),
                "radius": rd,
                "centre": centre,
                "amplitude": [[round(v, 4) for v in a] for a in amp],
                "frequency": [[_u(rng, 0.1, 0.6) for _ in range(2)] for _ in range(2)],
                "phase": [[_u(rng, 0, 2 * math.pi) for _ in range(2)] for _ in range(2)],
                "spin": _u(rng, -2.0, 2.0),
                "angle": _u(rng, 0, 2 * math.pi),
            }
        )

    timbre = _TIMBRES[(_TIMBRES.index(base_timbre) + timbre_shift) % len(_TIMBRES)]
    audio = {
        "gain": _u(rng, 0.4, 0.9),
        "noise_level": _u(rng, 0.003, 0.03),
        "noise_colour": ("white", "pink", "brown")[int(rng.integers(3))],
        "pitch_factor": round(2.0 ** (float(rng.uniform(-0.5, 0.5)) / 12.0), 4),
        "hum_hz": _u(rng, 80.0, 600.0),
        "hum_level": _u(rng, 0.0, 0.04) if rng.random() < 0.5 else 0.0,
    }
    entry: Dict[str, Any] = {
        "video_id": f"{class_name}_{index:04d}",
        "class": class_name,
        "index": int(index),
        "seed": int(seed),
        "seed_entropy": entropy,
        "format": {
            "size": int(size),
            "fps": int(fps),
            "num_frames": num_frames,
            "audio_rate": int(audio_rate),
            "num_samples": int(round(seconds * audio_rate)),
        },
        "pattern": {"name": pattern, "variant": variant, "period": period, **params},
        "sound": {"timbre": timbre, "f0": round(base_f0 * pitch_factor, 4)},
        "nuisance": {
            "speed": speed,
            "object": {"shape": shape, "colour": colour, "radius": r0, "spin": spin, "angle": angle0},
            "background": background,
            "distractor_count": len(distractors),
            "distractors": distractors,
            "audio": audio,
        },
    }
    m = motion(entry)
    frames = _event_frames(pattern, m)
    t = np.arange(num_frames) / fps
    entry["trajectory"] = {
        "time": [round(float(v), 4) for v in t],
        "x": [round(float(v), 3) for v in m["x"]],
        "y": [round(float(v), 3) for v in m["y"]],
        "radius": [round(float(v), 3) for v in m["radius"]],
        "angle": [round(float(v), 3) for v in m["angle"]],
        "visible": [bool(v) for v in m["visible"]],
    }
    entry["events"] = {"frame": frames, "time": [round(k / fps, 4) for k in frames]}
    return entry


def _draw_pattern(
    rng: np.random.Generator, pattern: str, period: float, r0: float, S: float, num_frames: int, fps: int
) -> Dict[str, Any]:
    """Pattern-specific motion parameters (positions in px, periods in s), drawn from ``rng``."""
    r_max = r0 * (1.45 if pattern == "pulse" else 1.0)
    m = 1.2 * r_max + 1.5  # keeps the whole main object inside the frame
    lo, hi = m, S - 1 - m
    span = hi - lo
    mid = (S - 1) / 2
    p: Dict[str, Any] = {"bounds": [round(lo, 4), round(hi, 4)]}
    if pattern == "bounce":
        p.update(period_x=round(period * _u(rng, 0.8, 1.25), 4), period_y=round(period * _u(rng, 0.8, 1.25), 4),
                 phase_x=_u(rng, 0, 1), phase_y=_u(rng, 0, 1))
    elif pattern in ("orbit", "spiral"):
        radius = span / 2 * _u(rng, 0.55, 0.9) if pattern == "orbit" else span / 2 * _u(rng, 0.7, 0.95)
        room = span / 2 - radius
        p.update(centre=[round(mid + _u(rng, -1, 1) * room, 4), round(mid + _u(rng, -1, 1) * room, 4)],
                 orbit_radius=round(radius, 4), direction=int(rng.choice([-1, 1])), phase=_u(rng, 0, 1))
        if pattern == "spiral":
            p.update(inner_radius=round(radius * _u(rng, 0.1, 0.25), 4), radial_phase=_u(rng, 0, 1),
                     angular_period=round(0.4 * period, 4))
    elif pattern == "zigzag":
        amp = span * _u(rng, 0.4, 1.0)
        p.update(phase_x=_u(rng, 0, 1), phase=_u(rng, 0, 1), drift_period=round(4 * period, 4))
        y0 = lo + _u(rng, 0, 1) * (span - amp)
        p["y_range"] = [round(y0, 4), round(y0 + amp, 4)]
    elif pattern in ("pulse", "fall"):
        p.update(phase=_u(rng, 0, 1), phase_x=_u(rng, 0, 1), drift_period=_u(rng, 4.0, 10.0))
        if pattern == "pulse":
            p.update(phase_y=_u(rng, 0, 1), drift_period_y=_u(rng, 4.0, 10.0))
        else:
            floor = hi - _u(rng, 0, 0.1) * span
            p.update(floor=round(floor, 4), height=round((floor - lo) * _u(rng, 0.5, 0.95), 4))
    elif pattern == "pendulum":
        px = mid + _u(rng, -0.1, 0.1) * S
        py = lo + _u(rng, 0, 0.15) * span
        amp = _u(rng, 0.5, 0.9)
        length = (hi - py) * _u(rng, 0.5, 0.95)
        length = min(length, (min(px - lo, hi - px)) / math.sin(amp))
        p.update(pivot=[round(px, 4), round(py, 4)], length=round(length, 4), amplitude=amp, phase=_u(rng, 0, 1))
    elif pattern == "slide":
        p.update(phase=_u(rng, 0, 1), y=round(lo + _u(rng, 0, 1) * span, 4))
    elif pattern == "figure8":
        ax, ay = span / 2 * _u(rng, 0.6, 0.95), span / 2 * _u(rng, 0.5, 0.9)
        cx, cy = mid + _u(rng, -1, 1) * (span / 2 - ax), mid + _u(rng, -1, 1) * (span / 2 - ay)
        p.update(centre=[round(cx, 4), round(cy, 4)], amplitude=[round(ax, 4), round(ay, 4)], phase=_u(rng, 0, 1))
    elif pattern == "blink":
        phase = _u(rng, 0, 1)
        cycles = int(math.floor(phase + num_frames / fps / period)) + 1
        p.update(phase=phase, duty=0.6,
                 positions=[[_u(rng, lo, hi), _u(rng, lo, hi)] for _ in range(cycles)],
                 jitter=[[round(float(v), 3) for v in row] for row in rng.normal(0, 0.008 * S, (num_frames, 2))])
    else:  # pragma: no cover - _class_spec guards the names
        raise KeyError(pattern)
    return p


def motion(entry: Dict[str, Any]) -> Dict[str, Any]:
    """Per-frame motion of a planned video, full precision (``trajectory`` holds it rounded).

    Returns ``x``, ``y``, ``radius``, ``angle`` (float arrays of length T), ``visible`` (bool T),
    ``distractors`` (a list of dicts with the same arrays plus ``shape`` and ``colour``) and, for
    ``spiral``, ``rho`` (distance to the spiral's centre, whose turns are the events).
    """
    fmt, pat, obj = entry["format"], entry["pattern"], entry["nuisance"]["object"]
    T, fps = fmt["num_frames"], fmt["fps"]
    t = np.arange(T) / fps
    name, P = pat["name"], pat["period"]
    lo, hi = pat["bounds"]
    span = hi - lo
    radius = np.full(T, obj["radius"])
    visible = np.ones(T, bool)
    angle = obj["angle"] + obj["spin"] * t
    extra: Dict[str, np.ndarray] = {}  # pattern-specific signals that define events
    if name == "bounce":
        x = lo + span * _tri(pat["phase_x"] + t / pat["period_x"])
        y = lo + span * _tri(pat["phase_y"] + t / pat["period_y"])
    elif name == "orbit":
        a = 2 * np.pi * (pat["phase"] + pat["direction"] * t / P)
        x = pat["centre"][0] + pat["orbit_radius"] * np.cos(a)
        y = pat["centre"][1] + pat["orbit_radius"] * np.sin(a)
    elif name == "spiral":
        rho = pat["inner_radius"] + (pat["orbit_radius"] - pat["inner_radius"]) * _tri(pat["radial_phase"] + t / P)
        a = 2 * np.pi * (pat["phase"] + pat["direction"] * t / pat["angular_period"])
        extra["rho"] = rho
        x = pat["centre"][0] + rho * np.cos(a)
        y = pat["centre"][1] + rho * np.sin(a)
    elif name == "zigzag":
        x = lo + span * _tri(pat["phase_x"] + t / pat["drift_period"])
        y0, y1 = pat["y_range"]
        y = y0 + (y1 - y0) * _tri(pat["phase"] + t / P)
    elif name == "pulse":
        x = lo + span * _tri(pat["phase_x"] + t / pat["drift_period"])
        y = lo + span * _tri(pat["phase_y"] + t / pat["drift_period_y"])
        radius = obj["radius"] * (1.0 + 0.45 * np.sin(2 * np.pi * (pat["phase"] + t / P)))
    elif name == "fall":
        x = lo + span * _tri(pat["phase_x"] + t / pat["drift_period"])
        u = np.mod(pat["phase"] + t / P, 1.0)
        y = pat["floor"] - pat["height"] * 4.0 * u * (1.0 - u)
    elif name == "pendulum":
        swing = pat["amplitude"] * np.sin(2 * np.pi * (pat["phase"] + t / P))
        x = pat["pivot"][0] + pat["length"] * np.sin(swing)
        y = pat["pivot"][1] + pat["length"] * np.cos(swing)
        angle = obj["angle"] + swing  # the object swings with the arm
    elif name == "slide":
        x = lo + span * _tri(pat["phase"] + t / P)
        y = np.full(T, pat["y"])
    elif name == "figure8":
        a = 2 * np.pi * (pat["phase"] + t / P)
        x = pat["centre"][0] + pat["amplitude"][0] * np.sin(a)
        y = pat["centre"][1] + pat["amplitude"][1] * np.sin(2 * a)
    elif name == "blink":
        u = pat["phase"] + t / P
        cycle = np.floor(u).astype(int)
        visible = np.mod(u, 1.0) < pat["duty"]
        pos = np.asarray(pat["positions"], float)[cycle]
        jit = np.asarray(pat["jitter"], float)
        x = np.clip(pos[:, 0] + jit[:, 0], lo, hi)
        y = np.clip(pos[:, 1] + jit[:, 1], lo, hi)
    else:  # pragma: no cover
        raise KeyError(name)
    dis = []
    for d in entry["nuisance"]["distractors"]:
        lo_d, hi_d = 1.2 * d["radius"] + 1.5, fmt["size"] - 2.5 - 1.2 * d["radius"]
        xy = []
        for axis in range(2):
            v = d["centre"][axis] + sum(
                a * np.sin(2 * np.pi * f * t + ph)
                for a, f, ph in zip(d["amplitude"][axis], d["frequency"][axis], d["phase"][axis])
            )
            xy.append(np.clip(v, lo_d, hi_d))
        dis.append({"x": xy[0], "y": xy[1], "radius": np.full(T, d["radius"]), "angle": d["angle"] + d["spin"] * t,
                    "visible": np.ones(T, bool), "shape": d["shape"], "colour": d["colour"]})
    return {"x": np.asarray(x, float), "y": np.asarray(y, float), "radius": np.asarray(radius, float),
            "angle": np.asarray(angle, float), "visible": visible, "distractors": dis, **extra}


def _extrema(s: np.ndarray, which: str = "both") -> List[int]:
    """Frames k in [1, T-2] where ``s`` turns (the sampled extremum nearest the true one)."""
    if len(s) < 3:
        return []
    d1 = s[1:-1] - s[:-2]
    d2 = s[2:] - s[1:-1]
    eps = 1e-9
    mx = (d1 > eps) & (d2 <= eps)
    mn = (d1 < -eps) & (d2 >= -eps)
    sel = {"both": mx | mn, "max": mx, "min": mn}[which]
    return [int(k) + 1 for k in np.nonzero(sel)[0]]


def _event_frames(pattern: str, m: Dict[str, Any]) -> List[int]:
    """Frame indices of the visual events of ``pattern`` (merged when closer than 2 frames)."""
    x, y = m["x"], m["y"]
    if pattern == "bounce":
        frames = _extrema(x) + _extrema(y)
    elif pattern in ("orbit", "zigzag"):
        frames = _extrema(y)
    elif pattern == "pulse":
        frames = _extrema(m["radius"], "max")
    elif pattern == "fall":
        frames = _extrema(y, "max")
    elif pattern in ("pendulum", "slide", "figure8"):
        frames = _extrema(x)
    elif pattern == "spiral":
        frames = _extrema(m["rho"])  # innermost and outermost points
    elif pattern == "blink":
        v = m["visible"]
        frames = [int(k) for k in np.nonzero(v[1:] & ~v[:-1])[0] + 1]
    else:  # pragma: no cover
        raise KeyError(pattern)
    merged: List[int] = []
    for k in sorted(set(frames)):
        if not merged or k - merged[-1] >= 2:
            merged.append(k)
    return merged


# -- rendering ------------------------------------------------------------------------------------
def _sdf(shape: str, u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Approximate signed distance (px, < 0 inside) to ``shape`` of radius ``r`` in local coords."""
    if shape == "disc":
        return np.sqrt(u * u + v * v) - r
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.8 * r
    if shape == "diamond":
        return (np.abs(u) + np.abs(v) - 1.15 * r) / math.sqrt(2.0)
    if shape == "triangle":
        ri = 0.55 * r  # inradius; vertices at 1.1 r; centroid = centre
        d = None
        for k in range(3):
            a = math.pi / 2 + 2 * math.pi * k / 3
            dk = u * math.cos(a) + v * math.sin(a) - ri
            d = dk if d is None else np.maximum(d, dk)
        return d
    if shape == "ring":
        return np.abs(np.sqrt(u * u + v * v) - 0.72 * r) - 0.28 * r  # thick enough for chroma subsampling
    if shape == "plus":
        w = 0.38 * r
        au, av = np.abs(u), np.abs(v)
        return np.minimum(np.maximum(au - r, av - w), np.maximum(au - w, av - r))
    raise KeyError(f"unknown shape {shape!r}; known: {_SHAPES}")


def _draw(canvas: np.ndarray, pad: int, obj: Dict[str, Any], shape: str, colour: Sequence[int]) -> None:
    """Alpha-blend one object into ``canvas`` (T×(S+2pad)×(S+2pad)×3 uint8) in place, all frames at once."""
    T = canvas.shape[0]
    box = 2 * int(math.ceil(1.2 * float(np.max(obj["radius"])))) + 4
    cx, cy = obj["x"], obj["y"]
    ox = np.floor(cx).astype(int) - box // 2  # box origin per frame, frame coordinates
    oy = np.floor(cy).astype(int) - box // 2
    ar = np.arange(box)
    px = ox[:, None] + ar  # T×box pixel columns
    py = oy[:, None] + ar
    dx = (px - cx[:, None])[:, None, :]  # T×1×box
    dy = (py - cy[:, None])[:, :, None]  # T×box×1
    c, s = np.cos(obj["angle"])[:, None, None], np.sin(obj["angle"])[:, None, None]
    u, v = c * dx + s * dy, -s * dx + c * dy
    # one-pixel-wide linear ramp across the edge: cheap anti-aliasing
    alpha = np.clip(0.5 - _sdf(shape, u, v, obj["radius"][:, None, None]), 0.0, 1.0).astype(np.float32)
    alpha *= obj["visible"][:, None, None]
    tt = np.arange(T)[:, None, None]
    yy = (py + pad)[:, :, None]
    xx = (px + pad)[:, None, :]
    region = canvas[tt, yy, xx].astype(np.float32)  # T×box×box×3
    col = np.asarray(colour, np.float32)
    a = alpha[..., None]
    canvas[tt, yy, xx] = (region * (1.0 - a) + col * a + 0.5).astype(np.uint8)


def _background(bg: Dict[str, Any], size: int, rng: np.random.Generator) -> np.ndarray:
    """size×size×3 float32 background in [0, 1]."""
    c1, c2 = (np.asarray(c, np.float32) / 255.0 for c in bg["colours"])
    g = np.arange(size, dtype=np.float32) / max(size - 1, 1)
    X, Y = g[None, :], g[:, None]
    proj = X * math.cos(bg["angle"]) + Y * math.sin(bg["angle"])
    kind = bg["type"]
    if kind == "flat":
        w = np.zeros((size, size), np.float32)
    elif kind == "gradient":
        w = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1e-6)
    elif kind == "stripes":
        w = 0.5 + 0.5 * np.sin(2 * np.pi * bg["frequency"] * proj + bg["phase"])
    elif kind == "checker":
        k = bg["cells"] * np.pi
        w = 0.5 + 0.5 * np.tanh(3.0 * np.sin(k * X + bg["phase"]) * np.sin(k * Y))
    elif kind == "blobs":
        n = bg["cells"]
        grid = rng.random((n + 1, n + 1)).astype(np.float32)
        pos = g * n
        i0 = np.minimum(pos.astype(int), n - 1)
        f = pos - i0
        rows = grid[i0] * (1 - f)[:, None] + grid[i0 + 1] * f[:, None]  # bilinear upsampling
        w = rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]
        w = (w - w.min()) / max(float(w.max() - w.min()), 1e-6)
    else:
        raise KeyError(f"unknown background type {kind!r}; known: {_BACKGROUNDS}")
    img = c1 + (c2 - c1) * w[..., None].astype(np.float32)
    if bg["grain"] > 0:
        img = img + rng.normal(0.0, bg["grain"], (size, size, 1)).astype(np.float32)
    return np.clip(img, 0.0, 1.0)


def _grain(timbre: str, f0: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """One sound event (peak 1): a class timbre with a 3 ms attack and an exponential decay."""
    L = int(0.22 * rate)
    t = np.arange(L) / rate
    nyq = 0.45 * rate
    f0 = min(f0, nyq)
    two_pi = 2 * np.pi
    tau = 0.05
    if timbre == "blip":
        w = np.sin(two_pi * f0 * t)
    elif timbre in ("chirp_up", "chirp_down"):
        ratio, d = (3.0, 0.15) if timbre == "chirp_up" else (1 / 3.0, 0.15)
        fmax = max(f0, f0 * ratio ** (t[-1] / d))
        if fmax > nyq:  # keep the sweep below Nyquist
            f0 *= nyq / fmax
        w = np.sin(two_pi * f0 * d / math.log(ratio) * (ratio ** (t / d) - 1.0))
        tau = 0.07
    elif timbre == "noise_burst":
        w = rng.standard_normal(L)
        tau = 0.04
    elif timbre == "click_train":
        w = np.zeros(L)
        for j, amp in enumerate((1.0, 0.8, 0.6, 0.4)):
            tj = t - 0.025 * j
            on = tj >= 0
            # each click has its own 0.5 ms attack and 4 ms decay; the first one is the loudest
            w[on] += amp * (1.0 - np.exp(-tj[on] / 0.0005)) * np.exp(-tj[on] / 0.004) * np.sin(two_pi * f0 * tj[on])
        return w / max(float(np.abs(w).max()), 1e-9)
    elif timbre == "am_tone":
        # fast tremolo (70 Hz): later lobes stay below the first under the decay
        w = np.sin(two_pi * f0 * t) * (0.5 + 0.5 * np.cos(two_pi * 70.0 * t))
        tau = 0.08
    elif timbre == "fm_tone":
        w = np.sin(two_pi * f0 * t + 6.0 * np.sin(two_pi * 15.0 * t))
        tau = 0.08
    elif timbre == "thud":
        d = 0.05
        ratio = 1 / 2.5
        w = np.sin(two_pi * f0 * d / math.log(ratio) * (ratio ** (t / d) - 1.0)) + 0.15 * rng.standard_normal(L)
        tau = 0.05
    elif timbre == "square_buzz":
        w = sum(np.sin(two_pi * k * f0 * t) / k for k in range(1, 12, 2) if k * f0 < nyq)
        tau = 0.06
    elif timbre == "dyad":
        w = sum(a * np.sin(two_pi * m * f0 * t) for m, a in ((1.0, 1.0), (1.5, 1.0), (2.0, 0.5)) if m * f0 < nyq)
        tau = 0.08
    else:
        raise KeyError(f"unknown timbre {timbre!r}; known: {_TIMBRES}")
    env = np.minimum(t / 0.003, 1.0) * np.exp(-t / tau)
    w = np.asarray(w, float) * env
    return w / max(float(np.abs(w).max()), 1e-9)


def _noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance noise with a white, pink (1/f power) or brown (1/f² power) spectrum."""
    white = rng.standard_normal(n)
    if colour == "white" or n < 4:
        return white
    spec = np.fft.rfft(white)
    f = np.arange(len(spec), dtype=float)
    f[0] = 1.0
    spec *= f ** (-0.5 if colour == "pink" else -1.0)
    spec[0] = 0.0
    w = np.fft.irfft(spec, n)
    return w / max(float(w.std()), 1e-12)


def render_video(entry: Dict[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
    """Pixels and sound of a planned video (see :func:`plan_video`).

    Returns ``(frames, audio)``: uint8 T×S×S×3 RGB frames and a float32 mono waveform of
    ``format.num_samples`` samples in [-1, 1] (always made; :func:`synthesize` drops it for videos
    without audio).
    """
    fmt = entry["format"]
    S, T = fmt["size"], fmt["num_frames"]
    _plan_ss, render_ss, audio_ss = np.random.SeedSequence(entry["seed_entropy"]).spawn(3)
    rng = np.random.default_rng(render_ss)
    m = motion(entry)
    nz = entry["nuisance"]
    objects = m["distractors"] + [dict(m, shape=nz["object"]["shape"], colour=nz["object"]["colour"])]
    pad = 2 * int(math.ceil(1.2 * max(float(np.max(o["radius"])) for o in objects))) + 4
    bg = (_background(nz["background"], S, rng) * 255.0 + 0.5).astype(np.uint8)
    canvas = np.empty((T, S + 2 * pad, S + 2 * pad, 3), np.uint8)
    canvas[:] = np.pad(bg, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    for o in objects:  # distractors first: the main object is never occluded
        _draw(canvas, pad, o, o["shape"], o["colour"])
    frames = np.ascontiguousarray(canvas[:, pad : pad + S, pad : pad + S])

    arng = np.random.default_rng(audio_ss)
    rate, n = fmt["audio_rate"], fmt["num_samples"]
    au = nz["audio"]
    wave = np.zeros(n)
    f0 = entry["sound"]["f0"] * au["pitch_factor"]
    for k in entry["events"]["frame"]:
        g = _grain(entry["sound"]["timbre"], f0, rate, arng)
        s0 = int(round(k / fmt["fps"] * rate))
        if s0 < n:
            wave[s0 : s0 + len(g)] += g[: n - s0]
    wave *= au["gain"]
    wave += au["noise_level"] * _noise(n, au["noise_colour"], arng)
    if au["hum_level"] > 0:
        ts = np.arange(n) / rate
        wave += au["hum_level"] * np.sin(2 * np.pi * min(au["hum_hz"], 0.45 * rate) * ts + arng.uniform(0, 2 * np.pi))
    return frames, np.clip(wave, -1.0, 1.0).astype(np.float32)


# -- encoding -------------------------------------------------------------------------------------
def write_mp4(
    path: str | os.PathLike, frames: np.ndarray, audio: Optional[np.ndarray], fps: int, audio_rate: int = 16000
) -> None:
    """Encode T×H×W×3 uint8 ``frames`` (H.264, yuv420p) and mono ``audio`` (AAC; None: no track) to ``path``.

    Written to a temporary name in the same folder and renamed, so ``path`` is either absent or
    complete. One x264 thread: identical inputs give identical bytes.
    """
    import av

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    T, H, W, _ = frames.shape
    if H % 2 or W % 2:
        raise ValueError(f"{path}: libx264 yuv420p needs an even width and height, got {W}x{H}")
    try:
        with av.open(tmp, mode="w", format="mp4") as container:
            vs = container.add_stream("libx264", rate=fps)
            vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
            # one keyframe a second keeps random access cheap for clip sampling
            vs.options = {"preset": "veryfast", "crf": "20", "threads": "1", "g": str(fps)}
            ast = None
            if audio is not None:
                ast = container.add_stream("aac", rate=audio_rate)
                ast.layout = "mono"
                ast.bit_rate = 64000
            for i in range(T):
                frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
                frame.pts = i
                container.mux(vs.encode(frame))
            container.mux(vs.encode())
            if ast is not None:
                wave = np.ascontiguousarray(audio, np.float32).reshape(-1)
                hop = 1024  # the AAC frame size
                for k in range(0, len(wave), hop):
                    af = av.AudioFrame.from_ndarray(wave[None, k : k + hop].copy(), format="fltp", layout="mono")
                    af.sample_rate = audio_rate
                    af.pts = k
                    af.time_base = Fraction(1, audio_rate)
                    container.mux(ast.encode(af))
                container.mux(ast.encode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _write_one(entry: Dict[str, Any], path: str) -> str:
    """Render and encode one planned video (runs in a worker process)."""
    try:
        frames, audio = render_video(entry)
        fmt = entry["format"]
        write_mp4(path, frames, audio if entry.get("has_audio", True) else None, fmt["fps"], fmt["audio_rate"])
    except Exception as e:
        raise RuntimeError(f"failed to synthesise {path}: {type(e).__name__}: {e}") from e
    return entry["video_id"]


# -- the corpus -----------------------------------------------------------------------------------
def _check_args(classes: int, per_class: int, seconds: float, size: int, fps: int, audio_rate: int, seed: int,
                val_fraction: float, no_audio_fraction: float, workers: Optional[int]) -> None:
    _class_table(classes)
    if not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise InvalidArgument(f"per_class must be an int >= 1, got {per_class!r}")
    if not isinstance(fps, (int, np.integer)) or fps < 1:
        raise InvalidArgument(f"fps must be an int >= 1, got {fps!r}")
    if not (isinstance(seconds, (int, float)) and seconds > 0 and round(seconds * fps) >= 3):
        raise InvalidArgument(f"seconds must give at least 3 frames at fps={fps}, got seconds={seconds!r}")
    if not isinstance(size, (int, np.integer)) or size < 16 or size % 2:
        raise InvalidArgument(f"size must be an even int >= 16 (libx264 yuv420p), got {size!r}")
    if audio_rate not in _AAC_RATES:
        raise InvalidArgument(f"audio_rate must be an AAC sample rate {_AAC_RATES}, got {audio_rate!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise InvalidArgument(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if not 0.0 <= no_audio_fraction <= 1.0:
        raise InvalidArgument(f"no_audio_fraction must be in [0, 1], got {no_audio_fraction!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise InvalidArgument(f"seed must be an int >= 0, got {seed!r}")
    if workers is not None and (not isinstance(workers, (int, np.integer)) or workers < 0):
        raise InvalidArgument(f"workers must be None or an int >= 0, got {workers!r}")


def _plan_corpus(classes: int, per_class: int, seconds: float, size: int, fps: int, audio_rate: int,
                 seed: int, val_fraction: float, no_audio_fraction: float, nuisance: str = "full") -> Dict[str, Any]:
    names = class_names(classes)
    n_val = int(round(per_class * val_fraction))
    if val_fraction > 0 and per_class >= 2:
        n_val = min(max(n_val, 1), per_class - 1)  # every class in both splits when possible
    n_val = min(n_val, per_class - 1) if per_class >= 2 else 0
    total = classes * per_class
    n_silent = int(round(total * no_audio_fraction))
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED])).permutation(total)
    silent = set(order[:n_silent].tolist())
    videos: Dict[str, Any] = {}
    for label, name in enumerate(names):
        for i in range(per_class):
            e = plan_video(name, i, seconds=seconds, size=size, fps=fps, audio_rate=audio_rate, seed=seed,
                           nuisance=nuisance)
            head = {
                "video_id": e["video_id"],
                "path": f"videos/{name}/{e['video_id']}.mp4",
                "class": name,
                "label": label,
                "index": i,
                "split": "val" if i >= per_class - n_val else "train",
                "has_audio": (label * per_class + i) not in silent,
            }
            videos[e["video_id"]] = {**head, **{k: v for k, v in e.items() if k not in head}}
    pattern_of = _class_table(classes)
    return {
        "format": FORMAT,
        "version": VERSION,
        "args": {"classes": classes, "per_class": per_class, "seconds": seconds, "size": size, "fps": fps,
                 "audio_rate": audio_rate, "seed": seed, "val_fraction": val_fraction,
                 "no_audio_fraction": no_audio_fraction, **({"nuisance": nuisance} if nuisance != "full" else {})},
        "classes": [
            {"label": k, "name": n, "pattern": pattern_of[n][0], "variant": pattern_of[n][1],
             "timbre": videos[f"{n}_0000"]["sound"]["timbre"]}
            for k, n in enumerate(names)
        ],
        "videos": videos,
    }


def _side_files(meta: Dict[str, Any], seconds: float) -> Dict[str, str]:
    """relative path -> text of annotations.csv, classes.txt and the UCF-101 split files."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
    videos = list(meta["videos"].values())
    for e in videos:
        w.writerow([e["class"], e["video_id"], 0, f"{seconds:g}", e["split"]])
    names = [c["name"] for c in meta["classes"]]
    files = {
        "annotations.csv": buf.getvalue(),
        "classes.txt": "".join(f"{n}\n" for n in names),
        os.path.join("splits", "classInd.txt"): "".join(f"{k + 1} {n}\n" for k, n in enumerate(names)),
    }
    per_class = meta["args"]["per_class"]
    n_val = sum(e["label"] == 0 and e["split"] == "val" for e in videos)
    for k in range(3):
        # Split 1 holds out the last n_val videos of each class (the val split); each next split the n_val before.
        held_out = {(per_class - n_val * (k + 1) + j) % per_class for j in range(n_val)}
        train, test = [], []
        for e in videos:
            rel = f"{e['class']}/{e['video_id']}.mp4"
            if e["index"] in held_out:
                test.append(f"{rel}\n")
            else:
                train.append(f"{rel} {e['label'] + 1}\n")
        files[os.path.join("splits", f"trainlist{k + 1:02d}.txt")] = "".join(train)
        files[os.path.join("splits", f"testlist{k + 1:02d}.txt")] = "".join(test)
    return files


def _pool_context() -> Any:
    # fork starts workers without re-importing torch (seconds per worker); ProcessPoolExecutor forks
    # all of them before it starts its own thread. Elsewhere use the platform default.
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def synthesize(
    out_dir: str | os.PathLike,
    classes: int = 10,
    per_class: int = 40,
    seconds: float = 4.0,
    size: int = 128,
    fps: int = 25,
    audio_rate: int = 16000,
    seed: int = 0,
    val_fraction: float = 0.25,
    workers: Optional[int] = None,
    progress: bool = True,
    no_audio_fraction: float = 0.0,
    nuisance: str = "full",
) -> Dict[str, Any]:
    """Write the synthetic corpus to ``out_dir`` (layout in the module docstring); return a summary.

    ``nuisance="low"`` (flat/gradient backgrounds, at most one distractor) gives a less cluttered corpus;
    ``"full"`` (default) is the harder one.

    Args:
        classes: number of classes (1-40; see :func:`class_names`).
        per_class: videos per class; the last ``round(per_class·val_fraction)`` of each class (at
            least one when val_fraction > 0 and per_class >= 2) form the val split.
        seconds, size, fps, audio_rate: duration, frame side (even), frame rate and AAC sample rate.
        seed: corpus seed; every video derives its own generator from (seed, class, index).
        workers: processes rendering and encoding (default min(4, cpu count); 0 or 1: in this process).
        progress: show a progress bar.
        no_audio_fraction: fraction of the videos (chosen from the seed) written without an audio track.

    Returns:
        dict with out_dir, classes, videos, train, val, with_audio, without_audio, written, skipped
        (complete videos already present), the paths of the videos folder, annotations.csv,
        metadata.json, splits folder and classes.txt, and wall_time_s.

    Raises:
        ValueError: an invalid argument (named), or ``out_dir`` already holds a corpus whose
            metadata.json differs (other arguments or another generator version).
    """
    t0 = time.perf_counter()
    _check_args(classes, per_class, seconds, size, fps, audio_rate, seed, val_fraction, no_audio_fraction, workers)
    # plain Python numbers: numpy scalars would not serialise, and 4 and 4.0 must give the same metadata
    classes, per_class, size, fps = int(classes), int(per_class), int(size), int(fps)
    audio_rate, seed = int(audio_rate), int(seed)
    seconds, val_fraction, no_audio_fraction = float(seconds), float(val_fraction), float(no_audio_fraction)
    out = os.path.abspath(os.fspath(out_dir))
    meta = _plan_corpus(classes, per_class, seconds, size, fps, audio_rate, seed, val_fraction, no_audio_fraction,
                        nuisance)
    meta_text = _to_json(meta) + "\n"
    meta_path = os.path.join(out, "metadata.json")
    if os.path.isfile(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            old_text = f.read()
        if old_text != meta_text:
            try:
                old_args = json.loads(old_text).get("args", {})
            except (json.JSONDecodeError, AttributeError):
                old_args = {}
            diff = {k: (old_args.get(k), v) for k, v in meta["args"].items() if old_args.get(k) != v}
            what = f"other arguments (old, new): {diff}" if diff else "another generator version"
            raise ValueError(
                f"{out} already holds a synthetic corpus made with {what}; use an empty folder or delete it"
            )
    os.makedirs(out, exist_ok=True)
    # Metadata and side files first: a run stopped half-way leaves the plan, and a rerun checks it.
    atomic_write_text(meta_path, meta_text)
    for rel, text in _side_files(meta, seconds).items():
        atomic_write_text(os.path.join(out, rel), text)

    todo: List[Tuple[Dict[str, Any], str]] = []
    skipped = 0
    for e in meta["videos"].values():
        path = os.path.join(out, e["path"])
        folder = os.path.dirname(path)
        if os.path.isdir(folder):
            for name in os.listdir(folder):  # temporaries left by an interrupted run
                if name.startswith(f".{e['video_id']}.mp4.") and name.endswith(".tmp"):
                    os.remove(os.path.join(folder, name))
        if os.path.isfile(path) and os.path.getsize(path) > 0:
            skipped += 1
        else:
            todo.append((e, path))

    n_workers = min(4, os.cpu_count() or 1) if workers is None else workers
    n_workers = max(1, min(n_workers, len(todo)))
    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    )

    columns = (TextColumn("[bold]synth"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    if n_workers == 1:
        with Progress(*columns, disable=not progress) as bar:
            task = bar.add_task("synth", total=len(todo))
            for e, path in todo:
                _write_one(e, path)
                bar.advance(task)
    else:
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=_pool_context()) as pool:
            futures = [pool.submit(_write_one, e, path) for e, path in todo]  # workers start before the bar's thread
            with Progress(*columns, disable=not progress) as bar:
                task = bar.add_task("synth", total=len(todo))
                try:
                    for fut in as_completed(futures):
                        fut.result()
                        bar.advance(task)
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise

    vids = list(meta["videos"].values())
    n_train = sum(e["split"] == "train" for e in vids)
    n_audio = sum(e["has_audio"] for e in vids)
    return {
        "out_dir": out,
        "classes": classes,
        "videos": len(vids),
        "train": n_train,
        "val": len(vids) - n_train,
        "with_audio": n_audio,
        "without_audio": len(vids) - n_audio,
        "written": len(todo),
        "skipped": skipped,
        "videos_dir": os.path.join(out, "videos"),
        "annotations": os.path.join(out, "annotations.csv"),
        "metadata": meta_path,
        "splits": os.path.join(out, "splits"),
        "classes_txt": os.path.join(out, "classes.txt"),
        "wall_time_s": round(time.perf_counter() - t0, 3),
    }


def make_corpus(out: str, classes: int = 10, per_class: int = 24, seconds: float = 4.0, size: int = 128,
                seed: int = 0, workers: Optional[int] = None, short_side: int = 80) -> Dict[str, Any]:
    """Synthesise the corpus under ``out/synthetic`` and prepare it (``avssl prep``) under ``out/prepared``:
    what the demo and the comparison train on.

    Returns ``{"manifest", "report", "synth_s", "prep_s"}``. Both steps skip work already done
    (synthesis writes a video only when it is missing; prep keeps finished outputs), so a second call is cheap.
    """
    from avssl.data.prep import prepare, print_summary

    raw = os.path.join(out, "synthetic")
    prepared = os.path.join(out, "prepared")
    t0 = time.perf_counter()
    synthesize(raw, classes=classes, per_class=per_class, seconds=seconds, size=size, seed=seed, workers=workers)
    t_synth = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = prepare(os.path.join(raw, "videos"), prepared, short_side=short_side, audio_rate=16000,
                     csv=os.path.join(raw, "annotations.csv"), workers=workers)
    print_summary(report)
    return {"manifest": os.path.join(prepared, "manifest.csv"), "report": report, "synth_s": t_synth,
            "prep_s": time.perf_counter() - t0}
