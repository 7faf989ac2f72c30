"""Optimisers and learning-rate schedules of every method.

SGD, AdamW or LARS over a model's trainable parameters, in groups that exempt biases and norms from weight decay
(and LARS adaptation) and carry per-module learning-rate multipliers (``optim.lr_mult``); a per-step warm-up +
cosine (or constant) schedule.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional

import torch
import torch.nn as nn


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017), as used by BYOL/SimCLR.

    For each parameter with ``lars_adapt`` (its group's flag), the update is scaled by the trust ratio
    ``eta·‖w‖ / (‖g‖ + wd·‖w‖)`` after weight decay is added to the gradient.
    """

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_adapt=True)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                if group["lars_adapt"]:
                    w_norm, g_norm = torch.norm(p), torch.norm(g)
                    trust = torch.where(
                        (w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, torch.ones_like(w_norm)
                    )
                    g = g.mul(trust)
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = torch.clone(g).detach()
                else:
                    buf.mul_(group["momentum"]).add_(g)
                p.add_(buf, alpha=-group["lr"])
        return loss


def _lr_mult_of(name: str, lr_mult: Dict[str, float]) -> float:
    """The multiplier of the longest prefix in ``lr_mult`` that is ``name`` or a module path above it."""
    best, mult = -1, 1.0
    for prefix, m in lr_mult.items():
        if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
            best, mult = len(prefix), float(m)
    return mult


def _flatten_paths(tree: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"a": {"b": 0.1}}`` -> ``{"a.b": 0.1}``: a command-line override ``optim.lr_mult.a.b=0.1`` nests."""
    flat: Dict[str, Any] = {}
    for k, v in dict(tree).items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) or hasattr(v, "items"):
            flat.update(_flatten_paths(dict(v.items()), path + "."))
        else:
            flat[path] = v
    return flat


def param_groups(
    modules: nn.Module, weight_decay: float, exclude_bias_and_norm: bool = True,
    lr_mult: Optional[Dict[str, float]] = None,
) -> List[Dict[str, Any]]:
    """Weights with decay, and biases/norm parameters without (nor LARS adaptation).

    ``lr_mult`` maps module paths (``"audio_encoder"``, ``"video_encoder.layer4"``: prefixes of parameter
    names at a ``.`` boundary; the longest match wins) to learning-rate multipliers; each group carries its
    ``lr_mult`` (1.0 when none applies), and parameters whose multiplier is 0 are left out, i.e. frozen.
    A path that names no trainable parameter, or a negative multiplier, is a ValueError.
    """
    lr_mult = _flatten_paths(lr_mult or {})
    named = [(n, p) for n, p in modules.named_parameters() if p.requires_grad]
    for prefix, m in lr_mult.items():
        if not isinstance(m, (int, float)) or m < 0 or not math.isfinite(m):
            raise ValueError(f"optim.lr_mult[{prefix!r}] must be a finite number >= 0, got {m!r}")
        if not any(n == prefix or n.startswith(prefix + ".") for n, _ in named):
            tops = sorted({n.split(".")[0] for n, _ in named})
            raise ValueError(f"optim.lr_mult names {prefix!r}, which holds no trainable parameter; "
                             f"modules with parameters: {', '.join(tops)}")
    buckets: Dict[tuple, List[torch.nn.Parameter]] = {}
    for name, p in named:
        mult = _lr_mult_of(name, lr_mult)
        if mult == 0.0:
            continue
        no_decay = exclude_bias_and_norm and (p.ndim <= 1 or name.endswith(".bias"))
        buckets.setdefault((mult, no_decay), []).append(p)
    groups: List[Dict[str, Any]] = []
    # Decayed weights at multiplier 1 first: the same group order (and LR-monitor names) as without multipliers.
    for (mult, no_decay), params in sorted(buckets.items(), key=lambda kv: (kv[0][1], kv[0][0] != 1.0, kv[0][0])):
        group: Dict[str, Any] = {"params": params, "weight_decay": 0.0 if no_decay else weight_decay, "lr_mult": mult}
        if no_decay:
            group["lars_adapt"] = False
        groups.append(group)
    if not groups:
        raise ValueError("the optimiser has no parameters to train (all frozen by optim.lr_mult or requires_grad)")
    return groups


def build_optimizer(model: nn.Module, cfg: Any, lr: Optional[float] = None) -> torch.optim.Optimizer:
    """SGD, AdamW or LARS over ``model``'s trainable parameters, from an ``OptimConfig``; every group's
    learning rate is ``lr × its lr_mult`` (see :func:`param_groups`), so the schedule scales them alike."""
    lr = cfg.lr if lr is None else lr
    groups = param_groups(model, cfg.weight_decay, cfg.exclude_bias_and_norm, dict(getattr(cfg, "lr_mult", None) or {}))
    for g in groups:
        g["lr"] = lr * g["lr_mult"]
    name = cfg.name.lower()
    if name == "sgd":
        for g in groups:
            g.pop("lars_adapt", None)
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if name == "adamw":
        for g in groups:
            g.pop("lars_adapt", None)
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas))
    if name == "lars":
        return LARS(groups, lr=lr, momentum=cfg.momentum, eta=cfg.lars_eta)
    raise ValueError(f"unknown optimizer {cfg.name!r}; choose sgd, adamw or lars")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, start_factor: float = 0.01, min_factor: float = 0.0) -> float:
    """LR multiplier at ``step``: linear warm-up from ``start_factor`` to 1, then cosine to ``min_factor``."""
    if warmup_steps > 0 and step < warmup_steps:
        return start_factor + (1.0 - start_factor) * step / warmup_steps
    rest = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / rest)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Any, total_steps: int, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR: warm-up + cosine (``scheduler: cosine``) or warm-up + constant."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    min_factor = cfg.min_lr / cfg.lr if cfg.lr > 0 else 0.0
    if cfg.scheduler == "cosine":
        fn = lambda s: warmup_cosine(s, total_steps, warmup, cfg.warmup_start_factor, min_factor)  # noqa: E731
    elif cfg.scheduler == "constant":
        fn = lambda s: warmup_cosine(s, total_steps, warmup, cfg.warmup_start_factor, 1.0) if s < warmup else 1.0  # noqa: E731
    else:
        raise ValueError(f"unknown scheduler {cfg.scheduler!r}; choose cosine or constant")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


