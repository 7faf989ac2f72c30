"""kNN against the direct formula, linear probes on planted problems, feature extraction bookkeeping."""
from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from avssl.eval.features import extract_features, load_features, pool_stage, save_features
from avssl.eval.knn import knn_evaluate, knn_predict
from avssl.eval.linear import (
    LinearProbe,
    layerwise_linear_probe,
    linear_evaluate,
    probe_predict,
    train_linear_probe,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _blobs(n_per_class: int, num_classes: int, dim: int, sep: float, seed: int):
    g = _gen(seed)
    centers = torch.randn(num_classes, dim, generator=g) * sep
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    feats = centers[labels] + torch.randn(labels.shape[0], dim, generator=g)
    perm = torch.randperm(labels.shape[0], generator=g)
    return feats[perm], labels[perm]


# -- kNN -----------------------------------------------------------------------------------------
def _knn_reference(train, train_labels, test, num_classes, k, t):
    """The InstDisc formula, one query at a time, with full sorting."""
    out = torch.zeros(test.shape[0], num_classes, dtype=torch.float64)
    tr = train.double() / train.double().norm(dim=1, keepdim=True)
    for i in range(test.shape[0]):
        q = test[i].double() / test[i].double().norm()
        sims = tr @ q
        order = torch.argsort(sims, descending=True)[:k]
        for j in order.tolist():
            out[i, train_labels[j]] += math.exp(sims[j].item() / t)
    return out


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_knn_matches_direct_formula(chunk_size):
    g = _gen(0)
    train, test = torch.randn(40, 16, generator=g) * 3, torch.randn(23, 16, generator=g)
    labels = torch.randint(0, 5, (40,), generator=g)
    got = knn_predict(train, labels, test, 5, k=6, temperature=0.1, chunk_size=chunk_size)
    ref = _knn_reference(train, labels, test, 5, 6, 0.1)
    assert got.shape == (23, 5) and got.dtype == torch.float32
    assert torch.allclose(got.double(), ref, rtol=1e-4)


def test_knn_k_larger_than_train_set_uses_all():
    g = _gen(1)
    train, test = torch.randn(10, 8, generator=g), torch.randn(4, 8, generator=g)
    labels = torch.randint(0, 3, (10,), generator=g)
    got = knn_predict(train, labels, test, 3, k=50, temperature=0.5)
    assert torch.allclose(got.double(), _knn_reference(train, labels, test, 3, 10, 0.5), rtol=1e-4)
    # with every neighbour voting, the class totals are the class-wise sums over the whole set
    sims = F.normalize(test, dim=1) @ F.normalize(train, dim=1).T
    total = (sims / 0.5).exp().sum(dim=1)
    assert torch.allclose(got.sum(dim=1), total, rtol=1e-4)


def test_knn_is_scale_invariant_and_checks_inputs():
    g = _gen(2)
    train, test = torch.randn(30, 8, generator=g), torch.randn(5, 8, generator=g)
    labels = torch.randint(0, 4, (30,), generator=g)
    a = knn_predict(train, labels, test, 4, k=5)
    b = knn_predict(train * 7.0, labels, test * 0.01, 4, k=5)  # cosine similarity: scale is irrelevant
    assert torch.allclose(a, b, rtol=1e-4)
    with pytest.raises(ValueError, match="dims"):
        knn_predict(train, labels, torch.randn(2, 9), 4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        knn_predict(train, torch.full((30,), -1), test, 4)


def test_knn_planted_clusters_near_perfect():
    feats, labels = _blobs(30, 5, 32, sep=2.0, seed=3)
    m = knn_evaluate(feats[:100], labels[:100], feats[100:], labels[100:], 5, k=10)
    assert m["clip_top1"] >= 0.98 and m["video_top1"] >= 0.98 and m["mean_class_accuracy"] >= 0.98
    assert m["video_top5"] == 1.0


def test_knn_evaluate_aggregates_views():
    # 6 test videos × 3 views; two of each video's views are pure noise, one lies on its class centre.
    g = _gen(4)
    centers = torch.randn(3, 16, generator=g) * 4
    train_labels = torch.arange(3).repeat(10)
    train = centers[train_labels] + 0.1 * torch.randn(30, 16, generator=g)
    vids = torch.arange(6).repeat_interleave(3)
    test_labels = (vids % 3)
    test = torch.randn(18, 16, generator=g) * 0.01
    clean = torch.arange(0, 18, 3)
    test[clean] = centers[test_labels[clean]]
    m = knn_evaluate(train, train_labels, test, test_labels, 3, k=5, test_video_index=vids)
    assert m["num_videos"] == 6 and m["num_clips"] == 18
    assert m["video_top1"] == 1.0  # the confident view decides
    assert m["clip_top1"] < 1.0


# -- linear probe --------------------------------------------------------------------------------
def test_linear_probe_separable_blobs():
    feats, labels = _blobs(100, 4, 16, sep=1.5, seed=5)
    tr, te = slice(0, 240), slice(240, 400)
    probe, hist = train_linear_probe(
        feats[tr], labels[tr], 4, feats[te], labels[te], epochs=20, batch_size=64, seed=0
    )
    assert len(hist) == 20 and hist[-1]["epoch"] == 20
    assert {"lr", "train_loss", "train_top1", "val_loss", "val_top1"} <= set(hist[-1])
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert hist[-1]["lr"] == pytest.approx(0.0, abs=1e-9)  # cosine schedule ends at 0
    assert hist[-1]["val_top1"] > 0.95
    assert not probe.training
    m = linear_evaluate(feats[tr], labels[tr], feats[te], labels[te], 4, epochs=20, batch_size=64)
    assert m["video_top1"] > 0.95 and m["clip_top1"] > 0.95 and m["mean_class_accuracy"] > 0.95


def test_linear_probe_adamw_also_learns():
    feats, labels = _blobs(60, 3, 8, sep=1.5, seed=6)
    m = linear_evaluate(feats[:120], labels[:120], feats[120:], labels[120:], 3,
                        optimizer="adamw", lr=1e-2, epochs=30, batch_size=32)
    assert m["clip_top1"] > 0.9


def test_linear_probe_random_labels_stay_at_chance():
    g = _gen(7)
    train, test = torch.randn(200, 32, generator=g), torch.randn(2000, 32, generator=g)
    y_train, y_test = torch.randint(0, 4, (200,), generator=g), torch.randint(0, 4, (2000,), generator=g)
    m = linear_evaluate(train, y_train, test, y_test, 4, epochs=30, batch_size=50)
    assert abs(m["clip_top1"] - 0.25) < 0.05  # 4 classes: chance is 25% (binomial sd ≈ 1%)
    assert m["train_top1"] > m["clip_top1"] + 0.1  # it did fit the training noise


def test_standardisation_is_stored_and_applied():
    feats, labels = _blobs(50, 3, 6, sep=2.0, seed=8)
    scaled = feats * torch.tensor([1000.0, 0.001, 1.0, 50.0, 1.0, 1.0]) + 5000.0
    scaled[:, 5] = 3.0  # a constant feature: centred, not divided by ~0
    probe, _ = train_linear_probe(scaled, labels, 3, epochs=15, batch_size=32)
    assert torch.allclose(probe.mean, scaled.double().mean(0).float())
    expected_std = scaled.double().std(0, unbiased=False).float()
    expected_std[5] = 1.0
    assert torch.allclose(probe.std, expected_std, rtol=1e-4)
    x = scaled[:7]
    manual = probe.linear((x - probe.mean) / probe.std)
    assert torch.allclose(probe(x), manual)
    assert torch.allclose(probe_predict(probe, x), manual, atol=1e-6)
    assert probe_predict(probe, scaled).argmax(1).eq(labels).float().mean() > 0.9
    # survives a state_dict round trip
    clone = LinearProbe(6, 3)
    clone.load_state_dict(probe.state_dict())
    assert torch.allclose(clone(x), probe(x))
    raw, _ = train_linear_probe(scaled, labels, 3, epochs=1, standardize=False)
    assert torch.equal(raw.mean, torch.zeros(6)) and torch.equal(raw.std, torch.ones(6))


def test_linear_probe_is_deterministic_given_seed():
    feats, labels = _blobs(20, 3, 5, sep=1.0, seed=9)
    a, ha = train_linear_probe(feats, labels, 3, epochs=3, batch_size=16, seed=1)
    b, hb = train_linear_probe(feats, labels, 3, epochs=3, batch_size=16, seed=1)
    c, _ = train_linear_probe(feats, labels, 3, epochs=3, batch_size=16, seed=2)
    assert torch.equal(a.linear.weight, b.linear.weight) and ha == hb
    assert not torch.equal(a.linear.weight, c.linear.weight)


def test_linear_probe_errors():
    with pytest.raises(ValueError, match="train_labels must lie"):
        train_linear_probe(torch.randn(4, 2), torch.tensor([0, 1, -1, 0]), 2)
    with pytest.raises(ValueError, match="unknown optimizer"):
        train_linear_probe(torch.randn(4, 2), torch.tensor([0, 1, 1, 0]), 2, optimizer="lbfgs")


def test_layerwise_probe_per_stage():
    feats, labels = _blobs(60, 3, 8, sep=2.0, seed=10)
    noise = torch.randn(180, 8, generator=_gen(11))
    train = {"res2": noise[:120], "res5": feats[:120]}
    test = {"res2": noise[120:], "res5": feats[120:]}
    out = layerwise_linear_probe(train, labels[:120], test, labels[120:], 3, epochs=15, batch_size=32)
    assert list(out) == ["res2", "res5"]
    assert out["res5"]["clip_top1"] > 0.9 and out["res2"]["clip_top1"] < 0.6
    with pytest.raises(KeyError, match="res4"):
        layerwise_linear_probe(train, labels[:120], test, labels[120:], 3, stages=["res4"])


# -- feature extraction --------------------------------------------------------------------------
class TinyVideoEncoder(nn.Module):
    """stem (1×1×1 conv + BN) -> res2 (strided conv); dropout on the pooled output (so eval mode matters)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.stem = nn.Conv3d(3, 4, 1)
        self.bn = nn.BatchNorm3d(4)
        self.res2 = nn.Conv3d(4, 6, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.drop = nn.Dropout(0.5)
        self.out_dim = 6
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            self.bn.running_mean.fill_(0.1)
            self.bn.running_var.fill_(2.0)

    def forward_features(self, x):
        s = torch.relu(self.bn(self.stem(x)))
        return OrderedDict(stem=s, res2=self.res2(s))

    def forward(self, x):
        return self.drop(self.forward_features(x)["res2"].mean(dim=(2, 3, 4)))


def _video_loader(batches=2, b=2, v=6, t=2, hw=8, seed=0):
    g = _gen(seed)
    out = []
    for i in range(batches):
        out.append({
            "video": torch.randn(b, v, 3, t, hw, hw, generator=g),
            "label": torch.arange(b) + 10 * i,
            "index": torch.arange(b) + 100 + b * i,
        })
    return out


def test_extract_multiview_flatten_bookkeeping():
    enc = TinyVideoEncoder()
    enc.train()
    enc.bn.eval()  # a frozen-BN submodule: its own flag must come back too
    running = enc.bn.running_mean.clone()
    loader = _video_loader()
    out = extract_features(enc, loader, progress=False)
    f = out["features"]
    assert f.shape == (2 * 2 * 6, 6) and f.dtype == torch.float32
    assert out["index"].tolist() == [i for i in range(100, 104) for _ in range(6)]
    assert out["view"].tolist() == list(range(6)) * 4
    assert out["labels"].tolist() == [lab for lab in (0, 1, 10, 11) for _ in range(6)]
    # restored flags, untouched BN statistics
    assert enc.training and enc.res2.training and enc.drop.training and not enc.bn.training
    assert torch.equal(enc.bn.running_mean, running)
    # rows equal the eval-mode encoder on each view (clip-major view order kept)
    enc.eval()
    with torch.no_grad():
        for row in (0, 5, 7, 23):
            batch, within = divmod(row, 12)
            b, v = divmod(within, 6)
            ref = enc(loader[batch]["video"][b, v][None])[0]
            assert torch.allclose(f[row], ref, atol=1e-6)


def test_extract_mean_views_and_single_view():
    enc = TinyVideoEncoder()
    loader = _video_loader()
    flat = extract_features(enc, loader, progress=False)
    mean = extract_features(enc, loader, views="mean", progress=False)
    assert mean["features"].shape == (4, 6)
    assert torch.allclose(mean["features"], flat["features"].reshape(4, 6, 6).mean(1), atol=1e-6)
    assert mean["index"].tolist() == [100, 101, 102, 103] and mean["view"].tolist() == [-1] * 4
    # single-view batches (B×C×T×H×W) without index/label: running index, label -1, view 0
    single = [{"video": loader[0]["video"][:, 0]}, {"video": loader[1]["video"][:, 0]}]
    out = extract_features(enc, single, progress=True)  # the progress bar path, too
    assert out["features"].shape == (4, 6)
    assert out["index"].tolist() == [0, 1, 2, 3] and out["labels"].tolist() == [-1] * 4
    assert out["view"].tolist() == [0] * 4
    assert torch.allclose(out["features"][:2], flat["features"][[0, 6]], atol=1e-6)


def test_extract_stage_features_and_pooling():
    enc = TinyVideoEncoder()
    loader = _video_loader(batches=1, v=2)
    out = extract_features(enc, loader, stages=["stem", "res2"], progress=False)
    assert set(out["features"]) == {"stem", "res2"}
    assert out["features"]["stem"].shape == (4, 4) and out["features"]["res2"].shape == (4, 6)
    assert out["meta"]["stages"] == ["stem", "res2"]
    one = extract_features(enc, loader, stages="res2", progress=False)["features"]  # a single name
    assert list(one) == ["res2"] and torch.equal(one["res2"], out["features"]["res2"])
    x = loader[0]["video"].reshape(4, 3, 2, 8, 8)
    enc.eval()
    with torch.no_grad():
        maps = enc.forward_features(x)
    assert torch.allclose(out["features"]["stem"], maps["stem"].mean(dim=(2, 3, 4)), atol=1e-6)

    pooled = extract_features(enc, loader, stages="all", pool_dim=64, progress=False)["features"]
    # stem: 4 channels, s = floor(sqrt(64 / 4)) = 4 -> 4·4² = 64 dims; res2 (4×4 map): s = 3 -> 54 dims
    assert pooled["stem"].shape == (4, 64) and pooled["res2"].shape == (4, 54)
    ref = F.adaptive_avg_pool2d(maps["stem"].mean(dim=2), 4).reshape(4, -1)
    assert torch.allclose(pooled["stem"], ref, atol=1e-6)
    # s never exceeds the map: 1000 dims on a 4-channel 8×8 map -> 4·8² = 256
    assert pool_stage(maps["stem"], 1000).shape == (4, 256)
    with pytest.raises(KeyError, match="res9"):
        extract_features(enc, loader, stages=["res9"], progress=False)


def test_extract_audio_views_and_errors():
    class TinyAudio(nn.Module):
        out_dim = 3

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 3)

        def forward(self, x):
            return self.conv(x).mean(dim=(2, 3))

    enc = TinyAudio()
    batch = {"audio": torch.randn(2, 4, 1, 10, 12), "label": torch.tensor([1, 2]), "index": torch.tensor([5, 6])}
    out = extract_features(enc, [batch], modality="audio", progress=False)
    assert out["features"].shape == (8, 3) and out["index"].tolist() == [5] * 4 + [6] * 4
    with pytest.raises(KeyError, match="'audio'"):
        extract_features(enc, [{"video": torch.randn(1, 3, 2, 4, 4)}], modality="audio", progress=False)
    with pytest.raises(ValueError, match="sample_ndim"):
        extract_features(enc, [batch], modality="spectrum", progress=False)


def test_save_load_roundtrip(tmp_path):
    enc = TinyVideoEncoder()
    out = extract_features(enc, _video_loader(batches=1), stages=["stem"], progress=False)
    path = tmp_path / "sub" / "feats.pt"
    save_features(path, out)
    assert [p.name for p in path.parent.iterdir()] == ["feats.pt"]  # no temp file left behind
    back = load_features(path)
    assert torch.equal(back["features"]["stem"], out["features"]["stem"])
    assert torch.equal(back["index"], out["index"]) and back["meta"] == out["meta"]
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_features(tmp_path / "nope.pt")
    with pytest.raises(KeyError, match="labels"):
        save_features(tmp_path / "bad.pt", {"features": torch.zeros(1)})
