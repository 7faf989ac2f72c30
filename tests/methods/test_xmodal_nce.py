"""xmodal_nce specifics: a frozen audio encoder stays exactly at its initialisation."""
from __future__ import annotations

import torch

from tiny import tiny_config

from avssl.methods import build_method


def test_frozen_audio_encoder_keeps_weights_and_batchnorm_statistics():
    cfg = tiny_config("xmodal_nce", freeze_audio_encoder=True)
    torch.manual_seed(0)
    m = build_method("xmodal_nce", cfg).train()
    assert not m.audio_encoder.training and m.video_encoder.training
    before = {k: v.clone() for k, v in m.audio_encoder.state_dict().items()}
    video_before = [p.clone() for p in m.video_encoder.parameters()]
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    batch = {"video": torch.randn(4, 3, 4, 16, 16), "audio": torch.randn(4, 1, 40, 50)}
    for _ in range(2):
        loss = m.compute_loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = m.audio_encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and running stats
    assert any(not torch.equal(a, b) for a, b in zip(video_before, m.video_encoder.parameters()))
