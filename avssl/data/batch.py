"""The batch contract: what one sample of each modality looks like, and how views sit in a batch.

Every batch is a dict ``{modality: tensor, "label": B, "index": B, ...}``. A *sample* of a modality has a
fixed number of dims; a batch adds B in front, and several views of each sample (two augmentations,
K test clips × S crops) add a view axis after B:

=========== ================= ===================== ==============================
modality    one sample        a batch               a batch with views
=========== ================= ===================== ==============================
``video``   C×T×H×W (4 dims)  B×C×T×H×W             B×V×C×T×H×W
``audio``   1×F×T' (3 dims)   B×1×F×T' (log-mel)    B×V×1×F×T'
``image``   C×H×W (3 dims)    B×C×H×W               B×V×C×H×W, or a list of V
                                                    tensors B×C×Hv×Wv (multi-crop)
=========== ================= ===================== ==============================

Views are clip-major for test views (view v = clip v // S, crop v % S). Every check of a batch's layout in
avssl goes through the functions here, so errors name the expected layout the same way everywhere.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, Union

import torch

#: Dims of one sample of each modality (no batch axis, no view axis).
SAMPLE_NDIM: Dict[str, int] = {"video": 4, "audio": 3, "image": 3}
#: The layout of one sample, as error messages name it.
SAMPLE_LAYOUT: Dict[str, str] = {"video": "C×T×H×W", "audio": "1×F×T'", "image": "C×H×W"}

#: A batch entry: one tensor (with or without a view axis), or a list of per-view tensors (multi-crop).
Views = Union[torch.Tensor, Sequence[torch.Tensor]]


def modalities() -> List[str]:
    """The modalities a batch can hold."""
    return list(SAMPLE_NDIM)


#: A modality name, or (for a batch entry outside the contract) the number of dims of one of its samples.
Modality = Union[str, int]


def sample_ndim(modality: Modality) -> int:
    """Dims of one sample of ``modality`` (video 4, audio 3, image 3; an int is taken as that number of dims);
    ValueError naming the known modalities."""
    if isinstance(modality, int) and not isinstance(modality, bool) and modality >= 0:
        return modality
    if modality not in SAMPLE_NDIM:
        raise ValueError(f"unknown modality {modality!r}; choose one of {', '.join(SAMPLE_NDIM)}")
    return SAMPLE_NDIM[modality]


def layout(modality: Modality, views: bool = False) -> str:
    """The layout of a batch of ``modality`` as text: ``B×C×T×H×W``, or ``B×V×C×T×H×W`` with ``views``."""
    n = sample_ndim(modality)
    sample = SAMPLE_LAYOUT[modality] if isinstance(modality, str) else "×".join(["…"] * n) if n else "()"
    return ("B×V×" if views else "B×") + sample


def is_batch(x: object, modality: Modality) -> bool:
    """Whether ``x`` is a tensor laid out as a batch of ``modality`` samples without a view axis."""
    return isinstance(x, torch.Tensor) and x.dim() == sample_ndim(modality) + 1


def _shape(x: object) -> object:
    if isinstance(x, torch.Tensor):
        return tuple(x.shape)
    if isinstance(x, (list, tuple)):
        return f"a list of {len(x)} views"
    return type(x).__name__


def _subject(who: str, modality: Modality) -> str:
    return who or (f"a {modality} batch" if isinstance(modality, str) else "the batch entry")


def _bad_layout(x: object, modality: Modality, who: str) -> ValueError:
    return ValueError(f"{_subject(who, modality)} must be {layout(modality)} or, with views, "
                      f"{layout(modality, True)}; got {_shape(x)}")


def has_views(x: Views, modality: Modality, who: str = "") -> bool:
    """Whether ``x`` carries a view axis (B×V×sample, or a list of views); ValueError for any other layout.

    ``who`` names ``x`` in the error message (e.g. ``"simclr: batch['image']"``; default: ``"a video batch"``).
    """
    if isinstance(x, (list, tuple)):
        return True
    n = sample_ndim(modality)
    if isinstance(x, torch.Tensor) and x.dim() == n + 2:
        return True
    if isinstance(x, torch.Tensor) and x.dim() == n + 1:
        return False
    raise _bad_layout(x, modality, who)


def split_views(x: Views, modality: Modality, who: str = "") -> List[torch.Tensor]:
    """``x`` -> its V per-view batches (each B×sample); a batch without a view axis is one view.

    A list of views may differ in size between views (multi-crop) but not in batch size or dims.
    """
    if not has_views(x, modality, who):
        return [x]  # type: ignore[list-item]
    views = list(x.unbind(1)) if isinstance(x, torch.Tensor) else list(x)
    for i, v in enumerate(views):
        if not is_batch(v, modality) or v.shape[0] != views[0].shape[0]:
            raise ValueError(f"{_subject(who, modality)}: view {i} has shape {_shape(v)}; every view must be "
                             f"{layout(modality)} with the batch size of view 0 ({_shape(views[0])})")
    return views


def flatten_views(x: torch.Tensor, modality: Modality, who: str = "") -> Tuple[torch.Tensor, int]:
    """B×V×sample -> ((B·V)×sample, V), sample-major (row b·V + v is view v of sample b); B×sample -> (x, 1)."""
    if isinstance(x, (list, tuple)):
        raise ValueError(f"{_subject(who, modality)}: views of different sizes (a list) cannot be flattened into one batch")
    if has_views(x, modality, who):
        return x.flatten(0, 1), int(x.shape[1])
    return x, 1


def first_view(x: Views, modality: Modality, who: str = "") -> torch.Tensor:
    """The first view of each sample (B×sample); a batch without a view axis is returned as it is."""
    if not has_views(x, modality, who):
        return x  # type: ignore[return-value]
    return x[0] if isinstance(x, (list, tuple)) else x[:, 0]


def batch_size(batch: Dict[str, object]) -> int:
    """B of a batch dict: the first axis of its first tensor entry (a modality, ``label`` or ``index``); 1 if none."""
    for key in (*SAMPLE_NDIM, "label", "index"):
        v = batch.get(key) if isinstance(batch, dict) else None
        if isinstance(v, (list, tuple)) and v and isinstance(v[0], torch.Tensor):
            v = v[0]
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            return int(v.shape[0])
    return 1


__all__ = ["SAMPLE_NDIM", "SAMPLE_LAYOUT", "Views", "Modality", "modalities", "sample_ndim", "layout", "is_batch", "has_views",
           "split_views", "flatten_views", "first_view", "batch_size"]
