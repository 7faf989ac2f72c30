"""The GPU code paths, run and measured in one go (``make gpu-check``, i.e. ``avssl bench gpu --page docs/results/gpu.md``).

Four checks, each timed, in one table:

1. ``pytest -m cuda`` over the repository's tests: bf16-mixed steps of every method family, channels-last and
   ``torch.compile`` against eager fp32, SyncBatchNorm under NCCL, the memory banks, the CMA search and k-means on
   the GPU against the CPU, bf16 extraction against fp32 (skipped when avssl is not a source checkout).
2. ``avssl bench models`` for r2plus1d_18 at 8×112², batch ``--batch``, in its four CUDA variants (fp32, bf16,
   bf16 + channels-last-3d, bf16 + channels-last-3d + ``torch.compile``): clips/s and the fraction of the GPU's
   dense bf16 peak.
3. ``avssl bench cma`` at AudioSet's 1.8M rows (chunks of 1024 queries): time, peak memory, GFLOP/s.
4. One bf16-mixed epoch of the ``avid_cma`` Kinetics recipe (``pretrain/avid_cma_r2plus1d_kinetics.yaml``: R(2+1)D-18
   and the AVID audio net, banks, 1024 negatives) on a synthetic corpus at 112² on one GPU, channels-last: clips/s
   and the data-wait fraction as the run logs them (:class:`avssl.engine.telemetry.Throughput`, averaged over the
   epoch's logged windows after the first), and the fraction of bf16 peak those clips/s reach (forward + backward
   FLOPs of both encoders per clip, counted by ``FlopCounterMode``).

Without a CUDA GPU it stops at once with one line (exit status 2). A failed check is reported in its row and
makes the command exit 1 after the table and the page are written.
"""
from __future__ import annotations

import argparse
import csv
import glob
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from avssl.apps.bench.base import Benchmark, register
from avssl.apps.options import POSITIVE_INT
from avssl.errors import UserError
from avssl.eval.report import Table, fmt

AUDIOSET_ROWS = 1_800_000
RECIPE = "pretrain/avid_cma_r2plus1d_kinetics.yaml"


def require_cuda() -> str:
    """The GPU's name; a :class:`~avssl.errors.UserError` (one line, exit 2) when there is none."""
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise UserError(f"avssl bench gpu (make gpu-check) needs a CUDA GPU: none is visible "
                        f"(torch {torch.__version__}, {build}); nothing was run")
    return torch.cuda.get_device_name(0)


def tests_folder() -> Optional[str]:
    """The repository's ``tests/`` next to the avssl package (a source checkout), or None (an installed wheel)."""
    import avssl

    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(avssl.__file__))), "tests")
    return folder if os.path.isdir(folder) else None


def _row(check: str, **values: Any) -> Dict[str, Any]:
    return {"check": check, "ok": True, "result": "", "clips_per_s": None, "data_wait": None, "peak_frac": None,
            "seconds": None, **values}


def _timed(check: str, fn: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    t0 = time.perf_counter()
    try:
        row = _row(check, **fn())
    except Exception as e:  # noqa: BLE001 - a failed check is a row, the others still run
        row = _row(check, ok=False, result=f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    row["seconds"] = time.perf_counter() - t0
    return row


def run_cuda_tests(timeout: int = 600) -> Dict[str, Any]:
    folder = tests_folder()
    if folder is None:
        return {"result": "skipped: no tests/ folder (run from a source checkout)"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", folder],
                          capture_output=True, text=True, timeout=timeout, cwd=os.path.dirname(folder))
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", proc.stdout)}
    summary = ", ".join(f"{n} {k}" for k, n in counts.items()) or proc.stdout.strip().splitlines()[-1:]
    ok = proc.returncode == 0 and counts.get("passed", 0) > 0
    if not ok:
        sys.stderr.write(proc.stdout[-6000:] + proc.stderr[-2000:])
    return {"ok": ok, "result": str(summary)}


def run_models(batch: int) -> List[Dict[str, Any]]:
    from avssl.apps.bench.models import measure

    rows = []
    for r in measure(["r2plus1d_18"], device="cuda", batch=batch, repeats=5, progress=False):
        rows.append(_row(f"bench models r2plus1d_18 {r['variant']} (batch {batch})",
                         result=f"{r['avssl_ms']:.2f} ms/clip, {r['avssl_mem_mib']:.0f} MiB/clip",
                         clips_per_s=r["avssl_clips_per_s"], peak_frac=r["avssl_peak_frac"]))
    return rows


def run_cma() -> Dict[str, Any]:
    from avssl.apps.bench.cma import measure

    r = measure([AUDIOSET_ROWS], chunk_size=1024, naive_max_n=0, device="cuda")[0]
    return {"result": f"{r['chunked_s']:.1f} s, {r['chunked_peak_mib'] / 1024:.1f} GiB peak, "
                      f"{r['chunked_gflops']:.0f} GFLOP/s ({100 * r['matmul_fraction']:.0f} % of matmul)"}


def encoder_flops_per_clip(cfg: Any) -> int:
    """Forward + backward FLOPs of the config's video and audio encoders for one training clip (meta device)."""
    from torch.utils.flop_counter import FlopCounterMode

    from avssl.models import build_encoder

    from avssl.data.audio import build_audio_transform

    d = cfg.data
    # The audio net's input: the spectrogram the training transform makes of audio_seconds of sound.
    spec = build_audio_transform(d.audio_features, train=False, sample_rate=d.audio_rate)(
        torch.zeros(1, int(d.audio_rate * d.audio_seconds)))
    total = 0
    for enc_cfg, shape in ((cfg.model.video, (1, 3, d.num_frames, d.crop_size, d.crop_size)),
                           (cfg.model.audio, (1, *spec.shape))):
        with torch.device("meta"):
            enc = build_encoder(enc_cfg.name, **dict(enc_cfg.kwargs or {})).train()
            x = torch.zeros(shape)
        with FlopCounterMode(display=False) as counter:
            enc(x).float().sum().backward()
        total += int(counter.get_total_flops())
    return total


def run_recipe_epoch(batch: int, workers: int, videos_per_class: int, out: str) -> Dict[str, Any]:
    from avssl.apps.bench.models import bf16_peak_tflops
    from avssl.apps.synthetic import synthesize
    from avssl.config import load_config
    from avssl.engine import fit

    corpus = os.path.join(out, "corpus")
    synthesize(corpus, classes=8, per_class=videos_per_class, seconds=4.0, size=128, seed=0, val_fraction=0.0,
               workers=workers, progress=False)
    cfg = load_config(RECIPE, [
        f"data.train={os.path.join(corpus, 'annotations.csv')}", f"data.video_root={os.path.join(corpus, 'videos')}",
        "data.val_split=null", "data.crop_size=112", f"data.batch_size={batch}", f"data.num_workers={workers}",
        "trainer.devices=1", "trainer.strategy=auto", "trainer.max_epochs=1", "trainer.log_every_n_steps=5",
        "trainer.channels_last=true", "trainer.progress_bar=false", "trainer.loggers=[csv]",
        "optim.warmup_epochs=0", f"output_dir={os.path.join(out, 'run')}",
    ])
    fit(cfg, resume=False)
    logged = sorted(glob.glob(os.path.join(out, "run", "logs", "version_*", "metrics.csv")))[-1]
    with open(logged) as f:
        windows = [r for r in csv.DictReader(f) if r.get("perf/clips_per_s")]
    windows = windows[1:] or windows  # the first window holds cuDNN's autotuning and the workers' start
    clips = sum(float(r["perf/clips_per_s"]) for r in windows) / len(windows)
    wait = sum(float(r["perf/data_wait"]) for r in windows) / len(windows)
    peak = bf16_peak_tflops(torch.cuda.get_device_name(0))
    frac = encoder_flops_per_clip(cfg) * clips / (peak * 1e12) if peak else None
    return {"result": f"{8 * videos_per_class} videos, batch {batch}, {workers} loader workers",
            "clips_per_s": clips, "data_wait": wait, "peak_frac": frac}


@register
class GpuBenchmark(Benchmark):
    name = "gpu"
    help = "the GPU code paths (make gpu-check): cuda tests, bench models and cma at 1.8M, one bf16 avid_cma epoch"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--batch", type=POSITIVE_INT, default=32, help="clips per step (models and the epoch)")
        p.add_argument("--workers", type=POSITIVE_INT, default=min(8, os.cpu_count() or 1),
                       help="loader workers (and corpus writers) for the avid_cma epoch")
        p.add_argument("--videos-per-class", type=POSITIVE_INT, default=48, help="8 classes of synthetic videos")
        p.add_argument("--skip", nargs="*", default=[], choices=["tests", "models", "cma", "epoch"],
                       help="leave checks out")

    def run(self, args: argparse.Namespace) -> List[Dict[str, Any]]:
        require_cuda()
        rows: List[Dict[str, Any]] = []
        if "tests" not in args.skip:
            rows.append(_timed("pytest -m cuda", run_cuda_tests))
        if "models" not in args.skip:
            t0 = time.perf_counter()
            try:
                rows += run_models(args.batch)
            except Exception as e:  # noqa: BLE001
                rows.append(_row("bench models r2plus1d_18", ok=False, result=f"failed: {type(e).__name__}: {e}",
                                 seconds=time.perf_counter() - t0))
        if "cma" not in args.skip:
            rows.append(_timed(f"bench cma, N = {AUDIOSET_ROWS:,}", run_cma))
        if "epoch" not in args.skip:
            with tempfile.TemporaryDirectory(prefix="avssl-gpu-check-") as out:
                rows.append(_timed("avid_cma recipe, 1 bf16 epoch at 112²",
                                   lambda: run_recipe_epoch(args.batch, args.workers, args.videos_per_class, out)))
        return rows

    def table(self, rows: Sequence[Dict[str, Any]]) -> Table:
        name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "?"
        cells = [[r["check"], ("" if r["ok"] else "FAILED ") + r["result"], fmt(r["clips_per_s"], ",.0f"),
                  fmt(None if r["data_wait"] is None else 100 * r["data_wait"], ".1f", " %"),
                  fmt(None if r["peak_frac"] is None else 100 * r["peak_frac"], ".1f", " %"), fmt(r["seconds"], ".0f")]
                 for r in rows]
        total = sum(r["seconds"] or 0 for r in rows)
        return Table(title=f"GPU check on {name}", columns=["check", "result", "clips/s", "data wait", "% bf16 peak", "s"],
                     rows=cells, align=["l", "l", "r", "r", "r", "r"],
                     caption=f"total {total / 60:.1f} min; % bf16 peak: forward + backward FLOPs × clips/s over the "
                             "GPU's dense bf16 peak")

    def exit_code(self, rows: Sequence[Dict[str, Any]]) -> int:
        return 0 if all(r["ok"] for r in rows) else 1


__all__ = ["GpuBenchmark", "encoder_flops_per_clip", "require_cuda", "tests_folder"]
