"""Shipped configs: found by name from any folder, and a user's file of the same name wins."""
from __future__ import annotations

from pathlib import Path

import pytest

import avssl
from avssl.config import ConfigError, load_config, resolve_config, shipped_config

ROOT = Path(__file__).resolve().parents[1]


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
