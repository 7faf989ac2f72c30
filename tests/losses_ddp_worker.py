"""One rank of the distributed loss check: computes every loss on its slice of a fixed batch.

usage: python losses_ddp_worker.py RANK WORLD INIT_FILE OUT_DIR   (CPU, gloo; writes OUT_DIR/rank{RANK}.pt)

``compute`` is shared with the single-process side of tests/losses/test_losses_ddp.py, so both sides run the
same code on the same numbers; only the batch split differs.
"""
from __future__ import annotations

import datetime
import os
import sys
from typing import Dict

import torch
import torch.distributed as dist

N = 8         # global batch
QUEUE = 6     # SwAV queue rows (global)


def make_inputs() -> Dict[str, torch.Tensor]:
    """The whole batch, identical in every process (float64, fixed seed)."""
    g = torch.Generator().manual_seed(1234)
    r = lambda *s, scale=1.0: torch.randn(*s, generator=g, dtype=torch.float64) * scale  # noqa: E731
    return {
        "nt_a": r(N, 5), "nt_b": r(N, 5),
        "vic_a": r(N, 6, scale=0.7), "vic_b": r(N, 6, scale=0.7),
        "bt_a": r(N, 6), "bt_b": r(N, 6),
        "sw_a": r(N, 4, scale=0.5), "sw_b": r(N, 4, scale=0.5), "sw_s": r(N, 4, scale=0.5),
        "sw_qa": r(QUEUE, 4, scale=0.5), "sw_qb": r(QUEUE, 4, scale=0.5),
        "mo_q1": r(N, 5), "mo_k1": r(N, 5), "mo_q2": r(N, 5), "mo_k2": r(N, 5),
    }


def local_slice(inputs: Dict[str, torch.Tensor], rank: int, world: int) -> Dict[str, torch.Tensor]:
    out = {}
    for key, x in inputs.items():
        rows = x.shape[0] // world
        out[key] = x[rank * rows:(rank + 1) * rows].clone()
    return out


def compute(x: Dict[str, torch.Tensor]) -> Dict[str, object]:
    """Every loss on the local inputs ``x``: {name: (loss, [input grads])} plus codes and MoCo state."""
    from avssl.losses import build_loss
    from avssl.losses.clustering import sinkhorn

    def run(name, loss_fn, keys, *args, **kw):
        leaves = [x[k].clone().requires_grad_(True) for k in keys]
        loss = loss_fn(*leaves, *args, **kw)
        loss.backward()
        results[name] = (loss.detach(), [t.grad for t in leaves])

    results: Dict[str, object] = {}
    run("nt_xent", build_loss("nt_xent", temperature=0.2, gather_distributed=True), ["nt_a", "nt_b"])
    run("vicreg", build_loss("vicreg", gather_distributed=True), ["vic_a", "vic_b"])
    run("barlow_twins", build_loss("barlow_twins", gather_distributed=True), ["bt_a", "bt_b"])
    run("swav", build_loss("swav"), ["sw_a", "sw_b", "sw_s"],
        queue_scores_a=x["sw_qa"], queue_scores_b=x["sw_qb"])
    results["codes"] = sinkhorn(x["sw_a"], epsilon=0.05, iterations=3)
    moco = build_loss("moco", queue_size=12, dim=5, temperature=0.2, seed=5).double()
    run("moco1", moco, ["mo_q1", "mo_k1"])
    run("moco2", moco, ["mo_q2", "mo_k2"])  # this step's 8 keys wrap around the 12-row queue
    results["moco_queue"] = moco.queue.clone()
    results["moco_ptr"] = int(moco.queue_ptr)
    return results


def main() -> None:
    rank, world, init_file, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        results = compute(local_slice(make_inputs(), rank, world))
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
