"""Evaluation figures (valid PNGs, blank CSV cells) and result tables / JSON."""
from __future__ import annotations

import io
import json
import math

import pytest
import torch
from PIL import Image

from avssl.eval.plots import plot_confusion_matrix, plot_embedding, plot_training_curves, read_metrics_csv
from avssl.eval.report import format_value, print_results_table, write_results_json

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_png(path, min_bytes=3000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes
    with Image.open(io.BytesIO(data)) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 100 and im.height > 100
        # not a blank canvas: more than a handful of distinct colours
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 10
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == []


def test_confusion_matrix_png(tmp_path):
    cm = torch.tensor([[5, 1, 0], [2, 3, 0], [0, 0, 0]])  # an empty row must not divide by zero
    path = tmp_path / "figs" / "cm.png"
    plot_confusion_matrix(cm, ["walk", "run", "jump"], path)
    _check_png(path)
    plot_confusion_matrix(cm, None, tmp_path / "raw.png", normalize=False)
    _check_png(tmp_path / "raw.png")
    with pytest.raises(ValueError, match="2 class_names"):
        plot_confusion_matrix(cm, ["a", "b"], tmp_path / "x.png")


def _clusters(n=20, c=3, d=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(c, d, generator=g) * 5
    labels = torch.arange(c).repeat_interleave(n)
    return centers[labels] + torch.randn(n * c, d, generator=g), labels


def test_embedding_pca_png(tmp_path):
    feats, labels = _clusters()
    xy = plot_embedding(feats, labels, tmp_path / "pca.png", class_names=["a", "b", "c"])
    _check_png(tmp_path / "pca.png")
    assert xy.shape == (60, 2)
    # the map is the projection on the two leading principal axes (up to sign)
    centred = (feats - feats.mean(0)).double()
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    ref = centred @ vh[:2].T
    assert torch.allclose(xy.double().abs(), ref.abs(), atol=1e-3)
    # clusters stay apart in 2-D: each point's nearest other point shares its class
    dist = torch.cdist(xy, xy) + torch.eye(60) * 1e9
    assert (labels[dist.argmin(1)] == labels).float().mean() > 0.95
    # subsampling is deterministic given the seed
    a = plot_embedding(feats, labels, tmp_path / "s1.png", max_points=30, seed=3)
    b = plot_embedding(feats, labels, tmp_path / "s2.png", max_points=30, seed=3)
    assert a.shape == (30, 2) and torch.equal(a, b)


def test_embedding_tsne_png(tmp_path):
    pytest.importorskip("sklearn")
    feats, labels = _clusters(n=15)
    xy = plot_embedding(feats, labels, tmp_path / "tsne.png", method="tsne")
    _check_png(tmp_path / "tsne.png")
    assert xy.shape == (45, 2) and torch.isfinite(xy).all()
    with pytest.raises(ValueError, match="method"):
        plot_embedding(feats, labels, tmp_path / "x.png", method="umap")


METRICS_CSV = """epoch,step,train/loss,val/top1,val/loss,lr-SGD
0,9,2.30,,,0.1
0,19,2.10,,,0.09
0,19,,0.20,2.0,
1,29,1.90,,,0.07
1,39,1.70,,,0.05
1,39,,0.35,1.8,
2,49,1.50,,,0.03
2,59,nan,,,0.01
2,59,,0.41,1.7,
"""


def test_training_curves_with_blank_cells(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(METRICS_CSV)
    columns, rows = read_metrics_csv(csv_path)
    assert columns[:3] == ["epoch", "step", "train/loss"] and rows[2]["train/loss"] == ""
    keys = plot_training_curves(csv_path, tmp_path / "curves.png")
    assert keys == ["train/loss", "val/top1", "val/loss", "lr-SGD"]
    _check_png(tmp_path / "curves.png")
    assert plot_training_curves(csv_path, tmp_path / "one.png", keys=["val/top1"]) == ["val/top1"]
    _check_png(tmp_path / "one.png")
    with pytest.raises(KeyError, match="val/top5"):
        plot_training_curves(csv_path, tmp_path / "x.png", keys=["val/top5"])
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        plot_training_curves(tmp_path / "missing.csv", tmp_path / "x.png")


ROWS = [
    {"encoder": "random init", "protocol": "linear", "top1": 0.3123, "top5": 0.6, "mean_class_acc": 0.305, "wall_s": 12.34},
    {"encoder": "avid_cma", "protocol": "knn", "top1": torch.tensor(0.5), "top5": float("nan"), "k": 20},
]


def test_results_table_formats_percentages():
    from rich.console import Console

    console = Console(record=True, width=200)
    table = print_results_table(ROWS, title="UCF-101 split 1", console=console)
    text = console.export_text()
    assert "UCF-101 split 1" in text
    assert "31.23" in text and "60.00" in text and "30.50" in text and "50.00" in text
    assert "12.3" in text and "top1 (%)" in text and "wall (s)" in text
    assert "–" in text  # NaN and missing cells
    assert [c.header for c in table.columns][:3] == ["encoder", "protocol", "top1 (%)"]
    assert format_value("video_top1", 0.9) == "90.00" and format_value("k", 20) == "20"


def test_results_json_roundtrip(tmp_path):
    path = tmp_path / "out" / "results.json"
    write_results_json(ROWS, path, meta={"split": 1})
    doc = json.loads(path.read_text())
    assert doc["meta"] == {"split": 1}
    assert doc["rows"][0]["top1"] == pytest.approx(0.3123)  # fractions stay fractions
    assert doc["rows"][1]["top1"] == 0.5 and doc["rows"][1]["top5"] is None
    assert not math.isnan(doc["rows"][0]["wall_s"])
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]
