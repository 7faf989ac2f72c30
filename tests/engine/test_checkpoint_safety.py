"""Checkpoints from strangers: every entry point reads them with ``weights_only=True`` and refuses a pickle that
needs code to load (one line naming the file, exit status 2); damaged files get one line saying what is wrong."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from avssl.checkpoint import CheckpointError, CheckpointNotFoundError, load_checkpoint
from avssl.config import load_config
from avssl.engine import fit
from tiny import tiny_overrides

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/: shared helpers and scripts
ROOT = os.path.dirname(HERE)
CONFIG = os.path.join(ROOT, "configs", "demo", "supervised_tiny.yaml")


class _WritesAFile:
    """Unpickling this calls ``open(path, "w")``: what a crafted checkpoint can do (or worse)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def trained(synth_corpus, tmp_path_factory):
    """A real one-epoch supervised checkpoint."""
    return fit(load_config(CONFIG, tiny_overrides(synth_corpus, tmp_path_factory.mktemp("trained"))))


@pytest.fixture
def malicious(trained, tmp_path):
    """(checkpoint, marker): a plausible checkpoint (real weights, config, step) that writes ``marker`` on load."""
    state = load_checkpoint(trained)
    marker = tmp_path / "marker"
    state["callbacks"] = {"Extra": _WritesAFile(str(marker))}
    path = tmp_path / "downloaded.ckpt"
    torch.save(state, path)
    return path, marker


def _refusal(path) -> str:
    return (f"refusing checkpoint {path}: it needs code to load (disallowed global io.open); avssl loads checkpoints "
            "with weights_only=True, reading tensors and plain values only")


@pytest.mark.slow
def test_every_cli_checkpoint_flag_refuses_a_checkpoint_that_runs_code(synth_corpus, tmp_path, malicious):
    evil, marker = malicious
    overrides = tiny_overrides(synth_corpus, tmp_path / "out")
    commands = {
        "eval": ["eval", CONFIG, *overrides, "--checkpoint", str(evil)],
        "finetune": ["finetune", CONFIG, *overrides, "--checkpoint", str(evil)],
        "extract": ["extract", CONFIG, *overrides, "--checkpoint", str(evil), "--output", str(tmp_path / "f.pt")],
        "cma-figure": ["cma-figure", CONFIG, *overrides, "--checkpoint", str(evil), "--out", str(tmp_path / "f.png")],
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT, "COLUMNS": "1000"}
    procs = {name: subprocess.Popen([sys.executable, "-m", "avssl", *cmd], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True) for name, cmd in commands.items()}
    for name, proc in procs.items():
        text, _ = proc.communicate(timeout=300)
        assert proc.returncode == 2, (name, text[-3000:])
        lines = [ln for ln in text.splitlines() if "refusing checkpoint" in ln]
        assert len(lines) == 1 and _refusal(evil) in lines[0], (name, text[-3000:])
        assert "Traceback" not in text, (name, text[-3000:])
    assert not marker.exists()
    assert not (tmp_path / "f.pt").exists() and not (tmp_path / "f.png").exists()


@pytest.mark.parametrize("method, key", [
    ("supervised", "method.init_checkpoint"),  # what `avssl finetune --checkpoint` sets
    ("avid_cma", "method.init_from"),
    ("audio_clusters", "method.audio_checkpoint"),
])
def test_every_config_key_naming_a_checkpoint_refuses_one_that_runs_code(synth_corpus, tmp_path, malicious, method,
                                                                         key):
    evil, marker = malicious
    cfg = load_config(overrides=tiny_overrides(synth_corpus, tmp_path / "run", method=method, **{key: str(evil)}))
    with pytest.raises(CheckpointError) as err:
        fit(cfg)
    assert str(err.value) == f"{key}: {_refusal(evil)}"
    assert not marker.exists()


def test_resuming_refuses_a_last_checkpoint_that_runs_code(synth_corpus, tmp_path, malicious):
    evil, marker = malicious
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    os.replace(evil, ckpts / "last.ckpt")
    with pytest.raises(CheckpointError) as err:
        fit(load_config(CONFIG, tiny_overrides(synth_corpus, tmp_path / "run")))
    assert str(err.value) == (f"cannot resume the run in {ckpts}: {_refusal(ckpts / 'last.ckpt')}. Start afresh with "
                              "--no-resume (the old files are set aside), or use another output_dir")
    assert not marker.exists()


def test_lightnings_own_resume_path_reads_with_weights_only(trained, malicious):
    # The trainer's CheckpointIO is the one reader fit(ckpt_path=...) uses.
    from avssl.engine import AtomicCheckpointIO

    evil, marker = malicious
    io = AtomicCheckpointIO()
    assert io.load_checkpoint(trained)["global_step"] == 6
    with pytest.raises(CheckpointError, match="disallowed global io.open"):
        io.load_checkpoint(evil)
    assert not marker.exists()


def test_damaged_checkpoints_get_one_line_saying_what_is_wrong(trained, tmp_path):
    data = open(trained, "rb").read()
    cases = {
        "truncated.ckpt": (data[: len(data) // 2], "is truncated or corrupt (its zip index is missing): an unfinished "
                                                   "write or copy"),
        "empty.ckpt": (b"", "is empty (0 bytes): an unfinished write or copy"),
        "notes.ckpt": (b"some text\n" * 5,
                       "is not a PyTorch checkpoint (neither torch.save's zip format nor its legacy format)"),
    }
    for name, (content, reason) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(tmp_path / name)
        assert str(err.value) == f"checkpoint {tmp_path / name} {reason}"
    with pytest.raises(CheckpointNotFoundError, match=f"^checkpoint {tmp_path / 'nowhere.ckpt'} does not exist$"):
        load_checkpoint(tmp_path / "nowhere.ckpt")
    with pytest.raises(CheckpointError, match=f"^checkpoint {tmp_path} is a folder, not a checkpoint file$"):
        load_checkpoint(tmp_path)
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"holds a list, not a dict of weights$"):
        load_checkpoint(tmp_path / "list.pt")
    assert isinstance(CheckpointNotFoundError("x"), FileNotFoundError)  # callers catching the OS error still do
