"""The official-splits protocol of UCF-101 and HMDB-51 (``avssl finetune --splits 1 2 3``): fine-tune once per
split, test each run on its split's test list, report every split and the mean ± standard deviation over them
(the papers' headline numbers are the mean over splits 1-3).

Split ``k`` of a config is the config with ``data.fold = k``, its UCF/HMDB split files swapped for split ``k``'s
(``trainlist01.txt`` -> ``trainlist0k.txt``; a folder of split files is read for fold ``k``) and ``output_dir``
``OUTPUT_DIR/split<k>``. Each split's run resumes from its own ``last.ckpt``; once tested, its row is kept in
``split<k>/test/results.json`` (with ``predictions.csv`` and ``confusion.png``), and a rerun of the same config
skips it. The table's rows and the mean and standard deviation go to ``OUTPUT_DIR/splits.json``.
"""
from __future__ import annotations

import json
import logging
import os
import statistics
from typing import Any, Dict, List, Mapping, Optional, Sequence

from avssl.config import ConfigError

log = logging.getLogger(__name__)

#: The numbers averaged over splits.
SUMMARY_KEYS = ("video_top1", "video_top5", "mean_class_accuracy", "clip_top1")
RESULTS = "results.json"


def split_config(cfg: Any, k: int) -> Any:
    """``cfg`` for official split ``k`` (see the module docstring)."""
    from avssl.data.manifest import fold_path
    from avssl.engine import with_overrides
    from avssl.errors import PathError

    d = cfg.data
    changes: Dict[str, Any] = {"data.fold": int(k), "output_dir": os.path.join(cfg.output_dir, f"split{k}")}
    for key in ("train", "val"):
        src = getattr(d, key)
        if src is None:
            continue
        try:
            changes[f"data.{key}"] = fold_path(src, int(k))
        except ValueError:
            raise ConfigError(f"--splits needs UCF-101/HMDB-51 split files: data.{key}={src} is neither a split "
                              "file (trainlist01.txt, testlist01.txt, {class}_test_split1.txt) nor a folder of them"
                              ) from None
        except FileNotFoundError as e:
            raise PathError(f"data.{key}: {e}") from None
    return with_overrides(cfg, **changes)


def _stored_result(cfg: Any) -> Optional[Dict[str, Any]]:
    """The row of a split tested earlier with this very config, or None."""
    from avssl.config import to_dict

    path = os.path.join(cfg.output_dir, "test", RESULTS)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    same = doc.get("meta", {}).get("config") == json.loads(json.dumps(to_dict(cfg)))
    return doc["rows"][0] if same and doc.get("rows") else None


def finetune_split(cfg: Any, k: int, resume: bool = True) -> Dict[str, Any]:
    """Fine-tune and test split ``k`` of ``cfg`` (skipped when already done with this config); its row."""
    from avssl.config import to_dict
    from avssl.engine import fit, load_method
    from avssl.eval.report import write_results_json
    from avssl.eval.testing import multiview_test

    scfg = split_config(cfg, k)
    done = _stored_result(scfg) if resume else None
    if done is not None:
        log.info("split %d: finished earlier (%s); skipped", k, os.path.join(scfg.output_dir, "test", RESULTS))
        return done
    log.info("split %d: fine-tuning in %s", k, scfg.output_dir)
    last = fit(scfg, resume=resume)
    out = os.path.join(scfg.output_dir, "test")
    row = {"split": int(k), **multiview_test(load_method(last), scfg, out_dir=out, name=f"split {k}")}
    write_results_json([row], os.path.join(out, RESULTS), meta={"config": to_dict(scfg), "checkpoint": last})
    return row


def summarise_splits(rows: Sequence[Mapping[str, Any]]) -> Dict[str, Dict[str, float]]:
    """``{"mean": {key: ...}, "std": {key: ...}}`` over the rows of :data:`SUMMARY_KEYS`: the mean and the sample
    standard deviation (n - 1 in the denominator; 0 for one split)."""
    mean = {k: statistics.fmean(float(r[k]) for r in rows) for k in SUMMARY_KEYS}
    std = {k: statistics.stdev(float(r[k]) for r in rows) if len(rows) > 1 else 0.0 for k in SUMMARY_KEYS}
    return {"mean": mean, "std": std}


def finetune_splits(cfg: Any, splits: Sequence[int], resume: bool = True) -> Dict[str, Any]:
    """:func:`finetune_split` for each of ``splits``, then their summary (also in ``OUTPUT_DIR/splits.json``).

    Returns ``{"rows": [row per split], "mean": {...}, "std": {...}, "path": splits.json}``.
    """
    from avssl.eval.report import write_results_json

    if not splits or len(set(splits)) != len(splits):
        raise ConfigError(f"--splits: give one or more different split numbers, got {list(splits)}")
    for k in splits:
        split_config(cfg, k)  # every split's files exist before the first is trained
    rows = [finetune_split(cfg, k, resume=resume) for k in splits]
    summary = summarise_splits(rows)
    path = os.path.join(cfg.output_dir, "splits.json")
    keep = ("split", "views", *SUMMARY_KEYS, "num_videos")
    write_results_json([{k: r[k] for k in keep if k in r} for r in rows], path,
                       meta={"splits": list(splits), **summary})
    return {"rows": rows, **summary, "path": path}


def splits_table(result: Mapping[str, Any], title: str = "fine-tuning, per split") -> Any:
    """The rows of :func:`finetune_splits` and a last row of mean ± std, accuracies in %."""
    from avssl.eval.report import Table

    def pct(v: float) -> str:
        return f"{100 * v:.2f}"

    cells: List[List[str]] = [[str(r["split"]), r.get("views", ""), *(pct(r[k]) for k in SUMMARY_KEYS),
                               str(r.get("num_videos", ""))] for r in result["rows"]]
    cells.append(["mean ± std", "", *(f"{pct(result['mean'][k])} ± {pct(result['std'][k])}" for k in SUMMARY_KEYS),
                  ""])
    columns = ["split", "views", "video top-1 (%)", "video top-5 (%)", "mean class acc. (%)", "clip top-1 (%)",
               "videos"]
    return Table(title, columns, cells, align=["l", "l", "r", "r", "r", "r", "r"],
                 caption="std: sample standard deviation over the splits")


__all__ = ["SUMMARY_KEYS", "finetune_split", "finetune_splits", "split_config", "splits_table", "summarise_splits"]
