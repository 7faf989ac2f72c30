"""Memory banks of per-instance embeddings and cross-modal agreement (AVID / AVID-CMA).

A :class:`MemoryBank` keeps one L2-normalised embedding per training instance (N×dim), refreshed by a
momentum update each time the instance is seen; the AVID objectives draw their positives and negatives from
it. :func:`cma_positives` finds, for every instance, the k others whose embeddings agree with it in both
the video and the audio bank (Cross-Modal Agreement): the expanded positive sets of AVID-CMA.

Sized for AudioSet (N ≈ 1.8M, dim 128: 0.92 GB per fp32 bank, half in bf16): every operation here is
O(N·dim) in memory, or O(chunk_size·N) for the agreement search, never O(N²).
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, List, Optional, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

#: Agreement scores accepted by :func:`cma_positives`, and the aliases the AVID-CMA code uses for them.
AGREEMENTS: Tuple[str, ...] = ("min", "max", "video", "audio")
AGREEMENT_ALIASES = {"consensus": "min", "union": "max"}

# Rows drawn per step when initialising a bank: bounds the fp32 temporary whatever N is.
_INIT_ROWS = 65536
# Extra candidates taken past the k-th when selecting the top k, so that ties at the boundary are seen.
_TIE_MARGIN = 8


def _world() -> Tuple[int, int]:
    from avssl.losses.distributed import world_info  # deferred: avssl.losses imports this module

    return world_info()


def all_gather_varsize(x: torch.Tensor, fill: Union[int, float] = 0) -> torch.Tensor:
    """All-gather tensors whose first dimension may differ between ranks; rank-major concatenation.

    Sizes are exchanged first and every rank's tensor padded to the largest (``all_gather`` needs equal
    shapes), so a short last batch on one rank does not hang the others. Identity outside
    ``torch.distributed``. No gradient flows through the result.
    """
    rank, world = _world()
    if world == 1:
        return x
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes_t = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes_t, n)
    sizes = [int(s) for s in sizes_t]
    longest = max(sizes)
    padded = x.new_full((longest,) + tuple(x.shape[1:]), fill)
    padded[: x.shape[0]] = x.detach()
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes)], dim=0)


class MemoryBank(nn.Module):
    """One L2-normalised embedding per instance, updated with momentum (as in AVID / instance discrimination).

    ``weight`` (N×dim) is a registered buffer: it is part of ``state_dict`` (so checkpoints hold the bank)
    and moves with ``.to()``/``.cuda()``. Rows start as seeded standard-normal draws, L2-normalised, so a
    bank built with the same ``seed`` is identical on every rank without a broadcast.

    Update rule, for each index ``i`` in a batch with embedding ``f``::

        f̂ = f / ‖f‖                                   (embeddings are normalised first, as AVID does)
        bank[i] <- normalise(momentum · bank[i] + (1 − momentum) · f̂)

    Duplicate indices within one update (the same instance twice in a batch, or on two ranks): their
    normalised embeddings are averaged (summed in batch order, rank-major across ranks) and the row gets a
    single momentum step with that average, so the result does not depend on which copy the hardware
    writes last. Storage may be bf16 (``dtype``); the update math runs in fp32 and is rounded once on
    storing.

    Under ``torch.distributed`` (and ``distributed=True``), :meth:`update` first all-gathers the indices
    and embeddings of every rank, so every rank applies the same update and the banks stay identical.

    Args:
        size: N, the number of instances.
        dim: embedding size.
        momentum: weight of the old row in the update, in [0, 1] (AVID: 0.5).
        dtype: storage dtype (``torch.float32`` or ``torch.bfloat16``; any floating dtype works).
        device: where the bank lives.
        seed: seeds the initial rows when no ``generator`` is given.
        generator: draws the initial rows (overrides ``seed``).
        distributed: gather updates from every rank when ``torch.distributed`` is initialised.
    """

    weight: torch.Tensor

    def __init__(
        self,
        size: int,
        dim: int = 128,
        momentum: float = 0.5,
        dtype: torch.dtype = torch.float32,
        device: Optional[Union[str, torch.device]] = None,
        seed: int = 0,
        generator: Optional[torch.Generator] = None,
        distributed: bool = True,
    ) -> None:
        super().__init__()
        if int(size) < 1:
            raise ValueError(f"MemoryBank size must be >= 1, got {size}")
        if int(dim) < 1:
            raise ValueError(f"MemoryBank dim must be >= 1, got {dim}")
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"MemoryBank momentum must be in [0, 1], got {momentum}")
        if not dtype.is_floating_point:
            raise ValueError(f"MemoryBank dtype must be a floating dtype, got {dtype}")
        self.size, self.dim, self.momentum = int(size), int(dim), float(momentum)
        self.distributed = distributed
        gen = generator if generator is not None else torch.Generator().manual_seed(int(seed))
        weight = torch.empty(self.size, self.dim, dtype=dtype, device=device)
        for start in range(0, self.size, _INIT_ROWS):
            n = min(_INIT_ROWS, self.size - start)
            rows = torch.randn(n, self.dim, generator=gen, device=gen.device)
            weight[start : start + n] = F.normalize(rows, dim=1).to(weight.device, dtype)
        self.register_buffer("weight", weight)

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the bank (N·dim·element size)."""
        return self.weight.numel() * self.weight.element_size()

    def extra_repr(self) -> str:
        return (f"size={self.size}, dim={self.dim}, momentum={self.momentum}, dtype={self.weight.dtype}, "
                f"memory={self.memory_bytes / 2**20:.1f} MiB")

    @torch.no_grad()
    def update(self, indices: torch.Tensor, feats: torch.Tensor) -> None:
        """Momentum-update rows ``indices`` (B) with embeddings ``feats`` (B×dim); see the class docstring.

        Gradients never reach the bank (``feats`` is detached). Indices must lie in [0, N).
        """
        if feats.dim() != 2 or feats.shape[1] != self.dim:
            raise ValueError(f"MemoryBank.update: feats must be B×{self.dim}, got {tuple(feats.shape)}")
        if indices.numel() != feats.shape[0]:
            raise ValueError(f"MemoryBank.update: {indices.numel()} indices for {feats.shape[0]} embeddings")
        dev = self.weight.device
        idx = indices.reshape(-1).to(dev, torch.long)
        f = F.normalize(feats.detach().float(), dim=1).to(dev)
        if self.distributed:
            idx, f = all_gather_varsize(idx, fill=-1), all_gather_varsize(f)
        if idx.numel() == 0:
            return
        uniq, inv, counts = torch.unique(idx, sorted=True, return_inverse=True, return_counts=True)
        if uniq.numel() == idx.numel():
            mean = torch.empty_like(f).index_copy_(0, inv, f)
        else:
            mean = self._mean_duplicates(f, inv, counts)
        old = self.weight.index_select(0, uniq).float()
        new = F.normalize(self.momentum * old + (1.0 - self.momentum) * mean, dim=1)
        self.weight.index_copy_(0, uniq, new.to(self.weight.dtype))

    @staticmethod
    def _mean_duplicates(f: torch.Tensor, inv: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Per unique index, the mean of its rows of ``f``, summed in batch order.

        The k-th copies of every index are scattered together (unique targets, so ``index_copy_`` is
        deterministic) and the levels added in order; unlike ``index_add_`` this never depends on the
        order of atomic additions.
        """
        m = counts.numel()
        order = torch.argsort(inv, stable=True)  # rows grouped by index, batch order within a group
        grouped = inv[order]
        starts = torch.cumsum(counts, 0) - counts
        level = torch.arange(inv.numel(), device=inv.device) - starts[grouped]
        total = torch.zeros(m, f.shape[1], dtype=f.dtype, device=f.device)
        for r in range(int(counts.max())):
            sel = level == r
            total += torch.zeros_like(total).index_copy_(0, grouped[sel], f[order[sel]])
        return total / counts.unsqueeze(1).to(f.dtype)

    def sample_negatives(
        self,
        indices: torch.Tensor,
        num: int,
        generator: Optional[torch.Generator] = None,
        exclude: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Draw ``num`` row indices per query, uniformly over the bank minus the query's own index.

        Args:
            indices: B, each query's own instance index (never drawn for that query).
            num: negatives per query.
            generator: the random source (its device is where the uniforms are drawn); the global RNG of
                the bank's device when None.
            exclude: optional B×k more indices never drawn for that query (e.g. its positive set); entries
                outside [0, N) (such as -1 padding) and repeats are ignored.

        Returns:
            B×num LongTensor on the bank's device; draws are with replacement, each uniform over the
            N − |excluded| allowed rows of its query.

        Sampling is exact: a uniform integer r in [0, N − m) is mapped to the r-th allowed index by
        counting the sorted excluded indices at or below it (O(B·num·m), not O(N)).
        """
        if int(num) < 1:
            raise ValueError(f"sample_negatives: num must be >= 1, got {num}")
        dev = self.weight.device
        n = self.size
        own = indices.reshape(-1, 1).to(dev, torch.long)
        if exclude is not None:
            if exclude.dim() != 2 or exclude.shape[0] != own.shape[0]:
                raise ValueError(f"sample_negatives: exclude must be B×k with B={own.shape[0]}, "
                                 f"got {tuple(exclude.shape)}")
            ex = torch.cat([own, exclude.to(dev, torch.long)], dim=1)
        else:
            ex = own
        # Sorted unique excluded indices per row; out-of-range entries and repeats become the sentinel n.
        ex = ex.masked_fill((ex < 0) | (ex >= n), n).sort(dim=1).values
        repeat = torch.zeros_like(ex, dtype=torch.bool)
        repeat[:, 1:] = ex[:, 1:] == ex[:, :-1]
        ex = ex.masked_fill(repeat, n).sort(dim=1).values
        valid = ex < n
        allowed = n - valid.sum(dim=1, keepdim=True)  # B×1
        # At most ex.shape[1] rows are excluded; only look at the data (a device sync) when that could be all.
        if ex.shape[1] >= n and bool((allowed < 1).any()):
            raise ValueError(f"sample_negatives: a query excludes every one of the {n} rows; nothing left to draw")
        gen_dev = generator.device if generator is not None else dev
        u = torch.rand(own.shape[0], int(num), generator=generator, dtype=torch.float64, device=gen_dev).to(dev)
        r = torch.minimum((u * allowed).long(), allowed - 1)
        # ex_j − j = how many allowed indices lie below ex_j: the r-th allowed index skips each ex_j with
        # ex_j − j <= r.
        shift = ex - torch.arange(ex.shape[1], device=dev)
        shift = shift.masked_fill(~valid, n)  # never <= r
        return r + (r.unsqueeze(2) >= shift.unsqueeze(1)).sum(dim=2)


# ----------------------------------------------------------------------------------------------------------
# Cross-modal agreement
# ----------------------------------------------------------------------------------------------------------
def canonical_agreement(agreement: str) -> str:
    """The canonical name of an agreement score ("consensus" -> "min", "union" -> "max"); ValueError if unknown."""
    name = AGREEMENT_ALIASES.get(agreement, agreement)
    if name not in AGREEMENTS:
        known = ", ".join(repr(a) for a in AGREEMENTS + tuple(AGREEMENT_ALIASES))
        raise ValueError(f"unknown agreement {agreement!r}; valid: {known}")
    return name


def _as_matrix(bank: Union[MemoryBank, torch.Tensor], name: str) -> torch.Tensor:
    w = bank.weight if isinstance(bank, MemoryBank) else bank
    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        raise ValueError(f"{name} must be a MemoryBank or an N×D tensor, got {type(bank).__name__}"
                         + (f" of shape {tuple(w.shape)}" if isinstance(w, torch.Tensor) else ""))
    return w


def agreement_scores(v: Optional[torch.Tensor], a: Optional[torch.Tensor], rows: slice, agreement: str) -> torch.Tensor:
    """Agreement of queries ``rows`` with every instance: (rows)×N, from row-normalised fp32 banks.

    ``v``/``a`` may be None when ``agreement`` does not use that modality.
    """
    if agreement == "audio":
        return a[rows] @ a.t()
    score = v[rows] @ v.t()
    if agreement == "video":
        return score
    other = a[rows] @ a.t()
    return torch.minimum(score, other, out=score) if agreement == "min" else torch.maximum(score, other, out=score)


def topk_lowest_index(score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest entries of each row of ``score`` (C×N), best first; ties -> lower index first.

    ``torch.topk`` leaves the order of equal values unspecified, so the top ``k + margin`` are re-sorted by
    (value descending, index ascending). Rows whose window might have cut a run of ties (its last value
    equals the k-th) are redone exactly from every entry >= the k-th value.
    """
    n = score.shape[1]
    width = min(n, k + _TIE_MARGIN)
    vals, idx = score.topk(width, dim=1, sorted=True)
    idx_sorted, order = idx.sort(dim=1)
    _, by_value = vals.gather(1, order).sort(dim=1, descending=True, stable=True)
    out = idx_sorted.gather(1, by_value)[:, :k]
    if width < n:
        kth = vals[:, k - 1]
        for r in (vals[:, width - 1] >= kth).nonzero().flatten().tolist():
            cand = (score[r] >= kth[r]).nonzero().flatten()  # ascending index
            _, o = score[r, cand].sort(descending=True, stable=True)
            out[r] = cand[o[:k]]
    return out


@contextlib.contextmanager
def _progress_bar(total: int, enabled: bool, title: str) -> Iterator:
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(title, total=total)
        yield lambda n: bar.update(task, advance=n)


def cma_positives(
    video_bank: Union[MemoryBank, torch.Tensor],
    audio_bank: Union[MemoryBank, torch.Tensor],
    k: int = 32,
    agreement: str = "min",
    chunk_size: int = 4096,
    device: Optional[Union[str, torch.device]] = None,
    progress: bool = False,
    rows: Optional[Tuple[int, int]] = None,
) -> torch.Tensor:
    """Cross-modal agreement positive sets: for each instance, the k others that agree with it most.

    With ``cos_v(i, j)`` and ``cos_a(i, j)`` the cosine similarities of rows i and j in the video and the
    audio bank, the agreement score is

    ============ ======================================== ======================
    ``min``      min(cos_v, cos_a): close in both spaces   AVID-CMA "consensus"
    ``max``      max(cos_v, cos_a): close in either space  alias ``union``
    ``video``    cos_v
    ``audio``    cos_a
    ============ ======================================== ======================

    Row i of the result lists the k indices j ≠ i with the highest score, best first; equal scores are
    ordered by lower index, so the result is deterministic. The instance itself is never in its own set.

    Queries are processed ``chunk_size`` rows at a time against the whole bank (matmul, then top-k with
    the diagonal masked): memory is the two banks' normalised fp32 copies (N·(Dv + Da)·4 bytes) plus about
    two chunk_size×N fp32 score matrices — e.g. 2 × 1024 × 1.8M × 4 B ≈ 15 GB for AudioSet with
    ``chunk_size=1024`` (≈ 59 GB at the default 4096; lower it to fit the GPU). Never N×N.

    Args:
        video_bank, audio_bank: MemoryBanks or N×D tensors (rows are L2-normalised here, in fp32;
            the two may differ in D). A bank the score does not use is not read.
        k: positives per instance, 1 <= k < N.
        agreement: ``min`` (``consensus``), ``max`` (``union``), ``video`` or ``audio``.
        chunk_size: queries per step.
        device: where to compute (e.g. ``"cuda"``); the banks' device when None. The result is returned on
            the video bank's device.
        progress: show a rich progress bar (on stderr).
        rows: ``(start, end)`` to compute only query rows [start, end) (e.g. one rank's share); the result
            is then (end − start)×k.

    Returns:
        N×k (or (end − start)×k) LongTensor.
    """
    agreement = canonical_agreement(agreement)
    v_raw, a_raw = _as_matrix(video_bank, "video_bank"), _as_matrix(audio_bank, "audio_bank")
    n = v_raw.shape[0]
    if a_raw.shape[0] != n:
        raise ValueError(f"video_bank has {n} rows but audio_bank has {a_raw.shape[0]}")
    if not 1 <= int(k) < n:
        raise ValueError(f"k must satisfy 1 <= k < N = {n} (the instance itself is excluded), got k={k}")
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    start, end = (0, n) if rows is None else (int(rows[0]), int(rows[1]))
    if not 0 <= start <= end <= n:
        raise ValueError(f"rows must satisfy 0 <= start <= end <= N = {n}, got {rows}")
    k, chunk_size = int(k), int(chunk_size)
    out_device = v_raw.device
    dev = torch.device(device) if device is not None else out_device

    def prep(w: torch.Tensor) -> torch.Tensor:
        return F.normalize(w.detach().to(dev, torch.float32), dim=1)

    v = prep(v_raw) if agreement != "audio" else None
    a = prep(a_raw) if agreement != "video" else None
    out = torch.empty(end - start, k, dtype=torch.long, device=out_device)
    with torch.no_grad(), _progress_bar(end - start, progress, f"CMA positives ({agreement}, k={k})") as advance:
        for s in range(start, end, chunk_size):
            e = min(s + chunk_size, end)
            score = agreement_scores(v, a, slice(s, e), agreement)
            local = torch.arange(e - s, device=dev)
            score[local, local + s] = float("-inf")  # never the instance itself
            out[s - start : e - start] = topk_lowest_index(score, k).to(out_device)
            del score
            advance(e - s)
    return out


def split_rows(n: int, world: int, rank: int) -> Tuple[int, int]:
    """The [start, end) share of ``n`` query rows computed by ``rank`` of ``world`` (contiguous, ceil-sized)."""
    per = math.ceil(n / world)
    return min(n, rank * per), min(n, (rank + 1) * per)


__all__: List[str] = ["MemoryBank", "cma_positives", "AGREEMENTS", "canonical_agreement", "all_gather_varsize",
                      "topk_lowest_index", "agreement_scores", "split_rows"]
