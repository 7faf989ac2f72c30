"""What every method shares, and the base of the methods that train one encoder.

:class:`Method`: config, encoders by name, frozen parts, optimiser + schedule, the NaN guard, extra objectives,
RNG in checkpoints (a resumed run continues exactly). :class:`SingleEncoderMethod`: one encoder,
``model.<method.modality>`` (supervised, the pretext tasks, and the multi-view methods of
:mod:`avssl.methods.views`). The audio-visual base is :class:`avssl.methods.audiovisual.AudioVisualMethod`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Optional, Tuple

import lightning as L
import numpy as np
import torch
import torch.nn as nn

from avssl.config import Check, MethodConfig, to_dict
from avssl.data.batch import batch_size
from avssl.engine.optim import build_optimizer, build_scheduler
from avssl.errors import NonFiniteLossError


@dataclass
class BaseMethodConfig(MethodConfig):
    """Keys every method takes; each method's ``Config`` extends it.

    ``extra_objectives`` adds weighted pretext tasks to the method's own loss (see
    :mod:`avssl.pretext`): ``{temporal_order: {weight: 0.5, modality: video, ...}}``.
    """

    extra_objectives: Dict[str, Any] = field(default_factory=dict)


class Method(L.LightningModule):
    """Base LightningModule of every method.

    Subclasses set ``Config`` (a dataclass of the keys under ``method:``), build their encoders, heads
    and losses in ``__init__`` (after ``super().__init__``), and implement :meth:`compute_loss` (a dict with
    at least ``"loss"``). ``modalities`` says what the batches must hold (``video``, ``audio``, ``label``);
    ``augment`` names the image view recipe used when ``data.kind: image`` and ``data.augment`` is unset.

    ``extra_objectives`` (a ModuleDict of :class:`avssl.pretext.ExtraObjective`, built from
    ``method.extra_objectives`` by :func:`avssl.methods.build_method`) are added to the method's own loss;
    their heads are in the optimiser and the checkpoint.

    ``syncs_own_buffers``: the method keeps its buffers identical on every rank itself (memory banks and queues
    updated from all-gathered embeddings, pseudo-labels sent from rank 0), so DDP need not broadcast them at
    every step (``trainer.ddp.broadcast_buffers`` then defaults to off; see :func:`avssl.engine.build_strategy`).
    """

    Config = BaseMethodConfig
    syncs_own_buffers: ClassVar[bool] = False
    modalities: Tuple[str, ...] = ("video",)
    monitor: Optional[str] = None  # metric that picks the "best" checkpoint
    monitor_mode: str = "min"
    augment: ClassVar[str] = "simclr"

    def __init__(self, cfg: Any, extra_objectives: Optional[nn.ModuleDict] = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.save_hyperparameters({"config": to_dict(cfg)})
        if extra_objectives is None:
            if getattr(cfg.method, "extra_objectives", None):
                raise ValueError("method.extra_objectives is set, but no objectives were built: build the method "
                                 "with avssl.methods.build_method, which builds them from the config")
            extra_objectives = nn.ModuleDict()
        self.extra_objectives = extra_objectives
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
    def make_encoder(enc_cfg: Any, key: str = "model.video / model.audio") -> nn.Module:
        """The encoder ``enc_cfg`` (an ``EncoderConfig``) names; ``key`` names it in the error when it is unset."""
        from avssl.models import build_encoder

        if enc_cfg is None:
            raise ValueError(f"this method needs an encoder at {key}; it is not set in the config")
        return build_encoder(enc_cfg.name, **dict(enc_cfg.kwargs or {}))

    def encoder_for(self, modality: str) -> nn.Module:
        """The encoder evaluated for ``modality`` (``video``, ``audio`` or ``image``)."""
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
        bsz = batch_size(batch)
        for key, value in out.items():
            self.log(f"train/{key}", value.detach(), on_step=True, on_epoch=True, prog_bar=key == "loss", batch_size=bsz)
        return loss

    def add_extra_objectives(self, batch: Dict[str, Any], out: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """``out["loss"]`` + Σ weight·task loss over ``method.extra_objectives``, each task run with this
        method's encoder for its modality on ``batch[modality]``; the tasks' keys are added as ``<task>/<key>``."""
        out = dict(out)
        total = out["loss"]
        for name, extra in self.extra_objectives.items():
            got = extra(self.encoder_for(extra.modality), batch)
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


@dataclass
class SingleEncoderConfig(BaseMethodConfig):
    """Keys of a method that trains one encoder."""

    modality: str = "video"  # the batch entry and the encoder (model.<modality>): video | audio | image

    checks: ClassVar[Dict[str, Check]] = {"modality": Check(choices=("video", "audio", "image"))}


#: An encoder to suggest in errors, per modality.
EXAMPLE_ENCODERS = {"image": "resnet18", "video": "r3d_18", "audio": "audio_resnet18"}


class SingleEncoderMethod(Method):
    """A method that trains one encoder, ``model.<method.modality>``.

    The encoder is registered as ``<modality>_encoder`` (checkpoint keys ``video_encoder.*``,
    ``image_encoder.*`` or ``audio_encoder.*``) and reachable as ``self.encoder``. ``accepts`` lists the
    modalities the method can train; ``batch_keys`` what its batches need besides the modality.
    """

    Config = SingleEncoderConfig
    accepts: ClassVar[Tuple[str, ...]] = ("video", "audio", "image")
    batch_keys: ClassVar[Tuple[str, ...]] = ()

    def __init__(self, cfg: Any, **kw: Any) -> None:
        super().__init__(cfg, **kw)
        m = cfg.method
        modality = str(m.modality)
        if modality not in self.accepts:
            raise ValueError(f"method.modality must be one of {', '.join(self.accepts)} for {m.name!r}; "
                             f"got {modality!r}")
        enc_cfg = getattr(cfg.model, modality, None)
        if enc_cfg is None:
            raise ValueError(
                f"method {m.name!r} with method.modality={modality} needs an encoder at model.{modality}; "
                f"it is not set (e.g. model.{modality}.name={EXAMPLE_ENCODERS[modality]})")
        self.modality = modality
        self.modalities = (modality, *self.batch_keys)
        setattr(self, f"{modality}_encoder", self.make_encoder(enc_cfg))

    @property
    def encoder(self) -> nn.Module:
        """The trained encoder (``model.<modality>``)."""
        return getattr(self, f"{self.modality}_encoder")

    def encoder_for(self, modality: str) -> nn.Module:
        if modality != self.modality:
            raise ValueError(f"{type(self).__name__} was trained on {self.modality} (method.modality); "
                             f"it has no {modality} encoder")
        return self.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One batch of the modality (B×C×T×H×W, B×1×F×T' or B×C×H×W) -> B×out_dim encoder features."""
        return self.encoder(x)
