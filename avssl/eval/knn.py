"""Weighted k-nearest-neighbour classification of frozen features (Wu et al., CVPR 2018, "InstDisc").

Train and test features are L2-normalised; each test feature takes its ``k`` most cosine-similar training
features, and each neighbour votes for its class with weight ``exp(sim / T)``. The class scores are the
summed votes (not normalised). Queries are processed in chunks, so memory is ``chunk_size × N_train``.
"""
from __future__ import annotations

from typing import Dict, Optional, Union

import torch
import torch.nn.functional as F

from avssl.eval.metrics import clip_and_video_metrics

Device = Union[str, torch.device, None]

_ONE_HOT_ELEMENTS = 1 << 24


def _as_matrix(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"{name} must be an N×D tensor, got {getattr(x, 'shape', type(x).__name__)}")
    return x


def knn_predict(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
    device: Device = None,
) -> torch.Tensor:
    """Class scores of weighted kNN: N_train×D, N_train, N_test×D -> N_test×C (float32, on ``device``).

    score[i, c] = Σ over the k nearest training features j (cosine similarity s_ij) with label c of
    exp(s_ij / temperature). ``k`` larger than N_train uses every training feature. ``device`` defaults to
    that of ``test_feats``. Among training features with exactly equal similarity at the k-th place, which
    one is taken follows ``torch.topk`` (such exact ties do not occur with real features).
    """
    train_feats = _as_matrix(train_feats, "train_feats")
    test_feats = _as_matrix(test_feats, "test_feats")
    if train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(
            f"train_feats have {train_feats.shape[1]} dims but test_feats have {test_feats.shape[1]}"
        )
    n_train = train_feats.shape[0]
    if n_train == 0:
        raise ValueError("train_feats is empty: kNN needs at least one training feature")
    train_labels = torch.as_tensor(train_labels).long()
    if train_labels.shape != (n_train,):
        raise ValueError(f"train_labels must have shape ({n_train},), got {tuple(train_labels.shape)}")
    c = int(num_classes)
    if train_labels.min() < 0 or train_labels.max() >= c:
        raise ValueError(
            f"train_labels must lie in [0, {c}); found [{train_labels.min().item()}, {train_labels.max().item()}] "
            "(drop unlabelled samples, label -1)"
        )
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    device = torch.device(device) if device is not None else test_feats.device
    kk = min(int(k), n_train)

    bank = F.normalize(train_feats.to(device, torch.float32), dim=1)  # N_train×D
    bank_labels = train_labels.to(device)
    out = torch.empty((test_feats.shape[0], c), dtype=torch.float32, device=device)
    for start in range(0, test_feats.shape[0], int(chunk_size)):
        q = F.normalize(test_feats[start : start + int(chunk_size)].to(device, torch.float32), dim=1)
        sim = q @ bank.T  # chunk×N_train
        top_sim, top_idx = sim.topk(kk, dim=1)  # chunk×k
        weights = (top_sim / temperature).exp()
        nn_labels = bank_labels[top_idx]  # chunk×k
        # A one-hot sum rather than scatter_add: deterministic on every device. Sub-chunks keep the
        # chunk×k×C one-hot tensor under _ONE_HOT_ELEMENTS.
        step = max(1, _ONE_HOT_ELEMENTS // (kk * c))
        for s in range(0, q.shape[0], step):
            votes = F.one_hot(nn_labels[s : s + step], c).to(weights.dtype)  # rows×k×C
            out[start + s : start + s + votes.shape[0]] = torch.einsum("rk,rkc->rc", weights[s : s + step], votes)
    return out


def knn_evaluate(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    test_video_index: Optional[torch.Tensor] = None,
    mode: str = "mean_scores",
    chunk_size: int = 1024,
    device: Device = None,
) -> Dict[str, float]:
    """kNN accuracy of ``test_feats`` against the labelled ``train_feats``.

    Returns :func:`avssl.eval.metrics.clip_and_video_metrics` (clip/video top-1 and top-5, video-level
    mean class accuracy). With ``test_video_index`` (N_test video ids) the views of each video are
    combined with ``mode``; the default ``"mean_scores"`` averages the vote scores, which are not logits,
    so a softmax over them (``"mean_softmax"``) would mostly reflect the vote scale.
    """
    scores = knn_predict(train_feats, train_labels, test_feats, num_classes, k, temperature, chunk_size, device)
    return clip_and_video_metrics(scores.cpu(), torch.as_tensor(test_labels).cpu(), test_video_index, num_classes, mode)
