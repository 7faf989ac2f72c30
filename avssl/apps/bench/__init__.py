"""Benchmarks: each measures avssl and a reference side by side in the same run (``avssl bench NAME``).

Every benchmark has the shape of :class:`~avssl.apps.bench.base.Benchmark` and is listed by name in
:data:`BENCHMARKS`: ``data`` (decode + augment), ``prep`` (corpus preparation), ``models`` (encoder
training steps), ``cma`` (the CMA positive-set search), ``losses`` (the self-supervised objectives).
``run(name, argv)`` is ``avssl bench NAME ARGV...`` from Python.
"""
from avssl.apps.bench import cma, data, losses, models, prep  # noqa: F401  (each registers its benchmark)
from avssl.apps.bench.base import BENCHMARKS, Benchmark, add_output_arguments, execute, parser_for, register, run

__all__ = ["BENCHMARKS", "Benchmark", "add_output_arguments", "execute", "parser_for", "register", "run"]
