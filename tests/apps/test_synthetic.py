"""The synthetic audio-visual corpus: layout, decodability, determinism, and that its ground truth
(trajectories, sound events) matches the pixels and the sound."""
from __future__ import annotations

import csv
import json
import os

import av
import numpy as np
import pytest

from avssl.apps.synthetic import CLASS_NAMES, MAX_CLASSES, class_names, plan_video, render_video, synthesize

TINY = dict(classes=3, per_class=2, seconds=1.0, size=64, fps=25, audio_rate=16000, workers=2, progress=False)


def _decode(path: str):
    """(frames T×H×W×3 uint8, video stream info, audio float32 or None, audio rate)."""
    with av.open(path) as c:
        vs = c.streams.video[0]
        info = {"fps": float(vs.average_rate), "width": vs.codec_context.width, "height": vs.codec_context.height}
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    with av.open(path) as c:
        if not c.streams.audio:
            return frames, info, None, None
        rate = c.streams.audio[0].codec_context.sample_rate
        chunks, first_pts = [], None
        for f in c.decode(audio=0):
            first_pts = f.pts if first_pts is None else first_pts
            chunks.append(f.to_ndarray().reshape(-1))
        assert first_pts == 0  # the encoder's priming samples are not returned
        return frames, info, np.concatenate(chunks), rate


def _colour_pixels(frame: np.ndarray, colour) -> int:
    return int((np.linalg.norm(frame.astype(np.float64) / 255.0 - np.asarray(colour) / 255.0, axis=-1) < 0.2).sum())


def _centroid(frame: np.ndarray, colour, radius: float):
    """Centre of the pixels of ``colour`` in an RGB frame: the centroid of those within 2·radius of
    their median (robust to stray anti-aliased edge pixels of other objects), or None."""
    d = np.linalg.norm(frame.astype(np.float64) / 255.0 - np.asarray(colour) / 255.0, axis=-1)
    yy, xx = np.nonzero(d < 0.2)
    if len(yy) == 0:
        return None
    keep = np.hypot(yy - np.median(yy), xx - np.median(xx)) <= 2 * radius
    return float(xx[keep].mean()), float(yy[keep].mean())


def _envelope(wave: np.ndarray, rate: int, hop_s: float = 0.0025):
    """RMS over 10 ms windows every ``hop_s`` seconds, and the window-centre times."""
    win = int(0.01 * rate)
    power = np.convolve(wave.astype(np.float64) ** 2, np.ones(win) / win, mode="same")
    hop = int(hop_s * rate)
    return np.sqrt(power[::hop]), np.arange(len(power))[::hop] / rate


def _check_events(wave: np.ndarray, rate: int, events, duration: float) -> int:
    """Assert the sound peaks within 40 ms after each isolated event and is quiet just before it."""
    env, t = _envelope(wave, rate)
    checked = 0
    for j, te in enumerate(events):
        if j > 0 and te - events[j - 1] < 0.25 or te + 0.06 > duration:
            continue  # the previous grain still rings, or the window runs off the end
        near = (t >= te - 0.08) & (t <= te + 0.08)
        peak_t = t[near][np.argmax(env[near])]
        assert abs(peak_t - te) <= 0.04, (te, peak_t)
        before = env[(t >= te - 0.07) & (t <= te - 0.02)].mean()
        after = env[(t >= te) & (t <= te + 0.04)].mean()
        assert after > 3 * before, (te, before, after)
        checked += 1
    return checked


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "a"
    summary = synthesize(out, **TINY)
    with open(out / "metadata.json", encoding="utf-8") as f:
        meta = json.load(f)
    return out, summary, meta


def test_class_names():
    assert class_names(10) == list(CLASS_NAMES) == sorted(CLASS_NAMES)
    assert class_names(3) == sorted(CLASS_NAMES[:3])
    many = class_names(MAX_CLASSES)
    assert len(set(many)) == MAX_CLASSES == 40 and many == sorted(many)
    assert "bounce_fast" in class_names(12) and "bounce_fast" not in class_names(10)
    with pytest.raises(ValueError, match="classes"):
        class_names(MAX_CLASSES + 1)
    # a variant reuses the motion pattern at a speed whose range never meets the base one, with
    # another sound
    base = [plan_video("bounce", i, seconds=0.2, size=32) for i in range(12)]
    fast = [plan_video("bounce_fast", i, seconds=0.2, size=32) for i in range(12)]
    assert max(e["pattern"]["period"] for e in fast) < min(e["pattern"]["period"] for e in base)
    assert base[0]["sound"]["timbre"] != fast[0]["sound"]["timbre"]


def test_layout_files_agree(corpus):
    out, summary, meta = corpus
    names = class_names(3)
    assert summary["videos"] == 6 and summary["train"] == 3 and summary["val"] == 3
    assert summary["written"] == 6 and summary["skipped"] == 0
    assert (out / "classes.txt").read_text().split("\n") == names + [""]
    assert (out / "splits" / "classInd.txt").read_text().splitlines() == [f"{k + 1} {n}" for k, n in enumerate(names)]
    videos = meta["videos"]
    assert meta["args"]["classes"] == 3 and len(videos) == 6
    for vid, e in videos.items():
        assert vid == f"{e['class']}_{e['index']:04d}"
        assert e["label"] == names.index(e["class"])
        assert e["path"] == f"videos/{e['class']}/{vid}.mp4" and (out / e["path"]).is_file()
        assert len(e["trajectory"]["x"]) == 25 and e["has_audio"]
    # stratified: one train and one val video per class
    for n in names:
        assert sorted(e["split"] for e in videos.values() if e["class"] == n) == ["train", "val"]
    with open(out / "annotations.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["label", "youtube_id", "time_start", "time_end", "split"]
    assert sorted(rows[1:]) == sorted([e["class"], vid, "0", "1", e["split"]] for vid, e in videos.items())
    train = (out / "splits" / "trainlist01.txt").read_text().splitlines()
    test = (out / "splits" / "testlist01.txt").read_text().splitlines()
    assert sorted(train) == sorted(
        f"{e['class']}/{vid}.mp4 {e['label'] + 1}" for vid, e in videos.items() if e["split"] == "train"
    )
    assert sorted(test) == sorted(f"{e['class']}/{vid}.mp4" for vid, e in videos.items() if e["split"] == "val")
    for line in train + test:
        assert (out / "videos" / line.split()[0]).is_file()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp")]
    # a video's content does not depend on the size of the corpus it is part of
    alone = plan_video("fall", 1, seconds=1.0, size=64, seed=0)
    assert alone["trajectory"] == videos["fall_0001"]["trajectory"]
    assert alone["nuisance"] == videos["fall_0001"]["nuisance"]


def test_kinetics_csv_reader_finds_every_video(corpus):
    from avssl.data.manifest import read_kinetics_csv

    out, _, meta = corpus
    rows = read_kinetics_csv(out / "annotations.csv", out / "videos")
    assert not rows.missing and len(rows) == 6
    for r in rows:
        e = meta["videos"][os.path.basename(r.path)[:-4]]
        assert (r.label, r.label_index, r.split) == (e["class"], e["label"], e["split"])


def test_decoded_streams(corpus):
    out, _, meta = corpus
    for e in meta["videos"].values():
        frames, info, audio, rate = _decode(str(out / e["path"]))
        assert frames.shape == (25, 64, 64, 3)
        assert (info["width"], info["height"], info["fps"]) == (64, 64, 25.0)
        assert rate == 16000
        assert abs(len(audio) / rate - 1.0) <= 0.05
        assert np.abs(audio).max() <= 1.0


def test_no_audio_fraction(tmp_path):
    all_silent = synthesize(tmp_path / "s", classes=1, per_class=2, seconds=0.4, size=32, workers=0,
                            progress=False, no_audio_fraction=1.0)
    assert all_silent["without_audio"] == 2
    for p in (tmp_path / "s" / "videos").rglob("*.mp4"):
        with av.open(str(p)) as c:
            assert not c.streams.audio and len(c.streams.video) == 1
    half = synthesize(tmp_path / "h", classes=2, per_class=2, seconds=0.4, size=32, workers=0, progress=False,
                      no_audio_fraction=0.5)
    meta = json.loads((tmp_path / "h" / "metadata.json").read_text())
    assert half["without_audio"] == sum(not e["has_audio"] for e in meta["videos"].values()) == 2
    for e in meta["videos"].values():
        with av.open(str(tmp_path / "h" / e["path"])) as c:
            assert bool(c.streams.audio) == e["has_audio"]


def _assert_same_media(a, b):
    """Same decoded content, up to the codec. The rendered frames and sound are identical (see
    test_resume_renders_identical_frames_and_sound), and the files usually byte-identical, but inside a
    long test session x264 has re-encoded the same frames into a slightly different bitstream (a few
    levels on some pixels), so decoded frames are compared with a tolerance far below the difference
    between two seeds (> 10 levels, test_determinism)."""
    fa, ia, sa, ra = _decode(str(a))
    fb, ib, sb, rb = _decode(str(b))
    assert ia == ib and fa.shape == fb.shape and ra == rb
    assert np.abs(fa.astype(int) - fb.astype(int)).mean() < 3.0
    assert (sa is None) == (sb is None)
    if sa is not None:
        assert sa.shape == sb.shape and np.abs(sa - sb).max() < 0.05


def test_determinism(corpus, tmp_path):
    out, _, meta = corpus
    synthesize(tmp_path / "same", **TINY)
    assert (tmp_path / "same" / "metadata.json").read_bytes() == (out / "metadata.json").read_bytes()
    for e in meta["videos"].values():
        _assert_same_media(tmp_path / "same" / e["path"], out / e["path"])
    synthesize(tmp_path / "other", **dict(TINY, seed=1))
    other = json.loads((tmp_path / "other" / "metadata.json").read_text())
    for vid, e in meta["videos"].items():
        assert other["videos"][vid]["trajectory"] != e["trajectory"]
        a, _, _, _ = _decode(str(out / e["path"]))
        b, _, _, _ = _decode(str(tmp_path / "other" / e["path"]))
        assert np.abs(a.astype(int) - b.astype(int)).mean() > 10


def test_resume_renders_identical_frames_and_sound(tmp_path, monkeypatch):
    import hashlib

    import avssl.apps.synthetic as synthetic

    rendered = []
    encode = synthetic.write_mp4

    def spy(path, frames, audio, fps, audio_rate=16000):
        rendered.append((hashlib.md5(frames.tobytes()).hexdigest(), hashlib.md5(audio.tobytes()).hexdigest()))
        return encode(path, frames, audio, fps, audio_rate)

    monkeypatch.setattr(synthetic, "write_mp4", spy)
    kw = dict(classes=1, per_class=2, seconds=0.4, size=32, workers=0, progress=False)
    synthesize(tmp_path / "a", **kw)
    (tmp_path / "a" / "videos" / "blink" / "blink_0001.mp4").unlink()
    synthesize(tmp_path / "a", **kw)  # re-renders only the missing video
    assert len(rendered) == 3 and rendered[2] == rendered[1] and rendered[0] != rendered[1]


def test_resume_and_argument_conflict(tmp_path):
    kw = dict(classes=1, per_class=2, seconds=0.4, size=32, workers=0, progress=False)
    out = tmp_path / "r"
    first = synthesize(out, **kw)
    meta_bytes = (out / "metadata.json").read_bytes()
    victim = out / "videos" / "blink" / "blink_0001.mp4"
    original_copy = tmp_path / "original.mp4"
    original_copy.write_bytes(victim.read_bytes())
    kept = out / "videos" / "blink" / "blink_0000.mp4"
    mtime = kept.stat().st_mtime_ns
    victim.unlink()
    (victim.parent / ".blink_0001.mp4.999.tmp").write_bytes(b"half a file")  # an interrupted write
    again = synthesize(out, **kw)
    assert (first["written"], again["written"], again["skipped"]) == (2, 1, 1)
    assert kept.stat().st_mtime_ns == mtime
    _assert_same_media(victim, original_copy)
    assert (out / "metadata.json").read_bytes() == meta_bytes
    assert not (victim.parent / ".blink_0001.mp4.999.tmp").exists()
    with pytest.raises(ValueError, match="size"):
        synthesize(out, **dict(kw, size=48))


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="size"):
        synthesize(tmp_path, size=63, progress=False)
    with pytest.raises(ValueError, match="classes"):
        synthesize(tmp_path, classes=0, progress=False)
    with pytest.raises(ValueError, match="val_fraction"):
        synthesize(tmp_path, val_fraction=1.0, progress=False)
    with pytest.raises(KeyError, match="unknown synthetic class"):
        plan_video("nope", 0)
    assert not os.listdir(tmp_path)


def test_trajectory_matches_decoded_pixels(corpus):
    out, _, meta = corpus
    for e in meta["videos"].values():
        frames, _, _, _ = _decode(str(out / e["path"]))
        tr, colour = e["trajectory"], e["nuisance"]["object"]["colour"]
        errors = []
        for k in range(0, 25, 2):
            c = _centroid(frames[k], colour, tr["radius"][k])
            if not tr["visible"][k]:
                assert _colour_pixels(frames[k], colour) <= 2  # a hidden object leaves no pixel of its colour
                continue
            assert c is not None, (e["video_id"], k)
            errors.append(np.hypot(c[0] - tr["x"][k], c[1] - tr["y"][k]))
        assert len(errors) >= 5
        assert np.median(errors) < 1.5 and max(errors) < 4.0, (e["video_id"], errors)


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_every_pattern_events_are_visual_and_audible(name):
    e = plan_video(name, 0, seconds=2.0, size=48)
    frames, wave = render_video(e)
    tr = e["trajectory"]
    x, y, r = (np.asarray(tr[k]) for k in ("x", "y", "radius"))
    frames_k = e["events"]["frame"]
    assert len(frames_k) >= 1 and e["events"]["time"] == [round(k / 25, 4) for k in frames_k]

    # each event is a visual event of the pattern, read off the recorded trajectory
    def turns(s, k):
        return (s[k] - s[k - 1]) * (s[k + 1] - s[k]) <= 0

    for k in frames_k:
        if name == "blink":
            assert tr["visible"][k] and not tr["visible"][k - 1]
        elif name == "pulse":
            assert r[k] >= r[k - 1] and r[k] >= r[k + 1]
        elif name == "spiral":
            cx, cy = e["pattern"]["centre"]
            assert turns(np.hypot(x - cx, y - cy), k)
        else:
            assert turns(x, k) or turns(y, k), (name, k)
    # the rendered main object sits on the trajectory
    colour = e["nuisance"]["object"]["colour"]
    for k in range(0, len(frames), 5):
        if tr["visible"][k]:
            c = _centroid(frames[k], colour, r[k])
            assert c is not None and np.hypot(c[0] - x[k], c[1] - y[k]) < 1.0
    # each isolated event starts a sound grain
    assert _check_events(wave, 16000, e["events"]["time"], 2.0) >= 1


def test_sound_events_in_encoded_audio(corpus):
    out, _, meta = corpus
    checked = 0
    for e in meta["videos"].values():
        _, _, audio, rate = _decode(str(out / e["path"]))
        checked += _check_events(audio, rate, e["events"]["time"], 1.0)
    assert checked >= 3


def test_class_not_readable_from_colour():
    """Leave-one-out nearest-class-mean on the mean RGB of a video is near chance (1/10)."""
    names = class_names(10)
    feats, labels, obj = [], [], []
    for label, name in enumerate(names):
        for i in range(8):
            e = plan_video(name, i, seconds=0.2, size=32)
            frames, _ = render_video(e)
            feats.append(frames.reshape(-1, 3).mean(0))
            labels.append(label)
            obj.append(e["nuisance"]["object"]["colour"])
    X, y = np.asarray(feats), np.asarray(labels)
    correct = 0
    for i in range(len(X)):
        others = np.arange(len(X)) != i
        means = np.stack([X[others & (y == c)].mean(0) for c in range(10)])
        correct += int(np.argmin(np.linalg.norm(means - X[i], axis=1)) == y[i])
    assert correct / len(X) <= 0.25  # chance is 0.1; a colour-coded class would give ~1.0
    # the object's colour varies within a class as much as across classes
    obj = np.asarray(obj, float).reshape(10, 8, 3)
    assert obj.std(axis=1).mean() > 0.7 * obj.reshape(-1, 3).std(axis=0).mean()


def test_low_nuisance_keeps_to_plain_backgrounds_and_one_distractor():
    from avssl.apps.synthetic import plan_video

    entries = [plan_video(c, i, seconds=0.4, size=32, fps=10, nuisance="low") for c in ("orbit", "slide") for i in range(12)]
    assert {e["nuisance"]["background"]["type"] for e in entries} <= {"flat", "gradient"}
    assert max(e["nuisance"]["distractor_count"] for e in entries) <= 1
    full = [plan_video("orbit", i, seconds=0.4, size=32, fps=10) for i in range(30)]
    assert len({e["nuisance"]["background"]["type"] for e in full}) > 2
    import pytest

    with pytest.raises(ValueError, match="nuisance"):
        plan_video("orbit", 0, nuisance="none")
