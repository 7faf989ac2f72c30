"""Features of a frozen encoder over a data loader, for kNN, linear probes and ``avssl extract``.

Batches are dicts as the datasets yield them: ``{modality: B×C×T×H×W (video) / B×1×F×T' (audio) /
B×C×H×W (image), or with a view axis after B (B×V×...), "label": B, "index": B}``. With several views
(K temporal clips × S spatial crops, clip-major: view v = clip v // S, crop v % S) the views are either
kept as separate rows (``views="flatten"``, N = Σ B·V, ``view`` = v) or averaged per video
(``views="mean"``, N = Σ B, ``view`` = −1).

Layer-wise features (``stages=[...]``) pool each stage map of ``encoder.forward_features``:

* ``pool_dim=None`` (default): global average pool, D = channels.
* ``pool_dim=N``: time (video maps) is averaged out, then the two spatial axes (H×W, or F×T' for
  audio) are adaptively average-pooled to s×s with s = ⌊√(N / C)⌋ (at least 1, at most the map's own
  size), and flattened: D = C·s² ≤ N. This follows the layer-wise linear evaluations of image pretext
  tasks (Zhang et al., 2016; Goyal et al., 2019), which pool every conv stage to about 9k dims so early
  and late stages are compared at a similar size; ``pool_dim=9216`` gives 64·12², 128·8², 256·6², 512·4².
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from avssl.data.batch import SAMPLE_NDIM, Modality, flatten_views, is_batch
from avssl.utils import atomic_write

Device = Union[str, torch.device]
PathLike = Union[str, "os.PathLike[str]"]

FEATURE_KEYS = ("features", "labels", "index", "view")


def pool_stage(feat: torch.Tensor, pool_dim: Optional[int] = None) -> torch.Tensor:
    """B×C×(T×)H×W stage map -> B×D pooled features (see the module docstring for ``pool_dim``)."""
    if feat.dim() < 3:
        raise ValueError(f"a stage map must be B×C×..., got {tuple(feat.shape)}")
    if pool_dim is None:
        return feat.flatten(2).mean(dim=2)
    b, c = feat.shape[:2]
    if is_batch(feat, "video"):  # B×C×T×H×W: average over time
        feat = feat.mean(dim=2)
    if not is_batch(feat, "image"):
        raise ValueError(f"pool_dim needs B×C×H×W or B×C×T×H×W stage maps, got {tuple(feat.shape)}")
    s = max(1, math.isqrt(max(0, int(pool_dim) // c)))
    size = (min(s, feat.shape[2]), min(s, feat.shape[3]))
    return F.adaptive_avg_pool2d(feat, size).reshape(b, -1)


def _progress(total: Optional[int], enabled: bool):
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    # No refresh thread: refreshed from the loop, which stays safe with forking loader workers.
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        auto_refresh=False,
    )


def extract_features(
    encoder: Union[nn.Module, Mapping[str, nn.Module]],
    loader: Iterable[Dict[str, Any]],
    device: Device = "cpu",
    modality: str = "video",
    stages: Optional[Union[Sequence[str], str]] = None,
    views: str = "flatten",
    amp_dtype: Optional[torch.dtype] = None,
    pool_dim: Optional[int] = None,
    sample_ndim: Optional[int] = None,
    progress: bool = True,
    max_batches: Optional[int] = None,
    first_index: int = 0,
) -> Dict[str, Any]:
    """Run the frozen ``encoder`` over ``loader`` and collect its features.

    The encoder is moved to ``device`` (and left there) and run in eval mode under
    ``torch.inference_mode()`` (with ``torch.autocast(dtype=amp_dtype)`` when given); afterwards every
    submodule's ``training`` flag is restored to what it was, so a model mid-training is unaffected.

    ``modality`` is the batch key of the input (``video``, ``audio`` or ``image``, laid out as
    :mod:`avssl.data.batch` says; another key needs ``sample_ndim``, the dims of a single-view batch).
    ``stages=None`` takes ``encoder(x)`` (N×out_dim); a list of stage names (or ``"all"``) takes those maps of
    ``encoder.forward_features(x)``, each pooled by :func:`pool_stage` with ``pool_dim``. ``max_batches`` stops
    early (for quick looks).

    ``encoder`` may also map modalities to modules (e.g. ``{"video": ..., "audio": ...}``): each runs on its own
    entry of every batch, in one pass over the loader, and ``features`` is then ``{modality: N×D}``
    (``modality`` and ``stages`` are not used; with ``views="flatten"`` every entry must have as many views).

    Returns ``{"features": N×D float32 (or {stage or modality: N×D}), "labels": N long (−1 where the batch has
    none), "index": N long (video index; a running count when the batch has none), "view": N long,
    "meta": dict}``, all on the CPU, rows in loader order. A batch without ``index`` is numbered from
    ``first_index`` on.
    """
    if isinstance(stages, str) and stages != "all":
        stages = [stages]
    if views not in ("flatten", "mean"):
        raise ValueError(f"views must be 'flatten' or 'mean', got {views!r}")
    paired = isinstance(encoder, Mapping)
    encoders: Dict[str, nn.Module] = dict(encoder) if paired else {modality: encoder}  # type: ignore[arg-type]
    if paired and stages is not None:
        raise ValueError("stages need a single encoder, not a mapping of modalities to encoders")
    layouts: Dict[str, Modality] = {}
    for key in encoders:
        if sample_ndim is not None and not paired:
            layouts[key] = int(sample_ndim) - 1  # the contract counts the dims of one sample, without B
        elif key in SAMPLE_NDIM:
            layouts[key] = key
        else:
            raise ValueError(f"unknown modality {key!r}: pass sample_ndim (dims of a single-view batch) "
                             f"or use one of {sorted(SAMPLE_NDIM)}")
    if stages is not None and not hasattr(encoder, "forward_features"):
        raise ValueError(f"stages={stages!r} needs an encoder with forward_features; {type(encoder).__name__} has none")
    device = torch.device(device)
    flags = [(m, m.training) for enc in encoders.values() for m in enc.modules()]
    try:
        total = len(loader)  # type: ignore[arg-type]
    except TypeError:
        total = None
    if max_batches is not None:
        total = max_batches if total is None else min(total, max_batches)

    feats: Dict[str, List[torch.Tensor]] = {}
    labels: List[torch.Tensor] = []
    index: List[torch.Tensor] = []
    view_ids: List[torch.Tensor] = []
    stage_names: Optional[List[str]] = None if stages in (None, "all") else list(stages)  # type: ignore[arg-type]
    seen, n_clips = int(first_index), 0
    bar = _progress(total, progress)
    try:
        for enc in encoders.values():
            enc.to(device).eval()
        if bar is not None:
            bar.start()
            task = bar.add_task(f"extract {'+'.join(encoders)}", total=total, rate="")
            bar.refresh()
        with torch.inference_mode():
            for bi, batch in enumerate(loader):
                if max_batches is not None and bi >= max_batches:
                    break
                v_first: Optional[int] = None
                for key, enc in encoders.items():
                    if not isinstance(batch, dict) or key not in batch:
                        keys = list(batch) if isinstance(batch, dict) else type(batch).__name__
                        raise KeyError(f"batch {bi} has no {key!r} entry (got {keys})")
                    x, v = flatten_views(batch[key], layouts[key], who=f"batch {bi}: {key}")
                    b = x.shape[0] // v
                    if v_first is None:
                        v_first = v
                    elif v != v_first and views == "flatten":
                        raise ValueError(f"batch {bi}: {key} has {v} views but {next(iter(encoders))} has {v_first}; "
                                         "use views='mean'")
                    x = x.to(device, non_blocking=True)
                    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                        if stages is None:
                            out: Dict[str, torch.Tensor] = {key if paired else "": enc(x)}
                        else:
                            maps = enc.forward_features(x)
                            if stage_names is None:
                                stage_names = list(maps)
                            missing = [s for s in stage_names if s not in maps]
                            if missing:
                                raise KeyError(f"stages {missing} not produced by {type(enc).__name__}; it has {list(maps)}")
                            out = {s: pool_stage(maps[s], pool_dim) for s in stage_names}
                    for name, f in out.items():
                        f = f.float().reshape(b, v, -1)
                        f = f.mean(dim=1) if views == "mean" else f.reshape(b * v, -1)
                        feats.setdefault(name, []).append(f.cpu())
                assert v_first is not None
                v = v_first
                lab = torch.as_tensor(batch.get("label", torch.full((b,), -1))).long().reshape(b)
                idx = batch.get("index")
                idx = torch.arange(seen, seen + b) if idx is None else torch.as_tensor(idx).long().reshape(b)
                seen += b
                n_clips += b * v
                if views == "mean":
                    labels.append(lab)
                    index.append(idx)
                    view_ids.append(torch.full((b,), -1, dtype=torch.long))
                else:
                    labels.append(lab.repeat_interleave(v))
                    index.append(idx.repeat_interleave(v))
                    view_ids.append(torch.arange(v).repeat(b))
                if bar is not None:
                    elapsed = bar.tasks[0].elapsed or 0.0
                    rate = f"{n_clips / elapsed:.1f} clips/s" if elapsed > 0 else ""
                    bar.update(task, advance=1, rate=rate)
                    bar.refresh()
    finally:
        if bar is not None:
            bar.stop()
        for m, was_training in flags:
            m.training = was_training

    def cat(parts: List[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)

    if stages is None and not paired:
        features: Any = torch.cat(feats[""]) if feats else torch.empty((0, getattr(encoder, "out_dim", 0)))
    else:
        features = {s: torch.cat(parts) for s, parts in feats.items()}
    return {
        "features": features,
        "labels": cat(labels),
        "index": cat(index),
        "view": cat(view_ids),
        "meta": {
            "encoder": {k: type(e).__name__ for k, e in encoders.items()} if paired else type(encoder).__name__,
            "modality": list(encoders) if paired else modality,
            "views": views,
            "stages": stage_names if stages is not None else None,
            "pool_dim": pool_dim,
        },
    }


def extract_dataset(
    encoder: Union[nn.Module, Mapping[str, nn.Module]],
    dataset: Any,
    *,
    batch_size: int,
    num_workers: int = 0,
    progress: bool = True,
    **kwargs: Any,
) -> Dict[str, Any]:
    """:func:`extract_features` over every item of ``dataset``, sharded across ranks under ``torch.distributed``.

    Each rank embeds its contiguous share (:func:`avssl.engine.sharding.run_sharded`) with a loader of
    ``batch_size`` and ``num_workers``, and every rank returns all the rows, in dataset order, as one process
    would; the progress bar shows on rank 0 only. ``kwargs`` go to :func:`extract_features` (``device``,
    ``modality``, ``stages``, ``views``, ``amp_dtype``, ``pool_dim``, ``max_batches``).
    """
    from torch.utils.data import DataLoader

    from avssl.engine.sharding import run_sharded
    from avssl.losses.distributed import world_info

    show = progress and world_info()[0] == 0

    def embed(share: Any, start: int) -> Dict[str, Any]:
        loader = DataLoader(share, batch_size=int(batch_size), shuffle=False, num_workers=int(num_workers))
        return extract_features(encoder, loader, progress=show, first_index=start, **kwargs)

    return run_sharded(dataset, embed)


def amp_dtype_for(precision: str, device: Device) -> Optional[torch.dtype]:
    """The autocast dtype of ``eval.precision`` on ``device``: ``auto`` is bf16 on a GPU and none (fp32) on the
    CPU, ``bf16`` is bf16 anywhere, ``32`` none."""
    if precision == "bf16" or (precision == "auto" and torch.device(device).type == "cuda"):
        return torch.bfloat16
    if precision in ("auto", "32"):
        return None
    raise ValueError(f"eval.precision must be auto, bf16 or 32, got {precision!r}")


def save_features(path: PathLike, feats: Dict[str, Any]) -> None:
    """Write ``feats`` (as returned by :func:`extract_features`) to ``path`` (a ``.pt`` file, via
    ``torch.save``) atomically: a temp file in the same folder, then ``os.replace``."""
    missing = [k for k in FEATURE_KEYS if k not in feats]
    if missing:
        raise KeyError(f"cannot save features to {path}: missing keys {missing}")
    atomic_write(path, lambda f: torch.save(feats, f))


def load_features(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Read features written by :func:`save_features` (tensors and plain values only: ``weights_only``)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"features file not found: {path}")
    data = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a features dict (got {type(data).__name__})")
    missing = [k for k in FEATURE_KEYS if k not in data]
    if missing:
        raise KeyError(f"{path} is not a features file: missing keys {missing}")
    return data
