"""3D ResNet video encoders: R3D, MC3, R(2+1)D (torchvision and AVID-CMA layouts), I3D-R50 and Slow-R50.

Every encoder maps a clip B×C×T×H×W to ``forward_features`` maps ``stem, res2, res3, res4, res5`` (each
B×C'×T'×H'×W') and ``forward`` pools the last one to B×out_dim.

Registered builders (all take the keyword arguments of :func:`build_video_resnet` below):

- ``r3d_18`` (out_dim 512): torchvision's ``r3d_18`` — 3×7×7 stem without max-pool, basic units of two
  3×3×3 convs, stride 2 in T, H and W at res3-res5, global average pool.
- ``r3d_34`` (512): as ``r3d_18`` with (3, 4, 6, 3) units.
- ``mc3_18`` (512): torchvision's ``mc3_18`` (mixed convolutions) — as ``r3d_18`` in the stem and res2, then
  1×3×3 convs (spatial stride only, so time is never down-sampled) in res3-res5.
- ``r2plus1d_18`` (512): torchvision's ``r2plus1d_18`` — (2+1)D stem (1×7×7 to 45 channels, then 3×1×1),
  (2+1)D convs whose middle width M = ⌊27·Cin·Cout / (9·Cin + 3·Cout)⌋ matches the parameters of a full
  3×3×3 conv, average pool.
- ``r2plus1d_18_avid`` (512): AVID-CMA's R(2+1)D-18 (facebookresearch/AVID-CMA ``models/video.py``,
  ``BasicR2P1DBlock``). Differences from torchvision's: a full 3×7×7 stem conv followed by a 1×3×3
  max-pool (so every map is half the size), middle width of every (2+1)D conv = its output width (15.38 M
  parameters instead of 31.30 M), no BN after a unit's last temporal conv but one BN + ReLU after the
  residual sum, projection shortcuts without BN, and a global *max* pool. See :class:`AvidR2Plus1dBlock`.
- ``i3d_r50`` (2048): I3D ResNet-50 as pytorchvideo's hub ``i3d_r50`` (PySlowFast's I3D 8×8, the non-local
  paper's baseline) — 5×7×7 stem + 1×3×3 max-pool, bottlenecks whose first conv is 3×1×1 or 1×1×1 (all
  3 in res2; 3, 1, 3, 1, … in res3 and res4; 1, 3, 1 in res5), a 2×1×1 temporal max-pool after res2,
  average pool.
- ``slow_r50`` (2048): the Slow-only 8×8 R50 of the SlowFast paper (pytorchvideo hub ``slow_r50``, PySlowFast
  ``SLOW_8x8_R50``) — 1×7×7 stem + 1×3×3 max-pool, bottlenecks whose first conv is 1×1×1 in res2 and res3
  and 3×1×1 in res4 and res5, no temporal pooling anywhere, average pool.
- ``r3d_tiny`` / ``r2plus1d_tiny`` (128): one unit per stage and 16 base channels (CPU demos, tests).

Parameter counts (backbone, no classifier): r3d_18 33,166,272, mc3_18 11,490,240 and r2plus1d_18 31,300,125
(torchvision's minus its 512→400 fc), i3d_r50 27,223,872 and slow_r50 31,634,496 (pytorchvideo's hub
models minus their 2048→400 head). Published weights of these layouts load by name with
:func:`avssl.models.load_weights` (see :mod:`avssl.models.weights`).

Non-local blocks: ``nonlocal_stages`` maps a stage name (``res2``..``res5``) to the **0-based** indices of
the residual units after which a :class:`~avssl.models.nonlocal_block.NonLocalBlock` is inserted (as in
PySlowFast's ``NONLOCAL.LOCATION``; negative indices count from the end). The non-local paper's I3D-NL
recipe is ``{"res3": [1, 3], "res4": [1, 3, 5]}`` (5 blocks in a ResNet-50). Indices past the end of a
shallower stage (e.g. 3 in r3d_18's 2-unit res3) are skipped with a warning, so the same recipe can be
applied to every depth; ``nonlocal_mode`` and ``nonlocal_sub_sample`` (default True: 1×2×2 max-pool on
φ/g, as in the paper's video models) configure the blocks, which start as the identity.
"""
from __future__ import annotations

import warnings
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from avssl.data.batch import is_batch
from avssl.models import ENCODERS
from avssl.models.base import Encoder, init_conv_bn_
from avssl.models.nonlocal_block import NonLocalBlock

STAGE_NAMES: Tuple[str, ...] = ("res2", "res3", "res4", "res5")
#: The non-local paper's (and SlowFast-NL's) placement for a ResNet-50: 0-based units of res3 and res4.
NONLOCAL_R50_STAGES: Dict[str, List[int]] = {"res3": [1, 3], "res4": [1, 3, 5]}

Triple = Tuple[int, int, int]
IntOrTriple = Union[int, Sequence[int]]


def _triple(v: IntOrTriple) -> Triple:
    if isinstance(v, int):
        return (v, v, v)
    t = tuple(int(i) for i in v)
    if len(t) != 3:
        raise ValueError(f"expected an int or 3 ints, got {v!r}")
    return t  # type: ignore[return-value]


def _conv(in_ch: int, out_ch: int, kernel: IntOrTriple, stride: IntOrTriple = 1) -> nn.Conv3d:
    """Bias-free Conv3d with 'same' padding (k // 2 per axis), as in every ResNet here."""
    k = _triple(kernel)
    return nn.Conv3d(in_ch, out_ch, k, stride=_triple(stride), padding=tuple(i // 2 for i in k), bias=False)


def _shortcut(in_ch: int, out_ch: int, stride: IntOrTriple, bn: bool = True) -> Optional[nn.Module]:
    """1×1×1 projection (+BN) when the residual changes width or resolution, else None (identity)."""
    s = _triple(stride)
    if in_ch == out_ch and s == (1, 1, 1):
        return None
    conv = nn.Conv3d(in_ch, out_ch, kernel_size=1, stride=s, bias=False)
    return nn.Sequential(conv, nn.BatchNorm3d(out_ch)) if bn else conv


def channels(base_channels: int, width: float = 1.0) -> int:
    """The stem/res2 width: ``round(base_channels · width)``; errors name the argument."""
    c = int(round(base_channels * width))
    if c < 1:
        raise ValueError(f"base_channels={base_channels} × width={width} gives {c} channels; need at least 1")
    return c


def check_video_input(x: torch.Tensor, in_channels: int, who: str) -> None:
    """Raise a clear ValueError unless x is B×in_channels×T×H×W."""
    if not is_batch(x, "video") or x.shape[1] != in_channels:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who} expects a B×{in_channels}×T×H×W video tensor, got {shape}")


# ----------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------
class Conv2Plus1d(nn.Sequential):
    """(2+1)D factorised 3×3×3 conv: 1×3×3 spatial (Cin→M, stride 1×s×s) → BN → ReLU → 3×1×1 temporal
    (M→Cout, stride s×1×1). B×Cin×T×H×W -> B×Cout×T/s×H/s×W/s."""

    def __init__(self, in_ch: int, out_ch: int, mid_ch: int, stride: int = 1) -> None:
        super().__init__(
            _conv(in_ch, mid_ch, (1, 3, 3), (1, stride, stride)),
            nn.BatchNorm3d(mid_ch),
            nn.ReLU(inplace=True),
            _conv(mid_ch, out_ch, (3, 1, 1), (stride, 1, 1)),
        )


def r2plus1d_mid_channels(in_ch: int, out_ch: int) -> int:
    """torchvision/VMZ middle width: a (2+1)D conv gets (about) the parameters of the full 3×3×3 conv."""
    return (in_ch * out_ch * 27) // (in_ch * 9 + 3 * out_ch)


class BasicBlock(nn.Module):
    """Basic residual unit: relu(BN(conv2(relu(BN(conv1(x))))) + shortcut(x)).

    ``conv1`` (carrying the stride) and ``conv2`` are given by the builder: 3×3×3 convs (R3D), (2+1)D
    convs (R(2+1)D) or a kt×3×3 then 1×3×3 pair (SlowFast-R18). B×Cin×T×H×W -> B×Cout×T'×H'×W'.
    """

    def __init__(self, conv1: nn.Module, conv2: nn.Module, out_ch: int, shortcut: Optional[nn.Module]) -> None:
        super().__init__()
        # Registration order = torchvision's (conv1, bn, conv2, bn, downsample) so weights map 1:1.
        self.conv1 = conv1
        self.bn1 = nn.BatchNorm3d(out_ch)
        self.conv2 = conv2
        self.bn2 = nn.BatchNorm3d(out_ch)
        self.shortcut = shortcut
        self.relu = nn.ReLU(inplace=True)

    @property
    def last_bn(self) -> Optional[nn.BatchNorm3d]:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        res = x if self.shortcut is None else self.shortcut(x)
        return self.relu(out + res)


class AvidR2Plus1dBlock(nn.Module):
    """AVID-CMA's (2+1)D basic unit (``BasicR2P1DBlock`` of facebookresearch/AVID-CMA).

    Differences from torchvision's R(2+1)D unit: the middle width of both (2+1)D convs equals the output
    width (no parameter matching), the second temporal conv is *not* followed by its own BN — a single
    BN + ReLU come after the residual sum — and the projection shortcut is a bare 1×1×1 conv (no BN)::

        h = relu(bn(conv_t(relu(bn(conv_s(x))))))          # 1×3×3 (stride 1×s×s), 3×1×1 (stride s×1×1)
        h = conv_t2(relu(bn(conv_s2(h))))
        out = relu(bn_out(h + shortcut(x)))

    B×Cin×T×H×W -> B×Cout×T/s×H/s×W/s.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1_s = _conv(in_ch, out_ch, (1, 3, 3), (1, stride, stride))
        self.bn1_s = nn.BatchNorm3d(out_ch)
        self.conv1_t = _conv(out_ch, out_ch, (3, 1, 1), (stride, 1, 1))
        self.bn1_t = nn.BatchNorm3d(out_ch)
        self.conv2_s = _conv(out_ch, out_ch, (1, 3, 3))
        self.bn2_s = nn.BatchNorm3d(out_ch)
        self.conv2_t = _conv(out_ch, out_ch, (3, 1, 1))
        self.bn_out = nn.BatchNorm3d(out_ch)
        self.shortcut = _shortcut(in_ch, out_ch, stride, bn=False)
        self.relu = nn.ReLU(inplace=True)

    @property
    def last_bn(self) -> Optional[nn.BatchNorm3d]:
        return None  # the only closing BN follows the sum: zeroing it would silence the unit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn1_s(self.conv1_s(x)))
        h = self.relu(self.bn1_t(self.conv1_t(h)))
        h = self.relu(self.bn2_s(self.conv2_s(h)))
        h = self.conv2_t(h)
        res = x if self.shortcut is None else self.shortcut(x)
        return self.relu(self.bn_out(h + res))


class Bottleneck(nn.Module):
    """Bottleneck unit in pytorchvideo's layout: relu(branch(x) + shortcut(x)) with branch =
    conv_a kt×1×1 (stride st×1×1) → BN → ReLU → conv_b (default 1×3×3, stride 1×s×s) → BN → ReLU →
    conv_c 1×1×1 → BN. The shortcut is a 1×1×1 conv (stride st×s×s) + BN when width or resolution
    change. B×Cin×T×H×W -> B×Cout×T/st×H/s×W/s.
    """

    def __init__(
        self,
        in_ch: int,
        inner_ch: int,
        out_ch: int,
        temporal_kernel: int = 1,
        spatial_stride: int = 1,
        temporal_stride: int = 1,
        conv_b_kernel: Triple = (1, 3, 3),
    ) -> None:
        super().__init__()
        # Shortcut first: pytorchvideo's ResBlock registers branch1 before branch2.
        self.shortcut = _shortcut(in_ch, out_ch, (temporal_stride, spatial_stride, spatial_stride))
        self.conv_a = _conv(in_ch, inner_ch, (temporal_kernel, 1, 1), (temporal_stride, 1, 1))
        self.bn_a = nn.BatchNorm3d(inner_ch)
        self._build_b(inner_ch, conv_b_kernel, spatial_stride)
        self.conv_c = _conv(inner_ch, out_ch, 1)
        self.bn_c = nn.BatchNorm3d(out_ch)
        self.relu = nn.ReLU(inplace=True)

    def _build_b(self, ch: int, kernel: Triple, stride: int) -> None:
        self.conv_b = _conv(ch, ch, kernel, (1, stride, stride))
        self.bn_b = nn.BatchNorm3d(ch)

    def _branch_b(self, h: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn_b(self.conv_b(h)))

    @property
    def last_bn(self) -> Optional[nn.BatchNorm3d]:
        return self.bn_c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn_a(self.conv_a(x)))
        h = self._branch_b(h)
        h = self.bn_c(self.conv_c(h))
        res = x if self.shortcut is None else self.shortcut(x)
        return self.relu(h + res)


class SeparableBottleneck(Bottleneck):
    """Bottleneck whose middle conv is split into two parallel convs whose BN+ReLU outputs are summed:
    1×kh×kw (spatial / frequency) and kt×1×1 (temporal) — pytorchvideo's acoustic bottleneck used in the
    audio pathway of AVSlowFast (input laid out B×C×T×1×F)."""

    def _build_b(self, ch: int, kernel: Triple, stride: int) -> None:
        s = (1, stride, stride)
        self.conv_b = nn.ModuleList([_conv(ch, ch, (1, kernel[1], kernel[2]), s), _conv(ch, ch, (kernel[0], 1, 1), s)])
        self.bn_b = nn.ModuleList([nn.BatchNorm3d(ch), nn.BatchNorm3d(ch)])

    def _branch_b(self, h: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn_b[0](self.conv_b[0](h)))
        return out + self.relu(self.bn_b[1](self.conv_b[1](h)))


class BasicStem(nn.Module):
    """conv kt×7×7 (stride 1×2×2) → BN → ReLU (→ 1×3×3 max-pool, stride 1×2×2).
    B×Cin×T×H×W -> B×C×T×H/2×W/2 (H/4×W/4 with the pool)."""

    def __init__(self, in_ch: int, out_ch: int, temporal_kernel: int = 3, pool: bool = True) -> None:
        super().__init__()
        self.conv = _conv(in_ch, out_ch, (temporal_kernel, 7, 7), (1, 2, 2))
        self.bn = nn.BatchNorm3d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)) if pool else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv(x)))
        return x if self.pool is None else self.pool(x)


class R2Plus1dStem(nn.Sequential):
    """torchvision's (2+1)D stem: 1×7×7 conv (Cin→M, stride 1×2×2) → BN → ReLU → 3×1×1 conv (M→C)
    → BN → ReLU, M = 45 for C = 64 (scaled with C). B×Cin×T×H×W -> B×C×T×H/2×W/2."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        mid = max(1, round(45 * out_ch / 64))
        super().__init__(
            _conv(in_ch, mid, (1, 7, 7), (1, 2, 2)),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            _conv(mid, out_ch, (3, 1, 1)),
            nn.BatchNorm3d(out_ch),
            nn.ReLU(inplace=True),
        )


class ResStage(nn.Module):
    """A stage of residual units with optional non-local blocks after some of them.

    ``nonlocal_blocks`` is keyed by the 0-based index (as a string) of the unit it follows, so the
    state-dict keys of the units do not depend on which non-local blocks were added.
    """

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        nonlocal_blocks: Optional[Mapping[int, nn.Module]] = None,
        pre_pool: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        self.pre_pool = pre_pool
        self.blocks = nn.ModuleList(blocks)
        nl = dict(nonlocal_blocks or {})
        self.nonlocal_blocks = nn.ModuleDict({str(i): m for i, m in sorted(nl.items())})
        # Static per-unit plan (a plain tuple) keeps forward free of dict look-ups that depend on data.
        self._nl_keys: Tuple[Optional[str], ...] = tuple(str(i) if i in nl else None for i in range(len(blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_pool is not None:
            x = self.pre_pool(x)
        for blk, key in zip(self.blocks, self._nl_keys):
            x = blk(x)
            if key is not None:
                x = self.nonlocal_blocks[key](x)
        return x


def parse_nonlocal_stages(
    nonlocal_stages: Optional[Mapping[str, Sequence[int]]], depths: Mapping[str, int], who: str
) -> Dict[str, List[int]]:
    """Validate ``nonlocal_stages`` against the stage depths: stage -> sorted 0-based unit indices.

    Unknown stage names raise ValueError; indices past the end of a stage are dropped with a warning.
    """
    if not nonlocal_stages:
        return {}
    if not isinstance(nonlocal_stages, Mapping):
        raise TypeError(f"{who}: nonlocal_stages must map stage names to unit indices, got {nonlocal_stages!r}")
    out: Dict[str, List[int]] = {}
    for stage, idxs in nonlocal_stages.items():
        if stage not in depths:
            raise ValueError(f"{who}: nonlocal_stages has unknown stage {stage!r}; known stages: {', '.join(depths)}")
        if isinstance(idxs, int):
            idxs = [idxs]
        depth = depths[stage]
        keep = set()
        for i in idxs:
            if not isinstance(i, int) or isinstance(i, bool):
                raise TypeError(f"{who}: nonlocal_stages[{stage!r}] must hold ints, got {i!r}")
            j = i + depth if i < 0 else i
            if not 0 <= j < depth:
                warnings.warn(
                    f"{who}: nonlocal_stages[{stage!r}] unit {i} is out of range for a stage of {depth} "
                    f"residual units (0-based 0..{depth - 1}); skipped",
                    stacklevel=2,
                )
                continue
            keep.add(j)
        if keep:
            out[stage] = sorted(keep)
    return out


def init_weights(model: nn.Module, zero_init_residual: bool = False) -> None:
    """Kaiming-normal (fan_out) convs, BN γ=1 β=0; non-local blocks then get their own init
    (:meth:`NonLocalBlock.reset_parameters`: N(0, 0.01²) convs, zeroed W_z BN, i.e. the identity).

    With ``zero_init_residual`` the BN closing each residual branch starts at γ=0 (Goyal et al.), as
    PySlowFast's ZERO_INIT_FINAL_BN.
    """
    init_conv_bn_(model)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, NonLocalBlock):
            m.reset_parameters()
        elif zero_init_residual and isinstance(m, (BasicBlock, Bottleneck, AvidR2Plus1dBlock)):
            if m.last_bn is None:
                raise ValueError(
                    f"zero_init_residual: {type(m).__name__} has no BN that closes only its residual branch"
                )
            nn.init.zeros_(m.last_bn.weight)


def make_nonlocal(channels: int, mode: str, sub_sample: bool) -> NonLocalBlock:
    return NonLocalBlock(channels, mode=mode, sub_sample=sub_sample, dim=3)


# ----------------------------------------------------------------------------------------------------------
# The encoder
# ----------------------------------------------------------------------------------------------------------
class VideoResNet(Encoder):
    """stem → res2 → res3 → res4 → res5 → global pool; B×C×T×H×W -> B×out_dim.

    ``forward_features`` returns ``{"stem", "res2", "res3", "res4", "res5"}`` maps (each B×C'×T'×H'×W').
    ``global_pool`` is ``"avg"`` (default) or ``"max"`` (AVID-CMA).
    """

    def __init__(
        self,
        stem: nn.Module,
        stages: Sequence[ResStage],
        out_dim: int,
        in_channels: int = 3,
        global_pool: str = "avg",
        input_norm: Optional[str] = None,
    ) -> None:
        super().__init__()
        if input_norm not in (None, "clip"):
            raise ValueError(f"VideoResNet: input_norm must be None or 'clip', got {input_norm!r}")
        if len(stages) != len(STAGE_NAMES):
            raise ValueError(f"VideoResNet needs {len(STAGE_NAMES)} stages, got {len(stages)}")
        if global_pool not in ("avg", "max"):
            raise ValueError(f"VideoResNet: global_pool must be 'avg' or 'max', got {global_pool!r}")
        self.in_channels = in_channels
        self.out_dim = out_dim
        self.global_pool = global_pool
        self.input_norm = input_norm
        self.stem = stem
        for name, stage in zip(STAGE_NAMES, stages):
            self.add_module(name, stage)

    def forward_features(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        check_video_input(x, self.in_channels, type(self).__name__)
        feats: Dict[str, torch.Tensor] = {}
        if self.input_norm == "clip":
            x = subtract_clip_mean(x)
        x = self.stem(x)
        feats["stem"] = x
        for name in STAGE_NAMES:
            x = getattr(self, name)(x)
            feats[name] = x
        return feats

    def pool(self, feat: torch.Tensor) -> torch.Tensor:
        if self.global_pool == "max":
            return feat.flatten(2).amax(dim=2)
        return feat.flatten(2).mean(dim=2)


def subtract_clip_mean(x: torch.Tensor) -> torch.Tensor:
    """B×C×T×H×W -> the same with each clip's per-channel mean over T×H×W removed.

    A per-video colour offset (background, lighting) shifts every pre-activation of a bias-free first
    conv by a per-sample constant; a small model trained from few videos then spends its capacity on
    that offset and, with batch-normalised features, barely sees small moving objects. Removing the
    clip's mean colour makes the input invariant to it at no cost.
    """
    return x - x.mean(dim=(2, 3, 4), keepdim=True)


def _attach_nonlocal(
    blocks_per_stage: Dict[str, List[nn.Module]],
    widths: Dict[str, int],
    nonlocal_stages: Optional[Mapping[str, Sequence[int]]],
    mode: str,
    sub_sample: bool,
    who: str,
) -> Dict[str, Dict[int, nn.Module]]:
    depths = {k: len(v) for k, v in blocks_per_stage.items()}
    plan = parse_nonlocal_stages(nonlocal_stages, depths, who)
    return {s: {i: make_nonlocal(widths[s], mode, sub_sample) for i in idxs} for s, idxs in plan.items()}


def build_video_resnet(
    block: str,
    layers: Sequence[int],
    *,
    in_channels: int = 3,
    base_channels: int = 64,
    width: float = 1.0,
    nonlocal_stages: Optional[Mapping[str, Sequence[int]]] = None,
    nonlocal_mode: str = "embedded_gaussian",
    nonlocal_sub_sample: bool = True,
    zero_init_residual: bool = False,
    input_norm: Optional[str] = None,
) -> VideoResNet:
    """Build a 3D ResNet.

    Args:
        block: ``"r3d"`` (3×3×3 basic units), ``"mc3"`` (3×3×3 in res2, 1×3×3 after), ``"r2plus1d"``
            (torchvision (2+1)D units), ``"avid"`` (AVID-CMA (2+1)D units), ``"i3d"`` (pytorchvideo/PySlowFast
            I3D bottlenecks) or ``"slow"`` (Slow-only bottlenecks: temporal kernels in res4/res5 only).
        layers: residual units per stage res2..res5, e.g. (2, 2, 2, 2) for depth 18, (3, 4, 6, 3) for 34/50.
        in_channels: input channels (3 for RGB).
        base_channels: width of the stem and res2 (64 in the published models); stage widths double from
            there (×4 output expansion for bottlenecks). ``base_channels=16`` gives a narrow demo model.
        width: multiplier applied to ``base_channels`` (``round(base_channels · width)``).
        nonlocal_stages: ``{"res3": [1, 3], ...}`` 0-based units followed by a non-local block.
        nonlocal_mode: NonLocalBlock mode.
        nonlocal_sub_sample: max-pool φ/g inside the non-local blocks (1×2×2).
        zero_init_residual: γ=0 for the BN closing each residual branch (not for ``avid`` units).
        input_norm: ``"clip"`` subtracts each clip's mean colour (per channel, over T×H×W) before the
            stem; see :func:`subtract_clip_mean`. ``None`` (the published models) feeds the input as is.
    """
    if len(layers) != 4 or any(int(n) < 1 for n in layers):
        raise ValueError(f"layers must give 4 positive unit counts (res2..res5), got {layers!r}")
    c = channels(base_channels, width)
    # e.g. "r3d-18", "i3d-50": names the model in warnings and errors.
    who = f"{block}-{2 + sum(layers) * (3 if block in ('i3d', 'slow') else 2)}"
    blocks: Dict[str, List[nn.Module]] = {}
    widths: Dict[str, int] = {}
    pre_pools: Dict[str, Optional[nn.Module]] = {s: None for s in STAGE_NAMES}
    global_pool = "avg"

    if block in ("r3d", "mc3", "r2plus1d", "avid"):
        if block in ("r3d", "mc3"):
            stem: nn.Module = BasicStem(in_channels, c, temporal_kernel=3, pool=False)
        elif block == "r2plus1d":
            stem = R2Plus1dStem(in_channels, c)
        else:
            stem = BasicStem(in_channels, c, temporal_kernel=3, pool=True)
            global_pool = "max"
        in_ch = c
        for i, (name, n) in enumerate(zip(STAGE_NAMES, layers)):
            out_ch = c * 2**i
            stride = 1 if i == 0 else 2
            units: List[nn.Module] = []
            for u in range(n):
                s = stride if u == 0 else 1
                if block == "avid":
                    units.append(AvidR2Plus1dBlock(in_ch, out_ch, s))
                elif block in ("r3d", "mc3"):
                    # MC3: full 3D convs in res2 only; later units convolve (and stride) in space alone.
                    kt = 3 if block == "r3d" or i == 0 else 1
                    st = (s if kt == 3 else 1, s, s)
                    units.append(BasicBlock(_conv(in_ch, out_ch, (kt, 3, 3), st), _conv(out_ch, out_ch, (kt, 3, 3)),
                                            out_ch, _shortcut(in_ch, out_ch, st)))
                else:
                    # torchvision reuses the first conv's middle width for the second conv of a unit.
                    mid = r2plus1d_mid_channels(in_ch, out_ch)
                    units.append(BasicBlock(Conv2Plus1d(in_ch, out_ch, mid, s), Conv2Plus1d(out_ch, out_ch, mid),
                                            out_ch, _shortcut(in_ch, out_ch, s)))
                in_ch = out_ch
            blocks[name], widths[name] = units, out_ch
        out_dim = in_ch
    elif block in ("i3d", "slow"):
        stem = BasicStem(in_channels, c, temporal_kernel=5 if block == "i3d" else 1, pool=True)
        # Temporal kernel of conv_a per unit, cycled over the stage (pytorchvideo hub i3d_r50 / slow_r50).
        kt_cycle = ((3,), (3, 1), (3, 1), (1, 3)) if block == "i3d" else ((1,), (1,), (3,), (3,))
        in_ch = c
        for i, (name, n) in enumerate(zip(STAGE_NAMES, layers)):
            inner, out_ch = c * 2**i, c * 4 * 2**i
            units = []
            for u in range(n):
                units.append(Bottleneck(in_ch, inner, out_ch, temporal_kernel=kt_cycle[i][u % len(kt_cycle[i])],
                                        spatial_stride=(1 if i == 0 else 2) if u == 0 else 1))
                in_ch = out_ch
            blocks[name], widths[name] = units, out_ch
        if block == "i3d":
            # 2×1×1 temporal max-pool after res2 (ceil_mode: identical for even T, keeps a 1-frame map valid).
            pre_pools["res3"] = nn.MaxPool3d((2, 1, 1), stride=(2, 1, 1), ceil_mode=True)
        out_dim = in_ch
    else:
        raise ValueError(f"unknown block type {block!r}; expected r3d, mc3, r2plus1d, avid, i3d or slow")

    nl = _attach_nonlocal(blocks, widths, nonlocal_stages, nonlocal_mode, nonlocal_sub_sample, who)
    stages = [ResStage(blocks[s], nl.get(s), pre_pools[s]) for s in STAGE_NAMES]
    model = VideoResNet(stem, stages, out_dim, in_channels=in_channels, global_pool=global_pool, input_norm=input_norm)
    init_weights(model, zero_init_residual)
    return model


# ----------------------------------------------------------------------------------------------------------
# Registered builders
# ----------------------------------------------------------------------------------------------------------
@ENCODERS.register("r3d_18")
def r3d_18(**kwargs) -> VideoResNet:
    """torchvision-layout R3D-18 (33.17 M backbone parameters); kwargs: see :func:`build_video_resnet`."""
    return build_video_resnet("r3d", (2, 2, 2, 2), **kwargs)


@ENCODERS.register("r3d_34")
def r3d_34(**kwargs) -> VideoResNet:
    """R3D-34: (3, 4, 6, 3) basic 3×3×3 units (63.48 M backbone parameters)."""
    return build_video_resnet("r3d", (3, 4, 6, 3), **kwargs)


@ENCODERS.register("mc3_18")
def mc3_18(**kwargs) -> VideoResNet:
    """torchvision-layout MC3-18: R3D-18 whose res3-res5 convolve in space only (11.49 M backbone parameters)."""
    return build_video_resnet("mc3", (2, 2, 2, 2), **kwargs)


@ENCODERS.register("r2plus1d_18")
def r2plus1d_18(**kwargs) -> VideoResNet:
    """torchvision-layout R(2+1)D-18 (31.30 M backbone parameters)."""
    return build_video_resnet("r2plus1d", (2, 2, 2, 2), **kwargs)


@ENCODERS.register("r2plus1d_18_avid")
def r2plus1d_18_avid(**kwargs) -> VideoResNet:
    """AVID-CMA's R(2+1)D-18 (max-pooled 512-d output); see :class:`AvidR2Plus1dBlock`."""
    return build_video_resnet("avid", (2, 2, 2, 2), **kwargs)


@ENCODERS.register("i3d_r50")
def i3d_r50(**kwargs) -> VideoResNet:
    """I3D ResNet-50 (27.22 M backbone parameters = pytorchvideo hub ``i3d_r50`` without its head).

    The non-local I3D-NL of Wang et al. is ``i3d_r50(nonlocal_stages=NONLOCAL_R50_STAGES)``.
    """
    return build_video_resnet("i3d", (3, 4, 6, 3), **kwargs)


@ENCODERS.register("slow_r50")
def slow_r50(**kwargs) -> VideoResNet:
    """Slow-only 8×8 ResNet-50 (31.63 M backbone parameters = pytorchvideo hub ``slow_r50`` without its head):
    the SlowFast paper's slow pathway on its own, temporal kernels in res4/res5 only."""
    return build_video_resnet("slow", (3, 4, 6, 3), **kwargs)


@ENCODERS.register("r3d_tiny")
def r3d_tiny(**kwargs) -> VideoResNet:
    """R3D-10 at 16 base channels (128-d output) for CPU demos and tests; subtracts each clip's mean
    colour by default (``input_norm="clip"``), without which it cannot learn small moving objects
    from a few hundred videos."""
    kwargs.setdefault("base_channels", 16)
    kwargs.setdefault("input_norm", "clip")
    return build_video_resnet("r3d", (1, 1, 1, 1), **kwargs)


@ENCODERS.register("r2plus1d_tiny")
def r2plus1d_tiny(**kwargs) -> VideoResNet:
    """R(2+1)D-10 at 16 base channels (128-d output) for CPU demos and tests; ``input_norm="clip"`` by
    default (see :func:`r3d_tiny`)."""
    kwargs.setdefault("base_channels", 16)
    kwargs.setdefault("input_norm", "clip")
    return build_video_resnet("r2plus1d", (1, 1, 1, 1), **kwargs)
