"""What every method shares: config, encoders by name, optimiser + schedule, NaN guard, RNG in checkpoints."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import lightning as L
import numpy as np
import torch
import torch.nn as nn

from avssl.config import MethodConfig, to_dict
from avssl.engine import NonFiniteLossError, build_optimizer, build_scheduler


@dataclass
class BaseMethodConfig(MethodConfig):
    """Keys every method takes; each method's ``Config`` extends it.

    ``extra_objectives`` adds weighted pretext tasks to the method's own loss (see
    :mod:`avssl.methods.pretext`): ``{temporal_order: {weight: 0.5, modality: video, ...}}``.
    """

    extra_objectives: Dict[str, Any] = field(default_factory=dict)


class Method(L.LightningModule):
    """Base LightningModule of every method.

    Subclasses set ``Config`` (a dataclass of the keys under ``method:``), build their encoders, heads
    and losses in ``__init__``, and implement :meth:`compute_loss` (a dict with at least ``"loss"``).
    ``modalities`` says what the batches must hold (``video``, ``audio``, ``label``).
    """

    Config = BaseMethodConfig
    modalities: Tuple[str, ...] = ("video",)
    monitor: Optional[str] = None  # metric that picks the "best" checkpoint
    monitor_mode: str = "min"

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.save_hyperparameters({"config": to_dict(cfg)})
        from avssl.methods.pretext import build_extra_objectives

        # Built here from the encoder configs (feature sizes read on the meta device), so every method
        # takes them without code of its own, and their heads are in the optimiser and the checkpoint.
        self.extra_objectives = build_extra_objectives(cfg)
        self._frozen: Tuple[str, ...] = ()

    # -- building --------------------------------------------------------------------------------
    def freeze(self, name: str) -> None:
        """Hold the submodule ``name`` fixed: no gradients, and kept in eval mode by :meth:`train`, so its
        BatchNorm statistics stay as they are too (a zero learning rate alone would let them refit)."""
        module = getattr(self, name)
        module.requires_grad_(False)
        module.eval()
        if name not in self._frozen:
            self._frozen = (*self._frozen, name)

    def train(self, mode: bool = True) -> "Method":
        super().train(mode)
        for name in getattr(self, "_frozen", ()):
            getattr(self, name).eval()
        return self

    @staticmethod
    def make_encoder(enc_cfg: Any) -> nn.Module:
        from avssl.models import build_encoder

        if enc_cfg is None:
            raise ValueError("this method needs an encoder here; set model.video / model.audio in the config")
        return build_encoder(enc_cfg.name, **dict(enc_cfg.kwargs or {}))

    def encoder_for(self, modality: str) -> nn.Module:
        """The encoder evaluated for ``modality`` (``video`` or ``audio``)."""
        enc = getattr(self, f"{modality}_encoder", None)
        if enc is None:
            raise ValueError(f"{type(self).__name__} has no {modality} encoder")
        return enc

    # -- training --------------------------------------------------------------------------------
    def compute_loss(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement compute_loss")

    def training_step(self, batch: Dict[str, Any], batch_idx: int) -> torch.Tensor:
        out = self.compute_loss(batch)
        if len(self.extra_objectives):
            out = self.add_extra_objectives(batch, out)
        loss = out["loss"]
        if not bool(torch.isfinite(loss.detach()).all()):
            raise NonFiniteLossError(
                f"the loss is {loss.detach().float().item()} at step {self.global_step} (epoch {self.current_epoch}, "
                f"batch {batch_idx}); training stopped. The last good checkpoint is "
                f"{self.cfg.output_dir}/checkpoints/last.ckpt. Try a lower optim.lr, trainer.gradient_clip_val, "
                "or trainer.precision=32-true."
            )
        bsz = _batch_size(batch)
        for key, value in out.items():
            self.log(f"train/{key}", value.detach(), on_step=True, on_epoch=True, prog_bar=key == "loss", batch_size=bsz)
        return loss

    def add_extra_objectives(self, batch: Dict[str, Any], out: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """``out["loss"]`` + Σ weight·task loss over ``method.extra_objectives``, each task run with this
        method's encoder for its modality on ``batch[modality]``; the tasks' keys are added as ``<task>/<key>``."""
        from avssl.methods.pretext import select_view

        out = dict(out)
        total = out["loss"]
        for name, extra in self.extra_objectives.items():
            if extra.modality not in batch:
                raise KeyError(f"method.extra_objectives.{name} reads batch[{extra.modality!r}], which this "
                               f"method's batches do not have (keys: {sorted(batch)})")
            got = extra.task(self.encoder_for(extra.modality), select_view(batch[extra.modality], extra.modality))
            total = total + extra.weight * got["loss"]
            for key, value in got.items():
                out[f"{name}/{key}"] = value
        out["loss"] = total
        return out

    def configure_optimizers(self) -> Any:
        o = self.cfg.optim
        lr = o.lr
        if o.base_batch_size:
            world = self.trainer.world_size if self.trainer is not None else 1
            lr = o.lr * self.cfg.data.batch_size * world * self.cfg.trainer.accumulate_grad_batches / o.base_batch_size
        optimizer = build_optimizer(self, o, lr=lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = max(1, self.trainer.max_epochs or 1)
        scheduler = build_scheduler(optimizer, o, total_steps=total, steps_per_epoch=max(1, total // epochs))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- reproducible resume -----------------------------------------------------------------------
    def on_train_start(self) -> None:
        # Lightning skips on_train_epoch_start when it resumes inside an epoch, yet what that hook sets for the
        # epoch (frozen parts, BatchNorm modes, cluster or positive sets) must hold for the rest of it too; the
        # hooks skip work already done in the epoch (its results are in the checkpoint).
        if self.trainer.fit_loop.restarted_mid_epoch:
            self.on_train_epoch_start()

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        # Plain tensors and ints only, so checkpoints load with torch.load(weights_only=True).
        name, keys, pos, has_gauss, cached = np.random.get_state()
        version, state, gauss = random.getstate()
        checkpoint["avssl_rng"] = {
            "torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached": float(cached)},
            "python": {"version": int(version), "state": torch.tensor(state, dtype=torch.int64),
                       "gauss": None if gauss is None else float(gauss)},
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            # Dropout and sampling on the GPU draw from the CUDA generators, one per device.
            checkpoint["avssl_rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        rng = checkpoint.get("avssl_rng")
        if not rng:
            return
        torch.set_rng_state(rng["torch"])
        n = rng["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
        p = rng["python"]
        random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
        cuda = rng.get("cuda")
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def _batch_size(batch: Dict[str, Any]) -> int:
    for key in ("video", "audio", "label"):
        v = batch.get(key) if isinstance(batch, dict) else None
        if isinstance(v, torch.Tensor):
            return int(v.shape[0])
    return 1


def flatten_views(x: torch.Tensor, view_dims: int) -> Tuple[torch.Tensor, int]:
    """B×V×... -> (B·V)×..., V (V = 1 when ``x`` has ``view_dims`` dims, i.e. no view axis)."""
    if x.dim() == view_dims + 1:
        b, v = x.shape[:2]
        return x.flatten(0, 1), v
    return x, 1
