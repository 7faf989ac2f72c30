"""Evaluation at Kinetics scale: one probe row per train video (eval.train_views), a probe whose memory does not grow
with an fp64 copy of the features, the eval precision, and the probe and k-means benchmarks."""
from __future__ import annotations

import json

import pytest
import torch
from tiny import tiny_overrides

from avssl.config import load_config
from avssl.eval.features import amp_dtype_for


def test_train_views_are_averaged_per_video_unless_flattened(synth_corpus, tmp_path):
    from avssl.eval.protocols import FrozenFeatures

    got = {}
    for views in ("mean", "flatten"):
        cfg = load_config(overrides=tiny_overrides(synth_corpus, tmp_path, **{
            "data.test_clips": 2, "eval.train_views": views, "eval.batch_size": 5, "eval.precision": "32"}))
        got[views] = FrozenFeatures(cfg, None, progress=False).get()
    mean, flat = got["mean"].train, got["flatten"].train
    assert mean["features"].shape[0] == 24 and flat["features"].shape[0] == 48  # 24 train videos × 2 clips
    assert mean["index"].tolist() == list(range(24)) and torch.equal(mean["labels"], flat["labels"][::2])
    torch.testing.assert_close(mean["features"], flat["features"].reshape(24, 2, -1).mean(1), rtol=1e-5, atol=1e-6)
    # the test part keeps every view either way: views are aggregated per video after scoring
    assert got["mean"].test["features"].shape[0] == got["flatten"].test["features"].shape[0] == 16


def test_eval_precision_is_bf16_on_a_gpu_and_fp32_on_the_cpu_unless_asked():
    assert amp_dtype_for("auto", "cpu") is None and amp_dtype_for("32", "cuda") is None
    assert amp_dtype_for("auto", "cuda") is torch.bfloat16 and amp_dtype_for("bf16", "cpu") is torch.bfloat16


def test_probe_training_memory_stays_below_a_copy_of_the_features():
    from avssl.apps.bench.measure import peak_bytes
    from avssl.apps.bench.probe import planted_features
    from avssl.eval.linear import train_linear_probe

    feats, labels = planted_features(60000, 64, 10)  # 15 MiB of fp32 features
    size = feats.numel() * feats.element_size()
    peak = peak_bytes(lambda: train_linear_probe(feats, labels, 10, epochs=1, batch_size=2048), torch.device("cpu"))
    assert peak < 0.75 * size, (peak, size)  # standardising in one piece took 2× (an fp64 copy), and more


def test_probe_and_kmeans_benchmarks_measure_what_they_say(tmp_path):
    from avssl.apps.bench import run

    out = tmp_path / "probe.json"
    rows = run("probe", ["--sizes", "3000", "--dim", "32", "--classes", "5", "--epochs", "2", "--no-memory",
                         "--out", str(out)])
    assert json.loads(out.read_text()) == rows
    r = rows[0]
    assert r["features_per_s"] == pytest.approx(3000 * 2 / r["train_s"]) and r["train_top1"] > 0.9
    assert r["flatten_mib"] == pytest.approx(30 * 3000 * 32 * 4 / 2**20)
    k = run("kmeans", ["--sizes", "3000", "--k", "10", "--dim", "8", "--restarts", "5", "--device", "cpu"])[0]
    assert k["inertia_ratio"] <= 1.02 and k["ari_between"] > 0.8
