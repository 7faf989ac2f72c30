"""Cross-modal retrieval recall@k against hand-worked cases."""
from __future__ import annotations

import pytest
import torch

from avssl.eval.retrieval import cross_modal_retrieval, recall_at_k


def test_perfect_pairs_and_a_known_ranking():
    e = torch.eye(4)
    assert recall_at_k(e, e, ks=(1, 2)) == {1: 1.0, 2: 1.0}
    # queries 0 and 1 find their pair 2nd (another gallery row is closer), query 2 first.
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    g = torch.tensor([[0.6, 0.8], [1.0, 0.1], [-1.0, 0.0]])
    assert recall_at_k(q, g, ks=(1, 2, 3)) == {1: pytest.approx(1 / 3), 2: 1.0, 3: 1.0}


def test_ties_count_against_the_true_pair():
    const = torch.ones(5, 3)
    r = cross_modal_retrieval(const, const, ks=(1, 5))
    assert r["v2a_r@1"] == 0.0 and r["a2v_r@5"] == 1.0  # all 5 tie: rank 4, inside the top 5 only


def test_random_embeddings_score_near_k_over_n():
    g = torch.Generator().manual_seed(0)
    v, a = torch.randn(400, 16, generator=g), torch.randn(400, 16, generator=g)
    r = cross_modal_retrieval(v, a, ks=(10,))
    assert abs(r["v2a_r@10"] - 10 / 400) < 0.03 and set(r) == {"v2a_r@10", "a2v_r@10"}
    with pytest.raises(ValueError, match="same N"):
        recall_at_k(v, a[:10])


def test_retrieval_of_a_trained_audio_visual_checkpoint(synth_corpus, tmp_path):
    from tiny import tiny_overrides

    from avssl.config import load_config
    from avssl.eval.retrieval import retrieval_evaluate
    from avssl.engine import fit

    cfg = load_config(overrides=tiny_overrides(synth_corpus, tmp_path, method="xmodal_nce", **{
        "data.audio": True, "method.proj_hidden": 16, "method.proj_dim": 8}))
    r = retrieval_evaluate(cfg, fit(cfg, resume=False), ks=(1, 8))
    assert r["num_videos"] == 8  # the held-out videos, one clip each
    assert r["v2a_r@8"] == 1.0 and r["a2v_r@8"] == 1.0  # with 8 candidates every pair is in the top 8
    assert 0.0 <= r["v2a_r@1"] <= 1.0
