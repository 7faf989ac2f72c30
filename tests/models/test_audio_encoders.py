"""Audio encoders: output shapes for several spectrogram sizes, parameter counts from the layer lists."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torchvision

from avssl.models import build_encoder

STAGES = ["stem", "res2", "res3", "res4", "res5"]
SIZES = [(1, 80, 200), (2, 257, 100), (2, 40, 33)]  # B, F, T


def _halve(n: int, times: int = 1) -> int:
    """Output length of `times` stride-2 'same'-padded convs / pools: ceil(n / 2) each time."""
    for _ in range(times):
        n = math.ceil(n / 2)
    return n


@pytest.mark.parametrize("b,f,t", SIZES)
def test_avid_audio_conv_stage_shapes(b, f, t):
    enc = build_encoder("avid_audio_conv").eval()
    with torch.no_grad():
        feats = enc.forward_features(torch.randn(b, 1, f, t))
        y = enc(torch.randn(b, 1, f, t))
    assert list(feats) == STAGES
    # stem and res2..res4 halve F and T; res5 keeps them.
    expected = {
        "stem": (b, 64, _halve(f, 1), _halve(t, 1)),
        "res2": (b, 64, _halve(f, 2), _halve(t, 2)),
        "res3": (b, 128, _halve(f, 3), _halve(t, 3)),
        "res4": (b, 256, _halve(f, 4), _halve(t, 4)),
        "res5": (b, 512, _halve(f, 4), _halve(t, 4)),
    }
    assert {k: tuple(v.shape) for k, v in feats.items()} == expected
    assert y.shape == (b, 512) and enc.out_dim == 512


@pytest.mark.parametrize("b,f,t", SIZES)
def test_audio_resnet18_stage_shapes(b, f, t):
    enc = build_encoder("audio_resnet18").eval()
    with torch.no_grad():
        feats = enc.forward_features(torch.randn(b, 1, f, t))
    # 7×7/2 conv + 3×3/2 max-pool, then /2 at res3, res4, res5.
    assert feats["stem"].shape == (b, 64, _halve(f, 2), _halve(t, 2))
    assert feats["res5"].shape == (b, 512, _halve(f, 5), _halve(t, 5))
    assert enc(torch.randn(b, 1, f, t)).shape == (b, 512)


def test_avid_audio_conv_param_count_from_layer_list():
    # Documented layers (C = 64): conv 7×7 1→C; then (Cin, Cout) 3×3 convs per block; every conv is
    # bias-free and followed by a BatchNorm2d (2 parameters per channel).
    c = 64
    convs3 = [(c, c), (c, c), (c, 2 * c), (2 * c, 2 * c),
              (2 * c, 4 * c), (4 * c, 4 * c), (4 * c, 8 * c), (8 * c, 8 * c)]
    weights = 1 * c * 7 * 7 + sum(9 * ci * co for ci, co in convs3)
    bn = 2 * (c + sum(co for _, co in convs3))
    expected = weights + bn
    assert expected == 3136 + 4_718_592 + 2 * 1984 == 4_725_696
    enc = build_encoder("avid_audio_conv")
    assert sum(p.numel() for p in enc.parameters()) == expected
    # every conv bias-free, 9 convs and 9 BNs in all
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 9 and all(m.bias is None for m in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in enc.modules()) == 9


def test_avid_audio_conv_module_names_follow_avid_cma():
    # AVID-CMA's Conv2D: conv1 = Sequential(conv, bn, relu); block1..4 = Basic2DBlock(conv1, bn1, conv2, bn2).
    keys = set(build_encoder("avid_audio_conv").state_dict())
    expected = {"conv1.0.weight", "conv1.1.weight", "conv1.1.running_mean"}
    for i in range(1, 5):
        expected |= {f"block{i}.conv1.weight", f"block{i}.bn1.bias", f"block{i}.conv2.weight",
                     f"block{i}.bn2.running_var"}
    assert expected <= keys


def test_avid_audio_conv_max_pools_and_width():
    enc = build_encoder("avid_audio_conv", width=0.5).eval()
    assert enc.out_dim == 256
    x = torch.randn(2, 1, 64, 48)
    with torch.no_grad():
        feats = enc.forward_features(x)
        torch.testing.assert_close(enc(x), feats["res5"].amax(dim=(2, 3)))
    avg = build_encoder("avid_audio_conv", base_channels=8, global_pool="avg").eval()
    with torch.no_grad():
        torch.testing.assert_close(avg(x), avg.forward_features(x)["res5"].mean(dim=(2, 3)))


def test_audio_conv_tiny():
    enc = build_encoder("audio_conv_tiny").eval()
    assert enc.out_dim == 128
    with torch.no_grad():
        assert enc(torch.randn(3, 1, 80, 100)).shape == (3, 128)
    assert build_encoder("audio_conv_tiny", base_channels=8).out_dim == 64


def test_audio_resnet18_param_count_equals_torchvision_with_1_channel_stem():
    tv = torchvision.models.resnet18(weights=None)
    tv.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    tv_count = sum(p.numel() for n, p in tv.named_parameters() if not n.startswith("fc."))
    enc = build_encoder("audio_resnet18")
    assert sum(p.numel() for p in enc.parameters()) == tv_count == 11_170_240
    assert enc.out_dim == 512
    assert build_encoder("audio_resnet18", width=0.25).out_dim == 128


@pytest.mark.parametrize("name", ["avid_audio_conv", "audio_resnet18", "audio_conv_tiny"])
def test_wrong_input_is_a_clear_error(name):
    enc = build_encoder(name, base_channels=8)
    with pytest.raises(ValueError, match=r"B×1×F×T spectrogram"):
        enc(torch.randn(2, 80, 100))  # channel axis missing
    with pytest.raises(ValueError, match=r"got \(2, 2, 80, 100\)"):
        enc(torch.randn(2, 2, 80, 100))


def test_clip_input_norm_makes_audio_features_invariant_to_gain_and_stationary_colour():
    from avssl.models import build_encoder
    from avssl.models.audio import subtract_time_mean

    torch.manual_seed(0)
    x = torch.randn(2, 1, 40, 50)
    # In log-mel, a gain is a constant and stationary noise colour a per-frequency offset.
    offset = torch.randn(2, 1, 40, 1) + 3.0
    assert torch.allclose(subtract_time_mean(x).mean(-1), torch.zeros(2, 1, 40), atol=1e-6)
    enc = build_encoder("audio_conv_tiny", base_channels=4, input_norm="clip").eval()
    with torch.no_grad():
        assert torch.allclose(enc(x), enc(x + offset), atol=1e-4)
        plain = build_encoder("audio_conv_tiny", base_channels=4).eval()
        assert not torch.allclose(plain(x), plain(x + offset), atol=1e-2)
