"""Fine-tuning with a one-epoch classifier warm-up under torchrun (CPU, gloo): two epochs of two steps from the
encoder weights INIT; ``last.prev.ckpt`` then holds the weights after the warm-up epoch, ``last.ckpt`` after the next.

usage: torchrun --nproc_per_node N ddp_warmup.py CORPUS OUT_DIR PER_RANK_BATCH INIT  (or :func:`run` in-process)
"""
import os
import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, os.path.dirname(__file__))
from tiny import tiny_overrides  # noqa: E402

from avssl.config import load_config  # noqa: E402
from avssl.engine import fit  # noqa: E402


class FixedBatchNorm(Callback):
    """BatchNorm layers use their running statistics: CPU processes cannot synchronise batch statistics
    (SyncBatchNorm is CUDA-only), and this run checks the warm-up and gradient averaging, not normalisation."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        for m in pl_module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


def run(corpus: str, out_dir: str, batch: int, init: str, world: int = 1) -> None:
    # SGD with momentum and weight decay, either of which would move weights held only by a zero learning rate;
    # no dropout (its masks differ per process).
    cfg = load_config(overrides=tiny_overrides(Path(corpus), out_dir, **{
        "data.batch_size": int(batch), "trainer.devices": world, "trainer.strategy": "ddp" if world > 1 else "auto",
        "trainer.max_epochs": 2, "trainer.limit_train_batches": 2, "method.classifier_warmup_epochs": 1,
        "method.init_checkpoint": init, "method.dropout": 0.0, "optim.name": "sgd", "optim.lr": 0.05,
        "optim.momentum": 0.9, "optim.weight_decay": 0.001,
    }))
    fit(cfg, resume=False, extra_callbacks=[FixedBatchNorm()])


if __name__ == "__main__":
    corpus, out_dir, batch, init = sys.argv[1:5]
    run(corpus, out_dir, int(batch), init, world=int(os.environ.get("WORLD_SIZE", "1")))
