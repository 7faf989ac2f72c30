"""``avssl demo``: synthetic audio-visual corpus -> prepare -> pretrain -> evaluate, one result table.

Everything runs on the CPU in minutes: the encoders are the small registered variants
(``r2plus1d_tiny``: R(2+1)D-10 at 16 base channels on 8×64² clips; ``audio_conv_tiny`` on 1 s log-mel),
configured by ``configs/demo/*.yaml``. The table compares, on held-out videos, a randomly initialised
encoder, the self-supervised encoders (no labels: ``avid_cma`` by default) and a supervised upper bound, by
linear probe and kNN. For the audio-visual methods (those with a joint embedding, ``avid_cma`` and
``xmodal_nce``) a second table gives their audio encoder's 5-fold linear probe (ESC-50's protocol shape)
beside a random audio net, and video→audio retrieval on held-out videos. A third table fine-tunes the video
encoder end to end with labels, from the first self-supervised method's checkpoint and from random init, with
10% and with 100% of the training labels (``data.label_fraction``), tested on the held-out videos: what
self-supervision buys where labels are few.

``avssl demo --seeds 0 1 2`` runs the whole demo once per seed (under ``OUT/seed<S>``) and states each
number as mean ± sample standard deviation over the seeds; ``--page`` writes that, with the per-seed
tables, as a results page (:mod:`avssl.apps.pages`).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

log = logging.getLogger(__name__)

# Self-supervised methods the demo trains by default (each has configs/demo/<name>_tiny.yaml). audio_clusters
# (--methods avid_cma audio_clusters) left the default to make room for the fine-tuning table within 15 minutes.
DEMO_METHODS = ("avid_cma",)
# Shares of the training labels the fine-tuning table uses, and how many times the config's epochs each trains:
# a tenth of the videos is a tenth of the steps per epoch, so the low-label runs train for more epochs.
FINETUNE_LABELS = ((0.1, 3), (1.0, 1))
# Methods with a joint audio-visual embedding: their audio encoder and retrieval are evaluated too.
AUDIO_VISUAL = ("avid_cma", "xmodal_nce")


def _config(name: str, overrides: List[str]) -> Any:
    """A shipped demo config (``configs/demo/NAME``) with ``overrides``."""
    from avssl.config import load_config, shipped_config

    return load_config(shipped_config(f"demo/{name}"), overrides)


def demo_methods() -> List[str]:
    """The self-supervised methods the demo can train: those with a ``configs/demo/<name>_tiny.yaml``."""
    from avssl.config import shipped_configs

    names = [os.path.basename(c)[: -len("_tiny.yaml")] for c in shipped_configs("demo") if c.endswith("_tiny.yaml")]
    return sorted(n for n in names if n not in ("base", "supervised", "finetune"))


def run_demo(
    out: str = "demo_out",
    classes: int = 10,
    per_class: int = 24,
    seconds: float = 4.0,
    size: int = 128,
    epochs: Optional[int] = None,
    seed: int = 0,
    workers: Optional[int] = None,
    methods: Sequence[str] = DEMO_METHODS,
) -> List[Dict[str, Any]]:
    """Run the whole demo under ``out``; print and return the result rows (also in ``out/results.json``)."""
    from rich.console import Console

    from avssl.apps.synthetic import make_corpus
    from avssl.eval.plots import plot_training_curves
    from avssl.eval.report import print_results_table, write_results_json
    from avssl.engine import fit, with_overrides
    from avssl.eval import evaluate

    console = Console()
    methods = tuple(methods)
    check_methods(methods)
    t_start = time.perf_counter()
    console.rule("1/4  synthesise the audio-visual corpus and prepare it (avssl prep: 80 px, audio, manifest)")
    corpus = make_corpus(out, classes=classes, per_class=per_class, seconds=seconds, size=size, seed=seed,
                         workers=workers)
    manifest, report, t_synth, t_prep = corpus["manifest"], corpus["report"], corpus["synth_s"], corpus["prep_s"]

    common = [f"data.train={manifest}", f"seed={seed}"]
    if epochs is not None:
        common.append(f"trainer.max_epochs={epochs}")
    rows: List[Dict[str, Any]] = []
    eval_cfg = _config("supervised_tiny.yaml", [*common, f"output_dir={os.path.join(out, 'runs', 'eval')}"])

    console.rule("2/4  pretrain")
    checkpoints: Dict[str, str] = {}
    train_time: Dict[str, float] = {}
    for name in (*methods, "supervised"):
        cfg = _config(f"{name}_tiny.yaml", [*common, f"output_dir={os.path.join(out, 'runs', name)}"])
        if name == "supervised":  # validated once, at the end: the demo tests its last checkpoint
            cfg = with_overrides(cfg, **{"trainer.check_val_every_n_epoch": cfg.trainer.max_epochs})
        console.print(f"[bold]{name}[/]: {cfg.model.video.name} video encoder, {cfg.trainer.max_epochs} epochs")
        t0 = time.perf_counter()
        checkpoints[name] = fit(cfg, resume=False)
        train_time[name] = time.perf_counter() - t0
        try:
            plot_training_curves(os.path.join(cfg.output_dir, "logs", "version_0", "metrics.csv"),
                                 os.path.join(cfg.output_dir, "training_curves.png"), keys=["train/loss_epoch"])
        except (KeyError, FileNotFoundError, ValueError) as e:
            log.info("no training curve for %s (%s)", name, e)

    console.rule("3/4  evaluate on held-out videos (linear probe and kNN on frozen video features)")
    plots = os.path.join(out, "plots")
    labelled = {"random init": None, **{n: checkpoints[n] for n in methods}, "supervised (upper bound)": checkpoints["supervised"]}
    for label, ckpt in labelled.items():
        got = evaluate(eval_cfg, ckpt, protocols=("linear", "knn"), modality="video", name=label, out_dir=plots, plot=True)
        key = next((n for n in checkpoints if checkpoints[n] == ckpt), None)
        for r in got:
            rows.append({
                "encoder": label,
                "protocol": r["protocol"],
                "video_top1": r["video_top1"],
                "video_top5": r["video_top5"],
                "mean_class_acc": r["mean_class_accuracy"],
                "clip_top1": r["clip_top1"],
                "train_s": round(train_time.get(key, 0.0), 1) if key else 0.0,
            })
    av_rows = _audio_visual_rows(checkpoints, [n for n in methods if n in AUDIO_VISUAL], out, common,
                                 train_time)
    console.rule(f"4/4  fine-tune the video encoder with 10% and 100% of the training labels, from {methods[0]} and "
                 "from random init (its 100% run: the supervised upper bound)")
    t0 = time.perf_counter()
    ft_rows = _finetune_rows(methods[0], checkpoints[methods[0]], checkpoints["supervised"], train_time["supervised"],
                             out, common)
    t_finetune = time.perf_counter() - t0
    total = time.perf_counter() - t_start
    title = (f"avssl demo: {classes} classes, {len(report.get('rows', [])) or classes * per_class} videos "
             f"(synth {t_synth:.0f} s, prep {t_prep:.0f} s), total wall time {total / 60:.1f} min")
    print_results_table(rows, title=title, console=console)
    if av_rows:
        print_results_table(av_rows, title="audio-visual methods: audio encoder (5-fold linear probe on all videos) and "
                            "video→audio retrieval among the held-out videos", console=console)
    print_results_table(ft_rows, title=_table_title(ft_rows), console=console)
    write_results_json(rows + av_rows + ft_rows, os.path.join(out, "results.json"),
                       meta={"wall_time_s": total, "synth_s": t_synth, "prep_s": t_prep, "finetune_s": t_finetune,
                             "classes": classes, "per_class": per_class, "seed": seed})
    console.print(f"results: {os.path.join(out, 'results.json')}; plots: {plots}/ and {out}/runs/*/training_curves.png")
    return rows + av_rows + ft_rows


def _finetune_rows(pretrained: str, checkpoint: str, scratch: str, scratch_s: float, out: str,
                   common: List[str]) -> List[Dict[str, Any]]:
    """The video encoder fine-tuned end to end with each share of :data:`FINETUNE_LABELS`, tested on the held-out
    videos: from ``pretrained``'s ``checkpoint`` with the fine-tuning recipe (``finetune_tiny.yaml``: classifier
    warm-up for a quarter of the epochs, encoder at a tenth of the learning rate), and from random init with the
    from-scratch recipe (``supervised_tiny.yaml``), whose run with all the labels is the supervised upper bound
    already trained (``scratch``, in ``scratch_s`` seconds)."""
    from avssl.data.datamodule import make_dataset
    from avssl.engine import with_overrides
    from avssl.eval.finetune import finetune_and_evaluate
    from avssl.eval.testing import checkpoint_test

    rows: List[Dict[str, Any]] = []
    for fraction, epoch_factor in FINETUNE_LABELS:
        for label, config, ckpt in ((pretrained, "finetune_tiny.yaml", checkpoint),
                                    ("random init", "supervised_tiny.yaml", None)):
            run = f"finetune_{'random' if ckpt is None else pretrained}_{round(100 * fraction)}pct"
            cfg = _config(config, [*common, f"output_dir={os.path.join(out, 'runs', run)}",
                                   f"data.label_fraction={fraction}"])
            videos = len(make_dataset(cfg, "train", train=True, needs_audio=False))
            epochs = cfg.trainer.max_epochs * epoch_factor
            t0 = time.perf_counter()
            if ckpt is None and fraction == 1.0:
                r = checkpoint_test(cfg, scratch, name=label)
                train_s = scratch_s + time.perf_counter() - t0
            else:
                # Validation once, at the end (the held-out test follows); a batch no larger than the labelled videos.
                cfg = with_overrides(cfg, **{
                    "trainer.max_epochs": epochs, "trainer.check_val_every_n_epoch": epochs,
                    "method.classifier_warmup_epochs": epochs // 4 if ckpt else 0,
                    "data.batch_size": min(cfg.data.batch_size, videos)})
                r = finetune_and_evaluate(cfg, ckpt, name=label)
                train_s = time.perf_counter() - t0
            rows.append({"init": label, "labels": f"{round(100 * fraction)}% ({videos} videos)",
                         "video_top1": r["video_top1"], "mean_class_acc": r["mean_class_accuracy"],
                         "epochs": epochs, "config": config, "train_s": round(train_s, 1)})
    return rows


def check_methods(methods: Sequence[str]) -> None:
    """Refuse (one line) a method without a demo config, and ``supervised`` (it always runs)."""
    known = demo_methods()
    unknown = [m for m in methods if m not in known]
    if unknown or "supervised" in methods:
        from avssl.errors import InvalidArgument

        raise InvalidArgument(f"demo methods {unknown or ['supervised']} not available (the supervised upper bound "
                              f"always runs); choose from {', '.join(known)}")


def _audio_visual_rows(checkpoints: Dict[str, str], names: Sequence[str], out: str, common: List[str],
                       train_time: Dict[str, float]) -> List[Dict[str, Any]]:
    """Audio 5-fold probe (trained audio encoder vs a random one) and held-out video→audio recall@k."""
    if not names:
        return []
    from avssl.eval.retrieval import retrieval_evaluate
    from avssl.eval import evaluate

    rows: List[Dict[str, Any]] = []
    for i, name in enumerate(names):
        cfg = _config(f"{name}_tiny.yaml", [*common, f"output_dir={os.path.join(out, 'runs', 'eval_av')}"])
        r = retrieval_evaluate(cfg, checkpoints[name])
        if i == 0:  # a random encoder's retrieval is chance: k of the held-out sounds
            folds = evaluate(cfg, None, protocols=("folds",), modality="audio", name="random init", progress=False)[0]
            rows.append({"encoder": "random init", "audio_folds_top1": folds["video_top1"],
                         **{f"v2a_r@{k}": min(1.0, k / r["num_videos"]) for k in (1, 5, 10)},
                         "note": "retrieval: chance"})
        folds = evaluate(cfg, checkpoints[name], protocols=("folds",), modality="audio", name=name, progress=False)[0]
        rows.append({"encoder": name, "audio_folds_top1": folds["video_top1"],
                     **{f"v2a_r@{k}": r[f"v2a_r@{k}"] for k in (1, 5, 10)},
                     "train_s": round(train_time.get(name, 0.0), 1)})
    return rows


IMAGE_METHODS = ("simclr", "byol", "barlow_twins", "swav")


def run_image_demo(
    out: str = "demo_out",
    methods: tuple = IMAGE_METHODS,
    epochs: Optional[int] = None,
    seed: int = 0,
    image_set: str = "digits",
) -> List[Dict[str, Any]]:
    """The image branch on scikit-learn's handwritten digits: each method in ``methods`` pretrains the
    same narrow ResNet-18 (``configs/demo/digits_*.yaml``, no labels), then a linear probe and kNN on
    frozen features of the 450 held-out digits compare it with the same encoder at random init.

    ``image_set``: ``digits`` (grey, centred), ``digits_colour`` (in colour at a random place) or
    ``digits_cluttered`` (smaller, over distractor strokes); see :func:`avssl.data.images.cluttered_digits`."""
    from rich.console import Console

    from avssl.eval.report import print_results_table, write_results_json
    from avssl.engine import fit
    from avssl.eval import evaluate

    console = Console()
    t_start = time.perf_counter()
    common = [f"seed={seed}", f"data.train={image_set}"] + ([f"trainer.max_epochs={epochs}"] if epochs is not None else [])
    eval_cfg = _config("digits_simclr.yaml", [*common, f"output_dir={os.path.join(out, 'image', 'eval')}"])
    rows: List[Dict[str, Any]] = []

    def add(label: str, ckpt: Optional[str], train_s: float) -> None:
        for r in evaluate(eval_cfg, ckpt, protocols=("linear", "knn"), modality="image", name=label,
                          out_dir=os.path.join(out, "image", "plots"), plot=True):
            rows.append({"encoder": label, "protocol": r["protocol"], "top1": r["video_top1"],
                         "top5": r["video_top5"], "mean_class_acc": r["mean_class_accuracy"],
                         "train_s": round(train_s, 1)})

    add("random init", None, 0.0)
    for name in methods:
        cfg = _config(f"digits_{name}.yaml", [*common, f"output_dir={os.path.join(out, 'image', name)}"])
        console.rule(f"{name}: {cfg.model.image.name} on digits, {cfg.trainer.max_epochs} epochs")
        t0 = time.perf_counter()
        ckpt = fit(cfg, resume=False)
        add(name, ckpt, time.perf_counter() - t0)
    total = time.perf_counter() - t_start
    print_results_table(rows, title=f"avssl image demo: {image_set} (1,347 train / 450 held-out), "
                                    f"total wall time {total / 60:.1f} min", console=console)
    write_results_json(rows, os.path.join(out, "image", "results.json"), meta={"wall_time_s": total, "seed": seed})
    return rows


def run_seeds(seeds: Sequence[int] = (0,), out: str = "demo_out", page: Optional[str] = None,
              command: str = "avssl demo", image: bool = False, **kwargs: Any) -> Dict[str, Any]:
    """The demo (:func:`run_demo`, or :func:`run_image_demo` with ``image``) once per seed, every number
    then stated as mean ± sample standard deviation over the seeds.

    One seed runs in ``out`` itself, several each in ``out/seed<S>``. Prints the summary table(s), writes
    ``out/summary.json`` (the summary and every seed's rows) and, with ``page``, a results page whose
    top holds ``command``. ``kwargs`` go to the demo (classes, epochs, methods, …).

    Returns ``{"per_seed": {seed: rows}, "summary": rows, "tables": [Table], "page": page}``.
    """
    from avssl.apps.pages import seed_summary_table, summarise_seeds, write_page
    from avssl.errors import InvalidArgument
    from avssl.eval.report import Table, write_results_json

    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise InvalidArgument(f"--seeds: give one or more different seeds, got {seeds}")
    if not image:
        check_methods(kwargs.get("methods", DEMO_METHODS))  # before any work, not after the first seed
    t0 = time.perf_counter()
    per_seed: Dict[int, List[Dict[str, Any]]] = {}
    for s in seeds:
        run_out = out if len(seeds) == 1 else os.path.join(out, f"seed{s}")
        per_seed[s] = run_image_demo(out=run_out, seed=s, **kwargs) if image else run_demo(out=run_out, seed=s, **kwargs)
    wall = time.perf_counter() - t0
    summary = summarise_seeds(per_seed)
    spread = f"mean ± sample std over seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else f"seed {seeds[0]}"
    tables = [seed_summary_table(group, f"{_table_title(group)} ({spread})") for group in _result_kinds(summary)]
    for table in tables:
        table.print()
    write_results_json(summary, os.path.join(out, "summary.json"),
                       meta={"seeds": seeds, "wall_time_s": wall, "per_seed": {str(s): r for s, r in per_seed.items()}})
    if page:
        settings = ", ".join(f"{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                             for k, v in kwargs.items() if k != "workers" and v is not None)
        intro = ("Each method pretrains on the synthetic corpus without labels (the supervised upper bound uses them); "
                 "its frozen encoder is then evaluated on held-out videos. "
                 + (f"Settings: {settings}. " if settings else "")
                 + f"Each number is the mean ± sample standard deviation over the {len(seeds)} seeds run; the "
                   "per-seed tables follow. A rerun on another machine (CPU, thread count, library versions) gives "
                   "other numbers within about this spread: they are not meant to be reproduced exactly.")
        per_seed_md = [Table.from_results(group, f"seed {s}: {_table_title(group)}").markdown()
                       for s, rows in per_seed.items() for group in _result_kinds(rows)]
        write_page(page, "avssl demo" + (" --image" if image else ""), command, seeds,
                   [*(t.markdown() for t in tables), "## Per seed", *per_seed_md], intro=intro, wall_s=wall)
    return {"per_seed": per_seed, "summary": summary, "tables": tables, "page": page}


def _result_kinds(rows: Sequence[Mapping[str, Any]]) -> List[List[Mapping[str, Any]]]:
    """The rows in one group per table: the encoders' probes, the audio-visual rows (audio probe and
    retrieval), then the fine-tuning rows; empty groups left out."""
    av = [r for r in rows if "audio_folds_top1" in r]
    ft = [r for r in rows if "labels" in r]
    probes = [r for r in rows if "audio_folds_top1" not in r and "labels" not in r]
    return [g for g in (probes, av, ft) if g]


def _table_title(rows: Sequence[Mapping[str, Any]]) -> str:
    keys = {k for r in rows for k in r}
    if "labels" in keys:
        return ("video encoder fine-tuned end to end with 10% / 100% of the training labels, tested on the held-out "
                "videos")
    if "audio_folds_top1" in keys:
        return "audio-visual methods: audio encoder (5-fold linear probe on all videos), video→audio retrieval"
    if "video_top1" in keys:
        return "frozen video encoder on the held-out videos: linear probe and kNN"
    return "frozen image encoder on the held-out digits: linear probe and kNN"
