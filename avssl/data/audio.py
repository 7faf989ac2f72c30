"""Audio features and augmentations: waveform 1×S (or B×1×S) -> log spectrogram 1×F×T' (or B×1×F×T').

Every module here is an ``nn.Module`` without global state. Random ones draw from a ``torch.Generator``
given to the constructor or to ``forward(..., generator=g)`` (the call's wins); without one they use
torch's global RNG (which the DataLoader seeds per worker).

Two features:

* :class:`LogMelSpectrogram` — ``log(mel + eps)`` of a power spectrogram, 25 ms Hann windows every 10 ms
  and 80 mel bands by default (see its docstring for why).
* :class:`LogSTFT` — AVID-CMA's log-power linear-frequency spectrogram (24 kHz audio, 100 frames/s,
  257 frequency bins in dB).

Corpus statistics: :class:`SpectrogramStats` accumulates per-frequency mean and std over many
spectrograms (streaming, mergeable across workers, JSON on disk), and :class:`FrequencyNormalize`
applies them. :func:`build_audio_transform` assembles the usual train/test pipelines.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from avssl.utils import atomic_write_text

__all__ = [
    "LogMelSpectrogram",
    "LogSTFT",
    "RandomGain",
    "TimeMasking",
    "FrequencyMasking",
    "FrequencyNormalize",
    "SpectrogramStats",
    "AudioPipeline",
    "build_audio_transform",
]


def _check_wave(wave: torch.Tensor, who: str) -> torch.Tensor:
    if not isinstance(wave, torch.Tensor):
        raise TypeError(f"{who}: expected a waveform tensor C×S or B×C×S, got {type(wave).__name__}")
    if wave.ndim not in (2, 3):
        raise ValueError(f"{who}: expected a waveform of shape C×S or B×C×S, got shape {tuple(wave.shape)}")
    return wave


def _check_spec(spec: torch.Tensor, who: str) -> torch.Tensor:
    if not isinstance(spec, torch.Tensor):
        raise TypeError(f"{who}: expected a spectrogram tensor C×F×T or B×C×F×T, got {type(spec).__name__}")
    if spec.ndim not in (3, 4):
        raise ValueError(f"{who}: expected a spectrogram of shape C×F×T or B×C×F×T, got shape {tuple(spec.shape)}")
    return spec


def _check_padding(num_samples: int, n_fft: int, center: bool, pad_mode: str, who: str) -> None:
    # torch.stft's reflect padding needs more than n_fft // 2 samples; say so in our own words.
    if center and pad_mode == "reflect" and num_samples <= n_fft // 2:
        raise ValueError(
            f"{who}: waveform of {num_samples} samples is too short for reflect padding with n_fft={n_fft} "
            f"(needs more than {n_fft // 2}); pass pad_mode='constant' or a longer waveform"
        )
    if not center and num_samples < n_fft:
        raise ValueError(f"{who}: waveform of {num_samples} samples is shorter than n_fft={n_fft} (center=False)")


# ---------------------------------------------------------------------------------------------
# features
# ---------------------------------------------------------------------------------------------
class LogMelSpectrogram(nn.Module):
    """``log(mel + eps)``: log of a mel-filtered power spectrogram (``torchaudio.transforms.MelSpectrogram``).

    Shapes: waveform C×S -> C×F×T', B×C×S -> B×C×F×T' (C = 1 for the mono audio of ``read_clip``),
    with F = ``n_mels`` and T' = 1 + S // hop_length (centred frames).

    Defaults, in samples, follow the rate: a 25 ms Hann window (``win_length = 0.025·sample_rate``,
    400 at 16 kHz) every 10 ms (``hop_length = 0.010·sample_rate``, 160 at 16 kHz: 100 frames/s), zero
    padded to ``n_fft`` = the next power of two (512 at 16 kHz), 80 HTK mel bands over
    [0, sample_rate/2]. 25 ms / 10 ms is the standard short-time analysis of speech and general audio
    (Kaldi, Whisper, VGGish, AST all use it). The number of bands varies with the field: 64 (VGGish,
    PANNs), 80 (Kaldi fbank, Whisper; here the default — enough resolution for a 2-D CNN on 1–2 s clips
    at a modest input size) and 128 (AST, BEATs, AudioSet transformers); pass ``n_mels`` to change it.

    ``eps`` keeps digital silence finite: log(eps) = −13.8 for eps = 1e-6.

    Example::

        >>> spec = LogMelSpectrogram()(torch.randn(1, 16000))   # 1 s at 16 kHz
        >>> spec.shape
        torch.Size([1, 80, 101])
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: Optional[int] = None,
        win_length: Optional[int] = None,
        hop_length: Optional[int] = None,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: Optional[float] = None,
        eps: float = 1e-6,
        center: bool = True,
        pad_mode: str = "reflect",
        mel_scale: str = "htk",
        norm: Optional[str] = None,
    ) -> None:
        super().__init__()
        import torchaudio

        if sample_rate <= 0:
            raise ValueError(f"LogMelSpectrogram: sample_rate must be > 0, got {sample_rate}")
        win_length = int(win_length) if win_length is not None else int(round(0.025 * sample_rate))
        hop_length = int(hop_length) if hop_length is not None else int(round(0.010 * sample_rate))
        n_fft = int(n_fft) if n_fft is not None else 1 << max(0, (win_length - 1).bit_length())
        if win_length > n_fft:
            raise ValueError(f"LogMelSpectrogram: win_length={win_length} is larger than n_fft={n_fft}")
        if hop_length <= 0:
            raise ValueError(f"LogMelSpectrogram: hop_length must be > 0, got {hop_length}")
        if eps <= 0:
            raise ValueError(f"LogMelSpectrogram: eps must be > 0, got {eps}")
        self.sample_rate = int(sample_rate)
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.n_mels = int(n_mels)
        self.f_min, self.f_max = float(f_min), (float(f_max) if f_max is not None else sample_rate / 2)
        self.eps = float(eps)
        self.center, self.pad_mode = center, pad_mode
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=self.sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            f_min=self.f_min,
            f_max=self.f_max,
            n_mels=self.n_mels,
            power=2.0,
            center=center,
            pad_mode=pad_mode,
            mel_scale=mel_scale,
            norm=norm,
        )

    @property
    def num_freqs(self) -> int:
        return self.n_mels

    def num_frames(self, num_samples: int) -> int:
        """T' for a waveform of ``num_samples`` samples."""
        if self.center:
            return 1 + num_samples // self.hop_length
        return 1 + (num_samples - self.n_fft) // self.hop_length

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        wave = _check_wave(wave, "LogMelSpectrogram")
        _check_padding(wave.shape[-1], self.n_fft, self.center, self.pad_mode, "LogMelSpectrogram")
        # Compute in the filterbank's dtype: float32 by default, float64 after .double().
        wave = wave.to(self.mel.mel_scale.fb.dtype)
        return torch.log(self.mel(wave) + self.eps)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, win_length={self.win_length}, "
            f"hop_length={self.hop_length}, n_mels={self.n_mels}, f_min={self.f_min}, f_max={self.f_max}, eps={self.eps}"
        )


_WINDOWS: Dict[str, Callable[..., torch.Tensor]] = {
    "hann": torch.hann_window,
    "hamming": torch.hamming_window,
    "blackman": torch.blackman_window,
    "rect": lambda n, **kw: torch.ones(n, **kw),
}


class LogSTFT(nn.Module):
    """AVID-CMA's audio input: a log-power (dB) linear-frequency spectrogram.

    How AVID-CMA (Morgado et al., CVPR 2021; ``datasets/preprocessing.py::LogSpectrogram`` and the
    ``configs/main/avid*/*.yaml`` of facebookresearch/AVID-CMA) computes it, which the defaults reproduce:

    * mono audio at 24 kHz, 2 s per clip;
    * ``spectrogram_fps: 100`` -> hop = 24000 / 100 = 240 samples (10 ms);
    * ``n_fft: 512`` in their config, but the STFT itself is taken with ``2·512 = 1024`` points (42.7 ms
      periodic Hann window, centred frames with reflect padding, as librosa 0.7 did); the power
      ``|X|²`` of its 513 bins is then reduced to 257 by keeping the DC bin and averaging each adjacent
      pair of the other 512 (``freq_pool=2``): the frequency grid of a 512-point FFT with the longer,
      smoother window of a 1024-point one;
    * ``power_to_db(top_db=100)``: ``10·log10(max(P, 1e-10))``, floored at 100 dB below the clip's maximum;
    * per-frequency normalisation with corpus statistics, ``(x − mean) / (std + 1e-5)`` (see
      :class:`FrequencyNormalize` and :class:`SpectrogramStats`; not part of this module);
    * their tensor is laid out 1×T×F (time first) and cut to ``int(duration·100)`` frames (200 for 2 s).
      Here the output is 1×F×T' like every avssl spectrogram; pass ``num_frames=200`` to cut the same way.

    Shapes: C×S -> C×F×T', B×C×S -> B×C×F×T', F = 1 + (n_fft // 2) / freq_pool, T' = 1 + S // hop
    (or ``num_frames``).

    Args:
        sample_rate: waveform rate (only used for the default hop: ``sample_rate / 100``).
        n_fft: FFT size (1024 = AVID-CMA).
        hop_length: samples between frames (default 10 ms).
        win_length: window length (default ``n_fft``).
        window: ``"hann"`` (periodic), ``"hamming"``, ``"blackman"``, ``"rect"`` or a callable ``n -> window``.
        freq_pool: adjacent non-DC bins averaged into one (1 = none); must divide ``n_fft // 2``.
        top_db: dynamic range kept below each spectrogram's maximum (None = no floor).
        amin: power floor before the log.
        num_frames: keep only the first ``num_frames`` frames (None = all).

    Example::

        >>> LogSTFT()(torch.randn(1, 48000)).shape     # 2 s at 24 kHz
        torch.Size([1, 257, 201])
    """

    def __init__(
        self,
        sample_rate: int = 24000,
        n_fft: int = 1024,
        hop_length: Optional[int] = None,
        win_length: Optional[int] = None,
        window: Union[str, Callable[..., torch.Tensor]] = "hann",
        freq_pool: int = 2,
        top_db: Optional[float] = 100.0,
        amin: float = 1e-10,
        center: bool = True,
        pad_mode: str = "reflect",
        num_frames: Optional[int] = None,
    ) -> None:
        super().__init__()
        hop_length = int(hop_length) if hop_length is not None else int(round(sample_rate / 100))
        win_length = int(win_length) if win_length is not None else int(n_fft)
        if hop_length <= 0:
            raise ValueError(f"LogSTFT: hop_length must be > 0, got {hop_length}")
        if win_length > n_fft:
            raise ValueError(f"LogSTFT: win_length={win_length} is larger than n_fft={n_fft}")
        if freq_pool < 1 or (n_fft // 2) % freq_pool:
            raise ValueError(f"LogSTFT: freq_pool={freq_pool} must be >= 1 and divide n_fft // 2 = {n_fft // 2}")
        if top_db is not None and top_db <= 0:
            raise ValueError(f"LogSTFT: top_db must be > 0 or None, got {top_db}")
        if isinstance(window, str):
            if window not in _WINDOWS:
                raise ValueError(f"LogSTFT: unknown window {window!r}; known: {sorted(_WINDOWS)}")
            w = _WINDOWS[window](win_length, dtype=torch.float64)
        else:
            w = torch.as_tensor(window(win_length), dtype=torch.float64)
        if w.shape != (win_length,):
            raise ValueError(f"LogSTFT: window has shape {tuple(w.shape)}, expected ({win_length},)")
        # float64 so that float64 inputs get an exact window; cast to the input's precision per call.
        self.register_buffer("window", w.to(torch.float64), persistent=False)
        self.sample_rate, self.n_fft, self.hop_length, self.win_length = int(sample_rate), int(n_fft), hop_length, win_length
        self.freq_pool = int(freq_pool)
        self.top_db = None if top_db is None else float(top_db)
        self.amin = float(amin)
        self.center, self.pad_mode = center, pad_mode
        self.max_frames = num_frames

    @property
    def num_freqs(self) -> int:
        return 1 + (self.n_fft // 2) // self.freq_pool

    def num_frames(self, num_samples: int) -> int:
        """T' for a waveform of ``num_samples`` samples."""
        t = 1 + num_samples // self.hop_length if self.center else 1 + (num_samples - self.n_fft) // self.hop_length
        return t if self.max_frames is None else min(t, self.max_frames)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        wave = _check_wave(wave, "LogSTFT")
        _check_padding(wave.shape[-1], self.n_fft, self.center, self.pad_mode, "LogSTFT")
        lead = wave.shape[:-1]
        dtype = wave.dtype if wave.dtype in (torch.float32, torch.float64) else torch.float32
        x = wave.to(dtype).reshape(-1, wave.shape[-1])
        spec = torch.stft(
            x,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window.to(dtype),
            center=self.center,
            pad_mode=self.pad_mode,
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # N×(n_fft/2+1)×T'
        if self.max_frames is not None:
            power = power[..., : self.max_frames]
        if self.freq_pool > 1:
            n, f, t = power.shape
            pooled = power[:, 1:].reshape(n, (f - 1) // self.freq_pool, self.freq_pool, t).mean(2)
            power = torch.cat([power[:, :1], pooled], 1)
        db = 10.0 * torch.log10(power.clamp_min(self.amin))
        if self.top_db is not None:
            # Floor relative to each spectrogram's own peak (librosa's power_to_db(top_db=...)).
            peak = db.amax(dim=(-2, -1), keepdim=True)
            db = torch.maximum(db, peak - self.top_db)
        return db.reshape(*lead, db.shape[-2], db.shape[-1])

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
            f"win_length={self.win_length}, freq_pool={self.freq_pool}, top_db={self.top_db}, num_frames={self.max_frames}"
        )


# ---------------------------------------------------------------------------------------------
# augmentations
# ---------------------------------------------------------------------------------------------
class _RandomModule(nn.Module):
    """A module whose forward draws random numbers; ``forward(x, generator=None)``."""

    def __init__(self, generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        self.generator = generator

    def _gen(self, generator: Optional[torch.Generator]) -> Optional[torch.Generator]:
        return generator if generator is not None else self.generator


class RandomGain(_RandomModule):
    """Multiply a waveform by ``10^(g/20)``, g ~ U[min_db, max_db] dB, one draw per waveform.

    Shapes: C×S or B×C×S (each of the B waveforms gets its own gain). In a log spectrogram a gain
    is a constant shift of ``2·g·ln(10)/20`` nats (``g`` dB), so this teaches invariance to loudness.
    (AVID-CMA jitters the volume by ±10 %, about ±0.9 dB.) ``clip=True`` clamps the result to [-1, 1].

    Example::

        >>> RandomGain(6.0, 6.0)(torch.full((1, 4), 0.1))   # exactly +6 dB: ×1.995
        tensor([[0.1995, 0.1995, 0.1995, 0.1995]])
    """

    def __init__(self, min_db: float = -6.0, max_db: float = 6.0, clip: bool = False, generator: Optional[torch.Generator] = None) -> None:
        super().__init__(generator)
        if min_db > max_db:
            raise ValueError(f"RandomGain: min_db={min_db} is larger than max_db={max_db}")
        self.min_db, self.max_db, self.clip = float(min_db), float(max_db), clip

    def sample_db(self, batch: int = 1, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The gains (dB, float64, shape ``batch``) the next call with this generator would draw."""
        u = torch.rand(batch, generator=self._gen(generator), dtype=torch.float64)
        return self.min_db + (self.max_db - self.min_db) * u

    def forward(self, wave: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        wave = _check_wave(wave, "RandomGain")
        batch = wave.shape[0] if wave.ndim == 3 else 1
        gain = torch.pow(10.0, self.sample_db(batch, generator) / 20.0).to(wave.dtype)
        out = wave * (gain.view(batch, 1, 1) if wave.ndim == 3 else gain.view(1, 1))
        return out.clamp(-1.0, 1.0) if self.clip else out

    def extra_repr(self) -> str:
        return f"min_db={self.min_db}, max_db={self.max_db}, clip={self.clip}"


class _AxisMasking(_RandomModule):
    axis_name = ""

    def __init__(
        self,
        max_width: int,
        num_masks: int = 1,
        min_width: int = 0,
        fill: Union[str, float] = "mean",
        p: float = 1.0,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__(generator)
        name = type(self).__name__
        if not 0 <= min_width <= max_width:
            raise ValueError(f"{name}: need 0 <= min_width <= max_width, got min_width={min_width}, max_width={max_width}")
        if num_masks < 0:
            raise ValueError(f"{name}: num_masks must be >= 0, got {num_masks}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name}: p must be in [0, 1], got {p}")
        if isinstance(fill, str) and fill not in ("mean", "zero"):
            raise ValueError(f"{name}: fill must be 'mean', 'zero' or a number, got {fill!r}")
        self.max_width, self.min_width, self.num_masks = int(max_width), int(min_width), int(num_masks)
        self.fill, self.p = fill, float(p)

    def _axis(self) -> int:
        raise NotImplementedError

    def forward(self, spec: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        spec = _check_spec(spec, type(self).__name__)
        g = self._gen(generator)
        x = spec if spec.ndim == 4 else spec.unsqueeze(0)
        b = x.shape[0]
        size = x.shape[self._axis()]
        # Draw everything up front (fixed number of draws per call, whatever p decides).
        apply = torch.rand(b, generator=g) < self.p
        hi = min(self.max_width, size)
        lo = min(self.min_width, hi)
        widths = torch.randint(lo, hi + 1, (b, self.num_masks), generator=g)
        starts = (torch.rand(b, self.num_masks, generator=g, dtype=torch.float64) * (size - widths + 1)).floor().long()
        pos = torch.arange(size)
        band = (pos >= starts[..., None]) & (pos < (starts + widths)[..., None])  # B×M×size
        mask = band.any(1) & apply[:, None]  # B×size
        if not bool(mask.any()):
            return spec
        shape = [b, 1, 1, 1]
        shape[self._axis()] = size
        mask = mask.view(shape)
        if self.fill == "mean":
            value = x.mean(dim=(1, 2, 3), keepdim=True)
        elif self.fill == "zero":
            value = torch.zeros((), dtype=x.dtype)
        else:
            value = torch.tensor(float(self.fill), dtype=x.dtype)
        out = torch.where(mask, value, x)
        return out if spec.ndim == 4 else out.squeeze(0)

    def extra_repr(self) -> str:
        return f"max_width={self.max_width}, min_width={self.min_width}, num_masks={self.num_masks}, fill={self.fill!r}, p={self.p}"


class TimeMasking(_AxisMasking):
    """SpecAugment time masking: ``num_masks`` bands of consecutive frames set to ``fill``.

    Each band's width is a uniform integer in [min_width, max_width] (inclusive, capped at T'), its
    start uniform over the positions where it fits; B×C×F×T' inputs get independent bands per example
    (all channels of an example share them). ``fill="mean"`` (default) writes the spectrogram's own
    mean — for a log spectrogram 0 is not silence but a loud level, while the mean is a neutral value
    (and equals 0 after per-frequency normalisation, which is SpecAugment's choice); ``"zero"`` or a
    number write that value. ``p`` is the probability that an example is masked at all.

    Shapes: C×F×T' or B×C×F×T', unchanged.
    """

    def _axis(self) -> int:
        return 3


class FrequencyMasking(_AxisMasking):
    """SpecAugment frequency masking: ``num_masks`` bands of consecutive frequency bins set to ``fill``.

    Same rules as :class:`TimeMasking`, along F.
    """

    def _axis(self) -> int:
        return 2


# ---------------------------------------------------------------------------------------------
# normalisation and corpus statistics
# ---------------------------------------------------------------------------------------------
def _as_vector(v: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=torch.float64).flatten()
    if t.numel() == 0:
        raise ValueError(f"FrequencyNormalize: {name} is empty")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"FrequencyNormalize: {name} has non-finite values")
    return t


class FrequencyNormalize(nn.Module):
    """``(x − mean[f]) / max(std[f], eps)`` for every frequency bin f.

    Shapes: C×F×T' or B×C×F×T', unchanged; ``mean`` and ``std`` have F entries. Bins whose std is
    below ``eps`` (e.g. always-silent ones) are only centred, not blown up. AVID-CMA divides by
    ``std + 1e-5`` instead; with log-power stds of ~20 dB the two differ by < 1e-6 relative.

    Example::

        >>> specs = torch.randn(8, 1, 80, 101)                   # N×1×F×T
        >>> norm = FrequencyNormalize.from_stats(SpectrogramStats().update(specs))
        >>> norm(specs).shape
        torch.Size([8, 1, 80, 101])
    """

    def __init__(self, mean: Any, std: Any, eps: float = 1e-5) -> None:
        super().__init__()
        mean_t, std_t = _as_vector(mean, "mean"), _as_vector(std, "std")
        if mean_t.shape != std_t.shape:
            raise ValueError(f"FrequencyNormalize: mean has {mean_t.numel()} entries but std has {std_t.numel()}")
        if bool((std_t < 0).any()):
            raise ValueError("FrequencyNormalize: std has negative entries")
        self.eps = float(eps)
        # float64 buffers: cast to the input's dtype per call, so float64 inputs normalise exactly.
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    @classmethod
    def from_stats(cls, stats: Union["SpectrogramStats", Mapping[str, Any], str, os.PathLike], eps: float = 1e-5) -> "FrequencyNormalize":
        """From a :class:`SpectrogramStats`, its ``to_dict()`` or the path of a saved one."""
        if isinstance(stats, (str, os.PathLike)):
            stats = SpectrogramStats.load(stats)
        elif isinstance(stats, Mapping):
            stats = SpectrogramStats.from_dict(stats)
        return cls(stats.mean, stats.std, eps=eps)

    @property
    def num_freqs(self) -> int:
        return self.mean.numel()

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        spec = _check_spec(spec, "FrequencyNormalize")
        if spec.shape[-2] != self.num_freqs:
            raise ValueError(
                f"FrequencyNormalize: spectrogram has {spec.shape[-2]} frequency bins, statistics have {self.num_freqs}"
            )
        mean = self.mean.to(spec.dtype)
        std = self.std.clamp_min(self.eps).to(spec.dtype)
        return (spec - mean[:, None]) / std[:, None]

    def extra_repr(self) -> str:
        return f"num_freqs={self.num_freqs}, eps={self.eps}"


class SpectrogramStats:
    """Streaming per-frequency mean and std over many spectrograms (every frame of every clip counts once).

    ``update(spec)`` takes ``…×F×T`` (F×T, C×F×T, B×C×F×T); the statistics are kept in float64 as
    (count, mean, M2 = Σ(x − mean)²) and combined with Chan et al.'s parallel rule, so updating one clip
    at a time, in batches, or in separate workers later :meth:`merge`-d gives the same numbers as a
    two-pass computation over the concatenation. ``std`` is the population std (``correction=0``), the one
    that makes the fitted data exactly unit-variance; :meth:`var` takes another correction.

    On disk: JSON (``to_dict``/``from_dict``, ``save`` writes atomically, ``load``). ``meta`` is free-form
    JSON-able information saved with the numbers (e.g. the feature's parameters).

    Example::

        >>> a = SpectrogramStats().update(torch.randn(1, 80, 101))        # worker 1
        >>> b = SpectrogramStats().update(torch.randn(4, 1, 80, 101))     # worker 2
        >>> a.merge(b).count                                              # frames: 101 + 4·101
        505
        >>> SpectrogramStats.from_dict(json.loads(json.dumps(a.to_dict()))).std.shape
        torch.Size([80])
        >>> # a.save("audio_stats.json") ... SpectrogramStats.load("audio_stats.json")
    """

    FORMAT = "avssl.spectrogram_stats"
    VERSION = 1

    def __init__(self, num_freqs: Optional[int] = None, meta: Optional[Dict[str, Any]] = None) -> None:
        self.count = 0
        self.num_freqs = num_freqs
        self.meta: Dict[str, Any] = dict(meta or {})
        self._mean = torch.zeros(num_freqs or 0, dtype=torch.float64)
        self._m2 = torch.zeros(num_freqs or 0, dtype=torch.float64)

    def _combine(self, n_b: int, mean_b: torch.Tensor, m2_b: torch.Tensor) -> None:
        if n_b == 0:
            return
        if self.num_freqs is None:
            self.num_freqs = int(mean_b.numel())
            self._mean = torch.zeros_like(mean_b)
            self._m2 = torch.zeros_like(mean_b)
        elif mean_b.numel() != self.num_freqs:
            raise ValueError(f"SpectrogramStats: got {mean_b.numel()} frequency bins, expected {self.num_freqs}")
        n_a = self.count
        total = n_a + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / total)
        self._m2 = self._m2 + m2_b + delta.square() * (n_a * n_b / total)
        self.count = total

    def update(self, spec: Any) -> "SpectrogramStats":
        """Add every frame of ``spec`` (…×F×T). Returns self."""
        x = torch.as_tensor(spec).detach().to("cpu", torch.float64)
        if x.ndim < 2:
            raise ValueError(f"SpectrogramStats.update: expected …×F×T, got shape {tuple(x.shape)}")
        f = x.shape[-2]
        rows = x.movedim(-2, -1).reshape(-1, f)  # N×F: one row per frame
        if rows.shape[0] == 0:
            return self
        if not bool(torch.isfinite(rows).all()):
            raise ValueError("SpectrogramStats.update: spectrogram has non-finite values (NaN or inf)")
        mean_b = rows.mean(0)
        m2_b = (rows - mean_b).square().sum(0)
        self._combine(rows.shape[0], mean_b, m2_b)
        return self

    def merge(self, other: "SpectrogramStats") -> "SpectrogramStats":
        """Fold ``other`` (e.g. another worker's statistics) into self. Returns self."""
        if not isinstance(other, SpectrogramStats):
            raise TypeError(f"SpectrogramStats.merge: expected SpectrogramStats, got {type(other).__name__}")
        if other.count:
            self._combine(other.count, other._mean.clone(), other._m2.clone())
        return self

    def _require(self) -> None:
        if self.count == 0:
            raise ValueError("SpectrogramStats: no spectrogram frames seen yet (call update first)")

    @property
    def mean(self) -> torch.Tensor:
        """Per-frequency mean, float64 F."""
        self._require()
        return self._mean.clone()

    def var(self, correction: int = 0) -> torch.Tensor:
        """Per-frequency variance, M2 / (count − correction), float64 F."""
        self._require()
        if self.count - correction <= 0:
            raise ValueError(f"SpectrogramStats.var: {self.count} frames are too few for correction={correction}")
        return self._m2 / (self.count - correction)

    @property
    def std(self) -> torch.Tensor:
        """Per-frequency population std, float64 F."""
        return self.var(0).sqrt()

    # -- persistence -------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """JSON-able: format, version, count, num_freqs, mean, m2 (for merging later), std, meta."""
        std = self.std.tolist() if self.count else []
        return {
            "format": self.FORMAT,
            "version": self.VERSION,
            "count": int(self.count),
            "num_freqs": self.num_freqs,
            "mean": self._mean.tolist(),
            "m2": self._m2.tolist(),
            "std": std,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SpectrogramStats":
        for key in ("count", "mean", "m2"):
            if key not in d:
                raise ValueError(f"SpectrogramStats.from_dict: missing key {key!r}")
        if d.get("format", cls.FORMAT) != cls.FORMAT:
            raise ValueError(f"SpectrogramStats.from_dict: format is {d.get('format')!r}, expected {cls.FORMAT!r}")
        mean = torch.tensor(d["mean"], dtype=torch.float64)
        m2 = torch.tensor(d["m2"], dtype=torch.float64)
        if mean.shape != m2.shape or mean.ndim != 1:
            raise ValueError(f"SpectrogramStats.from_dict: mean and m2 must be lists of equal length, got {len(d['mean'])} and {len(d['m2'])}")
        count = int(d["count"])
        if count < 0:
            raise ValueError(f"SpectrogramStats.from_dict: count must be >= 0, got {count}")
        num_freqs = d.get("num_freqs")
        if num_freqs is None and mean.numel():
            num_freqs = mean.numel()
        if num_freqs is not None and mean.numel() and int(num_freqs) != mean.numel():
            raise ValueError(f"SpectrogramStats.from_dict: num_freqs={num_freqs} but mean has {mean.numel()} entries")
        s = cls(num_freqs=None if num_freqs is None else int(num_freqs), meta=dict(d.get("meta") or {}))
        if mean.numel():
            s._mean, s._m2 = mean, m2
        s.count = count
        return s

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write JSON atomically (a reader never sees half a file)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "SpectrogramStats":
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"spectrogram statistics not found: {path}")
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        try:
            return cls.from_dict(d)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def __repr__(self) -> str:
        return f"SpectrogramStats(count={self.count}, num_freqs={self.num_freqs})"


# ---------------------------------------------------------------------------------------------
# pipelines
# ---------------------------------------------------------------------------------------------
class AudioPipeline(nn.Module):
    """Modules applied in order; ``forward(x, generator=None)`` hands the generator to the random ones."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        super().__init__()
        self.steps = nn.ModuleList(modules)

    def forward(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        for m in self.steps:
            x = m(x, generator=generator) if isinstance(m, _RandomModule) else m(x)
        return x

    def __getitem__(self, i: int) -> nn.Module:
        return self.steps[i]

    def __len__(self) -> int:
        return len(self.steps)


_DEFAULT_MASKS = {"logmel": (8, 20), "logstft": (24, 20)}


def build_audio_transform(
    kind: str = "logmel",
    train: bool = False,
    *,
    sample_rate: Optional[int] = None,
    stats: Union[SpectrogramStats, Mapping[str, Any], str, os.PathLike, None] = None,
    gain_db: Optional[Tuple[float, float]] = (-6.0, 6.0),
    freq_mask: Optional[int] = None,
    time_mask: Optional[int] = None,
    num_masks: int = 1,
    mask_fill: Union[str, float] = "mean",
    generator: Optional[torch.Generator] = None,
    **feature_kwargs: Any,
) -> AudioPipeline:
    """The waveform 1×S -> spectrogram 1×F×T' pipeline (B×1×S -> B×1×F×T' works too).

    ``train``: RandomGain(gain_db) -> feature -> [FrequencyNormalize(stats)] -> FrequencyMasking(freq_mask)
    -> TimeMasking(time_mask). Test: feature -> [FrequencyNormalize(stats)].

    Args:
        kind: ``"logmel"`` (:class:`LogMelSpectrogram`, default rate 16 kHz) or ``"logstft"``
            (:class:`LogSTFT`, AVID-CMA's, default rate 24 kHz).
        sample_rate: the waveform's rate.
        stats: per-frequency corpus statistics (a :class:`SpectrogramStats`, its dict or a JSON path);
            None = no normalisation.
        gain_db: range of the random gain (None = none).
        freq_mask, time_mask: maximum mask widths in bins / frames (0 = no masking). Defaults: 8 of 80 mel
            bands or 24 of 257 STFT bins (~10 %), and 20 frames (0.2 s at 100 frames/s) — SpecAugment's
            proportions scaled to 1–2 s clips.
        num_masks, mask_fill: see :class:`TimeMasking`.
        generator: default generator of the random steps (a call's ``generator=`` overrides it).
        feature_kwargs: passed to the feature module (``n_mels``, ``n_fft``, ``hop_length``, ...).

    Example::

        >>> t = build_audio_transform("logmel", train=True, sample_rate=16000)
        >>> t(torch.randn(1, 32000), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([1, 80, 201])
    """
    if kind == "logmel":
        feature: nn.Module = LogMelSpectrogram(sample_rate=sample_rate or 16000, **feature_kwargs)
    elif kind == "logstft":
        feature = LogSTFT(sample_rate=sample_rate or 24000, **feature_kwargs)
    else:
        raise KeyError(f"unknown audio feature kind {kind!r}; known: ['logmel', 'logstft']")
    steps: List[nn.Module] = []
    if train and gain_db is not None:
        steps.append(RandomGain(gain_db[0], gain_db[1], generator=generator))
    steps.append(feature)
    if stats is not None:
        norm = FrequencyNormalize.from_stats(stats)
        if norm.num_freqs != feature.num_freqs:  # type: ignore[attr-defined]
            raise ValueError(
                f"build_audio_transform: statistics have {norm.num_freqs} frequency bins but {kind} "
                f"produces {feature.num_freqs}"  # type: ignore[attr-defined]
            )
        steps.append(norm)
    if train:
        default_f, default_t = _DEFAULT_MASKS[kind]
        fw = default_f if freq_mask is None else int(freq_mask)
        tw = default_t if time_mask is None else int(time_mask)
        if fw > 0 and num_masks > 0:
            steps.append(FrequencyMasking(fw, num_masks=num_masks, fill=mask_fill, generator=generator))
        if tw > 0 and num_masks > 0:
            steps.append(TimeMasking(tw, num_masks=num_masks, fill=mask_fill, generator=generator))
    return AudioPipeline(steps)
