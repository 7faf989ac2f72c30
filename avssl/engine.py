"""Training engine: PyTorch Lightning's Trainer, set up from a config.

Lightning gives devices and nodes (DDP; torchrun and SLURM launches are detected), precision, gradient
accumulation and clipping, and checkpoint/resume. This module adds what the methods share: optimisers
(SGD, AdamW, LARS) with parameter groups that exempt biases and norms from weight decay, a per-step
warm-up + cosine learning-rate schedule, checkpoints (``last.ckpt`` and the one before, written atomically,
read with ``weights_only=True``; saved on SIGTERM/SIGINT/SIGUSR1 before stopping), and the trainer assembly.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import threading
from typing import Any, Dict, Iterable, List, Optional

import torch
import torch.nn as nn
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, Checkpoint, LearningRateMonitor, ModelCheckpoint

from avssl.checkpoint import LAST, PREVIOUS, load_checkpoint
from avssl.errors import NonFiniteLossError  # noqa: F401  (re-exported)
from avssl.utils import atomic_write

log = logging.getLogger(__name__)


# -- optimisers ----------------------------------------------------------------------------------
class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017), as used by BYOL/SimCLR.

    For each parameter with ``lars_adapt`` (its group's flag), the update is scaled by the trust ratio
    ``eta·‖w‖ / (‖g‖ + wd·‖w‖)`` after weight decay is added to the gradient.
    """

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_adapt=True)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                if group["lars_adapt"]:
                    w_norm, g_norm = torch.norm(p), torch.norm(g)
                    trust = torch.where(
                        (w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, torch.ones_like(w_norm)
                    )
                    g = g.mul(trust)
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = torch.clone(g).detach()
                else:
                    buf.mul_(group["momentum"]).add_(g)
                p.add_(buf, alpha=-group["lr"])
        return loss


def _lr_mult_of(name: str, lr_mult: Dict[str, float]) -> float:
    """The multiplier of the longest prefix in ``lr_mult`` that is ``name`` or a module path above it."""
    best, mult = -1, 1.0
    for prefix, m in lr_mult.items():
        if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
            best, mult = len(prefix), float(m)
    return mult


def _flatten_paths(tree: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"a": {"b": 0.1}}`` -> ``{"a.b": 0.1}``: a command-line override ``optim.lr_mult.a.b=0.1`` nests."""
    flat: Dict[str, Any] = {}
    for k, v in dict(tree).items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) or hasattr(v, "items"):
            flat.update(_flatten_paths(dict(v.items()), path + "."))
        else:
            flat[path] = v
    return flat


def param_groups(
    modules: nn.Module, weight_decay: float, exclude_bias_and_norm: bool = True,
    lr_mult: Optional[Dict[str, float]] = None,
) -> List[Dict[str, Any]]:
    """Weights with decay, and biases/norm parameters without (nor LARS adaptation).

    ``lr_mult`` maps module paths (``"audio_encoder"``, ``"video_encoder.layer4"``: prefixes of parameter
    names at a ``.`` boundary; the longest match wins) to learning-rate multipliers; each group carries its
    ``lr_mult`` (1.0 when none applies), and parameters whose multiplier is 0 are left out, i.e. frozen.
    A path that names no trainable parameter, or a negative multiplier, is a ValueError.
    """
    lr_mult = _flatten_paths(lr_mult or {})
    named = [(n, p) for n, p in modules.named_parameters() if p.requires_grad]
    for prefix, m in lr_mult.items():
        if not isinstance(m, (int, float)) or m < 0 or not math.isfinite(m):
            raise ValueError(f"optim.lr_mult[{prefix!r}] must be a finite number >= 0, got {m!r}")
        if not any(n == prefix or n.startswith(prefix + ".") for n, _ in named):
            tops = sorted({n.split(".")[0] for n, _ in named})
            raise ValueError(f"optim.lr_mult names {prefix!r}, which holds no trainable parameter; "
                             f"modules with parameters: {', '.join(tops)}")
    buckets: Dict[tuple, List[torch.nn.Parameter]] = {}
    for name, p in named:
        mult = _lr_mult_of(name, lr_mult)
        if mult == 0.0:
            continue
        no_decay = exclude_bias_and_norm and (p.ndim <= 1 or name.endswith(".bias"))
        buckets.setdefault((mult, no_decay), []).append(p)
    groups: List[Dict[str, Any]] = []
    # Decayed weights at multiplier 1 first: the same group order (and LR-monitor names) as without multipliers.
    for (mult, no_decay), params in sorted(buckets.items(), key=lambda kv: (kv[0][1], kv[0][0] != 1.0, kv[0][0])):
        group: Dict[str, Any] = {"params": params, "weight_decay": 0.0 if no_decay else weight_decay, "lr_mult": mult}
        if no_decay:
            group["lars_adapt"] = False
        groups.append(group)
    if not groups:
        raise ValueError("the optimiser has no parameters to train (all frozen by optim.lr_mult or requires_grad)")
    return groups


def build_optimizer(model: nn.Module, cfg: Any, lr: Optional[float] = None) -> torch.optim.Optimizer:
    """SGD, AdamW or LARS over ``model``'s trainable parameters, from an ``OptimConfig``; every group's
    learning rate is ``lr × its lr_mult`` (see :func:`param_groups`), so the schedule scales them alike."""
    lr = cfg.lr if lr is None else lr
    groups = param_groups(model, cfg.weight_decay, cfg.exclude_bias_and_norm, dict(getattr(cfg, "lr_mult", None) or {}))
    for g in groups:
        g["lr"] = lr * g["lr_mult"]
    name = cfg.name.lower()
    if name == "sgd":
        for g in groups:
            g.pop("lars_adapt", None)
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if name == "adamw":
        for g in groups:
            g.pop("lars_adapt", None)
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas))
    if name == "lars":
        return LARS(groups, lr=lr, momentum=cfg.momentum, eta=cfg.lars_eta)
    raise ValueError(f"unknown optimizer {cfg.name!r}; choose sgd, adamw or lars")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, start_factor: float = 0.01, min_factor: float = 0.0) -> float:
    """LR multiplier at ``step``: linear warm-up from ``start_factor`` to 1, then cosine to ``min_factor``."""
    if warmup_steps > 0 and step < warmup_steps:
        return start_factor + (1.0 - start_factor) * step / warmup_steps
    rest = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / rest)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Any, total_steps: int, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR: warm-up + cosine (``scheduler: cosine``) or warm-up + constant."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    min_factor = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0
    if cfg.scheduler == "cosine":
        fn = lambda s: warmup_cosine(s, total_steps, warmup, cfg.warmup_start_factor, min_factor)  # noqa: E731
    elif cfg.scheduler == "constant":
        fn = lambda s: warmup_cosine(s, total_steps, warmup, cfg.warmup_start_factor, 1.0) if s < warmup else 1.0  # noqa: E731
    else:
        raise ValueError(f"unknown scheduler {cfg.scheduler!r}; choose cosine or constant")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


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


def build_trainer(
    cfg: Any,
    output_dir: Optional[str] = None,
    callbacks: Optional[List[Callback]] = None,
    monitor: Optional[str] = None,
    mode: str = "min",
    **overrides: Any,
) -> Trainer:
    """A ``lightning.Trainer`` from ``cfg.trainer``, logging to ``output_dir`` (TensorBoard + CSV),
    saving ``last.ckpt`` and the one before (every epoch, every ``checkpoint_every_n_steps``, and on a stop
    signal: see :class:`LastCheckpoint`) and the best by the method's monitored metric."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    t = cfg.trainer
    output_dir = output_dir or cfg.output_dir
    os.makedirs(output_dir, exist_ok=True)
    # One version folder per launch (logs/version_N), so a resumed run never overwrites earlier logs.
    loggers: List[Any] = [CSVLogger(output_dir, name="logs")]
    if t.tensorboard:
        try:
            loggers.append(TensorBoardLogger(output_dir, name="tb"))
        except ModuleNotFoundError:
            log.info("tensorboard is not installed; logging to CSV only")
    ckpt_dir = os.path.join(output_dir, "checkpoints")
    cbs: List[Callback] = [
        # last.ckpt (and the one before) for resuming: every epoch, every checkpoint_every_n_steps, on a signal.
        LastCheckpoint(ckpt_dir, every_n_steps=t.checkpoint_every_n_steps),
        LearningRateMonitor(logging_interval="step"),
    ]
    if monitor:
        # The best by the method's monitored metric, checked when it is computed (validation).
        cbs.append(
            ModelCheckpoint(dirpath=ckpt_dir, filename="best-epoch{epoch:03d}", monitor=monitor, mode=mode,
                            save_top_k=1, save_last=False, auto_insert_metric_name=False)
        )
    if t.progress_bar:
        from lightning.pytorch.callbacks import RichProgressBar

        cbs.append(RichProgressBar(leave=True))
    cbs.extend(callbacks or [])
    kwargs: Dict[str, Any] = dict(
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val,
        # torch's SyncBatchNorm runs on CUDA only; CPU (gloo) runs keep per-process statistics.
        sync_batchnorm=t.sync_batchnorm and (t.num_nodes > 1 or _multi_device(t.devices)) and _on_gpu(t.accelerator),
        log_every_n_steps=t.log_every_n_steps,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        deterministic=t.deterministic,
        enable_progress_bar=t.progress_bar,
        logger=loggers,
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
    kwargs.update(overrides)
    return Trainer(**kwargs)


def _on_gpu(accelerator: str) -> bool:
    if accelerator in ("gpu", "cuda"):
        return True
    return accelerator == "auto" and torch.cuda.is_available()


def _multi_device(devices: Any) -> bool:
    if isinstance(devices, int):
        return devices > 1 or devices == -1
    if isinstance(devices, (list, tuple)):
        return len(devices) > 1
    return str(devices) not in ("auto", "1")
