"""Video transforms on whole clips, consistent over time.

Layout: float C×T×H×W (:class:`ToFloatCTHW` turns the decoder's uint8 T×H×W×3 into it, in [0, 1]).
A random transform makes one draw per clip and applies it to every frame, so motion is never
distorted by a crop or flip that changes from frame to frame.

Randomness: every random transform takes ``generator=`` in its constructor and in its call (the call's
wins; neither = torch's global RNG, which the DataLoader seeds per worker). :class:`Compose` hands its
call's generator to every step, so one seeded generator makes a whole pipeline reproducible.

Resizing runs ``torch.nn.functional.interpolate`` once on the whole clip (the T frames of each channel
are stacked as image channels), bilinear, antialiased when shrinking.

Typical pipelines (:func:`build_video_transform`):

* train: ToFloatCTHW -> RandomShortSideScale(min, max) -> RandomCrop(crop) -> RandomHorizontalFlip
  [-> ColorJitter -> RandomGrayscale] -> Normalize  (PySlowFast's scale jitter: short side in [256, 320]
  then a 224 crop; the same ratios for other crop sizes), or RandomResizedCrop instead of scale+crop;
* test: ToFloatCTHW -> ShortSideScale(min) -> CenterCrop(crop) or ThreeCrop(crop) -> Normalize.
"""
from __future__ import annotations

import math
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from avssl.data.batch import is_batch, sample_ndim

__all__ = [
    "KINETICS_MEAN",
    "KINETICS_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Transform",
    "RandomTransform",
    "Compose",
    "ToFloatCTHW",
    "ShortSideScale",
    "RandomShortSideScale",
    "Resize",
    "RandomResizedCrop",
    "RandomCrop",
    "CenterCrop",
    "ThreeCrop",
    "UniformCropIndex",
    "uniform_crop",
    "RandomHorizontalFlip",
    "ColorJitter",
    "RandomGrayscale",
    "Normalize",
    "resize",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_hue",
    "rgb_to_grayscale",
    "build_video_transform",
]

# PySlowFast / pytorchvideo Kinetics models normalise with these (DATA.MEAN / DATA.STD).
KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)
# torchvision's ImageNet statistics (for encoders initialised from ImageNet weights).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Size = Union[int, Tuple[int, int]]
Clip = torch.Tensor


def _pair(size: Size, who: str) -> Tuple[int, int]:
    if isinstance(size, int):
        h = w = size
    else:
        if len(size) != 2:
            raise ValueError(f"{who}: size must be an int or (height, width), got {size!r}")
        h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"{who}: size must be positive, got {size!r}")
    return h, w


def _check_clip(x: Any, who: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who}: expected a C×T×H×W tensor, got {type(x).__name__}")
    if x.dim() != sample_ndim("video"):
        raise ValueError(f"{who}: expected a C×T×H×W tensor, got shape {tuple(x.shape)}")
    return x


def _check_float(x: torch.Tensor, who: str) -> torch.Tensor:
    if not x.is_floating_point():
        raise TypeError(f"{who}: expected a float clip (apply ToFloatCTHW first), got dtype {x.dtype}")
    return x


# -- random numbers ----------------------------------------------------------------------------
def _rand(g: Optional[torch.Generator]) -> float:
    return float(torch.rand((), generator=g, dtype=torch.float64))


def _uniform(lo: float, hi: float, g: Optional[torch.Generator]) -> float:
    return lo + (hi - lo) * _rand(g)


def _randint(lo: int, hi: int, g: Optional[torch.Generator]) -> int:
    """Uniform integer in [lo, hi], inclusive."""
    return int(torch.randint(lo, hi + 1, (), generator=g))


# -- base classes ------------------------------------------------------------------------------
class Transform:
    """A clip transform: ``t(x, generator=None)``; deterministic ones ignore the generator."""

    def __call__(self, x: Clip, generator: Optional[torch.Generator] = None) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "generator")
        return f"{type(self).__name__}({args})"


class RandomTransform(Transform):
    """A transform that draws random numbers: once per clip, from the call's or the constructor's generator."""

    def __init__(self, generator: Optional[torch.Generator] = None) -> None:
        self.generator = generator

    def _gen(self, generator: Optional[torch.Generator]) -> Optional[torch.Generator]:
        return generator if generator is not None else self.generator


class Compose(Transform):
    """Apply transforms in order; the call's generator goes to every :class:`Transform`.

    A step that returns a list of clips (e.g. :class:`ThreeCrop`) makes the following steps run on each
    clip of the list. Plain callables (``x -> x``) may be mixed in.
    """

    def __init__(self, transforms: Sequence[Callable[..., Any]]) -> None:
        self.transforms = list(transforms)

    def _apply(self, t: Callable[..., Any], x: Any, g: Optional[torch.Generator]) -> Any:
        if isinstance(x, list):
            return [self._apply(t, xi, g) for xi in x]
        return t(x, generator=g) if isinstance(t, Transform) else t(x)

    def __call__(self, x: Any, generator: Optional[torch.Generator] = None) -> Any:
        for t in self.transforms:
            x = self._apply(t, x, generator)
        return x

    def __repr__(self) -> str:
        inner = "".join(f"\n  {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"


# -- conversion --------------------------------------------------------------------------------
class ToFloatCTHW(Transform):
    """uint8 T×H×W×C (as decoded) -> float C×T×H×W in [0, 1] (÷255).

    Example::

        >>> ToFloatCTHW()(torch.full((8, 4, 6, 3), 255, dtype=torch.uint8)).shape
        torch.Size([3, 8, 4, 6])
    """

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        self.dtype = dtype

    def __call__(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> Clip:
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"ToFloatCTHW: expected a uint8 T×H×W×C clip, got {shape}")
        if x.dtype != torch.uint8:
            raise TypeError(f"ToFloatCTHW: expected dtype uint8, got {x.dtype}")
        if x.shape[-1] not in (1, 3):
            raise ValueError(f"ToFloatCTHW: expected 1 or 3 channels last (T×H×W×C), got shape {tuple(x.shape)}")
        # Permute first (a view), then one contiguous copy in the new layout.
        return x.permute(3, 0, 1, 2).to(self.dtype).contiguous().div_(255.0)


# -- resizing ----------------------------------------------------------------------------------
def resize(x: Clip, size: Tuple[int, int], mode: str = "bilinear") -> Clip:
    """C×T×H×W -> C×T×h×w with one ``interpolate`` call; antialiased when shrinking."""
    x = _check_float(_check_clip(x, "resize"), "resize")
    c, t, h0, w0 = x.shape
    h, w = size
    if (h, w) == (h0, w0):
        return x
    antialias = mode in ("bilinear", "bicubic") and (h < h0 or w < w0)
    # C×T frames become the channels of one image: interpolate treats channels independently.
    y = F.interpolate(
        x.reshape(1, c * t, h0, w0),
        size=(h, w),
        mode=mode,
        align_corners=False if mode in ("bilinear", "bicubic") else None,
        antialias=antialias,
    )
    if mode == "bicubic":
        y = y.clamp(float(x.min()), float(x.max()))  # bicubic overshoots; keep the input's range
    return y.reshape(c, t, h, w)


def _short_side_size(h: int, w: int, size: int) -> Tuple[int, int]:
    # The long side is floored, as PySlowFast and pytorchvideo do.
    if h <= w:
        return size, max(1, int(math.floor(w * size / h)))
    return max(1, int(math.floor(h * size / w))), size


class Resize(Transform):
    """Resize every frame to ``size`` (int = square, or (h, w))."""

    def __init__(self, size: Size, mode: str = "bilinear") -> None:
        self.size, self.mode = _pair(size, "Resize"), mode

    def __call__(self, x: Clip, generator: Optional[torch.Generator] = None) -> Clip:
        return resize(x, self.size, self.mode)


class ShortSideScale(Transform):
    """Scale so that the short side is ``size``, keeping the aspect ratio (long side floored)."""

    def __init__(self, size: int, mode: str = "bilinear") -> None:
        if size <= 0:
            raise ValueError(f"ShortSideScale: size must be > 0, got {size}")
        self.size, self.mode = int(size), mode

    def __call__(self, x: Clip, generator: Optional[torch.Generator] = None) -> Clip:
        x = _check_clip(x, "ShortSideScale")
        return resize(x, _short_side_size(x.shape[-2], x.shape[-1], self.size), self.mode)


class RandomShortSideScale(RandomTransform):
    """Scale the short side to a random integer in [min_size, max_size] (inclusive), one per clip."""

    def __init__(self, min_size: int, max_size: int, mode: str = "bilinear", generator: Optional[torch.Generator] = None) -> None:
        super().__init__(generator)
        if not 0 < min_size <= max_size:
            raise ValueError(f"RandomShortSideScale: need 0 < min_size <= max_size, got {min_size}, {max_size}")
        self.min_size, self.max_size, self.mode = int(min_size), int(max_size), mode

    def __call__(self, x: Clip, generator: Optional[torch.Generator] = None) -> Clip:
        x = _check_clip(x, "RandomShortSideScale")
        size = _randint(self.min_size, self.max_size, self._gen(generator))
        return resize(x, _short_side_size(x.shape[-2], x.shape[-1], size), self.mode)


# -- crops -------------------------------------------------------------------------------------
def _crop(x: Clip, top: int, left: int, h: int, w: int) -> Clip:
    return x[..., top : top + h, left : left + w]


def _fits(x: Clip, h: int, w: int, who: str) -> None:
    if h > x.shape[-2] or w > x.shape[-1]:
        raise ValueError(
            f"{who}: crop {h}×{w} (H×W) is larger than the clip's {x.shape[-2]}×{x.shape[-1]}; scale it up first"
        )


class RandomCrop(RandomTransform):
    """The same random ``size`` window of every frame."""

    def __init__(self, size: Size, generator: Optional[torch.Generator] = None) -> None:
        super().__init__(generator)
        self.size = _pair(size, "RandomCrop")

    def __call__(self, x: Clip, generator: Optional[torch.Generator] = None) -> Clip:
        x = _check_clip(x, "RandomCrop")
        h, w = self.size
        _fits(x, h, w, "RandomCrop")
        g = self._gen(generator)
        top = _randint(0, x.shape[-2] - h, g)
        left = _randint(0, x.shape[-1] - w, g)
        return _crop(x, top, left, h, w)


class CenterCrop(Transform):
    """The central ``size`` window (offsets ceil((H − h)/2), ceil((W − w)/2), as PySlowFast's)."""

    def __init__(self, size: Size) -> None:
        self.size = _pair(size, "CenterCrop")

    def __call__(self, x: Clip, generator: Optional[torch.Generator] = None) -> Clip:
        x = _check_clip(x, "CenterCrop")
        h, w = self.size
        _fits(x, h, w, "CenterCrop")
        return _crop(x, math.ceil((x.shape[-2] - h) / 2), math.ceil((x.shape[-1] - w) / 2), h, w)


def uniform_crop(x: Clip, size: Size, crop_index: int) -> Clip:
    """Crop ``crop_index`` (0, 1, 2) of PySlowFast's three-crop test: along the long side, the window at
    the start (left or top), the centre, or the end (right or bottom); centred along the short side.
    Square frames are cut along their width.

    Example::

        >>> x = torch.arange(8.).view(1, 1, 1, 8).expand(1, 1, 4, 8)   # W = 8, H = 4
        >>> [uniform_crop(x, 4, i)[0, 0, 0].tolist() for i in range(3)]
        [[0.0, 1.0, 2.0, 3.0], [2.0, 3.0, 4.0, 5.0], [4.0, 5.0, 6.0, 7.0]]
    """
    x = _check_clip(x, "uniform_crop")
    if crop_index not in (0, 1, 2):
        raise ValueError(f"uniform_crop: crop_index must be 0, 1 or 2, got {crop_index}")
    h, w = _pair(size, "uniform_crop")
    H, W = x.shape[-2], x.shape[-1]
    _fits(x, h, w, "uniform_crop")
    top, left = math.ceil((H - h) / 2), math.ceil((W - w) / 2)
    if H > W:
        top = (0, top, H - h)[crop_index]
    else:
        left = (0, left, W - w)[crop_index]
    return _crop(x, top, left, h, w)


class UniformCropIndex(Transform):
    """One crop of the three-crop test (``crop_index`` 0, 1 or 2; see :func:`uniform_crop`).

    For datasets that index test views as (temporal clip, spatial crop) and return one crop per item.
    """

    def __init__(self, size: Size, crop_index: int) -> None:
        if crop_index not in (0, 1, 2):
            raise ValueError(f"UniformCropIndex: crop_index must be 0, 1 or 2, got {crop_index}")
        self.size, self.crop_index = _pair(size, "UniformCropIndex"), int(crop_index)

    def __call__(self, x: Clip, generator: Optional[torch.Generator] = None) -> Clip:
        return uniform_crop(x, self.size, self.crop_index)


class ThreeCrop(Transform):
    """The three-crop test: a list of the start, centre and end windows along the long side.

    ``crop_index`` = 0, 1 or 2 returns that one clip instead of the list.
    """

    def __init__(self, size: Size, crop_index: Optional[int] = None) -> None:
        if crop_index is not None and crop_index not in (0, 1, 2):
            raise ValueError(f"ThreeCrop: crop_index must be 0, 1, 2 or None, got {crop_index}")
        self.size, self.crop_index = _pair(size, "ThreeCrop"), crop_index

    def __call__(self, x: Clip, generator: Optional[torch.Generator] = None) -> Union[Clip, List[Clip]]:
        if self.crop_index is not None:
            return uniform_crop(x, self.size, self.crop_index)
        return [uniform_crop(x, self.size, i) for i in range(3)]


class RandomResizedCrop(RandomTransform):
    """Inception-style crop: a random window covering ``scale`` of the frame area with aspect ratio
    (w/h) in ``ratio`` (log-uniform), resized to ``size``; the same window for every frame.

    Ten tries to find a window that fits; otherwise the largest central window with the ratio clamped
    into ``ratio`` (torchvision's rule).
    """

    def __init__(
        self,
        size: Size,
        scale: Tuple[float, float] = (0.08, 1.0),
        ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        mode: str = "bilinear",
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__(generator)
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"RandomResizedCrop: need 0 < scale[0] <= scale[1], got {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"RandomResizedCrop: need 0 < ratio[0] <= ratio[1], got {ratio}")
        self.size = _pair(size, "RandomResizedCrop")
        self.scale, self.ratio, self.mode = tuple(scale), tuple(ratio), mode

    def window(self, height: int, width: int, generator: Optional[torch.Generator] = None) -> Tuple[int, int, int, int]:
        """(top, left, h, w) of the window for a ``height``×``width`` frame."""
        g = self._gen(generator)
        area = height * width
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target = area * _uniform(self.scale[0], self.scale[1], g)
            aspect = math.exp(_uniform(log_lo, log_hi, g))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return _randint(0, height - h, g), _randint(0, width - w, g), h, w
        aspect = width / height
        if aspect < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif aspect > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            h, w = height, width
        h, w = min(max(h, 1), height), min(max(w, 1), width)
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, x: Clip, generator: Optional[torch.Generator] = None) -> Clip:
        x = _check_clip(x, "RandomResizedCrop")
        top, left, h, w = self.window(x.shape[-2], x.shape[-1], generator)
        # Crop first, then resize only the window.
        return resize(_crop(x, top, left, h, w), self.size, self.mode)


# -- flips and colour --------------------------------------------------------------------------
class RandomHorizontalFlip(RandomTransform):
    """Mirror every frame left-right (the W axis) with probability ``p``."""

    def __init__(self, p: float = 0.5, generator: Optional[torch.Generator] = None) -> None:
        super().__init__(generator)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, x: Clip, generator: Optional[torch.Generator] = None) -> Clip:
        x = _check_clip(x, "RandomHorizontalFlip")
        return x.flip(-1) if _rand(self._gen(generator)) < self.p else x


_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as torchvision and PIL


def rgb_to_grayscale(x: Clip) -> Clip:
    """C×… RGB (C = 3) -> 1×… luma."""
    if x.shape[0] != 3:
        raise ValueError(f"rgb_to_grayscale: expected 3 channels first, got shape {tuple(x.shape)}")
    r, g, b = x[0], x[1], x[2]
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(0)


def adjust_brightness(x: Clip, factor: float) -> Clip:
    """``clamp(x·factor, 0, 1)``."""
    return (x * factor).clamp_(0.0, 1.0)


def adjust_contrast(x: Clip, factor: float) -> Clip:
    """Blend each frame with its mean grey level: ``clamp(factor·x + (1 − factor)·mean, 0, 1)``."""
    mean = rgb_to_grayscale(x).mean(dim=(-2, -1), keepdim=True)  # 1×T×1×1: per frame
    return (factor * x + (1.0 - factor) * mean).clamp_(0.0, 1.0)


def adjust_saturation(x: Clip, factor: float) -> Clip:
    """Blend with the grey version: ``clamp(factor·x + (1 − factor)·gray, 0, 1)``."""
    return (factor * x + (1.0 - factor) * rgb_to_grayscale(x)).clamp_(0.0, 1.0)


def adjust_hue(x: Clip, shift: float) -> Clip:
    """Rotate the hue by ``shift`` turns (in [−0.5, 0.5]) in HSV space; 3×… in [0, 1]."""
    if not -0.5 <= shift <= 0.5:
        raise ValueError(f"adjust_hue: shift must be in [-0.5, 0.5], got {shift}")
    if x.shape[0] != 3:
        raise ValueError(f"adjust_hue: expected 3 channels first, got shape {tuple(x.shape)}")
    r, g, b = x[0], x[1], x[2]
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    delta = maxc - minc
    v = maxc
    s = delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    # Hue in sixths of a turn, by which channel is the maximum (red wins ties, then green).
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, h / 6.0, torch.zeros_like(h))
    h = torch.remainder(h + shift, 1.0)
    # HSV -> RGB
    h6 = h * 6.0
    i = torch.floor(h6).clamp_(0, 5)
    f = h6 - i
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    idx = i.long().unsqueeze(0)

    def pick(*by_sector: torch.Tensor) -> torch.Tensor:  # per pixel, the value for its hue sector
        return torch.gather(torch.stack(by_sector), 0, idx).squeeze(0)

    out = torch.stack([pick(v, q, p, p, t, v), pick(t, v, v, q, p, p), pick(p, p, t, v, v, q)])
    return out.clamp_(0.0, 1.0)


def _jitter_range(value: Union[float, Tuple[float, float]], name: str, center: float, bound: Tuple[float, float]) -> Tuple[float, float]:
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"ColorJitter: {name} must be >= 0, got {value}")
        lo, hi = center - value, center + value
        lo = max(lo, bound[0])
    else:
        lo, hi = float(value[0]), float(value[1])
    if not bound[0] <= lo <= hi <= bound[1]:
        raise ValueError(f"ColorJitter: {name} range ({lo}, {hi}) must lie within {bound}")
    return float(lo), float(hi)


class ColorJitter(RandomTransform):
    """Random brightness, contrast, saturation and hue, in a random order, with probability ``p``;
    one set of factors (and one order) per clip, the same for every frame.

    A number v gives factors uniform in [max(0, 1 − v), 1 + v] (hue: shifts in [−v, v] turns, v <= 0.5);
    a pair (lo, hi) gives that range. 0 means "leave alone". Expects values in [0, 1] (before
    :class:`Normalize`); the results are clamped to [0, 1]. The operations follow torchvision's
    definitions (contrast blends each frame with its mean grey level).
    """

    def __init__(
        self,
        brightness: Union[float, Tuple[float, float]] = 0.0,
        contrast: Union[float, Tuple[float, float]] = 0.0,
        saturation: Union[float, Tuple[float, float]] = 0.0,
        hue: Union[float, Tuple[float, float]] = 0.0,
        p: float = 1.0,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__(generator)
        inf = float("inf")
        self.brightness = _jitter_range(brightness, "brightness", 1.0, (0.0, inf))
        self.contrast = _jitter_range(contrast, "contrast", 1.0, (0.0, inf))
        self.saturation = _jitter_range(saturation, "saturation", 1.0, (0.0, inf))
        self.hue = _jitter_range(hue, "hue", 0.0, (-0.5, 0.5))
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"ColorJitter: p must be in [0, 1], got {p}")
        self.p = float(p)

    def sample(self, generator: Optional[torch.Generator] = None) -> Optional[Tuple[List[int], float, float, float, float]]:
        """(order, brightness, contrast, saturation, hue) for one clip, or None when not applied."""
        g = self._gen(generator)
        # Always the same number of draws, so later transforms see the same stream whatever p decided.
        apply = _rand(g) < self.p
        order = torch.randperm(4, generator=g).tolist()
        b = _uniform(*self.brightness, g)
        c = _uniform(*self.contrast, g)
        s = _uniform(*self.saturation, g)
        h = _uniform(*self.hue, g)
        return (order, b, c, s, h) if apply else None

    def __call__(self, x: Clip, generator: Optional[torch.Generator] = None) -> Clip:
        x = _check_float(_check_clip(x, "ColorJitter"), "ColorJitter")
        params = self.sample(generator)
        if params is None:
            return x
        return apply_color_jitter(x, params)


def apply_color_jitter(x: torch.Tensor, params: Tuple[Any, float, float, float, float]) -> torch.Tensor:
    """Apply :meth:`ColorJitter.sample`'s ``(order, brightness, contrast, saturation, hue)`` to float
    ``x`` (3×… channels first: a C×T×H×W clip or a C×H×W image), in the drawn order."""
    order, b, c, s, h = params
    for op in order:
        if op == 0 and b != 1.0:
            x = adjust_brightness(x, b)
        elif op == 1 and c != 1.0:
            x = adjust_contrast(x, c)
        elif op == 2 and s != 1.0:
            x = adjust_saturation(x, s)
        elif op == 3 and h != 0.0:
            x = adjust_hue(x, h)
    return x


class RandomGrayscale(RandomTransform):
    """With probability ``p``, replace the clip by its luma (BT.601) repeated on the 3 channels."""

    def __init__(self, p: float = 0.1, generator: Optional[torch.Generator] = None) -> None:
        super().__init__(generator)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomGrayscale: p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, x: Clip, generator: Optional[torch.Generator] = None) -> Clip:
        x = _check_clip(x, "RandomGrayscale")
        if _rand(self._gen(generator)) < self.p:
            return rgb_to_grayscale(x).expand_as(x).contiguous()
        return x


class Normalize(Transform):
    """``(x − mean[c]) / std[c]`` per channel; C×T×H×W (or B×C×T×H×W).

    Defaults: the Kinetics statistics of PySlowFast / pytorchvideo (mean 0.45, std 0.225 on every
    channel, for values in [0, 1]); :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD` (0.485, 0.456, 0.406 /
    0.229, 0.224, 0.225) suit encoders initialised from ImageNet weights.
    """

    def __init__(self, mean: Sequence[float] = KINETICS_MEAN, std: Sequence[float] = KINETICS_STD) -> None:
        if len(mean) != len(std):
            raise ValueError(f"Normalize: mean has {len(mean)} entries but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"Normalize: std must be > 0, got {tuple(std)}")
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def __call__(self, x: Clip, generator: Optional[torch.Generator] = None) -> Clip:
        if not isinstance(x, torch.Tensor) or not (x.dim() == sample_ndim("video") or is_batch(x, "video")):
            raise ValueError("Normalize: expected a C×T×H×W or B×C×T×H×W tensor")
        x = _check_float(x, "Normalize")
        c = x.shape[-4]
        if c != len(self.mean):
            raise ValueError(f"Normalize: clip has {c} channels, mean/std have {len(self.mean)}")
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(c, 1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(c, 1, 1, 1)
        return (x - mean) / std


# -- standard pipelines ------------------------------------------------------------------------
def build_video_transform(
    train: bool,
    crop_size: int = 112,
    min_scale: Optional[int] = None,
    max_scale: Optional[int] = None,
    *,
    random_resized_crop: bool = False,
    rrc_scale: Tuple[float, float] = (0.08, 1.0),
    rrc_ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    flip_p: float = 0.5,
    color_jitter: Optional[Tuple[float, float, float, float]] = None,
    color_jitter_p: float = 0.8,
    grayscale_p: float = 0.0,
    test_crops: int = 1,
    mean: Sequence[float] = KINETICS_MEAN,
    std: Sequence[float] = KINETICS_STD,
    generator: Optional[torch.Generator] = None,
) -> Compose:
    """The standard pipelines: uint8 T×H×W×3 -> float C×T×crop×crop (test with 3 crops: a list of 3).

    * ``train``: ToFloatCTHW -> RandomShortSideScale(min_scale, max_scale) -> RandomCrop(crop_size)
      (or RandomResizedCrop(crop_size, rrc_scale, rrc_ratio) when ``random_resized_crop``) ->
      RandomHorizontalFlip(flip_p) -> [ColorJitter(*color_jitter, p=color_jitter_p)] ->
      [RandomGrayscale(grayscale_p)] -> Normalize(mean, std).
    * test: ToFloatCTHW -> ShortSideScale(min_scale) -> CenterCrop(crop_size) (``test_crops=1``) or
      ThreeCrop(crop_size) (``test_crops=3``) -> Normalize(mean, std).

    ``min_scale``/``max_scale`` default to PySlowFast's jitter ratios, 256/224 and 320/224 of the crop
    (128 and 160 for a 112 crop, 256 and 320 for 224). Contrastive methods (SimCLR, BYOL) typically use
    ``random_resized_crop=True, color_jitter=(0.4, 0.4, 0.4, 0.1), grayscale_p=0.2``.

    Example::

        >>> t = build_video_transform(train=True, crop_size=112)
        >>> t(torch.zeros(8, 128, 171, 3, dtype=torch.uint8)).shape
        torch.Size([3, 8, 112, 112])
    """
    if crop_size <= 0:
        raise ValueError(f"crop_size must be > 0, got {crop_size}")
    min_scale = int(round(crop_size * 256 / 224)) if min_scale is None else int(min_scale)
    max_scale = int(round(crop_size * 320 / 224)) if max_scale is None else int(max_scale)
    if min_scale < crop_size:
        raise ValueError(f"min_scale={min_scale} is smaller than crop_size={crop_size}")
    steps: List[Transform] = [ToFloatCTHW()]
    if train:
        if random_resized_crop:
            steps.append(RandomResizedCrop(crop_size, scale=rrc_scale, ratio=rrc_ratio, generator=generator))
        else:
            steps.append(RandomShortSideScale(min_scale, max_scale, generator=generator))
            steps.append(RandomCrop(crop_size, generator=generator))
        if flip_p > 0:
            steps.append(RandomHorizontalFlip(flip_p, generator=generator))
        if color_jitter is not None:
            b, c, s, h = color_jitter
            steps.append(ColorJitter(b, c, s, h, p=color_jitter_p, generator=generator))
        if grayscale_p > 0:
            steps.append(RandomGrayscale(grayscale_p, generator=generator))
    else:
        steps.append(ShortSideScale(min_scale))
        if test_crops == 1:
            steps.append(CenterCrop(crop_size))
        elif test_crops == 3:
            steps.append(ThreeCrop(crop_size))
        else:
            raise ValueError(f"test_crops must be 1 or 3, got {test_crops}")
    steps.append(Normalize(mean, std))
    return Compose(steps)
