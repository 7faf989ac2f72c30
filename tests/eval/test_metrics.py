"""Metrics against hand-computed cases: ties, top-5, mean class accuracy, confusion, multi-view ensembles."""
from __future__ import annotations

import math

import pytest
import torch

from avssl.eval.metrics import (
    aggregate_labels,
    aggregate_views,
    clip_and_video_metrics,
    confusion_matrix,
    mean_class_accuracy,
    per_class_accuracy,
    top_k_accuracy,
)


def test_top1_plain():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = torch.tensor([1, 0, 0, 1])
    assert top_k_accuracy(scores, labels, 1) == pytest.approx(0.5)
    assert top_k_accuracy(scores, labels, 2) == pytest.approx(0.75)  # sample 2: label 0 ranks third
    assert top_k_accuracy(scores, labels, 3) == pytest.approx(1.0)


def test_ties_are_broken_against_the_true_label():
    # Label 0 ties with class 1 for the top score: pessimistic rule -> not top-1, but top-2.
    scores = torch.tensor([[1.0, 1.0, 0.0]])
    for label in (0, 1):
        y = torch.tensor([label])
        assert top_k_accuracy(scores, y, 1) == 0.0
        assert top_k_accuracy(scores, y, 2) == 1.0
    # A constant row is correct only once k covers every class.
    flat = torch.full((1, 3), 0.5)
    assert [top_k_accuracy(flat, torch.tensor([2]), k) for k in (1, 2, 3)] == [0.0, 0.0, 1.0]
    # Ties below the label's score do not hurt it.
    assert top_k_accuracy(torch.tensor([[2.0, 1.0, 1.0]]), torch.tensor([0]), 1) == 1.0
    # Class order does not matter: permuting columns (and the label) gives the same answer.
    scores = torch.tensor([[3.0, 5.0, 5.0, 5.0, 1.0]])
    perm = torch.tensor([4, 2, 0, 3, 1])
    for label in range(5):
        for k in range(1, 6):
            a = top_k_accuracy(scores, torch.tensor([label]), k)
            b = top_k_accuracy(scores[:, perm], torch.tensor([(perm == label).nonzero().item()]), k)
            assert a == b
    # label 1 ties with two others at the top: needs k = 3.
    assert [top_k_accuracy(scores, torch.tensor([1]), k) for k in (1, 2, 3)] == [0.0, 0.0, 1.0]


def test_top5_on_ten_classes():
    # Each row: the label's 0-based rank is 0, 4, 5, 9 -> top-5 correct for the first two only.
    ranks = [0, 4, 5, 9]
    rows, labels = [], []
    for i, r in enumerate(ranks):
        order = torch.randperm(10, generator=torch.Generator().manual_seed(i))  # order[j] = class at rank j
        s = torch.empty(10)
        s[order] = torch.arange(10, 0, -1, dtype=torch.float32)  # rank 0 gets the highest score
        rows.append(s)
        labels.append(order[r].item())
    scores, labels = torch.stack(rows), torch.tensor(labels)
    assert top_k_accuracy(scores, labels, 5) == pytest.approx(0.5)
    assert top_k_accuracy(scores, labels, 1) == pytest.approx(0.25)
    assert top_k_accuracy(scores, labels, 6) == pytest.approx(0.75)
    assert top_k_accuracy(scores, labels, 10) == pytest.approx(1.0)
    assert top_k_accuracy(scores, labels, 50) == pytest.approx(1.0)  # k > C counts everything


def test_mean_class_accuracy_leaves_absent_classes_out():
    # 3 classes; labels hold only 0 and 2. Class 0: 2/2 right; class 2: 1/3 right.
    scores = torch.tensor(
        [[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.7, 0.2, 0.1], [0.1, 0.6, 0.3]]
    )
    labels = torch.tensor([0, 0, 2, 2, 2])
    expected = (1.0 + 1.0 / 3.0) / 2.0
    assert mean_class_accuracy(scores, labels, num_classes=3) == pytest.approx(expected)
    assert mean_class_accuracy(scores, labels) == pytest.approx(expected)
    assert expected != pytest.approx((1.0 + 0.0 + 1.0 / 3.0) / 3.0)  # the wrong convention differs
    assert top_k_accuracy(scores, labels) == pytest.approx(3 / 5)  # and so does plain accuracy
    per = per_class_accuracy(scores, labels, 3)
    assert per[0].item() == pytest.approx(1.0) and math.isnan(per[1].item()) and per[2].item() == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="num_classes=4"):
        mean_class_accuracy(scores, labels, num_classes=4)


def test_confusion_matrix_counts():
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 0])
    preds = torch.tensor([0, 1, 1, 2, 0, 0, 2])
    cm = confusion_matrix(preds, labels, 3)
    expected = torch.tensor([[2, 0, 1], [1, 1, 0], [0, 1, 1]])
    assert cm.dtype == torch.long and torch.equal(cm, expected)
    assert torch.equal(cm.sum(dim=1), torch.bincount(labels, minlength=3))  # rows are the true classes
    scores = torch.nn.functional.one_hot(preds, 3).float()
    assert torch.equal(confusion_matrix(scores, labels, 3), expected)  # scores are argmaxed
    with pytest.raises(ValueError, match=r"preds must lie in \[0, 3\)"):
        confusion_matrix(torch.tensor([3]), torch.tensor([0]), 3)


def test_invalid_inputs_are_named():
    with pytest.raises(ValueError, match="-1"):
        top_k_accuracy(torch.zeros(2, 3), torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="NaN"):
        top_k_accuracy(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="k must be >= 1"):
        top_k_accuracy(torch.zeros(1, 3), torch.tensor([0]), k=0)
    with pytest.raises(ValueError, match="empty"):
        top_k_accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown aggregation mode"):
        aggregate_views(torch.zeros(2, 2), torch.tensor([0, 0]), mode="median")


def _softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


# Two videos (ids 7 and 3, views interleaved) × 3 views, 2 classes. Video 7: one very confident view for
# class 0 and two mild views for class 1 -> mean logits pick 0, mean probabilities pick 1. Video 3: mirrored.
VIEWS = [
    (7, [10.0, 0.0]),
    (3, [0.0, 10.0]),
    (7, [0.0, 2.0]),
    (3, [2.0, 0.0]),
    (7, [0.0, 2.0]),
    (3, [2.0, 0.0]),
]
SCORES = torch.tensor([s for _, s in VIEWS])
VIDEO_INDEX = torch.tensor([v for v, _ in VIEWS])
LABELS = torch.tensor([1 if v == 7 else 0 for v, _ in VIEWS])  # the mean-of-softmax winners


def test_aggregate_views_mean_softmax_vs_mean_scores():
    probs, ids = aggregate_views(SCORES, VIDEO_INDEX, "mean_softmax")
    assert ids.tolist() == [3, 7]
    by_video = {vid: [] for vid in (3, 7)}
    for vid, s in VIEWS:
        by_video[vid].append(_softmax(s))
    for row, vid in enumerate((3, 7)):
        expected = [sum(p[c] for p in by_video[vid]) / 3 for c in range(2)]
        assert probs[row].tolist() == pytest.approx(expected, abs=1e-6)
    # hand numbers: video 7 -> p(class 0) = (0.99995 + 2·0.1192) / 3 ≈ 0.4128
    assert probs[1, 0].item() == pytest.approx(0.41282, abs=1e-4)
    assert probs.argmax(1).tolist() == [0, 1]

    means, ids2 = aggregate_views(SCORES, VIDEO_INDEX, "mean_scores")
    assert torch.equal(ids2, ids)
    assert torch.allclose(means, torch.tensor([[4 / 3, 10 / 3], [10 / 3, 4 / 3]]))
    assert means.argmax(1).tolist() == [1, 0]  # the opposite winners

    maxed, _ = aggregate_views(SCORES, VIDEO_INDEX, "max")
    p10 = _softmax([10.0, 0.0])
    p2 = _softmax([0.0, 2.0])
    assert maxed[1].tolist() == pytest.approx([p10[0], p2[1]], abs=1e-6)
    assert maxed[0].tolist() == pytest.approx([p2[1], p10[0]], abs=1e-6)


def test_aggregate_views_ignores_view_order():
    perm = torch.tensor([5, 0, 3, 1, 4, 2])
    a, _ = aggregate_views(SCORES, VIDEO_INDEX)
    b, _ = aggregate_views(SCORES[perm], VIDEO_INDEX[perm])
    assert torch.allclose(a, b, atol=1e-7)


def test_aggregate_labels_checks_consistency():
    labels, ids = aggregate_labels(LABELS, VIDEO_INDEX)
    assert ids.tolist() == [3, 7] and labels.tolist() == [0, 1]
    bad = LABELS.clone()
    bad[0] = 0
    with pytest.raises(ValueError, match="video 7"):
        aggregate_labels(bad, VIDEO_INDEX)


def test_clip_and_video_metrics():
    m = clip_and_video_metrics(SCORES, LABELS, VIDEO_INDEX, num_classes=2, mode="mean_softmax")
    # clips: each video has 2 of 3 views right
    assert m["clip_top1"] == pytest.approx(4 / 6)
    assert m["video_top1"] == 1.0 and m["mean_class_accuracy"] == 1.0
    assert m["video_top5"] == 1.0 and m["clip_top5"] == 1.0  # fewer than 5 classes
    assert (m["num_clips"], m["num_videos"]) == (6, 2)
    m2 = clip_and_video_metrics(SCORES, LABELS, VIDEO_INDEX, num_classes=2, mode="mean_scores")
    assert m2["clip_top1"] == pytest.approx(4 / 6)
    assert m2["video_top1"] == 0.0 and m2["mean_class_accuracy"] == 0.0
    # without a video index every row is its own video
    m3 = clip_and_video_metrics(SCORES, LABELS)
    assert m3["video_top1"] == pytest.approx(m3["clip_top1"]) and m3["num_videos"] == 6
