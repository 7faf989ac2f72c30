"""The run's report: the JSON document, the summary table, and the progress bar.

:func:`build_report` turns the workers' results into the report (counts, bad files, corrections,
warnings, settings, times) and the manifest rows; :func:`write_outputs` writes the manifest, the audio
statistics and the report; :func:`print_summary` shows a report to a person.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from avssl.data.manifest import ManifestRow, write_manifest
from avssl.data.prep.errors import writing
from avssl.utils import atomic_write_text


def build_report(
    jobs: Sequence[Dict[str, Any]],
    results: Dict[int, Dict[str, Any]],
    missing: Sequence[Dict[str, str]],
    settings: Dict[str, Any],
    src: str,
    out: Optional[str],
    t_start: float,
) -> Tuple[Dict[str, Any], List[ManifestRow], Optional[Tuple[Any, int]]]:
    """(report, manifest rows sorted by path, (merged audio statistics, files) or None) of a finished run.

    ``results[i]`` is job ``i``'s result (a job without one counts as bad: "not processed");
    ``missing`` lists the sources named by the CSV that do not exist (already bad-file entries).
    """
    check_only = bool(settings["check_only"])
    bad = list(missing)
    warnings: List[Dict[str, str]] = []
    corrected: List[Dict[str, Any]] = []
    manifest_rows: List[ManifestRow] = []
    audio_acc = None
    n_audio = 0
    for i, job in enumerate(jobs):
        res = results.get(i, {"status": "bad", "reason": "not processed"})
        if res["status"] == "bad":
            bad.append({"path": job["source"], "reason": res.get("reason", "unknown error")})
            continue
        for w in res.get("warnings", []):
            warnings.append({"path": job["source"], "warning": w})
        if res.get("corrected"):
            corrected.append({"path": job["source"], **res["corrected"]})
        if check_only:
            manifest_rows.append(ManifestRow(path=job["source"], source=job["source"], **_info_fields(res["info"])))
            continue
        manifest_rows.append(ManifestRow(**res["row"]))
        if res.get("audio_stats") is not None:
            n_audio += 1
            audio_acc = res["audio_stats"] if audio_acc is None else audio_acc.merge(res["audio_stats"])
    manifest_rows.sort(key=lambda r: r.path)
    bad.sort(key=lambda b: b["path"])
    ok = sum(1 for r in results.values() if r["status"] == "ok")
    skipped = sum(1 for r in results.values() if r["status"] == "skipped")
    wall = time.perf_counter() - t_start
    report: Dict[str, Any] = {
        "mode": "check" if check_only else "prepare",
        "src": src,
        "out": out,
        "counts": {
            "total": len(jobs) + len(missing),
            "ok": ok,
            "skipped_existing": skipped,
            "bad": len(bad),
            "no_audio": sum(1 for r in manifest_rows if r.has_audio is False),
        },
        "bad_files": bad,
        "corrected": sorted(corrected, key=lambda c: c["path"]),
        "warnings": warnings,
        "settings": settings,
        "duration_s": float(sum(r.duration or 0.0 for r in manifest_rows)),
        "wall_time_s": wall,
        "videos_per_s": ((ok + skipped) / wall) if wall > 0 else 0.0,
    }
    if check_only:
        report["files"] = [
            {"path": r.path, "duration": r.duration, "fps": r.fps, "width": r.width, "height": r.height, "has_audio": r.has_audio}
            for r in manifest_rows
        ]
    return report, manifest_rows, (audio_acc, n_audio) if audio_acc is not None else None


def write_outputs(report: Dict[str, Any], manifest_rows: Sequence[ManifestRow],
                  audio_stats: Optional[Tuple[Any, int]], report_path: Optional[str]) -> Dict[str, Any]:
    """Write what a run leaves besides the media: ``manifest.csv``, ``audio_stats.json`` (when asked
    for), ``prep_report.json`` (and a copy at ``report_path``); a check writes ``report_path`` only.
    Returns the report with those paths added."""
    if report["mode"] == "check":
        if report_path:
            report["report"] = report_path
            _write_json(report_path, report)
        return report
    out = report["out"]
    manifest_path = os.path.join(out, "manifest.csv")
    with writing(manifest_path):
        write_manifest(manifest_rows, manifest_path)
    report["manifest"] = manifest_path
    if report["settings"]["audio_stats"]:
        stats_path = os.path.join(out, "audio_stats.json")
        if audio_stats:
            acc, n_audio = audio_stats
            acc.meta.update({"feature": "LogMelSpectrogram", "sample_rate": report["settings"]["audio_rate"],
                             "files": n_audio})
            with writing(stats_path):
                acc.save(stats_path)
            report["audio_stats"] = stats_path
            report["audio_stats_files"] = n_audio
        else:
            report["audio_stats"] = None
    report["report"] = os.path.join(out, "prep_report.json")
    for path in dict.fromkeys(p for p in (report["report"], report_path) if p):
        _write_json(path, report)
    return report


def _write_json(path: str, report: Dict[str, Any]) -> None:
    with writing(path):
        atomic_write_text(path, json.dumps(report, indent=2) + "\n")


def _info_fields(info: Dict[str, Any]) -> Dict[str, Any]:
    return {k: info[k] for k in ("duration", "fps", "width", "height", "num_frames", "has_audio", "audio_rate")}


class ProgressBar:
    """A rich progress bar refreshed from the main loop (no refresh thread in a forking process)."""

    def __init__(self, total: int, enabled: bool, title: str) -> None:
        self.total, self.enabled, self.title = total, enabled, title
        self.progress = None
        self.task = None

    def __enter__(self) -> "ProgressBar":
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                auto_refresh=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(self.title, total=self.total)
            self.progress.refresh()
        return self

    def advance(self, counts: Dict[str, int]) -> None:
        if self.progress is not None:
            skipped = f" · skipped {counts['skipped_existing']}" if self.title == "prep" else ""
            desc = f"{self.title} ok {counts['ok']}{skipped} · bad {counts['bad']}"
            self.progress.update(self.task, advance=1, description=desc)
            self.progress.refresh()

    def refresh(self) -> None:
        if self.progress is not None:
            self.progress.refresh()

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.refresh()
            self.progress.stop()


def print_summary(report: Dict[str, Any], console: Any = None, max_bad: int = 50) -> None:
    """Print a readable summary of a :func:`prepare` report: counts, bad files, where things went."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    c = report["counts"]
    check = report.get("mode") == "check"
    table = Table(title="avssl prep --check" if check else "avssl prep", show_header=True)
    table.add_column("videos")
    table.add_column("count", justify="right")
    table.add_row("total", str(c["total"]))
    table.add_row("ok" if check else "prepared now", f"[green]{c['ok']}")
    if not check:
        table.add_row("already prepared (skipped)", str(c["skipped_existing"]))
    table.add_row("bad", f"[red]{c['bad']}" if c["bad"] else "0")
    table.add_row("without audio", str(c.get("no_audio", 0)))
    if report.get("corrected"):
        table.add_row("turned upright / made square", str(len(report["corrected"])))
    table.add_row("hours of video", f"{report.get('duration_s', 0.0) / 3600:.2f}")
    table.add_row("wall time", f"{report['wall_time_s']:.1f} s ({report.get('videos_per_s', 0.0):.2f} videos/s)")
    console.print(table)
    bad = report.get("bad_files", [])
    if bad:
        t = Table(title=f"bad files (under {report.get('src')})", show_header=True)
        t.add_column("path", overflow="fold")
        t.add_column("reason", overflow="fold")
        src = report.get("src") or ""
        for b in bad[:max_bad]:
            path = b["path"]
            if src and path.startswith(src.rstrip(os.sep) + os.sep):
                path = os.path.relpath(path, src)
            t.add_row(path, b["reason"])
        console.print(t)
        if len(bad) > max_bad:
            console.print(f"… and {len(bad) - max_bad} more (all listed in the JSON report)")
    if report.get("warnings"):
        console.print(f"[yellow]{len(report['warnings'])} warning(s)[/] (listed in the JSON report)")
    for key in ("manifest", "report", "audio_stats"):
        if report.get(key):
            console.print(f"{key}: {report[key]}")
