"""Audio features against hand computations; masking, gain, corpus statistics and pipelines."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from avssl.data.audio import (
    FrequencyMasking,
    FrequencyNormalize,
    LogMelSpectrogram,
    LogSTFT,
    RandomGain,
    SpectrogramStats,
    TimeMasking,
    build_audio_transform,
)


# -- independent references (numpy only) ----------------------------------------------------------
def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sr: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """HTK triangular filters on the rFFT bin frequencies: n_mels × (n_fft/2 + 1)."""
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    fb = np.zeros((n_mels, freqs.size))
    for i in range(n_mels):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        rising = (freqs - lo) / (mid - lo)
        falling = (hi - freqs) / (hi - mid)
        fb[i] = np.maximum(0.0, np.minimum(rising, falling))
    return fb


def periodic_window(n: int, kind: str = "hann") -> np.ndarray:
    k = np.arange(n)
    if kind == "hann":
        return 0.5 - 0.5 * np.cos(2 * np.pi * k / n)
    raise ValueError(kind)


def power_stft(x: np.ndarray, n_fft: int, hop: int, win_length: int) -> np.ndarray:
    """Centred frames (reflect padding), periodic Hann of win_length zero-padded to n_fft in the middle."""
    padded = np.pad(x, n_fft // 2, mode="reflect")
    win = np.zeros(n_fft)
    left = (n_fft - win_length) // 2
    win[left : left + win_length] = periodic_window(win_length)
    n_frames = 1 + (len(padded) - n_fft) // hop
    frames = np.stack([padded[i * hop : i * hop + n_fft] * win for i in range(n_frames)], axis=1)
    return np.abs(np.fft.rfft(frames, axis=0)) ** 2  # (n_fft/2 + 1) × T


def wave(n: int, seed: int = 0, scale: float = 0.3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(1, n, generator=g, dtype=torch.float64)).clamp(-1, 1)


# -- log-mel ----------------------------------------------------------------------------------------
def test_logmel_defaults_are_25ms_windows_every_10ms():
    m = LogMelSpectrogram(16000)
    assert (m.win_length, m.hop_length, m.n_fft, m.n_mels) == (400, 160, 512, 80)
    m = LogMelSpectrogram(24000)
    assert (m.win_length, m.hop_length, m.n_fft) == (600, 240, 1024)


def test_logmel_matches_hand_built_filterbank_and_fft():
    x = wave(4000)
    m = LogMelSpectrogram(16000, n_mels=40).double()
    got = m(x)
    fb = mel_filterbank(16000, 512, 40, 0.0, 8000.0)
    ref = np.log(fb @ power_stft(x[0].numpy(), 512, 160, 400) + 1e-6)
    assert got.shape == (1, 40, ref.shape[1])
    np.testing.assert_allclose(got[0].numpy(), ref, atol=1e-5, rtol=0)
    # The default float32 module agrees to float32 precision.
    got32 = LogMelSpectrogram(16000, n_mels=40)(x.float())
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32[0].double().numpy(), ref, atol=1e-4, rtol=0)


def test_logmel_custom_band_matches_reference():
    x = wave(3000, seed=1)
    m = LogMelSpectrogram(16000, n_fft=1024, win_length=800, hop_length=200, n_mels=64, f_min=50.0, f_max=7000.0).double()
    fb = mel_filterbank(16000, 1024, 64, 50.0, 7000.0)
    ref = np.log(fb @ power_stft(x[0].numpy(), 1024, 200, 800) + 1e-6)
    np.testing.assert_allclose(m(x)[0].numpy(), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("n,hop", [(16000, 160), (16001, 160), (8000, 100), (2399, 240)])
def test_logmel_frame_count_is_one_plus_samples_over_hop(n, hop):
    m = LogMelSpectrogram(16000, hop_length=hop)
    out = m(torch.zeros(1, n))
    assert out.shape == (1, 80, 1 + n // hop) and m.num_frames(n) == 1 + n // hop


def test_logmel_pure_tone_peaks_at_the_band_centred_on_it():
    sr, f0 = 16000, 1000.0
    t = torch.arange(sr, dtype=torch.float64) / sr
    x = (0.5 * torch.sin(2 * math.pi * f0 * t)).unsqueeze(0)
    spec = LogMelSpectrogram(sr, n_mels=80)(x.float())
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2), 82))
    centres = edges[1:-1]
    expected = int(np.argmin(np.abs(centres - f0)))
    assert int(spec[0].mean(1).argmax()) == expected
    # And in every frame but the two edge ones (whose reflect padding mirrors the sine).
    assert (spec[0, :, 1:-1].argmax(0) == expected).all()


def test_logmel_batched_equals_one_by_one_and_silence_is_log_eps():
    xs = torch.cat([wave(3200, seed=s).float() for s in range(3)]).unsqueeze(1)  # 3×1×S
    m = LogMelSpectrogram()
    batched = m(xs)
    assert batched.shape == (3, 1, 80, 21)
    for i in range(3):
        torch.testing.assert_close(batched[i], m(xs[i]), atol=1e-5, rtol=0)
    silent = m(torch.zeros(1, 1600))
    torch.testing.assert_close(silent, torch.full_like(silent, math.log(1e-6)))


def test_features_reject_bad_shapes_and_too_short_waveforms():
    with pytest.raises(ValueError, match="C×S or B×C×S"):
        LogMelSpectrogram()(torch.zeros(100))
    with pytest.raises(ValueError, match="too short for reflect padding"):
        LogMelSpectrogram()(torch.zeros(1, 100))
    with pytest.raises(ValueError, match="freq_pool"):
        LogSTFT(n_fft=1024, freq_pool=3)


# -- AVID-CMA log-STFT ------------------------------------------------------------------------------
def avid_reference(x: np.ndarray, n_fft=1024, hop=240, pool=2, top_db=100.0) -> np.ndarray:
    p = power_stft(x, n_fft, hop, n_fft)
    p = np.concatenate([p[:1], p[1:].reshape(n_fft // 2 // pool, pool, -1).mean(1)], 0)
    db = 10 * np.log10(np.maximum(p, 1e-10))
    return np.maximum(db, db.max() - top_db)


def test_logstft_matches_avid_cma_formula():
    x = wave(12000, seed=3)
    x[:, 4000:6000] = 0.0  # digital silence: the 100 dB floor below the peak must apply
    got = LogSTFT()(x)  # float64 in, float64 out
    ref = avid_reference(x[0].numpy())
    assert got.shape == (1, 257, 1 + 12000 // 240) == (1,) + ref.shape
    np.testing.assert_allclose(got[0].numpy(), ref, atol=1e-6, rtol=0)
    assert float(got.min()) == pytest.approx(float(got.max()) - 100.0)
    # float32 default agrees to float32 precision (values are tens of dB)
    np.testing.assert_allclose(LogSTFT()(x.float())[0].double().numpy(), ref, atol=2e-3, rtol=0)


def test_logstft_defaults_shape_tone_peak_and_num_frames():
    sr, f0 = 24000, 1500.0  # 1500 Hz = rFFT bin 64 of 1024 at 24 kHz -> pooled bin (64 + 1) // 2 = 32
    t = torch.arange(2 * sr, dtype=torch.float32) / sr
    x = (0.5 * torch.sin(2 * math.pi * f0 * t)).unsqueeze(0)
    spec = LogSTFT()(x)
    assert spec.shape == (1, 257, 201)
    assert (spec[0, :, 1:-1].argmax(0) == 32).all()  # edge frames mirror the sine
    assert LogSTFT(num_frames=200)(x).shape == (1, 257, 200)  # AVID-CMA keeps int(2 s · 100) frames
    assert LogSTFT(freq_pool=1)(x).shape == (1, 513, 201)
    assert LogSTFT(n_fft=512, freq_pool=2)(x).shape == (1, 129, 201)


def test_logstft_batched_top_db_is_per_clip():
    loud = wave(4800, seed=4, scale=0.5).float()
    quiet = 1e-4 * wave(4800, seed=5).float()
    batched = LogSTFT()(torch.stack([loud, quiet]))
    torch.testing.assert_close(batched[0], LogSTFT()(loud))
    torch.testing.assert_close(batched[1], LogSTFT()(quiet))


# -- gain -------------------------------------------------------------------------------------------
def test_random_gain_ratio_in_db_matches_draw_and_range():
    x = wave(1000, seed=6).float() + 0.01
    gain = RandomGain(-6.0, 6.0)
    for seed in range(20):
        expected_db = float(gain.sample_db(1, torch.Generator().manual_seed(seed)))
        y = gain(x, generator=torch.Generator().manual_seed(seed))
        ratio_db = 20 * torch.log10((y / x).double())
        assert torch.allclose(ratio_db, torch.full_like(ratio_db, expected_db), atol=1e-4)
        assert -6.0 <= expected_db <= 6.0


def test_random_gain_fixed_db_and_per_example_in_batch():
    x = torch.full((1, 8), 0.1)
    y = RandomGain(3.0, 3.0)(x)
    torch.testing.assert_close(20 * torch.log10(y / x), torch.full_like(x, 3.0), atol=1e-5, rtol=0)
    xb = torch.full((4, 1, 8), 0.1)
    yb = RandomGain(-10, 10, generator=torch.Generator().manual_seed(0))(xb)
    per_example = (yb / xb)[:, 0, 0]
    assert len(set(per_example.tolist())) == 4  # each waveform has its own gain
    assert torch.allclose(yb / xb, per_example.view(4, 1, 1).expand_as(yb))  # constant within a waveform
    assert RandomGain(20, 20, clip=True)(torch.full((1, 4), 0.5)).max() == 1.0


# -- masking ----------------------------------------------------------------------------------------
def masked_rows(before: torch.Tensor, after: torch.Tensor, dim: int) -> list[int]:
    other = tuple(d for d in range(before.ndim) if d != dim)
    changed = (before != after).any(dim=other)
    return torch.nonzero(changed).flatten().tolist()


@pytest.mark.parametrize("cls,dim", [(FrequencyMasking, 1), (TimeMasking, 2)])
def test_masking_zeroes_exactly_one_band_of_the_configured_width(cls, dim):
    spec = torch.rand(2, 40, 50) + 1.0  # C×F×T, never 0
    for seed in range(10):
        out = cls(7, min_width=7, fill="zero")(spec, generator=torch.Generator().manual_seed(seed))
        rows = masked_rows(spec, out, dim)
        assert len(rows) == 7 and rows == list(range(rows[0], rows[0] + 7))  # one contiguous band
        band = out.index_select(dim, torch.tensor(rows))
        assert (band == 0).all()  # every channel, every position along the other axis
        keep = [i for i in range(spec.shape[dim]) if i not in rows]
        assert torch.equal(out.index_select(dim, torch.tensor(keep)), spec.index_select(dim, torch.tensor(keep)))


@pytest.mark.parametrize("cls,dim", [(FrequencyMasking, 1), (TimeMasking, 2)])
def test_masking_widths_vary_up_to_max_and_mean_fill(cls, dim):
    spec = torch.randn(1, 30, 40)
    widths = set()
    for seed in range(60):
        out = cls(5)(spec, generator=torch.Generator().manual_seed(seed))
        rows = masked_rows(spec, out, dim)
        if rows:
            assert rows == list(range(rows[0], rows[0] + len(rows)))
            assert torch.allclose(out.index_select(dim, torch.tensor(rows)), spec.mean().expand(1))
        widths.add(len(rows))
    assert widths <= set(range(6)) and max(widths) == 5 and len(widths) >= 4


def test_masking_batched_independent_per_example_and_reproducible():
    spec = torch.rand(6, 2, 20, 30) + 1
    m = TimeMasking(10, min_width=3, fill=0.0)
    a = m(spec, generator=torch.Generator().manual_seed(1))
    b = m(spec, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    bands = [tuple(masked_rows(spec[i], a[i], 2)) for i in range(6)]
    assert len(set(bands)) > 1
    for i in range(6):  # channels of one example share the band
        assert torch.equal(a[i, 0] == 0, a[i, 1] == 0)
    assert torch.equal(TimeMasking(10, p=0.0)(spec), spec)


# -- statistics -------------------------------------------------------------------------------------
def test_stats_streaming_and_merge_equal_mean_std_of_the_concatenation():
    g = torch.Generator().manual_seed(0)
    # Offsets like log-power spectrograms (tens of dB) and varying lengths.
    specs = [(-30 + 20 * torch.randn(1, 12, t, generator=g, dtype=torch.float64)) for t in (5, 17, 1, 33, 8, 21)]
    specs = [s + torch.linspace(-10, 10, 12, dtype=torch.float64)[:, None] for s in specs]
    everything = torch.cat([s[0] for s in specs], dim=1)  # F×ΣT
    ref_mean = everything.mean(1)
    ref_std = everything.std(1, correction=0)

    one_by_one = SpectrogramStats()
    for s in specs:
        one_by_one.update(s)
    worker_a, worker_b = SpectrogramStats(), SpectrogramStats()
    for s in specs[:2]:
        worker_a.update(s)
    worker_b.update(specs[2]).update(specs[3]).update(torch.stack([specs[4], specs[5][..., :8]]))
    worker_c = SpectrogramStats().update(specs[5][..., 8:])
    merged = SpectrogramStats().merge(worker_a).merge(worker_b).merge(worker_c).merge(SpectrogramStats())
    for stats in (one_by_one, merged):
        assert stats.count == everything.shape[1]
        torch.testing.assert_close(stats.mean, ref_mean, atol=1e-5, rtol=0)
        torch.testing.assert_close(stats.std, ref_std, atol=1e-5, rtol=0)
        torch.testing.assert_close(stats.var(correction=1), everything.var(1, correction=1), atol=1e-5, rtol=0)


def test_frequency_normalize_makes_fitted_data_zero_mean_unit_std():
    g = torch.Generator().manual_seed(1)
    specs = 5 * torch.randn(4, 1, 16, 25, generator=g) - 40 + torch.arange(16.0)[:, None]
    stats = SpectrogramStats().update(specs)
    out = FrequencyNormalize.from_stats(stats)(specs)
    per_freq = out.movedim(2, 0).reshape(16, -1)
    torch.testing.assert_close(per_freq.mean(1), torch.zeros(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_freq.std(1, correction=0), torch.ones(16), atol=1e-5, rtol=0)
    # against the formula, and a silent (constant) band is centred, not divided by ~0
    const = torch.full((1, 3, 4), 2.0)
    norm = FrequencyNormalize([1.0, 2.0, 3.0], [2.0, 0.0, 4.0])
    torch.testing.assert_close(norm(const)[0, :, 0], torch.tensor([0.5, 0.0, -0.25]))


def test_stats_save_load_round_trip_and_errors(tmp_path):
    g = torch.Generator().manual_seed(2)
    stats = SpectrogramStats(meta={"kind": "logmel", "n_mels": 10}).update(torch.randn(3, 1, 10, 7, generator=g))
    path = tmp_path / "sub" / "audio_stats.json"
    stats.save(path)
    assert json.loads(path.read_text())["count"] == 21
    assert [p.name for p in path.parent.iterdir()] == ["audio_stats.json"]  # no temp file left behind
    loaded = SpectrogramStats.load(path)
    assert loaded.count == stats.count and loaded.meta == {"kind": "logmel", "n_mels": 10}
    assert torch.equal(loaded.mean, stats.mean) and torch.equal(loaded.std, stats.std)
    # a loaded accumulator keeps merging exactly
    more = torch.randn(2, 1, 10, 5, generator=g)
    torch.testing.assert_close(loaded.update(more).mean, stats.update(more).mean, atol=1e-12, rtol=0)
    norm = FrequencyNormalize.from_stats(str(path))
    torch.testing.assert_close(norm.mean, SpectrogramStats.load(path).mean)

    with pytest.raises(FileNotFoundError, match="nope.json"):
        SpectrogramStats.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"count": 3, "mean": [0.0]}))
    with pytest.raises(ValueError, match=r"bad\.json.*'m2'"):
        SpectrogramStats.load(bad)
    with pytest.raises(ValueError, match="no spectrogram frames"):
        SpectrogramStats().mean
    with pytest.raises(ValueError, match="12 frequency bins, expected 10"):
        stats.update(torch.zeros(1, 12, 3))
    with pytest.raises(ValueError, match="non-finite"):
        SpectrogramStats().update(torch.tensor([[float("nan")], [0.0]]))
    with pytest.raises(ValueError, match="12 frequency bins, statistics have 10"):
        norm(torch.zeros(1, 12, 3))


# -- pipelines --------------------------------------------------------------------------------------
def test_build_audio_transform_test_pipeline_is_the_plain_feature():
    x = wave(8000, seed=7).float()
    t = build_audio_transform("logmel", train=False, sample_rate=16000)
    torch.testing.assert_close(t(x), LogMelSpectrogram(16000)(x))
    t = build_audio_transform("logstft", train=False)
    torch.testing.assert_close(t(wave(4800).float()), LogSTFT()(wave(4800).float()))


def test_build_audio_transform_train_is_random_but_reproducible():
    x = wave(16000, seed=8).float()
    t = build_audio_transform("logmel", train=True, sample_rate=16000, time_mask=30, freq_mask=10)
    a = t(x, generator=torch.Generator().manual_seed(3))
    b = t(x, generator=torch.Generator().manual_seed(3))
    c = t(x, generator=torch.Generator().manual_seed(4))
    assert a.shape == (1, 80, 101) and torch.equal(a, b) and not torch.equal(a, c)
    plain = LogMelSpectrogram(16000)(x)
    assert not torch.equal(a, plain)
    # constructor generator works for callers that pass none (e.g. a dataset)
    t1 = build_audio_transform("logmel", train=True, generator=torch.Generator().manual_seed(5))
    t2 = build_audio_transform("logmel", train=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(t1(x), t2(x))


def test_build_audio_transform_with_stats_normalises(tmp_path):
    xs = torch.stack([wave(4800, seed=s).float() for s in range(4)])
    feature = LogSTFT()
    stats = SpectrogramStats().update(feature(xs))
    stats.save(tmp_path / "s.json")
    t = build_audio_transform("logstft", train=False, stats=tmp_path / "s.json")
    out = t(xs)
    torch.testing.assert_close(out, (feature(xs) - stats.mean.float()[:, None]) / stats.std.float()[:, None], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="257"):
        build_audio_transform("logmel", stats=stats)
    with pytest.raises(KeyError, match="logmel"):
        build_audio_transform("mfcc")
