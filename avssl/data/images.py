"""Image datasets for self-supervised learning on images.

Each item is a dict, like :class:`~avssl.data.VideoDataset`'s::

    {"image": float 3×H×W            (one view),
              float V×3×H×W          (several views of one size, stacked),
              or a list of V float 3×Hv×Wv   (views of different sizes, e.g. multi-crop),
     "label": int (−1 unlabelled), "index": int}

``torch.utils.data.default_collate`` batches all three: ``image`` becomes B×3×H×W, B×V×3×H×W, or a list
of V tensors B×3×Hv×Wv (one per view). :func:`avssl.data.batch.split_views` turns any of them into the list
of per-view batches a multi-view method consumes.

With ``transform=None`` the image is returned as stored, converted to float 3×H×W in [0, 1]
(grayscale repeated onto 3 channels; see :func:`~avssl.data.image_transforms.to_float_image`).

Randomness: item ``i`` draws from a generator seeded by (``seed``, epoch, ``i``) — the epoch set by
``set_epoch`` — as VideoDataset does, so items are reproducible whatever the number of loader workers.
Transforms that accept ``generator=`` receive it; plain callables are called without it.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from avssl.data.batch import split_views
from avssl.data.datasets import TooManyDecodeErrors, _takes_generator, select_rows
from avssl.data.decoding import DecodeError
from avssl.data.image_transforms import ViewsAugment, to_float_image

log = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "TensorImageDataset",
    "ImageFolderDataset",
    "DigitsDataset",
    "VideoFramesDataset",
    "digits",
    "cluttered_digits",
    "ClutteredDigitsDataset",
    "collate_views",
]

#: File extensions taken as images by :class:`ImageFolderDataset` (lower case, with the dot).
IMAGE_EXTENSIONS: Tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp")

# torchvision's decoder handles these; other formats (BMP, TIFF, …) go through PIL.
_TORCHVISION_FORMATS = (".png", ".jpg", ".jpeg", ".webp", ".gif")

ImageTransform = Callable[..., Union[torch.Tensor, Sequence[torch.Tensor]]]


# -- batches -----------------------------------------------------------------------------------
def collate_views(batch: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Collate items into a batch whose ``image`` is always a list of per-view batches B×C×H×W
    (whatever the item layout), ``label`` and ``index`` LongTensors B; other keys as ``default_collate``."""
    from torch.utils.data import default_collate

    out = default_collate([{k: v for k, v in item.items() if k != "image"} for item in batch])
    out["image"] = split_views(default_collate([item["image"] for item in batch]), "image")
    return out


# -- shared item logic -------------------------------------------------------------------------
def _item_image(views: Any) -> Union[torch.Tensor, List[torch.Tensor]]:
    if isinstance(views, torch.Tensor):
        return views
    views = list(views)
    if len(views) == 1:
        return views[0]
    if all(v.shape == views[0].shape for v in views):
        return torch.stack(views)
    return views


class _ImageDataset(Dataset):
    """Seeding, epoch and transform plumbing shared by the image datasets."""

    def __init__(self, transform: Optional[ImageTransform], seed: int) -> None:
        self.transform = transform
        self._transform_g = transform is not None and _takes_generator(transform)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the random draws from one epoch to the next (call before each epoch)."""
        self.epoch = int(epoch)

    def _generator(self, index: int, attempt: int = 0) -> torch.Generator:
        g = torch.Generator()
        # The same mixing as VideoDataset, so (seed, epoch, index, attempt) tuples do not collide.
        g.manual_seed((self.seed * 1_000_003 + self.epoch * 7_919 + index * 104_729 + attempt) % (2**63 - 1))
        return g

    def _apply(self, image: torch.Tensor, g: torch.Generator) -> Union[torch.Tensor, List[torch.Tensor]]:
        if self.transform is None:
            return to_float_image(image)
        out = self.transform(image, generator=g) if self._transform_g else self.transform(image)
        return _item_image(out)


def _as_labels(labels: Any, n: int, who: str, what: str = "labels") -> torch.Tensor:
    if labels is None:
        return torch.full((n,), -1, dtype=torch.long)
    t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"{who}: {what} must be a sequence of {n} ints (one per image), got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{who}: {what} must be integers, got dtype {t.dtype}")
    return t.to(torch.long)


class TensorImageDataset(_ImageDataset):
    """Images held in memory.

    Args:
        images: N×C×H×W (C = 1 or 3) or N×H×W (grayscale), uint8 in [0, 255] or float in [0, 1].
        labels: N class indices, or None (every label −1).
        transform: image C×H×W -> view(s) (see the module docstring); None returns the image as float
            3×H×W in [0, 1].
        seed: seeds the per-item draws (with the index and the epoch of :meth:`set_epoch`).
        groups: optional N group ids marking images that show the same source (e.g. several renderings
            of one digit). With a multi-view transform (:class:`~avssl.data.image_transforms.ViewsAugment`)
            the first view is of the item itself and every other view of a member of its group drawn at
            random, so positives differ by more than the augmentation (as two clips of one video do).
    """

    def __init__(
        self,
        images: Union[torch.Tensor, np.ndarray],
        labels: Optional[Sequence[int]] = None,
        transform: Optional[ImageTransform] = None,
        seed: int = 0,
        groups: Optional[Sequence[int]] = None,
    ) -> None:
        super().__init__(transform, seed)
        who = type(self).__name__
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images))
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"{who}: images must be a tensor N×C×H×W or N×H×W, got {type(images).__name__}")
        if images.ndim == 3:
            images = images.unsqueeze(1)
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"{who}: images must be N×C×H×W with C = 1 or 3, or N×H×W, got shape {tuple(images.shape)}")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise TypeError(f"{who}: images must be uint8 or float, got dtype {images.dtype}")
        self.images = images
        self.targets = _as_labels(labels, images.shape[0], who)
        self.members: Optional[List[torch.Tensor]] = None
        self.group_of: Optional[torch.Tensor] = None
        if groups is not None:
            gid = _as_labels(groups, images.shape[0], who, "groups")
            _, self.group_of = torch.unique(gid, return_inverse=True)
            order = torch.argsort(self.group_of, stable=True)
            counts = torch.bincount(self.group_of).tolist()
            self.members = list(order.split(counts))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def labels(self) -> List[int]:
        return self.targets.tolist()

    def __getitem__(self, index: int) -> Dict[str, Any]:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {type(self).__name__} of {len(self)} images")
        index %= len(self)
        g = self._generator(index)
        if self.members is not None and isinstance(self.transform, ViewsAugment):
            assert self.group_of is not None
            group = self.members[int(self.group_of[index])]
            picks = [index] + group[torch.randint(len(group), (self.transform.num_views - 1,), generator=g)].tolist()
            image: Any = _item_image([self.transform.view(i, self.images[j], g) for i, j in enumerate(picks)])
        else:
            image = self._apply(self.images[index], g)
        return {"image": image, "label": int(self.targets[index]), "index": index}


# -- image folders -----------------------------------------------------------------------------
def _decode_image(path: str) -> torch.Tensor:
    """Decode an image file -> uint8 3×H×W (RGB). Raises DecodeError naming the path."""
    if not os.path.isfile(path):
        raise DecodeError(path, "file not found")
    ext = os.path.splitext(path)[1].lower()
    error = ""
    if ext in _TORCHVISION_FORMATS:
        from torchvision.io import ImageReadMode, decode_image, read_file

        try:
            return decode_image(read_file(path), mode=ImageReadMode.RGB)
        except Exception as e:  # noqa: BLE001 - torchvision raises RuntimeError with the codec's message
            error = str(e)
    try:
        from PIL import Image

        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
    except Exception as e:  # noqa: BLE001 - PIL raises several kinds for unreadable files
        raise DecodeError(path, error or f"{type(e).__name__}: {e}") from None


def _is_image(name: str, extensions: Sequence[str]) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions


class ImageFolderDataset(_ImageDataset):
    """Images in a folder per class: ``root/{class}/**/{image}`` (sorted class names -> labels 0, 1, …).

    Images are decoded at each access (torchvision's decoder for PNG/JPEG, PIL otherwise) as uint8
    3×H×W RGB (grayscale files become RGB) and then transformed.

    A file that fails to decode is logged once with its path, counted, and replaced by another image;
    :class:`~avssl.data.TooManyDecodeErrors` is raised only when failures exceed
    ``max_failure_fraction`` of the images tried (after ``min_failures_before_stop`` failures) or every
    image is bad — VideoDataset's policy.

    Args:
        root: the folder holding one sub-folder per class.
        transform: image -> view(s); None returns float 3×H×W in [0, 1] (sizes may then differ).
        extensions: file endings taken as images (case-insensitive).
        classes: class names in label order (e.g. the training set's, for a validation folder); default
            the sorted sub-folder names of ``root``.
        seed: seeds the per-item draws.

    Raises:
        FileNotFoundError: ``root`` does not exist or is not a folder.
        ValueError: no images with ``extensions`` under ``root``'s class folders.
    """

    def __init__(
        self,
        root: Union[str, os.PathLike],
        transform: Optional[ImageTransform] = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        seed: int = 0,
        *,
        classes: Optional[Sequence[str]] = None,
        max_failure_fraction: float = 0.1,
        min_failures_before_stop: int = 5,
    ) -> None:
        super().__init__(transform, seed)
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"image folder not found: {self.root}")
        exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
        found = sorted(n for n in os.listdir(self.root) if not n.startswith(".") and os.path.isdir(os.path.join(self.root, n)))
        self.classes: List[str] = list(classes) if classes is not None else found
        index = {c: i for i, c in enumerate(self.classes)}
        self.samples: List[Tuple[str, int]] = []
        for c in found:
            if c not in index:
                log.warning("%s: class folder %r is not among the given classes; skipped", self.root, c)
                continue
            files: List[str] = []
            for dirpath, dirnames, filenames in os.walk(os.path.join(self.root, c), followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if _is_image(f, exts))
            if not files:
                log.warning("%s: class folder %r holds no images (%s)", self.root, c, ", ".join(exts))
            self.samples.extend((f, index[c]) for f in files)
        if not self.samples:
            raise ValueError(
                f"no images found in {self.root}: expected {{class}}/*{{{','.join(exts)}}} "
                f"(one sub-folder per class), found {len(found)} class folders"
            )
        self.max_failure_fraction = float(max_failure_fraction)
        self.min_failures_before_stop = int(min_failures_before_stop)
        self._tried = 0
        self._failed = 0
        self._bad: set = set()

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> List[int]:
        return [label for _, label in self.samples]

    @property
    def num_failures(self) -> int:
        """Images that failed to decode so far (in this process)."""
        return self._failed

    def __getitem__(self, index: int) -> Dict[str, Any]:
        index = int(index)
        n = len(self.samples)
        attempt = 0
        current = index
        while True:
            self._tried += 1
            path, label = self.samples[current]
            try:
                if current in self._bad:
                    raise DecodeError(path, "failed before")
                image = _decode_image(path)
                g = self._generator(index, attempt)
                return {"image": self._apply(image, g), "label": label, "index": current}
            except DecodeError as e:
                if current not in self._bad:
                    self._bad.add(current)
                    log.warning("skipping unreadable image %d (%s): %s", current, e.path, e.reason)
                self._failed += 1
                if len(self._bad) >= n or (
                    self._failed >= self.min_failures_before_stop
                    and self._failed > self.max_failure_fraction * self._tried
                ):
                    raise TooManyDecodeErrors(
                        f"{len(self._bad)} unreadable images under {self.root}; {self._failed} of {self._tried} "
                        f"images tried failed (more than max_failure_fraction={self.max_failure_fraction}). "
                        f"Last: {e}"
                    ) from None
                attempt += 1
                current = int(torch.randint(n, (1,), generator=self._generator(index, attempt)))


# -- handwritten digits ------------------------------------------------------------------------
def _stratified_test_mask(labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the test items: round(n_c · test_fraction) random items of each class c."""
    g = torch.Generator().manual_seed(int(seed))
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = int(round(len(members) * test_fraction))
        pick = torch.randperm(len(members), generator=g)[:k].numpy()
        mask[members[pick]] = True
    return mask


def digits(
    split: str = "train", size: int = 32, seed: int = 0, test_fraction: float = 0.25
) -> Tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled handwritten digits (1,797 images 8×8, 10 classes; no download).

    The 8×8 images (values 0..16) are upscaled to ``size``×``size`` bilinearly (``align_corners=False``)
    and scaled to 0..255 (×255/16, rounded). The train/test split is stratified: in each class,
    ``round(n_c · test_fraction)`` images chosen by ``seed`` form the test split; both splits keep
    scikit-learn's order.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.

    Returns:
        (images uint8 N×1×size×size, labels int64 N).
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if int(size) <= 0:
        raise ValueError(f"size must be > 0, got {size}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    raw = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32)).unsqueeze(1)  # N×1×8×8, 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    if split != "all":
        test = _stratified_test_mask(labels, test_fraction, seed)
        keep = np.flatnonzero(test if split == "test" else ~test)
        raw, labels = raw[torch.from_numpy(keep)], labels[keep]
    size = int(size)
    if size != raw.shape[-1]:
        raw = F.interpolate(raw, size=(size, size), mode="bilinear", align_corners=False,
                            antialias=size < raw.shape[-1])
    images = (raw * (255.0 / 16.0)).round_().clamp_(0, 255).to(torch.uint8)
    return images, torch.from_numpy(labels)


class DigitsDataset(TensorImageDataset):
    """:func:`digits` as a :class:`TensorImageDataset` (images 1×size×size uint8; transforms repeat
    them onto 3 channels). ``split_seed`` picks the train/test split, ``seed`` the per-item draws."""

    def __init__(
        self,
        split: str = "train",
        size: int = 32,
        transform: Optional[ImageTransform] = None,
        seed: int = 0,
        *,
        split_seed: int = 0,
        test_fraction: float = 0.25,
    ) -> None:
        images, labels = digits(split, size=size, seed=split_seed, test_fraction=test_fraction)
        super().__init__(images, labels, transform=transform, seed=seed)
        self.split = split
        self.classes: List[str] = [str(d) for d in range(10)]


def cluttered_digits(
    split: str = "train", size: int = 32, seed: int = 0, test_fraction: float = 0.25, copies: int = 1,
    distractors: int = 2, scale: Tuple[float, float] = (0.45, 0.75),
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The handwritten digits made hard for a random encoder: colour, position, scale and clutter vary.

    Each source digit of :func:`digits`' split (same stratified split) is rendered ``copies`` times onto
    a ``size``×``size`` RGB canvas: a background of a random two-colour linear gradient plus pixel noise;
    the digit, scaled to ``scale`` (45–75 %) of the canvas, at a random position, in a random colour far from the
    background's; and ``distractors`` (2) distractor strokes (random 4×4 pieces of other digits, enlarged, in other
    colours). Rendering is deterministic per (seed, split, source index, copy).

    Returns:
        (images uint8 N×3×size×size, labels int64 N) with N = copies × the split's digits.
    """
    if int(copies) < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    src, labels = digits(split, size=8, seed=seed, test_fraction=test_fraction)  # N×1×8×8, 0..255
    pool, _ = digits("all", size=8)
    src_f, pool_f = src.float() / 255.0, pool.float() / 255.0
    n, size = src.shape[0], int(size)
    out = torch.empty(n * copies, 3, size, size, dtype=torch.uint8)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    split_id = {"train": 1, "test": 2, "all": 3}[split]
    for c in range(copies):
        for i in range(n):
            rng = np.random.default_rng([int(seed), split_id, i, c])
            c0, c1 = torch.from_numpy(rng.uniform(0, 1, 3)).float(), torch.from_numpy(rng.uniform(0, 1, 3)).float()
            ang = rng.uniform(0, 2 * np.pi)
            ramp = (np.cos(ang) * xx + np.sin(ang) * yy)
            ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min() + 1e-6)
            canvas = c0[:, None, None] * (1 - ramp) + c1[:, None, None] * ramp
            canvas = canvas + torch.from_numpy(rng.normal(0, 0.04, (3, size, size))).float()
            bg_mean = 0.5 * (c0 + c1)

            def far_colour() -> torch.Tensor:
                best, best_d = None, -1.0
                for _ in range(8):
                    col = torch.from_numpy(rng.uniform(0, 1, 3)).float()
                    d = float((col - bg_mean).abs().sum())
                    if d > best_d:
                        best, best_d = col, d
                return best

            def paste(glyph: torch.Tensor, side: int, colour: torch.Tensor) -> None:
                g = F.interpolate(glyph[None], size=(side, side), mode="bilinear", align_corners=False)[0, 0]
                top, left = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
                alpha = g.clamp(0, 1)[None]
                region = canvas[:, top:top + side, left:left + side]
                canvas[:, top:top + side, left:left + side] = region * (1 - alpha) + colour[:, None, None] * alpha

            for _ in range(int(distractors)):  # distractor strokes first: the digit is drawn over them
                other = pool_f[int(rng.integers(0, len(pool_f)))]
                oy, ox = int(rng.integers(0, 5)), int(rng.integers(0, 5))
                paste(other[:, oy:oy + 4, ox:ox + 4], int(size * rng.uniform(0.25, 0.4)), far_colour())
            paste(src_f[i], int(size * rng.uniform(*scale)), far_colour())
            out[c * n + i] = (canvas.clamp(0, 1) * 255).round().to(torch.uint8)
    return out, labels.repeat(copies)


class ClutteredDigitsDataset(TensorImageDataset):
    """:func:`cluttered_digits` as a :class:`TensorImageDataset` (RGB images 3×size×size uint8).

    ``group_copies``: the ``copies`` renderings of one digit form a group (see :class:`TensorImageDataset`),
    so a multi-view transform takes its views from different renderings of the digit.
    """

    def __init__(self, split: str = "train", size: int = 32, transform: Optional[ImageTransform] = None,
                 seed: int = 0, *, split_seed: int = 0, copies: int = 1, distractors: int = 2,
                 scale: Tuple[float, float] = (0.45, 0.75), group_copies: bool = False) -> None:
        images, labels = cluttered_digits(split, size=size, seed=split_seed, copies=copies, distractors=distractors,
                                          scale=scale)
        groups = torch.arange(len(labels) // copies).repeat(copies) if group_copies else None
        super().__init__(images, labels, transform=transform, seed=seed, groups=groups)
        self.split = split
        self.classes: List[str] = [str(d) for d in range(10)]


# -- frames of videos --------------------------------------------------------------------------
def _square_frames(frames: torch.Tensor, size: Optional[int]) -> torch.Tensor:
    """uint8 T×H×W×3 -> uint8 T×3×h×w: short side to ``size`` (antialiased), then a centre ``size`` square."""
    x = frames.permute(0, 3, 1, 2)
    if size is None:
        return x.contiguous()
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, int(math.floor(h * scale))), max(size, int(math.floor(w * scale)))
    if (nh, nw) != (h, w):
        y = F.interpolate(x.float(), size=(nh, nw), mode="bilinear", align_corners=False, antialias=nh < h or nw < w)
        x = y.round_().clamp_(0, 255).to(torch.uint8)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[:, :, top : top + size, left : left + size].contiguous()


class VideoFramesDataset(TensorImageDataset):
    """Frames of a video corpus as an image dataset.

    ``frames_per_video`` frames, uniformly spaced in time (the centres of equal bins), are decoded from
    every video once, at construction, and kept in memory as uint8 N×3×size×size (short side scaled
    to ``size``, centre square); each frame carries its video's label.

    Args:
        source: anything :func:`avssl.data.load_rows` reads — an ``avssl prep`` manifest.csv, a
            folder-per-class tree, a Kinetics CSV (with ``video_root``), UCF/HMDB split files.
        split: keep only rows of this split, when rows carry one (None: all rows).
        frames_per_video: frames taken from each video.
        size: frame side after resizing; None keeps the decoded size (every video must then share it).
        transform, seed: as :class:`TensorImageDataset`.
        video_root: where the videos of a CSV or split file live.
        max_failure_fraction: videos that fail to decode are skipped with a warning; more than this
            fraction failing raises :class:`~avssl.data.TooManyDecodeErrors`.
        progress: show a progress bar while decoding (default: when there are more than 200 videos).

    Attributes:
        video_of: LongTensor N, the row (in :attr:`rows`) each frame was taken from.
        rows: the corpus rows that were decoded.
    """

    def __init__(
        self,
        source: Any,
        split: Optional[str] = None,
        frames_per_video: int = 4,
        size: Optional[int] = 64,
        transform: Optional[ImageTransform] = None,
        seed: int = 0,
        *,
        video_root: Optional[str] = None,
        max_failure_fraction: float = 0.1,
        backend: str = "decord",
        progress: Optional[bool] = None,
    ) -> None:
        from avssl.data.decoding import probe, read_clip

        if frames_per_video < 1:
            raise ValueError(f"frames_per_video must be >= 1, got {frames_per_video}")
        if size is not None and int(size) <= 0:
            raise ValueError(f"size must be > 0, got {size}")
        rows = select_rows(source, video_root, split)
        show = len(rows) > 200 if progress is None else progress
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        chunks: List[torch.Tensor] = []
        labels: List[int] = []
        video_of: List[int] = []
        kept = []
        failed = 0
        with Progress(TextColumn("[bold]frames"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      disable=not show, transient=True) as bar:
            task = bar.add_task("frames", total=len(rows))
            for row in rows:
                start, end = row.window_in_path()
                offset = float(start or 0.0)
                try:
                    if row.duration is not None and row.fps is not None and start is None:
                        # Prepared rows carry their probe; their files start at time 0.
                        info = {"duration": row.duration, "fps": row.fps, "has_audio": False, "start_time": 0.0}
                    else:
                        info = probe(row.path)
                    duration = float(info["duration"]) - offset
                    if end is not None:
                        duration = min(duration, float(end) - offset)
                    clip = read_clip(row.path, start=offset, duration=max(duration, 0.0), num_frames=frames_per_video,
                                     audio=False, backend=backend, info=info)
                except DecodeError as e:
                    failed += 1
                    log.warning("skipping unreadable video %s: %s", e.path, e.reason)
                    bar.advance(task)
                    continue
                frames = _square_frames(clip.video, None if size is None else int(size))
                if chunks and frames.shape[1:] != chunks[0].shape[1:]:
                    raise ValueError(
                        f"{row.path}: frames are {tuple(frames.shape[-2:])} but earlier ones {tuple(chunks[0].shape[-2:])}; "
                        "pass size= to resize every video to one size"
                    )
                chunks.append(frames)
                labels.extend([int(row.label_index if row.label_index is not None else -1)] * frames.shape[0])
                video_of.extend([len(kept)] * frames.shape[0])
                kept.append(row)
                bar.advance(task)
        if not kept or failed > max_failure_fraction * len(rows):
            raise TooManyDecodeErrors(
                f"{failed} of {len(rows)} videos in {source!r} could not be decoded "
                f"(more than max_failure_fraction={max_failure_fraction})"
            )
        super().__init__(torch.cat(chunks), labels, transform=transform, seed=seed)
        self.rows = kept
        self.video_of = torch.tensor(video_of, dtype=torch.long)
        self.frames_per_video = int(frames_per_video)
        self.classes = sorted({r.label for r in kept if r.label})
