"""``avssl compare``: every method on the synthetic corpus, same encoder, same budget, one table.

Each entry of :data:`ENTRIES` names a config (``configs/demo/*.yaml`` or ``configs/compare/*.yaml``, all
built on ``configs/demo/base_tiny.yaml``: the ``r2plus1d_tiny`` video encoder on 8×64² clips). Every
entry is trained for the same number of epochs on the same prepared corpus, then its frozen video
encoder is evaluated on the held-out videos by the same linear probe and kNN, beside the same encoder at
random init and a supervised upper bound. With several seeds, each entry (random init included) is
trained and evaluated once per seed and the table gives mean ± std.

Outputs (under ``--out``, and the page where ``--page`` says):

* ``comparison.md``: the table, the set-up, the command that produced it, and the layer-wise probe
  (``res2`` … ``res5``) of one model (``--layerwise``, the temporal-order model by default) against
  random init;
* ``comparison.json``: every per-seed number; ``comparison.png``: linear top-1 per method with the
  seeds' spread.

The comparison is resumable: a finished run (``runs/<entry>_seed<s>/compare_done.json``, same epochs) is
reused, and an interrupted one resumes from its ``last.ckpt``.
"""
from __future__ import annotations

import json
import logging
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from avssl.apps.pages import mean_std_text, summarise
from avssl.eval.report import Table

log = logging.getLogger(__name__)

STAGES = ("res2", "res3", "res4", "res5")


@dataclass(frozen=True)
class Entry:
    """One row of the comparison: a name, its config (a shipped config's name) and its family."""

    name: str
    config: str
    family: str


ENTRIES: Sequence[Entry] = (
    Entry("supervised", "demo/supervised_tiny.yaml", "supervised (upper bound)"),
    Entry("xmodal_nce", "demo/xmodal_nce_tiny.yaml", "audio-visual"),
    Entry("audio_clusters", "demo/audio_clusters_tiny.yaml", "audio-visual"),
    Entry("avid", "demo/avid_tiny.yaml", "audio-visual"),
    Entry("avid_cma", "demo/avid_cma_tiny.yaml", "audio-visual"),
    Entry("simclr", "compare/simclr_tiny.yaml", "two clips of a video"),
    Entry("moco", "compare/moco_tiny.yaml", "two clips of a video"),
    Entry("byol", "compare/byol_tiny.yaml", "two clips of a video"),
    Entry("simsiam", "compare/simsiam_tiny.yaml", "two clips of a video"),
    Entry("barlow_twins", "compare/barlow_twins_tiny.yaml", "two clips of a video"),
    Entry("vicreg", "compare/vicreg_tiny.yaml", "two clips of a video"),
    Entry("swav", "compare/swav_tiny.yaml", "two clips of a video"),
    Entry("temporal_order", "compare/temporal_order_tiny.yaml", "pretext: time"),
    Entry("vcop", "compare/vcop_tiny.yaml", "pretext: time"),
    Entry("tracking_triplet", "compare/tracking_triplet_tiny.yaml", "pretext: tracking"),
    Entry("rotation", "compare/rotation_tiny.yaml", "pretext: space"),
    Entry("jigsaw", "compare/jigsaw_tiny.yaml", "pretext: space"),
    Entry("relative_position", "compare/relative_position_tiny.yaml", "pretext: space"),
    Entry("pirl", "compare/pirl_tiny.yaml", "pretext: space"),
    Entry("avid_cma+temporal_order", "compare/avid_cma_temporal_order_tiny.yaml", "combined"),
)


def entry_names() -> List[str]:
    return [e.name for e in ENTRIES]


def _entries(names: Optional[Sequence[str]]) -> List[Entry]:
    if not names:
        return list(ENTRIES)
    by_name = {e.name: e for e in ENTRIES}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise KeyError(f"unknown comparison entries {unknown}; known: {', '.join(by_name)}")
    return [by_name[n] for n in names]


def _config(name: str, overrides: Sequence[str]) -> Any:
    """A shipped config (``demo/…``, ``compare/…``) with ``overrides``."""
    from avssl.config import load_config, shipped_config

    return load_config(shipped_config(name), list(overrides))


def summary_table(rows: Sequence[Dict[str, Any]]) -> Table:
    """The summary rows (``summary_rows``): linear and kNN top-1 (%, mean ± std over seeds), training time."""
    return Table("linear probe and kNN on frozen video features of the held-out videos",
                 ["method", "family", "linear top-1 (%)", "kNN top-1 (%)", "train (s)"],
                 [[r["method"], r["family"], mean_std_text(r["linear"], 100.0), mean_std_text(r["knn"], 100.0),
                   f"{r['train_s']:.0f}"] for r in rows],
                 align=["l", "l", "r", "r", "r"])


def summary_rows(per_seed: Sequence[Dict[str, Any]], families: Dict[str, str]) -> List[Dict[str, Any]]:
    """Per-seed rows ``{method, seed, protocol, top1, train_s}`` -> one row per method (mean ± std)."""
    order: List[str] = []
    for r in per_seed:
        if r["method"] not in order:
            order.append(r["method"])
    out = []
    for m in order:
        got = [r for r in per_seed if r["method"] == m]
        lin = [r["top1"] for r in got if r["protocol"] == "linear"]
        knn = [r["top1"] for r in got if r["protocol"] == "knn"]
        times = [r["train_s"] for r in got if r["protocol"] == "linear"]
        if not lin or not knn:
            continue
        out.append({"method": m, "family": families.get(m, ""), "linear": summarise(lin), "knn": summarise(knn),
                    "train_s": statistics.fmean(times)})
    return out


def plot_comparison(rows: Sequence[Dict[str, Any]], path: str, chance: Optional[float] = None) -> None:
    """Horizontal bars of linear top-1 per method (error bars: std over seeds), kNN as dots."""
    from avssl.eval.plots import _figure, _save

    fig = _figure(7.0, 0.35 * len(rows) + 1.2)
    ax = fig.add_subplot(1, 1, 1)
    y = list(range(len(rows)))[::-1]
    ax.barh(y, [100 * r["linear"]["mean"] for r in rows], xerr=[100 * r["linear"]["std"] for r in rows],
            color="#4C72B0", alpha=0.8, label="linear probe")
    ax.plot([100 * r["knn"]["mean"] for r in rows], y, "o", color="#DD8452", label="kNN")
    if chance is not None:
        ax.axvline(100 * chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_yticks(y)
    ax.set_yticklabels([r["method"] for r in rows])
    ax.set_xlabel("top-1 on held-out videos (%)")
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)


DONE_FILE = "compare_done.json"


def _finished(run_dir: str, epochs: int) -> Optional[tuple]:
    """(checkpoint, train seconds) of a run this comparison finished before with the same epochs, else None."""
    path = os.path.join(run_dir, DONE_FILE)
    try:
        with open(path) as f:
            done = json.load(f)
    except (OSError, ValueError):
        return None
    if done.get("epochs") != epochs or not os.path.exists(str(done.get("checkpoint"))):
        return None
    return str(done["checkpoint"]), float(done.get("train_s", 0.0))


def run_compare(
    out: str = "compare_out",
    methods: Optional[Sequence[str]] = None,
    seeds: Sequence[int] = (0,),
    epochs: int = 12,
    classes: int = 10,
    per_class: int = 24,
    seconds: float = 4.0,
    layerwise: Optional[str] = "temporal_order",
    page: Optional[str] = None,
    workers: Optional[int] = None,
    command: str = "avssl compare",
    extra_overrides: Sequence[str] = (),
) -> Dict[str, Any]:
    # extra_overrides apply to every training and evaluation config (e.g. a smaller data.crop_size).
    """Train and evaluate every entry (``methods``: a subset of :data:`ENTRIES` by name) per seed; write the page.

    Returns ``{"per_seed": [...], "summary": [...], "layerwise": [...], "page": path}``.
    """
    from rich.console import Console

    from avssl.apps.pages import write_page
    from avssl.apps.synthetic import make_corpus
    from avssl.eval.report import write_results_json
    from avssl.engine import fit
    from avssl.eval import evaluate
    from avssl.utils import atomic_write_text

    console = Console()
    entries = _entries(methods)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not seeds:
        raise ValueError("give at least one seed")
    t_start = time.perf_counter()
    console.rule("corpus")
    corpus = make_corpus(os.path.join(out, "corpus"), classes=classes, per_class=per_class, seconds=seconds,
                         workers=workers)
    per_seed: List[Dict[str, Any]] = []
    checkpoints: Dict[tuple, Optional[str]] = {}
    reused: List[str] = []
    families = {"random init": "baseline", **{e.name: e.family for e in entries}}

    def record(method: str, seed: int, ckpt: Optional[str], train_s: float) -> None:
        eval_cfg = _config("demo/supervised_tiny.yaml", [
            f"data.train={corpus['manifest']}", f"seed={seed}", f"output_dir={os.path.join(out, 'eval')}",
            *extra_overrides])
        for r in evaluate(eval_cfg, ckpt, protocols=("linear", "knn"), modality="video", name=method,
                          progress=False):
            per_seed.append({"method": method, "seed": seed, "protocol": r["protocol"], "top1": r["video_top1"],
                             "top5": r["video_top5"], "train_s": train_s})

    for seed in seeds:
        console.rule(f"seed {seed}: random init")
        record("random init", seed, None, 0.0)
        for e in entries:
            run_dir = os.path.join(out, "runs", f"{e.name.replace('+', '_')}_seed{seed}")
            cfg = _config(e.config, [f"data.train={corpus['manifest']}", f"seed={seed}",
                                     f"trainer.max_epochs={epochs}", f"output_dir={run_dir}",
                                     "trainer.progress_bar=false", *extra_overrides])
            console.rule(f"seed {seed}: {e.name} ({cfg.method.name}, {cfg.model.video.name}, {epochs} epochs)")
            done = _finished(run_dir, epochs)
            if done is not None:  # a finished run of an earlier call: reuse it (the comparison is resumable)
                ckpt, train_s = done
                reused.append(e.name)
                console.print(f"reusing {ckpt} ({train_s:.0f} s of training)")
                checkpoints[(e.name, seed)] = ckpt
                record(e.name, seed, ckpt, train_s)
                continue
            t0 = time.perf_counter()
            try:
                ckpt = fit(cfg, resume=True)
            except Exception as err:  # one failing entry must not lose the others' results
                log.error("%s (seed %d) failed: %s: %s", e.name, seed, type(err).__name__, err)
                per_seed.append({"method": e.name, "seed": seed, "protocol": "failed", "top1": float("nan"),
                                 "top5": float("nan"), "train_s": 0.0, "error": f"{type(err).__name__}: {err}"})
                continue
            train_s = time.perf_counter() - t0
            atomic_write_text(os.path.join(run_dir, DONE_FILE),
                              json.dumps({"checkpoint": ckpt, "epochs": epochs, "train_s": train_s}))
            checkpoints[(e.name, seed)] = ckpt
            record(e.name, seed, ckpt, train_s)

    summary = summary_rows(per_seed, families)
    layer_rows: List[Dict[str, Any]] = []
    if layerwise and (layerwise, seeds[0]) in checkpoints:
        console.rule(f"layer-wise linear probe: {layerwise} vs random init")
        for label, ckpt in (("random init", None), (layerwise, checkpoints[(layerwise, seeds[0])])):
            cfg = _config("demo/supervised_tiny.yaml", [
                f"data.train={corpus['manifest']}", f"seed={seeds[0]}", f"output_dir={os.path.join(out, 'eval')}",
                f"eval.stages=[{','.join(STAGES)}]", *extra_overrides])
            for r in evaluate(cfg, ckpt, protocols=(), modality="video", name=label, progress=False):
                if r["protocol"].startswith("linear@"):
                    layer_rows.append({"encoder": label, "stage": r["protocol"].split("@", 1)[1],
                                       "top1": r["video_top1"]})
    failed = sorted({r["method"] for r in per_seed if r["protocol"] == "failed"})
    total = time.perf_counter() - t_start

    os.makedirs(out, exist_ok=True)
    write_results_json(per_seed, os.path.join(out, "comparison.json"),
                       meta={"seeds": list(seeds), "epochs": epochs, "classes": classes, "per_class": per_class,
                             "wall_time_s": total, "layerwise": layer_rows, "failed": failed})
    png = os.path.join(out, "comparison.png")
    if summary:
        plot_comparison(summary, png, chance=1.0 / classes)
    body = page_body(summary, layer_rows, layerwise, seeds=seeds, epochs=epochs, classes=classes,
                     per_class=per_class, seconds=seconds, failed=failed,
                     png=os.path.basename(png) if summary else None, reused=len(reused))
    title = "Comparison of the self-supervised methods on the synthetic corpus"
    page_path = page or os.path.join(out, "comparison.md")
    text = write_page(page_path, title, command, seeds, body, wall_s=total)
    if page:
        atomic_write_text(os.path.join(out, "comparison.md"), text)
        if summary:
            import shutil

            dst = os.path.join(os.path.dirname(os.path.abspath(page)), "comparison.png")
            if os.path.abspath(dst) != os.path.abspath(png):
                shutil.copyfile(png, dst + ".tmp")
                os.replace(dst + ".tmp", dst)
    console.print(text)
    console.print(f"page: {page_path}; numbers: {os.path.join(out, 'comparison.json')}")
    return {"per_seed": per_seed, "summary": summary, "layerwise": layer_rows, "page": page_path}


def page_body(summary: Sequence[Dict[str, Any]], layer_rows: Sequence[Dict[str, Any]], layerwise: Optional[str],
              seeds: Sequence[int], epochs: int, classes: int, per_class: int, seconds: float,
              failed: Sequence[str] = (), png: Optional[str] = None, reused: int = 0) -> List[str]:
    """The page's blocks below its head (:func:`avssl.apps.pages.render_page`): set-up, the comparison
    table, the layer-wise table."""
    setup = "\n".join([
        f"- **Corpus:** `avssl synth`: {classes} classes × {per_class} videos × {seconds:g} s, prepared to 80 px; "
        f"held-out videos are the val split. Chance is {100 / classes:.0f}%.",
        f"- **Encoder and budget:** every method trains the same `r2plus1d_tiny` video encoder on 8×64² clips "
        f"for {epochs} epochs (configs under `configs/demo/` and `configs/compare/`). No labels are used, "
        "except by the supervised upper bound.",
        "- **Evaluation:** frozen video features of 2 clips per video; a linear probe and a kNN classifier "
        "(k = 20) trained on the train split, top-1 per held-out video.",
        "- **Numbers:** " + ("mean ± sample standard deviation over the seeds; " if len(seeds) > 1 else "one seed; ")
        + "a rerun on another machine gives other numbers within about the seeds' spread, not these exactly."
        + (f" {reused} finished runs of an earlier call were reused (their training time is in the table)."
           if reused else ""),
    ])
    blocks = [setup, summary_table(summary).markdown()]
    if png:
        blocks.append(f"![linear top-1 per method]({png})")
    if failed:
        blocks.append(f"Failed to train (see the log): {', '.join(failed)}.")
    if layer_rows:
        encs = list(dict.fromkeys(r["encoder"] for r in layer_rows))
        stages = list(dict.fromkeys(r["stage"] for r in layer_rows))
        cells = []
        for enc in encs:
            vals = {r["stage"]: r["top1"] for r in layer_rows if r["encoder"] == enc}
            cells.append([enc, *(f"{100 * vals[s]:.1f}" for s in stages)])
        blocks += [f"## Layer-wise linear probe: {layerwise}",
                   "Linear probe on each stage's globally pooled features (seed "
                   f"{seeds[0]}), the same encoder at random init beside it.",
                   Table(f"linear top-1 (%) per stage, seed {seeds[0]}", ["encoder", *stages], cells).markdown()]
    return blocks
