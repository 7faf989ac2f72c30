"""Shipped configs: found by name from any folder, a user's file of the same name wins, every one listed
in configs/README.md; and one thin script in tools/ per CLI verb."""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import avssl
from avssl.config import ConfigError, load_config, resolve_config, shipped_config, shipped_configs

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_configs_are_found_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = resolve_config("demo/avid_cma_tiny.yaml")
    assert Path(path).resolve() == (ROOT / "configs" / "demo" / "avid_cma_tiny.yaml").resolve()
    assert Path(path).is_relative_to(Path(avssl.__file__).parent)  # found in the package, not the cwd
    assert resolve_config("configs/demo/avid_cma_tiny.yaml") == path  # the README's spelling works too
    cfg = load_config("compare/vcop_tiny.yaml", ["trainer.max_epochs=3"])
    # defaults: [../demo/base_tiny.yaml] resolved inside the shipped folder
    assert (cfg.method.name, cfg.model.video.name, cfg.data.crop_size, cfg.trainer.max_epochs) == ("vcop", "r2plus1d_tiny", 64, 3)


def test_a_users_file_wins_over_a_shipped_config_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "avid_cma_tiny.yaml").write_text("method: {name: supervised}\nseed: 7\n")
    assert resolve_config("demo/avid_cma_tiny.yaml") == "demo/avid_cma_tiny.yaml"
    cfg = load_config("demo/avid_cma_tiny.yaml")
    assert (cfg.method.name, cfg.seed) == ("supervised", 7)
    # The demo and the comparison ask for the shipped one by name, whatever the folder holds.
    assert load_config(shipped_config("demo/avid_cma_tiny.yaml")).method.name == "avid_cma"


def test_a_missing_config_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config("demo/avid_cma_tiy.yaml")
    assert str(err.value) == ("config file not found: demo/avid_cma_tiy.yaml (nor is it a shipped config such as "
                              "demo/avid_cma_tiny.yaml; avssl.config.shipped_configs() lists them)")
    for outside in ("../pyproject.toml", "demo/../../pyproject.toml", str(ROOT / "nope.yaml")):
        with pytest.raises(ConfigError, match="avssl ships no config"):
            shipped_config(outside)


def test_every_shipped_config_is_listed_in_the_configs_readme():
    on_disk = sorted(str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").rglob("*.yaml"))
    assert shipped_configs() == on_disk and len(on_disk) > 40
    assert shipped_configs("demo") == [c for c in on_disk if c.startswith("demo/")]
    listed = re.findall(r"^\| `([^`]+\.yaml)` \|", (ROOT / "configs" / "README.md").read_text(), flags=re.M)
    assert sorted(set(on_disk) - set(listed)) == [], "add these configs to configs/README.md"
    assert sorted(set(listed) - set(on_disk)) == [], "configs/README.md lists configs that do not exist"
    assert len(listed) == len(set(listed))


def _verbs() -> list:
    from avssl.apps.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def test_one_thin_script_in_tools_per_cli_verb():
    verbs = _verbs()
    assert {"synth", "prep", "pretrain", "bench", "demo", "compare"} <= set(verbs)
    scripts = {p.stem for p in (ROOT / "tools").glob("*.py")}
    assert scripts == {v.replace("-", "_") for v in verbs}
    for verb in verbs:
        text = (ROOT / "tools" / f"{verb.replace('-', '_')}.py").read_text()
        assert f'sys.exit(main(["{verb}", *sys.argv[1:]]))' in text, verb
        assert "from avssl.apps.cli import main" in text


def test_a_tools_script_is_the_cli_verb(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", COLUMNS="120")
    via_tool = subprocess.run([sys.executable, str(ROOT / "tools" / "cma_figure.py"), "--help"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
    via_cli = subprocess.run([sys.executable, "-m", "avssl", "cma-figure", "--help"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
    assert via_tool.returncode == via_cli.returncode == 0, via_tool.stderr + via_cli.stderr
    assert via_tool.stdout == via_cli.stdout and via_tool.stdout.startswith("usage: avssl cma-figure")
