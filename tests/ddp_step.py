"""One training step under torchrun (CPU, gloo); writes every rank's step-0 loss to a JSON file.

usage: torchrun --nproc_per_node N ddp_step.py CORPUS OUT_DIR METHOD PER_RANK_BATCH RESULT_JSON
"""
import json
import os
import sys

import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, os.path.dirname(__file__))
from tiny import tiny_overrides  # noqa: E402

from avssl.config import load_config  # noqa: E402
from avssl.engine import fit  # noqa: E402


class FirstLoss(Callback):
    """Records the first step's loss. BatchNorm layers use their (initial) running statistics: CPU
    processes cannot synchronise batch statistics (SyncBatchNorm is CUDA-only), and this run checks
    data sharding, gathering and gradient averaging, not normalisation."""

    def __init__(self, path):
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        for m in pl_module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step != 1:
            return
        loss = float(outputs["loss"].detach())
        losses = [None] * dist.get_world_size() if dist.is_initialized() else [loss]
        if dist.is_initialized():
            dist.all_gather_object(losses, loss)
        if trainer.global_rank == 0:
            with open(self.path, "w") as f:
                json.dump(losses, f)


def main():
    corpus, out_dir, method, batch, result = sys.argv[1:6]
    from pathlib import Path

    world = int(os.environ.get("WORLD_SIZE", "1"))
    extra = {"method.dropout": 0.0} if method == "supervised" else {}  # dropout masks differ per process
    cfg = load_config(overrides=tiny_overrides(Path(corpus), out_dir, method=method, **extra, **{
        "data.batch_size": int(batch), "trainer.devices": world, "trainer.strategy": "ddp" if world > 1 else "auto",
        "trainer.max_steps": 1, "trainer.sync_batchnorm": True, "optim.lr": 0.0,
    }))
    torch.manual_seed(0)
    fit(cfg, resume=False, extra_callbacks=[FirstLoss(result)])


if __name__ == "__main__":
    main()
