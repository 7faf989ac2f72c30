"""Files written by avssl follow the umask, as a plain ``open(path, "w")`` would: the atomic writer's
temporary file must not leave them 0600."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from avssl.utils import atomic_write_text

UMASKS = [0o022, 0o002]


@pytest.fixture
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", UMASKS, indirect=True, ids=oct)
def test_atomic_writer_gives_the_mode_open_gives(umask, tmp_path):
    atomic_write_text(tmp_path / "new.txt", "a")
    with open(tmp_path / "plain.txt", "w") as f:
        f.write("a")
    assert _mode(tmp_path / "new.txt") == _mode(tmp_path / "plain.txt") == 0o666 & ~umask
    # Rewriting a file keeps its mode, as open(path, "w") does.
    (tmp_path / "private.txt").write_text("old")
    os.chmod(tmp_path / "private.txt", 0o600)
    atomic_write_text(tmp_path / "private.txt", "new")
    assert (tmp_path / "private.txt").read_text() == "new" and _mode(tmp_path / "private.txt") == 0o600
    assert sorted(os.listdir(tmp_path)) == ["new.txt", "plain.txt", "private.txt"]  # no temporary left


@pytest.mark.parametrize("umask", UMASKS, indirect=True, ids=oct)
def test_command_outputs_follow_the_umask(umask, tmp_path):
    from avssl.apps.cli import main

    raw, prepared, run = tmp_path / "raw", tmp_path / "prepared", tmp_path / "run"
    assert main(["synth", str(raw), "--classes", "2", "--per-class", "2", "--seconds", "1", "--size", "32",
                 "--workers", "1"]) == 0
    assert main(["prep", str(raw / "videos"), str(prepared), "--short-side", "32", "--csv",
                 str(raw / "annotations.csv"), "--workers", "1"]) == 0
    (tmp_path / "cfg.yaml").write_text("method: {name: supervised}\n")
    assert main(["pretrain", str(tmp_path / "cfg.yaml"), f"data.train={prepared / 'manifest.csv'}", "data.num_frames=2", "data.fps=4",
                 "data.crop_size=16", "data.batch_size=2", "data.num_workers=0", "model.video.name=r3d_tiny",
                 "model.video.kwargs={base_channels: 4}", "trainer.max_epochs=1", "trainer.accelerator=cpu",
                 "trainer.devices=1", "trainer.log_every_n_steps=1", "trainer.progress_bar=false", "trainer.tensorboard=false",
                 f"output_dir={run}"]) == 0
    expected = 0o666 & ~umask
    for path in (prepared / "manifest.csv", run / "config.yaml", run / "checkpoints" / "last.ckpt"):
        assert _mode(path) == expected, (path, oct(_mode(path)))
    # ... and so does every other file the three commands wrote.
    written = [Path(d) / f for top in (raw, prepared, run) for d, _, files in os.walk(top) for f in files]
    assert len(written) > 10
    assert {str(p): oct(_mode(p)) for p in written if _mode(p) != expected} == {}
