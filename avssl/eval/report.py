"""Result tables: a rich table on the console and the same rows as JSON.

A row is a flat dict such as ``{"encoder": "random init", "protocol": "linear", "top1": 0.31, "top5": 0.62,
"mean_class_acc": 0.30, "wall_s": 12.5}``. Accuracy-like keys (``top1``, ``top5``, ``*_top1``, ``*_top5``,
``mean_class_acc``, ``mean_class_accuracy``, ``*accuracy``, ``*_acc``) hold fractions in [0, 1] and are
shown as percentages with two decimals; ``wall_s`` and other ``*_s`` keys as seconds. Columns are the
union of the rows' keys, in first-seen order; a missing or NaN value shows as "–".
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from avssl.utils import atomic_write_text

PathLike = Union[str, "os.PathLike[str]"]


def is_fraction_key(key: str) -> bool:
    """Whether ``key`` names an accuracy held as a fraction (shown as a percentage)."""
    k = key.lower().rsplit("/", 1)[-1]
    return (
        k in ("top1", "top5", "acc", "accuracy")
        or k.endswith(("_top1", "_top5", "_acc", "accuracy"))
        or k.startswith("mean_class_acc")
    )


def _plain(value: Any) -> Any:
    """Tensors / numpy scalars -> Python values; NaN and ±inf -> None (JSON has no NaN)."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    return value


def format_value(key: str, value: Any) -> str:
    value = _plain(value)
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        if is_fraction_key(key):
            return f"{100.0 * value:.2f}"
        if key == "wall_s" or key.endswith("_s"):
            return f"{value:.1f}"
        if isinstance(value, float):
            return f"{value:.4g}"
    return str(value)


def _header(key: str) -> str:
    if is_fraction_key(key):
        return f"{key} (%)"
    if key == "wall_s" or key.endswith("_s"):
        return f"{key[:-2] or key} (s)"
    return key


def _columns(rows: Sequence[Mapping[str, Any]]) -> List[str]:
    cols: List[str] = []
    for row in rows:
        for k in row:
            if k not in cols:
                cols.append(k)
    return cols


def print_results_table(rows: Sequence[Mapping[str, Any]], title: str = "results", console: Optional[Any] = None):
    """Print ``rows`` as a rich table (percentages for accuracies) and return the ``rich.table.Table``."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    cols = _columns(rows)
    for c in cols:
        numeric = any(isinstance(_plain(r.get(c)), (int, float)) and not isinstance(r.get(c), bool) for r in rows)
        table.add_column(_header(c), justify="right" if numeric else "left")
    cells = [[format_value(c, row.get(c)) for c in cols] for row in rows]
    for row in cells:
        table.add_row(*row)
    console = console or Console()
    # Logs and CI have no terminal (80 columns by default): print at full width there rather than
    # squeezing headers and numbers into ellipses.
    needed = 4 + sum(3 + max([len(_header(c))] + [len(r[i]) for r in cells]) for i, c in enumerate(cols))
    if not console.is_terminal and console.width < needed:
        console = Console(width=needed, file=console.file, force_terminal=False)
    console.print(table)
    return table


def write_results_json(
    rows: Sequence[Mapping[str, Any]], path: PathLike, meta: Optional[Mapping[str, Any]] = None
) -> None:
    """Write ``{"rows": rows, "meta": meta}`` to ``path`` atomically (fractions stay fractions; NaN ->
    null; tensors and numpy values -> plain numbers)."""
    doc: Dict[str, Any] = {"rows": [_plain(dict(r)) for r in rows]}
    if meta is not None:
        doc["meta"] = _plain(dict(meta))
    atomic_write_text(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")
