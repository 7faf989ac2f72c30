"""audio_clusters: k-means pseudo-labels from a fixed audio encoder, predicted from the frames."""
from __future__ import annotations

import torch
from tiny import tiny_overrides

from avssl.config import load_config
from avssl.methods.audio_clusters import kmeans


def test_kmeans_recovers_planted_clusters_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 8, generator=g) * 10
    truth = torch.arange(4).repeat_interleave(25)
    x = centres[truth] + 0.3 * torch.randn(100, 8, generator=g)
    labels = kmeans(x, 4, restarts=3, seed=1)
    # Same partition up to renaming: every true cluster maps to exactly one found cluster.
    pairs = set(zip(truth.tolist(), labels.tolist()))
    assert len(pairs) == 4 and len({b for _, b in pairs}) == 4
    assert torch.equal(labels, kmeans(x, 4, restarts=3, seed=1))


def test_pseudo_labels_are_computed_trained_on_checkpointed_and_restored(synth_corpus, tmp_path):
    from avssl.engine import fit, load_method

    cfg = load_config(overrides=tiny_overrides(synth_corpus, tmp_path, method="audio_clusters", **{
        "method.num_clusters": 3, "trainer.max_epochs": 2, "data.test_clips": 1}))
    ckpt = fit(cfg, resume=False)
    m = load_method(ckpt)
    labels = m.pseudo_labels
    n_train = sum(1 for line in open(synth_corpus / "annotations.csv") if line.rstrip().endswith(",train"))
    assert labels.shape == (n_train,) and int(labels.min()) >= 0 and int(labels.max()) < 3
    assert len(torch.unique(labels)) > 1
    # The audio encoder is fixed (no gradient reaches it), so its features still give the same clusters.
    assert all(not p.requires_grad for p in m.audio_encoder.parameters())
    fresh = m.audio_features()
    again = kmeans(fresh, 3, cfg.method.kmeans_iterations, cfg.method.kmeans_restarts, seed=cfg.seed)
    assert torch.equal(again, labels)  # clusters of the fixed encoder's features, reproducible
    batch = {"video": torch.randn(2, 3, 4, 32, 32), "index": torch.tensor([0, 1])}
    out = m.compute_loss(batch)
    assert torch.isfinite(out["loss"])
