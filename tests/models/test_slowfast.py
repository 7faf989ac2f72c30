"""SlowFast / AVSlowFast: shapes, lateral fusions, parameter counts and function against pytorchvideo,
non-local blocks on the slow pathway, memory formats, autocast, compilation. Forward passes use narrow
variants (base_channels=16, i.e. a 2-channel fast pathway) on 2-frame slow / 8-frame fast 32×32 clips."""
from __future__ import annotations

import contextlib
import io
from typing import List

import pytest
import torch
import torch.nn as nn

from avssl.models import NonLocalBlock, available_encoders, build_encoder, load_weights
from avssl.models.slowfast import FUSIONS, SLOWFAST_NL_STAGES, FastToSlow
from modelcheck import n_params, randomise_bn  # noqa: E402

STAGES = ["stem", "res2", "res3", "res4", "res5"]


def clip(t_slow: int = 2, alpha: int = 4, b: int = 2, seed: int = 0) -> List[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    fast = torch.randn(b, 3, alpha * t_slow, 32, 32, generator=g)
    return [fast[:, :, ::alpha], fast]


def test_registered_names_and_published_dims() -> None:
    for name in ("slowfast_r50", "slowfast_r18", "avslowfast_r50"):
        assert name in available_encoders()
    with torch.device("meta"):
        assert build_encoder("slowfast_r50").out_dim == 2048 + 256
        assert build_encoder("slowfast_r18").out_dim == 512 + 64
        assert build_encoder("avslowfast_r50").out_dim == 2048 + 256 + 1024


@pytest.mark.parametrize("fusion", FUSIONS)
def test_feature_shapes(fusion: str) -> None:
    torch.manual_seed(0)
    model = build_encoder("slowfast_r50", base_channels=16, fusion=fusion)
    slow, fast = clip()
    feats = model.forward_features([slow, fast])
    assert list(feats) == [f"{p}/{s}" for s in STAGES for p in ("slow", "fast")]
    c = 16
    for i, s in enumerate(STAGES):
        width = c if s == "stem" else c * 4 * 2 ** (i - 1)
        side = 32 // 4 // (2 ** max(i - 1, 0))
        assert tuple(feats[f"slow/{s}"].shape) == (2, width, 2, side, side), s  # pre-fusion slow map
        assert tuple(feats[f"fast/{s}"].shape) == (2, width // 8, 8, side, side), s
    out = model([slow, fast])
    assert out.shape == (2, model.out_dim) == (2, 512 + 64)
    pooled = [feats[f"{p}/res5"].mean((2, 3, 4)) for p in ("slow", "fast")]
    torch.testing.assert_close(out, torch.cat(pooled, dim=1))


def test_fusion_operators() -> None:
    """The three lateral connections on a B×C×αT×H×W fast map, against their definitions."""
    torch.manual_seed(0)
    fast = torch.randn(2, 3, 8, 2, 2)
    t2c = FastToSlow("time_to_channel", 3, alpha=4, kernel=7, channel_ratio=2)
    out = t2c(fast)
    assert out.shape == (2, 12, 2, 2, 2) and t2c.out_channels == 12
    for c in range(3):
        for k in range(4):
            for t in range(2):
                assert torch.equal(out[:, c * 4 + k, t], fast[:, c, t * 4 + k])
    sample = FastToSlow("time_strided_sample", 3, alpha=4, kernel=7, channel_ratio=2)
    assert torch.equal(sample(fast), fast[:, :, ::4]) and sample.out_channels == 3
    conv = FastToSlow("time_strided_conv", 3, alpha=4, kernel=7, channel_ratio=2)
    assert conv.conv.kernel_size == (7, 1, 1) and conv.conv.stride == (4, 1, 1)
    assert conv(fast).shape == (2, 6, 2, 2, 2) and conv.out_channels == 6
    with pytest.raises(ValueError, match="unknown fusion 'sum'"):
        FastToSlow("sum", 3, 4, 7, 2)


def test_fusion_kernel_defaults_follow_the_model_zoo() -> None:
    with torch.device("meta"):
        assert build_encoder("slowfast_r50").stem.fuse.fast_to_slow.conv.kernel_size == (7, 1, 1)  # 8×8, α=4
        m = build_encoder("slowfast_r50", alpha=8)  # 4×16
        assert m.stem.fuse.fast_to_slow.conv.kernel_size == (5, 1, 1)
        assert m.stem.fuse.fast_to_slow.conv.stride == (8, 1, 1)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_trains_one_step(fusion: str) -> None:
    torch.manual_seed(0)
    model = build_encoder("slowfast_r18", base_channels=16, fusion=fusion)
    slow, fast = clip()
    # The single-tensor form (slow = x[:, :, ::α]) is the same computation as [slow, fast].
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(fast), model([slow, fast]))
    model.train()
    head = nn.Linear(model.out_dim, 3)
    opt = torch.optim.SGD(list(model.parameters()) + list(head.parameters()), lr=0.1)
    labels = torch.tensor([0, 2])
    loss = nn.functional.cross_entropy(head(model(fast)), labels)
    loss.backward()
    first_convs = {"slow": model.stem.slow.conv, "fast": model.stem.fast.conv}
    before = {k: m.weight.detach().clone() for k, m in first_convs.items()}
    for k, m in first_convs.items():
        assert m.weight.grad is not None and torch.isfinite(m.weight.grad).all(), k
        assert m.weight.grad.abs().sum() > 0, f"no gradient reaches the {k} pathway's first conv"
    opt.step()
    for k, m in first_convs.items():
        assert not torch.equal(m.weight.detach(), before[k]), k


def test_param_counts_match_pytorchvideo() -> None:
    """Backbones only. slowfast_r50 == create_slowfast(model_depth=50, fusion kernel 7×1×1, head=None);
    with a 2304→400 linear head added it is the published 34.57 M of the 8×8 R50, equal to pytorchvideo's
    hub ``slowfast_r50`` (built without weights). avslowfast_r50 == create_audio_visual_slowfast(
    model_depth=50) minus its last block (the 3328→400 head)."""
    pytest.importorskip("pytorchvideo.models.slowfast", reason="pytorchvideo is optional: pip install avssl[bench]")
    from pytorchvideo.models.audio_visual_slowfast import create_audio_visual_slowfast
    from pytorchvideo.models.hub.slowfast import slowfast_r50 as hub_slowfast_r50
    from pytorchvideo.models.slowfast import create_slowfast

    with torch.device("meta"):
        ours = n_params(build_encoder("slowfast_r50"))
        ref = n_params(create_slowfast(model_depth=50, slowfast_fusion_conv_kernel_size=(7, 1, 1), head=None))
        assert ours == ref == 33_644_488
        with_head = ours + 2304 * 400 + 400
        assert with_head == n_params(hub_slowfast_r50()) == 34_566_488
        assert round(with_head / 1e6, 2) == 34.57
        av = create_audio_visual_slowfast(model_depth=50)
        assert n_params(build_encoder("avslowfast_r50")) == n_params(av) - n_params(av.blocks[-1]) == 40_990_200


def test_same_function_as_pytorchvideo() -> None:
    """Narrow models (slow stem 16) with pytorchvideo's weights loaded by name."""
    pytest.importorskip("pytorchvideo.models.slowfast", reason="pytorchvideo is optional: pip install avssl[bench]")
    from pytorchvideo.models.audio_visual_slowfast import create_audio_visual_slowfast
    from pytorchvideo.models.slowfast import create_slowfast

    torch.manual_seed(0)
    slow, fast = clip()
    ref = create_slowfast(model_depth=50, stem_dim_outs=(16, 2), slowfast_fusion_conv_kernel_size=(7, 1, 1),
                          head=None, head_pool=nn.AdaptiveAvgPool3d)
    randomise_bn(ref)
    ours = load_weights(build_encoder("slowfast_r50", base_channels=16), ref.state_dict(), format="pytorchvideo")
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()([slow, fast]), ref.eval()([slow, fast]).flatten(1))

    ref = create_audio_visual_slowfast(model_depth=50, stem_dim_outs=(16, 2, 8), head_pool=nn.AdaptiveAvgPool3d)
    ref.blocks = ref.blocks[:-1]  # drop the classification head
    randomise_bn(ref, seed=1)
    ours = load_weights(build_encoder("avslowfast_r50", base_channels=16), ref.state_dict(), format="pytorchvideo")
    audio = torch.randn(2, 1, 16, 32)  # B×1×F×T_a, T_a = 16 × 2 slow frames
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):  # pytorchvideo's fusion prints sizes
        expected = ref.eval()([slow, fast, audio.transpose(2, 3).unsqueeze(3)]).flatten(1)
        got = ours.eval()([slow, fast, audio])
    assert got.shape == (2, 512 + 64 + 256)
    torch.testing.assert_close(got, expected)


def test_avslowfast_features_and_input_errors() -> None:
    torch.manual_seed(0)
    model = build_encoder("avslowfast_r50", base_channels=16)
    slow, fast = clip()
    audio = torch.randn(2, 1, 16, 32)
    feats = model.forward_features([slow, fast, audio])
    assert [k for k in feats if k.startswith("audio/")] == [f"audio/{s}" for s in STAGES]
    # Audio maps are B×C×T_a×1×F: time halves at res3..res5, frequency at res3..res5.
    assert tuple(feats["audio/stem"].shape) == (2, 8, 32, 1, 16)
    assert tuple(feats["audio/res5"].shape) == (2, 256, 4, 1, 2)
    with pytest.raises(ValueError, match=r"audio with 40 time frames does not align with 2 slow frames; use 16×2"):
        model([slow, fast, torch.randn(2, 1, 16, 40)])
    with pytest.raises(ValueError, match=r"B×1×F×T_a log-mel spectrogram"):
        model([slow, fast, torch.randn(2, 16, 32)])
    with pytest.raises(ValueError, match=r"expects a list \[slow, fast, audio\]"):
        model(fast)


def test_visual_input_errors() -> None:
    model = build_encoder("slowfast_r18", base_channels=16)
    slow, fast = clip()
    with pytest.raises(ValueError, match=r"alpha=4 × the slow frames, got 2 slow and 6 fast"):
        model([slow, fast[:, :, :6]])
    with pytest.raises(ValueError, match=r"multiple of alpha=4, got \(2, 3, 6, 32, 32\)"):
        model(fast[:, :, :6])
    with pytest.raises(ValueError, match=r"expects \[slow, fast\]"):
        model([slow])
    with pytest.raises(ValueError, match="1/beta must be an integer"):
        build_encoder("slowfast_r18", beta=0.3)


def test_nonlocal_on_slow_pathway_is_identity_at_init() -> None:
    torch.manual_seed(0)
    plain = build_encoder("slowfast_r50", base_channels=16)
    nl = build_encoder("slowfast_r50", base_channels=16, nonlocal_stages=SLOWFAST_NL_STAGES)
    blocks = [m for m in nl.modules() if isinstance(m, NonLocalBlock)]
    assert len(blocks) == 5
    assert sorted(int(k) for k in nl.res3.slow.nonlocal_blocks) == [1, 3]
    assert sorted(int(k) for k in nl.res4.slow.nonlocal_blocks) == [1, 3, 5]
    assert all(len(getattr(nl, s).fast.nonlocal_blocks) == 0 for s in STAGES[1:])
    assert [b.channels for b in blocks] == [128] * 2 + [256] * 3
    missing, unexpected = nl.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(".slow.nonlocal_blocks." in k for k in missing)
    slow, fast = clip()
    with torch.no_grad():
        assert torch.equal(nl.eval()([slow, fast]), plain.eval()([slow, fast]))


@pytest.mark.parametrize("fusion", FUSIONS)
def test_channels_last_and_bf16_autocast(fusion: str) -> None:
    torch.manual_seed(0)
    model = build_encoder("slowfast_r18", base_channels=16, fusion=fusion, nonlocal_stages={"res3": [1]}).eval()
    with torch.no_grad():
        model.res3.slow.nonlocal_blocks["1"].bn.weight.normal_(0, 0.5)  # an active non-local block
    slow, fast = clip()
    cl = [t.to(memory_format=torch.channels_last_3d) for t in (slow, fast)]
    with torch.no_grad():
        ref = model([slow, fast])
        got = model(cl)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model([slow, fast])
    scale = ref.abs().max()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * scale)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    # bf16 keeps ~3 significant digits per op: a few per cent overall, direction kept.
    assert (low.float() - ref).norm() < 0.05 * ref.norm()
    assert torch.nn.functional.cosine_similarity(low.float(), ref).min() > 0.995


def test_compiles_without_graph_breaks() -> None:
    torch.manual_seed(0)
    model = build_encoder("slowfast_r18", base_channels=16, fusion="time_to_channel").eval()
    slow, fast = clip()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(fast), model(fast))
