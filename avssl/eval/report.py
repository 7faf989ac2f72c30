"""Result tables: a rich table on the console, a Markdown table on a results page, the rows as JSON.

A row is a flat dict such as ``{"encoder": "random init", "protocol": "linear", "top1": 0.31, "top5": 0.62,
"mean_class_acc": 0.30, "wall_s": 12.5}``. Accuracy-like keys (``top1``, ``top5``, ``*_top1``, ``*_top5``,
``mean_class_acc``, ``mean_class_accuracy``, ``*accuracy``, ``*_acc``) and recalls (``r@K``, ``*_r@K``) hold
fractions in [0, 1] and are
shown as percentages with two decimals; ``wall_s`` and other ``*_s`` keys as seconds. Columns are the
union of the rows' keys, in first-seen order; a missing or NaN value shows as "–".

:class:`Table` holds formatted cells (from such rows, or built by a command such as a benchmark) and
renders them both ways.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from avssl.utils import atomic_write_text

PathLike = Union[str, "os.PathLike[str]"]


def is_fraction_key(key: str) -> bool:
    """Whether ``key`` names an accuracy held as a fraction (shown as a percentage)."""
    k = key.lower().rsplit("/", 1)[-1]
    return (
        k in ("top1", "top5", "acc", "accuracy")
        or k.endswith(("_top1", "_top5", "_acc", "accuracy"))
        or k.startswith("mean_class_acc")
        or re.fullmatch(r"(\w+_)?r@\d+", k) is not None  # recall at k (retrieval), e.g. v2a_r@5
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


def column_header(key: str) -> str:
    """The column title of ``key``: accuracies get "(%)", seconds "(s)"."""
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


def result_cells(rows: Sequence[Mapping[str, Any]]) -> Tuple[List[str], List[List[str]], List[str]]:
    """(headers, formatted cells, alignment per column) of result rows: the union of their keys in
    first-seen order, accuracies as percentages; numeric columns right-aligned."""
    cols = _columns(rows)
    align = ["r" if any(isinstance(_plain(r.get(c)), (int, float)) and not isinstance(r.get(c), bool) for r in rows)
             else "l" for c in cols]
    return [column_header(c) for c in cols], [[format_value(c, row.get(c)) for c in cols] for row in rows], align


def print_results_table(rows: Sequence[Mapping[str, Any]], title: str = "results", console: Optional[Any] = None):
    """Print ``rows`` as a rich table (percentages for accuracies) and return the ``rich.table.Table``."""
    return Table.from_results(rows, title).print(console)


MISSING = "—"


def fmt(value: Optional[float], spec: str, suffix: str = "") -> str:
    """``value`` formatted by ``spec`` (and ``suffix``), or "—" for None."""
    return MISSING if value is None else f"{value:{spec}}{suffix}"


@dataclass(frozen=True)
class Table:
    """A titled table of text cells, printed on the console (rich) and written on a results page
    (Markdown) from the same cells, so both show the same numbers.

    ``align`` holds ``"l"`` or ``"r"`` per column (default: the first column left, the others right);
    ``caption`` goes under the table, ``notes`` are lines after it.
    """

    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[str]]
    align: Sequence[str] = ()
    caption: str = ""
    notes: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.title!r}: a row has {len(row)} cells for {len(self.columns)} columns")

    @classmethod
    def from_results(cls, rows: Sequence[Mapping[str, Any]], title: str, **kwargs: Any) -> "Table":
        """Result rows (flat dicts, see the module docstring) as a table."""
        columns, cells, align = result_cells(rows)
        return cls(title, columns, cells, align=kwargs.pop("align", align), **kwargs)

    def _align(self) -> Tuple[str, ...]:
        if self.align:
            return tuple(self.align)
        return tuple("l" if i == 0 else "r" for i in range(len(self.columns)))

    def markdown(self) -> str:
        """The table as Markdown: its title in bold above it, caption and notes below."""
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

        rule = "|" + "|".join("---:" if a == "r" else "---" for a in self._align()) + "|"
        parts = [f"**{self.title}**", "", line(self.columns), rule, *(line(r) for r in self.rows)]
        if self.caption:
            parts += ["", self.caption.replace("\n", " ")]
        if self.notes:
            parts += ["", *(f"- {n}" for n in self.notes)]
        return "\n".join(parts)

    def rich(self) -> Any:
        """The table as a ``rich.table.Table``."""
        from rich.table import Table as RichTable

        table = RichTable(title=self.title, caption=self.caption or None)
        for name, a in zip(self.columns, self._align()):
            table.add_column(name, justify="right" if a == "r" else "left")
        for row in self.rows:
            table.add_row(*row)
        return table

    def print(self, console: Optional[Any] = None) -> Any:
        """Print the table (then its notes); returns the ``rich.table.Table`` printed."""
        from rich.console import Console

        console = console or Console()
        # Logs and CI have no terminal (80 columns by default): print at full width there rather than
        # squeezing headers and numbers into ellipses.
        widths = [max([len(line) for line in c.split("\n")] + [len(r[i]) for r in self.rows])
                  for i, c in enumerate(self.columns)]
        needed = 4 + sum(3 + w for w in widths)
        if not console.is_terminal and console.width < needed:
            console = Console(width=needed, file=console.file, force_terminal=False)
        table = self.rich()
        console.print(table)
        for note in self.notes:
            console.print(note, markup=False)
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
