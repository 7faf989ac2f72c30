"""``avssl prep``: outputs, bad files, atomic writes, resuming, Kinetics trims, --check, worker crashes."""
from __future__ import annotations

import faulthandler
import hashlib
import json
import os
import shutil
import signal
import time
from fractions import Fraction

import av
import numpy as np
import pytest

from avssl.data import decoding
from avssl.data.manifest import read_manifest
from avssl.data.prep import output_size, prepare, print_summary

TONE_HZ = 440.0
RATE = 16000


def gray(i: int) -> int:
    """Frame i of a generated video is uniformly this gray level (survives scaling and H.264)."""
    return 16 + 5 * i


def write_video(path, n=20, fps=10, width=64, height=48, audio=True, codec="libx264") -> str:
    """An mp4 of ``n`` uniform gray frames (level ``gray(i)``) with a 440 Hz tone at 16 kHz."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(str(path), "w") as c:
        vs = c.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            vs.options = {"preset": "ultrafast", "crf": "10"}
        st = c.add_stream("aac", rate=RATE, layout="mono") if audio else None  # streams before muxing
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), gray(i), np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for p in vs.encode(frame):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if st is not None:
            total = int(round(n / fps * RATE))
            wave = (0.5 * np.sin(2 * np.pi * TONE_HZ * np.arange(total) / RATE)).astype(np.float32)
            for k in range(0, total, 1024):
                f = av.AudioFrame.from_ndarray(wave[None, k : k + 1024].copy(), format="flt", layout="mono")
                f.sample_rate, f.pts, f.time_base = RATE, k, Fraction(1, RATE)
                for p in st.encode(f):
                    c.mux(p)
            for p in st.encode():
                c.mux(p)
    return str(path)


def frame_levels(path) -> list[float]:
    with av.open(str(path)) as c:
        return [float(f.to_ndarray(format="gray").mean()) for f in c.decode(video=0)]


def read_wav(path) -> tuple[np.ndarray, int, int]:
    with av.open(str(path)) as c:
        st = c.streams.audio[0]
        data = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(st)])
        return data.astype(np.float32) / 32768.0, st.sample_rate, st.codec_context.layout.nb_channels


def fingerprint(root) -> dict:
    """sha256 and mtime of every file under ``root``."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[p] = (hashlib.sha256(f.read()).hexdigest(), os.stat(p).st_mtime_ns)
    return out


def all_files(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, _, ns in os.walk(root) for n in ns)


# Source tree: (relative path, frames, fps, width, height, audio)
GOOD = {
    "cat/tone.mp4": (20, 10, 64, 48, True),
    "cat/silent.mp4": (15, 10, 64, 48, False),
    "dog/odd.mp4": (20, 10, 63, 47, True),
    "dog/one.mp4": (1, 10, 64, 48, True),
    "dog/portrait.mp4": (30, 15, 48, 64, True),
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The source tree prepared once (short side 32, keep fps, wav audio); the tests read the result."""
    base = tmp_path_factory.mktemp("prep")
    src, out = base / "src", base / "out"
    for rel, (n, fps, w, h, audio) in GOOD.items():
        write_video(src / rel, n=n, fps=fps, width=w, height=h, audio=audio, codec="mpeg4" if w % 2 else "libx264")
    with open(src / "cat/tone.mp4", "rb") as f:
        data = f.read()
    (src / "dog/truncated.mp4").write_bytes(data[: len(data) // 2])
    (src / "dog/text.mp4").write_text("this is not a video\n" * 10)
    (src / "dog/readme.txt").write_text("not a video extension: ignored\n")
    before = fingerprint(src)
    report = prepare(src, out, short_side=32, workers=2, progress=False)
    return {"src": src, "out": out, "report": report, "before": before}


def test_manifest_rows_of_good_files(prepared):
    out = prepared["out"]
    rows = {os.path.relpath(r.path, out): r for r in read_manifest(out / "manifest.csv")}
    assert sorted(rows) == sorted(os.path.join("videos", k) for k in GOOD)
    for rel, (n, fps, w, h, audio) in GOOD.items():
        r = rows[os.path.join("videos", rel)]
        # Short side to 32, the long side scaled by the same factor and rounded to even.
        long_side = 2 * round(max(w, h) * 32 / min(w, h) / 2)
        assert (r.width, r.height) == ((long_side, 32) if w >= h else (32, long_side)), rel
        assert r.width % 2 == 0 and r.height % 2 == 0
        assert r.fps == pytest.approx(fps) and r.num_frames == n
        assert r.duration == pytest.approx(n / fps, abs=1e-3)
        assert r.has_audio is audio
        assert r.label == rel.split("/")[0] and r.label_index == {"cat": 0, "dog": 1}[r.label]
        assert r.source == str(prepared["src"] / rel) and r.start is None and r.end is None
        # The manifest states what the output files are.
        info = decoding.probe(r.path)
        assert (info["width"], info["height"], info["num_frames"]) == (r.width, r.height, r.num_frames)
        if audio:
            assert r.audio_path == str(out / "audio" / rel.replace(".mp4", ".wav"))
            wave, rate, channels = read_wav(r.audio_path)
            assert (rate, channels) == (RATE, 1)
            assert len(wave) == pytest.approx(n / fps * RATE, abs=2)
        else:
            assert r.audio_path is None and not os.path.exists(out / "audio" / rel.replace(".mp4", ".wav"))


def test_output_content_matches_source(prepared):
    out = prepared["out"]
    # Every source frame, in order, once: gray levels survive the resize and H.264.
    levels = frame_levels(out / "videos/cat/tone.mp4")
    assert np.allclose(levels, [gray(i) for i in range(20)], atol=2)
    # The extracted audio is the source's tone (AAC-coded, so compared by correlation and level).
    wave, _, _ = read_wav(out / "audio/cat/tone.wav")
    t = np.arange(len(wave)) / RATE
    ref = 0.5 * np.sin(2 * np.pi * TONE_HZ * t)
    core = slice(RATE // 10, len(wave) - RATE // 10)  # codec edges aside
    assert np.corrcoef(wave[core], ref[core])[0, 1] > 0.99
    assert np.sqrt(np.mean(wave[core] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


def test_report_lists_bad_files(prepared):
    report = prepared["report"]
    assert report["counts"] == {"total": 7, "ok": 5, "skipped_existing": 0, "bad": 2, "no_audio": 1}
    bad = {os.path.relpath(b["path"], prepared["src"]): b["reason"] for b in report["bad_files"]}
    assert sorted(bad) == ["dog/text.mp4", "dog/truncated.mp4"]
    assert all(reason for reason in bad.values())
    on_disk = json.loads((prepared["out"] / "prep_report.json").read_text())
    assert on_disk["counts"] == report["counts"] and on_disk["settings"]["short_side"] == 32
    assert on_disk["wall_time_s"] > 0


def test_sources_untouched_and_no_temporary_files(prepared):
    assert fingerprint(prepared["src"]) == prepared["before"]
    names = all_files(prepared["out"])
    assert not [n for n in names if os.path.basename(n).startswith(".")], names  # no partials, no lock
    assert names == sorted(
        ["manifest.csv", "prep_report.json"]
        + [os.path.join("videos", k) for k in GOOD]
        + [os.path.join("audio", k.replace(".mp4", ".wav")) for k, v in GOOD.items() if v[4]]
    )


def test_print_summary(prepared):
    from rich.console import Console

    console = Console(record=True, width=200)
    print_summary(prepared["report"], console=console)
    text = console.export_text()
    assert "truncated.mp4" in text and "text.mp4" in text and "bad" in text


def test_rerun_skips_and_redoes_missing(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    for name in ("a", "b", "c"):
        write_video(src / "x" / f"{name}.mp4", n=10)
    before = fingerprint(src)
    first = prepare(src, out, short_side=32, workers=2, progress=False)
    assert first["counts"]["ok"] == 3
    outputs = fingerprint(out / "videos")
    again = prepare(src, out, short_side=32, workers=2, progress=False)
    assert (again["counts"]["ok"], again["counts"]["skipped_existing"], again["counts"]["bad"]) == (0, 3, 0)
    assert fingerprint(out / "videos") == outputs  # nothing rewritten
    # A lost video, a lost audio file and a partial left by an interrupted run.
    os.remove(out / "videos/x/b.mp4")
    os.remove(out / "audio/x/c.wav")
    (out / "videos/x/.a.12345.avssl-part.mp4").write_bytes(b"half a file")
    third = prepare(src, out, short_side=32, workers=2, progress=False)
    assert (third["counts"]["ok"], third["counts"]["skipped_existing"]) == (2, 1)
    assert os.path.exists(out / "videos/x/b.mp4") and os.path.exists(out / "audio/x/c.wav")
    assert fingerprint(out / "videos")[str(out / "videos/x/a.mp4")] == outputs[str(out / "videos/x/a.mp4")]
    assert not [n for n in all_files(out) if os.path.basename(n).startswith(".")]
    assert len(read_manifest(out / "manifest.csv")) == 3
    # Other settings make existing outputs stale.
    fourth = prepare(src, out, short_side=16, workers=2, progress=False)
    assert fourth["counts"]["ok"] == 3 and {r.height for r in read_manifest(out / "manifest.csv")} == {16}
    fifth = prepare(src, out, short_side=16, max_duration=0.5, workers=2, progress=False)
    assert fifth["counts"]["ok"] == 3 and {r.num_frames for r in read_manifest(out / "manifest.csv")} == {5}
    assert {len(read_wav(out / "audio/x" / f"{n}.wav")[0]) for n in "abc"} == {RATE // 2}
    assert fingerprint(src) == before


def test_kinetics_csv_trims_the_window(tmp_path):
    src, out = tmp_path / "k", tmp_path / "out"
    write_video(src / "full_vid.mp4", n=40, fps=10)  # 4 s, the whole YouTube video
    write_video(src / "train/abseiling/clip_000005_000007.mp4", n=20, fps=10)  # already trimmed
    csv = tmp_path / "k.csv"
    csv.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "abseiling,full_vid,1,3,train\n"
        "abseiling,clip,5,7,train\n"
        "juggling,gone,0,10,val\n"
    )
    report = prepare(src, out, short_side=32, csv=csv, workers=2, progress=False)
    assert report["counts"]["total"] == 3 and report["counts"]["ok"] == 2 and report["counts"]["bad"] == 1
    assert "gone" in report["bad_files"][0]["path"] and "not found" in report["bad_files"][0]["reason"]
    rows = {os.path.basename(r.path): r for r in read_manifest(out / "manifest.csv")}
    trimmed = rows["full_vid_000001_000003.mp4"]
    assert trimmed.duration == pytest.approx(3 - 1, abs=1e-3) and trimmed.num_frames == 20
    assert (trimmed.start, trimmed.end, trimmed.source) == (1.0, 3.0, str(src / "full_vid.mp4"))
    # Output frame 0 is source frame 10 (t = 1 s).
    assert np.allclose(frame_levels(trimmed.path), [gray(i) for i in range(10, 30)], atol=2)
    wave, _, _ = read_wav(trimmed.audio_path)
    assert len(wave) == 2 * RATE
    kept = rows["clip_000005_000007.mp4"]
    assert kept.duration == pytest.approx(2.0, abs=1e-3) and kept.start is None
    assert (kept.label, kept.label_index, kept.split) == ("abseiling", 0, "train")


def test_fps_flac_max_duration_and_audio_stats(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    write_video(src / "a/v.mp4", n=30, fps=10)  # 3 s
    shutil.copy(src / "a/v.mp4", src / "a/w.mp4")
    report = prepare(src, out, short_side=16, fps=5, audio_format="flac", max_duration=2.0,
                     audio_stats=True, workers=1, progress=False)
    row = read_manifest(out / "manifest.csv")[0]
    assert (row.fps, row.num_frames, row.duration, row.height) == (5.0, 10, pytest.approx(2.0, abs=1e-3), 16)
    assert (row.start, row.end) == (None, 2.0)
    # At 5 fps, output frame k shows the source frame at t = k / 5 s: source frame 2k.
    assert np.allclose(frame_levels(row.path), [gray(2 * k) for k in range(10)], atol=2)
    assert row.audio_path.endswith("v.flac")
    with av.open(row.audio_path) as c:
        st = c.streams.audio[0]
        assert (st.codec_context.name, st.sample_rate) == ("flac", RATE)
        assert sum(f.samples for f in c.decode(st)) == 2 * RATE
    # Log-mel statistics of the extracted audio, as the audio module computes them directly.
    from avssl.data.audio import LogMelSpectrogram, SpectrogramStats

    import torch

    saved = SpectrogramStats.load(out / "audio_stats.json")
    with av.open(row.audio_path) as c:
        wave = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)]).astype(np.float32) / 32768
    direct = SpectrogramStats().update(LogMelSpectrogram(sample_rate=RATE)(torch.from_numpy(wave)[None]))
    assert saved.count == 2 * direct.count  # both files' frames
    assert torch.allclose(saved.mean, direct.mean) and torch.allclose(saved.std, direct.std)
    assert report["audio_stats"] == str(out / "audio_stats.json")


def test_no_reencode_indexes_sources_in_place(tmp_path):
    src, out = tmp_path / "k", tmp_path / "out"
    write_video(src / "full.mp4", n=40, fps=10)
    before = fingerprint(src)
    csv = tmp_path / "k.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\nx,full,1,3,train\n")
    report = prepare(src, out, csv=csv, reencode=False, workers=1, progress=False)
    assert report["counts"]["ok"] == 1
    (row,) = read_manifest(out / "manifest.csv")
    # The row is the source itself (its probe), with the window to read from it.
    assert row.path == row.source == str(src / "full.mp4")
    assert (row.start, row.end, row.num_frames, row.width) == (1.0, 3.0, 40, 64)
    assert row.window_in_path() == (1.0, 3.0)
    assert len(read_wav(row.audio_path)[0]) == 2 * RATE  # audio of the window only
    assert not os.path.exists(out / "videos")
    again = prepare(src, out, csv=csv, reencode=False, workers=1, progress=False)
    assert again["counts"]["skipped_existing"] == 1
    assert fingerprint(src) == before


def test_check_mode_writes_nothing(tmp_path):
    src = tmp_path / "src"
    write_video(src / "a/good.mp4", n=10)
    (src / "a/bad.mp4").write_text("nope")
    before = (all_files(src), fingerprint(src), os.stat(src).st_mtime_ns, os.stat(src / "a").st_mtime_ns)
    report = prepare(src, None, check_only=True, workers=1, progress=False)
    assert report["counts"]["total"] == 2 and report["counts"]["ok"] == 1 and report["counts"]["bad"] == 1
    assert report["files"][0]["width"] == 64 and report["files"][0]["has_audio"] is True
    after = (all_files(src), fingerprint(src), os.stat(src).st_mtime_ns, os.stat(src / "a").st_mtime_ns)
    assert after == before
    saved = tmp_path / "check.json"
    prepare(src, None, check_only=True, workers=1, progress=False, report_path=saved)
    assert json.loads(saved.read_text())["counts"]["bad"] == 1
    with pytest.raises(ValueError, match="writes nothing into"):
        prepare(src, src / "report.json", check_only=True, progress=False)
    assert all_files(src) == before[0]


def test_refuses_output_inside_source(tmp_path):
    write_video(tmp_path / "src/a/x.mp4", n=5)
    for out in (tmp_path / "src", tmp_path / "src" / "prepared"):
        with pytest.raises(ValueError, match="must not be"):
            prepare(tmp_path / "src", out, progress=False)
    with pytest.raises(ValueError, match="short_side must be an even"):
        prepare(tmp_path / "src", tmp_path / "out", short_side=31, progress=False)
    assert all_files(tmp_path / "src") == ["a/x.mp4"]


def test_one_run_at_a_time_per_output(tmp_path):
    write_video(tmp_path / "src/a/x.mp4", n=5)
    out = tmp_path / "out"
    out.mkdir()
    lock = out / ".avssl-prep.lock"
    lock.write_text(str(os.getppid()))  # a live process holds it
    with pytest.raises(RuntimeError, match=r"another `avssl prep` \(pid \d+\) is writing to"):
        prepare(tmp_path / "src", out, short_side=16, workers=1, progress=False)
    lock.write_text("999999999")  # its owner is gone: taken over
    assert prepare(tmp_path / "src", out, short_side=16, workers=1, progress=False)["counts"]["ok"] == 1
    assert not lock.exists()


def test_output_size():
    assert output_size(64, 48, 32) == (42, 32)
    assert output_size(48, 64, 32) == (32, 42)
    assert output_size(1920, 1080, 256) == (456, 256)  # 455.1 -> nearest even
    assert output_size(63, 47, None) == (62, 46)


def _misbehaving_probe(original):
    def probe(path):
        name = os.path.basename(str(path))
        if name.startswith("segv"):
            faulthandler.disable()  # pytest's traceback dump would only clutter the output
            os.kill(os.getpid(), signal.SIGSEGV)
        if name.startswith("exit"):
            os._exit(3)
        if name.startswith("hang"):
            time.sleep(120)
        return original(path)

    return probe


def test_crashing_and_hanging_workers_are_bad_files(tmp_path, monkeypatch):
    src = tmp_path / "src"
    good = write_video(src / "c/good1.mp4", n=5)
    for name in ("good2", "segv", "exit", "hang"):
        shutil.copy(good, src / "c" / f"{name}.mp4")
    # Workers are forked, so they inherit the patched probe.
    monkeypatch.setattr(decoding, "probe", _misbehaving_probe(decoding.probe))
    t0 = time.monotonic()
    report = prepare(src, tmp_path / "out", short_side=32, workers=2, timeout=3.0, progress=False)
    assert time.monotonic() - t0 < 60
    bad = {os.path.basename(b["path"]): b["reason"] for b in report["bad_files"]}
    assert sorted(bad) == ["exit.mp4", "hang.mp4", "segv.mp4"]
    assert "SIGSEGV" in bad["segv.mp4"]
    assert "exited with code 3" in bad["exit.mp4"]
    assert "timed out" in bad["hang.mp4"]
    assert report["counts"]["ok"] == 2
    assert sorted(os.path.basename(r.path) for r in read_manifest(tmp_path / "out/manifest.csv")) == ["good1.mp4", "good2.mp4"]
