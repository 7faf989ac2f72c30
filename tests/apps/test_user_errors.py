"""A user's mistakes (config, paths, permissions, data, options) print one line and exit 2; bugs keep
their traceback; ``--debug`` shows it for user errors too.

Most cases run ``avssl.apps.cli.main`` in this process (one row each in ``CASES``); a few run the real
command in a subprocess for what only a process shows: the exit status, the absence of a traceback,
permissions (as root they are enforced by dropping CAP_DAC_OVERRIDE with ``setpriv``).
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Sequence

import pytest

from avssl.apps.cli import main

ROOT = Path(__file__).resolve().parents[2]

# A valid config that fails nowhere before the data is read (the supervised method reads the data at
# once for num_classes, so a data error comes before any training).
BASE = """\
method: {name: supervised}
data: {num_frames: 4, fps: 4.0, crop_size: 32, batch_size: 2, num_workers: 0, train: DATA}
model: {video: {name: r3d_tiny, kwargs: {base_channels: 8}}}
trainer: {max_epochs: 1, accelerator: cpu, devices: 1, progress_bar: false, tensorboard: false}
output_dir: OUT
"""


@pytest.fixture
def ws(tmp_path):
    """A workspace: ``base.yaml`` (data.train -> manifest.csv, output_dir -> run/) and helper files."""
    (tmp_path / "base.yaml").write_text(BASE.replace("DATA", str(tmp_path / "manifest.csv"))
                                        .replace("OUT", str(tmp_path / "run")))
    (tmp_path / "a_file.txt").write_text("not a folder\n")
    return tmp_path


def _write(name: str, text: str) -> Callable[[Path], str]:
    def make(ws: Path) -> str:
        (ws / name).write_text(text)
        return str(ws / name)

    return make


def _pretrain(*overrides: str, config: Callable[[Path], str] = lambda ws: str(ws / "base.yaml")):
    return lambda ws: ["pretrain", config(ws), *[o.replace("WS", str(ws)) for o in overrides]]


def _args(*argv: str):
    return lambda ws: [a.replace("WS", str(ws)) for a in argv]


# id -> (argv builder, pieces the error line must hold; WS stands for the workspace folder)
CASES = {
    # the config file itself
    "list_at_top_level": (_pretrain(config=_write("list.yaml", "- method\n- data\n")),
                          ["WS/list.yaml", "the top level must be a mapping", "not a list"]),
    "number_at_top_level": (_pretrain(config=_write("num.yaml", "42\n")),
                            ["WS/num.yaml", "the top level must be a mapping", "not a single value"]),
    "python_tag_in_file": (_pretrain(config=_write("tag.yaml", "method: !!python/object/apply:os.system ['touch WS/pwned']\n")),
                           ["WS/tag.yaml:1", "YAML tag '!!python/object/apply:os.system' is not allowed"]),
    "python_tag_in_override": (_pretrain("method.name=!!python/name:os.system"),
                               ["override 'method.name=!!python/name:os.system'", "YAML tag '!!python/name:os.system' is not allowed"]),
    "yaml_syntax": (_pretrain(config=_write("broken.yaml", "optim: {lr: 0.1\ntrainer: {}\n")),
                    ["WS/broken.yaml:", "not valid YAML"]),
    "config_is_a_folder": (_args("pretrain", "WS"), ["config WS is a folder"]),
    "config_missing": (_args("pretrain", "WS/nowhere.yaml"), ["config file not found: WS/nowhere.yaml"]),
    "section_not_a_mapping": (_pretrain("data=5"), ["'data' must be a mapping of keys", "got 5"]),
    "broken_interpolation": (_pretrain("output_dir=${nowhere}"), ["'output_dir'", "nowhere"]),
    # values out of range, names that do not exist
    "negative_batch_size": (_pretrain("data.batch_size=-1"), ["'data.batch_size': -1", "must be >= 1"]),
    "zero_batch_size": (_pretrain("data.batch_size=0"), ["'data.batch_size': 0", "must be >= 1"]),
    "zero_num_frames": (_pretrain("data.num_frames=0"), ["'data.num_frames': 0", "must be >= 1"]),
    "zero_fps": (_pretrain("data.fps=0"), ["'data.fps': 0.0", "must be > 0"]),
    "negative_crop_size": (_pretrain("data.crop_size=-8"), ["'data.crop_size': -8", "must be >= 1"]),
    "zero_views": (_pretrain("data.views=0"), ["'data.views': 0", "must be >= 1"]),
    "failure_fraction_above_1": (_pretrain("data.max_failure_fraction=1.5"), ["'data.max_failure_fraction': 1.5", "must be in [0, 1]"]),
    "failure_fraction_below_0": (_pretrain("data.max_failure_fraction=-0.1"), ["'data.max_failure_fraction': -0.1", "must be in [0, 1]"]),
    "crop_larger_than_scale": (_pretrain("data.min_short_side=16"), ["data.min_short_side=16 is smaller than data.crop_size=32"]),
    "unknown_precision": (_pretrain("trainer.precision=17"), ["'trainer.precision': '17'", "must be one of", "bf16-mixed"]),
    "unknown_strategy": (_pretrain("trainer.strategy=dpp"), ["'trainer.strategy': 'dpp'", "must be one of", "ddp"]),
    "unknown_accelerator": (_pretrain("trainer.accelerator=tpux"), ["'trainer.accelerator': 'tpux'", "must be one of", "cpu"]),
    "unknown_encoder": (_pretrain("model.video.name=r3d_19"), ["'model.video.name': 'r3d_19'", "must be one of", "r3d_18"]),
    "unknown_method": (_pretrain("method.name=simclrr"), ["method.name", "unknown method 'simclrr'", "simclr"]),
    "unknown_key": (_pretrain("data.batchsize=4"), ["unknown config key 'data.batchsize'", "data.batch_size"]),
    "wrong_type": (_pretrain("optim.lr=fast"), ["'optim.lr'", "fast"]),
    "method_key_check": (_pretrain("method.name=simclr", "method.proj_dim=0"), ["'method.proj_dim': 0", "must be >= 1"]),
    "unknown_protocol": (_pretrain("eval.protocols=[linear,lnear]"), ["'eval.protocols'", "one of linear, knn"]),
    "finetune_needs_supervised": (_args("finetune", "WS/base.yaml", "method.name=simclr", "--checkpoint", "WS/a_file.txt"),
                                  ["method must be 'supervised', not 'simclr'"]),
    # data
    "missing_data_path": (_pretrain("data.train=WS/nowhere.csv"), ["data.train: WS/nowhere.csv does not exist"]),
    "missing_video_root": (_pretrain("data.video_root=WS/no_videos", config=lambda ws: (ws / "manifest.csv").write_text(
        "path\na.mp4\n") and str(ws / "base.yaml")), ["data.video_root: WS/no_videos is not a folder"]),
    "data_train_unset": (_pretrain("data.train=null"), ["data.train is not set"]),
    "empty_manifest": (_pretrain(config=lambda ws: (ws / "manifest.csv").write_text("path,label,split\n") and str(ws / "base.yaml")),
                       ["no videos in WS/manifest.csv", "a header and no rows"]),
    "every_listed_file_missing": (_pretrain(config=lambda ws: (ws / "manifest.csv").write_text(
        "path,label,split\ngone/a.mp4,x,train\ngone/b.mp4,y,train\n") and str(ws / "base.yaml")),
        ["none of the 2 videos listed in WS/manifest.csv exists", "first: WS/gone/a.mp4"]),
    "no_video_in_split": (_pretrain(config=lambda ws: (ws / "manifest.csv").write_text(
        f"path,label,split\n{ws / 'a_file.txt'},x,val\n") and str(ws / "base.yaml")),
        ["no videos for split 'train' in WS/manifest.csv (splits there: 'val')", "data.train_split"]),
    "undecodable_in_a_loader_worker": (lambda ws: (ws / "manifest.csv").write_text(
        f"path,label,split\n{ws / 'a_file.txt'},x,train\ngone.mp4,y,train\n") and _args(
        "extract", "WS/base.yaml", "data.num_workers=1", "--output", "WS/f.pt")(ws),
                                       ["2 unreadable videos", "Run `avssl prep --check`"]),
    # paths given on the command line
    "eval_missing_checkpoint": (_args("eval", "WS/base.yaml", "--checkpoint", "WS/nowhere.ckpt"),
                                ["argument --checkpoint: WS/nowhere.ckpt: no such file"]),
    "finetune_checkpoint_is_a_folder": (_args("finetune", "WS/base.yaml", "--checkpoint", "WS"),
                                        ["argument --checkpoint: WS is a folder, not a file"]),
    "synth_into_a_file": (_args("synth", "WS/a_file.txt", "--classes", "1", "--per-class", "1"),
                          ["OUT_DIR WS/a_file.txt: a file, not a folder"]),
    "synth_under_a_file": (_args("synth", "WS/a_file.txt/corpus", "--classes", "1", "--per-class", "1"),
                           ["OUT_DIR WS/a_file.txt/corpus: a part of the path is a file, not a folder"]),
    "output_dir_is_a_file": (_pretrain("output_dir=WS/a_file.txt"), ["output_dir WS/a_file.txt: a file, not a folder"]),
    "extract_output_is_a_folder": (_args("extract", "WS/base.yaml", "--output", "WS"), ["--output WS: a folder, not a file"]),
    "prep_missing_source": (_args("prep", "WS/nowhere", "WS/prepared"), ["WS/nowhere"]),
    "prep_without_out_dir": (_args("prep", "WS"), ["OUT_DIR is required unless --check is given"]),
    # options
    "synth_zero_classes": (_args("synth", "WS/c", "--classes", "0"), ["argument --classes: must be >= 1, got 0"]),
    "synth_odd_size": (_args("synth", "WS/c", "--classes", "1", "--per-class", "1", "--size", "17"),
                       ["size must be an even int >= 16"]),
    "bench_cma_negative_size": (_args("bench", "cma", "--sizes", "-5"), ["argument --sizes: must be >= 2, got -5"]),
    "bench_unknown_model": (_args("bench", "models", "--names", "r2plus1d_19"), ["argument --names: invalid choice: 'r2plus1d_19'"]),
    "compare_unknown_method": (_args("compare", "--methods", "simclrr"), ["argument --methods: invalid choice: 'simclrr'"]),
    "demo_unknown_method": (_args("demo", "--methods", "simclrr", "--out", "WS/demo"), ["demo methods ['simclrr'] not available"]),
}


def _run_in_process(argv: Sequence[str], capsys) -> tuple:
    try:
        rc = main(list(argv))
    except SystemExit as e:  # argparse's usage errors
        rc = e.code
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_a_users_mistake_is_one_line_and_exit_2(case, ws, capsys):
    build, pieces = CASES[case]
    rc, err = _run_in_process(build(ws), capsys)
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0] == err.strip().splitlines()[-1], err
    for piece in pieces:
        assert piece.replace("WS", str(ws)) in lines[0], (piece, lines[0])
    assert not (ws / "pwned").exists()  # a python tag is refused, never run
    assert not (ws / "c").exists() and not (ws / "run").exists()  # stopped before writing anything


# -- real processes: exit status, no traceback, OS permissions ---------------------------------------
def _cli(args: List[str], cwd: Path, drop_root: bool = False, timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "avssl", *args]
    if drop_root and os.geteuid() == 0:
        # root ignores permission bits through CAP_DAC_OVERRIDE; without it, a 0o555 folder is read-only
        # for root too (the owner's bits apply), as it is for any user.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot make a folder read-only for this process")
        caps = "-dac_override,-dac_read_search"
        cmd = [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", "--", *cmd]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "COLUMNS": "80"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text
    assert "Traceback" not in text, text
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("avssl: error: ")]
    assert len(errors) == 1 and errors[0] == proc.stderr.strip().splitlines()[-1], text
    return errors[0]


@pytest.mark.parametrize("what", ["read_only_output_dir", "unreadable_manifest"])
def test_permission_errors_name_the_path(what, ws):
    locked = ws / "locked"
    locked.mkdir()
    if what == "read_only_output_dir":
        args = ["pretrain", str(ws / "base.yaml"), f"output_dir={locked / 'run'}"]
        expected = f"avssl: error: output_dir {locked / 'run'}: permission denied"
        locked.chmod(0o555)
    else:
        # Not a path the CLI checks up front: the OS error from deep in the data reader is mapped.
        manifest = locked / "manifest.csv"
        manifest.write_text("path,label,split\nx.mp4,a,train\n")
        manifest.chmod(0o000)
        args = ["pretrain", str(ws / "base.yaml"), f"data.train={manifest}"]
        expected = f"avssl: error: {manifest}: permission denied"
    try:
        line = _one_error_line(_cli(args, ws, drop_root=True))
    finally:
        locked.chmod(0o755)
    assert line.startswith(expected), line
    assert not (locked / "run").exists()


def test_python_tag_is_refused_not_run_in_a_real_process(ws):
    (ws / "tag.yaml").write_text(f"method: !!python/object/apply:os.system ['touch {ws / 'pwned'}']\n")
    line = _one_error_line(_cli(["pretrain", str(ws / "tag.yaml")], ws))
    assert f"{ws / 'tag.yaml'}:1: YAML tag '!!python/object/apply:os.system' is not allowed" in line
    assert not (ws / "pwned").exists()


@pytest.mark.slow
def test_debug_shows_the_traceback_of_a_user_error(ws):
    proc = _cli(["--debug", "pretrain", str(ws / "base.yaml"), "data.batch_size=-1"], ws)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback (most recent call last)" in proc.stderr
    assert "avssl.config.ConfigError: invalid value for 'data.batch_size': -1" in proc.stderr
    assert "avssl: error:" not in proc.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_is_taken_before_or_after_the_sub_command(where, ws):
    from avssl.config import ConfigError

    args = ["pretrain", str(ws / "base.yaml"), "data.batch_size=-1"]
    with pytest.raises(ConfigError, match="data.batch_size"):  # raised on: Python prints the traceback
        main(["--debug", *args] if where == "before" else [args[0], "--debug", *args[1:]])


def test_a_bug_keeps_its_traceback_while_an_os_error_on_a_users_path_is_one_line(ws):
    # synthesize stands in for the work: it raises a bug, an OSError about no path (a bug too), or the
    # OSError the OS gives for a user's unwritable file.
    code = (
        "import errno, sys, avssl.apps.synthetic as s\n"
        "from avssl.apps.cli import main\n"
        "def work(*a, **k):\n"
        "    raise {exc}\n"
        "s.synthesize = work\n"
        "sys.exit(main(['synth', sys.argv[1]]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for exc, rc, shown in [
        ("ZeroDivisionError('division by zero')", 1, "ZeroDivisionError: division by zero"),
        ("OSError(errno.EBADF, 'Bad file descriptor')", 1, "OSError: [Errno 9] Bad file descriptor"),
        ("PermissionError(errno.EACCES, 'Permission denied', '/data/videos/x.mp4')", 2,
         "avssl: error: /data/videos/x.mp4: permission denied; check its permissions or choose another path"),
    ]:
        proc = subprocess.run([sys.executable, "-c", code.format(exc=exc), str(ws / "c")],
                              capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == rc, proc.stderr
        assert shown in proc.stderr
        if rc == 1:
            assert "Traceback (most recent call last)" in proc.stderr and "avssl: error:" not in proc.stderr
        else:
            assert "Traceback" not in proc.stderr and proc.stderr.strip().splitlines() == [shown]


# -- the OS error mapping itself --------------------------------------------------------------------
@pytest.mark.parametrize(
    "err,message",
    [
        (PermissionError(errno.EACCES, "Permission denied", "/data/x.csv"),
         "/data/x.csv: permission denied; check its permissions or choose another path"),
        (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/run"), "/mnt/ro/run: read-only file system; choose a writable location"),
        (OSError(errno.ENOSPC, "No space left on device"), "no space left on device; free some space or write elsewhere"),
        (OSError(errno.ENOSPC, "No space left on device", "/runs/a/last.ckpt"),
         "/runs/a/last.ckpt: no space left on device; free some space or write elsewhere"),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "/runs"), "/runs: a folder, not a file; give a file path"),
        (FileNotFoundError("Kinetics CSV not found: /k.csv"), "Kinetics CSV not found: /k.csv"),
        # not about a user's path: left a bug, with its traceback
        (PermissionError(errno.EPERM, "Operation not permitted"), None),
        (OSError(errno.EBADF, "Bad file descriptor", "/x"), None),
        (FileNotFoundError(errno.ENOENT, "No such file", os.path.join(str(ROOT), "avssl", "missing.yaml")), None),
    ],
)
def test_os_errors_about_a_users_path_become_one_line(err, message):
    from avssl.errors import PathError, path_error

    got = path_error(err)
    if message is None:
        assert got is None
    else:
        assert isinstance(got, PathError) and str(got) == message
