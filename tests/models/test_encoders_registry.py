"""Every registered encoder keeps the Encoder interface: out_dim, B×out_dim output, stage maps.

Each name is built narrow (``base_channels=8``) and run on a tiny input; the published (default) width is
checked on the ``meta`` device, where building and running cost neither memory nor compute.
"""
from __future__ import annotations

from typing import Any, Dict, List, Union

import pytest
import torch

from avssl.models import available_encoders, build_encoder

STAGES = ["stem", "res2", "res3", "res4", "res5"]
NAMES = available_encoders()
Inputs = Union[torch.Tensor, List[torch.Tensor]]

#: Published out_dim of the builders this test knows; other names are checked for consistency only.
DEFAULT_OUT_DIM = {
    "avid_audio_conv": 512, "audio_resnet18": 512, "audio_conv_tiny": 128,
    "resnet18": 512, "resnet50": 2048,
    "r3d_18": 512, "r3d_34": 512, "r2plus1d_18": 512, "r2plus1d_18_avid": 512, "i3d_r50": 2048,
    "r3d_tiny": 128, "r2plus1d_tiny": 128,
    "slowfast_r50": 2048 + 256, "slowfast_r18": 512 + 64, "avslowfast_r50": 2048 + 256 + 1024,
}


def _kind(name: str) -> str:
    if name.startswith("avslowfast"):
        return "avslowfast"
    if name.startswith("slowfast"):
        return "slowfast"
    if "audio" in name:
        return "audio"
    if name.startswith("resnet"):
        return "image"
    return "video"


def _inputs(name: str, batch: int, small: bool, device: str = "cpu") -> Inputs:
    s = 32 if small else 112
    kind = _kind(name)
    shapes: Dict[str, Any] = {
        "audio": (batch, 1, 64, 48) if small else (batch, 1, 80, 200),
        "image": (batch, 3, 32, 32) if small else (batch, 3, 224, 224),
        "video": (batch, 3, 4 if small else 8, s, s),
        "slowfast": (batch, 3, 8 if small else 32, s, s),  # slow view: every 4th frame
    }
    if kind == "avslowfast":
        t = 2 if small else 8
        return [torch.randn(batch, 3, t, s, s, device=device), torch.randn(batch, 3, 4 * t, s, s, device=device),
                torch.randn(batch, 1, 16 if small else 80, 16 * t, device=device)]
    return torch.randn(*shapes[kind], device=device)


def _build_small(name: str) -> torch.nn.Module:
    try:
        return build_encoder(name, base_channels=8)
    except TypeError:  # a builder without a width argument: its default configuration
        return build_encoder(name)


def _expected_output(enc, feats: Dict[str, torch.Tensor]) -> torch.Tensor:
    pathways = getattr(enc, "pathways", None)
    if pathways:  # multi-pathway: each pathway's res5, pooled and concatenated
        return torch.cat([enc.pool(feats[f"{p}/res5"]) for p in pathways], dim=1)
    return enc.pool(next(reversed(feats.values())))


def test_registry_lists_the_documented_encoders():
    for name in ("r2plus1d_18", "r3d_18", "i3d_r50", "slowfast_r50", "audio_resnet18", "resnet18", "resnet50",
                 "avid_audio_conv", "audio_conv_tiny"):
        assert name in NAMES
    assert NAMES == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_small_build_interface(name):
    torch.manual_seed(0)
    enc = _build_small(name).eval()
    assert isinstance(enc.out_dim, int) and enc.out_dim > 0
    x = _inputs(name, batch=2, small=True)
    with torch.no_grad():
        feats = enc.forward_features(x)
        y = enc(x)
    assert y.shape == (2, enc.out_dim)
    assert isinstance(feats, dict) and len(feats) > 0
    if getattr(enc, "pathways", None):
        assert list(feats) == [f"{p}/{s}" for s in STAGES for p in enc.pathways]
    else:
        assert list(feats) == STAGES
    for k, v in feats.items():
        assert v.shape[0] == 2, k
    torch.testing.assert_close(y, _expected_output(enc, feats))


@pytest.mark.parametrize("name", NAMES)
def test_default_build_output_on_meta(name):
    with torch.device("meta"):
        enc = build_encoder(name).eval()
        y = enc(_inputs(name, batch=1, small=False, device="meta"))
    assert y.shape == (1, enc.out_dim)
    if name in DEFAULT_OUT_DIM:
        assert enc.out_dim == DEFAULT_OUT_DIM[name]


def test_unknown_name_is_a_keyerror_listing_known_names():
    with pytest.raises(KeyError) as info:
        build_encoder("r2plus1d_81")
    msg = str(info.value)
    assert "r2plus1d_81" in msg
    for name in NAMES:
        assert name in msg
    assert "r2plus1d_18" in msg.split("Did you mean")[1].split("Known")[0]  # the closest match is suggested
