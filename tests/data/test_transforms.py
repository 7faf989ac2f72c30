"""Video transforms: one random draw per clip, crops and flips by position, colour against torchvision."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from avssl.data.transforms import (
    KINETICS_MEAN,
    KINETICS_STD,
    CenterCrop,
    ColorJitter,
    Compose,
    Normalize,
    RandomCrop,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomShortSideScale,
    ShortSideScale,
    ThreeCrop,
    ToFloatCTHW,
    UniformCropIndex,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    build_video_transform,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def still_clip(t: int = 4, h: int = 24, w: int = 32, seed: int = 0) -> torch.Tensor:
    """C×T×H×W float in [0, 1] whose T frames are the same image."""
    frame = torch.rand(3, 1, h, w, generator=gen(seed))
    return frame.expand(3, t, h, w).contiguous()


def ramp_clip(t: int = 4, h: int = 24, w: int = 32, seed: int = 0) -> torch.Tensor:
    """Frame k = frame 0 + k: any spatial window shared by all frames keeps that offset exactly."""
    frame = torch.rand(3, 1, h, w, generator=gen(seed), dtype=torch.float64)
    return frame + torch.arange(t, dtype=torch.float64).view(1, t, 1, 1)


def frames_identical(x: torch.Tensor) -> bool:
    return all(torch.equal(x[:, 0], x[:, k]) for k in range(1, x.shape[1]))


RANDOM_TRANSFORMS = [
    RandomShortSideScale(20, 40),
    RandomCrop(16),
    RandomResizedCrop(16),
    RandomResizedCrop((12, 20), scale=(0.2, 0.5)),
    RandomHorizontalFlip(0.5),
    ColorJitter(0.4, 0.4, 0.4, 0.1),
    RandomGrayscale(0.5),
]


@pytest.mark.parametrize("t", RANDOM_TRANSFORMS, ids=lambda t: type(t).__name__)
def test_identical_frames_stay_identical(t):
    x = still_clip()
    for seed in range(8):
        y = t(x, generator=gen(seed))
        assert frames_identical(y)


@pytest.mark.parametrize(
    "t", [RandomCrop(16), RandomResizedCrop(16), RandomShortSideScale(20, 40), RandomHorizontalFlip(0.5)],
    ids=lambda t: type(t).__name__,
)
def test_every_frame_gets_the_same_window(t):
    x = ramp_clip()
    for seed in range(8):
        y = t(x, generator=gen(seed))
        for k in range(1, x.shape[1]):
            torch.testing.assert_close(y[:, k] - y[:, 0], torch.full_like(y[:, 0], float(k)), atol=1e-9, rtol=0)


def test_to_float_cthw_layout_and_scale():
    x = torch.randint(0, 256, (5, 6, 7, 3), dtype=torch.uint8, generator=gen(0))
    y = ToFloatCTHW()(x)
    assert y.shape == (3, 5, 6, 7) and y.dtype == torch.float32 and y.is_contiguous()
    torch.testing.assert_close(y, x.permute(3, 0, 1, 2).float() / 255.0)
    with pytest.raises(TypeError, match="uint8"):
        ToFloatCTHW()(x.float())
    with pytest.raises(ValueError, match="T×H×W×C"):
        ToFloatCTHW()(x.permute(3, 0, 1, 2).contiguous())


def test_flip_mirrors_the_width_axis_and_twice_is_identity():
    x = ramp_clip()
    flip = RandomHorizontalFlip(p=1.0)
    y = flip(x)
    assert torch.equal(y[..., 0], x[..., -1]) and torch.equal(y, x.flip(3))
    assert torch.equal(flip(y), x)
    assert torch.equal(RandomHorizontalFlip(p=0.0)(x), x)
    flips = [not torch.equal(RandomHorizontalFlip(0.5)(x, generator=gen(s)), x) for s in range(40)]
    assert 5 < sum(flips) < 35


def test_three_crop_returns_the_expected_windows():
    x = torch.arange(2 * 3 * 6 * 10, dtype=torch.float32).view(2, 3, 6, 10)  # H=6 < W=10: along the width
    crops = ThreeCrop(6)(x)
    assert [c.shape for c in crops] == [(2, 3, 6, 6)] * 3
    assert torch.equal(crops[0], x[..., :, 0:6])
    assert torch.equal(crops[1], x[..., :, 2:8])
    assert torch.equal(crops[2], x[..., :, 4:10])
    tall = x.transpose(2, 3)  # H=10 > W=6: top, centre, bottom
    crops = ThreeCrop(6)(tall)
    assert torch.equal(crops[0], tall[..., 0:6, :])
    assert torch.equal(crops[1], tall[..., 2:8, :])
    assert torch.equal(crops[2], tall[..., 4:10, :])
    # smaller square crop: centred across the short side (ceil offsets, as PySlowFast)
    crops = ThreeCrop(3)(x)
    assert torch.equal(crops[0], x[..., 2:5, 0:3]) and torch.equal(crops[2], x[..., 2:5, 7:10])
    assert torch.equal(crops[1], x[..., 2:5, 4:7])
    for i in range(3):
        assert torch.equal(ThreeCrop(3, crop_index=i)(x), crops[i])
        assert torch.equal(UniformCropIndex(3, i)(x), crops[i])


def test_center_and_random_crop_positions():
    x = torch.arange(7 * 9, dtype=torch.float32).view(1, 1, 7, 9)
    assert torch.equal(CenterCrop(3)(x), x[..., 2:5, 3:6])
    assert torch.equal(CenterCrop((4, 4))(x), x[..., 2:6, 3:7])  # ceil((7-4)/2) = 2, ceil((9-4)/2) = 3
    corners = set()
    for s in range(200):
        y = RandomCrop(5)(x, generator=gen(s))
        top, left = divmod(int(y[0, 0, 0, 0]), 9)
        assert torch.equal(y, x[..., top : top + 5, left : left + 5])
        corners.add((top, left))
    assert corners == {(t, l) for t in range(3) for l in range(5)}  # every position reachable
    with pytest.raises(ValueError, match="larger than the clip"):
        RandomCrop(8)(x)


def test_short_side_scale_sizes_and_values():
    x = torch.rand(3, 4, 30, 50, generator=gen(1))
    y = ShortSideScale(12)(x)
    assert y.shape == (3, 4, 12, 20)
    # independent per-frame reference: T×C×H×W through interpolate with antialias
    ref = F.interpolate(x.permute(1, 0, 2, 3), size=(12, 20), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(y, ref.permute(1, 0, 2, 3), atol=1e-6, rtol=0)
    assert ShortSideScale(12)(x.transpose(2, 3)).shape == (3, 4, 20, 12)
    assert ShortSideScale(10)(torch.rand(3, 2, 31, 47)).shape == (3, 2, 10, 15)  # long side floored
    up = ShortSideScale(60)(x)
    ref = F.interpolate(x.permute(1, 0, 2, 3), size=(60, 100), mode="bilinear", align_corners=False)
    torch.testing.assert_close(up, ref.permute(1, 0, 2, 3), atol=1e-6, rtol=0)


def test_random_short_side_scale_range():
    x = torch.rand(3, 2, 40, 60)
    sizes = {RandomShortSideScale(20, 24)(x, generator=gen(s)).shape[2] for s in range(60)}
    assert sizes == {20, 21, 22, 23, 24}


def test_random_resized_crop_size_and_full_frame_case():
    x = torch.rand(3, 3, 30, 40, generator=gen(2))
    for s in range(20):
        assert RandomResizedCrop(16)(x, generator=gen(s)).shape == (3, 3, 16, 16)
    assert RandomResizedCrop((10, 14))(x).shape == (3, 3, 10, 14)
    # the whole frame at its own aspect ratio is a plain resize
    whole = RandomResizedCrop(16, scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3))(x, generator=gen(0))
    ref = F.interpolate(x.permute(1, 0, 2, 3), size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(whole, ref.permute(1, 0, 2, 3), atol=1e-6, rtol=0)
    # windows respect the area and ratio bounds
    rrc = RandomResizedCrop(8, scale=(0.25, 0.5), ratio=(0.5, 2.0))
    for s in range(50):
        top, left, h, w = rrc.window(100, 120, gen(s))
        assert 0 <= top <= 100 - h and 0 <= left <= 120 - w
        assert 0.24 <= h * w / 12000 <= 0.51 and 0.45 <= w / h <= 2.2


def test_color_jitter_zero_factors_is_identity():
    x = still_clip(seed=3)
    assert torch.equal(ColorJitter(0, 0, 0, 0)(x, generator=gen(0)), x)
    assert torch.equal(ColorJitter(0.5, 0.5, 0.5, 0.2, p=0.0)(x, generator=gen(0)), x)


def test_color_jitter_reproducible_and_random():
    x = torch.rand(3, 4, 10, 12, generator=gen(4))
    cj = ColorJitter(0.4, 0.4, 0.4, 0.1)
    a, b, c = cj(x, generator=gen(5)), cj(x, generator=gen(5)), cj(x, generator=gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    # one set of factors for the clip: frame k of the output = jitter of frame k with the same factors
    order, bf, cf, sf, hf = cj.sample(gen(5))
    ops = {0: lambda v: adjust_brightness(v, bf), 1: lambda v: adjust_contrast(v, cf),
           2: lambda v: adjust_saturation(v, sf), 3: lambda v: adjust_hue(v, hf)}
    for k in range(4):
        frame = x[:, k : k + 1]
        for op in order:
            frame = ops[op](frame)
        torch.testing.assert_close(a[:, k : k + 1], frame)


@pytest.mark.parametrize("factor", [0.3, 1.0, 1.7])
def test_colour_ops_match_torchvision(factor):
    import torchvision.transforms.functional as TF

    x = torch.rand(3, 2, 9, 11, generator=gen(7), dtype=torch.float64)
    frames = x.permute(1, 0, 2, 3)  # T×C×H×W, as torchvision wants
    back = lambda v: v.permute(1, 0, 2, 3)  # noqa: E731
    torch.testing.assert_close(adjust_brightness(x, factor), back(TF.adjust_brightness(frames, factor)))
    # torchvision's float luma weighs red 0.2989 where BT.601 (and PIL, and here) says 0.299: <= 1e-4 apart.
    tol = dict(atol=1e-4, rtol=0)
    torch.testing.assert_close(adjust_contrast(x, factor), back(TF.adjust_contrast(frames, factor)), **tol)
    torch.testing.assert_close(adjust_saturation(x, factor), back(TF.adjust_saturation(frames, factor)), **tol)
    hue = (factor - 1.0) / 2  # in [-0.35, 0.35]
    torch.testing.assert_close(adjust_hue(x, hue), back(TF.adjust_hue(frames, hue)), atol=1e-6, rtol=0)


def test_random_grayscale_uses_bt601_luma():
    x = torch.rand(3, 2, 5, 6, generator=gen(8))
    y = RandomGrayscale(p=1.0)(x)
    luma = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    for c in range(3):
        torch.testing.assert_close(y[c], luma)
    assert torch.equal(RandomGrayscale(p=0.0)(x), x)


def test_normalize_against_the_formula():
    x = torch.rand(3, 2, 4, 5, generator=gen(9))
    y = Normalize()(x)
    for c in range(3):
        torch.testing.assert_close(y[c], (x[c] - KINETICS_MEAN[c]) / KINETICS_STD[c])
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    yb = Normalize(mean, std)(x.unsqueeze(0).expand(2, -1, -1, -1, -1))
    for c in range(3):
        torch.testing.assert_close(yb[1, c], (x[c] - mean[c]) / std[c])
    with pytest.raises(ValueError, match="channels"):
        Normalize()(x[:2])


def test_pipeline_determinism_under_a_seeded_generator():
    clip = torch.randint(0, 256, (6, 48, 64, 3), dtype=torch.uint8, generator=gen(10))
    t = build_video_transform(True, crop_size=32, color_jitter=(0.4, 0.4, 0.4, 0.1), grayscale_p=0.3)
    a, b = t(clip, generator=gen(0)), t(clip, generator=gen(0))
    assert a.shape == (3, 6, 32, 32) and torch.equal(a, b)
    assert not torch.equal(a, t(clip, generator=gen(1)))
    # a generator given at construction works when the caller passes none
    t1 = build_video_transform(True, crop_size=32, generator=gen(3))
    t2 = build_video_transform(True, crop_size=32, generator=gen(3))
    assert torch.equal(t1(clip), t2(clip))
    # frames that are the same image stay the same through the whole train pipeline
    still = clip[:1].expand(6, -1, -1, -1).contiguous()
    assert frames_identical(t(still, generator=gen(2)))


def test_build_video_transform_test_pipelines():
    clip = torch.randint(0, 256, (4, 36, 48, 3), dtype=torch.uint8, generator=gen(11))
    one = build_video_transform(False, crop_size=28)  # short side 32 (= 28·256/224), centre crop 28
    y = one(clip)
    assert y.shape == (3, 4, 28, 28) and torch.equal(y, one(clip))
    scaled = ShortSideScale(32)(ToFloatCTHW()(clip))
    torch.testing.assert_close(y, Normalize()(CenterCrop(28)(scaled)))
    three = build_video_transform(False, crop_size=28, test_crops=3)(clip)
    assert isinstance(three, list) and len(three) == 3
    for got, want in zip(three, ThreeCrop(28)(scaled)):
        torch.testing.assert_close(got, Normalize()(want))
    train = build_video_transform(True, crop_size=28, random_resized_crop=True)
    assert train(clip, generator=gen(0)).shape == (3, 4, 28, 28)
    with pytest.raises(ValueError, match="test_crops"):
        build_video_transform(False, crop_size=28, test_crops=2)


def test_compose_maps_later_steps_over_lists_and_accepts_plain_callables():
    x = torch.rand(3, 2, 8, 12)
    out = Compose([ThreeCrop(8), lambda v: v * 2])(x)
    assert [o.shape for o in out] == [(3, 2, 8, 8)] * 3
    torch.testing.assert_close(out[2], 2 * x[..., 4:12])
