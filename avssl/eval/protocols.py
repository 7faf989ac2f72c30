"""Evaluation protocols, in one registry: each takes a config and a checkpoint and returns result rows.

=============== =========================================================================================
protocol        what it measures
=============== =========================================================================================
``linear``      a linear probe on frozen features of the train part, tested on the val part
``knn``         a weighted kNN classifier on the same frozen features
``folds``       ESC-50's shape: every video of both parts in 5 stratified folds, a probe per held-out fold
``layerwise``   a linear probe per stage of ``eval.stages`` (rows ``linear@<stage>``)
``finetune``    the encoder and a classifier trained end to end (the config's supervised method), then
                multi-view testing on the val part (as ``test``)
``retrieval``   video→audio and audio→video recall@k among the val videos, in an audio-visual method's
                joint space
``test``        a fine-tuned classifier's multi-view test on the val part (``avssl test``): per-video
                predictions (CSV) and the confusion matrix (PNG) in the output folder
=============== =========================================================================================

A protocol is a function ``(cfg, checkpoint, **opts) -> list of rows`` registered in :data:`PROTOCOLS`
(``checkpoint=None``: a randomly initialised encoder). :func:`evaluate` runs several and returns all their
rows; the frozen-feature protocols of one call share one extraction (:class:`FrozenFeatures`).

Frozen features use K = ``data.test_clips`` uniformly spaced clips × ``data.test_crops`` crops per video. The
probe and the kNN bank take the mean of each train video's views (``eval.train_views: mean``, one row per video;
``flatten`` keeps every view as a row), and test views are aggregated per video (``eval.aggregation``).

Features are extracted on the GPU when there is one, under bf16 autocast there (``eval.precision``), in batches
of ``eval.batch_size`` clips, split across ranks when launched by torchrun
(:func:`~avssl.eval.features.extract_dataset`); the linear probe and the kNN classifier run on the same device.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from avssl.registry import Registry

Row = Dict[str, Any]
PROTOCOLS: Registry[List[Row]] = Registry("evaluation protocol")


def available_protocols() -> List[str]:
    """The protocols' names, in the order of the table above."""
    return PROTOCOLS.names(sort=False)


def eval_device() -> torch.device:
    """Where evaluation runs: this process's GPU when there is one (``cuda:LOCAL_RANK`` under torchrun), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))


def encoder_from(cfg: Any, checkpoint: Optional[str], modality: str) -> Any:
    """The ``modality`` encoder of a trained checkpoint, or a randomly initialised one (``checkpoint=None``)."""
    if checkpoint:
        from avssl.engine import load_method

        return load_method(checkpoint).encoder_for(modality)
    import lightning as L

    from avssl.methods.base import Method

    L.seed_everything(cfg.seed, verbose=False)
    if modality not in ("video", "audio", "image"):
        raise ValueError(f"modality must be video, audio or image, got {modality!r}")
    enc_cfg = getattr(cfg.model, modality)
    if enc_cfg is None:
        raise ValueError(f"model.{modality} is not set in the config: name the {modality} encoder to evaluate")
    return Method.make_encoder(enc_cfg, f"model.{modality}").eval()


def eval_loader(cfg: Any, part: str, modality: str) -> Any:
    """(loader, dataset) of test-style views (K uniform clips, centre or three crops) over the train or val part."""
    from torch.utils.data import DataLoader

    from avssl.data.datamodule import make_dataset

    ds = make_dataset(cfg, part, train=False, needs_audio=modality == "audio")
    return DataLoader(ds, batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers, shuffle=False), ds


@dataclass
class Extracted:
    """Frozen features of both parts: ``train`` / ``test`` as :func:`~avssl.eval.features.extract_features`
    returns them (features per stage when ``stages`` is set), the class count, and the val dataset."""

    train: Dict[str, Any]
    test: Dict[str, Any]
    num_classes: int
    test_set: Any
    stages: Optional[List[str]]

    def pick(self, feats: Any) -> torch.Tensor:
        """The features a single-stage protocol uses: the last of ``eval.stages``, or the pooled output."""
        return feats[self.stages[-1]] if isinstance(feats, dict) else feats  # type: ignore[index]


class FrozenFeatures:
    """The frozen ``modality`` encoder of ``checkpoint`` and its features of the train and val parts, extracted
    once (on first use) and shared by the protocols of one :func:`evaluate` call."""

    def __init__(self, cfg: Any, checkpoint: Optional[str], modality: Optional[str] = None,
                 name: Optional[str] = None, progress: bool = True) -> None:
        self.cfg, self.checkpoint, self.progress = cfg, checkpoint, progress
        self.modality = modality or cfg.eval.modality
        self.name = name or encoder_name(checkpoint)
        self._extracted: Optional[Extracted] = None

    def get(self) -> Extracted:
        if self._extracted is None:
            from avssl.data.datamodule import make_dataset
            from avssl.eval.features import amp_dtype_for, extract_dataset

            cfg, modality, e = self.cfg, self.modality, self.cfg.eval
            encoder = encoder_from(cfg, self.checkpoint, modality)
            train_ds, test_ds = (make_dataset(cfg, part, train=False, needs_audio=modality == "audio")
                                 for part in ("train", "val"))
            stages = list(e.stages) or None
            dev = eval_device()
            common = dict(batch_size=int(e.batch_size or cfg.data.batch_size), num_workers=int(cfg.data.num_workers),
                          device=dev, modality=modality, stages=stages, amp_dtype=amp_dtype_for(e.precision, dev),
                          progress=self.progress)
            tr = extract_dataset(encoder, train_ds, views=e.train_views, **common)
            te = extract_dataset(encoder, test_ds, views="flatten", **common)
            num_classes = int(cfg.num_classes or (max(max(train_ds.labels), max(test_ds.labels)) + 1))
            self._extracted = Extracted(tr, te, num_classes, test_ds, stages)
        return self._extracted

    @property
    def extracted(self) -> bool:
        return self._extracted is not None

    def row(self, protocol: str, metrics: Dict[str, Any], started: Optional[float] = None) -> Row:
        """A result row: encoder, modality, protocol, the metrics (and ``eval_s`` since ``started``)."""
        row: Row = {"encoder": self.name, "modality": self.modality, "protocol": protocol, **metrics}
        if started is not None:
            row["eval_s"] = time.perf_counter() - started
        return row


def encoder_name(checkpoint: Optional[str]) -> str:
    """How rows name an encoder by default: its checkpoint's file name, or ``random init``."""
    return os.path.basename(checkpoint) if checkpoint else "random init"


def _frozen(cfg: Any, checkpoint: Optional[str], opts: Dict[str, Any]) -> FrozenFeatures:
    shared = opts.get("features")
    if shared is not None:
        return shared
    return FrozenFeatures(cfg, checkpoint, modality=opts.get("modality"), name=opts.get("name"),
                          progress=opts.get("progress", True))


def frozen_protocol(name: str) -> Callable[[Callable[[Extracted, Any], Dict[str, Any]]], Callable[..., List[Row]]]:
    """Register ``score(extracted, cfg) -> metrics`` as the protocol ``name`` on frozen features: it gets the
    call's shared features (:class:`FrozenFeatures`) and gives one row, timed from after the extraction."""
    def register(score: Callable[[Extracted, Any], Dict[str, Any]]) -> Callable[..., List[Row]]:
        def run(cfg: Any, checkpoint: Optional[str], **opts: Any) -> List[Row]:
            f = _frozen(cfg, checkpoint, opts)
            x = f.get()
            t0 = time.perf_counter()
            return [f.row(name, score(x, cfg), t0)]

        run.__doc__, run.__name__ = score.__doc__, score.__name__
        return PROTOCOLS.register(name)(run)

    return register


@frozen_protocol("linear")
def linear(x: Extracted, cfg: Any) -> Dict[str, Any]:
    """Linear probe on frozen features (``eval.linear_*``), tested per video."""
    from avssl.eval.linear import linear_evaluate

    e = cfg.eval
    return linear_evaluate(x.pick(x.train["features"]), x.train["labels"], x.pick(x.test["features"]),
                           x.test["labels"], x.num_classes, test_video_index=x.test["index"], mode=e.aggregation,
                           epochs=e.linear_epochs, lr=e.linear_lr, weight_decay=e.linear_weight_decay, seed=cfg.seed,
                           device=eval_device())


@frozen_protocol("knn")
def knn(x: Extracted, cfg: Any) -> Dict[str, Any]:
    """Weighted kNN (``eval.knn_k``, ``eval.knn_temperature``) on frozen features, tested per video."""
    from avssl.eval.knn import knn_evaluate

    e = cfg.eval
    return knn_evaluate(x.pick(x.train["features"]), x.train["labels"], x.pick(x.test["features"]), x.test["labels"],
                        x.num_classes, k=e.knn_k, temperature=e.knn_temperature, test_video_index=x.test["index"],
                        device=eval_device())


@frozen_protocol("folds")
def folds(x: Extracted, cfg: Any) -> Dict[str, Any]:
    """ESC-50's shape: every video of both parts in 5 stratified folds, a linear probe per held-out fold."""
    from avssl.eval.linear import cross_validated_linear_probe, stratified_folds

    e = cfg.eval
    feats = torch.cat([x.pick(x.train["features"]), x.pick(x.test["features"])])
    labels = torch.cat([x.train["labels"], x.test["labels"]])
    index = torch.cat([x.train["index"], x.test["index"] + int(x.train["index"].max()) + 1])
    video_labels = torch.zeros(int(index.max()) + 1, dtype=torch.long)
    video_labels[index] = labels
    fold = stratified_folds(video_labels.tolist(), folds=5, seed=cfg.seed)[index]
    m = cross_validated_linear_probe(feats, labels, x.num_classes, fold, video_index=index, mode=e.aggregation,
                                     epochs=e.linear_epochs, lr=e.linear_lr, weight_decay=e.linear_weight_decay,
                                     seed=cfg.seed, device=eval_device())
    m.update({"video_top5": float("nan"), "mean_class_accuracy": float("nan")})
    return m


@PROTOCOLS.register("layerwise")
def layerwise(cfg: Any, checkpoint: Optional[str], **opts: Any) -> List[Row]:
    """A linear probe per stage of ``eval.stages`` (rows ``linear@<stage>``); no rows without stages."""
    from avssl.eval.linear import layerwise_linear_probe

    if not list(cfg.eval.stages):
        return []
    f = _frozen(cfg, checkpoint, opts)
    x, e = f.get(), cfg.eval
    per_stage = layerwise_linear_probe(x.train["features"], x.train["labels"], x.test["features"], x.test["labels"],
                                       x.num_classes, test_video_index=x.test["index"], mode=e.aggregation,
                                       epochs=e.linear_epochs, lr=e.linear_lr, seed=cfg.seed, device=eval_device())
    return [f.row(f"linear@{stage}", m) for stage, m in per_stage.items()]


@PROTOCOLS.register("finetune")
def finetune(cfg: Any, checkpoint: Optional[str], **opts: Any) -> List[Row]:
    """Fine-tuning with the config's supervised method from ``checkpoint``, then multi-view testing."""
    from avssl.eval.finetune import finetune_and_evaluate

    return [finetune_and_evaluate(cfg, checkpoint, name=opts.get("name"), out_dir=opts.get("out_dir"))]


@PROTOCOLS.register("retrieval")
def retrieval(cfg: Any, checkpoint: Optional[str], **opts: Any) -> List[Row]:
    """Video↔audio recall@k among the val videos, in the joint space of an audio-visual checkpoint."""
    from avssl.eval.retrieval import retrieval_evaluate

    _check_checkpoint("retrieval", checkpoint)
    r = retrieval_evaluate(cfg, checkpoint)
    return [{"encoder": opts.get("name") or encoder_name(checkpoint), "protocol": "retrieval", **r}]


@PROTOCOLS.register("test")
def multiview(cfg: Any, checkpoint: Optional[str], **opts: Any) -> List[Row]:
    """Multi-view test of the fine-tuned classifier of ``checkpoint`` on the val part (``data.test_clips`` ×
    ``data.test_crops`` views); with ``out_dir``, per-video predictions and the confusion matrix go there."""
    from avssl.eval.testing import checkpoint_test

    _check_checkpoint("test", checkpoint)
    assert checkpoint is not None
    return [checkpoint_test(cfg, checkpoint, out_dir=opts.get("out_dir"), name=opts.get("name"))]


#: Protocols that evaluate a trained model only (no random-init baseline), and what it must be.
NEEDS_CHECKPOINT = {"retrieval": "an audio-visual method", "test": "a fine-tuned model (avssl finetune)"}


def _check_checkpoint(protocol: str, checkpoint: Optional[str]) -> None:
    if not checkpoint and protocol in NEEDS_CHECKPOINT:
        from avssl.errors import UserError

        raise UserError(f"--protocol {protocol} needs --checkpoint of {NEEDS_CHECKPOINT[protocol]}")


def evaluate(
    cfg: Any,
    checkpoint: Optional[str],
    protocols: Optional[Sequence[str]] = None,
    modality: Optional[str] = None,
    name: Optional[str] = None,
    out_dir: Optional[str] = None,
    plot: bool = False,
    progress: bool = True,
) -> List[Row]:
    """Run ``protocols`` (default: ``eval.protocols``) on ``checkpoint`` (None: a random encoder); their rows.

    ``modality`` (default ``eval.modality``) picks the encoder the frozen-feature protocols evaluate; ``name``
    the encoder's name in the rows. When ``eval.stages`` names several stages, the ``layerwise`` rows follow.
    Protocols that write files (``test``) write them into ``out_dir``. With ``plot`` and ``out_dir``, a 2-D map of
    the held-out features is saved there (PNG).
    """
    protocols = list(cfg.eval.protocols if protocols is None else protocols)
    if len(list(cfg.eval.stages)) > 1 and "layerwise" not in protocols:
        protocols.append("layerwise")
    runs: List[Callable[..., List[Row]]] = [PROTOCOLS.get(p) for p in protocols]  # unknown names fail first
    for p in protocols:
        _check_checkpoint(p, checkpoint)
    t0 = time.perf_counter()
    shared = FrozenFeatures(cfg, checkpoint, modality=modality, name=name, progress=progress)
    rows: List[Row] = []
    for run in runs:
        rows += run(cfg, checkpoint, features=shared, modality=shared.modality, name=name, progress=progress,
                    out_dir=out_dir)
    if plot and out_dir and shared.extracted:
        from avssl.eval.plots import plot_embedding

        x = shared.get()
        os.makedirs(out_dir, exist_ok=True)
        safe = "".join(c if c.isalnum() else "_" for c in shared.name)
        plot_embedding(x.pick(x.test["features"]), x.test["labels"], os.path.join(out_dir, f"embedding_{safe}.png"),
                       class_names=getattr(x.test_set, "classes", None) or None,
                       title=f"{shared.name}: {shared.modality} features of held-out videos")
    for r in rows:
        r.setdefault("wall_s", time.perf_counter() - t0)
    return rows


__all__ = ["PROTOCOLS", "FrozenFeatures", "available_protocols", "encoder_from", "eval_device", "eval_loader",
           "evaluate", "folds", "finetune", "knn", "layerwise", "linear", "multiview", "retrieval"]
