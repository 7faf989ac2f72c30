"""Classification metrics for action recognition, in torch: top-k, mean class accuracy, confusion matrix,
and multi-view (clip × crop) aggregation to video-level predictions.

Conventions
-----------
* ``scores`` are N×C (logits, probabilities or any per-class score; higher is better), ``labels`` are N
  class ids in ``[0, C)``. Unlabelled samples (label −1) are an error here: drop them first.
* **Ties are broken against the true label** (pessimistic). A sample counts as top-k correct only when
  fewer than ``k`` *other* classes score greater than *or equal to* its label's score. So a constant score
  row is never top-1 correct (unless C = 1), and the result never depends on the order of the classes or
  on how ``torch.topk`` happens to order equal values.
* NaN scores are rejected (a NaN would silently compare false and count as correct).
* Results are Python floats in [0, 1]; a metric of an empty set raises ``ValueError``.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

AGGREGATION_MODES = ("mean_softmax", "mean_scores", "max")


def _check(scores: torch.Tensor, labels: torch.Tensor, name: str = "scores") -> Tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"{name} must be an N×C tensor, got {shape}")
    labels = torch.as_tensor(labels, device=scores.device)
    if labels.dim() != 1 or labels.shape[0] != scores.shape[0]:
        raise ValueError(f"labels must be a 1-D tensor of {scores.shape[0]} class ids, got shape {tuple(labels.shape)}")
    if scores.shape[0] == 0:
        raise ValueError(f"{name} is empty: no samples to score")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype}")
    labels = labels.long()
    c = scores.shape[1]
    bad = (labels < 0) | (labels >= c)
    if bad.any():
        raise ValueError(
            f"labels must lie in [0, {c}) for {c} score columns; found {sorted(set(labels[bad].tolist()))[:10]} "
            "(unlabelled samples, label -1, must be removed before scoring)"
        )
    if scores.is_floating_point() and torch.isnan(scores).any():
        raise ValueError(f"{name} contains NaN")
    return scores, labels


def label_rank(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pessimistic 0-based rank of each sample's label: the number of *other* classes whose score is
    greater than or equal to the label's score. N×C, N -> N (long). Top-k correct ⇔ rank < k."""
    scores, labels = _check(scores, labels)
    own = scores.gather(1, labels[:, None])  # N×1
    at_least = (scores >= own).sum(dim=1)  # counts the label itself once
    return at_least - 1


def top_k_correct(scores: torch.Tensor, labels: torch.Tensor, k: int = 1) -> torch.Tensor:
    """N bool: whether each sample is top-``k`` correct (ties broken against the true label)."""
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return label_rank(scores, labels) < int(k)


def top_k_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Fraction of samples whose label is among the ``k`` best-scoring classes.

    scores: N×C, labels: N (ids in [0, C)) -> float in [0, 1]. Ties are broken against the true label:
    a sample is correct only when fewer than ``k`` other classes score ≥ its label's score. ``k`` ≥ C
    counts every sample as correct.
    """
    return top_k_correct(scores, labels, k).double().mean().item()


def per_class_accuracy(
    scores: torch.Tensor, labels: torch.Tensor, num_classes: Optional[int] = None
) -> torch.Tensor:
    """C float64: top-1 recall of each class (correct / samples of that class); NaN for classes that have
    no sample in ``labels``."""
    c = _num_classes(scores, num_classes)
    correct = top_k_correct(scores, labels, 1)
    labels = torch.as_tensor(labels, device=scores.device).long()
    total = torch.bincount(labels, minlength=c).double()
    hits = torch.bincount(labels, weights=correct.double(), minlength=c)
    acc = torch.full((c,), float("nan"), dtype=torch.float64, device=scores.device)
    present = total > 0
    acc[present] = hits[present] / total[present]
    return acc


def mean_class_accuracy(scores: torch.Tensor, labels: torch.Tensor, num_classes: Optional[int] = None) -> float:
    """Mean over the classes present in ``labels`` of their top-1 recall.

    scores: N×C, labels: N -> float in [0, 1]. Classes with no sample in ``labels`` are left out of the
    mean (not counted as 0). ``num_classes`` defaults to C and, when given, must equal C.
    """
    acc = per_class_accuracy(scores, labels, num_classes)
    return acc[~torch.isnan(acc)].mean().item()


def _num_classes(scores: torch.Tensor, num_classes: Optional[int]) -> int:
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        raise ValueError(f"scores must be an N×C tensor, got {getattr(scores, 'shape', type(scores).__name__)}")
    c = scores.shape[1]
    if num_classes is not None and int(num_classes) != c:
        raise ValueError(f"num_classes={num_classes} but scores have {c} columns")
    return c


def predict(scores: torch.Tensor) -> torch.Tensor:
    """N×C -> N predicted class ids; among equal maxima the lowest class id wins (``torch.argmax``)."""
    return scores.argmax(dim=1)


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """C×C LongTensor of counts: row = true class, column = predicted class.

    preds: N predicted class ids, or N×C scores (then :func:`predict` picks the class); labels: N.
    """
    preds = torch.as_tensor(preds)
    if preds.dim() == 2:
        preds = predict(preds)
    labels = torch.as_tensor(labels, device=preds.device).long()
    preds = preds.long()
    if preds.shape != labels.shape or preds.dim() != 1:
        raise ValueError(f"preds and labels must be 1-D of equal length, got {tuple(preds.shape)} and {tuple(labels.shape)}")
    c = int(num_classes)
    for name, t in (("labels", labels), ("preds", preds)):
        if t.numel() and (t.min() < 0 or t.max() >= c):
            raise ValueError(f"{name} must lie in [0, {c}), found values in [{t.min().item()}, {t.max().item()}]")
    return torch.bincount(labels * c + preds, minlength=c * c).reshape(c, c).cpu()


def _video_groups(video_index: torch.Tensor, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    video_index = torch.as_tensor(video_index).long().cpu()
    if video_index.shape != (n,):
        raise ValueError(f"video_index must be a 1-D tensor of {n} video ids, got shape {tuple(video_index.shape)}")
    ids, inverse = torch.unique(video_index, sorted=True, return_inverse=True)
    return ids, inverse


def aggregate_views(
    scores: torch.Tensor, video_index: torch.Tensor, mode: str = "mean_softmax"
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Combine the per-view (clip × crop) predictions of each video.

    scores: N×C per view; video_index: N (the video each view comes from) -> ``(video_scores V×C,
    video_ids V)``, videos in ascending id order, on the CPU. ``mode``:

    * ``"mean_softmax"`` (default): mean over the views of the softmax probabilities. This is what
      PySlowFast's multi-view test does: its head applies softmax at test time and the ``sum`` ensemble
      adds the views' probabilities (the sum and the mean rank classes identically).
    * ``"mean_scores"``: mean of the raw scores (logits, or kNN votes — not probabilities).
    * ``"max"``: per class, the maximum softmax probability over the views (PySlowFast's ``max``
      ensemble on its softmax outputs).

    Computed in float64 on the CPU, so the result does not depend on the device or on view order;
    returned in the dtype of ``scores`` when that is floating point.
    """
    if mode not in AGGREGATION_MODES:
        raise ValueError(f"unknown aggregation mode {mode!r}; expected one of {AGGREGATION_MODES}")
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        raise ValueError(f"scores must be an N×C tensor, got {getattr(scores, 'shape', type(scores).__name__)}")
    if scores.shape[0] == 0:
        raise ValueError("scores is empty: no views to aggregate")
    out_dtype = scores.dtype if scores.is_floating_point() else torch.float32
    s = scores.detach().to("cpu", torch.float64)
    if torch.isnan(s).any():
        raise ValueError("scores contains NaN")
    ids, inverse = _video_groups(video_index, s.shape[0])
    v, c = ids.shape[0], s.shape[1]
    if mode != "mean_scores":
        s = F.softmax(s, dim=1)
    if mode == "max":
        out = torch.full((v, c), float("-inf"), dtype=torch.float64)
        out.scatter_reduce_(0, inverse[:, None].expand(-1, c), s, reduce="amax", include_self=True)
    else:
        out = torch.zeros((v, c), dtype=torch.float64).index_add_(0, inverse, s)
        out /= torch.bincount(inverse, minlength=v).double()[:, None]
    return out.to(out_dtype), ids


def aggregate_labels(labels: torch.Tensor, video_index: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """N per-view labels -> ``(video_labels V, video_ids V)`` in the order of :func:`aggregate_views`.

    Raises ``ValueError`` when the views of one video carry different labels.
    """
    labels = torch.as_tensor(labels).long().cpu()
    ids, inverse = _video_groups(video_index, labels.shape[0])
    v = ids.shape[0]
    lo = torch.full((v,), torch.iinfo(torch.long).max, dtype=torch.long).scatter_reduce(0, inverse, labels, "amin")
    hi = torch.full((v,), torch.iinfo(torch.long).min, dtype=torch.long).scatter_reduce(0, inverse, labels, "amax")
    bad = lo != hi
    if bad.any():
        first = ids[bad][0].item()
        raise ValueError(f"views of video {first} carry different labels ({lo[bad][0].item()} and {hi[bad][0].item()})")
    return lo, ids


def clip_and_video_metrics(
    scores: torch.Tensor,
    labels: torch.Tensor,
    video_index: Optional[torch.Tensor] = None,
    num_classes: Optional[int] = None,
    mode: str = "mean_softmax",
) -> Dict[str, float]:
    """Clip-level and video-level accuracy of per-view scores.

    scores: N×C per view, labels: N, video_index: N (``None``: every row is its own video) -> dict with
    ``clip_top1``, ``clip_top5`` (each view on its own), ``video_top1``, ``video_top5`` and
    ``mean_class_accuracy`` (video level, classes present in the labels), after :func:`aggregate_views`
    with ``mode``; plus ``num_clips`` and ``num_videos``. Top-5 with fewer than 5 classes is 1.0.
    """
    _num_classes(scores, num_classes)
    scores, labels = _check(scores, labels)
    if video_index is None:
        video_index = torch.arange(scores.shape[0])
    v_scores, ids = aggregate_views(scores, video_index, mode)
    v_labels, _ = aggregate_labels(labels, video_index)
    return {
        "clip_top1": top_k_accuracy(scores, labels, 1),
        "clip_top5": top_k_accuracy(scores, labels, 5),
        "video_top1": top_k_accuracy(v_scores, v_labels, 1),
        "video_top5": top_k_accuracy(v_scores, v_labels, 5),
        "mean_class_accuracy": mean_class_accuracy(v_scores, v_labels),
        "num_clips": int(scores.shape[0]),
        "num_videos": int(ids.shape[0]),
    }
