"""Figures of an evaluation: confusion matrix, 2-D embedding map, training curves, CMA positives.

Figures are drawn on matplotlib's Agg canvas directly (no ``pyplot``: no global figure state, no GUI
backend) and written atomically as PNG (temp file in the same folder, then ``os.replace``).
"""
from __future__ import annotations

import csv
import io
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from avssl.utils import atomic_write_bytes

PathLike = Union[str, "os.PathLike[str]"]


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: PathLike) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_confusion_matrix(
    cm: torch.Tensor,
    class_names: Optional[Sequence[str]],
    path: PathLike,
    normalize: bool = True,
    title: Optional[str] = None,
) -> None:
    """Save a C×C confusion matrix (rows = true, columns = predicted) as a heat map.

    With ``normalize`` the colours are row-normalised (recall per true class; empty rows stay 0); counts
    are written in the cells when C ≤ 30.
    """
    cm = torch.as_tensor(cm)
    if cm.dim() != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a C×C matrix, got {tuple(cm.shape)}")
    c = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    if len(names) != c:
        raise ValueError(f"{len(names)} class_names for a {c}×{c} confusion matrix")
    counts = cm.double()
    shown = counts / counts.sum(dim=1, keepdim=True).clamp_min(1) if normalize else counts
    side = min(20.0, 2.5 + 0.35 * c)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(shown.numpy(), cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="recall" if normalize else "count")
    ticks = range(c)
    fontsize = max(4, min(10, int(300 / max(c, 1))))
    ax.set_xticks(ticks, names, rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, names, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if c <= 30:
        top = float(shown.max()) if shown.numel() else 0.0
        for i in range(c):
            for j in range(c):
                n = int(cm[i, j])
                if n:
                    colour = "white" if shown[i, j] > 0.5 * top else "black"
                    ax.text(j, i, str(n), ha="center", va="center", fontsize=fontsize, color=colour)
    total = counts.sum().item()
    acc = counts.diag().sum().item() / total if total else float("nan")
    ax.set_title(title or f"confusion matrix (accuracy {100 * acc:.1f}%)")
    _save(fig, path)


def _pca_2d(x: torch.Tensor) -> torch.Tensor:
    """N×D -> N×2 projection on the two leading principal axes (signs fixed: each axis's largest-magnitude
    loading is positive, so the map does not flip between runs)."""
    x = x.double()
    x = x - x.mean(dim=0)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    axes = vh[:2]  # 2×D (fewer when D or N < 2)
    sign = torch.sign(axes.gather(1, axes.abs().argmax(dim=1, keepdim=True)))
    axes = axes * torch.where(sign == 0, torch.ones_like(sign), sign)
    out = x @ axes.T
    if out.shape[1] < 2:
        out = torch.cat([out, torch.zeros(out.shape[0], 2 - out.shape[1], dtype=out.dtype)], dim=1)
    return out


def plot_embedding(
    feats: torch.Tensor,
    labels: torch.Tensor,
    path: PathLike,
    class_names: Optional[Sequence[str]] = None,
    method: str = "pca",
    seed: int = 0,
    max_points: int = 5000,
    title: Optional[str] = None,
) -> torch.Tensor:
    """Save a 2-D map of N×D ``feats`` coloured by ``labels`` (N); return the N'×2 coordinates plotted.

    ``method``: ``"pca"`` (torch SVD) or ``"tsne"`` (scikit-learn's ``TSNE``, PCA-initialised,
    ``random_state=seed``, perplexity min(30, (N'−1)/3)). More than ``max_points`` rows are subsampled
    with a generator seeded by ``seed`` (rows kept in their original order).
    """
    feats = torch.as_tensor(feats).float()
    labels = torch.as_tensor(labels).long()
    if feats.dim() != 2 or labels.shape != (feats.shape[0],):
        raise ValueError(f"feats must be N×D and labels N, got {tuple(feats.shape)} and {tuple(labels.shape)}")
    if feats.shape[0] < 2:
        raise ValueError(f"an embedding map needs at least 2 points, got {feats.shape[0]}")
    if method not in ("pca", "tsne"):
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
    if feats.shape[0] > max_points:
        keep = torch.randperm(feats.shape[0], generator=torch.Generator().manual_seed(seed))[:max_points].sort().values
        feats, labels = feats[keep], labels[keep]
    if method == "pca":
        xy = _pca_2d(feats).float()
    else:
        try:
            from sklearn.manifold import TSNE
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("method='tsne' needs scikit-learn (pip install scikit-learn)") from e
        n = feats.shape[0]
        tsne = TSNE(n_components=2, init="pca", random_state=seed, perplexity=max(1.0, min(30.0, (n - 1) / 3.0)))
        xy = torch.from_numpy(tsne.fit_transform(feats.double().numpy())).float()

    fig = _figure(7.0, 6.0)
    ax = fig.add_subplot(1, 1, 1)
    classes = torch.unique(labels).tolist()
    from matplotlib import colormaps

    cmap = colormaps["tab20" if len(classes) > 10 else "tab10"]
    for i, c in enumerate(classes):
        m = labels == c
        name = class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)
        ax.scatter(xy[m, 0].numpy(), xy[m, 1].numpy(), s=8, color=cmap(i % cmap.N), label=name, alpha=0.8)
    if len(classes) <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="best", frameon=False)
    method_name = "PCA" if method == "pca" else "t-SNE"
    ax.set_title(title or f"{method_name} of {feats.shape[0]} features ({feats.shape[1]}-D)")
    ax.set_xticks([])
    ax.set_yticks([])
    _save(fig, path)
    return xy


def read_metrics_csv(metrics_csv: PathLike) -> Tuple[List[str], List[Dict[str, str]]]:
    """Columns and rows of a Lightning ``CSVLogger`` ``metrics.csv`` (blank cells kept as "")."""
    path = os.fspath(metrics_csv)
    if not os.path.exists(path):
        raise FileNotFoundError(f"metrics file not found: {path}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _number(cell: Optional[str]) -> Optional[float]:
    if cell is None or cell.strip() == "":
        return None
    try:
        v = float(cell)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def plot_training_curves(
    metrics_csv: PathLike, path: PathLike, keys: Optional[Sequence[str]] = None, x: str = "step"
) -> List[str]:
    """Plot each metric of a Lightning ``metrics.csv`` against ``x`` (default ``step``), one panel each.

    Lightning writes one row per logging call, leaving the other metrics blank; blank and non-numeric
    cells are skipped, so each curve joins the points where that metric was logged. ``keys=None`` plots
    every column with at least one number except ``step``, ``epoch`` and ``x``; a requested key that is
    not a column raises ``KeyError`` listing the columns. Without an ``x`` column the row number is used.
    Returns the keys plotted.
    """
    columns, rows = read_metrics_csv(metrics_csv)
    if keys is None:
        skip = {"step", "epoch", x}
        keys = [c for c in columns if c not in skip and any(_number(r.get(c)) is not None for r in rows)]
    else:
        missing = [k for k in keys if k not in columns]
        if missing:
            raise KeyError(f"{os.fspath(metrics_csv)} has no column {missing}; columns are {columns}")
        keys = list(keys)
    if not keys:
        raise ValueError(f"{os.fspath(metrics_csv)} has no numeric metric to plot (columns {columns})")
    n = len(keys)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = _figure(4.5 * ncols, 3.2 * nrows)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        pts = []
        for r_i, r in enumerate(rows):
            y = _number(r.get(key))
            xv = _number(r.get(x)) if x in columns else float(r_i)
            if y is not None and xv is not None:
                pts.append((xv, y))
        pts.sort(key=lambda p: p[0])
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="." if len(pts) < 50 else None, linewidth=1.2)
        else:
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel(x if x in columns else "row")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    return keys


def cma_neighbour_table(video_bank: torch.Tensor, audio_bank: torch.Tensor, refs: Sequence[int], k: int = 5,
                        agreement: str = "min") -> Dict[str, torch.Tensor]:
    """For each reference row: its ``k`` CMA positives (by ``agreement`` of the two banks) and its ``k``
    nearest neighbours by the video bank only and by the audio bank only; each len(refs)×k, best first."""
    from avssl.memory import cma_positives

    rows = torch.as_tensor(list(refs), dtype=torch.long)
    out = {}
    for name, how in (("cma", agreement), ("video", "video"), ("audio", "audio")):
        out[name] = cma_positives(video_bank, audio_bank, k=k, agreement=how)[rows]
    return out


def plot_cma_positives(
    frames: Sequence[torch.Tensor],
    table: Dict[str, torch.Tensor],
    refs: Sequence[int],
    path: PathLike,
    labels: Optional[Sequence[int]] = None,
) -> None:
    """The figure of the CMA paper: per reference video (one row block), its frame, then its CMA positives,
    its nearest neighbours by video only and by audio only (frames uint8 H×W×3, one per video, indexed like
    the banks; ``table`` from :func:`cma_neighbour_table`). With ``labels``, each tile is titled by class
    and framed green when it matches the reference's class."""
    k = int(table["cma"].shape[1])
    kinds = ("cma", "video", "audio")
    fig = _figure(1.2 * (k + 1), 1.3 * len(refs) * len(kinds))
    grid = fig.subplots(len(refs) * len(kinds), k + 1, squeeze=False)
    for r, ref in enumerate(refs):
        for j, kind in enumerate(kinds):
            row = grid[r * len(kinds) + j]
            for c, ax in enumerate(row):
                idx = int(ref) if c == 0 else int(table[kind][r, c - 1])
                ax.imshow(frames[idx].numpy() if hasattr(frames[idx], "numpy") else frames[idx])
                ax.set_xticks([])
                ax.set_yticks([])
                same = labels is not None and labels[idx] == labels[int(ref)]
                if labels is not None:
                    ax.set_title(str(labels[idx]), fontsize=6)
                    for side in ax.spines.values():
                        side.set_edgecolor("green" if same else "red")
                        side.set_linewidth(2 if c else 0)
            row[0].set_ylabel({"cma": "CMA", "video": "video NN", "audio": "audio NN"}[kind], fontsize=7)
    _save(fig, path)


def cma_figure(cfg: Any, checkpoint: str, refs: Sequence[int], path: PathLike, k: int = 5) -> Dict[str, Any]:
    """PNG of chosen training videos with their CMA positives and their nearest neighbours by video only
    and by audio only, from an ``avid_cma`` checkpoint's memory banks (rows = training-set indices of
    ``cfg.data.train``). Returns the neighbour table as lists."""
    from avssl.data.datamodule import make_dataset
    from avssl.data.decoding import read_clip
    from avssl.engine import load_method

    method = load_method(checkpoint)
    crit = getattr(method, "criterion", None)
    if crit is None or not hasattr(crit, "video_bank"):
        raise ValueError(f"{checkpoint} holds no memory banks (train it with method.name=avid_cma)")
    table = cma_neighbour_table(crit.video_bank.weight.float(), crit.audio_bank.weight.float(), refs, k=k,
                                agreement=cfg.method.cma_agreement if hasattr(cfg.method, "cma_agreement") else "min")
    ds = make_dataset(cfg, "train", train=False, needs_audio=False)
    needed = sorted({int(i) for i in refs} | {int(i) for t in table.values() for i in t.flatten().tolist()})
    frames: Dict[int, torch.Tensor] = {}
    for i in needed:
        row = ds.rows[i]
        start, end = row.window_in_path()
        mid = (start or 0.0) + 0.5 * ((end or row.duration or 0.0) - (start or 0.0))
        frames[i] = read_clip(row.path, start=max(0.0, mid - 0.05), duration=0.1, num_frames=1, audio=False).video[0]
    plot_cma_positives(frames, table, refs, path, labels=ds.labels)
    return {k_: v.tolist() for k_, v in table.items()}
