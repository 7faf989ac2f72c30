"""``avssl bench models``: training-step cost of avssl's video encoders next to a reference build.

For each model, the avssl encoder and a reference implementation of the same architecture are measured in
the same run, on the same input, with the same pooled B×D output (the reference's classifier removed):

================ ================================================ ==========================================
model            avssl                                            reference
================ ================================================ ==========================================
``r2plus1d_18``  ``build_encoder("r2plus1d_18")``                 torchvision ``r2plus1d_18`` (fc removed)
``slowfast_r50`` ``build_encoder("slowfast_r50")`` 8×8: slow T,   pytorchvideo ``create_slowfast`` (head
                 fast 4T frames                                   replaced by a global average pool)
``i3d_r50``      ``build_encoder("i3d_r50")``                     pytorchvideo ``create_resnet`` with the
                                                                  hub ``i3d_r50`` settings, head → pool
``i3d_r50_nl``   ``i3d_r50`` with non-local blocks after units    none ("—")
                 res3 {1, 3} and res4 {1, 3, 5}
================ ================================================ ==========================================

What is measured, per clip (the batch's figure divided by ``batch``):

* **time**: one forward + backward of ``output.sum()`` in training mode (BatchNorm batch statistics),
  gradients cleared (set to None) before each step, no optimiser step; the median over ``repeats`` steps
  that follow the warm-up (1 step; 3 when compiled). Both builds live in the calling process and their
  timed steps alternate (avssl, reference, reference, avssl, …), so a busy machine slows both alike.
* **memory**: the peak tensor memory of one forward + backward above what is allocated before it (the
  model and its input): activations kept for backward, gradients, temporaries. Measured on a step after
  the warm-up, gradients cleared.

  - CUDA: ``torch.cuda.max_memory_allocated`` minus ``torch.cuda.memory_allocated`` before the step
    (tensor memory, not the caching allocator's reserve).
  - CPU: PyTorch's CPU allocations are invisible to ``tracemalloc`` (and the process RSS also moves with
    glibc's arenas and library buffers, ±10 % between identical runs), so the step runs under
    ``torch.profiler`` with ``profile_memory=True`` and its memory timeline
    (``profile.export_memory_timeline``) is summed over categories: the peak minus the first point, which
    holds the tensors that existed before the step. This is the CPU counterpart of the CUDA figure (same
    architecture, same bytes), and deterministic.
* **FLOPs** of one forward + backward, counted by ``torch.utils.flop_counter.FlopCounterMode`` on the
  ``meta`` device (no compute); on CUDA also the fraction of the GPU's dense bf16 peak the step reaches.

Variants (``variants``; a ``+``-joined subset of ``fp32``/``bf16``, ``cl3d``, ``compile``): ``bf16`` runs
the step under ``torch.autocast(dtype=torch.bfloat16)``, ``cl3d`` puts the model and input in
``torch.channels_last_3d``, ``compile`` wraps the model in ``torch.compile`` (2 extra warm-up steps).
Defaults: ``fp32`` on CPU; ``fp32, bf16, bf16+cl3d, bf16+cl3d+compile`` on CUDA (where
``torch.backends.cudnn.benchmark`` is on for the duration of the run).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import math
import statistics
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from avssl.apps.bench.base import Benchmark, register
from avssl.apps.bench.measure import MIB, peak_bytes
from avssl.apps.options import POSITIVE_INT
from avssl.errors import InvalidArgument
from avssl.eval.report import Table, fmt

NONLOCAL_STAGES: Mapping[str, Tuple[int, ...]] = MappingProxyType({"res3": (1, 3), "res4": (1, 3, 5)})
SLOWFAST_ALPHA = 4

#: Dense bf16 tensor-core peaks (TFLOP/s) by a substring of ``torch.cuda.get_device_name``; first match wins.
BF16_PEAK_TFLOPS: Tuple[Tuple[str, float], ...] = (
    ("H200", 989.4),
    ("H100 PCIe", 756.5),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)


@dataclass(frozen=True)
class ModelSpec:
    """One benchmarked architecture: the avssl build, its input kind, and the reference's label."""

    encoder: str
    kwargs: Mapping[str, Any]
    inputs: str  # "clip" (B×3×T×S×S) or "slowfast" ([slow B×3×T×S×S, fast B×3×αT×S×S])
    reference: Optional[str]


MODELS: Mapping[str, ModelSpec] = MappingProxyType(
    {
        "r2plus1d_18": ModelSpec("r2plus1d_18", {}, "clip", "torchvision r2plus1d_18"),
        "slowfast_r50": ModelSpec("slowfast_r50", {}, "slowfast", "pytorchvideo create_slowfast"),
        "i3d_r50": ModelSpec("i3d_r50", {}, "clip", "pytorchvideo create_resnet (i3d_r50)"),
        "i3d_r50_nl": ModelSpec(
            "i3d_r50", {"nonlocal_stages": {k: list(v) for k, v in NONLOCAL_STAGES.items()}}, "clip", None
        ),
    }
)
BUILDS = ("avssl", "reference")
_VARIANT_TOKENS = ("fp32", "bf16", "cl3d", "compile")


# ----------------------------------------------------------------------------------------------------------
# Building models and inputs
# ----------------------------------------------------------------------------------------------------------
class _GlobalPool(nn.Module):
    """Reference body -> B×D: global average pool of its last map (and concatenation of pathway lists)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: Any) -> torch.Tensor:
        y = self.body(x)
        if isinstance(y, (list, tuple)):
            return torch.cat([t.flatten(2).mean(2) for t in y], dim=1)
        return y.flatten(2).mean(2) if y.dim() > 2 else y


def _build_reference(key: str) -> nn.Module:
    if key == "r2plus1d_18":
        from torchvision.models.video import r2plus1d_18

        model = r2plus1d_18(weights=None)
        model.fc = nn.Identity()  # B×512 pooled features, as the avssl encoder returns
        return model
    if key == "slowfast_r50":
        from pytorchvideo.models.slowfast import create_slowfast

        # head=None keeps the pathway pooling + concatenation (B×2304×1×1×1) and drops the classifier.
        body = create_slowfast(
            model_depth=50, head=None, head_pool=nn.AdaptiveAvgPool3d, head_output_size=((1, 1, 1), (1, 1, 1))
        )
        return _GlobalPool(body)
    if key == "i3d_r50":
        from pytorchvideo.models.hub.resnet import i3d_r50

        return _GlobalPool(i3d_r50(pretrained=False, head=None))
    raise KeyError(f"model {key!r} has no reference build")


def build_model(key: str, build: str) -> nn.Module:
    """The ``"avssl"`` or ``"reference"`` build of benchmark model ``key`` (output B×D)."""
    spec = _spec(key)
    if build == "avssl":
        from avssl.models import build_encoder

        return build_encoder(spec.encoder, **dict(spec.kwargs))
    if build == "reference":
        return _build_reference(key)
    raise ValueError(f"build must be one of {BUILDS}, got {build!r}")


def make_inputs(key: str, batch: int, frames: int, size: int, device: Union[str, torch.device] = "cpu",
                generator: Optional[torch.Generator] = None) -> List[torch.Tensor]:
    """Inputs of model ``key``: ``[clip B×3×T×S×S]`` or ``[slow B×3×T×S×S, fast B×3×αT×S×S]``."""
    shapes = [(batch, 3, frames, size, size)]
    if _spec(key).inputs == "slowfast":
        shapes.append((batch, 3, SLOWFAST_ALPHA * frames, size, size))
    return [torch.randn(s, generator=generator).to(device) for s in shapes]


def _spec(key: str) -> ModelSpec:
    if key not in MODELS:
        raise KeyError(f"unknown benchmark model {key!r}; known: {', '.join(MODELS)}")
    return MODELS[key]


def _input_label(key: str, frames: int, size: int) -> str:
    if _spec(key).inputs == "slowfast":
        return f"{frames}+{SLOWFAST_ALPHA * frames}×{size}²"
    return f"{frames}×{size}²"


def parse_variant(variant: str) -> Dict[str, bool]:
    """``"bf16+cl3d+compile"`` -> ``{"bf16": True, "cl3d": True, "compile": True}``; errors name the token."""
    tokens = [t.strip() for t in variant.split("+") if t.strip()]
    bad = [t for t in tokens if t not in _VARIANT_TOKENS]
    if not tokens or bad:
        raise ValueError(f"variant {variant!r}: expected '+'-joined tokens from {_VARIANT_TOKENS}, bad: {bad}")
    if "fp32" in tokens and "bf16" in tokens:
        raise ValueError(f"variant {variant!r}: fp32 and bf16 exclude each other")
    return {"bf16": "bf16" in tokens, "cl3d": "cl3d" in tokens, "compile": "compile" in tokens}


# ----------------------------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------------------------
def count_flops(key: str, build: str, batch: int, frames: int, size: int) -> int:
    """FLOPs of one forward + backward on the ``meta`` device (no memory, no compute)."""
    with torch.device("meta"):  # parameters are created without storage: building costs nothing
        model = build_model(key, build).train()
    inputs = make_inputs(key, batch, frames, size, "meta")
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        _forward(model, inputs).float().sum().backward()
    return int(counter.get_total_flops())


def _forward(model: nn.Module, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    # A fresh list per call: some multi-pathway models rewrite the list they are given.
    return model(list(inputs)) if len(inputs) > 1 else model(inputs[0])


class BuildRunner:
    """One build of one model, on its device, in one variant, ready to take training steps.

    ``step()`` = gradients set to None, forward (under autocast with ``bf16``), backward of ``sum()``.
    """

    def __init__(self, key: str, build: str, device: Union[str, torch.device] = "cpu", batch: int = 1,
                 frames: int = 8, size: int = 112, variant: str = "fp32") -> None:
        opts = parse_variant(variant)
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.bf16, self.compile = opts["bf16"], opts["compile"]
        torch.manual_seed(0)
        self.model = build_model(key, build).to(self.device).train()
        self.params = sum(p.numel() for p in self.model.parameters())
        self.inputs = make_inputs(key, batch, frames, size, self.device, generator=torch.Generator().manual_seed(0))
        if opts["cl3d"]:
            self.model = self.model.to(memory_format=torch.channels_last_3d)
            self.inputs = [t.contiguous(memory_format=torch.channels_last_3d) for t in self.inputs]
        self.runner: Callable[..., torch.Tensor] = torch.compile(self.model) if self.compile else self.model
        self.graph_breaks: Optional[int] = None

    def clear_grads(self) -> None:
        for p in self.model.parameters():
            p.grad = None

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def step(self) -> None:
        self.clear_grads()
        ctx = torch.autocast(device_type=self.device.type, dtype=torch.bfloat16) if self.bf16 \
            else contextlib.nullcontext()
        with ctx:
            out = _forward(self.runner, self.inputs)
        out.float().sum().backward()

    def warm_up(self) -> None:
        """1 step (eager) or 3 (compiled: the forward and backward graphs are built and settle)."""
        if self.compile:
            torch._dynamo.utils.counters.clear()
        for _ in range(3 if self.compile else 1):
            self.step()
        self.sync()
        if self.compile:
            # Graph breaks leave parts of a compiled model eager: reported so a slow compile is explained.
            self.graph_breaks = int(sum(torch._dynamo.utils.counters["graph_break"].values()))

    def timed_step(self) -> float:
        self.clear_grads()
        self.sync()
        t0 = time.perf_counter()
        self.step()
        self.sync()
        return time.perf_counter() - t0

    def peak_bytes(self) -> int:
        """Peak tensor memory of one step above what is allocated before it (call after :meth:`warm_up`)."""
        self.clear_grads()
        return peak_bytes(self.step, torch.device(self.device))

    @property
    def memory_method(self) -> str:
        return "cuda_max_allocated" if self.cuda else "profiler_timeline"


# ----------------------------------------------------------------------------------------------------------
# The benchmark
# ----------------------------------------------------------------------------------------------------------
def bf16_peak_tflops(device_name: str) -> Optional[float]:
    """Dense bf16 peak of a known GPU (``BF16_PEAK_TFLOPS``), else None."""
    for sub, tflops in BF16_PEAK_TFLOPS:
        if sub.lower() in device_name.lower():
            return tflops
    return None


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or not b > 0 or not math.isfinite(a) or not math.isfinite(b):
        return None
    return a / b


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _measure_pair(key: str, builds: Sequence[str], dev: torch.device, batch: int, frames: int, size: int,
                  repeats: int, variant: str) -> Dict[str, Dict[str, Any]]:
    """Warm-up and memory of each build, then their interleaved timing; ``{build: result or {"error": ...}}``."""
    cfg = dict(key=key, device=str(dev), batch=batch, frames=frames, size=size, variant=variant)
    results: Dict[str, Dict[str, Any]] = {}
    runners: Dict[str, BuildRunner] = {}
    if parse_variant(variant)["compile"]:
        torch._dynamo.reset()  # fresh compile caches for this pair (each build's code is compiled once)
    for b in builds:
        try:
            r = BuildRunner(build=b, **cfg)
            r.warm_up()
            results[b] = {"peak_bytes": r.peak_bytes(), "memory_method": r.memory_method, "params": r.params,
                          "graph_breaks": r.graph_breaks}
            runners[b] = r
        except Exception as e:  # a reference that fails is reported as "—"; measure() raises for avssl
            results[b] = {"error": _error(e)}
    # Alternate the builds step by step (AB BA AB …): both see the same background load and thermal state.
    times: Dict[str, List[float]] = {b: [] for b in runners}
    order = list(runners)
    for i in range(repeats):
        for b in (order if i % 2 == 0 else order[::-1]):
            try:
                times[b].append(runners[b].timed_step())
            except Exception as e:
                results[b] = {"error": _error(e)}
    for b, t in times.items():
        if "error" not in results[b]:
            results[b].update(step_s=t, median_s=statistics.median(t))
    runners.clear()
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return results


def measure(
    names: Optional[Sequence[str]] = None,
    device: str = "cpu",
    batch: int = 1,
    frames: int = 8,
    size: int = 112,
    repeats: int = 3,
    variants: Optional[Sequence[str]] = None,
    progress: bool = True,
) -> List[Dict[str, Any]]:
    """Measure every model × variant for the avssl and the reference build; one row per pair.

    Args:
        names: keys of :data:`MODELS` (default: all of them).
        device: ``"cpu"`` or ``"cuda"`` / ``"cuda:N"``.
        batch: clips per step; the figures are reported per clip.
        frames: clip length T (SlowFast: slow T, fast 4T frames).
        size: spatial crop S (S×S).
        repeats: timed steps per build after the warm-up (their median is reported); the two builds'
            steps alternate.
        variants: see the module docstring; default ``["fp32"]`` on CPU, four variants on CUDA.
        progress: show which pair is being measured (on stderr).

    Each row: ``model, variant, device, device_name, batch, frames, size, input, reference`` (label or
    None), and for each build ``b`` in ``avssl``/``reference``: ``{b}_params``, ``{b}_ms`` (forward +
    backward per clip), ``{b}_clips_per_s``, ``{b}_mem_mib`` (peak extra memory per clip),
    ``{b}_gflop`` (forward + backward GFLOP per clip), ``{b}_peak_frac`` (fraction of the GPU's dense
    bf16 peak; None on CPU or an unknown GPU), ``{b}_graph_breaks`` (only for ``compile`` variants),
    ``reference_error`` (only when the reference build failed); ``time_ratio`` and ``mem_ratio``
    (avssl / reference, None without a reference) and ``memory_method``.
    """
    keys = list(MODELS) if names is None else list(names)
    for k in keys:
        _spec(k)
    for arg, v in (("batch", batch), ("frames", frames), ("size", size), ("repeats", repeats)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise InvalidArgument(f"{arg} must be a positive int, got {v!r}")
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise InvalidArgument(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise InvalidArgument(f"device={device!r}: CUDA is not available")
    variants = list(variants) if variants else (
        ["fp32", "bf16", "bf16+cl3d", "bf16+cl3d+compile"] if cuda else ["fp32"]
    )
    for v in variants:
        parse_variant(v)
    device_name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    peak_tflops = bf16_peak_tflops(device_name) if cuda else None

    from rich.console import Console

    console = Console(stderr=True)
    rows: List[Dict[str, Any]] = []
    prev_benchmark = torch.backends.cudnn.benchmark
    if cuda:
        torch.backends.cudnn.benchmark = True  # autotuned conv algorithms, for both builds alike
    try:
        for key in keys:
            spec = _spec(key)
            builds = ["avssl"] + (["reference"] if spec.reference else [])
            flops: Dict[str, Optional[int]] = {}
            for b in builds:
                try:
                    flops[b] = count_flops(key, b, batch, frames, size)
                except Exception:  # e.g. an op without a meta kernel: FLOPs are then left out
                    flops[b] = None
            for variant in variants:
                row: Dict[str, Any] = {
                    "model": key, "variant": variant, "device": str(dev), "device_name": device_name,
                    "batch": batch, "frames": frames, "size": size, "input": _input_label(key, frames, size),
                    "reference": spec.reference,
                }
                for b in BUILDS:
                    for field in ("params", "ms", "clips_per_s", "mem_mib", "gflop", "peak_frac"):
                        row[f"{b}_{field}"] = None
                status = console.status(f"bench models: {key} ({variant})", spinner="dots") if progress \
                    else contextlib.nullcontext()
                with status:
                    results = _measure_pair(key, builds, dev, batch, frames, size, repeats, variant)
                for b in builds:
                    res = results[b]
                    if "error" in res:
                        if b == "avssl":
                            raise RuntimeError(f"bench models: {key} ({variant}, avssl build) failed: {res['error']}")
                        row["reference_error"] = res["error"]
                        continue
                    med = float(res["median_s"])
                    row[f"{b}_params"] = res["params"]
                    row[f"{b}_ms"] = 1e3 * med / batch
                    row[f"{b}_clips_per_s"] = batch / med
                    row[f"{b}_mem_mib"] = res["peak_bytes"] / MIB / batch
                    if flops[b] is not None:
                        row[f"{b}_gflop"] = flops[b] / 1e9 / batch
                        if peak_tflops:
                            row[f"{b}_peak_frac"] = flops[b] / med / (peak_tflops * 1e12)
                    if res.get("graph_breaks") is not None:
                        row[f"{b}_graph_breaks"] = res["graph_breaks"]
                    row["memory_method"] = res["memory_method"]
                row["time_ratio"] = _ratio(row["avssl_ms"], row["reference_ms"])
                row["mem_ratio"] = _ratio(row["avssl_mem_mib"], row["reference_mem_mib"])
                rows.append(row)
    finally:
        torch.backends.cudnn.benchmark = prev_benchmark
    return rows


@register
class ModelsBenchmark(Benchmark):
    name = "models"
    help = "forward+backward time and memory: avssl vs torchvision/pytorchvideo builds"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--names", nargs="+", default=None, choices=list(MODELS))
        p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        p.add_argument("--batch", type=POSITIVE_INT, default=1)
        p.add_argument("--frames", type=POSITIVE_INT, default=8)
        p.add_argument("--size", type=POSITIVE_INT, default=112)
        p.add_argument("--repeats", type=POSITIVE_INT, default=3)
        p.add_argument("--variants", nargs="+", default=None,
                       help="e.g. fp32 bf16 bf16+cl3d bf16+cl3d+compile (default: fp32 on CPU, all four on CUDA)")

    def run(self, args: argparse.Namespace) -> List[Dict[str, Any]]:
        return measure(names=args.names, device=args.device, batch=args.batch, frames=args.frames, size=args.size,
                       repeats=args.repeats, variants=args.variants)

    def table(self, rows: Sequence[Dict[str, Any]]) -> Table:
        r0 = rows[0] if rows else {"device": "cpu", "device_name": "?", "batch": "?"}
        cuda = str(r0["device"]).startswith("cuda")
        mem_note = {
            "cuda_max_allocated": "peak allocated CUDA memory above model + input",
            "profiler_timeline": "peak allocated tensor memory above model + input (torch.profiler timeline)",
        }.get(str(r0.get("memory_method")), "peak memory")
        refs = {r["model"]: r["reference"] or "none" for r in rows}
        cols = ["model", "variant", "input", "avssl ms", "ref ms", "time ratio", "avssl MiB", "ref MiB",
                "mem ratio", "avssl clips/s", "ref clips/s", "GFLOP avssl", "GFLOP ref"]
        if cuda:
            cols += ["avssl % bf16 peak", "ref % bf16 peak"]
        cells = []
        for r in rows:
            row = [
                r["model"], r["variant"], r["input"],
                fmt(r["avssl_ms"], ".1f"), fmt(r["reference_ms"], ".1f"), fmt(r["time_ratio"], ".2f", "×"),
                fmt(r["avssl_mem_mib"], ".0f"), fmt(r["reference_mem_mib"], ".0f"), fmt(r["mem_ratio"], ".2f", "×"),
                fmt(r["avssl_clips_per_s"], ".2f"), fmt(r["reference_clips_per_s"], ".2f"),
                fmt(r["avssl_gflop"], ".1f"), fmt(r["reference_gflop"], ".1f"),
            ]
            if cuda:
                row += [fmt(None if r[f"{b}_peak_frac"] is None else 100 * r[f"{b}_peak_frac"], ".1f") for b in BUILDS]
            cells.append(row)
        notes = []
        for r in rows:
            breaks = {b: r.get(f"{b}_graph_breaks") for b in BUILDS if r.get(f"{b}_graph_breaks")}
            if breaks:
                notes.append(f"{r['model']} ({r['variant']}): torch.compile graph breaks: "
                             + ", ".join(f"{b} {n}" for b, n in breaks.items()))
            if r.get("reference_error"):
                notes.append(f"{r['model']} ({r['variant']}): the reference build failed: {r['reference_error']}")
        return Table(
            title=f"forward + backward per clip on {r0['device_name']}, batch {r0['batch']}",
            columns=cols, rows=cells, align=["l", "l", "l"] + ["r"] * (len(cols) - 3),
            caption=f"time: median of the timed steps; memory: {mem_note}; ratios: avssl / reference; "
                    "references: " + "; ".join(f"{k}: {v}" for k, v in refs.items()),
            notes=notes,
        )
