"""Full fine-tuning: a pretrained encoder + classifier trained end to end, then multi-view testing."""
from __future__ import annotations

import os
import time
from typing import Any, Dict, Optional


def finetune_and_evaluate(cfg: Any, checkpoint: Optional[str], name: Optional[str] = None,
                          out_dir: Optional[str] = None) -> Dict[str, Any]:
    """Fine-tune from ``checkpoint`` (``None``: from scratch) with the supervised method of ``cfg`` (resuming a run
    already in ``output_dir``), then test on the val part with ``data.test_clips`` × ``data.test_crops`` views per
    video aggregated by ``eval.aggregation`` (:func:`avssl.eval.testing.multiview_test`; with ``out_dir`` its
    predictions and confusion matrix go there). Returns a result row."""
    from avssl.engine import fit, load_method, with_overrides
    from avssl.eval.testing import multiview_test

    if cfg.method.name != "supervised":
        raise ValueError(f"fine-tuning needs a config whose method is 'supervised', not {cfg.method.name!r}")
    if checkpoint:
        cfg = with_overrides(cfg, **{"method.init_checkpoint": checkpoint})
    t0 = time.perf_counter()
    last = fit(cfg, resume=True)
    method = load_method(last)
    name = name or (os.path.basename(checkpoint) if checkpoint else "scratch")
    row = multiview_test(method, cfg, out_dir=out_dir, name=name)
    return {**row, "protocol": "finetune", "wall_s": time.perf_counter() - t0}
