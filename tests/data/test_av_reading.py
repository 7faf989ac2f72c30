"""Audio-visual clips at the decoder's speed: sound from the WAV `avssl prep` extracted (equal to the container's
track), one open per file per item and none left open after it, a bounded per-process probe cache, persistent
workers that follow the epoch, and decoding without decord."""
from __future__ import annotations

import logging
import os
import sys
import wave
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from avssl.data import VideoDataset, read_clip
from avssl.data import decoding
from avssl.data.decoding import BackendUnavailable, MediaReader
from avssl.data.manifest import read_manifest, write_manifest

RATE = 16000
SECONDS = 6.0
#: decord becomes an optional extra: cases that ask for it by name need it installed.
needs_decord = pytest.mark.skipif(not decoding.decord_available(), reason="decord is not installed")


def _write_source(path: str, seconds: float = SECONDS, fps: int = 25, rate: int = 48000) -> None:
    """A 96×64 video whose stereo 48 kHz sound is a sweep (200 Hz to 3 kHz) in one channel and a tone in the
    other: no two windows sound alike, so any misalignment shows."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(0)
    with av.open(path, "w") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 96, 64, "yuv420p"
        vs.options = {"preset": "ultrafast", "threads": "1"}
        st = c.add_stream("aac", rate=rate)
        st.layout = "stereo"
        for k in range(int(seconds * fps)):
            f = av.VideoFrame.from_ndarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8), format="rgb24")
            f.pts = k
            c.mux(vs.encode(f))
        c.mux(vs.encode())
        t = np.arange(int(seconds * rate)) / rate
        sweep = 0.4 * np.sin(2 * np.pi * (200 * t + (2800 / (2 * seconds)) * t**2))
        wave_ = np.stack([sweep, 0.2 * np.sin(2 * np.pi * 523.0 * t)]).astype(np.float32)
        for s in range(0, wave_.shape[1], 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave_[:, s : s + 1024]), format="fltp", layout="stereo")
            af.sample_rate, af.pts, af.time_base = rate, s, Fraction(1, rate)
            c.mux(st.encode(af))
        c.mux(st.encode())


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Two sources prepared twice: re-encoded (``videos/`` + ``audio/*.wav``), and in place for a Kinetics CSV
    window (the rows point into the sources, whose WAVs hold only the window)."""
    from avssl.data.prep import prepare

    root = tmp_path_factory.mktemp("av")
    for name in ("vid_a", "vid_b"):
        _write_source(str(root / "src" / "sing" / f"{name}.mp4"))
    prepare(str(root / "src"), str(root / "prep"), short_side=64, audio_rate=RATE, workers=1, progress=False)
    (root / "k.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                "sing,vid_a,1.25,4.75,train\nsing,vid_b,0.5,5.0,train\n")
    prepare(str(root / "src"), str(root / "inplace"), csv=str(root / "k.csv"), reencode=False, audio_rate=RATE,
            workers=1, progress=False)
    return root


def _shifted(y: np.ndarray, d: float) -> np.ndarray:
    """``y`` delayed by ``d`` samples (a fraction allowed), through the spectrum."""
    f = np.fft.rfftfreq(len(y))
    return np.fft.irfft(np.fft.rfft(y) * np.exp(-2j * np.pi * f * d), len(y))


def _alignment(x: np.ndarray, y: np.ndarray, edge: int = 200):
    """``(shift, error)``: the delay of ``y`` (samples, to 0.05) that best matches ``x``, and the rms of the
    difference there relative to ``x``'s (the ends, where a shift wraps around, left out)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    shifts = np.linspace(-2.0, 2.0, 81)
    errors = [np.sqrt(np.mean((x - _shifted(y, d))[edge:-edge] ** 2)) / np.sqrt(np.mean(x[edge:-edge] ** 2))
              for d in shifts]
    k = int(np.argmin(errors))
    return float(shifts[k]), float(errors[k])


def _same_sound(x: np.ndarray, y: np.ndarray, within: float = 0.5) -> None:
    """Aligned within ``within`` samples, and equal there within codec error. (Read from a container, the
    sample grid starts at the AAC frame a seek lands on: 1024 samples at 48 kHz are 341⅓ at 16 kHz, so it
    may sit a third of a sample off the WAV's, which starts at time 0.)"""
    shift, error = _alignment(x, y)
    assert abs(shift) <= within and error < 0.05, (shift, error)


def _skip_file_start(start: float, *waves: np.ndarray):
    """The waves without what lies in the first 30 ms of the file: after a seek, an AAC decoder returns its
    first frame (21 ms) silent, for want of the frame before it; the WAV, written in one pass, holds it."""
    cut = max(0, int(round((0.03 - start) * RATE)))
    return [w[cut:] for w in waves]


# -- case 1: sound from the extracted WAV --------------------------------------------------------------------
@pytest.mark.parametrize("start", [0.0, 0.3337, 1.01234, 2.71828, 4.20001])
def test_wav_window_equals_the_container_track_at_odd_offsets(prepared, start):
    """The same sound, aligned to the sample: FFmpeg's 16-bit mono down-mix both ways (the WAV is written with
    it), so a stereo source is not 3 dB louder from the track than from the WAV."""
    row = read_manifest(prepared / "prep" / "manifest.csv")[0]
    assert row.audio_path.endswith(".wav") and row.audio_rate != RATE  # the mp4 keeps 48 kHz: it must be resampled
    with MediaReader(row.path, audio_path=row.audio_path) as from_wav, MediaReader(row.path) as from_track:
        a = from_wav.audio(start, 1.0, RATE)[0].numpy()
        b = from_track.audio(start, 1.0, RATE)[0].numpy()
    assert a.shape == b.shape == (RATE,)
    _same_sound(*_skip_file_start(start, a, b))


@pytest.mark.parametrize("start", [0.0, 0.3337, 2.71828, 5.5])
def test_wav_window_is_the_exact_slice_of_the_file(prepared, start):
    row = read_manifest(prepared / "prep" / "manifest.csv")[1]
    with wave.open(row.audio_path) as f:
        assert (f.getframerate(), f.getnchannels(), f.getsampwidth()) == (RATE, 1, 2)
        whole = np.frombuffer(f.readframes(f.getnframes()), "<i2").astype(np.float32) / 32768
    first, n = int(round(start * RATE)), RATE
    want = np.zeros(n, np.float32)
    got_n = max(0, min(n, len(whole) - first))
    want[:got_n] = whole[first : first + got_n]  # past the end: zeros
    with MediaReader(row.path, audio_path=row.audio_path) as reader:
        got = reader.audio(start, 1.0, RATE)[0].numpy()
    np.testing.assert_array_equal(got, want)


def test_another_rate_is_resampled_from_the_wav(prepared):
    row = read_manifest(prepared / "prep" / "manifest.csv")[0]
    with MediaReader(row.path, audio_path=row.audio_path) as from_wav, MediaReader(row.path) as from_track:
        a = from_wav.audio(1.5, 1.0, 8000)[0].numpy()
        b = from_track.audio(1.5, 1.0, 8000)[0].numpy()
    assert a.shape == (8000,)
    _same_sound(a, b, within=1.0)  # both resampled after a seek: each grid may be off by a fraction


def _audio_only(wave, generator=None):
    return wave


def _frames_only(frames, generator=None):
    return frames


def _wav_slice(path: str, start: float, seconds: float) -> np.ndarray:
    """``seconds`` of a 16-bit mono WAV from sample round(start·rate), zeros outside the file: read whole with
    the standard library, independently of avssl's reader."""
    with wave.open(path) as f:
        rate = f.getframerate()
        whole = np.frombuffer(f.readframes(f.getnframes()), "<i2").astype(np.float32) / 32768
    first, n = int(round(start * rate)), int(round(seconds * rate))
    out = np.zeros(n, np.float32)
    lo, hi = max(0, first), min(len(whole), first + n)
    if hi > lo:
        out[lo - first : hi - first] = whole[lo:hi]
    return out


@pytest.mark.parametrize("corpus", ["prep", "inplace"])
def test_dataset_sound_comes_from_the_wav_and_is_the_window_of_the_video(prepared, corpus):
    """Re-encoded rows, and rows pointing into an untrimmed source whose WAV starts at the CSV's window: the
    item's sound is the WAV's samples of the clip's own window, which is the container's track at the same
    times."""
    manifest = prepared / corpus / "manifest.csv"
    rows = read_manifest(manifest)
    assert all(r.audio_path for r in rows)
    ds = VideoDataset(str(manifest), split=None, num_frames=4, clip_duration=1.0, audio_duration=1.0,
                      video_transform=_frames_only, audio_transform=_audio_only, seed=5)
    for i, row in enumerate(rows):
        offset = row.window_in_path()[0] or 0.0
        assert (offset > 0) == (corpus == "inplace")
        for epoch in range(3):
            ds.set_epoch(epoch)
            item = ds[i]
            got = item["audio"][0].numpy()
            np.testing.assert_array_equal(got, _wav_slice(row.audio_path, item["start"], 1.0))
            track = decoding.read_audio(row.path, offset + item["start"], 1.0, RATE)[0].numpy()
            _same_sound(*_skip_file_start(offset + item["start"], got, track))


def test_a_missing_wav_falls_back_to_the_track_with_a_warning(prepared, tmp_path, caplog):
    rows = read_manifest(prepared / "prep" / "manifest.csv")
    gone = str(tmp_path / "gone.wav")
    rows[0].audio_path = gone
    write_manifest(rows, tmp_path / "manifest.csv")
    ds = VideoDataset(str(tmp_path / "manifest.csv"), split=None, num_frames=2, clip_duration=1.0,
                      audio_duration=1.0, video_transform=_frames_only, audio_transform=_audio_only)
    with caplog.at_level(logging.WARNING, logger="avssl.data.datasets"):
        item, again = ds[0], ds[0]
    assert [r.getMessage() for r in caplog.records] == [
        f"audio file {gone} of {rows[0].path} is missing; reading the video's own audio track"]
    track = decoding.read_audio(rows[0].path, item["start"], 1.0, RATE)[0].numpy()
    np.testing.assert_array_equal(item["audio"][0].numpy(), track)
    assert item["index"] == 0 and again["index"] == 0


# -- case 2: one open per file per item --------------------------------------------------------------------
class _Opens:
    """Counts every open of a media file, by opener."""

    def __init__(self, monkeypatch):
        self.counts = {"decord": 0, "pyav": 0, "wav": 0}
        for name, key in (("_open_decord", "decord"), ("_open_container", "pyav"), ("_open_wav", "wav")):
            real = getattr(decoding, name)
            monkeypatch.setattr(decoding, name, self._counting(real, key))

    def _counting(self, real, key):
        def opener(*args, **kwargs):
            self.counts[key] += 1
            return real(*args, **kwargs)

        return opener

    def take(self):
        counts, self.counts = self.counts, {k: 0 for k in self.counts}
        return counts


@pytest.mark.parametrize("backend,wav,want", [
    pytest.param("decord", True, {"decord": 1, "pyav": 0, "wav": 1}, marks=needs_decord),
    ("pyav", True, {"decord": 0, "pyav": 1, "wav": 1}),
    ("pyav", False, {"decord": 0, "pyav": 1, "wav": 0}),  # frames and sound from one container
    pytest.param("decord", False, {"decord": 1, "pyav": 1, "wav": 0}, marks=needs_decord),  # decord reads no sound
])
def test_one_open_per_file_per_item_for_every_view_and_the_sound(prepared, tmp_path, monkeypatch, backend, wav, want):
    """...and none left open after the item: a decoder left open keeps threads, which loader workers forked
    later inherit without them."""
    rows = read_manifest(prepared / "prep" / "manifest.csv")
    if not wav:
        for r in rows:
            r.audio_path = None
    write_manifest(rows, tmp_path / "manifest.csv")
    ds = VideoDataset(str(tmp_path / "manifest.csv"), split=None, num_frames=4, clip_duration=1.0, num_clips=3,
                      audio_duration=1.0, backend=backend, video_transform=_frames_only,
                      audio_transform=_audio_only, seed=2)
    opens = _Opens(monkeypatch)
    for i, row in enumerate(rows):
        item = ds[i]
        assert item["video"].shape == (3, 4, 64, 96, 3) and item["audio"].shape == (3, 1, RATE)
        assert opens.take() == want
        assert not {row.path, row.audio_path} & _open_files()
        # All in one pass, and the same as read_clip gives for each view's window.
        for view, sound, start in zip(item["video"], item["audio"], item["start"].tolist()):
            clip = read_clip(row.path, start=start, duration=1.0, num_frames=4, backend=backend)
            assert torch.equal(view, clip.video)
            if not wav:  # the AAC decoder's state after a seek depends on what it decoded before: a few 16-bit steps
                torch.testing.assert_close(sound, clip.audio, atol=1e-3, rtol=0)
        opens.take()


# -- case 2: a bounded per-process probe cache -------------------------------------------------------------------
def test_probe_cache_is_bounded_and_spares_probing_again(tree_corpus, monkeypatch):
    calls = []
    real = decoding.probe

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr("avssl.data.datasets.probe", counting)
    ds = VideoDataset(str(tree_corpus), num_frames=2, clip_duration=0.5, audio=False, crop_size=16, probe_cache=3)
    for _ in range(2):
        for i in range(3):
            ds[i]
    assert len(calls) == 3  # the second pass takes the cached probes
    for i in range(len(ds)):
        ds[i]
    assert len(ds._probes.items) == 3
    ds[0]
    assert len(calls) == len(ds) + 1  # item 0 was evicted: probed again


def _open_files() -> set:
    fds = "/proc/self/fd"
    out = set()
    for fd in os.listdir(fds):
        try:
            out.add(os.readlink(os.path.join(fds, fd)))
        except OSError:
            pass
    return out


@pytest.fixture(scope="module")
def tree_corpus(tmp_path_factory):
    """An unprepared folder-per-class tree: its rows carry no probe."""
    import media

    root = tmp_path_factory.mktemp("tree")
    for c in ("a", "b"):
        for i in range(3):
            media.write_video(str(root / c / f"{c}{i}.mp4"), num_frames=20, fps=10, width=48, height=32)
    return root


# -- case 2: persistent workers follow the epoch ----------------------------------------------------------------
class _EpochEcho(Dataset):
    def __init__(self, n):
        self.n, self.epoch = n, 0

    def __len__(self):
        return self.n

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __getitem__(self, i):
        return torch.tensor([self.epoch, i, os.getpid()])


def test_persistent_workers_read_each_epoch_with_that_epoch():
    from avssl.data.datamodule import ResumableLoader, ResumableSampler

    ds = _EpochEcho(12)
    sampler = ResumableSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=0, drop_last=True)
    loader = ResumableLoader(ds, sampler, seed=0, batch_size=3, num_workers=2, persistent_workers=True)
    pids = set()
    for epoch in range(3):
        sampler.set_epoch(epoch)
        items = torch.cat(list(loader))
        assert items[:, 0].tolist() == [epoch] * 12
        assert sorted(items[:, 1].tolist()) == list(range(12))
        pids |= set(items[:, 2].tolist())
    assert len(pids) == 2 and os.getpid() not in pids  # the same two workers served every epoch
    from avssl.data.datamodule import stop_workers

    stop_workers(loader)


def test_datamodule_loaders_have_persistent_workers(synth_corpus, tmp_path):
    from avssl.config import load_config
    from avssl.data.datamodule import VideoDataModule
    from tiny import tiny_overrides

    cfg = load_config(None, tiny_overrides(synth_corpus, tmp_path, **{"data.num_workers": 1}))
    dm = VideoDataModule(cfg)
    dm.setup("fit")
    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert train.persistent_workers and val.persistent_workers
    next(iter(train))
    assert train._iterator is not None
    dm.teardown("fit")
    assert train._iterator is None


# -- #23: decoding without decord ------------------------------------------------------------------------------
@pytest.fixture
def no_decord(monkeypatch):
    """decord as on a platform without its wheel: ``import decord`` fails."""
    monkeypatch.setitem(sys.modules, "decord", None)


def test_without_decord_auto_decodes_with_pyav(prepared, no_decord):
    row = read_manifest(prepared / "prep" / "manifest.csv")[0]
    assert decoding.resolve_backend("auto") == "pyav"
    clip = read_clip(row.path, 0.5, 2.0, 6)
    ref = read_clip(row.path, 0.5, 2.0, 6, backend="pyav")
    assert torch.equal(clip.video, ref.video) and torch.equal(clip.audio, ref.audio)
    ds = VideoDataset(str(prepared / "prep" / "manifest.csv"), split=None, num_frames=2, clip_duration=1.0,
                      audio=False, crop_size=16)
    assert ds.backend == "pyav" and ds[0]["video"].shape == (3, 2, 16, 16)


def test_without_decord_asking_for_it_is_one_line_naming_the_extra(prepared, no_decord):
    row = read_manifest(prepared / "prep" / "manifest.csv")[0]
    message = ("backend 'decord' is not installed here: pip install 'avssl[decord]', or use backend 'auto' or "
               "'pyav' (PyAV, slower)")
    with pytest.raises(BackendUnavailable) as err:
        read_clip(row.path, backend="decord")
    assert str(err.value) == message
    with pytest.raises(BackendUnavailable):
        VideoDataset(str(prepared / "prep" / "manifest.csv"), split=None, backend="decord")


def test_without_decord_a_config_asking_for_it_falls_back_with_one_warning(synth_corpus, tmp_path, no_decord,
                                                                           caplog):
    from avssl.config import load_config
    from avssl.data.datamodule import make_dataset
    from tiny import tiny_overrides

    cfg = load_config(None, tiny_overrides(synth_corpus, tmp_path, **{"data.backend": "decord"}))
    with caplog.at_level(logging.WARNING, logger="avssl.data.decoding"):
        ds = make_dataset(cfg, "train", train=True, needs_audio=False)
    assert ds.backend == "pyav" and ds[0]["video"].shape[1] == 4
    assert [r.getMessage() for r in caplog.records] == [
        "decord is not installed: video is decoded with PyAV (slower); pip install 'avssl[decord]' for decord"]


def test_env_report_names_the_backend_with_and_without_decord(monkeypatch, capsys):
    import json

    from avssl.apps.cli import main

    assert main(["env", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    if decoding.decord_available():
        import decord

        assert report["video_backend"] == "decord" and report["decord"] == decord.__version__
    else:
        assert report["video_backend"] == "pyav" and report["decord"] is None
    assert report["pyav"] == av.__version__ and report["torch"] == torch.__version__
    assert report["ffmpeg_libraries"]["libavcodec"] == ".".join(map(str, av.library_versions["libavcodec"]))
    monkeypatch.setitem(sys.modules, "decord", None)
    assert main(["env"]) == 0
    lines = dict(line.split(None, 1) if not line.startswith("video backend") else ("video backend", line.split()[-1])
                 for line in capsys.readouterr().out.splitlines())
    assert lines["decord"].startswith("not installed") and lines["video backend"] == "pyav"
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"avssl 0.1.0 (torch {torch.__version__}, video backend pyav)\n"
