"""Training engine end to end on the CPU: resume, NaN guard, DDP, learning."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from avssl.checkpoint import load_checkpoint
from avssl.config import load_config
from avssl.errors import NonFiniteLossError
from avssl.engine import fit, load_method
from tiny import tiny_overrides

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/: shared helpers and scripts


def _weights(ckpt: str) -> dict:
    return load_checkpoint(ckpt)["state_dict"]


def test_resumed_run_reaches_the_same_weights(synth_corpus, tmp_path):
    # Epochs of 6 steps (24 train videos, batch 4): stop after one epoch, resume for the second.
    full = load_config(overrides=tiny_overrides(synth_corpus, tmp_path / "full", **{"trainer.max_epochs": 2,
                                                                                     "optim.warmup_epochs": 1}))
    fit(full)
    half_dir = tmp_path / "half"
    first = load_config(overrides=tiny_overrides(synth_corpus, half_dir, **{"trainer.max_epochs": 1,
                                                                             "optim.warmup_epochs": 1}))
    fit(first)
    # The schedule is set by the total length, so the resumed run is the two-epoch config continued.
    second = load_config(overrides=tiny_overrides(synth_corpus, half_dir, **{"trainer.max_epochs": 2,
                                                                              "optim.warmup_epochs": 1}))
    state = load_checkpoint(half_dir / "checkpoints" / "last.ckpt")
    assert state["global_step"] == 6
    fit(second, resume=True)
    a = _weights(str(tmp_path / "full" / "checkpoints" / "last.ckpt"))
    b = _weights(str(half_dir / "checkpoints" / "last.ckpt"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert load_checkpoint(half_dir / "checkpoints" / "last.ckpt")["global_step"] == 12


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(synth_corpus, tmp_path, monkeypatch):
    from avssl.methods.supervised import Supervised

    real = Supervised.compute_loss

    def poisoned(self, batch):
        out = real(self, batch)
        if self.global_step == 3:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(Supervised, "compute_loss", poisoned)
    cfg = load_config(overrides=tiny_overrides(synth_corpus, tmp_path, **{"trainer.checkpoint_every_n_steps": 1}))
    with pytest.raises(NonFiniteLossError, match="at step 3"):
        fit(cfg)
    last = tmp_path / "checkpoints" / "last.ckpt"
    state = load_checkpoint(last)
    assert state["global_step"] == 3  # the three good steps, nothing after
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def _ddp_loss(corpus, out_dir, nproc: int, method: str, batch: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.path.dirname(HERE))
    result = out_dir / f"loss_{nproc}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           os.path.join(HERE, "ddp_step.py"), str(corpus), str(out_dir / f"run{nproc}"), method, str(batch), str(result)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    losses = json.loads(result.read_text())
    assert len(losses) == nproc
    return sum(losses) / nproc


@pytest.mark.slow
@pytest.mark.parametrize("method", ["supervised", "xmodal_nce"])
def test_two_process_ddp_equals_one_process_on_the_same_global_batch(synth_corpus, tmp_path, method):
    one = _ddp_loss(synth_corpus, tmp_path, 1, method, batch=8)
    two = _ddp_loss(synth_corpus, tmp_path, 2, method, batch=4)
    assert two == pytest.approx(one, rel=1e-4, abs=1e-5)


def test_finetuning_beats_chance_by_a_wide_margin(synth_corpus, tmp_path):
    """Supervised fine-tuning with multi-view testing on the synthetic corpus (audio encoder: its classes'
    sounds are learnable from 24 clips in seconds on a CPU)."""
    from avssl.eval.finetune import finetune_and_evaluate

    cfg = load_config(overrides=tiny_overrides(synth_corpus, tmp_path, **{
        "trainer.max_epochs": 6, "method.modality": "audio", "data.test_clips": 2, "method.dropout": 0.0,
    }))
    row = finetune_and_evaluate(cfg, checkpoint=None, name="scratch")
    assert row["num_videos"] == 8 and row["num_clips"] == 16  # 2 views of each of the 8 val videos
    assert row["video_top1"] >= 0.625, row  # chance is 0.25


def test_load_method_restores_the_config_and_weights(synth_corpus, tmp_path):
    cfg = load_config(overrides=tiny_overrides(synth_corpus, tmp_path))
    last = fit(cfg)
    m = load_method(last)
    assert m.cfg.model.video.name == "r3d_tiny" and m.cfg.num_classes == 4
    saved = _weights(last)
    assert m.state_dict().keys() == saved.keys()
    assert all(torch.equal(v, saved[k]) for k, v in m.state_dict().items())


@pytest.mark.parametrize("method, validates", [("xmodal_nce", False), ("supervised", True)])
def test_the_validation_set_is_built_only_for_a_method_that_validates(synth_corpus, tmp_path, method, validates):
    import warnings

    from lightning.pytorch.callbacks import Callback

    seen = {}

    class Probe(Callback):
        def on_train_end(self, trainer, pl_module):
            seen["val_set"] = trainer.datamodule.val_set

    cfg = load_config(overrides=tiny_overrides(synth_corpus, tmp_path, method=method))
    assert cfg.data.val_split == "val"  # the corpus has a val split either way
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(cfg, extra_callbacks=[Probe()])
    assert (seen["val_set"] is not None) == validates
    assert not any("validation_step" in str(w.message) for w in caught)
