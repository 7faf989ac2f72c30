"""`avssl demo` end to end at a toy size: every stage runs and the result tables hold what they promise."""
from __future__ import annotations

import json
import os

import pytest
import torch

from avssl.apps.demo import DEMO_METHODS, run_demo


@pytest.mark.slow
def test_demo_trains_avid_cma_and_reports_audio_and_retrieval(tmp_path):
    out = tmp_path / "demo"
    rows = run_demo(out=str(out), classes=3, per_class=12, seconds=2.0, size=64, epochs=1, workers=1)
    assert DEMO_METHODS == ("avid_cma",)
    video = [r for r in rows if "protocol" in r]
    encoders = {r["encoder"] for r in video}
    assert encoders == {"random init", "avid_cma", "supervised (upper bound)"}
    assert {(r["encoder"], r["protocol"]) for r in video} == {(e, p) for e in encoders for p in ("linear", "knn")}
    for r in video:
        assert 0.0 <= r["video_top1"] <= r["video_top5"] <= 1.0
    av = {r["encoder"]: r for r in rows if "audio_folds_top1" in r}
    assert set(av) == {"random init", "avid_cma"}
    for r in av.values():
        assert 0.0 <= r["audio_folds_top1"] <= 1.0
        assert 0.0 <= r["v2a_r@1"] <= r["v2a_r@5"] <= r["v2a_r@10"] <= 1.0
    held_out = 3 * 3  # 12 videos per class, a quarter held out
    assert av["random init"]["v2a_r@1"] == pytest.approx(1 / held_out)  # chance: one of the held-out sounds
    assert av["random init"]["v2a_r@5"] == pytest.approx(5 / held_out)
    # Fine-tuning from AVID+CMA and from random init, with 10% (one video of each class's nine) and all the labels;
    # from random init with all the labels is the supervised upper bound's run, tested.
    tuned = {(r["init"], r["labels"]): r for r in rows if "labels" in r}
    assert set(tuned) == {(i, lab) for i in ("avid_cma", "random init") for lab in ("10% (3 videos)", "100% (27 videos)")}
    for (init, labels), r in tuned.items():
        assert 0.0 <= r["video_top1"] <= 1.0 and 0.0 <= r["mean_class_acc"] <= 1.0
        assert r["epochs"] == (3 if labels.startswith("10%") else 1)
        assert r["config"] == ("finetune_tiny.yaml" if init == "avid_cma" else "supervised_tiny.yaml")
    stored = torch.load(out / "runs" / "finetune_avid_cma_10pct" / "checkpoints" / "last.ckpt",
                        weights_only=True)["hyper_parameters"]["config"]
    assert stored["method"]["init_checkpoint"].endswith(os.path.join("runs", "avid_cma", "checkpoints", "last.ckpt"))
    assert stored["data"]["label_fraction"] == 0.1 and stored["optim"]["lr_mult"] == {"video_encoder": 0.1}
    assert not (out / "runs" / "finetune_random_100pct").exists()
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["rows"]) == len(rows)
    assert (out / "runs" / "avid_cma" / "checkpoints" / "last.ckpt").exists()


def test_demo_refuses_unknown_methods(tmp_path):
    with pytest.raises(ValueError, match="choose from .*audio_clusters.*xmodal_nce"):
        run_demo(out=str(tmp_path / "d"), methods=("avid_cma", "nonsense"))
    with pytest.raises(ValueError, match="supervised upper bound always runs"):
        run_demo(out=str(tmp_path / "d"), methods=("supervised",))
