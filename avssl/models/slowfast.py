"""SlowFast (Feichtenhofer et al., ICCV 2019) and Audiovisual SlowFast (Xiao et al., 2020) encoders.

Slow pathway: T frames, C channels. Fast pathway: αT frames, βC channels, no temporal down-sampling.
After the stem and after res2, res3 and res4 a lateral connection carries the fast features to the slow
pathway, where they are concatenated on the channel axis. Fusion types (``fusion``):

======================== ================================================================ ==============
fusion                   fast (αT, S², βC) → slow (T, S², ·)                              channels added
======================== ================================================================ ==============
``time_strided_conv``    kt×1×1 conv, stride α×1×1 (+BN+ReLU); kt = 7 for α = 4 (8×8),     2βC (ratio 2)
(default)                5 otherwise (4×16, α = 8), as in the model zoo
``time_to_channel``      reshape: the α consecutive fast frames of slow step t are packed   αβC
                         into channels (channel-major: c·α + k)
``time_strided_sample``  every α-th fast frame (the frames the slow pathway sees)           βC
======================== ================================================================ ==============

Defaults are the 8×8 R50 model (α = 4, β = 1/8, fusion ratio 2, fusion kernel 7); ``slowfast_r50`` has
33,644,488 backbone parameters, 34,566,488 (34.57 M, the published figure) with its 2304→400 head, equal to
pytorchvideo's ``create_slowfast`` with the same arguments, and its modules are registered in the same
order. Output: the pooled slow and fast res5 maps concatenated, ``out_dim = 8C·4 + 8C·4·β`` (2048 + 256).

Inputs: ``forward(x)`` takes ``[slow, fast]`` (B×3×T×H×W and B×3×αT×H×W) or one B×3×αT×H×W tensor, whose
slow view is ``x[:, :, ::α]`` (αT must then be a multiple of α).

``forward_features`` keys are ``"<pathway>/<stage>"``: ``slow/stem, fast/stem, slow/res2, fast/res2, …,
slow/res5, fast/res5`` (and ``audio/…`` for AVSlowFast); each map is the stage output of that pathway
*before* the lateral fusion that follows it (so ``slow/res2`` has 4C channels, not 4C + 2βC·4).

Non-local blocks (SlowFast-NL) go on the slow pathway only: ``nonlocal_stages={"res3": [1, 3],
"res4": [1, 3, 5]}`` (0-based units, see :mod:`avssl.models.resnet3d`).

``avslowfast_r50`` adds pytorchvideo's ``create_audio_visual_slowfast`` audio pathway (β_A = 1/2: 32-ch
stem of parallel 9×1 time / 1×9 frequency convs without pooling; res2/res3 separable bottlenecks,
res4/res5 3×3 (time×freq) bottlenecks; temporal stride 2 at res3-res5). At every fusion point the audio
map is averaged over frequency and passed through two 5×1×1 convs (+BN+ReLU; the second strided 16, 16, 8,
4 in time after stem, res2, res3, res4) whose output is *added* (broadcast over H×W) to the fused slow
map. Its input is ``[slow, fast, audio]`` with the log-mel spectrogram ``audio`` B×1×F×T_a, where
T_a = 16·T (e.g. 128 frames for 8 slow frames; ceil(T_a/16) must equal T). out_dim = 2048 + 256 + 1024.
Not included: AVSlowFast's DropPathway and hierarchical audio-visual synchronisation losses (training-time
parts of the method, not of the network).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from avssl.data.batch import is_batch
from avssl.models import ENCODERS
from avssl.models.base import Encoder
from avssl.models.resnet3d import (
    STAGE_NAMES,
    BasicBlock,
    BasicStem,
    Bottleneck,
    ResStage,
    SeparableBottleneck,
    _conv,
    _shortcut,
    channels,
    init_weights,
    make_nonlocal,
    parse_nonlocal_stages,
)

FUSIONS = ("time_strided_conv", "time_to_channel", "time_strided_sample")
#: SlowFast-NL: non-local blocks after these 0-based units of the slow pathway.
SLOWFAST_NL_STAGES: Dict[str, List[int]] = {"res3": [1, 3], "res4": [1, 3, 5]}
_DEPTHS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
VideoInput = Union[torch.Tensor, Sequence[torch.Tensor]]


class FastToSlow(nn.Module):
    """Lateral connection: fast map B×C_f×αT×H×W -> B×C_out×T×H×W to be concatenated to the slow map."""

    def __init__(self, fusion: str, fast_ch: int, alpha: int, kernel: int, channel_ratio: int) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"SlowFast: unknown fusion {fusion!r}; expected one of {', '.join(FUSIONS)}")
        self.fusion = fusion
        self.alpha = alpha
        if fusion == "time_strided_conv":
            self.out_channels = fast_ch * channel_ratio
            self.conv: Optional[nn.Module] = nn.Conv3d(
                fast_ch, self.out_channels, (kernel, 1, 1), stride=(alpha, 1, 1), padding=(kernel // 2, 0, 0),
                bias=False,
            )
            self.bn: Optional[nn.Module] = nn.BatchNorm3d(self.out_channels)
            self.relu: Optional[nn.Module] = nn.ReLU(inplace=True)
        else:
            self.out_channels = fast_ch * alpha if fusion == "time_to_channel" else fast_ch
            self.conv = self.bn = self.relu = None

    def forward(self, fast: torch.Tensor) -> torch.Tensor:
        if self.fusion == "time_strided_conv":
            return self.relu(self.bn(self.conv(fast)))
        if self.fusion == "time_strided_sample":
            return fast[:, :, :: self.alpha]
        b, c, t, h, w = fast.shape
        # (B, C, T, α, H, W) -> (B, C, α, T, H, W) -> (B, C·α, T, H, W): frame t·α+k -> channel c·α+k.
        x = fast.reshape(b, c, t // self.alpha, self.alpha, h, w).transpose(2, 3)
        return x.reshape(b, c * self.alpha, t // self.alpha, h, w)


class LateralFusion(nn.Module):
    """[slow, fast] -> [cat(slow, FastToSlow(fast)), fast] (pytorchvideo's FuseFastToSlow)."""

    def __init__(self, fast_to_slow: FastToSlow) -> None:
        super().__init__()
        self.fast_to_slow = fast_to_slow

    def forward(self, paths: List[torch.Tensor]) -> List[torch.Tensor]:
        slow, fast = paths[0], paths[1]
        return [torch.cat([slow, self.fast_to_slow(fast)], dim=1), fast] + list(paths[2:])


class AudioVisualFusion(LateralFusion):
    """[slow, fast, audio] -> [cat(slow, F→S(fast)) + A→S(audio), fast, audio].

    A→S: mean over frequency (audio maps are B×C_a×T_a×1×F), then 5×1×1 conv (C_a → C_a/4) + BN + ReLU and
    5×1×1 conv (→ channels of the fused slow map, temporal stride ``audio_stride``) + BN + ReLU; the result
    B×C×T×1×1 is broadcast over the slow map's H×W.
    """

    def __init__(self, fast_to_slow: FastToSlow, audio_ch: int, slow_out_ch: int, audio_stride: int) -> None:
        super().__init__(fast_to_slow)
        interm = max(1, int(audio_ch * 0.25))
        self.audio_to_slow = nn.Sequential(
            nn.Conv3d(audio_ch, interm, (5, 1, 1), padding=(2, 0, 0), bias=False),
            nn.BatchNorm3d(interm),
            nn.ReLU(inplace=True),
            nn.Conv3d(interm, slow_out_ch, (5, 1, 1), stride=(audio_stride, 1, 1), padding=(2, 0, 0), bias=False),
            nn.BatchNorm3d(slow_out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, paths: List[torch.Tensor]) -> List[torch.Tensor]:
        slow, fast, audio = paths
        fused = torch.cat([slow, self.fast_to_slow(fast)], dim=1)
        a = self.audio_to_slow(audio.mean(dim=-1, keepdim=True))
        return [fused + a, fast, audio]


class AcousticStem(nn.Module):
    """Audio stem: parallel 9×1×1 (time) and 1×1×9 (frequency) convs summed → BN → ReLU (no pooling).
    B×1×T_a×1×F -> B×C×T_a×1×F."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.ModuleList([_conv(in_ch, out_ch, (9, 1, 1)), _conv(in_ch, out_ch, (1, 1, 9))])
        self.bn = nn.BatchNorm3d(out_ch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv[0](x) + self.conv[1](x)))


class PathwayStage(nn.Module):
    """One stage of every pathway (registered slow, fast[, audio]) followed by an optional fusion."""

    def __init__(self, slow: nn.Module, fast: nn.Module, audio: Optional[nn.Module], fuse: Optional[nn.Module]) -> None:
        super().__init__()
        self.slow = slow
        self.fast = fast
        self.audio = audio
        self.fuse = fuse

    def run(self, paths: List[torch.Tensor]) -> List[torch.Tensor]:
        out = [self.slow(paths[0]), self.fast(paths[1])]
        if self.audio is not None:
            out.append(self.audio(paths[2]))
        return out


class SlowFast(Encoder):
    """Two- (or three-, with audio) pathway encoder; see the module docstring for inputs and outputs."""

    def __init__(
        self,
        stages: Sequence[PathwayStage],
        out_dim: int,
        alpha: int,
        in_channels: int = 3,
        audio_time_ratio: Optional[int] = None,
    ) -> None:
        super().__init__()
        if len(stages) != 1 + len(STAGE_NAMES):
            raise ValueError(f"SlowFast needs {1 + len(STAGE_NAMES)} stages (stem, res2..res5), got {len(stages)}")
        self.out_dim = out_dim
        self.alpha = alpha
        self.in_channels = in_channels
        self.audio_time_ratio = audio_time_ratio
        self.pathways: Tuple[str, ...] = ("slow", "fast", "audio") if audio_time_ratio else ("slow", "fast")
        for name, stage in zip(("stem",) + STAGE_NAMES, stages):
            self.add_module(name, stage)

    def _check_visual(self, slow: torch.Tensor, fast: torch.Tensor) -> None:
        name = type(self).__name__
        for what, t in (("slow", slow), ("fast", fast)):
            if not is_batch(t, "video") or t.shape[1] != self.in_channels:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"{name}: the {what} input must be B×{self.in_channels}×T×H×W, got {shape}")
        if fast.shape[2] != self.alpha * slow.shape[2]:
            raise ValueError(
                f"{name}: the fast pathway needs alpha={self.alpha} × the slow frames, got {slow.shape[2]} slow "
                f"and {fast.shape[2]} fast frames"
            )

    def split_inputs(self, x: VideoInput) -> List[torch.Tensor]:
        """Normalise the input to the pathway tensors: [slow, fast] or [slow, fast, audio B×1×T_a×1×F]."""
        name = type(self).__name__
        if isinstance(x, torch.Tensor):
            if self.audio_time_ratio:
                raise ValueError(f"{name}: expects a list [slow, fast, audio], got a single tensor")
            if not is_batch(x, "video") or x.shape[2] % self.alpha != 0:
                raise ValueError(
                    f"{name}: a single-tensor input must be B×{self.in_channels}×αT×H×W with the frame count a "
                    f"multiple of alpha={self.alpha}, got {tuple(x.shape)}"
                )
            slow, fast = x[:, :, :: self.alpha], x
            self._check_visual(slow, fast)
            return [slow, fast]
        if not isinstance(x, (list, tuple)) or len(x) != len(self.pathways):
            raise ValueError(
                f"{name}: expects [{', '.join(self.pathways)}] (or one αT-frame tensor without audio), got "
                f"{type(x).__name__} of length {len(x) if isinstance(x, (list, tuple)) else 'n/a'}"
            )
        slow, fast = x[0], x[1]
        self._check_visual(slow, fast)
        if not self.audio_time_ratio:
            return [slow, fast]
        audio = x[2]
        if not is_batch(audio, "audio") or audio.shape[1] != 1:
            shape = tuple(audio.shape) if isinstance(audio, torch.Tensor) else type(audio).__name__
            raise ValueError(f"{name}: the audio input must be a B×1×F×T_a log-mel spectrogram, got {shape}")
        r = self.audio_time_ratio
        if (audio.shape[3] + r - 1) // r != slow.shape[2]:
            raise ValueError(
                f"{name}: audio with {audio.shape[3]} time frames does not align with {slow.shape[2]} slow frames; "
                f"use {r}×{slow.shape[2]} = {r * slow.shape[2]} spectrogram frames"
            )
        # B×1×F×T_a -> B×1×T_a×1×F: time on the conv's temporal axis, frequency on its width axis.
        return [slow, fast, audio.transpose(2, 3).unsqueeze(3)]

    def forward_features(self, x: VideoInput) -> Dict[str, torch.Tensor]:
        paths = self.split_inputs(x)
        feats: Dict[str, torch.Tensor] = {}
        for name in ("stem",) + STAGE_NAMES:
            stage = getattr(self, name)
            paths = stage.run(paths)
            for p, t in zip(self.pathways, paths):
                feats[f"{p}/{name}"] = t
            if stage.fuse is not None:
                paths = stage.fuse(paths)
        return feats

    def forward(self, x: VideoInput) -> torch.Tensor:
        """-> B×out_dim: the global-average-pooled res5 maps of every pathway, concatenated (slow first)."""
        feats = self.forward_features(x)
        return torch.cat([self.pool(feats[f"{p}/res5"]) for p in self.pathways], dim=1)


def build_slowfast(
    depth: int = 50,
    *,
    alpha: int = 4,
    beta: float = 0.125,
    fusion: str = "time_strided_conv",
    fusion_kernel: Optional[int] = None,
    fusion_channel_ratio: int = 2,
    in_channels: int = 3,
    base_channels: int = 64,
    width: float = 1.0,
    nonlocal_stages: Optional[Mapping[str, Sequence[int]]] = None,
    nonlocal_mode: str = "embedded_gaussian",
    nonlocal_sub_sample: bool = True,
    zero_init_residual: bool = False,
    audio: bool = False,
    audio_beta: float = 0.5,
    audio_time_ratio: int = 16,
) -> SlowFast:
    """Build a SlowFast (``audio=False``) or AVSlowFast (``audio=True``) network.

    Args:
        depth: 18 (basic units: kt×3×3 then 1×3×3), 50 or 101 (bottlenecks).
        alpha: frame-rate ratio fast/slow.
        beta: channel ratio fast/slow (1/beta must be an integer).
        fusion: ``time_strided_conv`` (default), ``time_to_channel`` or ``time_strided_sample``.
        fusion_kernel: temporal kernel of the fusion conv; default 7 for α = 4, else 5.
        fusion_channel_ratio: fusion conv output = ratio × fast channels (2 in the paper).
        in_channels, base_channels, width: input channels, slow stem width (64), width multiplier.
        nonlocal_stages, nonlocal_mode, nonlocal_sub_sample: non-local blocks on the slow pathway.
        zero_init_residual: γ=0 for the BN closing each residual branch.
        audio: add the AVSlowFast audio pathway (R50-style only).
        audio_beta: channel ratio audio/slow (1/2).
        audio_time_ratio: spectrogram frames per slow frame (16); must be a multiple of 4.
    """
    who = "avslowfast" if audio else "slowfast"
    if depth not in _DEPTHS:
        raise ValueError(f"{who}: depth must be one of {sorted(_DEPTHS)}, got {depth}")
    if not isinstance(alpha, int) or alpha < 1:
        raise ValueError(f"{who}: alpha must be a positive int, got {alpha!r}")
    ratio = _inverse_ratio(beta, "beta", who)
    kt_fuse = fusion_kernel if fusion_kernel is not None else (7 if alpha == 4 else 5)
    if kt_fuse < 1 or kt_fuse % 2 == 0:
        raise ValueError(f"{who}: fusion_kernel must be a positive odd int, got {kt_fuse}")
    if audio and (depth == 18 or audio_time_ratio % 4 != 0 or audio_time_ratio < 4):
        raise ValueError(f"{who}: needs a bottleneck depth (50/101) and audio_time_ratio a multiple of 4; "
                         f"got depth={depth}, audio_time_ratio={audio_time_ratio}")
    a_ratio = _inverse_ratio(audio_beta, "audio_beta", who) if audio else 1
    c = channels(base_channels, width)
    if c % ratio or (audio and c % a_ratio):
        raise ValueError(f"{who}: the slow stem width {c} must be divisible by 1/beta={ratio}"
                         + (f" and 1/audio_beta={a_ratio}" if audio else ""))
    layers = _DEPTHS[depth]
    basic = depth == 18
    expansion = 1 if basic else 4
    slow_kt, fast_kt = (1, 1, 3, 3), (3, 3, 3, 3)
    # The audio stages' time strides: fusion conv strides then follow 16, 16, 8, 4 (for ratio 16).
    audio_t_strides = (1, 2, 2, 2)

    def fusion_module(fast_ch: int, slow_out: int, audio_ch: int, stage_idx: int) -> nn.Module:
        f2s = FastToSlow(fusion, fast_ch, alpha, kt_fuse, fusion_channel_ratio)
        if not audio:
            return LateralFusion(f2s)
        # Audio has been down-sampled in time by prod(audio_t_strides[:stage_idx]) so far.
        t_down = 1
        for s in audio_t_strides[:stage_idx]:
            t_down *= s
        return AudioVisualFusion(f2s, audio_ch, slow_out + f2s.out_channels, audio_time_ratio // t_down)

    nl_plan = parse_nonlocal_stages(nonlocal_stages, dict(zip(STAGE_NAMES, layers)), who)

    stages: List[PathwayStage] = []
    fast_c, audio_c = c // ratio, c // a_ratio
    stem_fuse = fusion_module(fast_c, c, audio_c, 0)
    stages.append(PathwayStage(
        BasicStem(in_channels, c, temporal_kernel=1, pool=True),
        BasicStem(in_channels, fast_c, temporal_kernel=5, pool=True),
        AcousticStem(1, audio_c) if audio else None,
        stem_fuse,
    ))
    slow_in, fast_in, audio_in = c + stem_fuse.fast_to_slow.out_channels, fast_c, audio_c
    for i, name in enumerate(STAGE_NAMES):
        n = layers[i]
        s = 1 if i == 0 else 2
        slow_out = c * expansion * 2**i
        slow_inner = c * 2**i
        slow_blocks = _stage_units(basic, n, slow_in, slow_inner, slow_out, slow_kt[i], s)
        fast_blocks = _stage_units(basic, n, fast_in, slow_inner // ratio, slow_out // ratio, fast_kt[i], s)
        audio_stage = None
        if audio:
            audio_out, audio_inner = slow_out // a_ratio, slow_inner // a_ratio
            units: List[nn.Module] = []
            for u in range(n):
                cls = SeparableBottleneck if i < 2 else Bottleneck  # res2/res3 separable, as pytorchvideo
                units.append(cls(audio_in if u == 0 else audio_out, audio_inner, audio_out, temporal_kernel=1,
                                 spatial_stride=s if u == 0 else 1,
                                 temporal_stride=audio_t_strides[i] if u == 0 else 1, conv_b_kernel=(3, 1, 3)))
            audio_stage = ResStage(units)
            audio_in = audio_out
        nl = {j: make_nonlocal(slow_out, nonlocal_mode, nonlocal_sub_sample) for j in nl_plan.get(name, [])}
        fuse = fusion_module(slow_out // ratio, slow_out, slow_out // a_ratio, i + 1) if i < 3 else None
        stages.append(PathwayStage(ResStage(slow_blocks, nl), ResStage(fast_blocks), audio_stage, fuse))
        slow_in = slow_out + (fuse.fast_to_slow.out_channels if fuse is not None else 0)
        fast_in = slow_out // ratio
    out_dim = slow_out + slow_out // ratio + (slow_out // a_ratio if audio else 0)
    model = SlowFast(stages, out_dim, alpha, in_channels=in_channels,
                     audio_time_ratio=audio_time_ratio if audio else None)
    init_weights(model, zero_init_residual)
    return model


def _inverse_ratio(beta: float, arg: str, who: str) -> int:
    if not beta or beta <= 0 or beta > 1:
        raise ValueError(f"{who}: {arg} must be in (0, 1], got {beta!r}")
    r = round(1.0 / beta)
    if abs(r * beta - 1.0) > 1e-6:
        raise ValueError(f"{who}: 1/{arg} must be an integer, got {arg}={beta!r}")
    return r


def _stage_units(basic: bool, n: int, in_ch: int, inner: int, out_ch: int, kt: int, stride: int) -> List[nn.Module]:
    """One pathway's residual units: basic (kt×3×3, 1×3×3) or bottleneck (kt×1×1, 1×3×3, 1×1×1)."""
    units: List[nn.Module] = []
    for u in range(n):
        cin, s = (in_ch, stride) if u == 0 else (out_ch, 1)
        if basic:
            units.append(BasicBlock(_conv(cin, out_ch, (kt, 3, 3), (1, s, s)), _conv(out_ch, out_ch, (1, 3, 3)),
                                    out_ch, _shortcut(cin, out_ch, (1, s, s))))
        else:
            units.append(Bottleneck(cin, inner, out_ch, temporal_kernel=kt, spatial_stride=s))
    return units


@ENCODERS.register("slowfast_r50")
def slowfast_r50(**kwargs) -> SlowFast:
    """SlowFast 8×8 R50 (α=4, β=1/8, time-strided conv fusion, kernel 7); out_dim 2304.

    kwargs: see :func:`build_slowfast`, e.g. ``alpha=8, fusion_kernel=5`` for 4×16, or
    ``nonlocal_stages=SLOWFAST_NL_STAGES`` for SlowFast-NL.
    """
    return build_slowfast(50, **kwargs)


@ENCODERS.register("slowfast_r18")
def slowfast_r18(**kwargs) -> SlowFast:
    """SlowFast with basic units (2, 2, 2, 2) for small runs; out_dim 512 + 64 at 64 base channels."""
    return build_slowfast(18, **kwargs)


@ENCODERS.register("avslowfast_r50")
def avslowfast_r50(**kwargs) -> SlowFast:
    """Audiovisual SlowFast R50 (pytorchvideo ``create_audio_visual_slowfast``); input [slow, fast, audio]
    with audio a B×1×F×(16·T) log-mel spectrogram; out_dim 2048 + 256 + 1024 = 3328."""
    return build_slowfast(50, audio=True, **kwargs)
