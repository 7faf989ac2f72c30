"""What a run shows while it trains: clips/s and data wait (exact, on a fake clock), the loss in the progress bar
without v_num, the logged columns, and the online kNN monitor."""
from __future__ import annotations

import csv
import glob
import os

import pytest
import torch
import torch.nn as nn
from tiny import tiny_overrides

from avssl.config import load_config
from avssl.engine.telemetry import KnnMonitor, Throughput


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Module:
    def __init__(self) -> None:
        self.logged = {}

    def log(self, name, value, **kw):
        assert kw["on_step"] and kw["prog_bar"] and kw["logger"]
        self.logged[name] = value


class _Trainer:
    world_size = 2


def test_throughput_splits_each_step_into_data_wait_and_compute():
    clock, module, trainer = _Clock(), _Module(), _Trainer()
    t = Throughput(window=2, clock=clock)
    t.on_train_epoch_start(trainer, module)
    # (wait, compute) per step, batch of 4 clips per rank on 2 ranks
    for wait, compute in ((0.3, 0.1), (0.1, 0.1), (0.0, 0.2)):
        clock.now += wait
        t.on_train_batch_start(trainer, module, {"video": torch.zeros(4, 3)}, 0)
        clock.now += compute
        t.on_train_batch_end(trainer, module, None, {"video": torch.zeros(4, 3)}, 0)
    # the window holds the last two steps: 0.4 s in all, 0.1 s of it waiting, 2 × 4 × 2 clips
    assert module.logged["perf/step_s"] == pytest.approx(0.2)
    assert module.logged["perf/data_wait"] == pytest.approx(0.25)
    assert module.logged["perf/clips_per_s"] == pytest.approx(16 / 0.4)


def test_a_run_logs_throughput_and_knn_and_shows_the_loss_without_v_num(synth_corpus, tmp_path):
    from lightning.pytorch.callbacks import Callback

    from avssl.engine import fit

    shown = {}

    class Bar(Callback):
        def on_train_end(self, trainer, pl_module):
            shown.update(trainer.progress_bar_callback.get_metrics(trainer, pl_module))

    cfg = load_config(overrides=tiny_overrides(synth_corpus, tmp_path, method="xmodal_nce", **{
        "trainer.progress_bar": True, "trainer.log_every_n_steps": 2, "trainer.knn_monitor.every_n_epochs": 1,
        "trainer.knn_monitor.max_videos": 8, "trainer.knn_monitor.k": 3}))
    fit(cfg, resume=False, extra_callbacks=[Bar()])
    assert "v_num" not in shown and {"loss", "clips/s", "data wait", "knn top1"} <= set(shown), shown
    rows = list(csv.DictReader(open(glob.glob(os.path.join(tmp_path, "logs", "version_*", "metrics.csv"))[0])))
    perf = [r for r in rows if r.get("perf/clips_per_s")]
    assert len(perf) == 3  # 6 steps logged every 2
    for r in perf:
        assert float(r["perf/clips_per_s"]) > 0 and 0 <= float(r["perf/data_wait"]) <= 1
        assert float(r["perf/step_s"]) > 0
    knn = [float(r["val/knn_top1"]) for r in rows if r.get("val/knn_top1")]
    assert len(knn) == 1 and 0 <= knn[0] <= 1


class _Spectrum(nn.Module):
    """A fixed audio 'encoder': each clip's mean log-mel spectrum (the synthetic classes have their own sounds)."""

    def forward(self, x):  # B×1×F×T' -> B×F
        s = x.mean(dim=-1).flatten(1)
        return s - s.mean(1, keepdim=True)


def test_knn_monitor_beats_chance_with_an_encoder_that_separates_the_classes(synth_corpus, tmp_path):
    class Method(nn.Module):
        device = torch.device("cpu")

        def encoder_for(self, modality):
            assert modality == "audio"
            return _Spectrum()

    cfg = load_config(overrides=tiny_overrides(synth_corpus, tmp_path, method="xmodal_nce", **{
        "trainer.knn_monitor.every_n_epochs": 1, "trainer.knn_monitor.k": 3,
        "trainer.knn_monitor.modality": "audio"}))
    monitor = KnnMonitor.from_config(cfg)
    monitor.setup(None, None, "fit")
    assert [len(monitor._parts[p]) for p in ("train", "val")] == [24, 8]
    assert monitor.measure(Method()) >= 0.5  # chance: 0.25 (4 classes)


def test_knn_monitor_needs_a_labelled_held_out_part(synth_corpus, tmp_path):
    from avssl.config import ConfigError

    cfg = load_config(overrides=tiny_overrides(synth_corpus, tmp_path, method="xmodal_nce", **{
        "trainer.knn_monitor.every_n_epochs": 1, "data.val_split": "null"}))
    assert KnnMonitor.from_config(load_config(overrides=tiny_overrides(synth_corpus, tmp_path))) is None
    with pytest.raises(ConfigError, match="trainer.knn_monitor needs labelled train and held-out videos"):
        KnnMonitor.from_config(cfg).setup(None, None, "fit")
