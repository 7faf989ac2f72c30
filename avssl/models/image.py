"""2D ResNet encoders for images (B×C×H×W) and spectrograms, built from torchvision's residual units.

The units are torchvision's own ``BasicBlock`` and ``Bottleneck`` (``torchvision.models.resnet``); this
module only assembles them (so the width can change) and never downloads weights.

==================== ========================================================================= =======
name                 layout                                                                    out_dim
==================== ========================================================================= =======
``resnet18``         torchvision ``resnet18`` without its ``fc``: 7×7/2 conv + 3×3/2 max-pool   512
                     stem, (2, 2, 2, 2) basic units of widths 64-128-256-512, average pool
``resnet50``         torchvision ``resnet50`` without its ``fc``: (3, 4, 6, 3) bottlenecks       2048
                     (stride on the 3×3 conv, "ResNet v1.5"), output width 4× the stage width
==================== ========================================================================= =======

Keyword arguments (see :func:`build_image_resnet`): ``in_channels`` (3), ``base_channels`` (64) and
``width`` (1.0) set the stem/res2 width ``round(base_channels · width)``; ``cifar_stem=True`` replaces
the stem by a 3×3 stride-1 conv without max-pool (SimCLR's CIFAR variant, as in solo-learn), so a 32×32
input stays 32×32 after the stem and ends 4×4 at res5; ``zero_init_residual`` as torchvision.

Parameter counts: resnet18 11,176,512 and resnet50 23,508,032 (torchvision's minus its ``fc``).
Module names equal torchvision's (``conv1``, ``bn1``, ``layer1``..``layer4``), so at the default width a
torchvision ResNet ``state_dict`` without its ``fc.*`` entries loads with ``strict=True``.

``forward_features`` returns ``stem, res2, res3, res4, res5`` maps (B×C'×H'×W'); ``stem`` is the output
after the max-pool (identity with ``cifar_stem``).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Sequence, Type, Union

import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from avssl.data.batch import is_batch
from avssl.models import ENCODERS
from avssl.models.base import Encoder, init_conv_bn_

STAGE_NAMES = ("res2", "res3", "res4", "res5")
_BLOCKS: Dict[str, Type[Union[BasicBlock, Bottleneck]]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def stem_width(base_channels: int, width: float = 1.0) -> int:
    """``round(base_channels · width)``, the stem/res2 width; errors name the arguments."""
    c = int(round(base_channels * width))
    if c < 1:
        raise ValueError(f"base_channels={base_channels} × width={width} gives {c} channels; need at least 1")
    return c


def check_2d_input(x: torch.Tensor, in_channels: int, who: str, what: str = "B×C×H×W image") -> None:
    """Raise a clear ValueError unless x is a B×C×H×W batch (image or spectrogram layout) with C = ``in_channels``."""
    if not is_batch(x, "image") or x.shape[1] != in_channels:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who} expects a {what} tensor with C={in_channels}, got {shape}")


class ResNet2d(Encoder):
    """stem → res2 → res3 → res4 → res5 → global average pool; B×C×H×W -> B×out_dim.

    Args:
        block: ``"basic"`` (torchvision ``BasicBlock``) or ``"bottleneck"`` (torchvision ``Bottleneck``).
        layers: residual units in res2..res5, e.g. (2, 2, 2, 2) for ResNet-18.
        in_channels: input channels (3 for RGB, 1 for a spectrogram).
        base_channels, width: stem/res2 width ``round(base_channels · width)``; it doubles per stage.
        cifar_stem: 3×3 stride-1 conv stem without max-pool (for 32×32 inputs).
        zero_init_residual: γ=0 for the last BN of each residual branch (torchvision's option).
        input_name: how errors describe the expected input.
    """

    def __init__(
        self,
        block: str,
        layers: Sequence[int],
        in_channels: int = 3,
        base_channels: int = 64,
        width: float = 1.0,
        cifar_stem: bool = False,
        zero_init_residual: bool = False,
        input_name: str = "B×C×H×W image",
    ) -> None:
        super().__init__()
        if block not in _BLOCKS:
            raise ValueError(f"ResNet2d: block must be one of {sorted(_BLOCKS)}, got {block!r}")
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"ResNet2d: layers must give 4 positive unit counts (res2..res5), got {layers!r}")
        if in_channels < 1:
            raise ValueError(f"ResNet2d: in_channels must be positive, got {in_channels}")
        unit = _BLOCKS[block]
        c = stem_width(base_channels, width)
        self.in_channels = in_channels
        self.input_name = input_name
        self.cifar_stem = cifar_stem
        # Same attribute names as torchvision's ResNet so its state_dict (minus fc) loads as is.
        if cifar_stem:
            self.conv1 = nn.Conv2d(in_channels, c, kernel_size=3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, c, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = nn.Identity() if cifar_stem else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = c
        for i, n in enumerate(layers):
            planes = c * 2**i
            stride = 1 if i == 0 else 2
            units = []
            for u in range(int(n)):
                s = stride if u == 0 else 1
                out_ch = planes * unit.expansion
                downsample = None
                if s != 1 or in_ch != out_ch:
                    downsample = nn.Sequential(
                        nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=s, bias=False), nn.BatchNorm2d(out_ch)
                    )
                units.append(unit(in_ch, planes, stride=s, downsample=downsample))
                in_ch = out_ch
            setattr(self, f"layer{i + 1}", nn.Sequential(*units))
        self.out_dim = in_ch
        self.reset_parameters(zero_init_residual)

    def reset_parameters(self, zero_init_residual: bool = False) -> None:
        """torchvision's ResNet init: Kaiming-normal (fan_out) convs, BN γ=1 β=0."""
        init_conv_bn_(self)
        if zero_init_residual:
            # Each residual branch then starts as the identity (Goyal et al., 2017).
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward_features(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """B×C×H×W -> ordered ``{"stem", "res2", "res3", "res4", "res5"}`` maps, each B×C'×H'×W'."""
        check_2d_input(x, self.in_channels, type(self).__name__, self.input_name)
        feats: Dict[str, torch.Tensor] = OrderedDict()
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats["stem"] = x
        for i, name in enumerate(STAGE_NAMES):
            x = getattr(self, f"layer{i + 1}")(x)
            feats[name] = x
        return feats


def build_image_resnet(
    block: str,
    layers: Sequence[int],
    *,
    in_channels: int = 3,
    base_channels: int = 64,
    width: float = 1.0,
    cifar_stem: bool = False,
    zero_init_residual: bool = False,
) -> ResNet2d:
    """Build a 2D ResNet encoder; see :class:`ResNet2d` for the arguments."""
    return ResNet2d(
        block,
        layers,
        in_channels=in_channels,
        base_channels=base_channels,
        width=width,
        cifar_stem=cifar_stem,
        zero_init_residual=zero_init_residual,
    )


@ENCODERS.register("resnet18")
def resnet18(**kwargs) -> ResNet2d:
    """torchvision ResNet-18 without its classifier (11.18 M parameters, out_dim 512)."""
    return build_image_resnet("basic", (2, 2, 2, 2), **kwargs)


@ENCODERS.register("resnet50")
def resnet50(**kwargs) -> ResNet2d:
    """torchvision ResNet-50 without its classifier (23.51 M parameters, out_dim 2048)."""
    return build_image_resnet("bottleneck", (3, 4, 6, 3), **kwargs)
