"""Packaging: the shipped configs travel inside the wheel and are found from any folder.

The wheel is built from a copy of the source tree, installed with ``pip install --no-deps --target``,
and used by a Python that has neither the source tree nor the development install on its path. An
editable install is checked the same way.
"""
from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Dict, List

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = sysconfig.get_paths()["purelib"]  # this environment's dependencies (torch, omegaconf, …)

pytestmark = pytest.mark.slow

# Run with -S: the environment's .pth files (among them a development install of avssl) stay unread,
# so avssl can only come from the folder under test. The dependencies come after it on the path.
PROBE = """
import os, sys
import avssl
from avssl.config import load_config, resolve_config, shipped_configs
print("avssl", os.path.realpath(avssl.__file__))
print("config", os.path.realpath(resolve_config("demo/avid_cma_tiny.yaml")))
cfg = load_config("compare/vcop_tiny.yaml")  # defaults: [../demo/base_tiny.yaml] resolves inside the install
print("vcop", cfg.method.name, cfg.model.video.name)
print("shipped", len(shipped_configs()))
"""


def _setuptools_at_least(major: int) -> bool:
    try:
        return int(importlib.metadata.version("setuptools").split(".")[0]) >= major
    except importlib.metadata.PackageNotFoundError:
        return False


def _source_copy(dst: Path) -> Path:
    """The files a build reads, copied (the link avssl/configs kept a link), so the checkout gets no build/."""
    dst.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dst / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "avssl", dst / "avssl", symlinks=True, ignore=ignore)
    shutil.copytree(ROOT / "configs", dst / "configs", ignore=ignore)
    return dst


def _pip(*args: str, cwd: Path) -> None:
    # Offline when this environment has the build backend pyproject.toml asks for (the test extra
    # installs it); else pip fetches it into an isolated build environment.
    isolation = [] if _setuptools_at_least(77) else ["--use-pep517"]
    cmd = [sys.executable, "-m", "pip", *args, "--no-deps", "--disable-pip-version-check", "--quiet"]
    cmd += ["--no-build-isolation"] if not isolation else isolation
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _python(path: List[str], code_or_args: List[str], cwd: Path) -> subprocess.CompletedProcess:
    env: Dict[str, str] = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=os.pathsep.join([*path, SITE]), OMP_NUM_THREADS="1", COLUMNS="200")
    return subprocess.run([sys.executable, "-S", *code_or_args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def _check_install(path: List[str], where: Path, cwd: Path) -> None:
    probe = _python(path, ["-c", PROBE], cwd)
    assert probe.returncode == 0, probe.stdout + probe.stderr[-3000:]
    got = dict(line.split(" ", 1) for line in probe.stdout.splitlines())
    assert got["avssl"].startswith(str(where.resolve()) + os.sep), got
    assert got["config"] == str((where / "configs" / "demo" / "avid_cma_tiny.yaml").resolve()), got
    assert got["vcop"] == "vcop r2plus1d_tiny"
    assert int(got["shipped"]) == sum(1 for _ in (ROOT / "configs").rglob("*.yaml"))
    helped = _python(path, ["-m", "avssl", "demo", "--help"], cwd)
    assert helped.returncode == 0, helped.stderr[-3000:]
    assert "usage: avssl demo" in helped.stdout and "--seeds" in helped.stdout


def test_wheel_ships_the_configs_and_finds_them_from_anywhere(tmp_path):
    src = _source_copy(tmp_path / "src")
    _pip("wheel", "-w", str(tmp_path / "dist"), str(src), cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("avssl-*.whl"))
    target = tmp_path / "installed"
    _pip("install", "--target", str(target), str(wheel), cwd=tmp_path)
    assert (target / "avssl" / "configs" / "demo" / "base_tiny.yaml").is_file()
    assert not (target / "avssl" / "configs").is_symlink()  # a copy, not a link into the source tree
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _check_install([str(target)], target / "avssl", elsewhere)


def test_editable_install_finds_the_checkouts_configs(tmp_path):
    src = _source_copy(tmp_path / "src")
    prefix = tmp_path / "prefix"
    _pip("install", "--prefix", str(prefix), "-e", str(src), cwd=tmp_path)
    site_dir = next(prefix.glob("lib/python*/site-packages"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The editable install is a .pth file (and an import hook) in its site folder: read it as Python would.
    path_hook = f"import site; site.addsitedir({str(site_dir)!r})"
    probe = _python([], ["-c", path_hook + "\n" + PROBE], elsewhere)
    assert probe.returncode == 0, probe.stdout + probe.stderr[-3000:]
    got = dict(line.split(" ", 1) for line in probe.stdout.splitlines())
    assert got["avssl"].startswith(str((src / "avssl").resolve()) + os.sep), got
    assert got["config"] == str((src / "configs" / "demo" / "avid_cma_tiny.yaml").resolve()), got
    assert got["vcop"] == "vcop r2plus1d_tiny"
