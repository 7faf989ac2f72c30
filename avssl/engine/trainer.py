"""PyTorch Lightning's Trainer, set up from a config, with avssl's checkpoints and stop signals.

Lightning gives devices and nodes (DDP; torchrun and SLURM launches are detected), precision, gradient
accumulation and clipping, and checkpoint/resume. This module adds checkpoints (``last.ckpt`` and the one
before, written atomically, read with ``weights_only=True``; saved on SIGTERM/SIGINT/SIGUSR1 before stopping)
and the trainer assembly.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from typing import Any, Dict, List, Optional

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, Checkpoint, LearningRateMonitor, ModelCheckpoint

from avssl.checkpoint import LAST, PREVIOUS, load_checkpoint
from avssl.utils import atomic_write

log = logging.getLogger(__name__)


# -- checkpoints ---------------------------------------------------------------------------------
class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same folder, then renames it into place, so an
    interrupted save never leaves a truncated ``last.ckpt``; reads through :func:`avssl.checkpoint.load_checkpoint`
    (``weights_only=True``), so resuming never runs code from the file."""

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        atomic_write(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path: Any, map_location: Optional[Any] = None,
                        weights_only: Optional[bool] = None) -> Dict[str, Any]:
        return load_checkpoint(path, map_location=map_location or "cpu")


class TrainingInterrupted(Exception):
    """Training stopped on a signal (SIGTERM, SIGINT, SIGUSR1) after saving ``checkpoint`` at the current step.

    ``exit_code`` is the shell's convention for death by that signal (128 + its number: 143, 130, 138), so a
    scheduler sees that the job did not finish; rerunning the same command resumes from the checkpoint.
    """

    def __init__(self, signum: int, checkpoint: Optional[str], step: int) -> None:
        self.signum, self.checkpoint, self.step = int(signum), checkpoint, int(step)
        self.exit_code = 128 + self.signum
        name = signal.Signals(self.signum).name
        saved = f"saved {checkpoint}" if checkpoint else "no checkpoint written yet"
        super().__init__(f"training stopped by {name} at step {step}; {saved}; rerun the same command to resume")


#: Signals that stop a run cleanly: schedulers pre-empt with SIGTERM (SLURM warns with SIGUSR1), Ctrl-C is SIGINT.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class LastCheckpoint(Checkpoint):
    """Keeps ``last.ckpt`` current, and the one before it as ``last.prev.ckpt``: at every epoch end, every
    ``every_n_steps`` optimiser steps, and when a stop signal arrives.

    From the start of training to its end it handles SIGTERM, SIGINT and SIGUSR1 (see :data:`STOP_SIGNALS`): the
    step under way finishes, ``last.ckpt`` is saved at that step (mid-epoch; the loader's position is in it) and
    :class:`TrainingInterrupted` is raised. Under SLURM (``SLURM_JOB_ID`` set) SIGUSR1 also asks
    ``scontrol requeue`` for the job, as Lightning's SLURM environment does. A second SIGINT interrupts at once.
    Under DDP the ranks agree on stopping at the same step.
    """

    def __init__(self, dirpath: str, every_n_steps: Optional[int] = None) -> None:
        super().__init__()
        self.dirpath = dirpath
        self.every_n_steps = every_n_steps or 0
        self._signum: Optional[int] = None
        self._previous_handlers: Dict[int, Any] = {}
        self._step_seen = -1

    @property
    def last_path(self) -> str:
        return os.path.join(self.dirpath, LAST)

    def save(self, trainer: Trainer) -> str:
        """Move ``last.ckpt`` to ``last.prev.ckpt`` and write the current state as ``last.ckpt`` (atomically)."""
        last = self.last_path
        if trainer.is_global_zero:
            os.makedirs(self.dirpath, exist_ok=True)
            if os.path.exists(last):
                os.replace(last, os.path.join(self.dirpath, PREVIOUS))
        trainer.save_checkpoint(last, weights_only=False)  # the full training state, not only the weights
        return last

    # -- when to save ----------------------------------------------------------------------------
    def on_train_start(self, trainer: Trainer, pl_module: Any) -> None:
        self._step_seen = trainer.global_step
        # Lightning's own SIGTERM handler (installed just before) ends fit() with exit status 0 and no save.
        self._install_handlers()

    def on_train_batch_end(self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        # With gradient accumulation only a batch that completed an optimiser step is a step boundary.
        if trainer.global_step == self._step_seen:
            return
        self._step_seen = trainer.global_step
        stop = self._stop_requested(trainer)
        if stop or (self.every_n_steps and trainer.global_step % self.every_n_steps == 0):
            self.save(trainer)
        if stop:
            self._stop(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
        self.save(trainer)
        if self._stop_requested(trainer):
            self._stop(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: Any) -> None:
        self._restore_handlers()

    def on_exception(self, trainer: Trainer, pl_module: Any, exception: BaseException) -> None:
        self._restore_handlers()

    def teardown(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        self._restore_handlers()

    # -- signals ---------------------------------------------------------------------------------
    def _install_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in STOP_SIGNALS:
            if signum not in self._previous_handlers:
                self._previous_handlers[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous_handlers = {}

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self._signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without waiting for the step to end
        if self._signum is None:
            self._signum = signum
            log.warning("received %s: stopping after the current step and saving a checkpoint",
                        signal.Signals(signum).name)

    def _stop_requested(self, trainer: Trainer) -> bool:
        # Every rank calls this at the same step; any rank's signal stops them all there.
        return bool(trainer.strategy.reduce_boolean_decision(self._signum is not None, all=False))

    def _stop(self, trainer: Trainer) -> None:
        signum = self._signum if self._signum is not None else signal.SIGTERM  # another rank got the signal
        if signum == signal.SIGUSR1 and trainer.is_global_zero:
            _slurm_requeue()
        raise TrainingInterrupted(signum, self.last_path, trainer.global_step)


def _slurm_requeue() -> None:
    """Ask SLURM to requeue this job (SIGUSR1 is SLURM's warning before the time limit); logged, never fatal."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID")
    if not job:
        return
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("could not requeue SLURM job %s: %s", job, e)
        return
    if result.returncode == 0:
        log.info("requeued SLURM job %s", job)
    else:
        log.warning("scontrol requeue %s failed (%d): %s", job, result.returncode, result.stderr.strip())


#: ``lightning.Trainer`` arguments that avssl sets itself: ``trainer.extra`` may not hold them.
ENGINE_TRAINER_ARGS = ("logger", "callbacks", "plugins", "default_root_dir", "use_distributed_sampler",
                       "enable_progress_bar", "enable_model_summary")
#: ``lightning.Trainer`` arguments that have a key of their own (``trainer.<key>``); ``enable_progress_bar``
#: is ``trainer.progress_bar``.
CONFIG_TRAINER_ARGS = ("max_epochs", "max_steps", "accelerator", "devices", "num_nodes", "strategy", "precision",
                       "accumulate_grad_batches", "gradient_clip_val", "sync_batchnorm", "log_every_n_steps",
                       "check_val_every_n_epoch", "limit_train_batches", "limit_val_batches", "deterministic")


def trainer_extra_problem(keys: List[str]) -> Optional[str]:
    """What is wrong with ``trainer.extra`` holding ``keys``, or None: each must be a ``lightning.Trainer``
    argument that neither another config key nor avssl sets."""
    import difflib
    import inspect

    known = [p for p in inspect.signature(Trainer.__init__).parameters if p != "self"]
    for key in keys:
        if key in CONFIG_TRAINER_ARGS:
            return f"trainer.extra.{key}: set trainer.{key} instead"
        if key in ENGINE_TRAINER_ARGS:
            what = {"logger": "trainer.loggers", "enable_progress_bar": "trainer.progress_bar"}.get(key)
            return f"trainer.extra.{key} is set by avssl" + (f"; use {what}" if what else "")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
            hint = f" (nearest: {', '.join(close)})" if close else ""
            return f"trainer.extra.{key} is not an argument of lightning.Trainer{hint}"
    return None


def build_trainer(
    cfg: Any,
    output_dir: Optional[str] = None,
    callbacks: Optional[List[Callback]] = None,
    monitor: Optional[str] = None,
    mode: str = "min",
    syncs_own_buffers: bool = False,
    **overrides: Any,
) -> Trainer:
    """A ``lightning.Trainer`` from ``cfg.trainer``, logging to ``output_dir`` (``trainer.loggers``: CSV,
    TensorBoard, Weights & Biases), saving ``last.ckpt`` and the one before (every epoch, every
    ``checkpoint_every_n_steps``, and on a stop signal: see :class:`LastCheckpoint`) and the best by the method's
    monitored metric, measuring throughput (:class:`~avssl.engine.telemetry.Throughput`).

    A distributed run gets a ``DDPStrategy`` built from ``trainer.strategy`` and ``trainer.ddp``
    (:func:`build_strategy`; ``syncs_own_buffers``: the method keeps its buffers in sync itself, so they are not
    broadcast). ``trainer.extra`` is passed on as it is; ``overrides`` win over everything.
    """
    from avssl.engine.telemetry import RunProgressBar, Throughput

    t = cfg.trainer
    output_dir = output_dir or cfg.output_dir
    os.makedirs(output_dir, exist_ok=True)
    ckpt_dir = os.path.join(output_dir, "checkpoints")
    cbs: List[Callback] = [
        # last.ckpt (and the one before) for resuming: every epoch, every checkpoint_every_n_steps, on a signal.
        LastCheckpoint(ckpt_dir, every_n_steps=t.checkpoint_every_n_steps),
        LearningRateMonitor(logging_interval="step"),
        Throughput(window=t.log_every_n_steps),
    ]
    if monitor:
        # The best by the method's monitored metric, checked when it is computed (validation).
        cbs.append(
            ModelCheckpoint(dirpath=ckpt_dir, filename="best-epoch{epoch:03d}", monitor=monitor, mode=mode,
                            save_top_k=1, save_last=False, auto_insert_metric_name=False)
        )
    if t.progress_bar:
        cbs.append(RunProgressBar(leave=True))
    cbs.extend(callbacks or [])
    kwargs: Dict[str, Any] = dict(
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=build_strategy(t, syncs_own_buffers),
        precision=t.precision,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val,
        # torch's SyncBatchNorm runs on CUDA only; CPU (gloo) runs keep per-process statistics.
        sync_batchnorm=t.sync_batchnorm and _distributed(t) and _on_gpu(t.accelerator),
        log_every_n_steps=t.log_every_n_steps,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        deterministic=t.deterministic,
        enable_progress_bar=t.progress_bar,
        logger=build_loggers(t, output_dir),
        callbacks=cbs,
        default_root_dir=output_dir,
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # the datamodule builds its own seeded, epoch-aware samplers
        enable_model_summary=False,
    )
    if t.limit_train_batches is not None:
        kwargs["limit_train_batches"] = t.limit_train_batches
    if t.limit_val_batches is not None:
        kwargs["limit_val_batches"] = t.limit_val_batches
    kwargs.update(dict(t.extra or {}))
    kwargs.update(overrides)
    return Trainer(**kwargs)


def build_loggers(t: Any, output_dir: str) -> List[Any]:
    """The loggers ``trainer.loggers`` names, writing under ``output_dir``; one version folder per launch
    (``logs/version_N``, ``tb/version_N``), so a resumed run never overwrites earlier logs.

    TensorBoard is left out when ``trainer.tensorboard`` is false (older configs) or it is not installed (logged);
    ``wandb`` not installed is a :class:`~avssl.errors.UserError`: the config asked for it by name.
    """
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from avssl.errors import UserError

    loggers: List[Any] = []
    for name in dict.fromkeys(t.loggers):
        if name == "csv":
            loggers.append(CSVLogger(output_dir, name="logs"))
        elif name == "tensorboard" and t.tensorboard:
            try:
                loggers.append(TensorBoardLogger(output_dir, name="tb"))
            except ModuleNotFoundError:
                log.info("tensorboard is not installed; not logging to TensorBoard")
        elif name == "wandb":
            try:
                import wandb  # noqa: F401
            except ModuleNotFoundError:
                raise UserError("trainer.loggers names wandb, which is not installed: pip install 'avssl[wandb]' "
                                "(or leave wandb out of trainer.loggers)") from None
            from lightning.pytorch.loggers import WandbLogger

            loggers.append(WandbLogger(save_dir=output_dir, name=os.path.basename(os.path.abspath(output_dir)),
                                       project=os.environ.get("WANDB_PROJECT", "avssl")))
    return loggers


def build_strategy(t: Any, syncs_own_buffers: bool = False) -> Any:
    """``trainer.strategy`` as Lightning takes it: a ``DDPStrategy`` set from ``trainer.ddp`` when the run uses
    DDP (``ddp`` and its variants, or ``auto`` on several devices or nodes), else the name itself.

    ``trainer.ddp.broadcast_buffers`` left unset (None) is False when ``syncs_own_buffers`` — DDP would otherwise
    send every buffer of rank 0 (an AudioSet run's two memory banks: 1.8 GB) to every rank at every step.
    """
    from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry

    from avssl.config import ConfigError

    ddp = {k: v for k, v in dict(t.ddp or {}).items() if v is not None}
    name = str(t.strategy)
    if name == "auto":
        if not _distributed(t):
            return name
        name = "ddp"
    # The registry's get() builds the strategy; its entry (class and arguments) is the dict item itself.
    entry = dict.get(StrategyRegistry, name)
    if entry is None or not issubclass(entry["strategy"], DDPStrategy):
        if ddp:
            raise ConfigError(f"trainer.ddp applies to DDP strategies (ddp, ddp_spawn, ...); trainer.strategy is {name!r}")
        return name
    kwargs = dict(entry["init_params"])
    if "broadcast_buffers" not in ddp and syncs_own_buffers:
        ddp["broadcast_buffers"] = False
    kwargs.update(ddp)
    return entry["strategy"](**kwargs)


def _distributed(t: Any) -> bool:
    """Whether ``trainer`` runs several processes: several nodes, or several devices."""
    return t.num_nodes > 1 or _device_count(t.devices, t.accelerator) > 1


def _on_gpu(accelerator: str) -> bool:
    if accelerator in ("gpu", "cuda"):
        return True
    return accelerator == "auto" and torch.cuda.is_available()


def _device_count(devices: Any, accelerator: str) -> int:
    if isinstance(devices, int):
        if devices == -1:
            return torch.cuda.device_count() if _on_gpu(accelerator) else 1
        return devices
    if isinstance(devices, (list, tuple)) or type(devices).__name__ == "ListConfig":
        return len(devices)
    text = str(devices).strip()
    if text in ("auto", "-1"):
        return torch.cuda.device_count() if _on_gpu(accelerator) else 1
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    try:
        return int(text)
    except ValueError:
        return 1
