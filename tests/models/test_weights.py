"""Published weights in, plain weights out (``avssl.models.load_weights`` / ``export_weights``).

For every format a state dict in the reference's own layout gives the reference model's features once
loaded into the avssl encoder: built by the reference itself where it installs (torchvision, pytorchvideo),
else written key for key from the reference's layout (PySlowFast's ``s2.pathway0_res0.branch2.a``,
AVID-CMA's ``module.video_model.conv2x.0.spt_conv1``) and run through a functional forward written here
from that layout. Export → load round trips exactly; wrong weights raise one error and load nothing.
"""
from __future__ import annotations

import logging
import re
from typing import Dict, List, Sequence, Tuple

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from avssl.models import FORMATS, WeightsError, build_encoder, export_weights, load_weights
from avssl.models.weights import layouts_for
from modelcheck import n_params, randomise_bn  # noqa: E402

Shapes = Dict[str, Tuple[int, ...]]


def same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def mapped_shapes(encoder: nn.Module, fmt: str) -> Shapes:
    """The reference keys (and shapes) the avssl encoder's weights go to in ``fmt``."""
    key = layouts_for(encoder)[fmt].key
    return {key(k): tuple(v.shape) for k, v in encoder.state_dict().items()}


def random_state(shapes: Shapes, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Values for a layout: BN statistics in plausible ranges (variances > 0), everything else N(0, 0.1²)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, s in shapes.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7)
        elif k.endswith("running_var") or (k.endswith(".weight") and len(s) == 1):
            out[k] = torch.rand(s, generator=g) + 0.5
        else:
            out[k] = torch.randn(s, generator=g) * 0.1
    return out


def _bn_keys(prefix: str, c: int) -> Shapes:
    return {f"{prefix}.{n}": (c,) for n in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()}


# ----------------------------------------------------------------------------------------------------------
# torchvision: the reference models themselves
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["r3d_18", "mc3_18", "r2plus1d_18"])
def test_torchvision_video_weights_give_torchvisions_features(name, tmp_path, caplog):
    import torchvision

    torch.manual_seed(0)
    ref = getattr(torchvision.models.video, name)()
    randomise_bn(ref)
    torch.save(ref.state_dict(), tmp_path / f"{name}.pth")
    with caplog.at_level(logging.INFO, logger="avssl.models.weights"):
        ours = build_encoder(name, weights=str(tmp_path / f"{name}.pth"))  # format detected
    assert f"loaded torchvision weights into {name}, format detected from the keys" in caplog.text
    assert "left out the classifier the encoder has no place for: fc.weight, fc.bias" in caplog.text
    ref.fc = nn.Identity()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        close(ours.eval()(x), ref.eval()(x))
    explicit = load_weights(build_encoder(name), f"torchvision:{tmp_path / f'{name}.pth'}")
    assert same(explicit, ours)


def test_torchvision_image_resnet_weights():
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.resnet18()
    randomise_bn(ref)
    ours = load_weights(build_encoder("resnet18"), ref.state_dict(), format="torchvision")
    ref.fc = nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        close(ours.eval()(x), ref.eval()(x))


def test_mc3_18_is_torchvisions_mc3():
    import torchvision

    with torch.device("meta"):
        ref = torchvision.models.video.mc3_18()
        ours = build_encoder("mc3_18")
        assert n_params(ours) == n_params(ref) - n_params(ref.fc) == 11_490_240
        assert mapped_shapes(ours, "torchvision") == {
            k: tuple(v.shape) for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    x = torch.randn(1, 3, 4, 32, 32)
    feats = build_encoder("mc3_18", base_channels=8).forward_features(x)
    assert [tuple(f.shape[2:]) for f in feats.values()] == [(4, 16, 16), (4, 16, 16), (4, 8, 8), (4, 4, 4), (4, 2, 2)]


# ----------------------------------------------------------------------------------------------------------
# pytorchvideo: the hub layouts at full size (meta device), features of narrow models built the same way
# ----------------------------------------------------------------------------------------------------------
I3D_CONV_A = ((3, 1, 1), [(3, 1, 1), (1, 1, 1)], [(3, 1, 1), (1, 1, 1)], [(1, 1, 1), (3, 1, 1)])


def _ptv_head(k: str) -> bool:
    return bool(re.match(r"^blocks\.\d+\.proj\.", k))


@pytest.mark.parametrize("name", ["slow_r50", "i3d_r50", "slowfast_r50"])
def test_pytorchvideo_hub_layouts_are_the_ones_mapped(name):
    pytest.importorskip("pytorchvideo.models.hub", reason="pytorchvideo is optional: pip install avssl[bench]")
    from pytorchvideo.models import hub

    with torch.device("meta"):
        ref = getattr(hub, name)(pretrained=False)
        want = {k: tuple(v.shape) for k, v in ref.state_dict().items() if not _ptv_head(k)}
        assert mapped_shapes(build_encoder(name), "pytorchvideo") == want
    assert n_params(build_encoder(name, base_channels=8)) > 0


@pytest.mark.parametrize("name", ["slow_r50", "i3d_r50"])
def test_pytorchvideo_resnet_weights_give_pytorchvideos_features(name):
    pytest.importorskip("pytorchvideo.models.resnet", reason="pytorchvideo is optional: pip install avssl[bench]")
    from pytorchvideo.models.resnet import create_resnet

    torch.manual_seed(0)
    if name == "slow_r50":  # the hub's slow_r50 arguments
        ref = create_resnet(stem_dim_out=8, stem_conv_kernel_size=(1, 7, 7), head=None)
    else:  # the hub's i3d_r50 arguments
        ref = create_resnet(stem_dim_out=8, stem_conv_kernel_size=(5, 7, 7), stage1_pool=nn.MaxPool3d,
                            stage_conv_a_kernel_size=I3D_CONV_A, head=None)
    randomise_bn(ref)
    ours = load_weights(build_encoder(name, base_channels=8), ref.state_dict(), format="pytorchvideo")
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        close(ours.eval()(x), ref.eval()(x).mean((2, 3, 4)))


def test_pytorchvideo_slowfast_and_audiovisual_slowfast_weights_give_pytorchvideos_features():
    pytest.importorskip("pytorchvideo.models.slowfast", reason="pytorchvideo is optional: pip install avssl[bench]")
    import contextlib
    import io

    from pytorchvideo.models.audio_visual_slowfast import create_audio_visual_slowfast
    from pytorchvideo.models.slowfast import create_slowfast

    torch.manual_seed(0)
    fast = torch.randn(2, 3, 8, 32, 32)
    slow = fast[:, :, ::4]
    ref = create_slowfast(model_depth=50, stem_dim_outs=(16, 2), slowfast_fusion_conv_kernel_size=(7, 1, 1),
                          head_pool=nn.AdaptiveAvgPool3d, head_output_size=(1, 1, 1), head_activation=None)
    randomise_bn(ref)
    ours = load_weights(build_encoder("slowfast_r50", base_channels=16), ref.state_dict())  # head left out
    ref.blocks[-1].proj = nn.Identity()
    with torch.no_grad():
        close(ours.eval()([slow, fast]), ref.eval()([slow, fast]).flatten(1))

    ref = create_audio_visual_slowfast(model_depth=50, stem_dim_outs=(16, 2, 8), head_pool=nn.AdaptiveAvgPool3d)
    randomise_bn(ref, seed=1)
    ours = load_weights(build_encoder("avslowfast_r50", base_channels=16), ref.state_dict(), format="pytorchvideo")
    ref.blocks = ref.blocks[:-1]
    audio = torch.randn(2, 1, 16, 32)  # B×1×F×T_a
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):  # pytorchvideo's fusion prints sizes
        want = ref.eval()([slow, fast, audio.transpose(2, 3).unsqueeze(3)]).flatten(1)
        close(ours.eval()([slow, fast, audio]), want)


# ----------------------------------------------------------------------------------------------------------
# PySlowFast: written key for key from slowfast/models/{video_model_builder,resnet_helper,stem_helper}.py
# ----------------------------------------------------------------------------------------------------------
# _TEMPORAL_KERNEL_BASIS per stage (conv1, res2..res5), expanded over the units as ResStage does with
# NUM_BLOCK_TEMP_KERNEL = the stage depth (the model zoo's I3D/Slow/SlowFast R50 configs).
_PSF_KT = {"i3d": ([5], [3], [3, 1], [3, 1], [1, 3]), "slow": ([1], [1], [1], [3], [3]),
           "slowfast_slow": ([1], [1], [1], [3], [3]), "slowfast_fast": ([5], [3], [3], [3], [3])}
_R50 = (3, 4, 6, 3)


def pyslowfast_shapes(arch: str, width: int = 64, num_classes: int = 400) -> Shapes:
    """A PySlowFast checkpoint's ``model_state`` layout (names and shapes) for I3D / Slow / SlowFast R50."""
    beta_inv, ratio, alpha_kernel = 8, 2, 7
    paths = ["slowfast_slow", "slowfast_fast"] if arch == "slowfast" else [arch]
    dim = [width, width // beta_inv][: len(paths)]
    shapes: Shapes = {}
    for p, (kind, c) in enumerate(zip(paths, dim)):
        shapes[f"s1.pathway{p}_stem.conv.weight"] = (c, 3, _PSF_KT[kind][0][0], 7, 7)
        shapes |= _bn_keys(f"s1.pathway{p}_stem.bn", c)
    fuse_out = 0
    if arch == "slowfast":
        shapes[f"s1_fuse.conv_f2s.weight"] = (dim[1] * ratio, dim[1], alpha_kernel, 1, 1)
        shapes |= _bn_keys("s1_fuse.bn", dim[1] * ratio)
        fuse_out = dim[1] * ratio
    dim_in = [dim[0] + fuse_out] + dim[1:]
    for s, n in zip(range(2, 6), _R50):
        for p, kind in enumerate(paths):
            inner = dim[p] * 2 ** (s - 2)
            out = inner * 4
            kts = (_PSF_KT[kind][s - 1] * n)[:n]
            for i in range(n):
                unit = f"s{s}.pathway{p}_res{i}"
                cin = dim_in[p] if i == 0 else out
                if i == 0:
                    shapes[f"{unit}.branch1.weight"] = (out, cin, 1, 1, 1)
                    shapes |= _bn_keys(f"{unit}.branch1_bn", out)
                for conv, (co, ci, k) in {"a": (inner, cin, (kts[i], 1, 1)), "b": (inner, inner, (1, 3, 3)),
                                          "c": (out, inner, (1, 1, 1))}.items():
                    shapes[f"{unit}.branch2.{conv}.weight"] = (co, ci, *k)
                    shapes |= _bn_keys(f"{unit}.branch2.{conv}_bn", co)
        outs = [dim[p] * 2 ** (s - 2) * 4 for p in range(len(paths))]
        if arch == "slowfast" and s < 5:
            shapes[f"s{s}_fuse.conv_f2s.weight"] = (outs[1] * ratio, outs[1], alpha_kernel, 1, 1)
            shapes |= _bn_keys(f"s{s}_fuse.bn", outs[1] * ratio)
            dim_in = [outs[0] + outs[1] * ratio, outs[1]]
        else:
            dim_in = outs
    shapes["head.projection.weight"] = (num_classes, sum(dim_in))
    shapes["head.projection.bias"] = (num_classes,)
    return shapes


def _bn(x: torch.Tensor, sd: Dict[str, torch.Tensor], p: str) -> torch.Tensor:
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                        training=False, eps=1e-5)


def _conv(x: torch.Tensor, w: torch.Tensor, stride: Sequence[int] = (1, 1, 1)) -> torch.Tensor:
    """'Same' padding (k // 2 per axis), as every conv of these references; 2D or 3D by the kernel."""
    pad = tuple(k // 2 for k in w.shape[2:])
    return (F.conv3d if w.dim() == 5 else F.conv2d)(x, w, stride=tuple(stride)[-(w.dim() - 2):], padding=pad)


def pyslowfast_forward(sd: Dict[str, torch.Tensor], paths: List[torch.Tensor], temporal_pool: bool,
                       alpha: int = 4) -> torch.Tensor:
    """PySlowFast's ResNet / SlowFast forward (eval mode) read from its state-dict names alone."""
    relu = F.relu
    xs = []
    for p, x in enumerate(paths):
        x = relu(_bn(_conv(x, sd[f"s1.pathway{p}_stem.conv.weight"], (1, 2, 2)), sd, f"s1.pathway{p}_stem.bn"))
        xs.append(F.max_pool3d(x, (1, 3, 3), (1, 2, 2), (0, 1, 1)))

    def fuse(s: int) -> None:
        if f"s{s}_fuse.conv_f2s.weight" in sd:
            f = relu(_bn(_conv(xs[1], sd[f"s{s}_fuse.conv_f2s.weight"], (alpha, 1, 1)), sd, f"s{s}_fuse.bn"))
            xs[0] = torch.cat([xs[0], f], 1)

    fuse(1)
    for s in range(2, 6):
        if s == 3 and temporal_pool:
            xs[0] = F.max_pool3d(xs[0], (2, 1, 1), (2, 1, 1))
        for p in range(len(xs)):
            i = 0
            while f"s{s}.pathway{p}_res{i}.branch2.a.weight" in sd:
                u, st = f"s{s}.pathway{p}_res{i}", (1, 2, 2) if s > 2 and i == 0 else (1, 1, 1)
                x = xs[p]
                h = relu(_bn(_conv(x, sd[f"{u}.branch2.a.weight"]), sd, f"{u}.branch2.a_bn"))
                h = relu(_bn(_conv(h, sd[f"{u}.branch2.b.weight"], st), sd, f"{u}.branch2.b_bn"))
                h = _bn(_conv(h, sd[f"{u}.branch2.c.weight"]), sd, f"{u}.branch2.c_bn")
                if f"{u}.branch1.weight" in sd:
                    x = _bn(_conv(x, sd[f"{u}.branch1.weight"], st), sd, f"{u}.branch1_bn")
                xs[p] = relu(h + x)
                i += 1
        if s < 5:
            fuse(s)
    return torch.cat([x.mean((2, 3, 4)) for x in xs], 1)


@pytest.mark.parametrize("name, arch, params", [("i3d_r50", "i3d", 28_043_472), ("slow_r50", "slow", 32_454_096),
                                                ("slowfast_r50", "slowfast", 34_566_488)])
def test_pyslowfast_layout_at_full_size(name, arch, params):
    """The layout written from PySlowFast's code has the model zoo's parameter counts (28.04 M, 32.45 M,
    34.57 M with the 400-class head) and is exactly where avssl's weights go."""
    shapes = pyslowfast_shapes(arch)
    counted = sum(torch.Size(s).numel() for k, s in shapes.items() if not k.endswith(("running_mean", "running_var",
                                                                                       "num_batches_tracked")))
    assert counted == params
    with torch.device("meta"):
        mapped = mapped_shapes(build_encoder(name), "pyslowfast")
    assert mapped == {k: s for k, s in shapes.items() if not k.startswith("head.")}


@pytest.mark.parametrize("name, arch", [("i3d_r50", "i3d"), ("slow_r50", "slow"), ("slowfast_r50", "slowfast")])
def test_pyslowfast_checkpoint_gives_pyslowfasts_features(name, arch, tmp_path, caplog):
    sd = random_state(pyslowfast_shapes(arch, width=16))
    path = tmp_path / "checkpoint_epoch_00196.pyth"  # PySlowFast's checkpoint dict
    torch.save({"epoch": 196, "model_state": sd, "optimizer_state": {"state": {}, "param_groups": []},
                "cfg": "MODEL:\n  ARCH: " + arch + "\n"}, path)
    with caplog.at_level(logging.INFO, logger="avssl.models.weights"):
        ours = build_encoder(name, base_channels=16, weights=str(path))
    assert f"loaded pyslowfast weights into {name}, format detected from the keys" in caplog.text
    assert ("left out the classifier the encoder has no place for: head.projection.weight, head.projection.bias"
            in caplog.text)
    fast = torch.randn(2, 3, 8, 32, 32)
    inputs = [fast[:, :, ::4], fast] if arch == "slowfast" else [fast]
    with torch.no_grad():
        got = ours.eval()(inputs if arch == "slowfast" else fast)
        close(got, pyslowfast_forward(sd, inputs, temporal_pool=arch == "i3d"))


# ----------------------------------------------------------------------------------------------------------
# AVID-CMA: written key for key from models/{video,audio,av_wrapper,network_blocks}.py and main-avid.py's
# CheckpointManager ({"epoch", "model": DDP state dict, "optimizer", "train_criterion"})
# ----------------------------------------------------------------------------------------------------------
def avid_release_shapes(c: int = 64, proj: Sequence[int] = (512, 512, 128)) -> Shapes:
    """``AV_Wrapper(R2Plus1D(depth=18), Conv2D(depth=10), proj_dim=[512, 512, 128])`` state dict, widths C..8C."""
    shapes: Shapes = {"video_model.conv1.0.weight": (c, 3, 3, 7, 7)} | _bn_keys("video_model.conv1.1", c)
    cin = c
    for s in range(2, 6):
        out = c * 2 ** (s - 2)
        for i in range(2):
            u = f"video_model.conv{s}x.{i}"
            a = cin if i == 0 else out
            shapes |= {f"{u}.spt_conv1.weight": (out, a, 1, 3, 3), f"{u}.tmp_conv1.weight": (out, out, 3, 1, 1),
                       f"{u}.spt_conv2.weight": (out, out, 1, 3, 3), f"{u}.tmp_conv2.weight": (out, out, 3, 1, 1)}
            for bn in ("spt_bn1", "tmp_bn1", "spt_bn2", "out_bn"):
                shapes |= _bn_keys(f"{u}.{bn}", out)
            if i == 0 and (a != out or s > 2):
                shapes[f"{u}.res_conv.weight"] = (out, a, 1, 1, 1)
        cin = out
    shapes |= {"audio_model.conv1.0.weight": (c, 1, 7, 7)} | _bn_keys("audio_model.conv1.1", c)
    for b, (ci, co) in enumerate([(c, c), (c, 2 * c), (2 * c, 4 * c), (4 * c, 8 * c)], start=1):
        shapes |= {f"audio_model.block{b}.conv1.weight": (co, ci, 3, 3),
                   f"audio_model.block{b}.conv2.weight": (co, co, 3, 3)}
        shapes |= _bn_keys(f"audio_model.block{b}.bn1", co) | _bn_keys(f"audio_model.block{b}.bn2", co)
    for m in ("video", "audio"):
        d = 8 * c
        for j, o in enumerate(proj):
            shapes |= {f"{m}_proj.projection.{2 * j}.weight": (o, d), f"{m}_proj.projection.{2 * j}.bias": (o,)}
            d = o
    return shapes


def avid_video_forward(sd: Dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """AVID-CMA's R2Plus1D forward (BasicR2P1DBlock units) read from its state-dict names; B×3×T×H×W."""
    relu, p = F.relu, "video_model"
    x = relu(_bn(_conv(x, sd[f"{p}.conv1.0.weight"], (1, 2, 2)), sd, f"{p}.conv1.1"))
    x = F.max_pool3d(x, (1, 3, 3), (1, 2, 2), (0, 1, 1))
    for s in range(2, 6):
        for i in range(2):
            u, st = f"{p}.conv{s}x.{i}", 2 if s > 2 and i == 0 else 1
            h = relu(_bn(_conv(x, sd[f"{u}.spt_conv1.weight"], (1, st, st)), sd, f"{u}.spt_bn1"))
            h = relu(_bn(_conv(h, sd[f"{u}.tmp_conv1.weight"], (st, 1, 1)), sd, f"{u}.tmp_bn1"))
            h = _conv(relu(_bn(_conv(h, sd[f"{u}.spt_conv2.weight"]), sd, f"{u}.spt_bn2")), sd[f"{u}.tmp_conv2.weight"])
            res = _conv(x, sd[f"{u}.res_conv.weight"], (st,) * 3) if f"{u}.res_conv.weight" in sd else x
            x = relu(_bn(h + res, sd, f"{u}.out_bn"))
    return x.flatten(2).amax(2)


def avid_audio_forward(sd: Dict[str, torch.Tensor], spect: torch.Tensor) -> torch.Tensor:
    """AVID-CMA's Conv2D audio forward; ``spect`` laid out as AVID-CMA's loader gives it, B×1×T×F."""
    relu, p = F.relu, "audio_model"
    x = relu(_bn(_conv(spect, sd[f"{p}.conv1.0.weight"], (2, 2)), sd, f"{p}.conv1.1"))
    for b, st in zip(range(1, 5), (2, 2, 2, 1)):
        x = relu(_bn(_conv(x, sd[f"{p}.block{b}.conv1.weight"], (st, st)), sd, f"{p}.block{b}.bn1"))
        x = relu(_bn(_conv(x, sd[f"{p}.block{b}.conv2.weight"]), sd, f"{p}.block{b}.bn2"))
    return x.flatten(2).amax(2)


def test_avid_cma_release_layout_at_full_size():
    shapes = avid_release_shapes()
    count = lambda prefix: sum(torch.Size(s).numel() for k, s in shapes.items() if k.startswith(prefix)  # noqa: E731
                               and not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert count("video_model.") == 15_379_136 and count("audio_model.") == 4_725_696
    with torch.device("meta"):
        for name, part in (("r2plus1d_18_avid", "video_model."), ("avid_audio_conv", "audio_model.")):
            enc = build_encoder(name)
            mapped = {part + k: s for k, s in mapped_shapes(enc, "avid_cma").items()}
            if name == "avid_audio_conv":  # avssl's spectrogram is F×T where AVID-CMA's is T×F
                mapped = {k: s[:2] + s[2:][::-1] for k, s in mapped.items()}
            assert mapped == {k: s for k, s in shapes.items() if k.startswith(part)}


def test_avid_cma_release_checkpoint_gives_avid_cmas_video_and_audio_features(tmp_path, caplog):
    sd = random_state(avid_release_shapes(c=8, proj=(16, 8)))
    path = tmp_path / "AVID-CMA_Kinetics_InstX-N1024-PosW-N64-Top32_checkpoint.pth.tar"
    torch.save({"epoch": 20, "model": {f"module.{k}": v for k, v in sd.items()},
                "optimizer": {"state": {}, "param_groups": [{"lr": 2e-4, "params": [0, 1]}]},
                "train_criterion": {"video_mem": torch.randn(10, 8), "audio_mem": torch.randn(10, 8)}}, path)
    with caplog.at_level(logging.INFO, logger="avssl.models.weights"):
        video = build_encoder("r2plus1d_18_avid", base_channels=8, weights=str(path))
        audio = build_encoder("avid_audio_conv", base_channels=8, weights=str(path))
    for part, name in (("video_model", "r2plus1d_18_avid"), ("audio_model", "avid_audio_conv")):
        assert f"loaded avid_cma weights (part {part}) into {name}, format detected from the keys" in caplog.text
    x = torch.randn(2, 3, 8, 32, 32)
    spect = torch.randn(2, 1, 40, 24)  # avssl: B×1×F×T
    with torch.no_grad():
        close(video.eval()(x), avid_video_forward(sd, x))
        close(audio.eval()(spect), avid_audio_forward(sd, spect.transpose(2, 3)))
        # The kernels are transposed on the way in: the file's own kernels on avssl's layout differ.
        plain = load_weights(build_encoder("avid_audio_conv", base_channels=8),
                             {k[len("audio_model."):]: v for k, v in sd.items() if k.startswith("audio_model.")},
                             format="avssl")
        assert not torch.allclose(plain.eval()(spect), audio(spect), atol=1e-3)


# ----------------------------------------------------------------------------------------------------------
# Round trips, and weights that do not fit
# ----------------------------------------------------------------------------------------------------------
NARROW = [("r3d_18", {"base_channels": 8}), ("mc3_18", {"base_channels": 8}), ("r2plus1d_18", {"base_channels": 8}),
          ("r3d_tiny", {}), ("resnet18", {"base_channels": 8}), ("i3d_r50", {"base_channels": 8}),
          ("slow_r50", {"base_channels": 8}), ("slowfast_r50", {"base_channels": 16}),
          ("avslowfast_r50", {"base_channels": 16}), ("r2plus1d_18_avid", {"base_channels": 8}),
          ("avid_audio_conv", {"base_channels": 8}), ("audio_resnet18", {"base_channels": 8}),
          ("i3d_r50", {"base_channels": 8, "nonlocal_stages": {"res3": [1]}})]


@pytest.mark.parametrize("name, kw", NARROW, ids=[f"{n}{'-nl' if 'nonlocal_stages' in kw else ''}" for n, kw in NARROW])
def test_export_then_load_round_trips_exactly_in_every_format(name, kw, tmp_path):
    torch.manual_seed(0)
    src = build_encoder(name, **kw)
    randomise_bn(src)
    formats = list(layouts_for(src))
    assert formats[0] == "avssl" and set(formats) <= set(FORMATS)
    for fmt in formats:
        if "nonlocal_stages" in kw and fmt != "avssl":
            with pytest.raises(WeightsError, match=rf"cannot be written as {fmt} weights: \d+ tensors have no {fmt} "
                                                   r"counterpart \(res3\.nonlocal_blocks\.1\."):
                export_weights(src, fmt)
            continue
        torch.save(export_weights(src, fmt), tmp_path / f"{fmt}.pth")
        plain = torch.load(tmp_path / f"{fmt}.pth", weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in plain.values())
        dst = load_weights(build_encoder(name, **kw), str(tmp_path / f"{fmt}.pth"), format=fmt)
        assert same(dst, src), fmt
        if fmt != "avid_cma" or name != "avid_audio_conv":  # a bare AVID audio net reads as avssl: see below
            assert same(load_weights(build_encoder(name, **kw), plain), src), fmt  # detected


def test_a_file_that_does_not_fit_raises_one_error_and_loads_nothing(tmp_path):
    import torchvision

    torch.save(torchvision.models.video.r3d_18().state_dict(), tmp_path / "r3d_18.pth")
    enc = build_encoder("r2plus1d_18")
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    with pytest.raises(WeightsError) as err:
        load_weights(enc, str(tmp_path / "r3d_18.pth"))
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{tmp_path / 'r3d_18.pth'} does not fit r2plus1d_18 as torchvision weights: ")
    assert "101 missing (stem.3.weight, stem.4.weight, " in msg
    assert "16 unexpected (layer1.0.conv1.0.weight, layer1.0.conv2.0.weight, " in msg
    assert "5 with another shape (stem.0.weight: 64×3×3×7×7 in the file, 45×3×1×7×7 in r2plus1d_18, " in msg
    assert len(err.value.missing) == 101 and len(err.value.unexpected) == 16 and len(err.value.mismatched) == 5
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())


def test_a_wrong_format_or_width_is_one_error(tmp_path):
    pytest.importorskip("pytorchvideo.models.hub", reason="pytorchvideo is optional: pip install avssl[bench]")
    from pytorchvideo.models.resnet import create_resnet

    sd = create_resnet(stem_dim_out=8, stem_conv_kernel_size=(1, 7, 7), head=None).state_dict()
    enc = build_encoder("slow_r50", base_channels=8)
    with pytest.raises(WeightsError, match=r"^the given state dict does not fit slow_r50 as pyslowfast weights: "
                                           r"265 missing \(s1\.pathway0_stem\.conv\.weight, .*; 318 unexpected "
                                           r"\(blocks\.0\.conv\.weight, "):
        load_weights(enc, sd, format="pyslowfast")
    with pytest.raises(WeightsError, match=r"with another shape \(blocks\.0\.conv\.weight: 8×3×1×7×7 in the file, "
                                           r"16×3×1×7×7 in slow_r50"):
        load_weights(build_encoder("slow_r50", base_channels=16), sd)
    with pytest.raises(WeightsError, match=r"^the given state dict: the torchvision format has no layout for "
                                           r"slow_r50; formats that fit it: avssl, pytorchvideo, pyslowfast$"):
        load_weights(enc, sd, format="torchvision")
    with pytest.raises(WeightsError, match=r"^the given state dict does not fit r3d_tiny in any format it has "
                                           r"\(avssl, torchvision\): no key matches; the file's keys: blocks\.0\."):
        load_weights(build_encoder("r3d_tiny"), sd)


def test_weights_specs_and_parts(tmp_path):
    enc = build_encoder("r3d_tiny")
    torch.save(export_weights(enc, "torchvision"), tmp_path / "tv.pth")
    with pytest.raises(WeightsError, match=r"^unknown weights format 'torchvison' in 'torchvison:.*'; formats: avssl, "
                                           r"torchvision, pytorchvideo, pyslowfast, avid_cma"):
        build_encoder("r3d_tiny", weights=f"torchvison:{tmp_path / 'tv.pth'}")
    with pytest.raises(WeightsError, match=r"names format 'avssl' but format='torchvision' was asked for"):
        load_weights(build_encoder("r3d_tiny"), f"avssl:{tmp_path / 'tv.pth'}", format="torchvision")
    with pytest.raises(WeightsError, match=r"^unknown weights format 'caffe2'; formats: auto, avssl"):
        load_weights(build_encoder("r3d_tiny"), str(tmp_path / "tv.pth"), format="caffe2")
    assert same(build_encoder("r3d_tiny", weights=f"torchvision:{tmp_path / 'tv.pth'}"), enc)
    # A method checkpoint's parts: the one that fits is read; the online encoder wins over its momentum copy.
    other = build_encoder("r3d_tiny")
    ckpt = {"state_dict": {**{f"target_encoder.{k}": v for k, v in other.state_dict().items()},
                           **{f"video_encoder.{k}": v for k, v in enc.state_dict().items()},
                           **{f"audio_encoder.{k}": v
                              for k, v in build_encoder("audio_conv_tiny").state_dict().items()}},
            "global_step": 3}
    assert same(load_weights(build_encoder("r3d_tiny"), ckpt), enc)
    assert same(load_weights(build_encoder("r3d_tiny"), ckpt, part="target_encoder"), other)
    with pytest.raises(WeightsError, match=r"has no part 'key_encoder'; its parts: audio_encoder, target_encoder, "
                                           r"video_encoder$"):
        load_weights(build_encoder("r3d_tiny"), ckpt, part="key_encoder")
    with pytest.raises(WeightsError, match=r"holds no weights: no tensors at its top level nor under state_dict, "
                                           r"model_state, model, model_state_dict \(its keys: 'epoch'\)"):
        load_weights(build_encoder("r3d_tiny"), {"epoch": 3})
