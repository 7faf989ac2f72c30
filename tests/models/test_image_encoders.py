"""Image ResNets: parameter counts and outputs against torchvision, the CIFAR stem, widths, input checks."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision

from avssl.models import build_encoder

STAGES = ["stem", "res2", "res3", "res4", "res5"]


def _backbone_params(model: nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("fc."))


@pytest.mark.parametrize("name,out_dim", [("resnet18", 512), ("resnet50", 2048)])
def test_param_count_and_out_dim_match_torchvision_without_fc(name, out_dim):
    enc = build_encoder(name)
    tv = getattr(torchvision.models, name)(weights=None)
    assert enc.out_dim == out_dim == tv.fc.in_features
    assert sum(p.numel() for p in enc.parameters()) == _backbone_params(tv)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_weights_load_and_give_the_same_features(name):
    torch.manual_seed(0)
    tv = getattr(torchvision.models, name)(weights=None).eval()
    sd = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    enc = build_encoder(name).eval()
    enc.load_state_dict(sd, strict=True)
    tv.fc = nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), tv(x), rtol=1e-4, atol=1e-5)


def test_stage_maps_default_stem_and_forward_pools_last_map():
    enc = build_encoder("resnet18").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = enc.forward_features(x)
        y = enc(x)
    assert list(feats) == STAGES
    # 7×7/2 conv then 3×3/2 max-pool: 64 -> 16, then /2 per stage from res3.
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "stem": (2, 64, 16, 16),
        "res2": (2, 64, 16, 16),
        "res3": (2, 128, 8, 8),
        "res4": (2, 256, 4, 4),
        "res5": (2, 512, 2, 2),
    }
    torch.testing.assert_close(y, feats["res5"].mean(dim=(2, 3)))


@pytest.mark.parametrize("name,out_dim", [("resnet18", 512), ("resnet50", 2048)])
def test_cifar_stem_keeps_32px_after_stem_and_4px_at_res5(name, out_dim):
    enc = build_encoder(name, cifar_stem=True).eval()
    assert isinstance(enc.maxpool, nn.Identity)
    assert enc.conv1.kernel_size == (3, 3) and enc.conv1.stride == (1, 1)
    with torch.no_grad():
        feats = enc.forward_features(torch.randn(1, 3, 32, 32))
    assert feats["stem"].shape[-2:] == (32, 32)
    assert feats["res5"].shape == (1, out_dim, 4, 4)
    assert enc.out_dim == out_dim


def test_cifar_stem_param_count():
    # Only conv1 changes: 3·64·7·7 weights become 3·64·3·3.
    default = sum(p.numel() for p in build_encoder("resnet18").parameters())
    cifar = sum(p.numel() for p in build_encoder("resnet18", cifar_stem=True).parameters())
    assert default - cifar == 3 * 64 * (49 - 9)


def test_in_channels_and_width():
    enc = build_encoder("resnet18", in_channels=1, base_channels=16).eval()
    assert enc.out_dim == 128
    assert enc.conv1.in_channels == 1
    with torch.no_grad():
        assert enc(torch.randn(2, 1, 32, 32)).shape == (2, 128)
    assert build_encoder("resnet50", width=0.5).out_dim == 1024
    assert build_encoder("resnet18", base_channels=64, width=0.25).out_dim == 128


def test_zero_init_residual_makes_units_start_as_identity_branches():
    enc = build_encoder("resnet50", zero_init_residual=True, base_channels=8)
    last_bns = [blk.bn3 for layer in (enc.layer1, enc.layer2, enc.layer3, enc.layer4) for blk in layer]
    assert all(torch.all(bn.weight == 0) for bn in last_bns)


def test_wrong_input_shape_is_a_clear_error():
    enc = build_encoder("resnet18", base_channels=8)
    with pytest.raises(ValueError, match=r"B×C×H×W image tensor with C=3, got \(2, 1, 32, 32\)"):
        enc(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="got"):
        enc(torch.randn(2, 3, 4, 32, 32))
