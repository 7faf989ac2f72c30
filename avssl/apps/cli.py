"""The ``avssl`` command line: one entry point, one sub-command per job.

A user's mistake (a config, a path, a permission, the data, an option) prints one line
``avssl: error: ...`` and exits with status 2; any other exception is a bug and keeps its traceback.
``--debug`` shows the traceback of user errors too.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from typing import Any, List, Optional

from avssl.apps.options import (
    NON_NEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    existing_file,
    float_in,
    int_at_least,
    output_file,
    views,
    weights_file,
)

log = logging.getLogger("avssl")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is in ``--help``) and ``--debug`` accepted after any
    sub-command as well as before it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # SUPPRESS: a sub-command's parser leaves the flag alone unless it is given there.
        self.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="show the traceback of every error (user errors too)")

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False)],
    )
    # lightning's package logger gets a console handler of its own when imported and also propagates
    # to the root, so each trainer message would print twice: keep its own handler only.
    logging.getLogger("lightning").propagate = False
    # Advertisements for hosted services are not information about the run.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_drop_tips)


def _drop_tips(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("\N{ELECTRIC LIGHT BULB} Tip")


# -- synth ---------------------------------------------------------------------------------------
def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write the synthetic audio-visual corpus (folder-per-class mp4 + CSV + splits)")
    p.add_argument("out_dir")
    p.add_argument("--classes", type=POSITIVE_INT, default=10)
    p.add_argument("--per-class", type=POSITIVE_INT, default=40)
    p.add_argument("--seconds", type=POSITIVE_FLOAT, default=4.0)
    p.add_argument("--size", type=int_at_least(16), default=128)
    p.add_argument("--fps", type=POSITIVE_INT, default=25)
    p.add_argument("--audio-rate", type=POSITIVE_INT, default=16000)
    p.add_argument("--seed", type=NON_NEGATIVE_INT, default=0)
    p.add_argument("--val-fraction", type=float_in(0.0, 1.0, high_open=True), default=0.25)
    p.add_argument("--no-audio-fraction", type=float_in(0.0, 1.0), default=0.0,
                   help="fraction of videos written without sound")
    p.add_argument("--nuisance", choices=["full", "low"], default="full",
                   help="low: flat/gradient backgrounds and at most one distractor")
    p.add_argument("--workers", type=NON_NEGATIVE_INT, default=None)
    p.set_defaults(func=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    from avssl.apps.synthetic import synthesize
    from avssl.utils import check_writable_dir

    check_writable_dir(args.out_dir, "OUT_DIR")
    summary = synthesize(
        args.out_dir,
        classes=args.classes,
        per_class=args.per_class,
        seconds=args.seconds,
        size=args.size,
        fps=args.fps,
        audio_rate=args.audio_rate,
        seed=args.seed,
        val_fraction=args.val_fraction,
        workers=args.workers,
        no_audio_fraction=args.no_audio_fraction,
        nuisance=args.nuisance,
    )
    _print_mapping("synthetic corpus", summary)
    return 0


# -- prep ----------------------------------------------------------------------------------------
def _add_prep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prep",
        help="probe, validate, resize, trim and extract audio from a corpus; write manifest.csv + prep_report.json",
        description="avssl prep SRC_DIR OUT_DIR [options]  |  avssl prep --check DIR",
    )
    p.add_argument("src", help="source corpus folder (never modified)")
    p.add_argument("out", nargs="?", help="output folder (not inside SRC)")
    p.add_argument("--check", action="store_true", help="only probe SRC and report; write nothing")
    p.add_argument("--report", default=None, help="with --check: also write the report JSON here")
    p.add_argument("--short-side", type=int_at_least(2), default=256)
    p.add_argument("--fps", type=POSITIVE_FLOAT, default=None, help="re-time to this frame rate (default: keep)")
    p.add_argument("--audio-rate", type=POSITIVE_INT, default=16000)
    p.add_argument("--audio-format", choices=["wav", "flac", "none"], default="wav")
    p.add_argument("--csv", type=existing_file, default=None,
                   help="Kinetics annotation CSV (label,youtube_id,time_start,time_end,split)")
    p.add_argument("--workers", type=NON_NEGATIVE_INT, default=None)
    p.add_argument("--no-reencode", action="store_true", help="probe and index only; keep the source files as they are")
    p.add_argument("--audio-stats", action="store_true", help="compute per-frequency log-mel mean/std (audio_stats.json)")
    p.add_argument("--strict-geometry", action="store_true",
                   help="list videos with a display rotation or non-square pixels as bad, instead of writing them "
                        "upright with square pixels")
    p.set_defaults(func=_run_prep)


def _run_prep(args: argparse.Namespace) -> int:
    from avssl.data.prep import PrepError, prepare, print_summary

    geometry = "refuse" if args.strict_geometry else "fix"
    if args.check:
        report = prepare(args.src, None, check_only=True, workers=args.workers, report_path=args.report,
                         geometry=geometry)
    else:
        if not args.out:
            raise PrepError("avssl prep: OUT_DIR is required unless --check is given")
        report = prepare(
            args.src,
            args.out,
            short_side=args.short_side,
            fps=args.fps,
            audio_rate=args.audio_rate,
            audio_format=None if args.audio_format == "none" else args.audio_format,
            csv=args.csv,
            workers=args.workers,
            reencode=not args.no_reencode,
            audio_stats=args.audio_stats,
            geometry=geometry,
        )
    print_summary(report)
    return 0


# -- pretrain / finetune ------------------------------------------------------------------------
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="train a method from a config (YAML + key=value overrides)")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="dotted key=value pairs, e.g. optim.lr=0.1")
    p.add_argument("--no-resume", action="store_true",
                   help="start afresh; a run already in OUTPUT_DIR is moved into OUTPUT_DIR/previous-<time>/")
    p.set_defaults(func=_run_pretrain)

    f = sub.add_parser("finetune", help="fine-tune a pretrained encoder with a classifier (supervised)")
    f.add_argument("config")
    f.add_argument("overrides", nargs="*")
    f.add_argument("--checkpoint", required=True, type=weights_file,
                   help="weights that initialise the encoder: an avssl checkpoint, a weights file (format detected) "
                        "or FORMAT:PATH, FORMAT one of avssl, torchvision, pytorchvideo, pyslowfast, avid_cma")
    f.add_argument("--splits", type=int_at_least(1), nargs="+", default=None, metavar="K",
                   help="UCF-101/HMDB-51: one run per official split (OUTPUT_DIR/split<K>, each resumable), each "
                        "tested on its split's test list, then per-split and mean ± std accuracies "
                        "(OUTPUT_DIR/splits.json)")
    f.add_argument("--no-resume", action="store_true",
                   help="start afresh; a run already in OUTPUT_DIR is moved into OUTPUT_DIR/previous-<time>/")
    f.set_defaults(func=_run_finetune)

    t = sub.add_parser("test", help="multi-view test of a fine-tuned model: accuracy, per-video predictions (CSV), "
                                    "confusion matrix (PNG)")
    t.add_argument("config", help="config naming the test data (data.val / data.val_split), e.g. the fine-tuning one")
    t.add_argument("overrides", nargs="*")
    t.add_argument("--checkpoint", required=True, type=existing_file, help="a checkpoint of avssl finetune")
    t.add_argument("--views", type=views, default=None, metavar="KxS",
                   help="K uniformly spaced clips × S crops (1 or 3) per video, e.g. 10x3 (default: the config's "
                        "data.test_clips × data.test_crops)")
    t.add_argument("--out", default=None, help="folder for predictions.csv, confusion.png and results.json "
                                               "(default: OUTPUT_DIR/test)")
    t.set_defaults(func=_run_test)


def _run_pretrain(args: argparse.Namespace) -> int:
    from avssl.config import load_config

    cfg = load_config(args.config, args.overrides)
    _writable_output_dir(cfg)
    return _train(cfg, resume=not args.no_resume)


def _train(cfg: Any, resume: bool) -> int:
    """Train; a stop signal exits with 128 + its number (143 for SIGTERM), after saving, so schedulers see it."""
    from avssl.engine import TrainingInterrupted, fit

    try:
        last = fit(cfg, resume=resume)
    except TrainingInterrupted as e:
        log.warning("%s", e)
        return e.exit_code
    log.info("checkpoint: %s", last)
    return 0


def _writable_output_dir(cfg: Any) -> None:
    from avssl.utils import check_writable_dir

    check_writable_dir(cfg.output_dir, "output_dir")


def _run_finetune(args: argparse.Namespace) -> int:
    from avssl.config import ConfigError, load_config

    # The method is checked first: only the supervised one has the init_checkpoint key.
    method = load_config(args.config, args.overrides).method.name
    if method != "supervised":
        raise ConfigError(f"avssl finetune: the config's method must be 'supervised', not {method!r}")
    cfg = load_config(args.config, [*args.overrides, f"method.init_checkpoint={args.checkpoint}"])
    _writable_output_dir(cfg)
    if not args.splits:
        return _train(cfg, resume=not args.no_resume)
    from avssl.engine import TrainingInterrupted
    from avssl.eval.splits import finetune_splits, splits_table

    try:
        result = finetune_splits(cfg, args.splits, resume=not args.no_resume)
    except TrainingInterrupted as e:
        log.warning("%s", e)
        return e.exit_code
    splits_table(result, title=f"fine-tuning from {args.checkpoint}, per split").print()
    log.info("results: %s", result["path"])
    return 0


def _run_test(args: argparse.Namespace) -> int:
    from avssl.config import load_config
    from avssl.eval.report import print_results_table, write_results_json
    from avssl.eval.testing import checkpoint_test
    from avssl.utils import check_writable_dir

    extra = [f"data.test_clips={args.views[0]}", f"data.test_crops={args.views[1]}"] if args.views else []
    cfg = load_config(args.config, [*args.overrides, *extra])
    out = check_writable_dir(args.out or os.path.join(cfg.output_dir, "test"), "--out" if args.out else "output_dir/test")
    row = checkpoint_test(cfg, args.checkpoint, out_dir=out)
    shown = ("encoder", "views", "clip_top1", "video_top1", "video_top5", "mean_class_accuracy", "num_videos")
    print_results_table([{k: row[k] for k in shown}], title=f"multi-view test of {args.checkpoint}")
    write_results_json([row], os.path.join(out, "results.json"), meta={"config": args.config,
                                                                        "checkpoint": args.checkpoint})
    log.info("predictions: %s; confusion matrix: %s", os.path.join(out, "predictions.csv"),
             os.path.join(out, "confusion.png"))
    return 0


# -- export --------------------------------------------------------------------------------------
def _add_export(sub: argparse._SubParsersAction) -> None:
    from avssl.models.weights import FORMATS

    p = sub.add_parser("export", help="write an encoder of a checkpoint as a plain state dict (+ FILE.json)")
    p.add_argument("checkpoint", type=existing_file, help="an avssl training checkpoint")
    p.add_argument("--out", required=True, help="the weights file to write; its description goes to OUT.json")
    p.add_argument("--format", default="avssl", choices=list(FORMATS),
                   help="whose key names to write (default avssl; torchvision for r3d_18/mc3_18/r2plus1d_18 …)")
    p.add_argument("--part", default=None,
                   help="which encoder: video_encoder, audio_encoder, … (default: the checkpoint's only one)")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from avssl.models.export import export_encoder

    output_file(args.out, "--out")
    meta = export_encoder(args.checkpoint, args.out, format=args.format, part=args.part)
    log.info("wrote %s (%s %s, %d tensors, %s layout) and %s.json", args.out, meta["part"], meta["encoder"],
             meta["tensors"], meta["format"], args.out)
    return 0


# -- bench ---------------------------------------------------------------------------------------
def _add_bench(sub: argparse._SubParsersAction) -> None:
    from avssl.apps.bench import BENCHMARKS, add_output_arguments

    p = sub.add_parser("bench", help="benchmarks, each measured side by side with a reference in the same run")
    names = BENCHMARKS.names()
    bsub = p.add_subparsers(dest="bench", required=True, metavar="{" + ",".join(names) + "}")
    for name in names:
        bench = BENCHMARKS.build(name)
        b = bsub.add_parser(name, help=bench.help, description=bench.help)
        bench.add_arguments(b)
        add_output_arguments(b)
        b.set_defaults(func=functools.partial(_run_bench, bench))


def _run_bench(bench: Any, args: argparse.Namespace) -> int:
    from avssl.apps.bench import execute

    return bench.exit_code(execute(bench, args))


# -- eval / extract ------------------------------------------------------------------------------
def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate an encoder: linear probe / kNN on frozen features, or fine-tuning")
    p.add_argument("config", help="config naming the evaluation data (data.train / data.val) and eval settings")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--checkpoint", type=existing_file, default=None,
                   help="trained checkpoint (omit for a randomly initialised encoder)")
    from avssl.eval.protocols import available_protocols

    p.add_argument("--protocol", action="append", choices=available_protocols(),
                   help="repeatable; default: the config's eval.protocols")
    p.add_argument("--modality", choices=["video", "audio", "image"], default=None)
    p.add_argument("--plot", action="store_true", help="save a 2-D embedding map of the held-out features (PNG)")
    p.add_argument("--out", default=None, help="folder for results.json and plots (default: OUTPUT_DIR/eval)")
    p.set_defaults(func=_run_eval)

    x = sub.add_parser("extract", help="write the embeddings of a corpus to a .pt file")
    x.add_argument("config")
    x.add_argument("overrides", nargs="*")
    x.add_argument("--checkpoint", type=existing_file, default=None)
    x.add_argument("--part", choices=["train", "val"], default="train", help="which part of the config's data")
    x.add_argument("--modality", choices=["video", "audio", "image"], default="video")
    x.add_argument("--stages", nargs="*", default=None, help="also per-stage pooled maps, e.g. res3 res4 res5")
    x.add_argument("--output", required=True, help="the .pt file to write (features, labels, index, view)")
    x.set_defaults(func=_run_extract)


def _run_eval(args: argparse.Namespace) -> int:
    from avssl.config import load_config
    from avssl.engine.sharding import process_group_from_env
    from avssl.eval import evaluate
    from avssl.eval.report import print_results_table, write_results_json
    from avssl.utils import check_writable_dir

    cfg = load_config(args.config, args.overrides)
    out = check_writable_dir(args.out or os.path.join(cfg.output_dir, "eval"), "--out" if args.out else "output_dir/eval")
    # Under torchrun every rank extracts its share of the features; rank 0 reports.
    with process_group_from_env() as (rank, _):
        rows = evaluate(cfg, args.checkpoint, protocols=args.protocol or list(cfg.eval.protocols),
                        modality=args.modality, out_dir=out, plot=args.plot and rank == 0, progress=rank == 0)
    if rank:
        return 0
    retrieval = [r for r in rows if r.get("protocol") == "retrieval"]
    if retrieval:
        print_results_table(retrieval, title=f"video↔audio retrieval on held-out videos: {args.checkpoint}")
    shown = ("encoder", "modality", "protocol", "clip_top1", "video_top1", "video_top5", "mean_class_accuracy", "wall_s")
    rows_shown = [r for r in rows if r.get("protocol") != "retrieval"]
    if rows_shown:
        print_results_table([{k: r[k] for k in shown if k in r} for r in rows_shown],
                            title=f"evaluation of {args.checkpoint or 'a randomly initialised encoder'}")
    write_results_json(rows, os.path.join(out, "results.json"), meta={"config": args.config, "checkpoint": args.checkpoint})
    log.info("results: %s", os.path.join(out, "results.json"))
    return 0


def _run_extract(args: argparse.Namespace) -> int:
    from avssl.config import load_config
    from avssl.data.datamodule import item_names, make_dataset
    from avssl.engine.sharding import process_group_from_env
    from avssl.eval import encoder_from
    from avssl.eval.features import amp_dtype_for, extract_dataset, save_features
    from avssl.eval.protocols import eval_device

    cfg = load_config(args.config, args.overrides)
    output_file(args.output, "--output")
    encoder = encoder_from(cfg, args.checkpoint, args.modality)
    ds = make_dataset(cfg, args.part, train=False, needs_audio=args.modality == "audio")
    # Under torchrun every rank extracts its share; rank 0 writes the whole file.
    with process_group_from_env() as (rank, _):
        dev = eval_device()
        feats = extract_dataset(encoder, ds, batch_size=int(cfg.eval.batch_size or cfg.data.batch_size),
                                num_workers=int(cfg.data.num_workers), device=dev, modality=args.modality,
                                stages=args.stages or None, amp_dtype=amp_dtype_for(cfg.eval.precision, dev),
                                progress=rank == 0)
    if rank:
        return 0
    feats["paths"] = item_names(ds)
    save_features(args.output, feats)
    log.info("wrote %s (%d views of %d videos)", args.output, len(feats["labels"]), len(ds))
    return 0


# -- demo ----------------------------------------------------------------------------------------
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="synthetic corpus -> prep -> pretrain -> evaluate; prints the result table")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--classes", type=POSITIVE_INT, default=10)
    p.add_argument("--per-class", type=int_at_least(2), default=24)
    p.add_argument("--seconds", type=POSITIVE_FLOAT, default=4.0)
    p.add_argument("--size", type=int_at_least(16), default=128)
    p.add_argument("--epochs", type=POSITIVE_INT, default=None, help="override the demo configs' trainer.max_epochs")
    p.add_argument("--seeds", "--seed", type=NON_NEGATIVE_INT, nargs="+", default=[0],
                   help="run the whole demo once per seed (under OUT/seed<S> when several); the tables give "
                        "mean ± sample std over them")
    p.add_argument("--workers", type=NON_NEGATIVE_INT, default=None)
    p.add_argument("--methods", nargs="+", default=None,
                   help="self-supervised methods to train (configs/demo/<name>_tiny.yaml; default: avid_cma "
                        "audio_clusters); the supervised upper bound always runs")
    p.add_argument("--image", action="store_true",
                   help="the image branch instead: simclr, byol, barlow_twins and swav on the digits set vs random init")
    p.add_argument("--image-set", default="digits", choices=["digits", "digits_colour", "digits_cluttered"],
                   help="with --image: which digits set")
    p.add_argument("--page", default=None, help="also write the results page here (e.g. docs/results/demo.md)")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from avssl.apps.demo import DEMO_METHODS, run_seeds
    from avssl.utils import check_writable_dir

    check_writable_dir(args.out, "--out")
    if args.page:
        output_file(args.page, "--page")
    if args.image:
        demo = dict(image=True, epochs=args.epochs, image_set=args.image_set)
    else:
        demo = dict(classes=args.classes, per_class=args.per_class, seconds=args.seconds, size=args.size,
                    epochs=args.epochs, workers=args.workers, methods=tuple(args.methods or DEMO_METHODS))
    run_seeds(args.seeds, out=args.out, page=args.page, command=args.command_line, **demo)
    return 0


# -- compare -------------------------------------------------------------------------------------
def _add_compare(sub: argparse._SubParsersAction) -> None:
    from avssl.apps.compare import entry_names

    p = sub.add_parser("compare", help="every method on the synthetic corpus, same encoder and budget: one table")
    p.add_argument("--out", default="compare_out")
    p.add_argument("--methods", nargs="+", default=None, metavar="NAME", choices=entry_names(),
                   help=f"a subset of: {', '.join(entry_names())} (default: all)")
    p.add_argument("--seeds", type=NON_NEGATIVE_INT, nargs="+", default=[0])
    p.add_argument("--epochs", type=POSITIVE_INT, default=12)
    p.add_argument("--classes", type=POSITIVE_INT, default=10)
    p.add_argument("--per-class", type=int_at_least(2), default=24)
    p.add_argument("--seconds", type=POSITIVE_FLOAT, default=4.0)
    p.add_argument("--layerwise", default="temporal_order",
                   help="the entry whose res2..res5 stages get a layer-wise linear probe ('' for none)")
    p.add_argument("--page", default=None, help="also write the results page here (e.g. docs/results/comparison.md)")
    p.add_argument("--workers", type=NON_NEGATIVE_INT, default=None)
    p.set_defaults(func=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    from avssl.apps.compare import run_compare
    from avssl.utils import check_writable_dir

    check_writable_dir(args.out, "--out")
    if args.page:
        output_file(args.page, "--page")
    run_compare(out=args.out, methods=args.methods, seeds=args.seeds, epochs=args.epochs, classes=args.classes,
                per_class=args.per_class, seconds=args.seconds, layerwise=args.layerwise or None, page=args.page, workers=args.workers,
                command=args.command_line)
    return 0


def _add_cma_figure(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cma-figure", help="PNG: reference videos, their CMA positives, and nearest neighbours by "
                                          "video only and by audio only (from an avid_cma checkpoint)")
    p.add_argument("config", help="the training config (its data.train lists the videos the banks index)")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--checkpoint", required=True, type=existing_file)
    p.add_argument("--refs", type=NON_NEGATIVE_INT, nargs="+", default=[0, 1, 2, 3],
                   help="training-set indices of the references")
    p.add_argument("--k", type=POSITIVE_INT, default=5)
    p.add_argument("--out", default="cma_positives.png")
    p.set_defaults(func=_run_cma_figure)


def _run_cma_figure(args: argparse.Namespace) -> int:
    from avssl.config import load_config
    from avssl.eval.plots import cma_figure

    cfg = load_config(args.config, args.overrides)
    output_file(args.out, "--out")
    cma_figure(cfg, args.checkpoint, args.refs, args.out, k=args.k)
    log.info("wrote %s", args.out)
    return 0


# -- env ------------------------------------------------------------------------------------------
def _add_env(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("env", help="versions of Python, torch, CUDA, the decoders and FFmpeg, and the video backend")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_env)


def environment() -> dict:
    """What avssl runs on: versions of Python, torch, CUDA/cuDNN, the GPUs, torchvision, torchaudio,
    lightning, the decoders and their FFmpeg libraries, and the video backend ``auto`` reads with."""
    import importlib
    import platform

    import torch

    from avssl import __version__
    from avssl.data.decoding import decoders

    def version(module: str) -> Optional[str]:
        try:
            return str(importlib.import_module(module).__version__)
        except Exception:  # noqa: BLE001 - not installed, or it does not import
            return None

    cuda = torch.cuda.is_available()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "avssl": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "torchvision": version("torchvision"),
        "torchaudio": version("torchaudio"),
        "lightning": version("lightning"),
        **decoders(),
    }


def _cmd_env(args: argparse.Namespace) -> int:
    import json

    report = environment()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    missing = "not installed"
    lines = {
        "avssl": report["avssl"],
        "python": f"{report['python']} ({report['platform']})",
        "torch": report["torch"],
        "CUDA": report["cuda"] or "none (CPU build)",
        "cuDNN": report["cudnn"] or "none",
        "GPU": ", ".join(report["gpus"]) or "none",
        "torchvision": report["torchvision"] or missing,
        "torchaudio": report["torchaudio"] or missing,
        "lightning": report["lightning"] or missing,
        "decord": report["decord"] or f"{missing} (video is decoded with PyAV; pip install 'avssl[decord]')",
        "PyAV": report["pyav"],
        "FFmpeg": " ".join(filter(None, [report["ffmpeg"], "(" + ", ".join(
            f"{k} {v}" for k, v in report["ffmpeg_libraries"].items()) + ")"])),
        "video backend": report["video_backend"],
    }
    width = max(len(k) for k in lines)
    for k, v in lines.items():
        print(f"{k:<{width}}  {v}")
    return 0


def _version_line() -> str:
    """``avssl X (torch Y, video backend Z)``: what ``avssl --version`` prints."""
    import torch

    from avssl import __version__
    from avssl.data.decoding import resolve_backend

    return f"avssl {__version__} (torch {torch.__version__}, video backend {resolve_backend('auto')})"


class _Version(argparse.Action):
    """``--version``: the line is computed only when asked for (it imports torch and the decoders)."""

    def __init__(self, option_strings: List[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(_version_line())
        parser.exit(0)


# -- helpers -------------------------------------------------------------------------------------
def _print_mapping(title: str, mapping: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False)
    for k, v in mapping.items():
        if isinstance(v, (dict, list)) and len(str(v)) > 80:
            v = f"{type(v).__name__} of {len(v)}"
        table.add_row(str(k), str(v))
    Console().print(table)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="avssl", description="Self-supervised learning of video and audio representations.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action=_Version, help="print avssl's version, torch's and the video backend")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_synth(sub)
    _add_prep(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_export(sub)
    _add_bench(sub)
    _add_demo(sub)
    _add_compare(sub)
    _add_cma_figure(sub)
    _add_env(sub)
    return parser


def _user_error(e: BaseException) -> Optional[Exception]:
    """The user's mistake ``e`` stands for, or None for a bug: a :class:`~avssl.errors.UserError`, or an
    OS error on a user's path (see :func:`avssl.errors.path_error`)."""
    from avssl.errors import UserError, path_error

    if isinstance(e, UserError):
        return e
    if isinstance(e, OSError):
        return path_error(e)
    return None


def _one_line(message: str) -> str:
    """A user error's message as one line. One re-raised from a DataLoader worker carries the worker's
    traceback: its last line holds the original message."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    if "Original Traceback" in message and lines:
        last = lines[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return " ".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    from avssl.apps.pages import command_line

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.command_line = command_line(argv)  # the exact command, for the results pages it writes
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except Exception as e:
        err = _user_error(e)
        if err is None or getattr(args, "debug", False):
            raise
        # Printed, not logged: a log handler would wrap a long message over several lines.
        print(f"avssl: error: {_one_line(str(err))}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
