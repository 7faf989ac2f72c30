"""K-fold (ESC-50-shaped) linear probe: fold assignment and cross-validated accuracy."""
from __future__ import annotations

import torch

from avssl.eval.linear import cross_validated_linear_probe, stratified_folds


def test_stratified_folds_deal_every_class_evenly_and_deterministically():
    labels = [0] * 10 + [1] * 7 + [2] * 3
    fold = stratified_folds(labels, folds=5, seed=0)
    y = torch.tensor(labels)
    for c, n in ((0, 10), (1, 7), (2, 3)):
        counts = torch.bincount(fold[y == c], minlength=5)
        assert counts.sum() == n and int(counts.max() - counts.min()) <= 1
    sizes = torch.bincount(fold, minlength=5)
    assert int(sizes.max() - sizes.min()) <= 1  # 20 items -> 4 per fold
    assert torch.equal(fold, stratified_folds(labels, folds=5, seed=0))
    assert not torch.equal(fold, stratified_folds(labels, folds=5, seed=1))


def test_cross_validated_probe_tests_every_sample_once_and_separates_blobs():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(20)
    feats = torch.eye(4)[labels] * 3 + 0.3 * torch.randn(80, 4, generator=g)
    fold = stratified_folds(labels.tolist(), folds=5, seed=0)
    r = cross_validated_linear_probe(feats, labels, 4, fold, epochs=30, lr=0.1)
    assert [f["fold"] for f in r["folds"]] == [0, 1, 2, 3, 4]
    assert sum(f["num_videos"] for f in r["folds"]) == 80
    assert r["video_top1"] > 0.95 and r["video_top1_std"] < 0.05
    shuffled = cross_validated_linear_probe(feats, labels[torch.randperm(80, generator=g)], 4, fold, epochs=30, lr=0.1)
    assert shuffled["video_top1"] < 0.5  # chance 0.25: the folds really hold out what they test


def test_folds_protocol_on_audio_features_of_every_video(synth_corpus, tmp_path):
    from tiny import tiny_overrides

    from avssl.config import load_config
    from avssl.eval import evaluate

    cfg = load_config(overrides=tiny_overrides(synth_corpus, tmp_path, **{"eval.linear_epochs": 10}))
    (row,) = evaluate(cfg, None, protocols=("folds",), modality="audio", progress=False)
    assert row["protocol"] == "folds" and row["modality"] == "audio"
    assert len(row["folds"]) == 5 and sum(f["num_videos"] for f in row["folds"]) == 32  # all videos, once
    assert 0.0 <= row["video_top1"] <= 1.0
