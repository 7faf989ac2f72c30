"""Deprecated: the jobs that lived here moved, and these names are kept for one release.

``fit``, ``load_method``, ``with_overrides``, ``incompatible_keys`` -> :mod:`avssl.engine`;
``evaluate``, ``encoder_from`` -> :mod:`avssl.eval`; ``cma_figure`` -> :mod:`avssl.eval.plots`.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional, Sequence

from avssl.engine import (CONFIG_FILE, RESUMABLE_CHANGES, RUN_ENTRIES, fit, incompatible_keys, load_method,
                          with_overrides)
from avssl.eval.plots import cma_figure
from avssl.eval.protocols import encoder_from
from avssl.eval.protocols import evaluate as _evaluate

warnings.warn("avssl.runner is deprecated: import fit, load_method and with_overrides from avssl.engine, evaluate "
              "and encoder_from from avssl.eval, cma_figure from avssl.eval.plots", DeprecationWarning, stacklevel=2)


def evaluate(cfg: Any, checkpoint: Optional[str], protocols: Sequence[str] = ("linear", "knn"),
             modality: Optional[str] = None, name: Optional[str] = None, out_dir: Optional[str] = None,
             plot: bool = False, progress: bool = True) -> List[Dict[str, Any]]:
    """:func:`avssl.eval.evaluate` with this module's old default protocols (linear and kNN)."""
    return _evaluate(cfg, checkpoint, protocols=protocols, modality=modality, name=name, out_dir=out_dir, plot=plot,
                     progress=progress)


__all__ = ["CONFIG_FILE", "RESUMABLE_CHANGES", "RUN_ENTRIES", "cma_figure", "encoder_from", "evaluate", "fit",
           "incompatible_keys", "load_method", "with_overrides"]
