"""avid_cma: memory-bank AVID, then Cross-Modal Agreement positive sets computed on schedule and checkpointed."""
from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

import avssl.methods.avid_cma  # noqa: F401  (registers the method)
from avssl.checkpoint import load_checkpoint
from avssl.config import build_config, load_config
from avssl.losses.audiovisual import AVIDLoss, CMALoss
from avssl.methods import build_method
from avssl.engine import fit, load_method
from tiny import tiny_overrides
from tiny import tiny_config


def _batch(b=4, views=None):
    g = torch.Generator().manual_seed(0)
    lead = (b,) if views is None else (b, views)
    return {"video": torch.randn(*lead, 3, 4, 16, 16, generator=g), "audio": torch.randn(*lead, 1, 40, 50, generator=g),
            "index": torch.tensor([1, 5, 9, 13][:b])}


def test_step_trains_both_encoders_and_momentum_updates_only_the_batch_rows():
    torch.manual_seed(0)
    m = build_method("avid_cma", tiny_config("avid_cma", num_data=16, momentum=0.5)).train()
    assert isinstance(m.criterion, AVIDLoss)
    batch = _batch()
    with torch.no_grad():
        zv, za = m.embed(batch["video"], batch["audio"])  # train-mode BN: the same outputs compute_loss sees
    old_v = m.criterion.video_bank.weight.clone()
    old_a = m.criterion.audio_bank.weight.clone()
    out = m.compute_loss(batch)
    loss = out["loss"]
    assert torch.isfinite(loss)
    assert torch.allclose(out["xmodal"], loss) and {"v2a", "a2v"} <= out.keys()  # Cross-AVID: ½(v2a + a2v)
    loss.backward()
    for enc in (m.video_encoder, m.audio_encoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
    param_ids = {id(p) for p in m.parameters()}
    for bank in (m.criterion.video_bank.weight, m.criterion.audio_bank.weight):
        assert not bank.requires_grad and bank.grad is None and id(bank) not in param_ids
    rows = batch["index"]
    others = torch.ones(16, dtype=torch.bool)
    others[rows] = False
    for old, z, bank in ((old_v, zv, m.criterion.video_bank.weight), (old_a, za, m.criterion.audio_bank.weight)):
        expected = F.normalize(0.5 * old[rows] + 0.5 * F.normalize(z, dim=1), dim=1)
        assert torch.allclose(bank[rows], expected, atol=1e-5)
        assert torch.equal(bank[others], old[others])
    # Banks (and CMA positive sets) are buffers: they go into checkpoints.
    assert "criterion.video_bank.weight" in m.state_dict() and "criterion.audio_bank.weight" in m.state_dict()


def test_freeze_audio_encoder_keeps_weights_and_batchnorm_statistics():
    torch.manual_seed(0)
    m = build_method("avid_cma", tiny_config("avid_cma", num_data=16, freeze_audio_encoder=True)).train()
    assert not m.audio_encoder.training and m.video_encoder.training and m.audio_head.training
    before = {k: v.clone() for k, v in m.audio_encoder.state_dict().items()}
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        loss = m.compute_loss(_batch())["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = m.audio_encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running means/vars included
    assert all(p.grad is None for p in m.audio_encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.audio_head.parameters())
    # Without the key, lr_mult-style weight freezing alone lets train-mode BatchNorm refit its statistics.
    m2 = build_method("avid_cma", tiny_config("avid_cma", num_data=16)).train()
    m2.audio_encoder.requires_grad_(False)
    stats = {k: v.clone() for k, v in m2.audio_encoder.state_dict().items() if "running_mean" in k}
    m2.compute_loss(_batch())
    assert any(not torch.equal(stats[k], m2.audio_encoder.state_dict()[k]) for k in stats)


def test_views_share_their_clip_bank_row_and_cma_starts_as_cross_avid():
    torch.manual_seed(0)
    m = build_method("avid_cma", tiny_config("avid_cma", num_data=16, cma_start_epoch=0, cma_k=2, cma_num_positive_negatives=4)).train()
    assert isinstance(m.criterion, CMALoss) and not m.criterion.has_positives
    out = m.compute_loss(_batch(b=2, views=2))
    assert torch.isfinite(out["loss"]) and "wmodal" not in out  # no positive sets yet: Cross-AVID alone
    changed = (m.criterion.video_bank.weight != build_method("avid_cma", m.cfg).criterion.video_bank.weight).any(1)
    assert changed.nonzero().flatten().tolist() == [1, 5]


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="method.variant"):
        build_method("avid_cma", tiny_config("avid_cma", variant="self", cma_start_epoch=1))
    with pytest.raises(ValueError, match="cma_every_epochs"):
        build_method("avid_cma", tiny_config("avid_cma", cma_every_epochs=0))
    with pytest.raises(ValueError, match="method.bank_dtype"):
        build_method("avid_cma", tiny_config("avid_cma", bank_dtype="float16"))
    m = build_method("avid_cma", tiny_config("avid_cma"))  # num_data None and no trainer: banks cannot be sized yet
    with pytest.raises(RuntimeError, match="method.num_data"):
        m.compute_loss(_batch())


def test_bfloat16_banks_halve_the_memory_and_train():
    m = build_method("avid_cma", tiny_config("avid_cma", num_data=16, bank_dtype="bfloat16", cma_start_epoch=0, cma_k=2)).train()
    for bank in (m.criterion.video_bank.weight, m.criterion.audio_bank.weight):
        assert bank.dtype == torch.bfloat16 and bank.shape == (16, 8)
    m.criterion.update_positives()
    loss = m.compute_loss(_batch())["loss"]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.video_encoder.parameters())
    assert set(m.state_dict()) >= {"criterion.video_bank.weight", "criterion.audio_bank.weight"}


class _Snapshot(L.Callback):
    """Banks and positive sets at each epoch start, before the method's own epoch-start hook runs."""

    def __init__(self):
        self.at = {}

    def on_train_epoch_start(self, trainer, pl_module):
        c = pl_module.criterion
        self.at[trainer.current_epoch] = (c.video_bank.weight.clone(), c.audio_bank.weight.clone(), c.positives.clone())

    def on_train_start(self, trainer, pl_module):
        c = pl_module.criterion
        self.start = (int(pl_module.positives_epoch), c.video_bank.weight.clone(), c.positives.clone())


def test_positive_sets_computed_at_start_epoch_checkpointed_and_restored(synth_corpus, tmp_path):
    over = {"data.audio": True, "method.cma_start_epoch": 1, "method.cma_every_epochs": 1, "method.cma_k": 2,
            "method.num_negatives": 8, "method.cma_num_positive_negatives": 4, "method.proj_hidden": 16,
            "method.proj_dim": 8, "model.video.kwargs": "{base_channels: 4}",
            "model.audio": "{name: audio_conv_tiny, kwargs: {base_channels: 4}}", "trainer.max_epochs": 2}
    snap = _Snapshot()
    last = fit(load_config(overrides=tiny_overrides(synth_corpus, tmp_path, method="avid_cma", **over)),
               extra_callbacks=[snap])
    n = 24  # training videos in synth_corpus
    assert snap.at[0][2].shape == (n, 2) and (snap.at[0][2] == -1).all()  # AVID stage: no positive sets
    assert (snap.at[1][2] == -1).all()

    m = load_method(last)  # rebuilt from the checkpoint alone; N recorded in its config
    assert m.cfg.method.num_data == n and isinstance(m.criterion, CMALoss) and m.criterion.has_positives
    assert int(m.positives_epoch) == 1
    pos = m.criterion.positives
    assert torch.equal(pos, load_checkpoint(last)["state_dict"]["criterion.positives"])
    assert ((pos >= 0) & (pos < n)).all()
    assert not (pos == torch.arange(n).unsqueeze(1)).any()  # never the row itself
    # The sets are the k = 2 best min(cos_v, cos_a) agreements of the banks as they were at epoch 1's start.
    v, a, _ = snap.at[1]
    score = torch.minimum(F.normalize(v, dim=1) @ F.normalize(v, dim=1).t(), F.normalize(a, dim=1) @ F.normalize(a, dim=1).t())
    score.fill_diagonal_(float("-inf"))
    expected = score.topk(2, dim=1).indices
    assert torch.equal(pos.sort(1).values, expected.sort(1).values)
    # A config without num_data still loads the checkpoint: the banks are sized from its state dict.
    bare = build_method("avid_cma", load_config(overrides=tiny_overrides(synth_corpus, tmp_path, method="avid_cma", **over)))
    assert bare.criterion is None
    bare.load_state_dict(load_checkpoint(last)["state_dict"], strict=True)
    assert torch.equal(bare.criterion.positives, pos)

    # Resume for a third epoch: the banks are sized at setup, then the checkpoint fills them.
    over["trainer.max_epochs"] = 3
    snap2 = _Snapshot()
    fit(load_config(overrides=tiny_overrides(synth_corpus, tmp_path, method="avid_cma", **over)), extra_callbacks=[snap2])
    start_epoch, start_bank, start_pos = snap2.start
    assert start_epoch == 1 and torch.equal(start_pos, pos)
    assert torch.equal(start_bank, m.criterion.video_bank.weight)
    assert not torch.equal(load_method(last).criterion.positives, pos)  # recomputed at epoch 2's start


def _align_heads(batch_norm: bool, seed: int) -> float:
    """Train avid_cma's two projection heads (``method.proj_batch_norm``) and its Cross-AVID loss on fixed
    post-ReLU-like encoder features (a large shared offset, a class part, per-clip noise) -> fraction of
    video->audio nearest neighbours (another clip) of the same class."""
    torch.manual_seed(seed)
    n, k = 96, 6
    m = build_method("avid_cma", tiny_config("avid_cma", num_data=n, proj_hidden=32, proj_dim=16, num_negatives=32,
                                      proj_batch_norm=batch_norm)).train()
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % k

    def feats(d):
        cls = torch.randn(k, d, generator=g)
        return (4.0 + 0.5 * cls[labels][:, None] + 0.5 * torch.randn(n, 4, d, generator=g)).relu()

    fv, fa = feats(m.video_encoder.out_dim), feats(m.audio_encoder.out_dim)
    opt = torch.optim.AdamW(list(m.video_head.parameters()) + list(m.audio_head.parameters()), 2e-3)
    for _ in range(15):
        perm = torch.randperm(n)
        for i in range(0, n, 16):
            idx, clip = perm[i:i + 16], torch.randint(4, (16,))
            loss = m.criterion(m.video_head(fv[idx, clip]), m.audio_head(fa[idx, clip]), idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
    m.eval()
    with torch.no_grad():
        s = F.normalize(m.video_head(fv[:, 0]), dim=1) @ F.normalize(m.audio_head(fa[:, 1]), dim=1).t()
    return float((labels[s.argmax(1)] == labels).float().mean())


def test_proj_batch_norm_puts_batchnorm_in_both_heads():
    plain = build_method("avid_cma", tiny_config("avid_cma", num_data=16))
    bn = build_method("avid_cma", tiny_config("avid_cma", num_data=16, proj_batch_norm=True, proj_last_bn=True))
    for head in (plain.video_head, plain.audio_head):
        assert not any(isinstance(mod, torch.nn.BatchNorm1d) for mod in head.modules())
    for head in (bn.video_head, bn.audio_head):
        assert sum(isinstance(mod, torch.nn.BatchNorm1d) for mod in head.modules()) == 2


def test_batchnorm_heads_align_offset_features_that_plain_heads_cannot():
    # Pooled post-ReLU features share a large common offset: the recipe's BN-free heads give every clip
    # the same embedding and stay at chance (1/6), BN heads find the class correspondence.
    assert max(_align_heads(False, s) for s in (0, 1)) < 0.3
    assert min(_align_heads(True, s) for s in (0, 1)) > 0.8
