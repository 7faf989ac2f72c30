"""Configs: validation with the nearest valid keys, overrides, defaults chains, shipped files."""
from __future__ import annotations

import glob
import os

import pytest

from avssl.config import ConfigError, load_config

ROOT = os.path.dirname(os.path.dirname(__file__))


def test_defaults_and_override_types():
    cfg = load_config(overrides=["optim.lr=0.5", "trainer.max_epochs=3", "data.audio=true"])
    assert cfg.optim.lr == 0.5 and isinstance(cfg.optim.lr, float)
    assert cfg.trainer.max_epochs == 3 and cfg.data.audio is True
    assert cfg.method.name == "supervised"


@pytest.mark.parametrize(
    "override,named,nearest",
    [
        ("optim.lrr=0.1", "optim.lrr", "optim.lr"),
        ("trainr.max_epochs=2", "trainr", "trainer"),
        ("data.num_frame=4", "data.num_frame", "data.num_frames"),
        ("method.temprature=0.2", "method.temprature", "method.temperature"),
    ],
)
def test_unknown_key_names_it_and_the_nearest(override, named, nearest):
    extra = ["method.name=xmodal_nce"] if override.startswith("method.") else []
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[*extra, override])
    assert f"'{named}'" in str(e.value) and nearest in str(e.value)


def test_wrong_type_and_unknown_method():
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(overrides=["optim.lr=fast"])
    with pytest.raises(ConfigError, match="xmodal_nce"):
        load_config(overrides=["method.name=xmodal"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(overrides=["optim.lr"])


def test_yaml_file_with_defaults_chain(tmp_path):
    (tmp_path / "base.yaml").write_text("optim: {lr: 0.2, name: adamw}\ntrainer: {max_epochs: 7}\n")
    (tmp_path / "child.yaml").write_text("defaults: [base.yaml]\noptim: {lr: 0.3}\n")
    cfg = load_config(str(tmp_path / "child.yaml"), ["trainer.max_epochs=9"])
    assert (cfg.optim.lr, cfg.optim.name, cfg.trainer.max_epochs) == (0.3, "adamw", 9)
    (tmp_path / "bad.yaml").write_text("optim: {lr: 0.2, wd: 1}\n")
    with pytest.raises(ConfigError, match="optim.wd.*optim.weight_decay|optim.wd"):
        load_config(str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_encoder_kwargs_are_open():
    cfg = load_config(overrides=["model.video.name=r3d_tiny", "model.video.kwargs={base_channels: 8}"])
    assert cfg.model.video.kwargs.base_channels == 8


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True)))
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg.method.name and cfg.output_dir
