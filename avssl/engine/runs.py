"""Training runs: config in, checkpoint out (``avssl pretrain|finetune``), and methods back from checkpoints.

:func:`fit` trains a config's method and resumes a run exactly; a rerun whose config differs in anything that
decides the weights is refused (:func:`incompatible_keys`). :func:`load_method` rebuilds a trained method from
its checkpoint; :func:`with_overrides` changes a validated config.
"""
from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Dict, List, Optional

import lightning as L
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import OmegaConf

from avssl.config import build_config, to_dict
from avssl.engine.speed import apply_speed_options
from avssl.engine.telemetry import KnnMonitor
from avssl.engine.trainer import TrainingInterrupted, build_trainer
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
    :class:`~avssl.engine.trainer.TrainingInterrupted`.
    """
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from avssl.checkpoint import LAST, resume_checkpoint
    from avssl.data.datamodule import VideoDataModule
    from avssl.methods import build_method, method_class

    _check_trains_something(cfg, trainer_overrides or {})
    cfg = _prepare_cfg(cfg, method_class(cfg.method.name))
    ckpt_dir = os.path.join(cfg.output_dir, "checkpoints")
    if resume:
        _check_rerun(cfg)
        ckpt = resume_checkpoint(ckpt_dir)
    else:
        _set_aside_previous_run(cfg.output_dir)
        ckpt = None
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    method = build_method(cfg.method.name, cfg)  # reads method.init_checkpoint & co. before anything is written
    os.makedirs(cfg.output_dir, exist_ok=True)
    atomic_write_text(os.path.join(cfg.output_dir, CONFIG_FILE), OmegaConf.to_yaml(cfg))
    # Extra objectives may read a modality the method itself does not (e.g. audio for a video method).
    extra = tuple(e.modality for e in getattr(method, "extra_objectives", {}).values())
    # A method without a validation step would only have its validation set decoded for nothing.
    validates = is_overridden("validation_step", method)
    dm = VideoDataModule(cfg, modalities=tuple(dict.fromkeys((*method.modalities, *extra))), validate=validates)
    callbacks = apply_speed_options(method, cfg.trainer)
    knn = KnnMonitor.from_config(cfg)
    if knn is not None:
        callbacks.append(knn)
    trainer = build_trainer(cfg, monitor=method.monitor, mode=method.monitor_mode,
                            callbacks=[*callbacks, *(extra_callbacks or [])],
                            syncs_own_buffers=method.syncs_own_buffers, **(trainer_overrides or {}))
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

#: Keys that may change when a run is resumed: how long it trains, where and how fast it runs, what it logs and
#: monitors, how often it saves, and evaluation settings (test views too). A prefix covers the keys under it.
RESUMABLE_CHANGES = (
    "output_dir", "eval",
    "trainer.max_epochs", "trainer.max_steps", "trainer.accelerator", "trainer.devices", "trainer.num_nodes",
    "trainer.strategy", "trainer.ddp", "trainer.sync_batchnorm", "trainer.precision", "trainer.channels_last",
    "trainer.compile", "trainer.compile_kwargs", "trainer.log_every_n_steps",
    "trainer.check_val_every_n_epoch", "trainer.limit_val_batches", "trainer.checkpoint_every_n_steps",
    "trainer.deterministic", "trainer.progress_bar", "trainer.tensorboard", "trainer.loggers", "trainer.knn_monitor",
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
