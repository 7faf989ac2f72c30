"""make gpu-check (avssl bench gpu): stops at once without a GPU; a failed check fails the command after the table."""
from __future__ import annotations

import pytest
import torch

from avssl.apps.cli import main


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_gpu_check_stops_at_once_with_one_line_without_a_gpu(tmp_path, capsys):
    page = tmp_path / "gpu.md"
    rc = main(["bench", "gpu", "--page", str(page)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("avssl: error: avssl bench gpu (make gpu-check) needs a CUDA GPU: none is visible")
    assert not page.exists()


def test_a_failed_check_is_a_row_and_a_non_zero_exit():
    from avssl.apps.bench.gpu import GpuBenchmark, _row, _timed

    def broken():
        raise RuntimeError("CUDA error: an illegal memory access\nmore lines")

    failed = _timed("bench cma", broken)
    assert not failed["ok"] and failed["result"] == "failed: RuntimeError: CUDA error: an illegal memory access"
    good = _row("pytest -m cuda", result="32 passed", seconds=60.0)
    bench = GpuBenchmark()
    assert bench.exit_code([good]) == 0 and bench.exit_code([good, failed]) == 1
    table = bench.table([good, failed])
    assert [c[1] for c in table.rows] == ["32 passed", "FAILED " + failed["result"]]


def _nvidia_gpu_listed() -> bool:
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


@pytest.mark.skipif(_nvidia_gpu_listed(), reason="checks the machine without a GPU")
def test_make_gpu_check_stops_before_installing_anything_without_a_gpu(tmp_path):
    import os
    import shutil
    import subprocess
    import time

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    venv = tmp_path / "venv"
    t0 = time.monotonic()
    # PYTHON=false: were the venv built first, it would fail there, with another message
    proc = subprocess.run(["make", "-s", "-C", root, "gpu-check", f"VENV={venv}", "PYTHON=false"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and time.monotonic() - t0 < 10
    assert "make gpu-check needs a CUDA GPU: nvidia-smi lists none" in proc.stderr.splitlines()
    assert not venv.exists()
