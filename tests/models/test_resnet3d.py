"""3D ResNets: layouts and parameter counts against torchvision / pytorchvideo, non-local insertion,
memory formats, autocast and compilation. Forward passes use narrow variants and 1×3×4×32×32 clips."""
from __future__ import annotations

from typing import Dict, Tuple

import pytest
import torch
import torch.nn as nn

from avssl.models import NonLocalBlock, available_encoders, build_encoder, load_weights
from avssl.models.resnet3d import NONLOCAL_R50_STAGES, STAGE_NAMES
from modelcheck import n_params, randomise_bn  # noqa: E402

NAMES = ["r3d_18", "r3d_34", "r2plus1d_18", "r2plus1d_18_avid", "i3d_r50", "r3d_tiny", "r2plus1d_tiny"]


def i3d_reference(**kw) -> nn.Module:
    """pytorchvideo's hub ``i3d_r50`` arguments (pytorchvideo/models/hub/resnet.py), no weights."""
    pytest.importorskip("pytorchvideo.models.resnet", reason="pytorchvideo is optional: pip install avssl[bench]")
    from pytorchvideo.models.resnet import create_resnet

    return create_resnet(
        stem_conv_kernel_size=(5, 7, 7),
        stage1_pool=nn.MaxPool3d,
        stage_conv_a_kernel_size=((3, 1, 1), [(3, 1, 1), (1, 1, 1)], [(3, 1, 1), (1, 1, 1)], [(1, 1, 1), (3, 1, 1)]),
        **kw,
    )


# (name, kwargs) -> expected stage shapes (C, T, H, W) for a 1×3×4×32×32 clip at base_channels c
def expected_shapes(name: str, c: int) -> Dict[str, Tuple[int, int, int, int]]:
    if name == "i3d_r50":  # stem max-pool, ×4 bottleneck expansion, temporal pool after res2
        return {"stem": (c, 4, 8, 8), "res2": (4 * c, 4, 8, 8), "res3": (8 * c, 2, 4, 4),
                "res4": (16 * c, 2, 2, 2), "res5": (32 * c, 2, 1, 1)}
    if name == "r2plus1d_18_avid":  # stem max-pool, stride 2 in time too
        return {"stem": (c, 4, 8, 8), "res2": (c, 4, 8, 8), "res3": (2 * c, 2, 4, 4),
                "res4": (4 * c, 1, 2, 2), "res5": (8 * c, 1, 1, 1)}
    return {"stem": (c, 4, 16, 16), "res2": (c, 4, 16, 16), "res3": (2 * c, 2, 8, 8),
            "res4": (4 * c, 1, 4, 4), "res5": (8 * c, 1, 2, 2)}


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_pooling(name: str) -> None:
    assert name in available_encoders()
    c = 16 if name.endswith("tiny") else 8
    kw = {} if name.endswith("tiny") else {"base_channels": c}
    torch.manual_seed(0)
    model = build_encoder(name, **kw)
    x = torch.randn(2, 3, 4, 32, 32)
    feats = model.forward_features(x)
    assert list(feats) == ["stem", *STAGE_NAMES]
    for stage, shape in expected_shapes(name, c).items():
        assert tuple(feats[stage].shape) == (2, *shape), stage
    out = model(x)
    assert out.shape == (2, model.out_dim) and model.out_dim == feats["res5"].shape[1]
    res5 = feats["res5"].flatten(2)
    pooled = res5.amax(2) if name == "r2plus1d_18_avid" else res5.mean(2)  # AVID-CMA max-pools
    torch.testing.assert_close(out, pooled)


def test_published_out_dims_and_width_kwargs() -> None:
    with torch.device("meta"):
        assert [build_encoder(n).out_dim for n in NAMES] == [512, 512, 512, 512, 2048, 128, 128]
        assert build_encoder("r3d_18", base_channels=32).out_dim == 256
        assert build_encoder("r3d_18", width=0.25).out_dim == 128
        assert build_encoder("i3d_r50", base_channels=16, width=0.5).out_dim == 256


def test_param_counts_match_references() -> None:
    """Backbone parameters only: torchvision's models without ``fc`` (512→400), pytorchvideo's i3d_r50
    without its 2048→400 head; AVID-CMA's R(2+1)D-18 against its layer-by-layer formula."""
    import torchvision
    from torchvision.models.video.resnet import BasicBlock, BasicStem, Conv3DSimple, VideoResNet

    with torch.device("meta"):
        for name in ("r3d_18", "r2plus1d_18"):
            ref = getattr(torchvision.models.video, name)()
            assert n_params(build_encoder(name)) == n_params(ref) - n_params(ref.fc)
        ref34 = VideoResNet(BasicBlock, [Conv3DSimple] * 4, [3, 4, 6, 3], BasicStem)
        assert n_params(build_encoder("r3d_34")) == n_params(ref34) - n_params(ref34.fc)
        i3d = i3d_reference()
        assert n_params(build_encoder("i3d_r50")) == n_params(i3d) - n_params(i3d.blocks[-1]) == 27_223_872
        assert n_params(build_encoder("r3d_18")) == 33_166_272
        assert n_params(build_encoder("r2plus1d_18")) == 31_300_125
        avid = n_params(build_encoder("r2plus1d_18_avid"))

    # AVID-CMA BasicR2P1DBlock: 1×3×3 (in→out), 3×1×1, 1×3×3, 3×1×1 (out→out), 4 BNs, and a bare 1×1×1
    # shortcut conv on the first (stride-2) unit of res3..res5.
    def unit(cin: int, cout: int, shortcut: bool) -> int:
        convs = cin * cout * 9 + cout * cout * 3 + cout * cout * 9 + cout * cout * 3
        return convs + 4 * 2 * cout + (cin * cout if shortcut else 0)

    expected = 3 * 64 * 3 * 7 * 7 + 2 * 64  # 3×7×7 stem + BN
    for cin, cout in [(64, 64), (64, 128), (128, 256), (256, 512)]:
        expected += unit(cin, cout, cin != cout) + unit(cout, cout, False)
    assert avid == expected == 15_379_136


@pytest.mark.parametrize("name", ["r3d_18", "r2plus1d_18"])
def test_same_function_as_torchvision(name: str) -> None:
    """Full-size model, torchvision's weights loaded by name: identical outputs."""
    import torchvision

    torch.manual_seed(0)
    ref = getattr(torchvision.models.video, name)()
    randomise_bn(ref)
    ours = load_weights(build_encoder(name), ref.state_dict(), format="torchvision")
    ref.fc = nn.Identity()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), ref.eval()(x), rtol=1e-5, atol=1e-5)


def test_i3d_same_function_as_pytorchvideo() -> None:
    torch.manual_seed(0)
    ref = i3d_reference(stem_dim_out=8, head=None)
    randomise_bn(ref)
    ours = load_weights(build_encoder("i3d_r50", base_channels=8), ref.state_dict(), format="pytorchvideo")
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), ref.eval()(x).mean((2, 3, 4)), rtol=1e-5, atol=1e-5)


def nonlocal_positions(model: nn.Module) -> Dict[str, list]:
    out = {}
    for s in STAGE_NAMES:
        keys = sorted(int(k) for k in getattr(model, s).nonlocal_blocks.keys())
        if keys:
            out[s] = keys
    return out


def test_nonlocal_insertion_at_requested_units_and_identity() -> None:
    torch.manual_seed(0)
    plain = build_encoder("i3d_r50", base_channels=8)
    nl = build_encoder("i3d_r50", base_channels=8, nonlocal_stages=NONLOCAL_R50_STAGES, nonlocal_mode="dot_product")
    blocks = [m for m in nl.modules() if isinstance(m, NonLocalBlock)]
    assert len(blocks) == 5 and all(b.mode == "dot_product" and b.sub_sample for b in blocks)
    assert nonlocal_positions(nl) == {"res3": [1, 3], "res4": [1, 3, 5]}
    assert [b.channels for b in blocks] == [64, 64, 128, 128, 128]

    # Each block sees exactly the output of the unit it follows.
    seen: Dict[str, torch.Tensor] = {}

    def record(key: str, pick_input: bool):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            seen[key] = inputs[0] if pick_input else output
        return hook

    nl.res4.blocks[3].register_forward_hook(record("unit", False))
    nl.res4.nonlocal_blocks["3"].register_forward_hook(record("nl_in", True))
    x = torch.randn(2, 3, 4, 32, 32)

    # Same weights everywhere else: the fresh blocks are identities, so the outputs agree exactly.
    missing, unexpected = nl.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".nonlocal_blocks." in k for k in missing)
    for mode in ("train", "eval"):
        getattr(plain, mode)(), getattr(nl, mode)()
        with torch.no_grad():
            assert torch.equal(nl(x), plain(x))
    assert seen["nl_in"] is seen["unit"]


def test_nonlocal_index_rules() -> None:
    with torch.device("meta"):
        # The I3D-NL recipe on a 2-unit stage keeps the valid units and warns about the others.
        with pytest.warns(UserWarning, match="out of range") as record:
            m = build_encoder("r3d_18", nonlocal_stages={"res3": [1, 3], "res4": [1, 3, 5]},
                              nonlocal_mode="embedded_gaussian")
        assert "r3d-18: nonlocal_stages['res3'] unit 3 is out of range for a stage of 2 residual units" in str(
            record[0].message)
        assert len(record) == 3  # res3: 3; res4: 3, 5
        assert nonlocal_positions(m) == {"res3": [1], "res4": [1]}
        m = build_encoder("r2plus1d_18", nonlocal_stages={"res2": [0, -1], "res5": 0}, nonlocal_sub_sample=False)
        assert nonlocal_positions(m) == {"res2": [0, 1], "res5": [0]}
        assert not any(b.sub_sample for b in m.modules() if isinstance(b, NonLocalBlock))
        with pytest.raises(ValueError, match="unknown stage 'res6'"):
            build_encoder("r3d_18", nonlocal_stages={"res6": [0]})
        with pytest.raises(ValueError, match="unknown mode"):
            build_encoder("r3d_tiny", nonlocal_stages={"res3": [0]}, nonlocal_mode="cosine")


def test_bad_input_is_reported() -> None:
    model = build_encoder("r3d_tiny")
    with pytest.raises(ValueError, match=r"expects a B×3×T×H×W video tensor, got \(1, 3, 32, 32\)"):
        model(torch.randn(1, 3, 32, 32))


def _with_active_nonlocal(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    model = build_encoder(name, **kw).eval()
    g = torch.Generator().manual_seed(1)
    for b in model.modules():  # make the non-local blocks do something
        if isinstance(b, NonLocalBlock):
            with torch.no_grad():
                b.bn.weight.copy_(torch.randn(b.bn.weight.shape, generator=g) * 0.5)
    return model


@pytest.mark.parametrize("name,kw", [
    ("r2plus1d_tiny", {"nonlocal_stages": {"res3": [0]}}),
    ("r2plus1d_18_avid", {"base_channels": 8}),
    ("i3d_r50", {"base_channels": 8, "nonlocal_stages": {"res3": [1]}, "nonlocal_mode": "concatenation"}),
])
def test_channels_last_and_bf16_autocast(name: str, kw: dict) -> None:
    model = _with_active_nonlocal(name, **kw)
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        ref = model(x)
        cl = model(x.to(memory_format=torch.channels_last_3d))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    scale = ref.abs().max()
    torch.testing.assert_close(cl, ref, rtol=1e-5, atol=1e-5 * scale)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    # bf16 keeps ~3 significant digits per op: a few per cent overall, direction kept.
    assert (low.float() - ref).norm() < 0.05 * ref.norm()
    assert torch.nn.functional.cosine_similarity(low.float(), ref).min() > 0.995


def test_compiles_without_graph_breaks() -> None:
    model = _with_active_nonlocal("r2plus1d_tiny", nonlocal_stages={"res3": [0]})
    x = torch.randn(2, 3, 4, 32, 32)
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # fullgraph: any break is an error
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


def test_zero_init_residual() -> None:
    m = build_encoder("r3d_tiny", zero_init_residual=True)
    assert all(float(u.bn2.weight.detach().abs().sum()) == 0 for s in STAGE_NAMES for u in getattr(m, s).blocks)
    with pytest.raises(ValueError, match="AvidR2Plus1dBlock"):
        build_encoder("r2plus1d_18_avid", base_channels=8, zero_init_residual=True)


def test_clip_input_norm_makes_features_invariant_to_a_per_clip_colour_offset():
    from avssl.models import build_encoder
    from avssl.models.resnet3d import subtract_clip_mean

    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 16, 16)
    offset = torch.randn(2, 3, 1, 1, 1) * 2.0  # a different background colour per clip
    y = subtract_clip_mean(x)
    assert torch.allclose(y.mean(dim=(2, 3, 4)), torch.zeros(2, 3), atol=1e-6)
    enc = build_encoder("r3d_tiny", base_channels=4).eval()  # input_norm="clip" by default
    assert enc.input_norm == "clip"
    with torch.no_grad():
        assert torch.allclose(enc(x), enc(x + offset), atol=1e-4)
        plain = build_encoder("r3d_tiny", base_channels=4, input_norm=None).eval()
        assert not torch.allclose(plain(x), plain(x + offset), atol=1e-2)
    with pytest.raises(ValueError, match="input_norm"):
        build_encoder("r3d_18", input_norm="frame")
