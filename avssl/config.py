"""Run configurations: YAML files validated against structured schemas (OmegaConf).

A config names what to build — the method, its encoders, the data, the optimiser and the trainer — and
each section is a dataclass below, so every key is typed and checked. A method declares the extra keys
it takes in its own dataclass (``Method.Config``); it is merged into ``method``.

Loading::

    cfg = load_config("configs/pretrain/xmodal_nce_demo.yaml", overrides=["optim.lr=0.05"])

``path`` is a YAML file of the user's or, when no such file exists, the name of a config avssl ships
(``configs/`` in the repository, package data of an installed avssl): ``load_config("demo/avid_cma_tiny.yaml")``
works from any folder (see :func:`resolve_config` and :func:`shipped_configs`).

An unknown or mistyped key is a :class:`ConfigError` that names the key and the nearest valid ones;
``key=value`` overrides go through the same check. A config may start from another with
``defaults: [other.yaml]`` (paths relative to the file), later files and overrides winning.

Values are then checked against :data:`CHECKS` (ranges and allowed names, in one table; a method's
``Config`` may add its own in a ``checks`` class attribute) and a few rules between keys, so a negative
batch size or an unknown precision stops the command with one line naming the key, not deep inside a run.

YAML is read by OmegaConf's loader, a subclass of PyYAML's ``SafeLoader``: it builds plain values only,
so a ``!!python/...`` tag is refused (a :class:`ConfigError`), never executed.
"""
from __future__ import annotations

import difflib
import importlib.resources
import math
import os
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

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
    fold: int = 1  # which official split a folder of UCF-101/HMDB-51 split files is read for (1-3)
    # Low-label training: this fraction of each class's training videos (at least one), chosen by the seed; a
    # smaller fraction keeps a subset of a larger one's.
    label_fraction: float = 1.0
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
    augment: Optional[str] = None  # image view recipe (simclr, byol, swav, ...); default: the method's own
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
class DDPConfig:
    """Settings of ``torch.nn.parallel.DistributedDataParallel`` when the run is distributed (``trainer.strategy:
    ddp``, or ``auto`` on several devices). None leaves a setting to the strategy's name and torch's default,
    except ``broadcast_buffers``: None turns it off for a method that keeps its buffers in sync itself (memory
    banks, queues, pseudo-labels: ``Method.syncs_own_buffers``) and leaves it on otherwise."""

    broadcast_buffers: Optional[bool] = None  # rank 0's buffers sent to every rank at every forward
    find_unused_parameters: Optional[bool] = None
    static_graph: Optional[bool] = None
    gradient_as_bucket_view: Optional[bool] = None


@dataclass
class KnnMonitorConfig:
    """An online kNN classifier of the trained encoder, logged as ``val/knn_top1`` (see
    :class:`avssl.engine.telemetry.KnnMonitor`): at the end of every ``every_n_epochs``-th epoch (0: never),
    up to ``max_videos`` labelled training videos (one centre clip each) are the neighbours of up to
    ``max_videos`` held-out ones."""

    every_n_epochs: int = 0
    max_videos: int = 1000
    k: int = 20
    temperature: float = 0.07
    modality: Optional[str] = None  # the encoder watched; default eval.modality


@dataclass
class TrainerConfig:
    """Passed on to ``lightning.Trainer`` (see the Lightning docs for each)."""

    max_epochs: int = 1
    max_steps: int = -1
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    ddp: DDPConfig = field(default_factory=DDPConfig)
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed
    accumulate_grad_batches: int = 1
    gradient_clip_val: Optional[float] = None
    sync_batchnorm: bool = True  # only takes effect when distributed
    channels_last: bool = False  # encoders (and 4-D/5-D inputs) in channels-last(-3d) memory format
    compile: bool = False  # torch.compile each encoder (in place: checkpoint keys stay the same)
    compile_kwargs: Dict[str, Any] = field(default_factory=dict)  # passed to torch.compile, e.g. {mode: max-autotune}
    log_every_n_steps: int = 10
    check_val_every_n_epoch: int = 1
    limit_train_batches: Optional[float] = None
    limit_val_batches: Optional[float] = None
    checkpoint_every_n_steps: Optional[int] = None  # besides one per epoch
    deterministic: bool = False
    progress_bar: bool = True
    loggers: List[str] = field(default_factory=lambda: ["csv", "tensorboard"])  # csv | tensorboard | wandb
    tensorboard: bool = True  # false leaves tensorboard out of ``loggers`` (kept for older configs)
    knn_monitor: KnnMonitorConfig = field(default_factory=KnnMonitorConfig)
    # Other ``lightning.Trainer`` arguments, passed as they are (e.g. {benchmark: true, max_time: "00:12:00:00"}).
    extra: Dict[str, Any] = field(default_factory=dict)


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
    batch_size: Optional[int] = None  # clips per extraction batch (per device); default data.batch_size
    precision: str = "auto"  # extraction: auto (bf16 autocast on a GPU, fp32 on the CPU) | bf16 | 32
    # The train videos' views (data.test_clips × test_crops) in the probe and kNN bank: their mean (one row per
    # video) or every view as a row (flatten: Kinetics at 10 × 3 views is 7.2M rows).
    train_views: str = "mean"


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


# -- value checks ---------------------------------------------------------------------------------
Choices = Union[Sequence[Any], Callable[[], Iterable[Any]]]


@dataclass(frozen=True)
class Check:
    """What one config value must be. Bounds apply to numbers, ``choices`` to names (a function is
    called when checking, for registries); ``each`` checks every item of a list. A ``None`` value (an
    unset optional key) passes. ``hint`` says what the key means, in the error."""

    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    choices: Optional[Choices] = None
    each: bool = False
    hint: str = ""

    def problem(self, value: Any) -> Optional[str]:
        """None when ``value`` passes, else what it must be."""
        if value is None:
            return None
        if self.each:
            items = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
            bad = [v for v in items if Check(self.ge, self.gt, self.le, self.choices).problem(v)]
            return self._rule(each=True) if bad else None
        if self.choices is not None:
            allowed = [str(c) for c in (self.choices() if callable(self.choices) else self.choices)]
            if str(value) not in allowed:
                return self._rule()
        if any(b is not None for b in (self.ge, self.gt, self.le)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return self._rule()
            if (self.ge is not None and value < self.ge) or (self.gt is not None and value <= self.gt) or (
                self.le is not None and value > self.le
            ):
                return self._rule()
        return None

    def _rule(self, each: bool = False) -> str:
        parts = []
        if self.choices is not None:
            allowed = list(self.choices() if callable(self.choices) else self.choices)
            parts.append("one of " + ", ".join(str(c) for c in allowed))
        if self.ge is not None and self.le is not None:
            parts.append(f"in [{_num(self.ge)}, {_num(self.le)}]")
        else:
            parts += [f"{op} {_num(b)}" for op, b in ((">=", self.ge), (">", self.gt), ("<=", self.le)) if b is not None]
        rule = ("each item " if each else "") + "must be " + " and ".join(parts)
        return rule + (f": {self.hint}" if self.hint else "")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _encoders() -> List[str]:
    from avssl.models import available_encoders

    return available_encoders()


def _video_backends() -> Sequence[str]:
    from avssl.data.decoding import VIDEO_BACKENDS

    return VIDEO_BACKENDS


def _aggregations() -> Sequence[str]:
    from avssl.eval.metrics import AGGREGATION_MODES

    return AGGREGATION_MODES


def _protocols() -> List[str]:
    from avssl.eval.protocols import available_protocols

    return available_protocols()


def _accelerators() -> List[str]:
    from lightning.pytorch.accelerators import AcceleratorRegistry

    return ["auto", "gpu", *AcceleratorRegistry.available_accelerators()]


def _strategies() -> List[str]:
    from lightning.pytorch.strategies import StrategyRegistry

    return ["auto", *StrategyRegistry.available_strategies()]


def _precisions() -> List[str]:
    from typing import get_args

    from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT_STR, _PRECISION_INPUT_STR_ALIAS

    return [*get_args(_PRECISION_INPUT_STR), *get_args(_PRECISION_INPUT_STR_ALIAS)]


POSITIVE = Check(gt=0)
AT_LEAST_1 = Check(ge=1)
NON_NEGATIVE = Check(ge=0)
FRACTION = Check(ge=0, le=1)

#: Dotted key -> what its value must be (types are checked by the schema itself).
CHECKS: Dict[str, Check] = {
    "seed": Check(ge=0),
    "num_classes": AT_LEAST_1,
    "model.video.name": Check(choices=_encoders),
    "model.audio.name": Check(choices=_encoders),
    "model.image.name": Check(choices=_encoders),
    "data.kind": Check(choices=("video", "image")),
    "data.fold": Check(ge=1, hint="the official split of UCF-101/HMDB-51 split files (1, 2 or 3)"),
    "data.label_fraction": Check(gt=0, le=1, hint="the fraction of each class's training videos used"),
    "data.num_frames": Check(ge=1, hint="frames per clip"),
    "data.fps": Check(gt=0, hint="frames per second sampled; a clip lasts num_frames / fps seconds"),
    "data.crop_size": Check(ge=1, hint="side of the square crop, in pixels"),
    "data.min_short_side": AT_LEAST_1,
    "data.max_short_side": AT_LEAST_1,
    "data.audio_rate": Check(ge=1, hint="audio samples per second"),
    "data.audio_seconds": POSITIVE,
    "data.audio_features": Check(choices=("logmel", "logstft")),
    "data.max_av_offset": NON_NEGATIVE,
    "data.views": Check(ge=1, hint="training clips per video"),
    "data.test_clips": AT_LEAST_1,
    "data.test_crops": Check(choices=(1, 3), hint="centre crop or three crops"),
    "data.batch_size": Check(ge=1, hint="clips per device"),
    "data.num_workers": Check(ge=0, hint="loader processes; 0 loads in the main process"),
    "data.max_failure_fraction": Check(ge=0, le=1, hint="the share of unreadable samples tolerated"),
    "data.backend": Check(choices=_video_backends),
    "data.image_size": AT_LEAST_1,
    "data.frames_per_video": AT_LEAST_1,
    "data.image_copies": AT_LEAST_1,
    "optim.name": Check(choices=("sgd", "adamw", "lars")),
    "optim.lr": NON_NEGATIVE,
    "optim.base_batch_size": AT_LEAST_1,
    "optim.momentum": FRACTION,
    "optim.weight_decay": NON_NEGATIVE,
    "optim.betas": Check(ge=0, le=1, each=True),
    "optim.lars_eta": POSITIVE,
    "optim.lr_mult": NON_NEGATIVE,
    "optim.scheduler": Check(choices=("cosine", "constant")),
    "optim.warmup_epochs": NON_NEGATIVE,
    "optim.warmup_start_factor": FRACTION,
    "optim.min_lr": NON_NEGATIVE,
    "trainer.max_epochs": Check(ge=-1, hint="-1 trains until max_steps"),
    "trainer.max_steps": Check(ge=-1, hint="-1 for no limit"),
    "trainer.accelerator": Check(choices=_accelerators),
    "trainer.strategy": Check(choices=_strategies),
    "trainer.precision": Check(choices=_precisions),
    "trainer.num_nodes": AT_LEAST_1,
    "trainer.accumulate_grad_batches": AT_LEAST_1,
    "trainer.gradient_clip_val": NON_NEGATIVE,
    "trainer.log_every_n_steps": AT_LEAST_1,
    "trainer.check_val_every_n_epoch": AT_LEAST_1,
    "trainer.limit_train_batches": NON_NEGATIVE,
    "trainer.limit_val_batches": NON_NEGATIVE,
    "trainer.checkpoint_every_n_steps": AT_LEAST_1,
    "trainer.loggers": Check(choices=("csv", "tensorboard", "wandb"), each=True),
    "trainer.knn_monitor.every_n_epochs": Check(ge=0, hint="0 turns the monitor off"),
    "trainer.knn_monitor.max_videos": Check(ge=2, hint="videos of each part the monitor embeds"),
    "trainer.knn_monitor.k": AT_LEAST_1,
    "trainer.knn_monitor.temperature": POSITIVE,
    "trainer.knn_monitor.modality": Check(choices=("video", "audio", "image")),
    "eval.protocols": Check(choices=_protocols, each=True),
    "eval.modality": Check(choices=("video", "audio", "image")),
    "eval.knn_k": AT_LEAST_1,
    "eval.knn_temperature": POSITIVE,
    "eval.linear_epochs": AT_LEAST_1,
    "eval.linear_lr": POSITIVE,
    "eval.linear_weight_decay": NON_NEGATIVE,
    "eval.aggregation": Check(choices=_aggregations),
    "eval.batch_size": Check(ge=1, hint="clips per extraction batch"),
    "eval.precision": Check(choices=("auto", "bf16", "32")),
    "eval.train_views": Check(choices=("mean", "flatten")),
}


def _short_side_problem(cfg: DictConfig) -> Optional[str]:
    """Training scale jitter: crop_size <= min_short_side <= max_short_side (defaults: 8/7 and 10/7 of
    the crop, as the transforms use)."""
    d = cfg.data
    lo = d.min_short_side if d.min_short_side is not None else int(round(d.crop_size * 256 / 224))
    hi = d.max_short_side if d.max_short_side is not None else int(round(d.crop_size * 320 / 224))
    if lo < d.crop_size:
        return (f"data.min_short_side={lo} is smaller than data.crop_size={d.crop_size}: clips are scaled to a "
                "short side in [min_short_side, max_short_side] and then cropped, so it must be >= crop_size")
    if hi < lo:
        return f"data.max_short_side={hi} is smaller than data.min_short_side={lo}"
    return None


def _trainer_extra_problem(cfg: DictConfig) -> Optional[str]:
    """``trainer.extra`` holds ``lightning.Trainer`` arguments that no other key sets."""
    extra = cfg.trainer.extra
    if not extra:
        return None
    from avssl.engine.trainer import trainer_extra_problem

    return trainer_extra_problem(list(extra))


#: Rules between keys: each returns a problem (naming the keys) or None.
CROSS_CHECKS: List[Callable[[DictConfig], Optional[str]]] = [_short_side_problem, _trainer_extra_problem]


def method_checks(method_cls: Any) -> Dict[str, Check]:
    """The checks a method's ``Config`` declares (a ``checks`` class attribute, keys under ``method.``),
    gathered from its bases too."""
    out: Dict[str, Check] = {}
    for klass in reversed(getattr(method_cls, "__mro__", ())):
        out.update(vars(klass).get("checks", {}))
    return out


def _validate(cfg: DictConfig, method_cls: Any) -> None:
    """Raise ConfigError for the first value outside its :data:`CHECKS` rule, a method's own checks, or a
    rule between keys."""
    checks = {**CHECKS, **{f"method.{k}": c for k, c in method_checks(method_cls).items()}}
    for key, check in checks.items():
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value)
        if isinstance(value, dict):  # a mapping of names to numbers (e.g. optim.lr_mult): check each number
            for name, v in _leaves(value, key):
                problem = check.problem(v)
                if problem:
                    raise ConfigError(f"invalid value for '{name}': {v!r} ({problem})")
            continue
        problem = check.problem(value)
        if problem:
            raise ConfigError(f"invalid value for '{key}': {value!r} ({problem})")
    for rule in CROSS_CHECKS:
        problem = rule(cfg)
        if problem:
            raise ConfigError(problem)


def _leaves(tree: Dict[str, Any], prefix: str) -> Iterable[Tuple[str, Any]]:
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}.{k}")
        else:
            yield f"{prefix}.{k}", v


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
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"'{dotted}' must be a mapping of keys ({', '.join(_known_keys(child)[:4])}, ...), "
                                  f"got {value!r}")
            _check_keys(value, child, dotted + ".")


def _is_open_dict(node: DictConfig) -> bool:
    t = OmegaConf.get_type(node)
    return t is dict or t is None or not (is_dataclass(t))


def _method_schema(name: str) -> Any:
    from avssl.methods import method_config_class

    return method_config_class(name)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """What a YAML error says, in a line (and why a Python tag is refused)."""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    if "constructor for the tag" in problem:
        tag = problem.split("tag", 1)[1].strip(" '").replace("tag:yaml.org,2002:", "!!")
        return f"YAML tag {tag!r} is not allowed: a config holds plain values (numbers, strings, lists, mappings)"
    return f"not valid YAML ({problem})"


def _yaml_where(path: str, e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    return f"{path}:{mark.line + 1}" if mark is not None else path


def _load_mapping(path: str) -> Dict[str, Any]:
    """The top-level mapping of one YAML file (an empty file is an empty mapping)."""
    if not os.path.exists(path):
        raise ConfigError(f"config file not found: {path}")
    if os.path.isdir(path):
        raise ConfigError(f"config {path} is a folder: give a YAML file")
    try:
        raw = OmegaConf.load(path)
    except yaml.YAMLError as e:
        raise ConfigError(f"{_yaml_where(path, e)}: {_yaml_problem(e)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) file; give a YAML config") from None
    except PermissionError:
        raise ConfigError(f"config {path}: permission denied; make it readable") from None
    except OSError as e:
        if e.errno is not None:
            raise  # the disk, not the config: reported with the path by the caller
        # OmegaConf's own complaint about a bare number or boolean at the top level.
        raise ConfigError(f"{path}: the top level must be a mapping of keys (method:, data:, ...), not a single value") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{path}: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, DictConfig):
        kind = "a list" if isinstance(raw, ListConfig) else f"a {type(raw).__name__}"
        raise ConfigError(f"{path}: the top level must be a mapping of keys (method:, data:, ...), not {kind}")
    try:
        return OmegaConf.to_container(raw, resolve=False)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise ConfigError(f"{path}: {str(e).splitlines()[0]}") from None


def _read_yaml(path: str, seen: Optional[set] = None) -> Dict[str, Any]:
    """Read a YAML file, resolving ``defaults: [...]`` (earlier files first, this file last)."""
    seen = seen or set()
    path = os.path.abspath(path)
    if path in seen:
        raise ConfigError(f"config {path} includes itself through 'defaults'")
    data = _load_mapping(path)
    defaults = data.pop("defaults", []) or []
    if isinstance(defaults, str):
        defaults = [defaults]
    if not isinstance(defaults, list) or not all(isinstance(d, str) for d in defaults):
        raise ConfigError(f"{path}: 'defaults' must be a list of YAML file names, got {defaults!r}")
    merged: Dict[str, Any] = {}
    for d in defaults:
        base = _read_yaml(os.path.join(os.path.dirname(path), d), seen | {path})
        merged = OmegaConf.to_container(OmegaConf.merge(merged, base))  # type: ignore[assignment]
    return OmegaConf.to_container(OmegaConf.merge(merged, data))  # type: ignore[return-value]


def _schema_for(data: Dict[str, Any]) -> Tuple[DictConfig, Any]:
    """The schema for ``data`` (with its method's keys under ``method``) and the method's Config class."""
    schema = OmegaConf.structured(Config)
    method = data.get("method") or {}
    if not isinstance(method, dict):
        raise ConfigError(f"'method' must be a mapping (e.g. method: {{name: simclr}}), got {method!r}")
    name = method.get("name", schema.method.name)
    try:
        method_cls = _method_schema(name)
    except KeyError as e:
        raise ConfigError(f"method.name: {e.args[0]}") from None
    schema.method = OmegaConf.structured(method_cls)
    return schema, method_cls


def _parse_overrides(overrides: Sequence[str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key = item.split("=", 1)[0].strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            dotted = OmegaConf.from_dotlist([item])
            out = OmegaConf.to_container(OmegaConf.merge(out, dotted))  # type: ignore[assignment]
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: {_yaml_problem(e)}") from None
        except OmegaConfBaseException as e:
            raise ConfigError(f"override {item!r}: {str(e).splitlines()[0]}") from None
    return out


def build_config(data: Dict[str, Any]) -> DictConfig:
    """Validate plain ``data`` against the schema and the value checks; return a typed, read-only config."""
    schema, method_cls = _schema_for(data)
    _check_keys(data, schema)
    try:
        cfg = OmegaConf.merge(schema, data)
        OmegaConf.to_container(cfg, resolve=True)  # a broken ${...} interpolation fails here, not mid-run
    except (ValidationError, ConfigKeyError, ConfigAttributeError, OmegaConfBaseException) as e:
        key = getattr(e, "full_key", None) or ""
        msg = str(getattr(e, "msg", e)).splitlines()[0]
        raise ConfigError(f"invalid value for '{key}': {msg}") from None
    _validate(cfg, method_cls)
    OmegaConf.set_readonly(cfg, True)
    return cfg  # type: ignore[return-value]


def shipped_config_dir() -> str:
    """The folder of the configs avssl ships: ``avssl/configs``, which is the repository's ``configs/``
    (a link to it) in a source checkout and its copy in an installed wheel."""
    return str(importlib.resources.files("avssl") / "configs")


def shipped_configs(folder: str = "") -> List[str]:
    """The names of the shipped configs (``demo/avid_cma_tiny.yaml``, …), sorted; only those under
    ``folder`` (e.g. ``"demo"``) when given."""
    root = shipped_config_dir()
    names = []
    for dirpath, _, files in os.walk(os.path.join(root, folder)):
        names += [os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/") for f in files if f.endswith(".yaml")]
    return sorted(names)


def shipped_config(name: str) -> str:
    """The path of the shipped config ``name`` (``demo/avid_cma_tiny.yaml``; a leading ``configs/`` is
    allowed), whatever the working folder holds.

    Raises:
        ConfigError: avssl ships no config of that name.
    """
    rel = os.path.normpath(os.fspath(name)).replace(os.sep, "/")
    rel = rel[len("configs/"):] if rel.startswith("configs/") else rel
    path = os.path.join(shipped_config_dir(), *rel.split("/"))
    if os.path.isabs(rel) or rel.startswith("../") or not os.path.isfile(path):
        raise ConfigError(f"avssl ships no config {name}; avssl.config.shipped_configs() lists them")
    return path


def resolve_config(path: str) -> str:
    """The YAML file that ``path`` names: ``path`` itself when it exists (a user's config always wins),
    else the shipped config of that name (:func:`shipped_config`).

    Raises:
        ConfigError: neither exists.
    """
    path = os.fspath(path)
    if os.path.exists(path):
        return path
    try:
        return shipped_config(path)
    except ConfigError:
        raise ConfigError(f"config file not found: {path} (nor is it a shipped config such as "
                          "demo/avid_cma_tiny.yaml; avssl.config.shipped_configs() lists them)") from None


def load_config(path: Optional[str] = None, overrides: Sequence[str] = (), base: Optional[Dict[str, Any]] = None) -> DictConfig:
    """Load and validate a config: ``base`` dict, then the YAML file (a path, or a shipped config's name:
    see :func:`resolve_config`), then ``key=value`` overrides."""
    data: Dict[str, Any] = dict(base or {})
    if path is not None:
        data = OmegaConf.to_container(OmegaConf.merge(data, _read_yaml(resolve_config(path))))  # type: ignore[assignment]
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
    "CHECKS",
    "Check",
    "Config",
    "ConfigError",
    "DDPConfig",
    "DataConfig",
    "EncoderConfig",
    "EvalConfig",
    "KnnMonitorConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainerConfig",
    "build_config",
    "load_config",
    "resolve_config",
    "shipped_config",
    "shipped_config_dir",
    "shipped_configs",
    "to_dict",
    "to_yaml",
]
