"""Multi-view self-supervised methods (SimCLR, MoCo, BYOL, SimSiam, Barlow Twins, VICReg, SwAV) on
images, video clips and audio: losses, EMA targets, queues, prototype freezing, checkpoints, errors."""
from __future__ import annotations

import math
from typing import Any, Dict, List

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from tiny import tiny_config

from avssl.checkpoint import load_checkpoint
from avssl.config import build_config
from avssl.methods import build_method, method_config_class
from avssl.methods.views import MultiViewMethod, cosine_momentum

METHODS = ["simclr", "moco", "byol", "simsiam", "barlow_twins", "vicreg", "swav"]
SHAPES = {"image": (3, 16, 16), "video": (3, 4, 16, 16), "audio": (1, 16, 16)}
# Small heads (the defaults are the papers' 2048-8192 wide ones).
TINY = {"proj_hidden": 32, "proj_dim": 16}


def make_method(name: str, modality: str = "image", seed: int = 0, **method: Any) -> MultiViewMethod:
    torch.manual_seed(seed)
    m = build_method(name, tiny_config(name, modality, {"seed": seed}, **method))
    return m.train()


def make_batch(modality: str = "image", b: int = 4, views: int = 2, seed: int = 0) -> Dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    return {modality: torch.randn(b, views, *SHAPES[modality], generator=g), "label": torch.zeros(b, dtype=torch.long),
            "index": torch.arange(b)}


def val(x: torch.Tensor) -> float:
    return float(x.detach())


def snapshot(module: torch.nn.Module) -> List[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def loader(n: int = 8, b: int = 4, **kw: Any) -> DataLoader:
    data = [{"image": make_batch(b=1, seed=i)["image"][0], "label": 0, "index": i} for i in range(n)]
    return DataLoader(data, batch_size=b, **kw)


def trainer(**kw: Any) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kw)


# -- every method, every modality --------------------------------------------------------------
@pytest.mark.parametrize("modality", ["image", "video", "audio"])
@pytest.mark.parametrize("name", METHODS)
def test_every_method_gives_a_finite_loss_and_trains_the_encoder(name, modality):
    m = make_method(name, modality)
    assert m.modalities == (modality,)
    assert m.encoder_for(modality) is m.encoder
    assert any(k.startswith(f"{modality}_encoder.") for k in m.state_dict())
    out = m.compute_loss(make_batch(modality))
    loss = out["loss"]
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert len(out) >= 2 and all(torch.isfinite(v).all() for v in out.values())
    loss.backward()
    grads = [p.grad for p in m.encoder.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    # EMA targets are outside autograd (and so outside the optimiser).
    for attr in ("target_encoder", "target_projector", "key_encoder", "key_projector"):
        if hasattr(m, attr):
            assert all(p.grad is None and not p.requires_grad for p in getattr(m, attr).parameters())


def test_config_keys_and_paper_defaults():
    byol = method_config_class("byol")()
    assert (byol.proj_hidden, byol.proj_dim, byol.pred_hidden, byol.tau_base) == (4096, 256, 4096, 0.996)
    simsiam = method_config_class("simsiam")()
    assert (simsiam.proj_hidden, simsiam.proj_dim, simsiam.proj_layers, simsiam.pred_hidden) == (2048, 2048, 3, 512)
    bt = method_config_class("barlow_twins")()
    assert (bt.proj_dim, bt.proj_layers, bt.lambd) == (8192, 3, 5.1e-3)
    swav = method_config_class("swav")()
    assert (swav.num_prototypes, swav.epsilon, swav.sinkhorn_iterations) == (3000, 0.05, 3)
    assert (swav.freeze_prototypes_iters, swav.queue_length) == (313, 0)
    assert method_config_class("simclr")().temperature == 0.1
    assert method_config_class("moco")().temperature == 0.2
    for name in METHODS:
        assert method_config_class(name)().modality == "image"


# -- errors ------------------------------------------------------------------------------------
def test_missing_encoder_entry_is_named():
    cfg = build_config({"method": {"name": "simclr", "modality": "audio", **TINY}})
    with pytest.raises(ValueError, match=r"model\.audio"):
        build_method("simclr", cfg)
    with pytest.raises(ValueError, match="method.modality"):
        build_method("simclr", build_config({"method": {"name": "simclr", "modality": "text"}}))


def test_one_view_batch_asks_for_data_views_2():
    m = make_method("byol", "video")
    one = {"video": torch.randn(4, *SHAPES["video"])}
    with pytest.raises(ValueError, match=r"data\.views=2"):
        m.compute_loss(one)
    with pytest.raises(ValueError, match=r"data\.views=2"):
        make_method("simclr", "audio").compute_loss({"audio": torch.randn(4, 1, *SHAPES["audio"])})
    with pytest.raises(ValueError, match="exactly 2 views"):
        make_method("simclr").compute_loss(make_batch(views=3))
    with pytest.raises(KeyError, match="'image'"):
        make_method("simclr").compute_loss({"video": torch.randn(4, 2, *SHAPES["video"])})
    with pytest.raises(ValueError, match="no video encoder"):
        make_method("simclr").encoder_for("video")


# -- SimCLR ------------------------------------------------------------------------------------
def test_simclr_identical_views_score_better_than_independent_ones():
    m = make_method("simclr")
    x = make_batch(b=8, views=1)["image"]
    same = m.compute_loss({"image": torch.cat([x, x], dim=1)})
    other = m.compute_loss({"image": torch.cat([x, make_batch(b=8, views=1, seed=1)["image"]], dim=1)})
    assert val(same["pos_cos"]) == pytest.approx(1.0, abs=1e-5)
    assert val(same["loss"]) < val(other["loss"]) - 0.5


def test_simclr_loss_falls_on_a_fixed_dataset():
    m = make_method("simclr", seed=3)
    x = make_batch(b=8, views=1, seed=3)["image"]
    g = torch.Generator().manual_seed(4)
    # Second view: flipped and noised, the same every step.
    batch = {"image": torch.cat([x, x.flip(-1) + 0.3 * torch.randn(x.shape, generator=g)], dim=1)}
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(30):
        loss = m.compute_loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(val(loss))
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 0.5, losses


# -- BYOL --------------------------------------------------------------------------------------
def test_byol_tau_follows_the_cosine_schedule():
    m = make_method("byol")
    k = 1000
    assert m.momentum_at(0, k) == pytest.approx(0.996)
    assert m.momentum_at(k // 2, k) == pytest.approx(1 - 0.004 * (math.cos(math.pi / 2) + 1) / 2)
    assert m.momentum_at(k // 2, k) == pytest.approx(0.998)
    assert m.momentum_at(k, k) == pytest.approx(1.0)
    assert m.momentum_at(250, k) == pytest.approx(1 - 0.004 * (math.cos(math.pi / 4) + 1) / 2)
    assert cosine_momentum(5, None, 0.99) == 0.99  # unknown length: stay at the base


def test_byol_target_is_the_ema_of_the_online_network_after_a_step():
    m = make_method("byol")
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    old_target = snapshot(m.target_encoder) + snapshot(m.target_projector)
    online_before = snapshot(m.encoder) + snapshot(m.projector)
    assert all(torch.equal(a, b) for a, b in zip(old_target, online_before))  # starts as a copy
    m.compute_loss(make_batch())["loss"].backward()
    assert all(p.grad is None for p in m.target_encoder.parameters())
    opt.step()
    online = snapshot(m.encoder) + snapshot(m.projector)
    assert any(not torch.equal(a, b) for a, b in zip(online, online_before))
    tau = m.momentum_at(0, 10)
    m.momentum_update(tau)
    new_target = snapshot(m.target_encoder) + snapshot(m.target_projector)
    for t_new, t_old, w in zip(new_target, old_target, online):
        torch.testing.assert_close(t_new, tau * t_old + (1 - tau) * w, rtol=1e-6, atol=1e-7)  # up to float rounding


def test_byol_ema_runs_once_per_optimizer_step_with_gradient_accumulation():
    m = make_method("byol")
    calls = []
    real = m.momentum_update
    m.momentum_update = lambda tau: (calls.append((m.global_step, tau)), real(tau))[1]
    tr = trainer(max_steps=2, accumulate_grad_batches=2)
    tr.fit(m, train_dataloaders=loader(n=16, b=4))
    # 4 batches, 2 optimiser steps, K = 2: τ_0 = 0.996, τ_1 = (1 + 0.996) / 2.
    assert len(calls) == 2
    assert calls[0][1] == pytest.approx(0.996) and calls[1][1] == pytest.approx(0.998)
    assert "train/tau_step" in tr.callback_metrics


# -- MoCo --------------------------------------------------------------------------------------
def test_moco_key_network_follows_the_ema_and_the_queue_advances():
    m = make_method("moco", momentum=0.9)
    crit = m.criterion
    assert int(crit.queue_ptr) == 0
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    old_key = snapshot(m.key_encoder) + snapshot(m.key_projector)
    batch = make_batch()
    out = m.compute_loss(batch)
    assert int(crit.queue_ptr) == 4
    # The batch's keys (of view 2) are now the queue's first rows.
    with torch.no_grad():
        _, k2 = m.embed(m.views(batch), encoder=m.key_encoder, head=m.key_projector)
    torch.testing.assert_close(crit.queue[:4], F.normalize(k2, dim=1), rtol=0, atol=1e-6)
    out["loss"].backward()
    opt.step()
    m.momentum_update(m.momentum_at(0, None))
    online = snapshot(m.encoder) + snapshot(m.projector)
    for t_new, t_old, w in zip(snapshot(m.key_encoder) + snapshot(m.key_projector), old_key, online):
        torch.testing.assert_close(t_new, 0.9 * t_old + 0.1 * w, rtol=1e-6, atol=1e-7)  # up to float rounding
    m.compute_loss(make_batch(seed=1))
    assert int(crit.queue_ptr) == 8
    m.eval()
    m.compute_loss(make_batch(seed=2))  # evaluation leaves the queue alone
    assert int(crit.queue_ptr) == 8


def test_moco_symmetric_enqueues_both_key_batches():
    m = make_method("moco", symmetric=True)
    m.compute_loss(make_batch())
    assert int(m.criterion.queue_ptr) == 8


# -- SwAV --------------------------------------------------------------------------------------
def _reference_sinkhorn(scores: torch.Tensor, eps: float, iters: int) -> torch.Tensor:
    """SwAV's published Sinkhorn-Knopp (non-log form), one process: B×K scores -> B×K codes."""
    q = torch.exp(scores.double() / eps).t()
    q /= q.sum()
    k, b = q.shape
    for _ in range(iters):
        q /= q.sum(dim=1, keepdim=True)
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    return (q * b).t()


def test_swav_multi_crop_codes_come_from_the_large_crops_only():
    m = make_method("swav", temperature=0.1, epsilon=0.05)
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(4, 3, 16, 16, generator=g) for _ in range(2)] + \
            [torch.randn(4, 3, 8, 8, generator=g) for _ in range(2)]
    loss = m.compute_loss({"image": views})["loss"]
    with torch.no_grad():
        _, scores = m.embed_and_score(views)
    assert len(scores) == 4
    codes = [_reference_sinkhorn(scores[i], 0.05, 3) for i in range(2)]
    terms = [-(codes[a] * F.log_softmax(scores[v].double() / 0.1, dim=1)).sum(1).mean()
             for a in range(2) for v in range(4) if v != a]
    assert len(terms) == 2 * (4 - 1)
    assert val(loss) == pytest.approx(float(sum(terms) / len(terms)), rel=1e-5)


def test_swav_prototypes_stay_frozen_for_the_first_iterations():
    m = make_method("swav", freeze_prototypes_iters=2)
    start = m.prototypes.weight.detach().clone()
    seen = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(pl_module.prototypes.weight.detach().clone())

    trainer(max_steps=4, callbacks=[Record()]).fit(m, train_dataloaders=loader(n=16, b=4))
    assert len(seen) == 4
    for w in seen[:2]:  # after optimiser steps 0 and 1
        torch.testing.assert_close(w, start, rtol=0, atol=1e-6)
    assert float((seen[3] - start).abs().max()) > 1e-4
    assert float((seen[3] - seen[2]).abs().max()) > 1e-5


def test_swav_queue_fills_then_joins_sinkhorn():
    m = make_method("swav", queue_length=8, queue_start_epoch=0)
    outs = [m.compute_loss(make_batch(seed=i)) for i in range(3)]
    # Batch 4: after one step the queue holds 4 rows, after two it is full and used from the third on.
    assert [val(o["queue_used"]) for o in outs] == [0.0, 0.0, 1.0]
    assert int(m.queue_count) == 8
    batch = make_batch(seed=2)
    with torch.no_grad():
        z, _ = m.embed_and_score(m.views(batch))
    torch.testing.assert_close(m.queue[0, :4], F.normalize(z[0], dim=1), rtol=0, atol=1e-5)
    torch.testing.assert_close(m.queue[1, :4], F.normalize(z[1], dim=1), rtol=0, atol=1e-5)
    # The queue changes the codes: the same batch scores differently with the queue off.
    with_queue = val(m.compute_loss(batch)["loss"])
    m.queue_count.zero_()
    without = val(m.compute_loss(batch)["loss"])
    assert with_queue != pytest.approx(without, rel=1e-6)


# -- checkpoints -------------------------------------------------------------------------------
@pytest.mark.parametrize("name,extra,keys", [
    ("byol", {}, ("target_encoder.", "target_projector.")),
    ("moco", {}, ("key_encoder.", "criterion.queue")),
    ("swav", {"queue_length": 8, "queue_start_epoch": 0}, ("queue", "prototypes.")),
])
def test_state_dict_round_trip_gives_the_same_loss(name, extra, keys):
    m = make_method(name, seed=0, **extra)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    for i in range(3):  # move the online network away from its targets, fill the queues
        out = m.compute_loss(make_batch(seed=i))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        if hasattr(m, "momentum_update"):
            m.momentum_update(m.momentum_at(i, 10))
    state = {k: v.clone() for k, v in m.state_dict().items()}
    assert all(any(k.startswith(p) for k in state) for p in keys)
    fresh = make_method(name, seed=1, **extra)
    batch = make_batch(seed=9)
    assert val(fresh.compute_loss(batch)["loss"]) != pytest.approx(val(m.compute_loss(batch)["loss"]), rel=1e-6)
    m.load_state_dict(state)  # undo the step just taken (queues, BN statistics)
    fresh.load_state_dict(state, strict=True)
    a, b = m.compute_loss(batch), fresh.compute_loss(batch)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    if name == "swav":
        assert val(a["queue_used"]) == 1.0


def test_byol_on_video_clips_resumes_exactly(synth_corpus, tmp_path):
    """Two clips of each video as positives, through the runner: a run stopped after epoch 1 and
    resumed ends with the same online and target weights as an uninterrupted run (τ schedule included)."""
    from tiny import tiny_overrides

    from avssl.config import load_config
    from avssl.engine import fit

    class StopAfterOneEpoch(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = True

    extra = {"data.views": 2, "method.modality": "video", "method.proj_hidden": 32, "method.proj_dim": 16,
             "method.pred_hidden": 16, "trainer.max_epochs": 2, "model.video.kwargs": "{base_channels: 4}"}
    cfg = lambda d: load_config(overrides=tiny_overrides(synth_corpus, d, method="byol", **extra))  # noqa: E731
    fit(cfg(tmp_path / "full"))
    fit(cfg(tmp_path / "half"), extra_callbacks=[StopAfterOneEpoch()])
    half = load_checkpoint(tmp_path / "half" / "checkpoints" / "last.ckpt")
    assert half["global_step"] == 6
    fit(cfg(tmp_path / "half"), resume=True)
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.ckpt")
    b = load_checkpoint(tmp_path / "half" / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 12
    assert any(k.startswith("target_encoder.") for k in a["state_dict"])
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    # The target lags behind the online network (EMA with τ < 1 until the last step).
    sd = a["state_dict"]
    assert not torch.equal(sd["video_encoder.stem.conv.weight"], sd["target_encoder.stem.conv.weight"])
