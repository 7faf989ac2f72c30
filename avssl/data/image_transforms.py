"""Image augmentations for self-supervised learning on images (SimCLR, BYOL, Barlow Twins, SwAV, MoCo,
SimSiam, VICReg).

Input: one image as a tensor (or numpy array), uint8 in [0, 255] or float in [0, 1], laid out as

* C×H×W with C = 1 or 3 (recognised first: a leading dimension of 1 or 3 means channels first),
* H×W×C with C = 1 or 3 (channels last, as decoders and PIL give them), or
* H×W (grayscale).

:func:`to_float_image` turns any of these into float32 3×H×W in [0, 1]; single-channel images (e.g.
handwritten digits) are repeated onto 3 channels so that every encoder sees RGB.

Output: float32 3×size×size, normalised with ``mean``/``std`` (ImageNet statistics by default). A
multi-view augment (:class:`ViewsAugment`, :class:`MultiCropAugment`) returns a list of such tensors.

Randomness: every random augment takes ``generator=`` in its call (None = torch's global RNG) and makes
the same number of draws whatever its coin flips decide, so one seeded generator makes a whole
pipeline, and each view of a multi-view augment, reproducible. The colour operations, crop window
rule and resizing are those of :mod:`avssl.data.transforms` (run on a 1-frame clip), so images and
videos are augmented by one definition.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from avssl.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCrop,
    ColorJitter,
    RandomResizedCrop,
    ShortSideScale,
    Transform,
    apply_color_jitter,
    resize,
    rgb_to_grayscale,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "to_float_image",
    "gaussian_blur",
    "solarize",
    "blur_kernel_size",
    "AugmentParams",
    "SimCLRAugment",
    "ViewsAugment",
    "TwoViewAugment",
    "MultiCropAugment",
    "EvalImageTransform",
    "simclr_augment",
    "byol_augment",
    "build_image_augment",
    "available_image_augments",
]

Image = torch.Tensor


# -- conversion --------------------------------------------------------------------------------
def to_float_image(x: Any) -> Image:
    """An image (layouts in the module docstring) -> float32 3×H×W in [0, 1].

    uint8 is divided by 255; float is taken to be in [0, 1] already. One channel is repeated to three.

    Example::

        >>> to_float_image(torch.full((8, 8), 255, dtype=torch.uint8)).shape
        torch.Size([3, 8, 8])
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected an image tensor (C×H×W, H×W×C or H×W), got {type(x).__name__}")
    if x.ndim == 2:
        x = x.unsqueeze(0)
    elif x.ndim == 3:
        if x.shape[0] not in (1, 3):
            if x.shape[-1] not in (1, 3):
                raise ValueError(f"expected an image with 1 or 3 channels (C×H×W or H×W×C), got shape {tuple(x.shape)}")
            x = x.permute(2, 0, 1)
    else:
        raise ValueError(f"expected an image tensor C×H×W, H×W×C or H×W, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        x = x.to(torch.float32).div_(255.0)
    elif x.is_floating_point():
        x = x.to(torch.float32)
    else:
        raise TypeError(f"expected a uint8 or float image, got dtype {x.dtype}")
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return x.contiguous()


# -- single operations -------------------------------------------------------------------------
def blur_kernel_size(size: int) -> int:
    """The Gaussian blur kernel for ``size``-pixel views: about 10% of the side, odd, at least 3
    (23 for 224, as BYOL; 3 for 32)."""
    return max(3, int(0.1 * size) | 1)


def gaussian_blur(x: Image, kernel_size: int, sigma: float) -> Image:
    """Blur C×H×W (or C×…×H×W) with a ``kernel_size`` Gaussian of std ``sigma`` pixels (separable;
    borders reflected, or replicated when the image is smaller than the kernel's half-width)."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"gaussian_blur: kernel_size must be odd and positive, got {kernel_size}")
    if sigma <= 0:
        raise ValueError(f"gaussian_blur: sigma must be > 0, got {sigma}")
    shape = x.shape
    h, w = shape[-2], shape[-1]
    half = kernel_size // 2
    t = torch.arange(kernel_size, dtype=x.dtype, device=x.device) - half
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    planes = x.reshape(-1, 1, h, w)
    mode = "reflect" if half < min(h, w) else "replicate"
    planes = F.pad(planes, (half, half, half, half), mode=mode)
    planes = F.conv2d(planes, k.view(1, 1, 1, -1))
    planes = F.conv2d(planes, k.view(1, 1, -1, 1))
    return planes.reshape(shape)


def solarize(x: Image, threshold: float = 0.5) -> Image:
    """Invert the pixels at or above ``threshold``: ``x >= t ? 1 − x : x`` (values in [0, 1])."""
    return torch.where(x >= threshold, 1.0 - x, x)


def _normalize(x: Image, mean: Tuple[float, ...], std: Tuple[float, ...]) -> Image:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x - m) / s


def _check_stats(mean: Sequence[float], std: Sequence[float], who: str) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"{who}: mean and std need 3 entries (images are RGB), got {tuple(mean)}, {tuple(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"{who}: std must be > 0, got {tuple(std)}")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _check_p(p: float, name: str, who: str) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{who}: {name} must be in [0, 1], got {p}")
    return float(p)


def _rand(g: Optional[torch.Generator]) -> float:
    return float(torch.rand((), generator=g, dtype=torch.float64))


# -- the SimCLR / BYOL augmentation ------------------------------------------------------------
@dataclass
class AugmentParams:
    """The random draws of one :class:`SimCLRAugment` view.

    crop: (top, left, height, width) window in the input; flip: mirrored left-right; jitter: (order of
    the 4 ops, brightness, contrast, saturation, hue) or None when not applied; grayscale: made gray;
    blur_sigma: the blur's std in pixels, or None when not blurred; solarize: solarized.
    """

    crop: Tuple[int, int, int, int]
    flip: bool
    jitter: Optional[Tuple[List[int], float, float, float, float]]
    grayscale: bool
    blur_sigma: Optional[float]
    solarize: bool


class SimCLRAugment(Transform):
    """One view of SimCLR/BYOL-style augmentation: image -> float 3×size×size.

    In order: random resized crop (area fraction in [min_scale, max_scale], aspect ratio w/h
    log-uniform in [3/4, 4/3], resized to ``size`` bilinearly, antialiased when shrinking) ->
    horizontal flip (p = 0.5 when ``flip``) -> colour jitter with probability ``jitter_prob``
    (brightness, contrast, saturation, hue = ``jitter`` × ``jitter_strength``, applied in a random
    order) -> grayscale (p = ``grayscale_prob``) -> Gaussian blur (p = ``blur_prob``; kernel
    :func:`blur_kernel_size` (size), sigma uniform in ``blur_sigma``) -> solarize (p = ``solarize_prob``,
    threshold 0.5) -> normalise with ``mean``/``std``.

    ``jitter`` defaults to (0.4, 0.4, 0.4, 0.1), the usual SimCLR setting (BYOL uses saturation 0.2:
    see :func:`byol_augment`); the SimCLR paper's strength s corresponds to
    ``jitter=(0.8, 0.8, 0.8, 0.2), jitter_strength=s``.

    :meth:`sample` draws the parameters of one view and :meth:`apply` applies them; ``__call__`` does
    both. Every call makes the same number of draws from the generator.

    Example::

        >>> aug = SimCLRAugment(32)
        >>> aug(torch.zeros(3, 40, 48, dtype=torch.uint8), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([3, 32, 32])
    """

    def __init__(
        self,
        size: int,
        min_scale: float = 0.08,
        jitter_strength: float = 1.0,
        jitter_prob: float = 0.8,
        grayscale_prob: float = 0.2,
        blur_prob: float = 0.5,
        solarize_prob: float = 0.0,
        flip: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        *,
        max_scale: float = 1.0,
        ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        jitter: Tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
        blur_sigma: Tuple[float, float] = (0.1, 2.0),
        solarize_threshold: float = 0.5,
    ) -> None:
        who = "SimCLRAugment"
        if int(size) <= 0:
            raise ValueError(f"{who}: size must be > 0, got {size}")
        if not 0 < min_scale <= max_scale <= 1.0:
            raise ValueError(f"{who}: need 0 < min_scale <= max_scale <= 1, got {min_scale}, {max_scale}")
        if jitter_strength < 0:
            raise ValueError(f"{who}: jitter_strength must be >= 0, got {jitter_strength}")
        if not 0 < blur_sigma[0] <= blur_sigma[1]:
            raise ValueError(f"{who}: need 0 < blur_sigma[0] <= blur_sigma[1], got {blur_sigma}")
        self.size = int(size)
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.jitter = tuple(float(v) * float(jitter_strength) for v in jitter)
        self.jitter_prob = _check_p(jitter_prob, "jitter_prob", who)
        self.grayscale_prob = _check_p(grayscale_prob, "grayscale_prob", who)
        self.blur_prob = _check_p(blur_prob, "blur_prob", who)
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))
        self.blur_kernel = blur_kernel_size(self.size)
        self.solarize_prob = _check_p(solarize_prob, "solarize_prob", who)
        self.solarize_threshold = float(solarize_threshold)
        self.flip = bool(flip)
        self.mean, self.std = _check_stats(mean, std, who)
        # The video transforms own the window rule and the jitter draws; images reuse them.
        self._crop = RandomResizedCrop(self.size, scale=(self.min_scale, self.max_scale), ratio=self.ratio)
        b, c, s, h = self.jitter
        self._jitter = ColorJitter(b, c, s, h, p=self.jitter_prob)

    def sample(self, height: int, width: int, generator: Optional[torch.Generator] = None) -> AugmentParams:
        """The random draws for one view of a ``height``×``width`` image."""
        g = generator
        crop = self._crop.window(height, width, g)
        flip = _rand(g) < 0.5
        jitter = self._jitter.sample(g)
        gray = _rand(g) < self.grayscale_prob
        blur = _rand(g) < self.blur_prob
        sigma = self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * _rand(g)
        sol = _rand(g) < self.solarize_prob
        return AugmentParams(
            crop=crop, flip=self.flip and flip, jitter=jitter, grayscale=gray, blur_sigma=sigma if blur else None,
            solarize=sol,
        )

    def apply(self, x: Any, params: AugmentParams) -> Image:
        """Apply drawn parameters to an image -> normalised float 3×size×size."""
        x = to_float_image(x)
        top, left, h, w = params.crop
        x = x[:, top : top + h, left : left + w]
        x = resize(x.unsqueeze(1), (self.size, self.size)).squeeze(1)
        if params.flip:
            x = x.flip(-1)
        if params.jitter is not None:
            x = apply_color_jitter(x, params.jitter)
        if params.grayscale:
            x = rgb_to_grayscale(x).expand(3, -1, -1)
        if params.blur_sigma is not None:
            x = gaussian_blur(x, self.blur_kernel, params.blur_sigma)
        if params.solarize:
            x = solarize(x, self.solarize_threshold)
        return _normalize(x, self.mean, self.std).contiguous()

    def __call__(self, x: Any, generator: Optional[torch.Generator] = None) -> Image:
        x = to_float_image(x)
        return self.apply(x, self.sample(x.shape[-2], x.shape[-1], generator))


# -- several views -----------------------------------------------------------------------------
def _call(aug: Callable[..., Any], x: Any, g: Optional[torch.Generator]) -> Any:
    return aug(x, generator=g) if isinstance(aug, Transform) else aug(x)


class ViewsAugment(Transform):
    """Several views of one image: ``[aug_1(x), aug_2(x), …]``, each a float C×H×W tensor.

    The call's generator goes to every augment in turn, so views are distinct draws and the whole list
    is reproducible from one seeded generator. The image is converted once by :func:`to_float_image`,
    so every augment receives float 3×H×W in [0, 1]; plain callables (``x -> view``) may be mixed in.
    """

    def __init__(self, augments: Sequence[Callable[..., Any]]) -> None:
        if len(augments) == 0:
            raise ValueError("ViewsAugment: needs at least one augment")
        self.augments = list(augments)

    @property
    def num_views(self) -> int:
        return len(self.augments)

    def __call__(self, x: Any, generator: Optional[torch.Generator] = None) -> List[Image]:
        x = to_float_image(x)  # once, not per view
        return [_call(a, x, generator) for a in self.augments]

    def view(self, i: int, x: Any, generator: Optional[torch.Generator] = None) -> Image:
        """View ``i`` alone, of ``x`` (datasets whose views come from different images of one source)."""
        return _call(self.augments[i], to_float_image(x), generator)

    def __repr__(self) -> str:
        inner = "".join(f"\n  {a!r}," for a in self.augments)
        return f"{type(self).__name__}([{inner}\n])"


class TwoViewAugment(ViewsAugment):
    """Two views: ``[aug1(x), aug2(x)]``; ``aug2`` defaults to ``aug1`` (two independent draws)."""

    def __init__(self, aug1: Callable[..., Any], aug2: Optional[Callable[..., Any]] = None) -> None:
        super().__init__([aug1, aug2 if aug2 is not None else aug1])


class MultiCropAugment(ViewsAugment):
    """SwAV's multi-crop: ``num_global`` views at ``global_size`` (area fraction in ``global_scale``)
    followed by ``num_local`` views at ``local_size`` (area fraction in ``local_scale``).

    Each view is a :class:`SimCLRAugment` with SwAV's colour distortion (jitter with p = 0.8, grayscale
    0.2, blur ``blur_prob``, no solarisation); ``jitter_strength`` scales (0.4, 0.4, 0.4, 0.1) as there.
    Returns a list of ``num_global + num_local`` tensors, the global ones first.
    """

    def __init__(
        self,
        global_size: int,
        local_size: int,
        num_global: int = 2,
        num_local: int = 6,
        global_scale: Tuple[float, float] = (0.14, 1.0),
        local_scale: Tuple[float, float] = (0.05, 0.14),
        *,
        jitter_strength: float = 1.0,
        blur_prob: float = 0.5,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if num_global < 1 or num_local < 0:
            raise ValueError(f"MultiCropAugment: need num_global >= 1 and num_local >= 0, got {num_global}, {num_local}")
        kw = dict(jitter_strength=jitter_strength, blur_prob=blur_prob, mean=mean, std=std)
        self.global_aug = SimCLRAugment(global_size, min_scale=global_scale[0], max_scale=global_scale[1], **kw)
        self.local_aug = SimCLRAugment(local_size, min_scale=local_scale[0], max_scale=local_scale[1], **kw)
        self.num_global, self.num_local = int(num_global), int(num_local)
        super().__init__([self.global_aug] * self.num_global + [self.local_aug] * self.num_local)

    @property
    def sizes(self) -> List[int]:
        """The side of each view, in output order."""
        return [self.global_aug.size] * self.num_global + [self.local_aug.size] * self.num_local


# -- evaluation --------------------------------------------------------------------------------
class EvalImageTransform(Transform):
    """Deterministic view for linear probes / kNN: resize the short side to ``round(size / crop_fraction)``
    (aspect kept), centre crop ``size``, normalise -> float 3×size×size.

    ``crop_fraction`` 0.875 is the usual 256 -> 224 resize-and-crop; 1.0 keeps the whole (square) image.
    """

    def __init__(
        self,
        size: int,
        crop_fraction: float = 0.875,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if int(size) <= 0:
            raise ValueError(f"EvalImageTransform: size must be > 0, got {size}")
        if not 0 < crop_fraction <= 1:
            raise ValueError(f"EvalImageTransform: crop_fraction must be in (0, 1], got {crop_fraction}")
        self.size = int(size)
        self.crop_fraction = float(crop_fraction)
        self.resize_size = max(self.size, int(round(self.size / self.crop_fraction)))
        self.mean, self.std = _check_stats(mean, std, "EvalImageTransform")
        self._scale = ShortSideScale(self.resize_size)
        self._centre = CenterCrop(self.size)

    def __call__(self, x: Any, generator: Optional[torch.Generator] = None) -> Image:
        clip = to_float_image(x).unsqueeze(1)  # C×1×H×W: the video ops run on a 1-frame clip
        clip = self._centre(self._scale(clip))
        return _normalize(clip.squeeze(1), self.mean, self.std).contiguous()


# -- standard recipes --------------------------------------------------------------------------
def simclr_augment(size: int, **overrides: Any) -> SimCLRAugment:
    """SimCLR's augmentation (the same for both views): crop scale (0.08, 1), jitter (0.4, 0.4, 0.4, 0.1)
    with p = 0.8, grayscale 0.2, blur 0.5, no solarisation. Wrap in :class:`TwoViewAugment` for pairs."""
    return SimCLRAugment(size, **overrides)


_BYOL_COMMON = dict(jitter=(0.4, 0.4, 0.2, 0.1), jitter_prob=0.8, grayscale_prob=0.2)


def byol_augment(size: int, **overrides: Any) -> Tuple[SimCLRAugment, SimCLRAugment]:
    """BYOL's asymmetric pair (also Barlow Twins' and VICReg's): jitter (0.4, 0.4, 0.2, 0.1) with
    p = 0.8 and grayscale 0.2 in both; blur p = 1.0 / 0.1 and solarize p = 0.0 / 0.2 for view 1 / view 2.

    Returns ``(view1_augment, view2_augment)``; ``overrides`` go to both.
    """
    kw = {**_BYOL_COMMON, **overrides}
    v1 = SimCLRAugment(size, **{"blur_prob": 1.0, "solarize_prob": 0.0, **kw})
    v2 = SimCLRAugment(size, **{"blur_prob": 0.1, "solarize_prob": 0.2, **kw})
    return v1, v2


def _symmetric(min_scale: float) -> Callable[..., ViewsAugment]:
    def build(size: int, **kw: Any) -> ViewsAugment:
        return TwoViewAugment(SimCLRAugment(size, **{"min_scale": min_scale, **kw}))

    return build


def _byol_views(size: int, **kw: Any) -> ViewsAugment:
    return TwoViewAugment(*byol_augment(size, **kw))


def _swav_views(size: int, **kw: Any) -> ViewsAugment:
    local = kw.pop("local_size", max(1, int(round(size * 96 / 224))))
    return MultiCropAugment(size, local, **kw)


# name -> builder(size, **overrides) -> ViewsAugment
_RECIPES: dict = {
    "simclr": _symmetric(0.08),
    "moco": _symmetric(0.2),  # MoCo v2: SimCLR's augmentation with crops of at least 20% of the area
    "simsiam": _symmetric(0.2),
    "byol": _byol_views,
    "barlow_twins": _byol_views,
    "vicreg": _byol_views,
    "swav": _swav_views,
}


def available_image_augments() -> List[str]:
    """Names accepted by :func:`build_image_augment`."""
    return sorted(_RECIPES)


def build_image_augment(name: str, size: int, **overrides: Any) -> ViewsAugment:
    """The multi-view augmentation a method trains with, by method name.

    * ``simclr``: two SimCLR views; ``moco``, ``simsiam``: the same with ``min_scale=0.2``;
    * ``byol``, ``barlow_twins``, ``vicreg``: BYOL's asymmetric pair (:func:`byol_augment`);
    * ``swav``: :class:`MultiCropAugment` (2 × ``size`` + 6 × ``local_size``, default 96/224 of ``size``).

    ``overrides`` go to the view augments (e.g. ``min_scale``, ``mean``, ``std``; ``local_size``,
    ``num_local`` for ``swav``).

    Raises:
        KeyError: an unknown name (the message lists the known ones).
    """
    key = name.lower()
    if key not in _RECIPES:
        raise KeyError(f"unknown image augmentation {name!r}; known: {', '.join(available_image_augments())}")
    return _RECIPES[key](size, **overrides)
