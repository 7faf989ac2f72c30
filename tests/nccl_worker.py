"""One rank of the NCCL collectives check (2 GPUs): every gather avssl uses, on CUDA tensors.

usage: torchrun --nproc_per_node 2 nccl_worker.py OUT_DIR     (writes OUT_DIR/rank{R}.pt)
"""
from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist


def main() -> None:
    from avssl.engine.sharding import gather_shares
    from avssl.losses.distributed import gather_with_global_grad
    from avssl.memory import MemoryBank, all_gather_varsize

    out = sys.argv[1]
    rank = int(os.environ["RANK"])
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl")
    dev = torch.device("cuda", torch.cuda.current_device())
    try:
        # Unequal row counts: rank r holds r + 2 rows of value r.
        varsize = all_gather_varsize(torch.full((rank + 2, 3), float(rank), device=dev))
        # The differentiable gather: every rank's loss weighs the gathered rows by the same w.
        x = torch.full((2, 3), float(rank + 1), device=dev, requires_grad=True)
        w = torch.arange(12, dtype=torch.float32, device=dev).reshape(4, 3)
        (gather_with_global_grad(x) * w).sum().backward()
        # The memory bank: each rank updates other rows; both must end with every update.
        bank = MemoryBank(8, 3, momentum=0.5, device=dev, seed=0)
        feats = torch.randn(2, 3, generator=torch.Generator().manual_seed(rank)).to(dev)
        bank.update(torch.tensor([2 * rank, 2 * rank + 1], device=dev), feats)
        shares = gather_shares({"rows": torch.arange(3 * rank, 3 * rank + 3, device=dev), "meta": rank})
        torch.save({"varsize": varsize.cpu(), "grad": x.grad.cpu(), "bank": bank.weight.cpu(), "feats": feats.cpu(),
                    "shares": shares}, os.path.join(out, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
