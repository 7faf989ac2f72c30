"""Audio-visual objectives."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from avssl.losses import LOSSES
from avssl.losses.distributed import full_precision, gather_with_grad, no_autocast, world_info
from avssl.memory import MemoryBank, all_gather_varsize, canonical_agreement, cma_positives, split_rows

log = logging.getLogger(__name__)


class CrossModalNCE(nn.Module):
    """Symmetric cross-modal InfoNCE with in-batch negatives (audio-visual correspondence).

    For video embeddings ``v`` and audio embeddings ``a`` (B×D each, row i of both from the same clip)::

        L = ½·[ CE(v·aᵀ/τ, diag) + CE(a·vᵀ/τ, diag) ]

    i.e. each clip must pick its own sound among the batch's sounds and vice versa. This is the
    memory-bank-free form of cross-modal instance discrimination (Cross-AVID); with
    ``gather_distributed=True`` negatives come from the global batch across ranks, and the loss equals
    the single-process loss over the same global batch. Computed in fp32 (safe under autocast).

    Args:
        temperature: τ.
        gather_distributed: use every rank's embeddings as negatives.
    """

    def __init__(self, temperature: float = 0.07, gather_distributed: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.gather_distributed = gather_distributed

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """video, audio: B×D (normalised inside) -> scalar."""
        if video.shape != audio.shape or video.dim() != 2:
            raise ValueError(f"expected two B×D tensors of one shape, got {tuple(video.shape)} and {tuple(audio.shape)}")
        with no_autocast(video):
            v = F.normalize(full_precision(video), dim=1)
            a = F.normalize(full_precision(audio), dim=1)
            rank, world = world_info() if self.gather_distributed else (0, 1)
            v_all = gather_with_grad(v) if world > 1 else v
            a_all = gather_with_grad(a) if world > 1 else a
            target = torch.arange(v.shape[0], device=v.device) + rank * v.shape[0]
            loss_v = F.cross_entropy(v @ a_all.t() / self.temperature, target)
            loss_a = F.cross_entropy(a @ v_all.t() / self.temperature, target)
            return 0.5 * (loss_v + loss_a)


@LOSSES.register("xmodal_nce")
def _xmodal_nce(**kw) -> nn.Module:
    return CrossModalNCE(**kw)


# ----------------------------------------------------------------------------------------------------------
# Memory-bank objectives: AVID (audio-visual instance discrimination) and AVID-CMA
# ----------------------------------------------------------------------------------------------------------
OBJECTIVES = ("info_nce", "nce")
AVID_VARIANTS = ("cross", "self", "joint")
POSITIVE_FORMS = ("separate", "pooled")


def _num_negatives(value: Union[int, str, None], name: str) -> Optional[int]:
    """An int >= 1, or None for "the whole bank" (given as None or "all")."""
    if value is None or value == "all":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, None or 'all', got {value!r}")
    return value


def _choice(value: str, valid: Tuple[str, ...], name: str) -> str:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(repr(v) for v in valid)}")
    return value


@dataclass
class _Term:
    """Scores (already divided by τ) of one anchor against its positives and negatives."""

    pos: torch.Tensor  # B×P
    neg: torch.Tensor  # B×K
    valid: Optional[torch.Tensor] = None  # B×K bool (whole-bank negatives: False at excluded rows)


def _bank_scores(
    anchor: torch.Tensor,
    bank: MemoryBank,
    pos_idx: torch.Tensor,
    neg_idx: Optional[torch.Tensor],
    exclude: Optional[torch.Tensor],
    temperature: float,
) -> _Term:
    """Cosine scores / τ of ``anchor`` (B×D, normalised, fp32) with bank rows.

    ``pos_idx`` B×P; ``neg_idx`` B×K, or None for the whole bank, where ``exclude`` (B×E, entries
    outside [0, N) ignored) marks the rows that are not negatives. Sampled rows are scored by an exact
    fp32 multiply-sum (no TF32 matmul); the bank itself never takes a gradient.
    """
    w = bank.weight
    pos = (w[pos_idx].float() * anchor.unsqueeze(1)).sum(-1) / temperature
    if neg_idx is not None:
        neg = (w[neg_idx].float() * anchor.unsqueeze(1)).sum(-1) / temperature
        return _Term(pos, neg)
    # A copy: the banks are updated in place after the loss, before backward needs the rows it multiplied.
    neg = anchor @ w.to(torch.float32, copy=True).t() / temperature
    valid = torch.ones_like(neg, dtype=torch.bool)
    ex = exclude.to(neg.device, torch.long)
    keep = (ex >= 0) & (ex < bank.size)
    rows = torch.arange(ex.shape[0], device=neg.device).unsqueeze(1).expand_as(ex)
    valid[rows[keep], ex[keep]] = False
    return _Term(pos, neg, valid)


def _info_nce(t: _Term, positive_form: str = "separate") -> torch.Tensor:
    """Per-anchor InfoNCE (B). One positive: −log e^{s⁺} / (e^{s⁺} + Σₙ e^{sₙ}).

    Several positives: ``separate`` averages that over the positives, each against the same negatives
    (the form of the AVID-CMA code, whose NCE treats each positive on its own); ``pooled`` is
    −log Σₚ e^{sₚ} / (Σₚ e^{sₚ} + Σₙ e^{sₙ}).
    """
    neg = t.neg if t.valid is None else t.neg.masked_fill(~t.valid, float("-inf"))
    lse_neg = torch.logsumexp(neg, dim=1)
    if t.pos.shape[1] == 1 or positive_form == "separate":
        return (torch.logaddexp(t.pos, lse_neg.unsqueeze(1)) - t.pos).mean(dim=1)
    lse_pos = torch.logsumexp(t.pos, dim=1)
    return torch.logaddexp(lse_pos, lse_neg) - lse_pos


def _nce(t: _Term, z: torch.Tensor) -> torch.Tensor:
    """Per-anchor binary NCE (B) against the uniform noise distribution, as in AVID / Wu et al. 2018.

    With p(x) = e^{s}/(Z·N) and noise probability 1/N for K noise draws:
    −meanₚ log p⁺/(p⁺ + K/N) − Σₙ log (K/N)/(pₙ + K/N), i.e. with a = log(K·Z):
    meanₚ softplus(a − sₚ) + Σₙ softplus(sₙ − a)  (Z = the mean of e^{s} over negatives).
    """
    if t.valid is None:
        k = torch.full((t.neg.shape[0], 1), float(t.neg.shape[1]), device=t.neg.device)
    else:
        k = t.valid.sum(dim=1, keepdim=True).float()  # whole-bank negatives: the rows not excluded
    log_kz = torch.log(k) + torch.log(z)
    neg_terms = F.softplus(t.neg - log_kz)
    if t.valid is not None:
        neg_terms = neg_terms.masked_fill(~t.valid, 0.0)
    return F.softplus(log_kz - t.pos).mean(dim=1) + neg_terms.sum(dim=1)


class _BankedLoss(nn.Module):
    """Shared machinery of AVID and CMA: two momentum memory banks, the NCE constant, the objectives."""

    nce_z: torch.Tensor

    def __init__(self, num_data: int, dim: int, temperature: float, momentum: float, objective: str,
                 bank_dtype: torch.dtype, seed: int) -> None:
        super().__init__()
        if int(num_data) < 2:
            raise ValueError(f"num_data must be >= 2 (negatives come from other instances), got {num_data}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.num_data, self.dim = int(num_data), int(dim)
        self.temperature = float(temperature)
        self.objective = _choice(objective, OBJECTIVES, "objective")
        # Different seeds: the two modalities' banks must not start as copies of each other.
        self.video_bank = MemoryBank(num_data, dim, momentum, dtype=bank_dtype, seed=seed)
        self.audio_bank = MemoryBank(num_data, dim, momentum, dtype=bank_dtype, seed=seed + 1)
        # NCE partition constant Z (mean e^{s/τ} over negatives), estimated on the first NCE forward;
        # -1 = not yet. A buffer, so a resumed run keeps it.
        self.register_buffer("nce_z", torch.tensor(-1.0))
        self._z_ready: Optional[bool] = None
        self._last: Dict[str, torch.Tensor] = {}

    @property
    def last_terms(self) -> Dict[str, float]:
        """The components of the last forward (per-direction losses and their combinations), as floats."""
        return {k: float(v) for k, v in self._last.items()}

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._z_ready = None  # re-read the loaded buffers on the next forward

    def _check_inputs(self, video_emb: torch.Tensor, audio_emb: torch.Tensor, indices: torch.Tensor) -> None:
        for name, x in (("video_emb", video_emb), ("audio_emb", audio_emb)):
            if x.dim() != 2 or x.shape[1] != self.dim:
                raise ValueError(f"{type(self).__name__}: {name} must be B×{self.dim}, got {tuple(x.shape)}")
        if video_emb.shape[0] != audio_emb.shape[0] or indices.numel() != video_emb.shape[0]:
            raise ValueError(f"{type(self).__name__}: batch sizes differ: video {video_emb.shape[0]}, "
                             f"audio {audio_emb.shape[0]}, indices {indices.numel()}")

    def _partition(self, terms: Dict[str, _Term]) -> torch.Tensor:
        """Z for the NCE objective: the mean of e^{s/τ} over every negative score of the first forward
        (all its terms; averaged over ranks), then fixed, as in the AVID code."""
        if self._z_ready is None:
            self._z_ready = bool(self.nce_z > 0)
        if not self._z_ready:
            with torch.no_grad():
                total = torch.zeros((), dtype=torch.float64, device=self.nce_z.device)
                count = torch.zeros((), dtype=torch.float64, device=self.nce_z.device)
                for t in terms.values():
                    e = t.neg.double().exp()
                    if t.valid is not None:
                        e = e * t.valid
                        count += t.valid.sum()
                    else:
                        count += t.neg.numel()
                    total += e.sum()
                z = total / count
                _, world = world_info()
                if world > 1:
                    torch.distributed.all_reduce(z)
                    z /= world
                self.nce_z.fill_(float(z))
            self._z_ready = True
        return self.nce_z.float()

    def _losses(self, terms: Dict[str, _Term], positive_form: str = "separate") -> Dict[str, torch.Tensor]:
        if self.objective == "nce":
            z = self._partition(terms)
            return {name: _nce(t, z).mean() for name, t in terms.items()}
        return {name: _info_nce(t, positive_form).mean() for name, t in terms.items()}

    def _update_banks(self, v: torch.Tensor, a: torch.Tensor, indices: torch.Tensor) -> None:
        self.video_bank.update(indices, v.detach())
        self.audio_bank.update(indices, a.detach())


class AVIDLoss(_BankedLoss):
    """Audio-Visual Instance Discrimination (Morgado et al., CVPR 2021) with momentum memory banks.

    Each instance i has a row in a video bank and in an audio bank. For a batch of video/audio embeddings
    ``v``, ``a`` (B×D, L2-normalised here) of instances ``indices``, with scores s = cos/τ:

    * ``cross`` (Cross-AVID): ``v`` must pick audio-bank row i among ``num_negatives`` audio-bank rows of
      other instances (v2a), and ``a`` video-bank row i among video-bank rows (a2v); loss ½(v2a + a2v).
    * ``self`` (Self-AVID): each against its own modality's bank (v2v, a2a); loss ½(v2v + a2a).
    * ``joint``: ½·cross + ½·self (the AVID code's unit coefficients, normalised).

    Negatives are drawn once per forward, uniformly over the bank without the instance itself, and shared
    by every term (``num_negatives=None`` or ``"all"``: the whole bank but the instance itself). After the
    loss is computed both banks are momentum-updated with the detached embeddings (gathered from every
    rank under ``torch.distributed``, see :class:`~avssl.memory.MemoryBank`). The banks and the NCE
    constant are buffers of this module, so checkpoints hold them.

    Objectives (per anchor, s⁺ the positive score, sₙ the negatives):

    * ``info_nce`` (default): −log e^{s⁺}/(e^{s⁺} + Σₙ e^{sₙ}). No estimated constant, so it is
      well-behaved from the first step and at small N, where the NCE approximation is poor.
    * ``nce``: the AVID paper's noise-contrastive estimation (as in Wu et al. 2018's instance
      discrimination): p = e^{s}/(Z·N) with Z the mean e^{s} over the negatives of the first forward
      (stored in the ``nce_z`` buffer and then fixed), noise 1/N, K noise draws:
      −log p⁺/(p⁺ + K/N) − Σₙ log (K/N)/(pₙ + K/N).

    Everything is computed in fp32 with autocast disabled.

    Args:
        num_data: N, the number of training instances (``indices`` lie in [0, N)).
        dim: embedding size D.
        variant: ``cross``, ``self`` or ``joint``.
        num_negatives: negatives per anchor, or None / ``"all"`` for the whole bank.
        temperature: τ.
        momentum: memory-bank momentum (weight of the old row).
        objective: ``info_nce`` or ``nce``.
        bank_dtype: storage dtype of the banks (fp32, or bf16 to halve their memory).
        seed: seeds the banks' initial rows (video: seed, audio: seed + 1), identical on every rank.
    """

    def __init__(
        self,
        num_data: int,
        dim: int = 128,
        variant: str = "cross",
        num_negatives: Union[int, str, None] = 1024,
        temperature: float = 0.07,
        momentum: float = 0.5,
        objective: str = "info_nce",
        bank_dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> None:
        super().__init__(num_data, dim, temperature, momentum, objective, bank_dtype, seed)
        self.variant = _choice(variant, AVID_VARIANTS, "AVID variant")
        self.num_negatives = _num_negatives(num_negatives, "num_negatives")
        self.last_negatives: Optional[torch.Tensor] = None

    def extra_repr(self) -> str:
        return (f"num_data={self.num_data}, dim={self.dim}, variant={self.variant!r}, "
                f"num_negatives={self.num_negatives or 'all'}, temperature={self.temperature}, "
                f"objective={self.objective!r}")

    def forward(self, video_emb: torch.Tensor, audio_emb: torch.Tensor, indices: torch.Tensor,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """video_emb, audio_emb: B×D; indices: B instance indices -> scalar loss; then updates the banks.

        ``generator`` draws the negatives (the global RNG when None); the drawn B×K indices are kept in
        ``last_negatives`` (None with whole-bank negatives).
        """
        self._check_inputs(video_emb, audio_emb, indices)
        with no_autocast(video_emb):
            v = F.normalize(video_emb.float(), dim=1)
            a = F.normalize(audio_emb.float(), dim=1)
            idx = indices.reshape(-1).to(self.video_bank.weight.device, torch.long)
            own = idx.unsqueeze(1)
            neg = None
            if self.num_negatives is not None:
                neg = self.video_bank.sample_negatives(idx, self.num_negatives, generator=generator)
            self.last_negatives = neg
            pairs = []
            if self.variant in ("cross", "joint"):
                pairs += [("v2a", v, self.audio_bank), ("a2v", a, self.video_bank)]
            if self.variant in ("self", "joint"):
                pairs += [("v2v", v, self.video_bank), ("a2a", a, self.audio_bank)]
            terms = {name: _bank_scores(x, bank, own, neg, own, self.temperature) for name, x, bank in pairs}
            losses = self._losses(terms)
            parts: Dict[str, torch.Tensor] = dict(losses)
            if "v2a" in losses:
                parts["xmodal"] = 0.5 * (losses["v2a"] + losses["a2v"])
            if "v2v" in losses:
                parts["wmodal"] = 0.5 * (losses["v2v"] + losses["a2a"])
            if self.variant == "cross":
                total = parts["xmodal"]
            elif self.variant == "self":
                total = parts["wmodal"]
            else:
                total = 0.5 * (parts["xmodal"] + parts["wmodal"])
        self._update_banks(v, a, idx)
        self._last = {k: t.detach() for k, t in parts.items()}
        return total


class CMALoss(_BankedLoss):
    """AVID with Cross-Modal Agreement (AVID-CMA; Morgado et al., CVPR 2021).

    Two terms, on the same video and audio memory banks as :class:`AVIDLoss`:

    * cross-modal instance discrimination (Cross-AVID): v vs audio-bank row i and a vs video-bank row i,
      against ``num_negatives`` negatives; ½(v2a + a2v), weighted ``xmodal_weight``;
    * within-modal positive-set discrimination: the video embedding of i must pick the video-bank rows of
      i's positive set P(i) (its k CMA neighbours, :func:`~avssl.memory.cma_positives` with
      ``agreement``) against ``num_positive_negatives`` video-bank rows outside P(i); the same for audio;
      ½(v2v + a2a), weighted ``wmodal_weight``.

    As in the AVID-CMA code: negatives are drawn once, uniformly outside {i} ∪ P(i) (the code excludes
    P(i) only), and the within-modal term uses the first ``num_positive_negatives`` of them; P(i) does
    not contain i (``include_self=True`` adds it); with several positives each counts on its own against
    the shared negatives (``positive_form="separate"``: the mean over p ∈ P of −log e^{sₚ}/(e^{sₚ} + Σₙ
    e^{sₙ}); the code's NCE likewise averages its per-positive terms). ``positive_form="pooled"`` uses
    −log Σₚ e^{sₚ}/(Σₚ e^{sₚ} + Σₙ e^{sₙ}) instead (info_nce only). The defaults 0.5/0.5 equal the
    code's normalised unit coefficients.

    Positive sets live in the ``positives`` buffer (N×k LongTensor, -1 until computed; saved in
    checkpoints) and are (re)computed from the current banks by :meth:`update_positives` — the AVID-CMA
    recipe starts from banks trained by Cross-AVID (see :meth:`load_avid_state`) and recomputes every few
    epochs. Until positive sets exist the loss is Cross-AVID alone (½(v2a + a2v), unweighted; logged once).

    Args:
        num_data, dim, temperature, momentum, objective, bank_dtype, seed: as :class:`AVIDLoss`.
        num_negatives: cross-modal negatives per anchor, or None / ``"all"``.
        num_positive_negatives: within-modal negatives per anchor, or None / ``"all"``.
        k: positive-set size (< N − 1).
        agreement: ``min`` (consensus), ``max`` (union), ``video`` or ``audio``.
        xmodal_weight, wmodal_weight: weights of the two terms.
        positive_form: ``separate`` or ``pooled`` (see above).
        include_self: add instance i to its own within-modal positive set.
    """

    positives: torch.Tensor

    def __init__(
        self,
        num_data: int,
        dim: int = 128,
        num_negatives: Union[int, str, None] = 1024,
        num_positive_negatives: Union[int, str, None] = 64,
        temperature: float = 0.07,
        momentum: float = 0.5,
        k: int = 32,
        agreement: str = "min",
        xmodal_weight: float = 0.5,
        wmodal_weight: float = 0.5,
        objective: str = "info_nce",
        positive_form: str = "separate",
        include_self: bool = False,
        bank_dtype: torch.dtype = torch.float32,
        seed: int = 0,
    ) -> None:
        super().__init__(num_data, dim, temperature, momentum, objective, bank_dtype, seed)
        if not 1 <= int(k) < int(num_data) - 1:
            raise ValueError(f"k must satisfy 1 <= k < num_data - 1 = {int(num_data) - 1} "
                             f"(negatives come from outside the positive set), got {k}")
        self.num_negatives = _num_negatives(num_negatives, "num_negatives")
        self.num_positive_negatives = _num_negatives(num_positive_negatives, "num_positive_negatives")
        self.k = int(k)
        self.agreement = canonical_agreement(agreement)
        self.xmodal_weight, self.wmodal_weight = float(xmodal_weight), float(wmodal_weight)
        self.positive_form = _choice(positive_form, POSITIVE_FORMS, "positive_form")
        self.include_self = bool(include_self)
        self.register_buffer("positives", torch.full((self.num_data, self.k), -1, dtype=torch.long))
        self._positives_ready: Optional[bool] = None
        self._warned_no_positives = False
        self.last_negatives: Optional[torch.Tensor] = None

    def extra_repr(self) -> str:
        return (f"num_data={self.num_data}, dim={self.dim}, k={self.k}, agreement={self.agreement!r}, "
                f"num_negatives={self.num_negatives or 'all'}, "
                f"num_positive_negatives={self.num_positive_negatives or 'all'}, temperature={self.temperature}, "
                f"objective={self.objective!r}, weights=({self.xmodal_weight}, {self.wmodal_weight})")

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._positives_ready = None

    @property
    def has_positives(self) -> bool:
        """Whether positive sets have been computed (or loaded)."""
        if self._positives_ready is None:
            self._positives_ready = bool((self.positives >= 0).all())
        return self._positives_ready

    @torch.no_grad()
    def update_positives(self, chunk_size: int = 4096, device: Optional[Union[str, torch.device]] = None,
                         progress: bool = False, distributed: bool = True) -> torch.Tensor:
        """Recompute the positive sets from the current banks (:func:`~avssl.memory.cma_positives`).

        Under ``torch.distributed`` (and ``distributed=True``) each rank computes a contiguous share of the
        rows and the shares are all-gathered, so the work splits across ranks and all ranks end with the
        same sets. Every rank must call this together. Returns the ``positives`` buffer (N×k).
        """
        rank, world = world_info() if distributed else (0, 1)
        rows = split_rows(self.num_data, world, rank)
        part = cma_positives(self.video_bank, self.audio_bank, k=self.k, agreement=self.agreement,
                             chunk_size=chunk_size, device=device, progress=progress and rank == 0, rows=rows)
        if world > 1:
            part = all_gather_varsize(part.to(self.positives.device), fill=-1)
        self.positives.copy_(part)
        self._positives_ready = True
        return self.positives

    @torch.no_grad()
    def load_avid_state(self, avid: Union[AVIDLoss, Mapping[str, torch.Tensor]]) -> None:
        """Take the banks and the NCE constant of a trained :class:`AVIDLoss` (or its ``state_dict``, keys
        possibly prefixed, e.g. from a method checkpoint). Positive sets are left as they are: call
        :meth:`update_positives` next."""
        state = avid.state_dict() if isinstance(avid, nn.Module) else avid
        for suffix, target in (("video_bank.weight", self.video_bank.weight),
                               ("audio_bank.weight", self.audio_bank.weight), ("nce_z", self.nce_z)):
            keys = [key for key in state if key == suffix or key.endswith("." + suffix)]
            if len(keys) != 1:
                raise KeyError(f"load_avid_state: expected one '*{suffix}' entry, found {keys or 'none'}")
            value = state[keys[0]]
            if value.shape != target.shape:
                raise ValueError(f"load_avid_state: {keys[0]} has shape {tuple(value.shape)}, "
                                 f"this loss expects {tuple(target.shape)}")
            target.copy_(value)
        self._z_ready = None

    def forward(self, video_emb: torch.Tensor, audio_emb: torch.Tensor, indices: torch.Tensor,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """video_emb, audio_emb: B×D; indices: B -> scalar loss; then updates the banks.

        ``generator`` draws the negatives; the drawn indices are kept in ``last_negatives`` (B×K, the
        cross-modal ones; the within-modal ones are its first ``num_positive_negatives`` columns) —
        None with whole-bank negatives.
        """
        self._check_inputs(video_emb, audio_emb, indices)
        ready = self.has_positives
        if not ready and not self._warned_no_positives:
            log.info("CMA loss: no positive sets yet (call update_positives()); using Cross-AVID only")
            self._warned_no_positives = True
        with no_autocast(video_emb):
            v = F.normalize(video_emb.float(), dim=1)
            a = F.normalize(audio_emb.float(), dim=1)
            idx = indices.reshape(-1).to(self.video_bank.weight.device, torch.long)
            own = idx.unsqueeze(1)
            pos = self.positives[idx] if ready else None
            exclude = own if pos is None else torch.cat([own, pos], dim=1)
            kx = self.num_negatives
            kw = self.num_positive_negatives if ready else None
            # One draw serves both terms (the within-modal term takes its first columns), as in the code.
            draw = max([n for n in (kx, kw) if n is not None], default=None)
            neg = None
            if draw is not None:
                neg = self.video_bank.sample_negatives(idx, draw, generator=generator, exclude=pos)
            self.last_negatives = neg
            neg_x = neg[:, :kx] if kx is not None else None
            terms = {
                "v2a": _bank_scores(v, self.audio_bank, own, neg_x, exclude, self.temperature),
                "a2v": _bank_scores(a, self.video_bank, own, neg_x, exclude, self.temperature),
            }
            if ready:
                neg_w = neg[:, :kw] if self.num_positive_negatives is not None else None
                pos_w = torch.cat([own, pos], dim=1) if self.include_self else pos
                terms["v2v"] = _bank_scores(v, self.video_bank, pos_w, neg_w, exclude, self.temperature)
                terms["a2a"] = _bank_scores(a, self.audio_bank, pos_w, neg_w, exclude, self.temperature)
            losses = self._losses(terms, self.positive_form)
            parts: Dict[str, torch.Tensor] = dict(losses)
            parts["xmodal"] = 0.5 * (losses["v2a"] + losses["a2v"])
            if ready:
                parts["wmodal"] = 0.5 * (losses["v2v"] + losses["a2a"])
                total = self.xmodal_weight * parts["xmodal"] + self.wmodal_weight * parts["wmodal"]
            else:
                total = parts["xmodal"]
        self._update_banks(v, a, idx)
        self._last = {k: t.detach() for k, t in parts.items()}
        return total


@LOSSES.register("avid")
def _avid(**kw) -> nn.Module:
    return AVIDLoss(**kw)


@LOSSES.register("cma")
def _cma(**kw) -> nn.Module:
    return CMALoss(**kw)
