"""What the multi-view self-supervised methods share: one encoder, views of a sample, momentum targets.

SimCLR, MoCo, BYOL, SimSiam, Barlow Twins, VICReg and SwAV all train one encoder on several *views*
of each sample and differ only in their heads and objective. The same method runs on images, on video
clips or on audio spectrograms — ``method.modality`` picks the batch entry and the encoder
(``model.<modality>``):

=========== ================================================= ==========================================
modality    ``batch[modality]``                               positives
=========== ================================================= ==========================================
``image``   B×V×3×H×W, or a list of V tensors B×3×Hv×Wv       two augmentations of one image
            (multi-crop, large crops first)
``video``   B×V×C×T×H×W (V = ``data.views``)                  two clips of one video
``audio``   B×V×1×F×T' (V = ``data.views``)                   two segments of one sound track
=========== ================================================= ==========================================

The encoder sees every view of one resolution in a single batch (and the heads all views at once), so
BatchNorm statistics span all views of the batch, as in SimCLR's and SwAV's implementations.
Under DDP, the engine converts BatchNorm layers (encoder and heads) to SyncBatchNorm.

:class:`MultiViewMethod` builds what the methods share from their config, in one place: the encoder, the
projector (``proj_hidden``, ``proj_dim``, ``proj_layers``, ``proj_batch_norm``, ``proj_last_bn``), the
predictor of BYOL and SimSiam (``pred_hidden``) and the criterion (the loss registry's ``loss``, with the
config keys ``loss_keys``); each method adds its own ``compute_loss`` and paper-specific parts. Each also
names its image view recipe (``augment``), the default of ``data.augment``.

:class:`MomentumMethod` adds EMA ("momentum") copies of modules for MoCo and BYOL: after every
optimiser step (exactly once, also with gradient accumulation) each target parameter moves as
``w_t ← τ·w_t + (1 − τ)·w_o``. The targets are submodules without gradients, so they are left out of
the optimiser and saved in checkpoints (a resumed run continues exactly).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from avssl.config import Check
from avssl.data.batch import split_views
from avssl.methods.base import SingleEncoderConfig, SingleEncoderMethod


@dataclass
class ViewsMethodConfig(SingleEncoderConfig):
    """Keys of every multi-view method (each method overrides the defaults with its recipe's)."""

    modality: str = "image"  # image | video | audio: the batch entry and the encoder (model.<modality>)
    proj_hidden: int = 2048  # projector hidden width
    proj_dim: int = 128  # projector output width (the embedding the loss sees)
    proj_layers: int = 2  # Linear layers in the projector
    proj_batch_norm: bool = True  # BatchNorm after each hidden Linear of the projector
    proj_last_bn: bool = False  # BatchNorm after its last Linear ...
    proj_last_bn_affine: bool = True  # ... with a learnable scale and shift

    # Value checks of these keys (see avssl.config.CHECKS); a subclass's own are added to them.
    checks: ClassVar[Dict[str, Check]] = {
        "proj_hidden": Check(ge=1),
        "proj_dim": Check(ge=1),
        "proj_layers": Check(ge=1),
    }


def pair_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity of matching rows of two B×D tensors (no gradient), a scalar diagnostic."""
    with torch.no_grad():
        return F.cosine_similarity(a.detach().float(), b.detach().float(), dim=1).mean()


def normalized_std(z: torch.Tensor) -> torch.Tensor:
    """Std over the batch of the L2-normalised rows of z (B×D), averaged over the D dimensions.

    About 1/√D for well spread embeddings and 0 when they collapse to one point (SimSiam's monitor).
    """
    with torch.no_grad():
        return F.normalize(z.detach().float(), dim=1).std(dim=0).mean()


class MultiViewMethod(SingleEncoderMethod):
    """Base of the methods that train one encoder on V ≥ 2 views of each sample.

    Builds the encoder ``model.<modality>`` (see :class:`~avssl.methods.base.SingleEncoderMethod`), the
    ``projector`` from the config's ``proj_*`` keys, the ``predictor`` (``has_predictor``: a
    ``PredictionHead(proj_dim, pred_hidden, proj_dim)``) and the ``criterion``: ``build_loss(loss, **kw)`` with
    the method keys ``loss_keys`` (and :meth:`loss_kwargs`). Subclasses implement :meth:`compute_loss` from
    :meth:`views` and :meth:`embed`.
    """

    Config = ViewsMethodConfig
    modalities: Tuple[str, ...] = ("image",)
    #: Views the objective takes: None = any number ≥ 2 (multi-crop), else exactly this many.
    num_views: Optional[int] = 2
    #: The loss registry's name of the objective, and the method keys passed on to it under the same names.
    loss: ClassVar[str] = ""
    loss_keys: ClassVar[Tuple[str, ...]] = ()
    has_predictor: ClassVar[bool] = False

    def __init__(self, cfg: Any, **kw: Any) -> None:
        super().__init__(cfg, **kw)
        from avssl.losses import build_loss
        from avssl.models.heads import PredictionHead, ProjectionHead

        m = cfg.method
        self.projector = ProjectionHead(self.encoder.out_dim, m.proj_hidden, m.proj_dim, num_layers=m.proj_layers,
                                        batch_norm=m.proj_batch_norm, last_bn=m.proj_last_bn,
                                        last_bn_affine=m.proj_last_bn_affine)
        if self.has_predictor:
            self.predictor = PredictionHead(m.proj_dim, m.pred_hidden, m.proj_dim)
        self.criterion = build_loss(self.loss, **self.loss_kwargs())

    def loss_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of the criterion: the method keys named in ``loss_keys``."""
        return {k: getattr(self.cfg.method, k) for k in self.loss_keys}

    # -- views -----------------------------------------------------------------------------------
    def views(self, batch: Dict[str, Any]) -> List[torch.Tensor]:
        """``batch[modality]`` -> the list of V ≥ 2 per-view batches (each B×C×H×W, B×C×T×H×W or B×1×F×T').

        Accepts a stacked B×V×… tensor or a list of V per-view tensors (multi-crop: sizes may differ
        between views, the batch size may not). Raises ValueError for a single view, or for more views
        than the method takes.
        """
        name = self.cfg.method.name
        if self.modality not in batch:
            raise KeyError(f"{name}: the batch has no {self.modality!r} entry (method.modality={self.modality}); "
                           f"it holds {sorted(batch)}")
        views = split_views(batch[self.modality], self.modality, who=f"{name}: batch[{self.modality!r}]")
        if len(views) < 2:
            hint = ("set data.views=2 so that each sample brings two clips" if self.modality != "image"
                    else "use a two-view augmentation (data.augment)")
            raise ValueError(f"{name} needs at least 2 views of each sample, got 1 "
                             f"(batch[{self.modality!r}] of shape {tuple(views[0].shape)}); {hint}")
        if self.num_views is not None and len(views) != self.num_views:
            raise ValueError(f"{name} takes exactly {self.num_views} views of each sample, got {len(views)}; "
                             f"set data.views={self.num_views} (multi-crop is supported by swav)")
        return views

    # -- forward passes --------------------------------------------------------------------------
    def embed(self, views: Sequence[torch.Tensor], encoder: Optional[nn.Module] = None,
              head: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> List[torch.Tensor]:
        """Per-view outputs of ``head(encoder(view))`` (defaults: this encoder, no head).

        Consecutive views of one shape go through the encoder as one batch; the head then sees every
        view at once. Returns V tensors B×D.
        """
        enc = encoder if encoder is not None else self.encoder
        b = views[0].shape[0]
        feats: List[torch.Tensor] = []
        i = 0
        while i < len(views):
            j = i + 1
            while j < len(views) and views[j].shape == views[i].shape:
                j += 1
            feats.append(enc(torch.cat(list(views[i:j])) if j - i > 1 else views[i]))
            i = j
        out = torch.cat(feats) if len(feats) > 1 else feats[0]
        if head is not None:
            out = head(out)
        return list(out.split(b))


class MomentumMethod(MultiViewMethod):
    """A multi-view method with EMA copies ("targets") of some of its modules (MoCo, BYOL).

    Subclasses create each target with :meth:`make_target` (which records the online/target pair) and
    set ``momentum_base`` / ``momentum_final``: τ follows :func:`cosine_momentum` from the first to the
    second over the run (equal values: a constant momentum, as MoCo's). :meth:`optimizer_step` runs the
    optimiser and then :meth:`momentum_update` — Lightning calls it once per optimiser step, never during
    the accumulation phase of ``accumulate_grad_batches``. (Under fp16 mixed precision a step the grad
    scaler skips still moves the targets towards the unchanged online weights.)
    """

    momentum_base: float = 0.996
    momentum_final: float = 1.0

    def make_target(self, module: nn.Module) -> nn.Module:
        """A copy of ``module`` without gradients (an EMA target of it), recorded for the updates."""
        target = copy.deepcopy(module)
        for p in target.parameters():
            p.requires_grad_(False)
        # A plain list: the modules are registered under their own attribute names already.
        self.__dict__.setdefault("_momentum_pairs", []).append((module, target))
        return target

    def momentum_pairs(self) -> List[Tuple[nn.Module, nn.Module]]:
        """(online, target) module pairs of identical structure, in creation order."""
        return list(self.__dict__.get("_momentum_pairs", []))

    def momentum_at(self, step: int, total_steps: Optional[int]) -> float:
        """τ for the update after optimiser step ``step`` (0-based) of ``total_steps``."""
        return cosine_momentum(step, total_steps, self.momentum_base, self.momentum_final)

    def total_steps(self) -> Optional[int]:
        """Optimiser steps of the whole run (the trainer's estimate); None without a trainer or when unbounded."""
        if self._trainer is None:
            return None
        total = self.trainer.estimated_stepping_batches
        return int(total) if math.isfinite(total) and total > 0 else None

    @torch.no_grad()
    def momentum_update(self, tau: float) -> None:
        """Every target parameter ``w_t ← τ·w_t + (1 − τ)·w_o`` (buffers such as BatchNorm statistics
        are left to the target's own forward passes)."""
        for online, target in self.momentum_pairs():
            for w_t, w_o in zip(target.parameters(), online.parameters()):
                w_t.lerp_(w_o.detach().to(w_t.dtype), 1.0 - tau)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any,
                       optimizer_closure: Optional[Callable[[], Any]] = None) -> None:
        step = self.global_step  # optimiser steps completed before this one
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        self.momentum_update(self.momentum_at(step, self.total_steps()))


def cosine_momentum(step: int, total_steps: Optional[int], base: float, final: float = 1.0) -> float:
    """BYOL's schedule ``τ_k = final − (final − base)·(cos(πk/K) + 1)/2``: ``base`` at k = 0, ``final`` at
    k = K (and after). ``total_steps=None`` (length unknown) keeps τ at ``base``."""
    if total_steps is None or total_steps <= 0:
        return float(base)
    k = min(max(int(step), 0), int(total_steps))
    return float(final - (final - base) * (math.cos(math.pi * k / total_steps) + 1.0) / 2.0)


__all__ = [
    "ViewsMethodConfig",
    "MultiViewMethod",
    "MomentumMethod",
    "cosine_momentum",
    "pair_cosine",
    "normalized_std",
]
