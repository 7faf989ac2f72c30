"""The one shape of a benchmark, the registry of them, and what every ``avssl bench NAME`` does.

A benchmark is a :class:`Benchmark`: a ``name``, a one-line ``help``, ``add_arguments(parser)`` for
its options, ``run(args) -> rows`` (the measurement: JSON-able flat dicts) and ``table(rows)`` (an
:class:`~avssl.eval.report.Table` of them). :func:`register` lists it in :data:`BENCHMARKS` by name,
and the CLI builds ``avssl bench NAME`` for each. :func:`execute` is the same for all of them: check
the output paths first, measure, print the table, write the rows as JSON (``--out``) and a results
page (``--page``).
"""
from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Type

from avssl.apps.options import output_file
from avssl.apps.pages import command_line, write_page
from avssl.eval.report import Table
from avssl.registry import Registry
from avssl.utils import atomic_write_text

Rows = List[Dict[str, Any]]


class Benchmark:
    """A benchmark: its options, its measurement and its table. Subclasses set ``name`` and ``help``."""

    name: str = ""
    help: str = ""
    #: The seeds its inputs are drawn with (recorded on a results page).
    seeds: Sequence[int] = (0,)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this benchmark's options (``--out`` and ``--page`` are added for every one)."""

    def run(self, args: argparse.Namespace) -> Rows:
        """Measure; one flat, JSON-able dict per table row."""
        raise NotImplementedError

    def table(self, rows: Sequence[Dict[str, Any]]) -> Table:
        """The rows as a table (its title says what was measured, on what)."""
        raise NotImplementedError

    def exit_code(self, rows: Sequence[Dict[str, Any]]) -> int:
        """The command's exit status after the table and the page are written (non-zero: a check failed)."""
        return 0

    def about(self) -> str:
        """What is measured and against what: the first paragraph of the benchmark's module docstring."""
        doc = inspect.getdoc(sys.modules[type(self).__module__]) or ""
        first = doc.split("\n\n", 1)[0].replace("\n", " ")
        return re.sub(r":\w+:`~?([^`]+)`", r"`\1`", first).replace("``", "`")


#: Every benchmark by name (``avssl bench NAME``).
BENCHMARKS: Registry[Benchmark] = Registry("benchmark")


def register(cls: Type[Benchmark]) -> Type[Benchmark]:
    """Class decorator: list the benchmark in :data:`BENCHMARKS` under its ``name``."""
    BENCHMARKS.register(cls.name)(cls)
    return cls


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark takes: where its rows (JSON) and its results page (Markdown) go."""
    parser.add_argument("--out", default=None, metavar="JSON", help="also write the rows as JSON here")
    parser.add_argument("--page", default=None, metavar="MD",
                        help="also write a results page here (the command, date, machine and the table)")


def execute(bench: Benchmark, args: argparse.Namespace) -> Rows:
    """Run ``bench`` with parsed ``args``: measure, print the table, write ``--out`` and ``--page``.

    The output paths are checked before measuring, so a mistake in them costs no measurement. The page
    records ``args.command_line`` (set by the CLI) or, without it, the benchmark's name.
    """
    out: Optional[str] = getattr(args, "out", None)
    page: Optional[str] = getattr(args, "page", None)
    for path, what in ((out, "--out"), (page, "--page")):
        if path:
            output_file(path, what)
    t0 = time.perf_counter()
    rows = bench.run(args)
    wall = time.perf_counter() - t0
    table = bench.table(rows)
    table.print()
    if out:
        atomic_write_text(out, json.dumps(rows, indent=2) + "\n")
    if page:
        command = getattr(args, "command_line", None) or command_line(["bench", bench.name])
        write_page(page, f"avssl bench {bench.name}", command, bench.seeds,
                   [table.markdown(), f"What is measured: {bench.about()} Options: `avssl bench {bench.name} --help`."],
                   wall_s=wall)
    return rows


def parser_for(bench: Benchmark) -> argparse.ArgumentParser:
    """A stand-alone parser of ``bench``'s options (as ``avssl bench NAME`` takes them)."""
    parser = argparse.ArgumentParser(prog=f"avssl bench {bench.name}", description=bench.help)
    bench.add_arguments(parser)
    add_output_arguments(parser)
    return parser


def run(name: str, argv: Sequence[str] = ()) -> Rows:
    """``avssl bench NAME ARGV...`` from Python: parse ``argv`` with the benchmark's options, execute it."""
    bench = BENCHMARKS.build(name)
    args = parser_for(bench).parse_args(list(argv))
    args.command_line = command_line(["bench", name, *argv])
    return execute(bench, args)
