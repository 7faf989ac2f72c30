"""Benchmarks: each measures avssl (and, where there is one, a reference side by side) in the same run
(``avssl bench NAME``).

Every benchmark has the shape of :class:`~avssl.apps.bench.base.Benchmark` and is listed by name in
:data:`BENCHMARKS`: ``data`` (decode + augment), ``prep`` (corpus preparation), ``models`` (encoder
training steps), ``cma`` (the CMA positive-set search), ``losses`` (the self-supervised objectives),
``kmeans`` (clustering, against scikit-learn), ``probe`` (the linear probe at Kinetics size) and ``gpu`` (the
GPU code paths, ``make gpu-check``). ``run(name, argv)`` is ``avssl bench NAME ARGV...`` from Python.
"""
from avssl.apps.bench import cma, data, gpu, kmeans, losses, models, prep, probe  # noqa: F401  (each registers itself)
from avssl.apps.bench.base import BENCHMARKS, Benchmark, add_output_arguments, execute, parser_for, register, run

__all__ = ["BENCHMARKS", "Benchmark", "add_output_arguments", "execute", "parser_for", "register", "run"]
