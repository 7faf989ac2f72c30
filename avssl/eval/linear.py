"""Linear probe on frozen features: standardise with train statistics, train one ``nn.Linear``.

The probe is BatchNorm-free: the train mean and standard deviation are buffers of the probe, so the
same affine map is applied at test time and saved with ``state_dict``. Training is full-precision
mini-batch SGD (momentum, default) or AdamW with a per-step cosine schedule and optional linear warm-up, on
``device`` (the GPU when evaluation has one); small problems (a few thousand × a few thousand) train on the CPU in
seconds, and the features are not copied when they are already fp32 on that device. Everything random (weight
init, shuffling) comes from one ``torch.Generator`` seeded with ``seed``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from avssl.eval.metrics import clip_and_video_metrics, top_k_accuracy

Device = Union[str, torch.device]

# A feature whose train std is below this is constant; it is centred but not scaled (std stored as 1).
_MIN_STD = 1e-6


class LinearProbe(nn.Module):
    """``x -> linear((x - mean) / std)``: B×D -> B×C logits; ``mean``/``std`` are D-dim buffers."""

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.linear = nn.Linear(in_dim, num_classes)

    @property
    def in_dim(self) -> int:
        return self.linear.in_features

    @property
    def num_classes(self) -> int:
        return self.linear.out_features

    def set_statistics(self, feats: torch.Tensor, chunk_size: int = 8192) -> None:
        """Store the per-dimension mean and (biased) std of ``feats`` (N×D), accumulated in fp64 over row chunks
        (no fp64 copy of the whole matrix: 240k × 512 would be another 1 GB)."""
        n = feats.shape[0]
        mean = torch.zeros(feats.shape[1], dtype=torch.float64, device=feats.device)
        for s in range(0, n, chunk_size):
            mean += feats[s:s + chunk_size].double().sum(0)
        mean /= n
        var = torch.zeros_like(mean)
        for s in range(0, n, chunk_size):  # two passes: the centred sum of squares loses nothing to cancellation
            var += (feats[s:s + chunk_size].double() - mean).square_().sum(0)
        std = (var / n).sqrt()
        std = torch.where(std < _MIN_STD, torch.ones_like(std), std)
        self.mean.copy_(mean.to(self.mean.dtype))
        self.std.copy_(std.to(self.std.dtype))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"LinearProbe expects B×{self.in_dim} features, got {tuple(x.shape)}")
        return self.linear(self.standardize(x.to(self.mean.dtype)))


def _check_xy(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, name: str) -> Tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(feats, torch.Tensor) or feats.dim() != 2:
        raise ValueError(f"{name}_feats must be an N×D tensor, got {getattr(feats, 'shape', type(feats).__name__)}")
    labels = torch.as_tensor(labels).long()
    if labels.shape != (feats.shape[0],):
        raise ValueError(f"{name}_labels must have shape ({feats.shape[0]},), got {tuple(labels.shape)}")
    if feats.shape[0] == 0:
        raise ValueError(f"{name}_feats is empty")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"{name}_labels must lie in [0, {num_classes}); found [{labels.min().item()}, {labels.max().item()}] "
            "(drop unlabelled samples, label -1)"
        )
    if not _all_finite(feats):
        raise ValueError(f"{name}_feats contains NaN or infinite values")
    return feats, labels


def _all_finite(x: torch.Tensor, chunk_size: int = 8192) -> bool:
    """Whether every entry of ``x`` is finite, checked in row chunks (``isfinite`` makes a full-size temporary)."""
    return all(bool(torch.isfinite(x[s:s + chunk_size]).all()) for s in range(0, x.shape[0], chunk_size))


def cosine_factor(step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """Learning-rate factor: linear warm-up from 1/(warmup+1) to 1, then half a cosine from 1 to 0."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    rest = max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / rest)))


@torch.no_grad()
def probe_predict(probe: nn.Module, feats: torch.Tensor, batch_size: int = 4096, device: Device = "cpu") -> torch.Tensor:
    """Logits of ``probe`` for N×D features -> N×C float32 on the CPU (probe in eval mode)."""
    was_training = probe.training
    probe.eval()
    try:
        probe.to(device)
        outs = [probe(feats[i : i + batch_size].to(device)).float().cpu() for i in range(0, feats.shape[0], batch_size)]
    finally:
        probe.train(was_training)
    return torch.cat(outs) if outs else torch.empty((0, getattr(probe, "num_classes", 0)))


def train_linear_probe(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    num_classes: int,
    val_feats: Optional[torch.Tensor] = None,
    val_labels: Optional[torch.Tensor] = None,
    *,
    epochs: int = 100,
    lr: float = 0.1,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    warmup_epochs: int = 0,
    label_smoothing: float = 0.0,
    seed: int = 0,
    standardize: bool = True,
    device: Device = "cpu",
) -> Tuple[LinearProbe, List[Dict[str, float]]]:
    """Train a linear classifier on frozen features.

    train_feats: N×D, train_labels: N (ids in [0, C)); optional val_feats/val_labels for per-epoch
    validation. ``optimizer`` is ``"sgd"`` (with ``momentum``, Nesterov off) or ``"adamw"``; ``lr``
    follows a per-step cosine schedule to 0 after ``warmup_epochs`` of linear warm-up. Weight decay
    applies to the weight matrix only (not the bias). With ``standardize`` (default) every dimension is
    centred and scaled by its train mean/std, stored in the probe; otherwise mean 0 / std 1 are stored.

    Returns ``(probe, history)``: the probe in eval mode on the CPU, and one dict per epoch with
    ``epoch``, ``lr`` (the rate after the epoch's last step), ``train_loss`` (mean over the epoch's samples),
    ``train_top1`` (on the epoch's batches, as trained) and, with validation data, ``val_loss`` and
    ``val_top1`` (clip level).
    """
    c = int(num_classes)
    train_feats, train_labels = _check_xy(train_feats, train_labels, c, "train")
    has_val = val_feats is not None
    if has_val:
        if val_labels is None:
            raise ValueError("val_feats given without val_labels")
        val_feats, val_labels = _check_xy(val_feats, val_labels, c, "val")
        if val_feats.shape[1] != train_feats.shape[1]:
            raise ValueError(f"val_feats have {val_feats.shape[1]} dims but train_feats have {train_feats.shape[1]}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got epochs={epochs}, batch_size={batch_size}")
    if optimizer not in ("sgd", "adamw"):
        raise ValueError(f"unknown optimizer {optimizer!r}; expected 'sgd' or 'adamw'")

    gen = torch.Generator().manual_seed(int(seed))
    n, d = train_feats.shape
    probe = LinearProbe(d, c)
    with torch.no_grad():
        probe.linear.weight.normal_(0.0, 0.01, generator=gen)
        probe.linear.bias.zero_()
        if standardize:
            probe.set_statistics(train_feats)
    probe.to(device)
    x_all = train_feats.to(device, torch.float32)
    y_all = train_labels.to(device)

    params = [
        {"params": [probe.linear.weight], "weight_decay": weight_decay},
        {"params": [probe.linear.bias], "weight_decay": 0.0},
    ]
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum)
    else:
        opt = torch.optim.AdamW(params, lr=lr)
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    warmup = warmup_epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_factor(s, total, warmup))

    history: List[Dict[str, float]] = []
    for epoch in range(epochs):
        probe.train()
        order = torch.randperm(n, generator=gen).to(device)
        # Summed on the device and read once per epoch: a .item() per step would wait for the GPU every step.
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        hits = torch.zeros((), dtype=torch.long, device=device)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            logits = probe(x_all[idx])
            loss = F.cross_entropy(logits, y_all[idx], label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach().double() * idx.shape[0]
            hits += (logits.detach().argmax(1) == y_all[idx]).sum()
        row: Dict[str, float] = {
            "epoch": epoch + 1,
            "lr": opt.param_groups[0]["lr"],
            "train_loss": float(loss_sum) / n,
            "train_top1": int(hits) / n,
        }
        if has_val:
            logits = probe_predict(probe, val_feats, device=device)
            row["val_loss"] = F.cross_entropy(logits, val_labels).item()
            row["val_top1"] = top_k_accuracy(logits, val_labels, 1)
        history.append(row)
    probe.eval()
    return probe.cpu(), history


def linear_evaluate(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    test_video_index: Optional[torch.Tensor] = None,
    mode: str = "mean_softmax",
    **train_kwargs: Any,
) -> Dict[str, float]:
    """Train a probe (:func:`train_linear_probe`, keyword arguments passed on) and test it.

    Returns :func:`avssl.eval.metrics.clip_and_video_metrics` of the test features (views of one video
    combined with ``mode`` when ``test_video_index`` is given) plus ``train_top1`` of the last epoch.
    """
    c = int(num_classes)
    probe, history = train_linear_probe(train_feats, train_labels, c, **train_kwargs)
    test_feats, test_labels = _check_xy(test_feats, test_labels, c, "test")
    logits = probe_predict(probe, test_feats, device=train_kwargs.get("device", "cpu"))
    metrics = clip_and_video_metrics(logits, test_labels, test_video_index, c, mode)
    metrics["train_top1"] = history[-1]["train_top1"]
    return metrics


def layerwise_linear_probe(
    train_stage_feats: Mapping[str, torch.Tensor],
    train_labels: torch.Tensor,
    test_stage_feats: Mapping[str, torch.Tensor],
    test_labels: torch.Tensor,
    num_classes: int,
    test_video_index: Optional[torch.Tensor] = None,
    mode: str = "mean_softmax",
    stages: Optional[List[str]] = None,
    **train_kwargs: Any,
) -> Dict[str, Dict[str, float]]:
    """One linear probe per stage (e.g. the output of ``extract_features(..., stages=[...])``).

    ``train_stage_feats``/``test_stage_feats``: stage name -> N×D_stage. Returns ``{stage: metrics}`` in
    stage order (``stages`` or the train dict's order), each as from :func:`linear_evaluate` with the same
    hyper-parameters and seed for every stage.
    """
    names = list(stages) if stages is not None else list(train_stage_feats)
    for name in names:
        for which, d in (("train_stage_feats", train_stage_feats), ("test_stage_feats", test_stage_feats)):
            if name not in d:
                raise KeyError(f"stage {name!r} missing from {which}; it has {list(d)}")
    return {
        name: linear_evaluate(
            train_stage_feats[name], train_labels, test_stage_feats[name], test_labels, num_classes,
            test_video_index=test_video_index, mode=mode, **train_kwargs,
        )
        for name in names
    }


def stratified_folds(labels: Sequence[int], folds: int = 5, seed: int = 0) -> torch.Tensor:
    """Fold id (0..folds−1) per sample: each class's samples, in a seeded random order, dealt round-robin,
    so every fold holds ⌊n_c/folds⌋ or ⌈n_c/folds⌉ of class c (the ESC-50 protocol's fold shape)."""
    y = torch.as_tensor(list(labels), dtype=torch.long)
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    g = torch.Generator().manual_seed(seed)
    fold = torch.empty_like(y)
    offset = 0
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        fold[idx] = (torch.arange(len(idx)) + offset) % folds
        offset += len(idx)  # classes smaller than `folds` do not all land in fold 0
    return fold


def cross_validated_linear_probe(
    feats: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    fold: torch.Tensor,
    video_index: Optional[torch.Tensor] = None,
    mode: str = "mean_softmax",
    **train_kwargs: Any,
) -> Dict[str, Any]:
    """K-fold linear probe (ESC-50 style): for each fold, train on the others and test on it.

    ``feats`` N×D, ``labels`` N, ``fold`` N fold ids (per row; all rows of a video in one fold),
    ``video_index`` N (views of one video combined with ``mode``). Returns ``{"folds": [per-fold
    metrics], "video_top1": mean, "video_top1_std": std over folds, "clip_top1": mean}``.
    """
    per_fold = []
    for f in torch.unique(fold).tolist():
        test = fold == f
        m = linear_evaluate(feats[~test], labels[~test], feats[test], labels[test], num_classes,
                            test_video_index=None if video_index is None else video_index[test], mode=mode,
                            **train_kwargs)
        per_fold.append({"fold": int(f), **m})
    top1 = torch.tensor([m["video_top1"] for m in per_fold], dtype=torch.float64)
    return {"folds": per_fold, "video_top1": float(top1.mean()),
            "video_top1_std": float(top1.std()) if len(per_fold) > 1 else 0.0,
            "clip_top1": float(sum(m["clip_top1"] for m in per_fold) / len(per_fold))}
