"""What survives what: checkpoints every epoch (and the one before), kill -9, SIGTERM/SIGINT/SIGUSR1, exact
resume from inside an epoch, unreadable checkpoints, and reruns into a folder that holds a run."""
from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from avssl.checkpoint import LAST, PREVIOUS, CheckpointError, load_checkpoint
from avssl.config import build_config, load_config, to_dict
from avssl.engine import STOP_SIGNALS, TrainingInterrupted
from avssl.errors import UserError
from avssl.engine import fit, incompatible_keys
from tiny import tiny_overrides
from fault_cli import SignalAtStep

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/: shared helpers and scripts
ROOT = os.path.dirname(HERE)
# Three epochs of 6 steps (24 training videos, batch 4), dropout on, the encoder frozen for the first epoch:
# a resume that missed the RNG, the loader's place in the epoch or the per-epoch state would show.
RUN = {"trainer.max_epochs": 3, "optim.warmup_epochs": 1, "method.classifier_warmup_epochs": 1}
CONFIG = os.path.join(ROOT, "configs", "demo", "supervised_tiny.yaml")


def _cfg(corpus, out, **extra):
    """The config ``avssl pretrain CONFIG <tiny overrides>`` trains."""
    return load_config(CONFIG, tiny_overrides(corpus, out, **{**RUN, **extra}))


def _weights(path) -> dict:
    return load_checkpoint(path)["state_dict"]


def _step(path) -> int:
    return int(load_checkpoint(path)["global_step"])


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


@pytest.fixture(scope="module")
def reference(synth_corpus, tmp_path_factory):
    """Final weights of the uninterrupted run."""
    return _weights(fit(_cfg(synth_corpus, tmp_path_factory.mktemp("reference"))))


def _cli_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT, "COLUMNS": "1000"}


# -- case 2: a checkpoint every epoch, and the one before -------------------------------------------
def test_last_checkpoint_is_written_at_every_epoch_end_with_the_previous_kept(synth_corpus, tmp_path):
    seen = {}
    ckpts = tmp_path / "checkpoints"

    class Probe(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen[trainer.current_epoch] = tuple(_step(ckpts / f) if (ckpts / f).exists() else None
                                                for f in (LAST, PREVIOUS))

    fit(_cfg(synth_corpus, tmp_path), extra_callbacks=[Probe()])
    assert seen == {0: (None, None), 1: (6, None), 2: (12, 6)}
    assert (_step(ckpts / LAST), _step(ckpts / PREVIOUS)) == (18, 12)
    assert not [f for f in os.listdir(ckpts) if f.startswith(".tmp")]


# -- case 2 and 4: kill -9, then rerun the same command ------------------------------------------------
@pytest.mark.slow
def test_kill_9_anywhere_then_rerun_reaches_the_uninterrupted_weights(synth_corpus, tmp_path, reference):
    out = tmp_path / "run"
    args = ["pretrain", CONFIG, *tiny_overrides(synth_corpus, out, **RUN)]

    def run_killed_at(step: int, *extra: str) -> None:
        proc = subprocess.run([sys.executable, os.path.join(HERE, "fault_cli.py"), str(step), "KILL", *args, *extra],
                              env=_cli_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-2000:]

    # Killed 2 steps into the second epoch with the default checkpointing: the epoch-end checkpoint is there.
    run_killed_at(8)
    assert _step(out / "checkpoints" / LAST) == 6
    # Rerun with a checkpoint every 2 steps (a change a resume allows), killed 5 steps into the second epoch:
    # it resumed at step 6 and saved at step 10, inside the epoch.
    run_killed_at(11, "trainer.checkpoint_every_n_steps=2")
    assert _step(out / "checkpoints" / LAST) == 10
    assert _step(out / "checkpoints" / PREVIOUS) == 8
    # The third launch resumes at step 10, in the middle of the epoch, and finishes.
    last = fit(_cfg(synth_corpus, out))
    assert _step(last) == 18
    _assert_same_weights(_weights(last), reference)


# -- case 3: SIGTERM saves the current step and exits non-zero ----------------------------------------
def test_sigterm_to_avssl_pretrain_saves_the_step_exits_143_and_the_rerun_is_exact(synth_corpus, tmp_path, reference):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "avssl", "pretrain", CONFIG, *tiny_overrides(synth_corpus, out, **RUN)]
    proc = subprocess.Popen(cmd, env=_cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = out / "checkpoints" / LAST
    deadline = time.monotonic() + 240
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)  # once the first epoch is saved, i.e. while the run is training
    text, _ = proc.communicate(timeout=240)
    assert proc.returncode == 143, text[-3000:]
    step = _step(last)
    assert 6 < step < 18  # saved at the step the signal found, not at an epoch end
    assert f"training stopped by SIGTERM at step {step}; saved {last}; rerun the same command to resume" in text
    assert "Traceback" not in text
    resumed = fit(_cfg(synth_corpus, out))
    _assert_same_weights(_weights(resumed), reference)


@pytest.mark.parametrize("sig, step, workers", [
    ("SIGTERM", 3, 0),  # in the first epoch
    ("SIGINT", 5, 2),  # on the last batch of the first epoch, two loader workers
    ("SIGUSR1", 8, 2),  # inside the second epoch, two loader workers
])
def test_stop_signal_saves_mid_epoch_and_the_resumed_run_is_exact(synth_corpus, tmp_path, reference, monkeypatch,
                                                                  sig, step, workers):
    signum = signal.Signals[sig]
    # SIGUSR1 under SLURM also asks for a requeue: a stand-in scontrol records the request.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'scontrol.args'}\n")
    (fake / "scontrol").chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    out = tmp_path / "run"
    cfg = _cfg(synth_corpus, out, **{"data.num_workers": workers})
    handlers = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    with pytest.raises(TrainingInterrupted) as stopped:
        fit(cfg, extra_callbacks=[SignalAtStep(step, signum)])
    e = stopped.value
    assert (e.signum, e.exit_code, e.step) == (signum, 128 + signum, step + 1)  # the step under way finished
    assert str(e) == f"training stopped by {sig} at step {step + 1}; saved {out / 'checkpoints' / LAST}; " \
                     "rerun the same command to resume"
    assert _step(out / "checkpoints" / LAST) == step + 1
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == handlers  # the caller's handlers are back
    requeued = (tmp_path / "scontrol.args").read_text().split() if (tmp_path / "scontrol.args").exists() else None
    assert requeued == (["requeue", "4242"] if sig == "SIGUSR1" else None)
    _assert_same_weights(_weights(fit(cfg)), reference)


# -- case 8: unreadable checkpoints on resume ------------------------------------------------------------
def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_last_checkpoint_falls_back_to_the_previous_one_with_a_warning(synth_corpus, tmp_path, reference,
                                                                                 caplog):
    cfg = _cfg(synth_corpus, tmp_path)
    fit(cfg)
    ckpts = tmp_path / "checkpoints"
    _truncate(ckpts / LAST)
    with caplog.at_level(logging.WARNING, logger="avssl"):
        last = fit(cfg)  # resumes from the previous checkpoint (step 12) and trains the last epoch again
    warned = [r.getMessage() for r in caplog.records
              if r.levelno == logging.WARNING and "resuming from" in r.getMessage()]
    assert warned == [f"checkpoint {ckpts / LAST} is truncated or corrupt (its zip index is missing): an unfinished "
                      f"write or copy; resuming from {ckpts / PREVIOUS} (step 12) instead"]
    _assert_same_weights(_weights(last), reference)


def test_no_readable_checkpoint_is_one_error_naming_both_files_and_nothing_is_touched(synth_corpus, tmp_path):
    cfg = _cfg(synth_corpus, tmp_path, **{"trainer.max_epochs": 2})
    fit(cfg)
    ckpts = tmp_path / "checkpoints"
    _truncate(ckpts / LAST)
    (ckpts / PREVIOUS).write_bytes(b"")
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError) as err:
        fit(cfg)
    assert str(err.value) == (
        f"cannot resume the run in {ckpts}: checkpoint {ckpts / LAST} is truncated or corrupt (its zip index is "
        f"missing): an unfinished write or copy; checkpoint {ckpts / PREVIOUS} is empty (0 bytes): an unfinished "
        "write or copy. Start afresh with --no-resume (the old files are set aside), or use another output_dir")
    assert _snapshot(tmp_path) == before


# -- case 8: max_epochs=0 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["trainer.max_epochs", "trainer.max_steps"])
def test_a_run_that_trains_nothing_says_so_instead_of_naming_a_missing_checkpoint(synth_corpus, tmp_path, key):
    with pytest.raises(UserError, match=rf"^{key}=0 trains nothing, so there would be no checkpoint; set it to at "
                                        r"least 1$"):
        fit(_cfg(synth_corpus, tmp_path / "run", **{key: 0}))
    assert not (tmp_path / "run").exists()


# -- case 8: rerunning into a folder that holds a run ----------------------------------------------------------
def _snapshot(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rerun_with_another_model_fails_before_touching_the_folder(synth_corpus, tmp_path):
    fit(_cfg(synth_corpus, tmp_path, **{"trainer.max_epochs": 1}))
    before = _snapshot(tmp_path)
    other = _cfg(synth_corpus, tmp_path, **{"trainer.max_epochs": 1, "model.video.kwargs": "{base_channels: 16}",
                                            "seed": 3})
    with pytest.raises(UserError) as err:
        fit(other)
    assert str(err.value) == (
        f"{tmp_path} holds a run trained with another config (model.video.kwargs.base_channels: 8 -> 16, "
        "seed: 0 -> 3); use a new output_dir, or --no-resume to set that run aside and start afresh")
    assert _snapshot(tmp_path) == before


def test_rerun_with_a_longer_schedule_and_other_workers_resumes(synth_corpus, tmp_path):
    fit(_cfg(synth_corpus, tmp_path, **{"trainer.max_epochs": 1}))
    longer = _cfg(synth_corpus, tmp_path, **{"trainer.max_epochs": 2, "data.num_workers": 2,
                                             "trainer.log_every_n_steps": 5, "trainer.checkpoint_every_n_steps": 4})
    assert _step(fit(longer)) == 12  # continued from step 6
    assert load_config(str(tmp_path / "config.yaml")).trainer.max_epochs == 2  # config.yaml records the rerun


def test_incompatible_keys_rule():
    def keys(a, b):
        return incompatible_keys(to_dict(a), to_dict(b))

    base = build_config({})
    same_run = build_config({"trainer": {"max_epochs": 90, "max_steps": 10, "devices": 4, "num_nodes": 2,
                                         "precision": "bf16-mixed", "progress_bar": False, "tensorboard": False,
                                         "log_every_n_steps": 1, "checkpoint_every_n_steps": 100},
                             "data": {"num_workers": 12, "video_root": "/scratch/videos", "test_clips": 10},
                             "eval": {"knn_k": 5}, "output_dir": "elsewhere"})
    assert keys(base, same_run) == []
    other = build_config({"method": {"dropout": 0.1}, "model": {"video": {"name": "r3d_18", "kwargs": {"x": 1}}},
                          "data": {"batch_size": 16, "train": "other.csv", "num_frames": 16},
                          "optim": {"lr": 0.5}, "seed": 1, "num_classes": 7,
                          "trainer": {"accumulate_grad_batches": 2}})
    assert keys(base, other) == [
        "data.batch_size", "data.num_frames", "data.train", "method.dropout", "model.video.kwargs.x",
        "model.video.name", "num_classes", "optim.lr", "seed", "trainer.accumulate_grad_batches"]
    assert "method.name" in keys(base, build_config({"method": {"name": "simclr"}}))


def test_no_resume_sets_the_previous_run_aside_instead_of_mixing_files(synth_corpus, tmp_path):
    fit(_cfg(synth_corpus, tmp_path, **{"trainer.max_epochs": 1}))
    old = _snapshot(tmp_path)
    new = fit(_cfg(synth_corpus, tmp_path, **{"trainer.max_epochs": 1, "model.video.kwargs": "{base_channels: 16}"}),
              resume=False)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("previous-")]
    assert len(aside) == 1
    assert _snapshot(aside[0]) == old  # the whole earlier run, byte for byte
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["best-epoch000.ckpt", LAST]
    assert _weights(new)["video_encoder.stem.conv.weight"].shape[0] == 16
