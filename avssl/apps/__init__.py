"""The application built on the avssl library: the commands that are not a library's job.

``demo`` and ``compare`` (end-to-end runs on the synthetic corpus), ``bench`` (benchmarks against
reference implementations), ``synthetic`` (the generated audio-visual corpus used by the demo, the
benchmarks and the tests) and ``pages`` (the Markdown results pages they write).

The library (``avssl.data``, ``models``, ``losses``, ``methods``, ``eval``, ``memory``, ``config``,
``engine``, …) never imports this package.
"""
