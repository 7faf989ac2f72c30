"""Run configurations: YAML files validated against structured schemas (OmegaConf).

A config names what to build — the method, its encoders, the data, the optimiser and the trainer — and
each section is a dataclass below, so every key is typed and checked. A method declares the extra keys
it takes in its own dataclass (``Method.Config``); it is merged into ``method``.

Loading::

    cfg = load_config("configs/pretrain/xmodal_nce_demo.yaml", overrides=["optim.lr=0.05"])

An unknown or mistyped key is a :class:`ConfigError` that names the key and the nearest valid ones;
``key=value`` overrides go through the same check. A config may start from another with
``defaults: [other.yaml]`` (paths relative to the file), later files and overrides winning.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from avssl.errors import UserError


class ConfigError(UserError, ValueError):
    """A config file or override is invalid; the message names the key."""


@dataclass
class EncoderConfig:
    """An encoder by registry name plus its builder's keyword arguments."""

    name: str = "r2plus1d_tiny"
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    video: Optional[EncoderConfig] = field(default_factory=EncoderConfig)
    audio: Optional[EncoderConfig] = None
    image: Optional[EncoderConfig] = None


@dataclass
class DataConfig:
    """Where the clips (or images) come from and how they are cut (see :class:`avssl.data.VideoDataset`
    and :mod:`avssl.data.images`)."""

    kind: str = "video"  # video | image
    # video: manifest.csv / folder tree / Kinetics CSV / UCF-HMDB split file;
    # image: "digits" (scikit-learn's bundled set), a folder per class, or a video manifest (its frames)
    train: Optional[str] = None
    val: Optional[str] = None  # defaults to ``train`` (with val_split) when unset
    video_root: Optional[str] = None
    train_split: Optional[str] = "train"
    val_split: Optional[str] = "val"
    num_frames: int = 8
    fps: float = 16.0  # clip duration = num_frames / fps seconds
    crop_size: int = 112
    min_short_side: Optional[int] = None  # train scale jitter (default: 8/7·crop .. 10/7·crop)
    max_short_side: Optional[int] = None
    audio: bool = False
    audio_rate: int = 16000
    audio_seconds: float = 2.0
    audio_features: str = "logmel"  # or logstft (AVID-CMA's input)
    max_av_offset: float = 0.0
    views: int = 1  # training clips per video (two for clip-level contrastive methods)
    test_clips: int = 1  # multi-view testing: K uniformly spaced clips ...
    test_crops: int = 1  # ... × this many spatial crops (1 = centre, 3 = three-crop)
    batch_size: int = 8  # per device
    num_workers: int = 2
    max_failure_fraction: float = 0.1
    backend: str = "decord"
    image_size: int = 32  # image side (kind=image)
    frames_per_video: int = 4  # kind=image over a video manifest: frames taken from each video
    image_copies: int = 1  # digits_colour / digits_cluttered: renderings of each training digit
    positives_across_copies: bool = False  # ... and a training item's views come from different renderings
    augment: Optional[str] = None  # image view recipe (simclr, byol, swav, ...); default: the method's name
    augment_kwargs: Dict[str, Any] = field(default_factory=dict)  # e.g. {min_scale: 0.3}


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw | lars
    lr: float = 0.1
    base_batch_size: Optional[int] = None  # when set, lr scales by global_batch / base_batch_size
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    lars_eta: float = 0.001
    exclude_bias_and_norm: bool = True  # no weight decay (nor LARS adaptation) on biases and norms
    # Module path -> learning-rate multiplier (longest prefix wins; 0 freezes), e.g. {audio_encoder: 0.1}.
    lr_mult: Dict[str, float] = field(default_factory=dict)
    scheduler: str = "cosine"  # cosine | constant
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.01
    min_lr: float = 0.0


@dataclass
class TrainerConfig:
    """Passed on to ``lightning.Trainer`` (see the Lightning docs for each)."""

    max_epochs: int = 1
    max_steps: int = -1
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed
    accumulate_grad_batches: int = 1
    gradient_clip_val: Optional[float] = None
    sync_batchnorm: bool = True  # only takes effect when distributed
    log_every_n_steps: int = 10
    check_val_every_n_epoch: int = 1
    limit_train_batches: Optional[float] = None
    limit_val_batches: Optional[float] = None
    checkpoint_every_n_steps: Optional[int] = None  # besides one per epoch
    deterministic: bool = False
    progress_bar: bool = True
    tensorboard: bool = True


@dataclass
class MethodConfig:
    name: str = "supervised"


@dataclass
class EvalConfig:
    protocols: List[str] = field(default_factory=lambda: ["linear", "knn"])
    modality: str = "video"
    knn_k: int = 20
    knn_temperature: float = 0.07
    linear_epochs: int = 100
    linear_lr: float = 0.1
    linear_weight_decay: float = 0.0
    aggregation: str = "mean_softmax"  # multi-view testing: mean_softmax | mean_scores
    stages: List[str] = field(default_factory=list)  # layer-wise probes, e.g. [res2, res3, res4, res5]


@dataclass
class Config:
    method: MethodConfig = field(default_factory=MethodConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    output_dir: str = "runs/default"
    num_classes: Optional[int] = None  # supervised / fine-tuning heads; read from the data when unset


def _known_keys(node: Any) -> List[str]:
    if isinstance(node, DictConfig):
        return [str(k) for k in node.keys()]
    return []


def _suggest(key: str, known: Sequence[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.5)
    msg = f" Nearest valid keys: {', '.join(prefix + c for c in close)}." if close else ""
    return msg + (f" Valid keys under '{prefix.rstrip('.') or '<top>'}': {', '.join(sorted(known))}." if known else "")


def _check_keys(data: Any, schema: Any, prefix: str = "") -> None:
    """Raise ConfigError for the first key in ``data`` (plain containers) that ``schema`` lacks."""
    if not isinstance(data, dict) or not isinstance(schema, DictConfig):
        return
    known = _known_keys(schema)
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            # Dict-typed fields (e.g. encoder kwargs) accept any key.
            if OmegaConf.get_type(schema) is dict or _is_open_dict(schema):
                continue
            raise ConfigError(f"unknown config key '{dotted}'.{_suggest(str(key), known, prefix)}")
        child = schema._get_node(key)
        if isinstance(child, DictConfig) and not _is_open_dict(child):
            _check_keys(value, child, dotted + ".")


def _is_open_dict(node: DictConfig) -> bool:
    t = OmegaConf.get_type(node)
    return t is dict or t is None or not (is_dataclass(t))


def _method_schema(name: str) -> Any:
    from avssl.methods import method_config_class

    return method_config_class(name)


def _read_yaml(path: str, seen: Optional[set] = None) -> Dict[str, Any]:
    """Read a YAML file, resolving ``defaults: [...]`` (earlier files first, this file last)."""
    seen = seen or set()
    path = os.path.abspath(path)
    if path in seen:
        raise ConfigError(f"config {path} includes itself through 'defaults'")
    if not os.path.exists(path):
        raise ConfigError(f"config file not found: {path}")
    raw = OmegaConf.load(path)
    data = OmegaConf.to_container(raw, resolve=False) if isinstance(raw, DictConfig) else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    defaults = data.pop("defaults", []) or []
    merged: Dict[str, Any] = {}
    for d in defaults:
        base = _read_yaml(os.path.join(os.path.dirname(path), d), seen | {path})
        merged = OmegaConf.to_container(OmegaConf.merge(merged, base))  # type: ignore[assignment]
    return OmegaConf.to_container(OmegaConf.merge(merged, data))  # type: ignore[return-value]


def _schema_for(data: Dict[str, Any]) -> DictConfig:
    schema = OmegaConf.structured(Config)
    name = (data.get("method") or {}).get("name", schema.method.name)
    try:
        method_cls = _method_schema(name)
    except KeyError as e:
        raise ConfigError(f"method.name: {e.args[0]}") from None
    schema.method = OmegaConf.structured(method_cls)
    return schema


def _parse_overrides(overrides: Sequence[str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key = item.split("=", 1)[0].strip()
        dotted = OmegaConf.from_dotlist([item])
        out = OmegaConf.to_container(OmegaConf.merge(out, dotted))  # type: ignore[assignment]
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
    return out


def build_config(data: Dict[str, Any]) -> DictConfig:
    """Validate plain ``data`` against the schema and return a typed, read-only config."""
    schema = _schema_for(data)
    _check_keys(data, schema)
    try:
        cfg = OmegaConf.merge(schema, data)
    except (ValidationError, ConfigKeyError, ConfigAttributeError) as e:
        key = getattr(e, "full_key", None) or ""
        msg = str(getattr(e, "msg", e)).splitlines()[0]
        raise ConfigError(f"invalid value for '{key}': {msg}") from None
    OmegaConf.set_readonly(cfg, True)
    return cfg  # type: ignore[return-value]


def load_config(path: Optional[str] = None, overrides: Sequence[str] = (), base: Optional[Dict[str, Any]] = None) -> DictConfig:
    """Load and validate a config: ``base`` dict, then the YAML file, then ``key=value`` overrides."""
    data: Dict[str, Any] = dict(base or {})
    if path is not None:
        data = OmegaConf.to_container(OmegaConf.merge(data, _read_yaml(path)))  # type: ignore[assignment]
    if overrides:
        data = OmegaConf.to_container(OmegaConf.merge(data, _parse_overrides(overrides)))  # type: ignore[assignment]
    return build_config(data)


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)


def to_dict(cfg: Any) -> Dict[str, Any]:
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    if is_dataclass(cfg):
        return {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    return dict(cfg)


__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "EncoderConfig",
    "EvalConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainerConfig",
    "build_config",
    "load_config",
    "to_dict",
    "to_yaml",
]
