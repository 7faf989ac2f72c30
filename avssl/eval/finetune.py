"""Full fine-tuning: a pretrained encoder + classifier trained end to end, then multi-view testing."""
from __future__ import annotations

import os
import time
from typing import Any, Dict, Optional

import torch

from avssl.eval.metrics import clip_and_video_metrics


@torch.inference_mode()
def predict_views(method: Any, loader: Any, device: str = "cpu") -> Dict[str, torch.Tensor]:
    """Per-view class scores of a supervised method over a loader of (multi-view) test items.

    Returns ``scores`` (N·V)×C (logits), ``labels`` and ``index`` (the video of each view).
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


def finetune_and_evaluate(cfg: Any, checkpoint: Optional[str], name: Optional[str] = None) -> Dict[str, Any]:
    """Fine-tune from ``checkpoint`` (``None``: from scratch) with the supervised method of ``cfg``, then
    test on the val part with ``data.test_clips`` × ``data.test_crops`` views per video aggregated by
    ``eval.aggregation``. Returns a result row."""
    from torch.utils.data import DataLoader

    from avssl.data.datamodule import make_dataset
    from avssl.engine import fit, load_method, with_overrides

    if cfg.method.name != "supervised":
        raise ValueError(f"fine-tuning needs a config whose method is 'supervised', not {cfg.method.name!r}")
    if checkpoint:
        cfg = with_overrides(cfg, **{"method.init_checkpoint": checkpoint})
    t0 = time.perf_counter()
    last = fit(cfg, resume=True)
    method = load_method(last)
    ds = make_dataset(method.cfg, "val", train=False, needs_audio=method.modality == "audio")
    loader = DataLoader(ds, batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pred = predict_views(method, loader, device)
    m = clip_and_video_metrics(pred["scores"], pred["labels"], pred["index"], num_classes=method.cfg.num_classes,
                               mode=cfg.eval.aggregation)
    return {"encoder": name or (os.path.basename(checkpoint) if checkpoint else "scratch"), "protocol": "finetune",
            **m, "wall_s": time.perf_counter() - t0}
