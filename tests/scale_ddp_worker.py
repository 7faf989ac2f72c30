"""Memory-bank methods under DDP: one torchrun job (CPU, gloo) runs every scenario of tests/engine/test_scale_ddp.py.

usage: torchrun --nproc_per_node 2 scale_ddp_worker.py CORPUS OUT_DIR

* ``embed``: a seeded avid_cma model's ``embed_dataset("train")`` (sharded across the ranks) and the k-means
  clusters of its audio embeddings; each rank writes what it got to ``embed_rank{R}.pt``.
* ``equal``: avid_cma trained for 2 steps on 4 clips per rank, whole-bank negatives; the per-step losses of every
  rank go to ``equal_losses.json``, rank 0's checkpoint to ``equal/checkpoints/last.ckpt``, each rank's banks to
  ``equal_banks_rank{R}.pt``.
* ``bcast_off`` / ``bcast_on``: one step after rank 1 has replaced every row of its video bank by its negation
  (``trainer.ddp.broadcast_buffers`` unset, then true); each rank writes its video bank and the rows the step
  updated to ``<name>_rank{R}.pt``.
* ``avssl extract`` of the audio features (2 test clips per video) of the ``equal`` run's config, to ``extract.pt``.

``run_config`` and ``Recorder`` are shared with the one-process side of the test.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List

import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, os.path.dirname(__file__))
from tiny import tiny_overrides  # noqa: E402

from avssl.config import load_config  # noqa: E402


def run_config(corpus: Path, out_dir: Path, world: int, per_rank_batch: int, **extra: Any) -> Any:
    """avid_cma on the synthetic corpus: whole-bank negatives (no random draw), a short deterministic run."""
    return load_config(overrides=tiny_overrides(corpus, out_dir, method="avid_cma", **{
        "data.batch_size": per_rank_batch, "trainer.devices": world, "trainer.strategy": "ddp" if world > 1 else "auto",
        "method.num_negatives": "null", "method.proj_hidden": 16, "method.proj_dim": 8, "trainer.max_steps": 2,
        "trainer.sync_batchnorm": False, **extra}))


class Recorder(Callback):
    """BatchNorm layers in eval mode (CPU processes cannot synchronise batch statistics; these runs check banks,
    gathering and gradient averaging, not normalisation); records each step's loss (all ranks) and the bank rows
    the steps updated; at the end writes ``<prefix>_rank{R}.pt`` with the banks and those rows."""

    def __init__(self, prefix: str, negate_on_rank: int = -1) -> None:
        self.prefix, self.negate_on_rank = prefix, negate_on_rank
        self.losses: List[List[float]] = []
        self.touched: List[torch.Tensor] = []

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.global_rank == self.negate_on_rank:
            bank = pl_module.criterion.video_bank.weight
            bank.copy_(-bank)  # still unit rows, and unlike rank 0's everywhere

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        for m in pl_module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = float(outputs["loss"].detach())
        index = batch["index"].reshape(-1).cpu()
        if dist.is_initialized():
            losses: List[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(losses, loss)
            indices: List[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(indices, index)
            index = torch.cat(indices)
        else:
            losses = [loss]
        self.losses.append(losses)
        self.touched.append(index)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        crit = pl_module.criterion
        state: Dict[str, Any] = {"video_bank": crit.video_bank.weight.clone(), "audio_bank": crit.audio_bank.weight.clone(),
                                 "touched": torch.cat(self.touched).unique(), "losses": self.losses}
        torch.save(state, os.path.join(self.out_dir(trainer), f"{self.prefix}_rank{trainer.global_rank}.pt"))

    @staticmethod
    def out_dir(trainer: Any) -> str:
        return os.path.dirname(os.path.abspath(trainer.default_root_dir))


class Counted(torch.utils.data.Dataset):
    """A dataset that records which items it was asked for (loaded in this process: num_workers=0)."""

    def __init__(self, ds: Any) -> None:
        self.ds, self.loaded = ds, []

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> Any:
        self.loaded.append(int(i))
        return self.ds[i]


def embed(corpus: Path, out: Path, rank: int) -> Dict[str, Any]:
    """A seeded avid_cma model's embeddings of the training videos (5 per batch), the k-means clusters of the
    audio ones, and the videos this process decoded."""
    import lightning as L

    from avssl.cluster import kmeans
    from avssl.data.datamodule import make_dataset
    from avssl.methods import build_method

    cfg = run_config(corpus, out / "embed", 1, 4)
    L.seed_everything(0, verbose=False)
    method = build_method("avid_cma", cfg)
    ds = Counted(make_dataset(cfg, "train", train=False, needs_audio=True))
    z = method.embed_dataset(ds, batch_size=5, num_workers=0)  # 24 videos: 12 per rank, a short last batch
    return {**z, "clusters": kmeans(z["audio"], 3, seed=0), "loaded": sorted(ds.loaded)}


def main() -> None:
    from avssl.engine import fit

    corpus, out = Path(sys.argv[1]), Path(sys.argv[2])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.save(embed(corpus, out, rank), out / f"embed_rank{rank}.pt")
    torch.manual_seed(0)
    fit(run_config(corpus, out / "equal", world, 4), resume=False, extra_callbacks=[Recorder("equal")])
    for name, extra in (("bcast_off", {}), ("bcast_on", {"trainer.ddp.broadcast_buffers": True})):
        torch.manual_seed(0)
        fit(run_config(corpus, out / name, world, 4, **{"trainer.max_steps": 1, **extra}), resume=False,
            extra_callbacks=[Recorder(name, negate_on_rank=1)])
    # avssl extract under torchrun (in the process group already set up: re-initialising one in the same job would
    # read the first one's stale addresses from torchrun's store); rank 0 writes the file.
    from avssl.apps.cli import main as cli

    rc = cli(["extract", str(out / "equal" / "config.yaml"), "data.test_clips=2", "eval.batch_size=5",
              "--modality", "audio", "--output", str(out / "extract.pt")])
    if rank == 0 and rc == 0:
        (out / "done.json").write_text(json.dumps({"world": world}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
