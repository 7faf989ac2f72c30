"""Cost of each self-supervised loss: avssl's implementation against an independent one, same inputs.

For every (loss, batch, embedding) cell the benchmark draws seeded random embeddings, then measures
forward + backward of avssl's loss (``build_loss``) and of the reference: the ``lightly`` library's loss
where it is installed (``pip install lightly``; the tests' extra installs it), else a straightforward
implementation of the paper's formula written here. Each row says whether both gave the same value
(relative difference ≤ 1e-4).

* ``nt_xent`` (τ 0.1), ``byol``, ``simsiam``, ``vicreg``: embedding 128 (the projector outputs of the
  recipes are 128–8192 wide; the batch axis is what grows their cost);
* ``barlow_twins``: the D×D cross-correlation dominates, so the embedding sweeps ``--dims`` (default
  128, 2048, 8192);
* ``moco``: 128-d queries against a queue of 16,384 keys (the reference: lightly's NT-Xent with a memory
  bank of the same keys);
* ``swav``: scores against 3,000 prototypes, Sinkhorn ε 0.05 × 3 iterations, two crops.

Time is the median of ``--repeats`` runs after one warm-up (CUDA synchronised); peak memory is the
peak tensor memory above what is allocated before the call (:func:`avssl.apps.bench.measure.peak_bytes`).
On CPU, the cells of batch 4096 × dim 8192 are skipped unless ``--full`` (minutes each on 2 cores).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from avssl.apps.bench.base import Benchmark, register
from avssl.apps.bench.measure import MIB, peak_bytes, sync
from avssl.apps.options import POSITIVE_INT
from avssl.eval.report import Table, fmt
from avssl.losses import build_loss

LOSSES = ("nt_xent", "moco", "byol", "simsiam", "barlow_twins", "vicreg", "swav")
QUEUE = 16384
PROTOTYPES = 3000


# -- formula references (used when lightly is not installed) -------------------------------------------
def _ref_nt_xent(a: torch.Tensor, b: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    z = F.normalize(torch.cat([a, b]), dim=1)
    n = a.shape[0]
    sim = z @ z.T / tau
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)


def _ref_barlow(a: torch.Tensor, b: torch.Tensor, lambd: float = 5.1e-3) -> torch.Tensor:
    za = (a - a.mean(0)) / a.std(0, unbiased=False)
    zb = (b - b.mean(0)) / b.std(0, unbiased=False)
    c = za.T @ zb / a.shape[0]
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on + lambd * off


def _ref_vicreg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    n, d = a.shape
    inv = F.mse_loss(a, b)

    def var(x: torch.Tensor) -> torch.Tensor:
        return F.relu(1 - torch.sqrt(x.var(0) + 1e-4)).mean()

    def cov(x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(0)
        c = x.T @ x / (n - 1)
        return (c.pow(2).sum() - torch.diagonal(c).pow(2).sum()) / d

    return 25 * inv + 25 * 0.5 * (var(a) + var(b)) + cov(a) + cov(b)


def _ref_neg_cos(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return -F.cosine_similarity(p, z.detach(), dim=1).mean()


def _ref_moco(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float = 0.2) -> torch.Tensor:
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    pos = (qn * kn).sum(1, keepdim=True)
    neg = qn @ F.normalize(queue, dim=1).T
    logits = torch.cat([pos, neg], 1) / tau
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def _ref_swav(s_a: torch.Tensor, s_b: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    def codes(s: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            q = torch.exp(s / 0.05).T  # K×B
            q /= q.sum()
            k, b = q.shape
            for _ in range(3):
                q /= q.sum(1, keepdim=True) * k
                q /= q.sum(0, keepdim=True) * b
            return (q * b).T

    qa, qb = codes(s_a), codes(s_b)
    return -0.5 * ((qa * F.log_softmax(s_b / tau, 1)).sum(1).mean() + (qb * F.log_softmax(s_a / tau, 1)).sum(1).mean())


def _lightly() -> Optional[Any]:
    try:
        import lightly.loss as ll  # noqa: F401
    except Exception:  # noqa: BLE001  (optional; any import failure means: use the formulas)
        return None
    return ll


# -- cases ------------------------------------------------------------------------------------------
Case = Tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor], List[torch.Tensor], str]


def make_case(name: str, batch: int, dim: int, device: torch.device, seed: int = 0,
              use_lightly: bool = True) -> Case:
    """(ours(), reference(), leaf tensors, reference name) for one cell, on seeded random inputs."""
    g = torch.Generator().manual_seed(seed)

    def leaf(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale).to(device).requires_grad_(True)

    ll = _lightly() if use_lightly else None
    if name == "nt_xent":
        a, b = leaf(batch, dim), leaf(batch, dim)
        ours_fn = build_loss("nt_xent", temperature=0.1)
        if ll is not None:
            ref_fn, ref_name = ll.NTXentLoss(temperature=0.1), "lightly NTXentLoss"
        else:
            ref_fn, ref_name = _ref_nt_xent, "formula"
        return (lambda: ours_fn(a, b)), (lambda: ref_fn(a, b)), [a, b], ref_name
    if name in ("byol", "simsiam"):
        p, z = leaf(batch, dim), leaf(batch, dim)
        ours_fn = build_loss(name)
        neg = ll.NegativeCosineSimilarity() if ll is not None else _ref_neg_cos
        ref_name = "lightly NegativeCosineSimilarity" if ll is not None else "formula"
        if name == "byol":
            return (lambda: ours_fn(p, z)), (lambda: 2 + 2 * neg(p, z.detach())), [p, z], ref_name
        return (lambda: ours_fn(p, z)), (lambda: neg(p, z.detach())), [p, z], ref_name
    if name == "barlow_twins":
        a, b = leaf(batch, dim), leaf(batch, dim)
        ours_fn = build_loss("barlow_twins", lambd=5.1e-3, eps=1e-5)
        if ll is not None:
            ref_fn, ref_name = ll.BarlowTwinsLoss(lambda_param=5.1e-3), "lightly BarlowTwinsLoss"
        else:
            ref_fn, ref_name = _ref_barlow, "formula"
        return (lambda: ours_fn(a, b)), (lambda: ref_fn(a, b)), [a, b], ref_name
    if name == "vicreg":
        a, b = leaf(batch, dim), leaf(batch, dim)
        ours_fn = build_loss("vicreg")
        if ll is not None:
            ref_fn, ref_name = ll.VICRegLoss(), "lightly VICRegLoss"
        else:
            ref_fn, ref_name = _ref_vicreg, "formula"
        return (lambda: ours_fn(a, b)), (lambda: ref_fn(a, b)), [a, b], ref_name
    if name == "moco":
        q, k = leaf(batch, dim), leaf(batch, dim)
        ours_fn = build_loss("moco", queue_size=QUEUE, dim=dim, temperature=0.2, seed=seed).to(device)
        queue = ours_fn.queue.detach().clone()
        # A benchmark call must not move the queue, so every timed call sees the same keys.
        ptr = ours_fn.queue_ptr.clone()

        def ours() -> torch.Tensor:
            out = ours_fn(q, k)
            ours_fn.queue.copy_(queue)
            ours_fn.queue_ptr.copy_(ptr)
            return out

        return ours, (lambda: _ref_moco(q, k.detach(), queue)), [q, k], "formula (queue of keys)"
    if name == "swav":
        sa, sb = leaf(batch, PROTOTYPES, scale=0.5), leaf(batch, PROTOTYPES, scale=0.5)
        ours_fn = build_loss("swav", temperature=0.1, epsilon=0.05, sinkhorn_iterations=3)
        if ll is not None:
            ref = ll.SwaVLoss(temperature=0.1, sinkhorn_iterations=3, sinkhorn_epsilon=0.05)
            return (lambda: ours_fn(sa, sb)), (lambda: ref([sa, sb], [])), [sa, sb], "lightly SwaVLoss"
        return (lambda: ours_fn(sa, sb)), (lambda: _ref_swav(sa, sb)), [sa, sb], "formula"
    raise KeyError(f"unknown loss {name!r} for the benchmark; known: {', '.join(LOSSES)}")


def _time(fn: Callable[[], torch.Tensor], leaves: Sequence[torch.Tensor], device: torch.device,
          repeats: int) -> Tuple[float, float]:
    """(median seconds of forward + backward, the loss value)."""
    def step() -> float:
        for t in leaves:
            t.grad = None
        out = fn()
        out.backward()
        return float(out.detach())

    value = step()  # warm-up
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), value


def _peak(fn: Callable[[], torch.Tensor], leaves: Sequence[torch.Tensor], device: torch.device) -> float:
    def step() -> torch.Tensor:
        for t in leaves:
            t.grad = None
        out = fn()
        out.backward()
        return out.detach()

    return peak_bytes(step, device) / MIB


def grid(losses: Sequence[str], batch_sizes: Sequence[int], dims: Sequence[int], other_dim: int = 128) -> List[Tuple[str, int, int]]:
    """The (loss, batch, dim) cells: ``dims`` for Barlow Twins, ``other_dim`` for the rest."""
    cells = []
    for name in losses:
        if name not in LOSSES:
            raise KeyError(f"unknown loss {name!r} for the benchmark; known: {', '.join(LOSSES)}")
        for b in batch_sizes:
            for d in (dims if name == "barlow_twins" else [other_dim]):
                cells.append((name, int(b), int(d)))
    return cells


def measure(
    losses: Sequence[str] = LOSSES,
    batch_sizes: Sequence[int] = (256, 1024, 4096),
    dims: Sequence[int] = (128, 2048, 8192),
    other_dim: int = 128,
    device: Optional[str] = None,
    repeats: int = 3,
    full: bool = False,
    measure_memory: bool = True,
    use_lightly: bool = True,
    progress: bool = True,
) -> List[Dict[str, Any]]:
    """One row (a dict) per (loss, batch, dim) cell; see the module docstring."""
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cells = grid(losses, batch_sizes, dims, other_dim)
    rows: List[Dict[str, Any]] = []
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("losses", total=len(cells))
        for name, b, d in cells:
            row: Dict[str, Any] = {"loss": name, "batch": b, "dim": d if name != "swav" else PROTOTYPES,
                                   "device": str(dev), "note": ""}
            if dev.type == "cpu" and not full and b * d >= 4096 * 8192:
                row.update(ours_ms=None, ref_ms=None, ref=None, ours_mib=None, ref_mib=None, agree=None,
                           note="skipped on CPU (--full runs it)")
                rows.append(row)
                bar.advance(task)
                continue
            ours, ref, leaves, ref_name = make_case(name, b, d, dev, use_lightly=use_lightly)
            t_ours, v_ours = _time(ours, leaves, dev, repeats)
            t_ref, v_ref = _time(ref, leaves, dev, repeats)
            row.update(ours_ms=1e3 * t_ours, ref_ms=1e3 * t_ref, ref=ref_name, ours_value=v_ours, ref_value=v_ref,
                       agree=abs(v_ours - v_ref) <= 1e-4 * max(1.0, abs(v_ref)))
            row["ours_mib"] = _peak(ours, leaves, dev) if measure_memory else None
            row["ref_mib"] = _peak(ref, leaves, dev) if measure_memory else None
            rows.append(row)
            bar.advance(task)
    return rows


@register
class LossesBenchmark(Benchmark):
    name = "losses"
    help = "forward+backward time and memory of each loss vs an independent implementation"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES, metavar="LOSS")
        p.add_argument("--batch-sizes", type=POSITIVE_INT, nargs="+", default=[256, 1024, 4096])
        p.add_argument("--dims", type=POSITIVE_INT, nargs="+", default=[128, 2048, 8192],
                       help="Barlow Twins' embedding sizes")
        p.add_argument("--other-dim", type=POSITIVE_INT, default=128, help="embedding size of the other losses")
        p.add_argument("--device", default=None)
        p.add_argument("--repeats", type=POSITIVE_INT, default=3)
        p.add_argument("--full", action="store_true", help="also the largest cells on CPU")
        p.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
        p.add_argument("--no-lightly", action="store_true", help="formula references even where lightly is installed")

    def run(self, args: argparse.Namespace) -> List[Dict[str, Any]]:
        return measure(args.losses, args.batch_sizes, args.dims, args.other_dim, args.device, args.repeats,
                       args.full, not args.no_memory, not args.no_lightly)

    def table(self, rows: Sequence[Dict[str, Any]]) -> Table:
        r0 = rows[0] if rows else {}
        cells = []
        for r in rows:
            ratio = None if not r.get("ref_ms") else r["ours_ms"] / r["ref_ms"]
            same = r["note"] or ("yes" if r["agree"] else f"no ({r['ours_value']:.6g} vs {r['ref_value']:.6g})")
            cells.append([r["loss"], str(r["batch"]), str(r["dim"]), fmt(r["ours_ms"], ".2f"), fmt(r["ref_ms"], ".2f"),
                          fmt(ratio, ".2f", "×"), fmt(r["ours_mib"], ".1f"), fmt(r["ref_mib"], ".1f"),
                          r["ref"] or "—", same])
        columns = ["loss", "batch", "dim", "avssl ms", "reference ms", "ratio", "avssl MiB", "reference MiB",
                   "reference", "same value"]
        return Table(f"losses, forward + backward on {r0.get('device', '?')} (fp32; median of repeats)", columns, cells,
                     align=["l" if c in ("loss", "reference") else "r" for c in columns])
