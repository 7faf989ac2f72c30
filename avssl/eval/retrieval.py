"""Cross-modal retrieval: for each held-out clip, where does its own sound rank among all the sounds?

Given paired embeddings (row i of both from clip i) in a shared space — the projection heads' output
of an audio-visual method — video→audio recall@k is the fraction of clips whose own audio is among the
k audio embeddings most cosine-similar to the clip's video embedding (audio→video likewise). Ties
count against the true pair, so a constant embedding scores 1/N at best, never 1.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import torch
import torch.nn.functional as F


def recall_at_k(query: torch.Tensor, gallery: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> Dict[int, float]:
    """query, gallery: N×D paired rows -> {k: fraction of queries whose pair ranks in the top k}."""
    if query.dim() != 2 or query.shape[0] != gallery.shape[0]:
        raise ValueError(f"expected two N×D tensors with the same N, got {tuple(query.shape)} and {tuple(gallery.shape)}")
    sim = F.normalize(query.float(), dim=1) @ F.normalize(gallery.float(), dim=1).t()
    own = sim.diagonal().unsqueeze(1)
    # rank = number of gallery items at least as similar as the true one, itself excluded (ties count against)
    rank = (sim >= own).sum(dim=1) - 1
    return {int(k): float((rank < k).float().mean()) for k in ks}


def cross_modal_retrieval(video: torch.Tensor, audio: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> Dict[str, float]:
    """Paired N×D video and audio embeddings -> ``{"v2a_r@k", "a2v_r@k"}`` for each k."""
    out = {f"v2a_r@{k}": v for k, v in recall_at_k(video, audio, ks).items()}
    out.update({f"a2v_r@{k}": v for k, v in recall_at_k(audio, video, ks).items()})
    return out


@torch.no_grad()
def retrieval_evaluate(cfg: Any, checkpoint: str, ks: Sequence[int] = (1, 5, 10), part: str = "val",
                       max_batches: Optional[int] = None) -> Dict[str, float]:
    """Video→audio and audio→video recall@k on the ``part`` videos of ``cfg.data`` (one centre clip each), in
    the joint space of an audio-visual method's heads (:meth:`AudioVisualMethod.embed_dataset
    <avssl.methods.audiovisual.AudioVisualMethod.embed_dataset>`: xmodal_nce, avid_cma)."""
    from avssl.data.datamodule import make_dataset
    from avssl.engine import load_method, with_overrides

    method = load_method(checkpoint)
    if not hasattr(method, "embed_dataset") or not getattr(method, "heads", False):
        raise ValueError(f"{type(method).__name__} has no joint audio-visual embedding (embed); retrieval needs one")
    cfg = with_overrides(cfg, **{"data.test_clips": 1, "data.test_crops": 1})
    ds = make_dataset(cfg, part, train=False, needs_audio=True)
    method.to("cuda" if torch.cuda.is_available() else "cpu")
    z = method.embed_dataset(ds, normalize=False, batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers,
                             max_batches=max_batches)
    out = cross_modal_retrieval(z["video"], z["audio"], ks)
    out["num_videos"] = float(z["video"].shape[0])
    return out
