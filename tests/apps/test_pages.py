"""Results pages and the one benchmark interface: ``avssl bench NAME --out --page``, ``avssl demo --seeds --page``.

A page's head must say the exact command, the date, the machine and the seeds; its numbers must be the
ones the command measured (the JSON it wrote beside them), and over several seeds mean ± sample std of
the per-seed values, which the page also lists.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import shlex
import statistics
import subprocess
from pathlib import Path
from typing import List

import pytest
import torch

from avssl.apps.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _head(text: str) -> dict:
    """The page's ``- **key:** value`` lines, and its command (the first fenced block)."""
    fields = dict(re.findall(r"^- \*\*([a-z ]+):\*\* (.*)$", text, flags=re.M))
    fields["command"] = text.split("```\n", 1)[1].split("\n```", 1)[0]
    return fields


def _table(text: str, title_start: str) -> List[List[str]]:
    """The cells of the Markdown table under the bold title that starts with ``title_start``."""
    block = text.split(f"**{title_start}", 1)[1].split("\n\n", 2)[1]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in block.splitlines()[2:]]


def _expected_commit() -> str:
    proc = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    return f"git {proc.stdout.strip()}" if proc.returncode == 0 else "not from a git checkout"


def _check_machine(head: dict) -> None:
    when = dt.datetime.strptime(head["date"], "%Y-%m-%d %H:%M UTC").replace(tzinfo=dt.timezone.utc)
    assert abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds()) < 600
    assert f"{len(os.sched_getaffinity(0))} CPUs" in head["machine"]
    assert ("no GPU" in head["machine"]) == (not torch.cuda.is_available())
    assert f"torch {torch.__version__}" in head["software"] and "avssl 0.1.0" in head["software"]
    assert _expected_commit() in head["software"]


def test_bench_writes_its_rows_and_a_page_with_command_machine_and_table(tmp_path, capsys):
    out, page = tmp_path / "cma.json", tmp_path / "docs" / "results" / "cma.md"
    argv = ["bench", "cma", "--sizes", "300", "500", "--dim", "16", "--k", "5", "--chunk-size", "64",
            "--naive-max-n", "300", "--no-memory", "--out", str(out), "--page", str(page)]
    assert main(argv) == 0
    rows = json.loads(out.read_text())
    assert [r["n"] for r in rows] == [300, 500]
    text = page.read_text()
    assert text.startswith("# avssl bench cma\n")
    head = _head(text)
    assert head["command"] == shlex.join(["avssl", *argv])
    assert head["seeds"] == "0"
    _check_machine(head)
    cells = _table(text, "CMA positive search on CPU")
    assert [c[0] for c in cells] == ["300", "500"]
    for r, c in zip(rows, cells):  # the page shows the numbers of the JSON, as the console did
        assert c[1] == f"{r['chunked_s']:.2f}" and c[3] == f"{r['chunked_gflops']:.1f}"
    assert cells[0][-1] == "yes" if rows[0]["identical"] else cells[0][-1].startswith("same sets in ")
    assert cells[1][-1] == rows[1]["naive_note"] and cells[1][-1].startswith("skipped")
    assert "CMA positive search on CPU" in capsys.readouterr().out
    assert sorted(os.listdir(page.parent)) == ["cma.md"]  # written atomically: no temporary file left


def test_every_benchmark_has_the_same_shape_and_options():
    from avssl.apps.bench import BENCHMARKS, Benchmark
    from avssl.apps.cli import build_parser

    assert BENCHMARKS.names() == ["cma", "data", "gpu", "kmeans", "losses", "models", "prep", "probe"]
    parser = build_parser()
    for name in BENCHMARKS.names():
        bench = BENCHMARKS.build(name)
        assert isinstance(bench, Benchmark) and bench.name == name and bench.help
        for method in ("add_arguments", "run", "table"):
            assert getattr(type(bench), method) is not getattr(Benchmark, method), (name, method)
        args = parser.parse_args(["bench", name, "--out", "r.json", "--page", "p.md"])
        assert (args.out, args.page) == ("r.json", "p.md")
        assert type(args.func.args[0]) is type(bench)  # the CLI runs the registered benchmark


def test_a_bad_page_path_stops_a_benchmark_before_it_measures(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    rc = main(["bench", "cma", "--sizes", "300", "--page", str(tmp_path / "file" / "p.md"), "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("avssl: error: --page's folder ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_demo_over_two_seeds_states_mean_and_std_and_keeps_each_seed(tmp_path):
    out, page = tmp_path / "out", tmp_path / "docs" / "demo.md"
    argv = ["demo", "--out", str(out), "--seeds", "0", "1", "--classes", "2", "--per-class", "12", "--seconds", "1",
            "--size", "32", "--epochs", "1", "--workers", "1", "--methods", "avid_cma", "--page", str(page)]
    assert main(argv) == 0
    per_seed = {s: json.loads((out / f"seed{s}" / "results.json").read_text())["rows"] for s in (0, 1)}
    text = page.read_text()
    head = _head(text)
    assert head["command"] == shlex.join(["avssl", *argv]) and head["seeds"] == "0, 1"
    _check_machine(head)
    assert "not meant to be reproduced exactly" in text

    def probe(s: int, encoder: str, protocol: str) -> dict:
        return next(r for r in per_seed[s] if r.get("encoder") == encoder and r.get("protocol") == protocol)

    summary = _table(text, "frozen video encoder on the held-out videos: linear probe and kNN (mean ± sample std")
    assert [(c[0], c[1]) for c in summary] == [(e, p) for e in ("random init", "avid_cma", "supervised (upper bound)")
                                               for p in ("linear", "knn")]
    for cells in summary:
        a, b = (probe(s, cells[0], cells[1])["video_top1"] for s in (0, 1))
        mean, std = (a + b) / 2, abs(a - b) / math.sqrt(2)  # sample std of two values
        assert cells[2] == f"{100 * mean:.1f} ± {100 * std:.1f}", (cells, a, b)
    av = _table(text, "audio-visual methods")
    folds = [r["audio_folds_top1"] for s in (0, 1) for r in per_seed[s] if r.get("encoder") == "avid_cma" and "audio_folds_top1" in r]
    got = next(c for c in av if c[0] == "avid_cma")
    assert f"{100 * statistics.fmean(folds):.1f} ± {100 * statistics.stdev(folds):.1f}" in got
    for s in (0, 1):  # each seed's own table, with its own values
        cells = _table(text, f"seed {s}: frozen video encoder")
        assert [c[2] for c in cells] == [f"{100 * probe(s, c[0], c[1])['video_top1']:.2f}" for c in cells]
    summary_json = json.loads((out / "summary.json").read_text())
    assert summary_json["meta"]["seeds"] == [0, 1] and set(summary_json["meta"]["per_seed"]) == {"0", "1"}


def test_demo_refuses_repeated_seeds_before_any_work(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path / "out"), "--seeds", "3", "3"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == "avssl: error: --seeds: give one or more different seeds, got [3, 3]"
    assert not (tmp_path / "out").exists()
