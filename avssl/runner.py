"""The jobs behind ``avssl pretrain|finetune|eval|extract``: config in, checkpoint/metrics out."""
from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Dict, List, Optional, Sequence

import lightning as L
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import OmegaConf

from avssl.config import build_config, to_dict
from avssl.utils import atomic_write_text

log = logging.getLogger(__name__)


def with_overrides(cfg: Any, **changes: Any) -> Any:
    """A validated copy of ``cfg`` with dotted-key ``changes`` (e.g. ``{"optim.lr": 0.1}``)."""
    data = to_dict(cfg)
    for key, value in changes.items():
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return build_config(data)


def _prepare_cfg(cfg: Any, method_cls: Any) -> Any:
    """Fill ``num_classes`` from the data for methods that need it."""
    if "label" in method_cls.modalities and cfg.num_classes is None:
        from avssl.data.datamodule import VideoDataModule

        n = VideoDataModule(cfg).num_classes
        cfg = with_overrides(cfg, num_classes=n)
        log.info("num_classes = %d (read from the data)", n)
    return cfg


def fit(
    cfg: Any,
    resume: bool = True,
    trainer_overrides: Optional[Dict[str, Any]] = None,
    extra_callbacks: Optional[List[Any]] = None,
) -> str:
    """Train ``cfg.method`` on ``cfg.data``; return the path of the last checkpoint.

    With ``resume`` (default) a run whose ``output_dir`` already holds ``checkpoints/last.ckpt``
    continues from it: same step count, schedule, optimiser state and method state.
    """
    from avssl.data.datamodule import VideoDataModule
    from avssl.engine import build_trainer
    from avssl.methods import METHODS

    method_cls = METHODS.get(cfg.method.name)
    cfg = _prepare_cfg(cfg, method_cls)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    os.makedirs(cfg.output_dir, exist_ok=True)
    atomic_write_text(os.path.join(cfg.output_dir, "config.yaml"), OmegaConf.to_yaml(cfg))
    method = method_cls(cfg)
    # Extra objectives may read a modality the method itself does not (e.g. audio for a video method).
    extra = tuple(e.modality for e in getattr(method, "extra_objectives", {}).values())
    # A method without a validation step would only have its validation set decoded for nothing.
    validates = is_overridden("validation_step", method)
    dm = VideoDataModule(cfg, modalities=tuple(dict.fromkeys((*method.modalities, *extra))), validate=validates)
    trainer = build_trainer(cfg, monitor=method.monitor, mode=method.monitor_mode, callbacks=extra_callbacks,
                            **(trainer_overrides or {}))
    last = os.path.join(cfg.output_dir, "checkpoints", "last.ckpt")
    ckpt = last if resume and os.path.exists(last) else None
    if ckpt:
        log.info("resuming from %s", ckpt)
    with warnings.catch_warnings():
        if not validates:  # Lightning warns that the (empty) validation loader goes unused: we know.
            warnings.filterwarnings("ignore", message="You passed in a `val_dataloader` but have no `validation_step`")
        trainer.fit(method, datamodule=dm, ckpt_path=ckpt)
    return last


def load_method(checkpoint: str, cfg: Optional[Any] = None) -> Any:
    """Rebuild a trained method from its checkpoint (the config is stored inside it)."""
    import torch

    from avssl.methods import build_method

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if cfg is None:
        stored = state.get("hyper_parameters", {}).get("config")
        if stored is None:
            raise ValueError(f"{checkpoint} has no stored config; pass one")
        cfg = build_config(stored)
    method = build_method(cfg.method.name, cfg)
    method.load_state_dict(state["state_dict"], strict=True)
    method.eval()
    return method


def _eval_loader(cfg: Any, part: str, modality: str) -> Any:
    """Loader of test-style views (K uniform clips, centre or three crops) over the train or val part."""
    from torch.utils.data import DataLoader

    from avssl.data.datamodule import make_dataset

    ds = make_dataset(cfg, part, train=False, needs_audio=modality == "audio")
    return DataLoader(ds, batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers, shuffle=False), ds


def encoder_from(cfg: Any, checkpoint: Optional[str], modality: str) -> Any:
    """The ``modality`` encoder of a trained checkpoint, or a randomly initialised one (``checkpoint=None``)."""
    if checkpoint:
        return load_method(checkpoint).encoder_for(modality)
    from avssl.methods.base import Method

    L.seed_everything(cfg.seed, verbose=False)
    if modality not in ("video", "audio", "image"):
        raise ValueError(f"modality must be video, audio or image, got {modality!r}")
    enc_cfg = getattr(cfg.model, modality)
    if enc_cfg is None:
        raise ValueError(f"model.{modality} is not set in the config: name the {modality} encoder to evaluate")
    return Method.make_encoder(enc_cfg).eval()


def evaluate(
    cfg: Any,
    checkpoint: Optional[str],
    protocols: Sequence[str] = ("linear", "knn"),
    modality: Optional[str] = None,
    name: Optional[str] = None,
    out_dir: Optional[str] = None,
    plot: bool = False,
    progress: bool = True,
) -> List[Dict[str, Any]]:
    """Evaluate a frozen encoder by linear probe and/or kNN on ``cfg.data`` (train split -> val split).

    Both use K = ``data.test_clips`` uniformly spaced clips × ``data.test_crops`` crops per video; the
    probe trains on every view of the train videos, and test views are aggregated per video
    (``eval.aggregation``). Returns one row per protocol (and per stage for ``eval.stages``).
    """
    import time

    import torch

    from avssl.eval.features import extract_features
    from avssl.eval.knn import knn_evaluate
    from avssl.eval.linear import layerwise_linear_probe, linear_evaluate

    modality = modality or cfg.eval.modality
    name = name or (os.path.basename(checkpoint) if checkpoint else "random init")
    t0 = time.perf_counter()
    encoder = encoder_from(cfg, checkpoint, modality)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    train_loader, train_ds = _eval_loader(cfg, "train", modality)
    test_loader, test_ds = _eval_loader(cfg, "val", modality)
    stages = list(cfg.eval.stages) or None
    tr = extract_features(encoder, train_loader, device=device, modality=modality, stages=stages, progress=progress)
    te = extract_features(encoder, test_loader, device=device, modality=modality, stages=stages, progress=progress)
    num_classes = int(cfg.num_classes or (max(max(train_ds.labels), max(test_ds.labels)) + 1))
    e = cfg.eval
    rows: List[Dict[str, Any]] = []

    def pick(feats: Any) -> torch.Tensor:
        return feats[stages[-1]] if isinstance(feats, dict) else feats

    for protocol in protocols:
        ts = time.perf_counter()
        if protocol == "linear":
            m = linear_evaluate(
                pick(tr["features"]), tr["labels"], pick(te["features"]), te["labels"], num_classes,
                test_video_index=te["index"], mode=e.aggregation, epochs=e.linear_epochs, lr=e.linear_lr,
                weight_decay=e.linear_weight_decay, seed=cfg.seed,
            )
        elif protocol == "knn":
            m = knn_evaluate(
                pick(tr["features"]), tr["labels"], pick(te["features"]), te["labels"], num_classes,
                k=e.knn_k, temperature=e.knn_temperature, test_video_index=te["index"],
            )
        elif protocol == "folds":
            # ESC-50's shape: every video of both parts in 5 stratified folds, a probe per held-out fold.
            from avssl.eval.linear import cross_validated_linear_probe, stratified_folds

            feats = torch.cat([pick(tr["features"]), pick(te["features"])])
            labels = torch.cat([tr["labels"], te["labels"]])
            index = torch.cat([tr["index"], te["index"] + int(tr["index"].max()) + 1])
            video_labels = torch.zeros(int(index.max()) + 1, dtype=torch.long)
            video_labels[index] = labels
            fold = stratified_folds(video_labels.tolist(), folds=5, seed=cfg.seed)[index]
            m = cross_validated_linear_probe(feats, labels, num_classes, fold, video_index=index, mode=e.aggregation,
                                             epochs=e.linear_epochs, lr=e.linear_lr,
                                             weight_decay=e.linear_weight_decay, seed=cfg.seed)
            m.update({"video_top5": float("nan"), "mean_class_accuracy": float("nan")})
        else:
            raise ValueError(f"unknown protocol {protocol!r}; choose linear, knn or folds (fine-tuning: avssl finetune)")
        rows.append({"encoder": name, "modality": modality, "protocol": protocol, **m, "eval_s": time.perf_counter() - ts})
    if stages and len(stages) > 1:
        per_stage = layerwise_linear_probe(
            tr["features"], tr["labels"], te["features"], te["labels"], num_classes,
            test_video_index=te["index"], mode=e.aggregation, epochs=e.linear_epochs, lr=e.linear_lr, seed=cfg.seed,
        )
        for stage, m in per_stage.items():
            rows.append({"encoder": name, "modality": modality, "protocol": f"linear@{stage}", **m})
    if plot and out_dir:
        from avssl.eval.plots import plot_embedding

        os.makedirs(out_dir, exist_ok=True)
        safe = "".join(c if c.isalnum() else "_" for c in name)
        names = getattr(test_ds, "classes", None) or None
        plot_embedding(pick(te["features"]), te["labels"], os.path.join(out_dir, f"embedding_{safe}.png"),
                       class_names=names, title=f"{name}: {modality} features of held-out videos")
    for r in rows:
        r.setdefault("wall_s", time.perf_counter() - t0)
    return rows


def cma_figure(cfg: Any, checkpoint: str, refs: Sequence[int], path: str, k: int = 5) -> Dict[str, Any]:
    """PNG of chosen training videos with their CMA positives and their nearest neighbours by video only
    and by audio only, from an ``avid_cma`` checkpoint's memory banks (rows = training-set indices)."""
    import torch

    from avssl.data.datamodule import make_dataset
    from avssl.data.decoding import read_clip
    from avssl.eval.plots import cma_neighbour_table, plot_cma_positives

    method = load_method(checkpoint)
    crit = getattr(method, "criterion", None)
    if crit is None or not hasattr(crit, "video_bank"):
        raise ValueError(f"{checkpoint} holds no memory banks (train it with method.name=avid_cma)")
    table = cma_neighbour_table(crit.video_bank.weight.float(), crit.audio_bank.weight.float(), refs, k=k,
                                agreement=cfg.method.cma_agreement if hasattr(cfg.method, "cma_agreement") else "min")
    ds = make_dataset(cfg, "train", train=False, needs_audio=False)
    needed = sorted({int(i) for i in refs} | {int(i) for t in table.values() for i in t.flatten().tolist()})
    frames: Dict[int, torch.Tensor] = {}
    for i in needed:
        row = ds.rows[i]
        start, end = row.window_in_path()
        mid = (start or 0.0) + 0.5 * ((end or row.duration or 0.0) - (start or 0.0))
        frames[i] = read_clip(row.path, start=max(0.0, mid - 0.05), duration=0.1, num_frames=1, audio=False).video[0]
    plot_cma_positives(frames, table, refs, path, labels=ds.labels)
    return {k_: v.tolist() for k_, v in table.items()}
