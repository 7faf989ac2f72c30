"""``avssl compare``: the summary statistics, the page, and a tiny end-to-end run."""
import json
import math

import pytest

from avssl.apps.compare import ENTRIES, run_compare, summary_rows, summary_table
from avssl.apps.pages import summarise


def test_summarise_mean_and_sample_std():
    s = summarise([0.2, 0.4, 0.6])
    assert s["n"] == 3 and abs(s["mean"] - 0.4) < 1e-12
    assert abs(s["std"] - math.sqrt(((0.2) ** 2 + 0 + (0.2) ** 2) / 2)) < 1e-12
    assert summarise([0.5]) == {"mean": 0.5, "std": 0.0, "n": 1}


def test_summary_rows_group_by_method_and_protocol():
    per_seed = [
        {"method": "a", "seed": 0, "protocol": "linear", "top1": 0.5, "train_s": 10.0},
        {"method": "a", "seed": 0, "protocol": "knn", "top1": 0.3, "train_s": 10.0},
        {"method": "a", "seed": 1, "protocol": "linear", "top1": 0.7, "train_s": 20.0},
        {"method": "a", "seed": 1, "protocol": "knn", "top1": 0.5, "train_s": 20.0},
        {"method": "b", "seed": 0, "protocol": "failed", "top1": float("nan"), "train_s": 0.0},
    ]
    rows = summary_rows(per_seed, {"a": "fam"})
    assert [r["method"] for r in rows] == ["a"]  # b failed: no row
    assert abs(rows[0]["linear"]["mean"] - 0.6) < 1e-12 and abs(rows[0]["knn"]["mean"] - 0.4) < 1e-12
    assert rows[0]["train_s"] == 15.0
    table = summary_table(rows).markdown()
    assert "| a | fam | 60.0 ± 14.1 | 40.0 ± 14.1 | 15 |" in table


def test_every_entry_has_a_config():
    from avssl.config import load_config, shipped_config

    for e in ENTRIES:
        cfg = load_config(shipped_config(e.config))
        assert cfg.model.video.name == "r2plus1d_tiny", e.name  # one encoder for the whole comparison


def test_unknown_entry_is_named():
    with pytest.raises(KeyError, match="nope"):
        run_compare(out="unused", methods=["nope"])


def test_tiny_comparison_writes_page_and_numbers(tmp_path):
    tiny = ["data.num_frames=4", "data.fps=4.0", "data.crop_size=32", "data.min_short_side=36",
            "data.max_short_side=40", "data.batch_size=4", "data.num_workers=0", "model.video.kwargs={base_channels: 8}",
            "eval.linear_epochs=5"]
    page = tmp_path / "docs" / "comparison.md"
    got = run_compare(out=str(tmp_path / "c"), methods=["simclr"], seeds=[0], epochs=1, classes=2, per_class=4,
                      seconds=1.0, layerwise=None, page=str(page), workers=1, extra_overrides=tiny)
    methods = [r["method"] for r in got["summary"]]
    assert methods == ["random init", "simclr"]
    text = page.read_text()
    assert "| simclr | two clips of a video |" in text and "| random init | baseline |" in text
    assert (tmp_path / "docs" / "comparison.png").stat().st_size > 0
    data = json.loads((tmp_path / "c" / "comparison.json").read_text())
    rows = data["rows"] if isinstance(data, dict) and "rows" in data else data
    assert {r["protocol"] for r in rows} == {"linear", "knn"}
    assert all(0.0 <= r["top1"] <= 1.0 for r in rows)

    # A second call reuses the finished runs instead of training again, and gives the same numbers.
    ckpt = next((tmp_path / "c" / "runs" / "simclr_seed0" / "checkpoints").glob("last*.ckpt"))
    before = ckpt.stat().st_mtime_ns
    again = run_compare(out=str(tmp_path / "c"), methods=["simclr"], seeds=[0], epochs=1, classes=2, per_class=4,
                        seconds=1.0, layerwise=None, workers=1, extra_overrides=tiny)
    assert ckpt.stat().st_mtime_ns == before
    assert [r["top1"] for r in again["per_seed"]] == [r["top1"] for r in got["per_seed"]]
