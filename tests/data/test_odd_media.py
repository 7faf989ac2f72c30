"""Odd media: headers that lie about a file's length (decord aborts the process on them), phone videos
with a display rotation, anamorphic video with non-square pixels, mirrored display matrices."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
from fractions import Fraction

import av
import numpy as np
import pytest

import media
from avssl.data import DecodeError, probe, read_clip
from avssl.data.prep import output_size, prepare

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/: shared helpers and scripts
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), HERE]),
           COLUMNS="400")
LIARS = {  # name: what probe says about it
    "lying_duration.mkv": "the header declares a duration of 1e+10 s but the packets cover",
    "lying_count.avi": "truncated: the header lists 1000000000 frames",
}
ROTATIONS = (0, 90, 180, 270)
SARS = (Fraction(1), Fraction(2), Fraction(1, 2))


def oriented_name(rotation: int, sar: Fraction) -> str:
    return f"r{rotation}_sar{sar.numerator}-{sar.denominator}.mp4"


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    d = tmp_path_factory.mktemp("odd")
    media.write_lying_mkv(str(d / "lying_duration.mkv"), declared_seconds=1e10)
    media.write_avi_lying_count(str(d / "lying_count.avi"))
    for r in ROTATIONS:
        for sar in SARS:
            media.write_oriented(str(d / oriented_name(r, sar)), rotation=r, sar=sar)
    return d


# -- headers that lie ----------------------------------------------------------------------------
def _limit_memory():
    # A loader worker's share of a machine (importing torch takes ~5 GB of address space here): a header's
    # 10^9 frames then cannot be reserved on any machine, as 10^10 s cannot on this one.
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))


@pytest.mark.parametrize("name", sorted(LIARS))
def test_decord_itself_aborts_the_process_on_the_lying_files(odd, name):
    """The hazard, shown in a throw-away process: decord trusts the header and dies of std::bad_alloc."""
    code = f"import decord; decord.VideoReader({str(odd / name)!r}, ctx=decord.cpu(0), num_threads=1)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          preexec_fn=_limit_memory)
    assert proc.returncode == -6 and "bad_alloc" in proc.stderr, (proc.returncode, proc.stderr[-500:])


@pytest.mark.parametrize("name", sorted(LIARS))
def test_probe_rejects_a_header_that_lies_about_the_length(odd, name):
    path = str(odd / name)
    with pytest.raises(DecodeError) as err:
        probe(path)
    assert err.value.path == path and LIARS[name] in err.value.reason


def test_read_clip_reads_lying_files_with_pyav_without_a_probe(odd):
    """A manifest row's fields instead of a probe: decord must still never see these files."""
    code = textwrap.dedent(f"""
        from avssl.data import read_clip
        info = {{"duration": 2.0, "fps": 10.0, "has_audio": False, "start_time": 0.0}}
        for name in {sorted(LIARS)!r}:
            clip = read_clip({str(odd)!r} + "/" + name, 0.2, 1.0, 4, audio=False, backend="decord", info=info)
            print(name, tuple(clip.video.shape))
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120,
                          preexec_fn=_limit_memory)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:2] == ["lying_count.avi (4, 48, 64, 3)", "lying_duration.mkv (4, 48, 64, 3)"]


def test_prep_check_lists_the_lying_files_as_bad_with_their_reason(odd, tmp_path):
    src = tmp_path / "src"
    for name in LIARS:
        (src / "a").mkdir(parents=True, exist_ok=True)
        os.link(odd / name, src / "a" / name)
    media.write_video(str(src / "a" / "good.mp4"), num_frames=10, fps=10)
    report = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, "-m", "avssl", "prep", "--check", str(src), "--report", str(report)],
                          env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    got = json.loads(report.read_text())
    bad = {os.path.basename(b["path"]): b["reason"] for b in got["bad_files"]}
    assert sorted(bad) == sorted(LIARS) and all(LIARS[n] in bad[n] for n in LIARS)
    assert [os.path.basename(f["path"]) for f in got["files"]] == ["good.mp4"]
    assert "lying_duration.mkv" in proc.stdout  # the summary table names it too


@pytest.fixture(scope="module")
def train_tree(odd, tmp_path_factory):
    """{train,val}/{a,b}/*.mp4, and the lying Matroska file among the training videos."""
    root = tmp_path_factory.mktemp("train_tree")
    for split, n in (("train", 3), ("val", 1)):
        for c in ("a", "b"):
            for i in range(n):
                media.write_video(str(root / split / c / f"{c}{i}.mp4"), num_frames=12, fps=8, width=48, height=40,
                                  audio=False)
    os.link(odd / "lying_duration.mkv", root / "train" / "a" / "lying_duration.mkv")
    return root


@pytest.mark.parametrize("workers", [0, 2])
def test_training_skips_the_lying_file_by_name_and_finishes(train_tree, tmp_path, workers):
    config = tmp_path / "run.yaml"
    config.write_text("{}\n")
    overrides = {
        "method.name": "supervised", "data.train": str(train_tree), "data.num_frames": 4, "data.fps": 4.0,
        "data.crop_size": 32, "data.min_short_side": 36, "data.max_short_side": 40, "data.batch_size": 4,
        "data.num_workers": workers, "model.video.name": "r3d_tiny", "model.video.kwargs": "{base_channels: 8}",
        "optim.name": "adamw", "trainer.max_epochs": 1, "trainer.accelerator": "cpu", "trainer.devices": 1,
        "trainer.progress_bar": False, "trainer.tensorboard": False, "output_dir": str(tmp_path / "run"),
    }
    cmd = [sys.executable, "-m", "avssl", "pretrain", str(config), *[f"{k}={v}" for k, v in overrides.items()]]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    lying = str(train_tree / "train" / "a" / "lying_duration.mkv")
    skipped = [line for line in log.splitlines() if "skipping unreadable sample" in line and lying in line]
    assert skipped and "declares a duration of 1e+10 s" in skipped[0], log[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


# -- display rotation and pixel aspect -------------------------------------------------------------
def _ffmpeg_first_frame(path, width: int, height: int, vf: str | None = None) -> np.ndarray:
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", str(path), "-frames:v", "1"]
    cmd += ["-vf", vf] if vf else []
    out = subprocess.run(cmd + ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(height, width, 3)


def test_the_odd_files_display_upright_in_ffmpeg(odd):
    """The fixture, checked by an independent player: ffmpeg applies the display rotation itself, and
    stretches by the sample aspect ratio when asked to."""
    for r in (90, 180, 270):
        media.assert_upright(_ffmpeg_first_frame(odd / oriented_name(r, Fraction(1)), 64, 48))
    media.assert_upright(_ffmpeg_first_frame(odd / oriented_name(0, Fraction(2)), 64, 48, "scale=iw*sar:ih"))
    media.assert_upright(_ffmpeg_first_frame(odd / oriented_name(0, Fraction(1, 2)), 64, 48, "scale=iw:ih/sar"))


@pytest.mark.parametrize("sar", SARS, ids=str)
@pytest.mark.parametrize("rotation", ROTATIONS)
def test_probe_and_both_backends_give_the_upright_square_pixel_picture(odd, rotation, sar):
    path = odd / oriented_name(rotation, sar)
    info = probe(path)
    w, h = (48, 64) if rotation % 180 else (64, 48)  # turned back from the display ...
    coded = {Fraction(1): (w, h), Fraction(2): (w // 2, h), Fraction(1, 2): (w, h // 2)}[sar]  # ... and squeezed
    assert (info["width"], info["height"]) == (64, 48)  # display size
    assert (info["coded_width"], info["coded_height"]) == coded
    assert info["rotation"] == rotation and info["sample_aspect_ratio"] == pytest.approx(float(sar))
    for backend in ("decord", "pyav"):
        clip = read_clip(path, 0.0, 1.0, 3, audio=False, backend=backend)
        assert tuple(clip.video.shape) == (3, 48, 64, 3), backend
        for frame in clip.video.numpy():
            media.assert_upright(frame)


@pytest.fixture(scope="module")
def prepared_odd(odd, tmp_path_factory):
    base = tmp_path_factory.mktemp("prep_odd")
    names = [oriented_name(90, Fraction(1)), oriented_name(0, Fraction(2)), oriented_name(270, Fraction(1, 2)),
             oriented_name(0, Fraction(1))]
    for n in names:
        (base / "src" / "a").mkdir(parents=True, exist_ok=True)
        os.link(odd / n, base / "src" / "a" / n)
    report = prepare(base / "src", base / "out", short_side=32, workers=2, progress=False)
    return base, names, report


def test_prep_writes_upright_square_pixel_videos_at_the_short_side_asked(prepared_odd):
    base, names, report = prepared_odd
    assert report["counts"]["ok"] == 4 and not report["bad_files"]
    for n in names:
        out = base / "out" / "videos" / "a" / n
        info = probe(out)
        assert (info["width"], info["height"]) == output_size(64, 48, 32) == (42, 32)
        assert info["rotation"] == 0 and info["sample_aspect_ratio"] == 1.0
        with av.open(str(out)) as c:  # a plain decoder, no geometry applied: the pixels are upright
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == 10
        for f in frames:
            media.assert_upright(f)


def test_prep_report_lists_what_it_corrected(prepared_odd):
    base, names, report = prepared_odd
    got = {os.path.basename(c["path"]): c for c in report["corrected"]}
    assert sorted(got) == sorted(names[:3])  # not the plain one
    r90 = got[oriented_name(90, Fraction(1))]
    assert (r90["rotation"], r90["sample_aspect_ratio"], r90["coded_size"], r90["display_size"], r90["output_size"]) == (
        90, "1:1", [48, 64], [64, 48], [42, 32])
    sar2 = got[oriented_name(0, Fraction(2))]
    assert (sar2["sample_aspect_ratio"], sar2["coded_size"], sar2["display_size"]) == ("2:1", [32, 48], [64, 48])
    saved = json.loads((base / "out" / "prep_report.json").read_text())
    assert saved["corrected"] == report["corrected"]


def test_strict_geometry_lists_rotated_and_anamorphic_files_as_bad(prepared_odd, tmp_path):
    base, names, _ = prepared_odd
    report = prepare(base / "src", tmp_path / "out", short_side=32, workers=1, progress=False, geometry="refuse")
    bad = {os.path.basename(b["path"]): b["reason"] for b in report["bad_files"]}
    assert sorted(bad) == sorted(names[:3]) and report["counts"]["ok"] == 1
    assert "display rotation 90° counterclockwise would need correcting; refused" in bad[oriented_name(90, Fraction(1))]
    assert "sample aspect ratio 2:1" in bad[oriented_name(0, Fraction(2))]
    # The command line: --check --strict-geometry reports the same.
    saved = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, "-m", "avssl", "prep", "--check", "--strict-geometry", str(base / "src"),
                           "--report", str(saved)], env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert sorted(os.path.basename(b["path"]) for b in json.loads(saved.read_text())["bad_files"]) == sorted(names[:3])


def test_a_mirrored_display_matrix_is_refused_with_its_reason(tmp_path):
    path = str(tmp_path / "mirrored.mp4")
    with av.open(path, mode="w") as c:
        vs = c.add_stream("libx264", rate=10)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        vs.set_display_rotation(90, hflip=True)
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(media.orientation_image(64, 48), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            for p in vs.encode(frame):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
    with pytest.raises(DecodeError, match="mirrors the picture"):
        probe(path)
    with pytest.raises(DecodeError, match="mirrors the picture"):
        read_clip(path, 0.0, 0.2, 2, audio=False, info={"duration": 0.3, "fps": 10.0, "has_audio": False})


def test_dataset_over_sources_indexed_in_place_gives_upright_clips(prepared_odd, tmp_path):
    """A manifest of sources left where they are (``reencode=False``) carries no geometry: the dataset
    finds the rotation and pixel aspect itself."""
    from avssl.data import VideoDataset

    base, names, _ = prepared_odd
    report = prepare(base / "src", tmp_path / "out", reencode=False, audio_format=None, workers=1, progress=False)
    ds = VideoDataset(report["manifest"], num_frames=2, clip_duration=0.5, audio=False,
                      video_transform=lambda v: v.permute(3, 0, 1, 2))  # T×H×W×3 -> 3×T×H×W, no crop
    assert sorted(os.path.basename(r.path) for r in ds.rows) == sorted(names)
    for i in range(len(ds)):
        video = ds[i]["video"]
        assert tuple(video.shape) == (3, 2, 48, 64)
        media.assert_upright(video[:, 0].permute(1, 2, 0).numpy())
    assert ds.num_failures == 0
