"""Fine-tuning end to end: a pretrained video encoder fine-tuned with ``avssl finetune`` learns (held-out accuracy
beyond a stated chance bound), ``avssl test`` reports it with per-video predictions, the classifier warm-up holds
the encoder for exactly its epochs (also under DDP), and validation counts ties as the metrics module does."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from math import comb
from typing import Dict, List

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from avssl.apps.cli import main
from avssl.checkpoint import load_checkpoint
from avssl.config import load_config
from avssl.engine import fit
from tiny import tiny_overrides
import ddp_warmup  # noqa: E402

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/: shared helpers and scripts
CONFIG = os.path.join(os.path.dirname(HERE), "configs", "demo", "supervised_tiny.yaml")


def encoder_state(state_dict: Dict[str, torch.Tensor], part: str = "video_encoder.") -> Dict[str, torch.Tensor]:
    return {k[len(part):]: v.detach().clone() for k, v in state_dict.items() if k.startswith(part)}


def same(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- the classifier warm-up -------------------------------------------------------------------------------------
class Snapshots(Callback):
    """Keeps the encoder's parameters and buffers (BatchNorm statistics) and the classifier's at the start of training
    and at every epoch end, and how many encoder parameters the optimiser holds state (momentum) for."""

    def __init__(self) -> None:
        self.encoder: List[Dict[str, torch.Tensor]] = []
        self.classifier: List[Dict[str, torch.Tensor]] = []
        self.optimiser_state: List[int] = []

    def _take(self, trainer, pl_module) -> None:
        self.encoder.append(encoder_state(pl_module.state_dict()))
        self.classifier.append(encoder_state(pl_module.state_dict(), "classifier."))
        encoder = {id(p) for p in pl_module.encoder.parameters()}
        self.optimiser_state.append(sum(1 for p, s in trainer.optimizers[0].state.items() if id(p) in encoder and s))

    def on_train_start(self, trainer, pl_module) -> None:
        self._take(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._take(trainer, pl_module)


def test_the_warmup_holds_the_encoder_for_exactly_its_epochs_then_trains_it(synth_corpus, tmp_path):
    # SGD with momentum and weight decay: either alone would move weights that only had a zero learning rate.
    snaps = Snapshots()
    cfg = load_config(overrides=tiny_overrides(synth_corpus, tmp_path, **{
        "method.classifier_warmup_epochs": 2, "trainer.max_epochs": 3, "trainer.limit_train_batches": 2,
        "trainer.limit_val_batches": 1, "optim.name": "sgd", "optim.lr": 0.05, "optim.momentum": 0.9,
        "optim.weight_decay": 0.01}))
    fit(cfg, extra_callbacks=[snaps])
    start, *ends = snaps.encoder
    assert len(ends) == 3
    assert same(ends[0], start) and same(ends[1], start)  # weights and BatchNorm statistics, bit for bit
    assert snaps.optimiser_state[:3] == [0, 0, 0]  # no momentum built up on the encoder during the warm-up
    changed = [k for k in start if not torch.equal(ends[2][k], start[k])]
    assert any(k.endswith("running_mean") for k in changed) and any(k.endswith(".weight") for k in changed)
    assert snaps.optimiser_state[3] > 0
    assert not same(snaps.classifier[1], snaps.classifier[0])  # the classifier trains from the first epoch


# -- learning: a pretrained video encoder fine-tuned on few labels ----------------------------------------------
#: Four classes a tiny video encoder tells apart in seconds: a square moving down, up, sideways (left or right at
#: random: training clips are flipped), or standing still; background and square colour, size, speed and start are
#: drawn per video.
MOTIONS = {"down": (0, 1), "sideways": (None, 0), "still": (0, 0), "up": (0, -1)}


def write_motion_video(path: str, motion: str, rng: np.random.Generator, size: int = 32, frames: int = 16,
                       fps: int = 8) -> None:
    import av

    dx, dy = MOTIONS[motion]
    dx = int(rng.choice([-1, 1])) if dx is None else dx
    bg = rng.integers(0, 256, 3)
    fg = rng.integers(0, 256, 3)
    while np.abs(fg - bg).sum() < 200:
        fg = rng.integers(0, 256, 3)
    side, speed = int(rng.integers(5, 9)), float(rng.uniform(0.8, 1.4))
    span = speed * (frames - 1)

    def start(d: int) -> float:
        return rng.uniform(0, size - side) if d == 0 else (rng.uniform(0, size - side - span) if d > 0
                                                           else rng.uniform(span, size - side))

    x0, y0 = start(dx), start(dy)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "18", "threads": "1"}
        for i in range(frames):
            img = np.empty((size, size, 3), np.uint8)
            img[:] = bg
            x, y = int(round(x0 + dx * speed * i)), int(round(y0 + dy * speed * i))
            img[y:y + side, x:x + side] = fg
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def motion_corpus(root, per_class: Dict[str, int], seed: int) -> str:
    """``root/{split}/{class}/{class}_{i}.mp4`` with ``per_class[split]`` videos of each class per split."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for motion in MOTIONS:
            for i in range(n):
                write_motion_video(os.path.join(root, split, motion, f"{motion}_{i}.mp4"), motion, rng)
    return str(root)


def motion_overrides(data: str, out, **extra) -> List[str]:
    o = {"data.train": data, "data.num_frames": 8, "data.fps": 4.0, "data.crop_size": 28, "data.min_short_side": 28,
         "data.max_short_side": 32, "data.batch_size": 8, "data.num_workers": 0, "data.test_clips": 1,
         "model.video.name": "r3d_tiny", "model.video.kwargs": "{base_channels: 8}", "model.audio": "null",
         "method.dropout": 0.0, "optim.name": "adamw", "optim.lr": 0.003, "optim.warmup_epochs": 0,
         "trainer.accelerator": "cpu", "trainer.devices": 1, "trainer.progress_bar": False,
         "trainer.tensorboard": False, "trainer.log_every_n_steps": 1, "output_dir": str(out)}
    o.update(extra)
    return [f"{k}={v}" for k, v in o.items()]


HELD_OUT, CLASSES = 24, len(MOTIONS)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A supervised checkpoint on 192 videos (the "pretrained" encoder: labelled, like a Kinetics-supervised one,
    not self-supervised), fine-tuned with ``avssl finetune`` (one warm-up epoch, then two end to end) on 16 other
    videos, 4 per class; 24 more (6 per class) are held out."""
    root = tmp_path_factory.mktemp("motion")
    pre_data = motion_corpus(root / "pretrain", {"train": 48}, seed=1)
    data = motion_corpus(root / "target", {"train": 4, "val": HELD_OUT // CLASSES}, seed=2)
    pretrained = fit(load_config(CONFIG, motion_overrides(pre_data, root / "pre", **{
        "trainer.max_epochs": 4, "data.val_split": "null"})))
    overrides = motion_overrides(data, root / "ft", **{"trainer.max_epochs": 3, "method.classifier_warmup_epochs": 1})
    assert main(["finetune", CONFIG, *overrides, "--checkpoint", pretrained]) == 0
    return {"root": root, "data": data, "pretrained": pretrained, "overrides": overrides,
            "checkpoint": str(root / "ft" / "checkpoints" / "last.ckpt")}


def chance_threshold(n: int, classes: int, p_max: float = 1e-3) -> int:
    """The least t with P[Binomial(n, 1/classes) >= t] < p_max: how many of n held-out videos an encoder that learns
    nothing (right with probability 1/classes on each) gets right with probability below p_max."""
    def tail(t: int) -> float:
        return sum(comb(n, k) * (1 / classes) ** k * (1 - 1 / classes) ** (n - k) for k in range(t, n + 1))

    return next(t for t in range(n + 1) if tail(t) < p_max)


@pytest.mark.slow
def test_a_pretrained_video_encoder_fine_tuned_on_16_videos_beats_chance_at_p_below_one_in_a_thousand(finetuned, tmp_path):
    from avssl.eval.testing import checkpoint_test

    # Bound: an encoder that learns nothing is right on each of the 24 held-out videos with probability 1/4, so it
    # gets 14 or more right with probability P[Binomial(24, 1/4) >= 14] = 0.00053 < 0.001 (13 or more: 0.0021).
    t = chance_threshold(HELD_OUT, CLASSES)
    assert t == 14
    cfg = load_config(CONFIG, finetuned["overrides"])
    row = checkpoint_test(cfg, finetuned["checkpoint"])
    assert row["num_videos"] == HELD_OUT
    assert round(row["video_top1"] * HELD_OUT) >= t, row

    # Control: the same fine-tuning from random init stays below the bound, so the pretrained weights are what
    # was fine-tuned (method.init_checkpoint loaded, kept through the warm-up).
    scratch = load_config(CONFIG, [*finetuned["overrides"], f"output_dir={tmp_path / 'scratch'}"])
    row = checkpoint_test(scratch, fit(scratch))
    assert round(row["video_top1"] * HELD_OUT) < t, row


def logged(run_dir, key: str) -> List[float]:
    """The values of ``key`` in a run's CSV log, in order."""
    with open(os.path.join(run_dir, "logs", "version_0", "metrics.csv"), newline="") as f:
        return [float(r[key]) for r in csv.DictReader(f) if r.get(key)]


@pytest.mark.slow
def test_avssl_test_writes_predictions_that_give_the_printed_accuracy(finetuned, tmp_path, capsys):
    from avssl.eval import evaluate
    from avssl.eval.testing import read_predictions

    out = tmp_path / "test"
    capsys.readouterr()
    assert main(["test", CONFIG, *finetuned["overrides"], "--checkpoint", finetuned["checkpoint"], "--views", "2x3",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    row = json.loads((out / "results.json").read_text())["rows"][0]
    assert row["views"] == "2x3" and row["num_videos"] == HELD_OUT and row["num_clips"] == HELD_OUT * 6
    preds = read_predictions(str(out / "predictions.csv"))
    held_out = sorted(str(p) for p in (finetuned["root"] / "target" / "val").rglob("*.mp4"))
    assert sorted(r["video"] for r in preds) == held_out  # each held-out video once
    top1 = sum(r["predicted"] == r["label"] for r in preds) / len(preds)
    assert top1 == sum(r["true_rank"] == 0 for r in preds) / len(preds) == pytest.approx(row["video_top1"])
    assert sum(r["label"] in r["top5"] for r in preds) / len(preds) == pytest.approx(row["video_top5"])
    recalls = [np.mean([r["predicted"] == c for r in preds if r["label"] == c]) for c in range(CLASSES)]
    assert np.mean(recalls) == pytest.approx(row["mean_class_accuracy"])
    assert all(r["label_name"] == os.path.basename(os.path.dirname(r["video"])) for r in preds)
    assert f"{100 * top1:.2f}" in printed  # the table's video top-1 (%)
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # On the views validation used (the config's 1 clip × 1 crop), the last validation during fine-tuning, avssl
    # test and the test protocol of avssl eval give the same numbers.
    cfg = load_config(CONFIG, finetuned["overrides"])
    via_eval = evaluate(cfg, finetuned["checkpoint"], protocols=["test"], out_dir=str(tmp_path / "eval"))[0]
    run = os.path.dirname(os.path.dirname(finetuned["checkpoint"]))
    assert logged(run, "val/top1")[-1] == pytest.approx(via_eval["video_top1"], abs=1e-6)
    assert logged(run, "val/mean_class_accuracy")[-1] == pytest.approx(via_eval["mean_class_accuracy"], abs=1e-6)
    assert (tmp_path / "eval" / "predictions.csv").exists()


def test_validation_counts_a_tie_against_the_true_label():
    """A classifier that scores every class alike is right on no video (as avssl.eval.metrics counts it), not on
    the videos of class 0 (as an argmax would)."""
    import lightning as L
    from torch.utils.data import DataLoader

    from avssl.methods import build_method
    from tiny import tiny_config

    method = build_method("supervised", tiny_config("supervised"))
    for p in method.classifier.parameters():
        torch.nn.init.zeros_(p)
    videos = [{"video": torch.randn(2, 3, 5, 16, 16), "label": i // 2, "index": i} for i in range(6)]  # 2 views each
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    metrics = trainer.validate(method, dataloaders=DataLoader(videos, batch_size=4), verbose=False)[0]
    assert metrics["val/top1"] == 0.0 and metrics["val/mean_class_accuracy"] == 0.0
    assert metrics["val/top5"] == 1.0  # three classes: every label is among the best five


def _checkpoints(run):
    return load_checkpoint(run / "checkpoints" / "last.prev.ckpt"), load_checkpoint(run / "checkpoints" / "last.ckpt")


@pytest.mark.slow
def test_the_warmup_under_two_process_ddp_holds_then_trains_the_encoder_as_one_process_does(synth_corpus, tmp_path):
    from avssl.models import build_encoder

    torch.manual_seed(0)
    init = tmp_path / "init.pth"
    torch.save(build_encoder("r3d_tiny", base_channels=8).state_dict(), init)
    start = torch.load(init, weights_only=True)
    one_run, two_run = tmp_path / "one", tmp_path / "two"
    ddp_warmup.run(str(synth_corpus), str(one_run), batch=8, init=str(init))  # one process, in this one
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.path.dirname(HERE))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           os.path.join(HERE, "ddp_warmup.py"), str(synth_corpus), str(two_run), "4", str(init)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (one_warm, one_end), (two_warm, two_end) = _checkpoints(one_run), _checkpoints(two_run)
    for warm, end in ((one_warm, one_end), (two_warm, two_end)):
        assert warm["epoch"] == 0 and end["epoch"] == 1
        assert same(encoder_state(warm["state_dict"]), start)  # held through the warm-up epoch
        assert not same(encoder_state(end["state_dict"]), start)  # trained in the next
    for a, b in ((one_warm, two_warm), (one_end, two_end)):
        for k, v in a["state_dict"].items():
            torch.testing.assert_close(b["state_dict"][k], v, rtol=1e-4, atol=1e-6, msg=k)
    # Validation gathers the views of both processes: the same metrics as one process.
    assert logged(two_run, "val/top1") == logged(one_run, "val/top1")
    assert logged(two_run, "val/mean_class_accuracy") == logged(one_run, "val/mean_class_accuracy")


def test_avssl_test_and_splits_refuse_a_users_mistakes_in_one_line(synth_corpus, tmp_path, capsys):
    from avssl.config import to_dict
    from avssl.methods import build_method
    from tiny import tiny_config

    cfg = tiny_config("simclr")
    ckpt = tmp_path / "simclr.ckpt"
    torch.save({"state_dict": build_method("simclr", cfg).state_dict(), "hyper_parameters": {"config": to_dict(cfg)}},
               ckpt)
    overrides = tiny_overrides(synth_corpus, tmp_path / "run")
    assert main(["test", CONFIG, *overrides, "--checkpoint", str(ckpt)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"avssl: error: {ckpt} holds a 'simclr' run, which has no classifier: test a checkpoint of `avssl finetune` "
        "(or of the supervised method)")
    with pytest.raises(SystemExit) as e:
        main(["test", CONFIG, "--checkpoint", str(ckpt), "--views", "10x2"])
    assert e.value.code == 2 and "expected CLIPSxCROPS with CLIPS >= 1 and CROPS 1 or 3 (e.g. 10x3), got '10x2'" in \
        capsys.readouterr().err
    # --splits needs split files: the corpus's annotations.csv is not one.
    assert main(["finetune", CONFIG, *overrides, "--checkpoint", str(ckpt), "--splits", "1", "2"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"avssl: error: --splits needs UCF-101/HMDB-51 split files: data.train={synth_corpus / 'annotations.csv'} is "
        "neither a split file (trainlist01.txt, testlist01.txt, {class}_test_split1.txt) nor a folder of them")
    assert not (tmp_path / "run").exists()
