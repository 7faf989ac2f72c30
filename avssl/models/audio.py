"""Audio encoders on log-mel / log-STFT spectrograms B×1×F×T (frequency on the height axis, time on width).

==================== ========================================================================= =======
name                 layout                                                                    out_dim
==================== ========================================================================= =======
``avid_audio_conv``  AVID-CMA's audio network (``Conv2D`` of facebookresearch/AVID-CMA            512
                     ``models/audio.py``), a plain (non-residual) 10-layer 2D conv net, see
                     :class:`AvidAudioConv`; global *max* pool
``audio_resnet18``   torchvision ``resnet18`` layout with a 1-channel 7×7/2 stem conv, no ``fc``;  512
                     global average pool (:class:`~avssl.models.image.ResNet2d`)
``audio_conv_tiny``  ``avid_audio_conv`` at 16 base channels (CPU demos and tests)                 128
==================== ========================================================================= =======

``avid_audio_conv`` layers (C = ``round(base_channels · width)``, 64 by default; every conv is bias-free
and followed by BatchNorm2d and ReLU; "same" padding, k // 2):

========= ================================================ ============ ==========================
stage     layers                                           stride (F,T) output (F = 80, T = 200)
========= ================================================ ============ ==========================
``stem``  conv 7×7, 1 → C                                  2            C × 40 × 100
``res2``  conv 3×3, C → C; conv 3×3, C → C                 2, 1         C × 20 × 50
``res3``  conv 3×3, C → 2C; conv 3×3, 2C → 2C              2, 1         2C × 10 × 25
``res4``  conv 3×3, 2C → 4C; conv 3×3, 4C → 4C             2, 1         4C × 5 × 13
``res5``  conv 3×3, 4C → 8C; conv 3×3, 8C → 8C             1, 1         8C × 5 × 13
pool      global max over F×T                                           8C
========= ================================================ ============ ==========================

With C = 64 that is 1·64·49 + Σ convs 9·Cin·Cout + 2 BN parameters per channel = 4,725,696 parameters.
Module names follow AVID-CMA (``conv1`` = Sequential(conv, bn, relu); ``block1``..``block4`` with
``conv1, bn1, conv2, bn2``), so its released audio weights load after stripping the ``audio_model.``
prefix. Unlike the original, a spectrogram may have any F×T large enough for the strides (≥ 1 cell).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Optional

import torch
import torch.nn as nn

from avssl.models import ENCODERS
from avssl.models.base import Encoder, init_conv_bn_
from avssl.models.image import ResNet2d, check_2d_input, stem_width

STAGE_NAMES = ("res2", "res3", "res4", "res5")
_AUDIO_INPUT = "B×1×F×T spectrogram"


class AvidConvBlock(nn.Module):
    """Two 3×3 conv-BN-ReLU layers, the first strided; no residual connection (AVID-CMA ``Basic2DBlock``).

    B×in_ch×F×T -> B×out_ch×⌈F/s⌉×⌈T/s⌉.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(x)))


def subtract_time_mean(x: torch.Tensor) -> torch.Tensor:
    """B×C×F×T log-spectrogram -> the same with each clip's mean over time removed, per frequency bin.

    In the log domain a recording's gain and any stationary noise colour or hum are (close to) a
    per-frequency offset; removing it leaves the transient events. On the synthetic corpus it lifts a
    random ``audio_conv_tiny``'s linear probe from 50% to 85% (kNN 33% to 67%), but it also removes
    sounds that are themselves stationary (a steady tone), and fine-tuning on 24 clips did worse with
    it (50% against 75%); so it is an option, off by default.
    """
    return x - x.mean(dim=-1, keepdim=True)


class AvidAudioConv(Encoder):
    """AVID-CMA's 2D conv audio encoder (layer table in the module docstring); B×1×F×T -> B×8C.

    Args:
        in_channels: spectrogram channels (1).
        base_channels, width: C = ``round(base_channels · width)`` (64 in AVID-CMA); out_dim = 8C.
        global_pool: ``"max"`` (AVID-CMA's AdaptiveMaxPool2d) or ``"avg"``.
        input_norm: ``"clip"`` subtracts each clip's mean over time per frequency bin (cepstral mean
            normalisation, see :func:`subtract_time_mean`); ``None`` feeds the spectrogram as is.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 64,
        width: float = 1.0,
        global_pool: str = "max",
        input_norm: Optional[str] = None,
    ) -> None:
        super().__init__()
        if global_pool not in ("max", "avg"):
            raise ValueError(f"AvidAudioConv: global_pool must be 'max' or 'avg', got {global_pool!r}")
        if input_norm not in (None, "clip"):
            raise ValueError(f"AvidAudioConv: input_norm must be None or 'clip', got {input_norm!r}")
        self.input_norm = input_norm
        c = stem_width(base_channels, width)
        self.in_channels = in_channels
        self.global_pool = global_pool
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, c, kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
        )
        self.block1 = AvidConvBlock(c, c, stride=2)
        self.block2 = AvidConvBlock(c, 2 * c, stride=2)
        self.block3 = AvidConvBlock(2 * c, 4 * c, stride=2)
        self.block4 = AvidConvBlock(4 * c, 8 * c, stride=1)
        self.out_dim = 8 * c
        init_conv_bn_(self)

    def forward_features(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """B×1×F×T -> ordered ``{"stem", "res2", "res3", "res4", "res5"}`` maps, each B×C'×F'×T'."""
        check_2d_input(x, self.in_channels, type(self).__name__, _AUDIO_INPUT)
        feats: Dict[str, torch.Tensor] = OrderedDict()
        if self.input_norm == "clip":
            x = subtract_time_mean(x)
        x = self.conv1(x)
        feats["stem"] = x
        for i, name in enumerate(STAGE_NAMES):
            x = getattr(self, f"block{i + 1}")(x)
            feats[name] = x
        return feats

    def pool(self, feat: torch.Tensor) -> torch.Tensor:
        """B×C×F×T -> B×C, global max (AVID-CMA) or average."""
        if self.global_pool == "max":
            return feat.flatten(2).amax(dim=2)
        return feat.flatten(2).mean(dim=2)


@ENCODERS.register("avid_audio_conv")
def avid_audio_conv(**kwargs) -> AvidAudioConv:
    """AVID-CMA's audio network (4.73 M parameters, max-pooled 512-d output); kwargs: :class:`AvidAudioConv`."""
    return AvidAudioConv(**kwargs)


@ENCODERS.register("audio_conv_tiny")
def audio_conv_tiny(**kwargs) -> AvidAudioConv:
    """``avid_audio_conv`` at 16 base channels (0.30 M parameters, 128-d output) for CPU demos and tests."""
    kwargs.setdefault("base_channels", 16)
    return AvidAudioConv(**kwargs)


@ENCODERS.register("audio_resnet18")
def audio_resnet18(
    *,
    in_channels: int = 1,
    base_channels: int = 64,
    width: float = 1.0,
    zero_init_residual: bool = False,
) -> ResNet2d:
    """torchvision ResNet-18 on 1-channel spectrograms B×1×F×T (11.17 M parameters, out_dim 512)."""
    return ResNet2d(
        "basic",
        (2, 2, 2, 2),
        in_channels=in_channels,
        base_channels=base_channels,
        width=width,
        zero_init_residual=zero_init_residual,
        input_name=_AUDIO_INPUT,
    )
