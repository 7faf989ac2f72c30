"""The official-splits protocol (``avssl finetune --splits 1 2 3``) on the synthetic corpus's three UCF-style splits:
one run per split, each tested on its own test list, aggregated as hand-computed numbers say, resumable per split."""
from __future__ import annotations

import csv
import json
import os
import shutil
import statistics

import pytest
import torch

from avssl.apps.cli import main
from avssl.checkpoint import load_checkpoint
from avssl.data.manifest import fold_path
from avssl.eval.splits import summarise_splits
from avssl.eval.testing import read_predictions
from tiny import tiny_overrides

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/: shared helpers and scripts
CONFIG = os.path.join(os.path.dirname(HERE), "configs", "demo", "supervised_tiny.yaml")


def test_fold_path_names_the_same_files_of_another_split(tmp_path):
    for name in ("trainlist01.txt", "testlist03.txt", "brush_hair_test_split1.txt", "brush_hair_test_split2.txt"):
        (tmp_path / name).write_text("")
    assert fold_path(tmp_path / "testlist01.txt", 3) == str(tmp_path / "testlist03.txt")
    assert fold_path(tmp_path / "brush_hair_test_split1.txt", 2) == str(tmp_path / "brush_hair_test_split2.txt")
    assert fold_path(tmp_path, 3) == str(tmp_path)  # a folder holding split 3's files is read for that split
    with pytest.raises(FileNotFoundError, match="trainlist02.txt"):
        fold_path(tmp_path / "trainlist01.txt", 2)
    with pytest.raises(ValueError, match="not a UCF-101"):
        fold_path(tmp_path / "manifest.csv", 2)


def test_the_summary_is_the_mean_and_the_sample_standard_deviation():
    rows = [{"video_top1": v, "video_top5": 1.0, "mean_class_accuracy": v / 2, "clip_top1": v} for v in (0.5, 0.75, 1.0)]
    s = summarise_splits(rows)
    assert s["mean"]["video_top1"] == pytest.approx(0.75) and s["std"]["video_top1"] == pytest.approx(0.25)
    assert s["mean"]["mean_class_accuracy"] == pytest.approx(0.375) and s["std"]["video_top5"] == 0.0
    assert summarise_splits(rows[:1])["std"]["video_top1"] == 0.0


def _videos(list_file) -> list:
    return sorted(line.split()[0] for line in open(list_file) if line.strip())


def _last_val(run_dir, key):
    with open(os.path.join(run_dir, "logs", "version_0", "metrics.csv"), newline="") as f:
        return [float(r[key]) for r in csv.DictReader(f) if r.get(key)][-1]


@pytest.mark.slow
def test_three_splits_are_fine_tuned_tested_aggregated_and_resumed_one_by_one(synth_corpus, tmp_path, capsys):
    splits = synth_corpus / "splits"
    # The synthetic corpus has UCF-101's three splits: each holds out 2 different videos of each class.
    tests = [_videos(splits / f"testlist0{k}.txt") for k in (1, 2, 3)]
    assert all(len(t) == 8 for t in tests) and not set(tests[0]) & set(tests[1]) and not set(tests[1]) & set(tests[2])

    torch.manual_seed(0)
    from avssl.models import build_encoder

    init = tmp_path / "init.pth"
    torch.save(build_encoder("r3d_tiny", base_channels=8).state_dict(), init)
    run = tmp_path / "run"
    overrides = tiny_overrides(synth_corpus, run, **{
        "data.train": splits / "trainlist01.txt", "data.val": splits / "testlist01.txt", "data.train_split": "null",
        "data.val_split": "null", "trainer.max_epochs": 2, "trainer.limit_train_batches": 2})
    argv = ["finetune", CONFIG, *overrides, "--checkpoint", str(init), "--splits", "1", "2", "3"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    doc = json.loads((run / "splits.json").read_text())
    per_split = {}
    for k, row in zip((1, 2, 3), doc["rows"]):
        preds = read_predictions(str(run / f"split{k}" / "test" / "predictions.csv"))
        assert sorted(os.path.relpath(p["video"], synth_corpus / "videos") for p in preds) == tests[k - 1]
        top1 = sum(p["true_rank"] == 0 for p in preds) / 8
        top5 = sum(p["true_rank"] < 5 for p in preds) / 8
        recalls = [sum(p["true_rank"] == 0 for p in preds if p["label"] == c) / 2 for c in range(4)]
        per_split[k] = (top1, top5, sum(recalls) / 4)
        assert row["split"] == k
        assert (row["video_top1"], row["video_top5"], row["mean_class_accuracy"]) == pytest.approx(per_split[k])
        # Validation during fine-tuning saw the same views and counts as the test does.
        assert _last_val(run / f"split{k}", "val/top1") == pytest.approx(top1, abs=1e-6)
    for i, key in enumerate(("video_top1", "video_top5", "mean_class_accuracy")):
        values = [per_split[k][i] for k in (1, 2, 3)]
        assert doc["meta"]["mean"][key] == pytest.approx(statistics.mean(values))
        assert doc["meta"]["std"][key] == pytest.approx(statistics.stdev(values))
    mean, std = doc["meta"]["mean"]["video_top1"], doc["meta"]["std"]["video_top1"]
    assert f"{100 * mean:.2f} ± {100 * std:.2f}" in printed

    # Split 2 as if killed after its first epoch: a rerun skips splits 1 and 3, resumes split 2 from that epoch's
    # checkpoint, and ends with the weights of the uninterrupted run.
    ckpts = run / "split2" / "checkpoints"
    finished = load_checkpoint(ckpts / "last.ckpt")["state_dict"]
    shutil.copy(ckpts / "last.prev.ckpt", ckpts / "last.ckpt")
    os.remove(run / "split2" / "test" / "results.json")
    untouched = {k: os.stat(run / f"split{k}" / "checkpoints" / "last.ckpt").st_mtime_ns for k in (1, 3)}
    assert load_checkpoint(ckpts / "last.ckpt")["global_step"] == 2
    assert main(argv) == 0
    assert {k: os.stat(run / f"split{k}" / "checkpoints" / "last.ckpt").st_mtime_ns for k in (1, 3)} == untouched
    resumed = load_checkpoint(ckpts / "last.ckpt")
    assert resumed["global_step"] == 4
    assert all(torch.equal(v, finished[k]) for k, v in resumed["state_dict"].items())
    assert json.loads((run / "splits.json").read_text())["meta"]["mean"] == doc["meta"]["mean"]
