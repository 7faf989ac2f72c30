"""Engine pieces: LR schedule, LARS, parameter groups, atomic checkpoint writes."""
from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn as nn
from omegaconf import OmegaConf

from avssl.config import load_config
from avssl.engine import LARS, AtomicCheckpointIO, build_optimizer, param_groups, warmup_cosine


def test_warmup_cosine_matches_the_formula():
    total, warm = 100, 10
    assert warmup_cosine(0, total, warm, start_factor=0.01) == pytest.approx(0.01)
    assert warmup_cosine(5, total, warm, start_factor=0.01) == pytest.approx(0.01 + 0.99 * 0.5)
    assert warmup_cosine(10, total, warm) == pytest.approx(1.0)
    for s in (10, 37, 55, 99, 100):
        want = 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm)))
        assert warmup_cosine(s, total, warm) == pytest.approx(want)
    assert warmup_cosine(100, total, warm, min_factor=0.1) == pytest.approx(0.1)


def test_param_groups_exempt_biases_and_norms():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    groups = param_groups(m, weight_decay=0.1)
    decay = {id(p) for p in groups[0]["params"]}
    assert decay == {id(m[0].weight), id(m[2].weight)}
    assert groups[1]["weight_decay"] == 0.0 and len(groups[1]["params"]) == 4


def test_lars_step_matches_the_update_rule():
    torch.manual_seed(0)
    w = torch.randn(5, 3, requires_grad=True)
    g = torch.randn(5, 3)
    w0 = w.detach().clone()
    opt = LARS([w], lr=0.1, momentum=0.9, weight_decay=0.01, eta=0.02)
    w.grad = g.clone()
    opt.step()
    d = g + 0.01 * w0
    trust = 0.02 * w0.norm() / d.norm()
    assert torch.allclose(w.detach(), w0 - 0.1 * trust * d, atol=1e-6)
    # second step uses momentum: buf = 0.9·buf + trust·d
    w1 = w.detach().clone()
    w.grad = g.clone()
    opt.step()
    d2 = g + 0.01 * w1
    buf = 0.9 * trust * d + 0.02 * w1.norm() / d2.norm() * d2
    assert torch.allclose(w.detach(), w1 - 0.1 * buf, atol=1e-6)


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW), ("lars", LARS)])
def test_build_optimizer(name, cls):
    cfg = load_config(overrides=[f"optim.name={name}", "optim.lr=0.3"])
    opt = build_optimizer(nn.Linear(3, 2), cfg.optim)
    assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == 0.3
    # The config refuses an unknown optimiser; build_optimizer still does for a config made by hand.
    with pytest.raises(ValueError, match="'optim.name': 'rmsprop'.*sgd, adamw, lars"):
        load_config(overrides=["optim.name=rmsprop"])
    bad = OmegaConf.merge(OmegaConf.to_container(cfg.optim), {"name": "rmsprop"})
    with pytest.raises(ValueError, match="rmsprop"):
        build_optimizer(nn.Linear(3, 2), bad)


def _two_part_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.ModuleDict({"video_encoder": nn.Linear(3, 3), "audio_encoder": nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))})


def test_lr_mult_scales_and_freezes_modules_by_path(tmp_path):
    model = _two_part_model()
    assert dict(load_config(overrides=["optim.lr_mult.audio_encoder=0.1"]).optim.lr_mult) == {"audio_encoder": 0.1}
    path = tmp_path / "c.yaml"
    path.write_text("optim: {name: sgd, lr: 0.5, momentum: 0.0, weight_decay: 0.0,\n"
                    "        lr_mult: {audio_encoder: 0.1, audio_encoder.1: 0}}\n")
    cfg = load_config(str(path))
    opt = build_optimizer(model, cfg.optim)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5)  # the schedule scales every group alike
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model["audio_encoder"](model["video_encoder"](torch.randn(4, 3))).square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.step()
    mult = {"video_encoder": 1.0, "audio_encoder.0": 0.1, "audio_encoder.1": 0.0}
    for n, p in model.named_parameters():
        m = next(v for k, v in mult.items() if n.startswith(k + "."))
        # step = lr × schedule factor × multiplier × gradient (plain SGD); multiplier 0: untouched
        assert torch.allclose(p.detach(), before[n] - 0.5 * 0.5 * m * grads[n], atol=1e-6), n
    frozen = {id(p) for p in model["audio_encoder"][1].parameters()}
    assert not any(id(p) in frozen for g in opt.param_groups for p in g["params"])
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([0.025, 0.025, 0.25, 0.25])
    del sched


def test_lr_mult_rejects_unknown_paths_and_negative_values():
    model = _two_part_model()
    with pytest.raises(ValueError, match=r"'audio_enc'.*audio_encoder, video_encoder"):
        param_groups(model, 0.0, lr_mult={"audio_enc": 0.1})  # a prefix must end at a module boundary
    with pytest.raises(ValueError, match=r"lr_mult\['video_encoder'\] must be a finite number >= 0"):
        param_groups(model, 0.0, lr_mult={"video_encoder": -1.0})
    # a nested mapping (what ``optim.lr_mult.audio_encoder.1=0`` on the command line gives) is a path
    assert [len(g["params"]) for g in param_groups(model, 0.0, lr_mult={"audio_encoder": {"1": 0}})] == [2, 2]
    with pytest.raises(ValueError, match="no parameters to train"):
        param_groups(model, 0.0, lr_mult={"video_encoder": 0, "audio_encoder": 0})


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"a": torch.ones(2)}, path)
    assert torch.load(path)["a"].sum() == 2

    def crash(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        io.save_checkpoint({"a": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.load(path)["a"].sum() == 2  # the previous checkpoint survived whole
    assert os.listdir(tmp_path) == ["last.ckpt"]  # and no temp file is left


def test_cli_logging_prints_each_trainer_message_once_and_drops_adverts():
    # lightning adds a console handler to its package logger at import; under the CLI's root handler
    # every trainer line used to appear twice, once as "INFO: ..." and once through rich.
    import subprocess
    import sys

    code = (
        "from avssl.apps.cli import _setup_logging\n"
        "_setup_logging(False)\n"
        "import lightning\n"
        "from lightning.pytorch.utilities import rank_zero_info\n"
        "rank_zero_info('GPU available: probe-line')\n"
        "rank_zero_info('\\N{ELECTRIC LIGHT BULB} Tip: install something')\n"
        "import logging; logging.getLogger('avssl').info('avssl-line')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": "200"})
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert text.count("probe-line") == 1, text
    assert text.count("avssl-line") == 1, text
    assert "Tip" not in text, text
