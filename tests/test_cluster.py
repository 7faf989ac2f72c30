"""k-means on the device (avssl.cluster) against scikit-learn's KMeans."""
from __future__ import annotations

import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from avssl.cluster import kmeans, kmeans_fit, kmeans_plusplus


def _planted(n_per: int, k: int, dim: int, spread: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g) * spread
    truth = torch.arange(k).repeat_interleave(n_per)
    return centres[truth] + torch.randn(k * n_per, dim, generator=g), truth


def test_planted_clusters_are_found_as_scikit_learn_finds_them():
    x, truth = _planted(60, 12, 16, spread=4.0)
    ours = kmeans_fit(x, 12, restarts=3, seed=0)
    ref = KMeans(12, n_init=3, random_state=0).fit(x.numpy())
    assert adjusted_rand_score(truth, ours.labels) == 1.0
    assert adjusted_rand_score(ref.labels_, ours.labels) == 1.0
    assert ours.inertia == pytest.approx(ref.inertia_, rel=1e-4)
    # the inertia is what the labels and centres say it is
    assert ours.inertia == pytest.approx(float((x.double() - ours.centres.double()[ours.labels]).pow(2).sum()), rel=1e-6)


def test_overlapping_clusters_reach_scikit_learn_inertia_deterministically():
    x, _ = _planted(40, 25, 8, spread=1.5, seed=1)  # overlapping: local optima, iterations matter
    ours = kmeans_fit(x, 25, restarts=4, seed=3)
    ref = KMeans(25, n_init=4, random_state=3).fit(x.numpy())
    assert ours.inertia <= 1.02 * ref.inertia_
    assert torch.equal(kmeans(x, 25, restarts=4, seed=3), ours.labels)  # same seed, same clusters
    assert not torch.equal(kmeans(x, 25, restarts=1, seed=4), ours.labels)


def test_greedy_seeding_spreads_the_centres_and_no_cluster_is_left_empty():
    # 5 tight, far-apart groups: greedy k-means++ puts one seed in each
    x, truth = _planted(20, 5, 4, spread=50.0, seed=2)
    seeds = kmeans_plusplus(x, 5, torch.Generator().manual_seed(0))
    nearest = torch.cdist(seeds, x).argmin(1)
    assert sorted(truth[nearest].tolist()) == [0, 1, 2, 3, 4]
    # a centre no point is nearest to takes the point farthest from its own centre
    pts = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [10.0, 10.0], [10.1, 10.0], [4.0, 4.0]])
    far = kmeans_fit(pts, 3, init=torch.tensor([[0.0, 0.0], [10.0, 10.0], [100.0, -100.0]]))
    assert torch.bincount(far.labels, minlength=3).min() >= 1
    assert far.labels[5] != far.labels[0] and far.labels[5] != far.labels[3]  # (4, 4) got the spare centre
    with pytest.raises(ValueError, match="1 <= k <= N"):
        kmeans(pts, 10)
