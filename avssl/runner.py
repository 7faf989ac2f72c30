"""The jobs behind ``avssl pretrain|finetune|eval|extract``: config in, checkpoint/metrics out."""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Sequence

import lightning as L
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


def fit(cfg: Any, resume: bool = True, trainer_overrides: Optional[Dict[str, Any]] = None) -> str:
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
    dm = VideoDataModule(cfg, modalities=method.modalities)
    trainer = build_trainer(cfg, monitor=method.monitor, mode=method.monitor_mode, **(trainer_overrides or {}))
    last = os.path.join(cfg.output_dir, "checkpoints", "last.ckpt")
    ckpt = last if resume and os.path.exists(last) else None
    if ckpt:
        log.info("resuming from %s", ckpt)
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
