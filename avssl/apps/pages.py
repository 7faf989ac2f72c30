"""Results pages: Markdown files whose every number comes from the command written at their top.

``avssl demo --page``, ``avssl compare --page`` and ``avssl bench NAME --page`` write one with
:func:`write_page`. Its head says the exact command that produced it, when (UTC), on what machine
(CPU model and count, memory, GPU, torch and CUDA versions, avssl's version and git commit) and with
which seeds, so that the page can be regenerated and its numbers compared with a rerun's.

Numbers measured over several seeds are stated as mean ± sample standard deviation
(:func:`summarise_seeds`, :func:`seed_summary_table`), with the per-seed values beside them.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import shlex
import statistics
import subprocess
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import avssl
from avssl.eval.report import Table
from avssl.utils import atomic_write_text


def command_line(argv: Sequence[str]) -> str:
    """The ``avssl`` command that ``argv`` (the arguments after ``avssl``) spells, quoted for a shell."""
    return shlex.join(["avssl", *argv])


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _memory_gib() -> Optional[float]:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def git_commit(path: Optional[str] = None) -> Optional[str]:
    """The short commit of the git checkout that holds ``path`` (default: the avssl package), with
    ``+changes`` when tracked files differ from it; None outside a checkout (an installed wheel)."""
    folder = path or os.path.dirname(os.path.abspath(avssl.__file__))

    def git(*args: str) -> Optional[str]:
        try:
            proc = subprocess.run(["git", "-C", folder, *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "--short=12", "HEAD")
    if not commit:
        return None
    changed = git("status", "--porcelain", "--untracked-files=no")
    return commit + ("+changes" if changed else "")


def machine() -> Dict[str, Any]:
    """What ran the command: CPU, memory, GPUs, and the software versions."""
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {
        "cpu": _cpu_model(),
        "cpus": _usable_cpus(),
        "cpus_total": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "gpus": gpus,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "avssl": avssl.__version__,
        "commit": git_commit(),
        "platform": platform.platform(),
    }


def describe_machine(m: Dict[str, Any]) -> Dict[str, str]:
    """The lines of :func:`machine`'s description on a page: ``machine`` and ``software``."""
    cpus = f"{m['cpus']} CPUs" + (f" (of {m['cpus_total']})" if m.get("cpus_total") and m["cpus_total"] != m["cpus"] else "")
    memory = f", {m['memory_gib']:.1f} GiB memory" if m.get("memory_gib") else ""
    gpus = ", GPU: " + ", ".join(m["gpus"]) if m["gpus"] else ", no GPU"
    commit = f"git {m['commit']}" if m.get("commit") else "not from a git checkout"
    cuda = f"built with CUDA {m['cuda']}" if m.get("cuda") else "CPU-only build"
    return {
        "machine": f"{m['cpu']}, {cpus}{memory}{gpus} ({m['platform']})",
        "software": f"avssl {m['avssl']} ({commit}), torch {m['torch']} ({cuda}), Python {m['python']}",
    }


def render_page(title: str, command: str, seeds: Sequence[int], body: Sequence[str], *,
                intro: str = "", wall_s: Optional[float] = None, when: Optional[_dt.datetime] = None,
                machine_info: Optional[Dict[str, Any]] = None) -> str:
    """The page's Markdown: title, the command, date, machine, software, seeds, then ``body``'s blocks."""
    when = when or _dt.datetime.now(_dt.timezone.utc)
    about = describe_machine(machine_info or machine())
    head = [
        f"# {title}",
        "",
        "Produced by this command; run it again to regenerate the page:",
        "",
        "```",
        command,
        "```",
        "",
        f"- **date:** {when.astimezone(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- **machine:** {about['machine']}",
        f"- **software:** {about['software']}",
        f"- **seeds:** {', '.join(str(s) for s in seeds) if seeds else 'none'}",
    ]
    if wall_s is not None:
        head.append("- **wall time:** " + (f"{wall_s / 60:.1f} min" if wall_s >= 60 else f"{wall_s:.1f} s"))
    if intro:
        head += ["", intro]
    return "\n\n".join(["\n".join(head), *body]).rstrip() + "\n"


def write_page(path: str, title: str, command: str, seeds: Sequence[int], body: Sequence[str], **kwargs: Any) -> str:
    """Write :func:`render_page`'s page to ``path`` atomically (a reader never sees half a page, a
    failed write keeps the previous one); returns its text."""
    text = render_page(title, command, seeds, body, **kwargs)
    atomic_write_text(path, text)
    return text



# -- numbers over seeds -------------------------------------------------------------------------------
def summarise(values: Sequence[float]) -> Dict[str, float]:
    """Mean, sample standard deviation (0 for one value) and count of per-seed numbers."""
    vals = [float(v) for v in values]
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def mean_std_text(s: Mapping[str, float], scale: float = 1.0, digits: int = 1) -> str:
    """``"43.3 ± 2.1"`` (``"43.3"`` for one seed): mean ± sample standard deviation, times ``scale``."""
    text = f"{scale * s['mean']:.{digits}f}"
    return text + (f" ± {scale * s['std']:.{digits}f}" if s["n"] > 1 else "")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def summarise_seeds(per_seed: Mapping[int, Sequence[Mapping[str, Any]]]) -> List[Dict[str, Any]]:
    """Per-seed result rows -> one row per result: the rows of different seeds that have the same text
    fields (encoder, protocol, …) are one result, and each of its numbers becomes :func:`summarise` of
    its per-seed values (NaN and missing values left out). Rows keep the first seed's order."""
    groups: Dict[Tuple[Tuple[str, Any], ...], List[Mapping[str, Any]]] = {}
    for rows in per_seed.values():
        for row in rows:
            ident = tuple((k, v) for k, v in row.items() if not _is_number(v))
            groups.setdefault(ident, []).append(row)
    out = []
    for ident, rows in groups.items():
        summary: Dict[str, Any] = dict(ident)
        for key in dict.fromkeys(k for r in rows for k, v in r.items() if _is_number(v)):
            vals = [float(r[key]) for r in rows if _is_number(r.get(key)) and math.isfinite(r[key])]
            summary[key] = summarise(vals) if vals else None
        out.append(summary)
    return out


def seed_summary_table(summary: Sequence[Mapping[str, Any]], title: str) -> Table:
    """Rows of :func:`summarise_seeds` as a table: accuracies in %, each cell mean ± std over the seeds."""
    from avssl.eval.report import column_header, is_fraction_key

    columns = list(dict.fromkeys(k for r in summary for k in r))
    numeric = [any(isinstance(r.get(c), Mapping) for r in summary) for c in columns]

    def cell(key: str, value: Any) -> str:
        if isinstance(value, Mapping):
            return mean_std_text(value, scale=100.0 if is_fraction_key(key) else 1.0)
        return "–" if value is None else str(value)

    return Table(title, [column_header(c) for c in columns], [[cell(c, r.get(c)) for c in columns] for r in summary],
                 align=["r" if n else "l" for n in numeric])

