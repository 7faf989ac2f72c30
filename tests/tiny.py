"""Configs and batches small enough to build and step any method in a fraction of a second, in memory.

``tiny_config(name)`` gives a validated config for the method ``name`` with narrow encoders for the modalities
it trains (by its base class: one encoder at ``model.<method.modality>``, or a video and an audio encoder), narrow
heads and tiny task keys; ``tiny_batch(method)`` a random batch of the layout its training step reads.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Mapping, Optional

import torch

from avssl.config import build_config

ENCODERS = {
    "image": {"name": "resnet18", "kwargs": {"base_channels": 4}},
    "video": {"name": "r3d_tiny", "kwargs": {"base_channels": 4}},
    "audio": {"name": "audio_conv_tiny", "kwargs": {"base_channels": 4}},
}
#: One sample of each modality (video: enough frames for every temporal task's keys below).
SHAPES = {"image": (3, 16, 16), "video": (3, 5, 16, 16), "audio": (1, 16, 16)}

_VIEWS = {"proj_hidden": 32, "proj_dim": 16}
_AV = {"proj_hidden": 16, "proj_dim": 8}
#: Method keys that keep each method small (the defaults are the papers' sizes).
METHOD_KEYS: Dict[str, Dict[str, Any]] = {
    "simclr": _VIEWS, "barlow_twins": _VIEWS, "vicreg": _VIEWS,
    "moco": {**_VIEWS, "queue_size": 32},
    "byol": {**_VIEWS, "pred_hidden": 16},
    "simsiam": {**_VIEWS, "pred_hidden": 16},
    "swav": {**_VIEWS, "num_prototypes": 10},
    "avid_cma": {**_AV, "num_negatives": 8},
    "xmodal_nce": _AV,
    "audio_clusters": {"num_clusters": 3},
    "temporal_order": {"task": {"hidden": 8}},
    "vcop": {"task": {"clip_frames": 1, "gap": 0, "hidden": 8}},
    "jigsaw": {"task": {"num_permutations": 4, "hidden": 8}},
    "relative_position": {"task": {"hidden": 8}},
    "tracking_triplet": {"task": {"patch": 6, "patch_size": 8, "search": 3, "embed_dim": 8}},
    "pirl": {"task": {"embed_dim": 8}},
}


def _set(tree: Dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


def tiny_config(name: str, modality: Optional[str] = None, overrides: Mapping[str, Any] = (), **method: Any):
    """A validated config of method ``name`` (trained on ``modality``, default the method's own) with tiny
    encoders and heads. ``overrides``: dotted keys -> values (``{"seed": 1, "model.audio": None}``);
    ``method``: more keys under ``method``."""
    from avssl.methods import method_class
    from avssl.methods.audiovisual import AudioVisualMethod

    cls = method_class(name)
    data: Dict[str, Any] = {
        "method": {"name": name, **copy.deepcopy(METHOD_KEYS.get(name, {})), **method},
        "model": {"video": None, "audio": None, "image": None},
        "optim": {"name": "sgd", "lr": 0.1, "weight_decay": 0.0},
    }
    if "label" in cls.modalities:
        data["num_classes"] = 3
    if issubclass(cls, AudioVisualMethod):
        data["model"].update(video=copy.deepcopy(ENCODERS["video"]), audio=copy.deepcopy(ENCODERS["audio"]))
    else:
        modality = modality or data["method"].get("modality") or cls.Config().modality
        data["method"]["modality"] = modality
        data["model"][modality] = copy.deepcopy(ENCODERS[modality])
    for key, value in dict(overrides).items():
        _set(data, key, value)
    return build_config(data)


def tiny_batch(method: Any, b: int = 4, views: int = 2, seed: int = 0) -> Dict[str, Any]:
    """A random batch for ``method``'s training step: each modality it reads (with ``views`` views for a
    multi-view method), ``label`` and ``index``."""
    from avssl.methods.views import MultiViewMethod

    g = torch.Generator().manual_seed(seed)
    lead = (b, views) if isinstance(method, MultiViewMethod) else (b,)
    batch: Dict[str, Any] = {m: torch.randn(*lead, *SHAPES[m], generator=g)
                             for m in method.modalities if m in SHAPES}
    batch["label"] = torch.arange(b) % 3
    batch["index"] = torch.arange(b)
    return batch


__all__ = ["ENCODERS", "SHAPES", "METHOD_KEYS", "tiny_config", "tiny_batch"]


def tiny_overrides(corpus, out_dir, method="supervised", **extra):
    """Command-line overrides (``key=value`` strings) for a seconds-long CPU run on the ``synth_corpus`` fixture."""
    o = {
        "method.name": method,
        "data.train": str(corpus / "annotations.csv"),
        "data.video_root": str(corpus / "videos"),
        "data.num_frames": 4,
        "data.fps": 4.0,
        "data.crop_size": 32,
        "data.min_short_side": 36,
        "data.max_short_side": 40,
        "data.audio_seconds": 1.0,
        "data.batch_size": 4,
        "data.num_workers": 0,
        "model.video.name": "r3d_tiny",
        "model.video.kwargs": "{base_channels: 8}",
        "model.audio": "{name: audio_conv_tiny, kwargs: {base_channels: 8}}",
        "optim.name": "adamw",
        "optim.lr": 0.003,
        "trainer.max_epochs": 1,
        "trainer.accelerator": "cpu",
        "trainer.devices": 1,
        "trainer.progress_bar": False,
        "trainer.tensorboard": False,
        "trainer.log_every_n_steps": 1,
        "output_dir": str(out_dir),
    }
    o.update(extra)
    return [f"{k}={v}" for k, v in o.items()]
