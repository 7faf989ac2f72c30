"""``avssl bench models`` smoke test at a tiny size: row fields, positive measurements, finite ratios."""
from __future__ import annotations

import json
import math

import pytest
import torch

from avssl.apps.bench import models as bench
from avssl.apps.bench import run


def test_run_r2plus1d_smoke(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rows = run("models", ["--names", "r2plus1d_18", "--size", "32", "--frames", "4", "--repeats", "1", "--device", "cpu",
                          "--out", str(out)])
    assert len(rows) == 1
    r = rows[0]
    assert (r["model"], r["variant"], r["device"], r["batch"], r["frames"], r["size"]) == (
        "r2plus1d_18", "fp32", "cpu", 1, 4, 32)
    assert r["reference"] == "torchvision r2plus1d_18"
    # same architecture: same parameter count and FLOPs (forward + backward, counted on meta)
    assert r["avssl_params"] == r["reference_params"] == 31_300_125
    assert r["avssl_gflop"] == pytest.approx(r["reference_gflop"])
    assert r["avssl_gflop"] > 0
    for b in ("avssl", "reference"):
        assert r[f"{b}_ms"] > 0 and math.isfinite(r[f"{b}_ms"])
        assert r[f"{b}_clips_per_s"] == pytest.approx(1e3 / r[f"{b}_ms"])
        # at least the gradients (31.3 M fp32 numbers) are allocated during the step
        assert r[f"{b}_mem_mib"] > 31_300_125 * 4 / 2**20 * 0.9
        assert r[f"{b}_peak_frac"] is None  # no GPU peak on CPU
    assert r["time_ratio"] == pytest.approx(r["avssl_ms"] / r["reference_ms"])
    assert math.isfinite(r["time_ratio"]) and math.isfinite(r["mem_ratio"])
    assert r["memory_method"] == "profiler_timeline"
    assert json.loads(out.read_text()) == rows
    printed = capsys.readouterr().out
    assert "r2plus1d_18" in printed and "time" in printed


def test_flops_without_reference_and_argument_errors():
    assert bench.MODELS["i3d_r50_nl"].reference is None
    # non-local blocks add FLOPs to the same I3D
    assert bench.count_flops("i3d_r50_nl", "avssl", 1, 4, 32) > bench.count_flops("i3d_r50", "avssl", 1, 4, 32)
    with pytest.raises(KeyError, match="known: r2plus1d_18, slowfast_r50, i3d_r50, i3d_r50_nl"):
        bench.measure(names=["r2plus1d_81"], progress=False)
    with pytest.raises(ValueError, match="repeats"):
        bench.measure(names=["r2plus1d_18"], repeats=0, progress=False)
    with pytest.raises(ValueError, match="variant 'fp16'"):
        bench.parse_variant("fp16")
    assert bench.bf16_peak_tflops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4)
    assert bench.bf16_peak_tflops("NVIDIA A100-SXM4-40GB") == 312.0
    assert bench.bf16_peak_tflops("Tesla T4") is None
