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
from avssl.errors import UserError
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

    With ``resume`` (default) a run whose ``output_dir`` already holds a checkpoint continues from it exactly:
    same step, schedule, optimiser, method and RNG state, and the same place in the epoch (see
    :func:`avssl.checkpoint.resume_checkpoint` for the choice of file). Before anything in ``output_dir`` is
    written, its stored ``config.yaml`` is compared with ``cfg`` (:func:`incompatible_keys`): a run with another
    model, method, data or seed is a :class:`~avssl.errors.UserError`. With ``resume=False`` a run already in
    ``output_dir`` is moved into ``output_dir/previous-<time>/`` first, so two runs' files never mix.

    A stop signal (SIGTERM, SIGINT, SIGUSR1) saves ``last.ckpt`` at the current step and raises
    :class:`avssl.engine.TrainingInterrupted`.
    """
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from avssl.checkpoint import LAST, resume_checkpoint
    from avssl.data.datamodule import VideoDataModule
    from avssl.engine import TrainingInterrupted, build_trainer
    from avssl.methods import METHODS

    _check_trains_something(cfg, trainer_overrides or {})
    method_cls = METHODS.get(cfg.method.name)
    cfg = _prepare_cfg(cfg, method_cls)
    ckpt_dir = os.path.join(cfg.output_dir, "checkpoints")
    if resume:
        _check_rerun(cfg)
        ckpt = resume_checkpoint(ckpt_dir)
    else:
        _set_aside_previous_run(cfg.output_dir)
        ckpt = None
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    method = method_cls(cfg)  # reads method.init_checkpoint & co. before anything is written
    os.makedirs(cfg.output_dir, exist_ok=True)
    atomic_write_text(os.path.join(cfg.output_dir, CONFIG_FILE), OmegaConf.to_yaml(cfg))
    # Extra objectives may read a modality the method itself does not (e.g. audio for a video method).
    extra = tuple(e.modality for e in getattr(method, "extra_objectives", {}).values())
    # A method without a validation step would only have its validation set decoded for nothing.
    validates = is_overridden("validation_step", method)
    dm = VideoDataModule(cfg, modalities=tuple(dict.fromkeys((*method.modalities, *extra))), validate=validates)
    trainer = build_trainer(cfg, monitor=method.monitor, mode=method.monitor_mode, callbacks=extra_callbacks,
                            **(trainer_overrides or {}))
    last = os.path.join(ckpt_dir, LAST)
    if ckpt:
        log.info("resuming from %s", ckpt)
    with warnings.catch_warnings():
        if not validates:  # Lightning warns that the (empty) validation loader goes unused: we know.
            warnings.filterwarnings("ignore", message="You passed in a `val_dataloader` but have no `validation_step`")
        # ... and that the checkpoint folder is not empty: a resumed run's is, by design.
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        try:
            trainer.fit(method, datamodule=dm, ckpt_path=ckpt)
        except SIGTERMException:
            # SIGTERM before training started (Lightning's handler is the one in place then): nothing new to save.
            import signal

            raise TrainingInterrupted(signal.SIGTERM, ckpt, trainer.global_step) from None
    if not os.path.exists(last):
        raise UserError(f"training ended without writing {last} (no training batch was run: check "
                        "trainer.limit_train_batches and that data.train has at least one batch)")
    return last


#: The run's config as trained, in its ``output_dir``.
CONFIG_FILE = "config.yaml"

#: Keys that may change when a run is resumed: how long it trains, where and how fast it runs, what it logs,
#: how often it saves, and evaluation settings (test views too). A prefix covers the keys under it.
RESUMABLE_CHANGES = (
    "output_dir", "eval",
    "trainer.max_epochs", "trainer.max_steps", "trainer.accelerator", "trainer.devices", "trainer.num_nodes",
    "trainer.strategy", "trainer.sync_batchnorm", "trainer.precision", "trainer.log_every_n_steps",
    "trainer.check_val_every_n_epoch", "trainer.limit_val_batches", "trainer.checkpoint_every_n_steps",
    "trainer.deterministic", "trainer.progress_bar", "trainer.tensorboard",
    "data.num_workers", "data.backend", "data.video_root", "data.max_failure_fraction", "data.test_clips",
    "data.test_crops",
)


def incompatible_keys(stored: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    """Dotted keys whose values differ between a run's stored config and a new one, except the changes a
    resume allows (:data:`RESUMABLE_CHANGES`).

    Everything else decides what the weights are or how they are trained, so it may not change under a
    resumed run: the method and its keys, the model, the data (corpus, splits, clip shape, batch size, views,
    augmentation), the optimiser and schedule, ``seed``, ``num_classes``, gradient accumulation and clipping,
    ``trainer.limit_train_batches``. A key set on one side only is a difference too (e.g. an encoder kwarg).
    """
    diffs: List[str] = []

    def walk(a: Any, b: Any, prefix: str) -> None:
        if any(prefix == k or prefix.startswith(k + ".") for k in RESUMABLE_CHANGES):
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                walk(a.get(key, _MISSING), b.get(key, _MISSING), f"{prefix}.{key}" if prefix else str(key))
        elif a != b:
            diffs.append(prefix)

    walk(stored, new, "")
    return diffs


_MISSING = object()


def _normalised(data: Dict[str, Any]) -> Dict[str, Any]:
    """``data`` validated and with the schema's defaults filled in, or as it is when it no longer validates."""
    from avssl.config import ConfigError

    try:
        return to_dict(build_config(data))
    except ConfigError:
        return data


def _holds_run(output_dir: str) -> bool:
    ckpt_dir = os.path.join(output_dir, "checkpoints")
    return os.path.isdir(ckpt_dir) and any(f.endswith(".ckpt") for f in os.listdir(ckpt_dir))


def _check_rerun(cfg: Any) -> None:
    """Raise a UserError when ``cfg.output_dir`` holds a run trained with an incompatible config."""
    path = os.path.join(cfg.output_dir, CONFIG_FILE)
    if not (_holds_run(cfg.output_dir) and os.path.exists(path)):
        return
    try:
        stored = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as e:  # noqa: BLE001 - any YAML or OmegaConf failure means the same to the user
        raise UserError(f"cannot read {path} to check that this run continues it ({type(e).__name__}); "
                        "use a new output_dir, or --no-resume to set that run aside and start afresh") from None
    if not isinstance(stored, dict):
        raise UserError(f"{path} holds no config mapping; use a new output_dir, or --no-resume to set that run "
                        "aside and start afresh")
    # Filled with the schema's defaults, so a config written by another avssl version compares key by key.
    old, new = _normalised(stored), to_dict(cfg)
    diffs = incompatible_keys(old, new)
    if diffs:
        shown = ", ".join(f"{k}: {_at(old, k)!r} -> {_at(new, k)!r}" for k in diffs[:4])
        more = f" and {len(diffs) - 4} more" if len(diffs) > 4 else ""
        raise UserError(f"{cfg.output_dir} holds a run trained with another config ({shown}{more}); "
                        "use a new output_dir, or --no-resume to set that run aside and start afresh")


def _at(data: Dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


#: What a run writes into its ``output_dir`` (and ``avssl eval`` beside it): moved aside together by ``--no-resume``.
RUN_ENTRIES = (CONFIG_FILE, "checkpoints", "logs", "tb", "eval")


def _set_aside_previous_run(output_dir: str) -> None:
    """Move a previous run's files in ``output_dir`` into ``output_dir/previous-<time>/`` (a fresh run's
    checkpoints and logs must not mix with another's)."""
    import time

    if not _holds_run(output_dir):
        return
    dest = os.path.join(output_dir, time.strftime("previous-%Y%m%d-%H%M%S"))
    n = 0
    while os.path.exists(dest + (f"-{n}" if n else "")):
        n += 1
    dest += f"-{n}" if n else ""
    os.makedirs(dest)
    for name in RUN_ENTRIES:
        if os.path.exists(os.path.join(output_dir, name)):
            os.replace(os.path.join(output_dir, name), os.path.join(dest, name))
    log.warning("starting afresh: the run already in %s was moved to %s", output_dir, dest)


def _check_trains_something(cfg: Any, trainer_overrides: Dict[str, Any]) -> None:
    """A run that could not train a single step would end without a checkpoint: say so before starting."""
    t = cfg.trainer
    for key in ("max_epochs", "max_steps", "limit_train_batches"):
        value = trainer_overrides.get(key, getattr(t, key))
        if value is not None and value == 0:
            raise UserError(f"trainer.{key}=0 trains nothing, so there would be no checkpoint; set it to at least 1")


def load_method(checkpoint: str, cfg: Optional[Any] = None) -> Any:
    """Rebuild a trained method from its checkpoint (the config is stored inside it)."""
    from avssl.checkpoint import CheckpointError, load_checkpoint
    from avssl.methods import build_method

    state = load_checkpoint(checkpoint)
    if "state_dict" not in state:
        raise CheckpointError(f"checkpoint {checkpoint} has no 'state_dict': it is not an avssl training checkpoint")
    if cfg is None:
        stored = state.get("hyper_parameters", {}).get("config")
        if stored is None:
            raise CheckpointError(f"checkpoint {checkpoint} has no stored config; pass one")
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
