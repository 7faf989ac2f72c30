"""Multi-view testing of a fine-tuned model (``avssl test``, the ``test`` protocol): every video of the val part
scored over ``data.test_clips`` uniformly spaced clips × ``data.test_crops`` crops, the views' scores combined per
video (``eval.aggregation``), metrics by :mod:`avssl.eval.metrics` (ties counted against the true label), and,
with an output folder, one line per video in ``predictions.csv`` and the confusion matrix in ``confusion.png``.

``predictions.csv`` columns: ``video`` (its path), ``label`` and ``predicted`` (class ids; ``predicted`` is the
highest-scoring class, the lowest id among equal scores), ``top5`` (the five best class ids, best first,
space-separated), ``true_score`` (the video's aggregated score of its true class), ``true_rank`` (how many other
classes score at least as high: top-1 correct ⇔ 0, top-5 ⇔ < 5), ``label_name``, ``predicted_name``.
"""
from __future__ import annotations

import csv
import io
import os
import time
from typing import Any, Dict, List, Optional

import torch

from avssl.eval.metrics import aggregate_labels, aggregate_views, clip_and_video_metrics, confusion_matrix, label_rank
from avssl.utils import atomic_write_text

PREDICTION_COLUMNS = ("video", "label", "predicted", "top5", "true_score", "true_rank", "label_name",
                      "predicted_name")


@torch.inference_mode()
def predict_views(method: Any, loader: Any, device: str = "cpu") -> Dict[str, torch.Tensor]:
    """Per-view class scores of a supervised method over a loader of (multi-view) test items.

    Returns ``scores`` (N·V)×C (logits), ``labels`` and ``index`` (the video of each view), on the CPU.
    """
    from avssl.data.batch import flatten_views

    was_training = method.training
    method.eval().to(device)
    scores, labels, index = [], [], []
    try:
        for batch in loader:
            x, views = flatten_views(batch[method.modality].to(device), method.modality)
            scores.append(method(x).float().cpu())
            labels.append(batch["label"].repeat_interleave(views))
            index.append(batch["index"].repeat_interleave(views))
    finally:
        method.train(was_training)
    return {"scores": torch.cat(scores), "labels": torch.cat(labels), "index": torch.cat(index)}


def load_classifier(checkpoint: str) -> Any:
    """The trained method of ``checkpoint``, checked to be a classifier (a supervised or fine-tuned run)."""
    from avssl.engine import load_method
    from avssl.errors import UserError

    method = load_method(checkpoint)
    if not hasattr(method, "classifier"):
        raise UserError(f"{checkpoint} holds a {method.cfg.method.name!r} run, which has no classifier: test a "
                        "checkpoint of `avssl finetune` (or of the supervised method)")
    return method


def class_names(ds: Any, num_classes: int) -> List[str]:
    """The name of each class id, from the dataset's rows or class list (the id itself where unknown)."""
    names = [str(c) for c in range(num_classes)]
    rows = getattr(ds, "rows", None)
    if rows is not None and getattr(ds, "video_of", None) is None:
        for r in rows:
            if 0 <= r.label_index < num_classes and r.label:
                names[r.label_index] = r.label
    elif isinstance(getattr(ds, "classes", None), list) and len(ds.classes) == num_classes:
        names = [str(c) for c in ds.classes]
    return names


def multiview_test(method: Any, cfg: Any, out_dir: Optional[str] = None, name: str = "model",
               device: Optional[str] = None) -> Dict[str, Any]:
    """Multi-view test of ``method`` (a classifier) on the val part of ``cfg.data``; a result row.

    The row holds ``encoder`` (``name``), ``protocol`` (``test``), ``views`` (``KxS``) and the metrics of
    :func:`~avssl.eval.metrics.clip_and_video_metrics`. With ``out_dir``, ``predictions.csv`` and ``confusion.png``
    are written there (see the module docstring).
    """
    from torch.utils.data import DataLoader

    from avssl.data.datamodule import item_names, make_dataset
    from avssl.errors import DataError

    t0 = time.perf_counter()
    num_classes = int(method.cfg.num_classes)
    ds = make_dataset(cfg, "val", train=False, needs_audio=method.modality == "audio")
    labels_seen = [label for label in ds.labels if label >= 0]
    if len(labels_seen) < len(ds):
        raise DataError(f"{len(ds) - len(labels_seen)} of the {len(ds)} test videos have no label; testing needs a "
                        "labelled val part (data.val / data.val_split)")
    if max(labels_seen) >= num_classes:
        raise DataError(f"the test videos have labels up to {max(labels_seen)}, but the model's classifier has "
                        f"{num_classes} classes: test with the data it was fine-tuned for")
    loader = DataLoader(ds, batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers)
    pred = predict_views(method, loader, device or ("cuda" if torch.cuda.is_available() else "cpu"))
    mode = cfg.eval.aggregation
    m = clip_and_video_metrics(pred["scores"], pred["labels"], pred["index"], num_classes=num_classes, mode=mode)
    row: Dict[str, Any] = {"encoder": name, "protocol": "test", "views": f"{cfg.data.test_clips}x{cfg.data.test_crops}",
                           **m}
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        video_scores, ids = aggregate_views(pred["scores"], pred["index"], mode)
        video_labels, _ = aggregate_labels(pred["labels"], pred["index"])
        names, videos = class_names(ds, num_classes), item_names(ds)
        write_predictions(os.path.join(out_dir, "predictions.csv"), video_scores, video_labels,
                          [videos[int(i)] for i in ids], names)
        from avssl.eval.plots import plot_confusion_matrix

        plot_confusion_matrix(confusion_matrix(video_scores, video_labels, num_classes), names,
                              os.path.join(out_dir, "confusion.png"),
                              title=f"{name}: {m['num_videos']} videos, {row['views']} views, "
                                    f"top-1 {100 * m['video_top1']:.1f}%")
    row["eval_s"] = time.perf_counter() - t0
    return row


def checkpoint_test(cfg: Any, checkpoint: str, out_dir: Optional[str] = None,
                    name: Optional[str] = None) -> Dict[str, Any]:
    """:func:`multiview_test` of the classifier in ``checkpoint`` (named by its file unless ``name``)."""
    return multiview_test(load_classifier(checkpoint), cfg, out_dir=out_dir, name=name or os.path.basename(checkpoint))


def write_predictions(path: str, video_scores: torch.Tensor, video_labels: torch.Tensor, videos: List[str],
                      names: List[str]) -> None:
    """``predictions.csv`` (columns :data:`PREDICTION_COLUMNS`) from V×C aggregated scores and V labels."""
    ranks = label_rank(video_scores, video_labels)
    best = video_scores.topk(min(5, video_scores.shape[1]), dim=1).indices
    predicted = video_scores.argmax(dim=1)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(PREDICTION_COLUMNS)
    for v, video in enumerate(videos):
        label, guess = int(video_labels[v]), int(predicted[v])
        w.writerow([video, label, guess, " ".join(str(int(c)) for c in best[v]),
                    f"{float(video_scores[v, label]):.6g}", int(ranks[v]), names[label], names[guess]])
    atomic_write_text(path, buf.getvalue())


def read_predictions(path: str) -> List[Dict[str, Any]]:
    """The rows of a ``predictions.csv``, numbers as numbers (``top5`` a list of ids)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["label"], r["predicted"], r["true_rank"] = int(r["label"]), int(r["predicted"]), int(r["true_rank"])
        r["true_score"] = float(r["true_score"])
        r["top5"] = [int(c) for c in r["top5"].split()]
    return rows


__all__ = ["PREDICTION_COLUMNS", "checkpoint_test", "class_names", "load_classifier", "multiview_test", "predict_views",
           "read_predictions", "write_predictions"]
