"""Memory-bank methods under DDP on 2 CPU processes (gloo): banks not broadcast, embedding passes sharded, and a
2-process avid_cma run equal to one process on the global batch. One torchrun job runs every scenario
(tests/scale_ddp_worker.py); the one-process references run here."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from avssl.checkpoint import load_checkpoint

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/: shared helpers and scripts
sys.path.insert(0, HERE)
import scale_ddp_worker as worker  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ddp(synth_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("scale_ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.path.dirname(HERE))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(HERE, "scale_ddp_worker.py"), str(synth_corpus), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0 and (out / "done.json").exists(), proc.stdout[-3000:] + proc.stderr[-5000:]
    return out


def test_sharded_embedding_equals_one_process_on_every_rank(ddp, synth_corpus, tmp_path):
    single = worker.embed(synth_corpus, tmp_path, 0)
    assert single["index"].tolist() == list(range(24)) and single["loaded"] == list(range(24))
    shares = []
    for rank in (0, 1):
        got = torch.load(ddp / f"embed_rank{rank}.pt")
        shares.append(got["loaded"])
        assert torch.equal(got["index"], single["index"])  # every video once, in index order
        for m in ("video", "audio"):
            torch.testing.assert_close(got[m], single[m], rtol=1e-5, atol=1e-6)
        assert torch.equal(got["clusters"], single["clusters"])
    # Each rank decoded and embedded its own half of the videos, not all of them.
    assert shares == [list(range(12)), list(range(12, 24))]


def test_two_process_avid_cma_equals_one_process_on_the_global_batch(ddp, synth_corpus, tmp_path):
    from avssl.engine import fit

    torch.manual_seed(0)
    rec = worker.Recorder("single")
    last = fit(worker.run_config(synth_corpus, tmp_path / "single", 1, 8), resume=False, extra_callbacks=[rec])
    two = [torch.load(ddp / f"equal_rank{r}.pt") for r in (0, 1)]
    per_step = [sum(step) / len(step) for step in two[0]["losses"]]
    assert len(per_step) == 2
    assert per_step == pytest.approx([step[0] for step in rec.losses], rel=1e-5, abs=1e-6)
    one, ddp_state = load_checkpoint(last)["state_dict"], load_checkpoint(ddp / "equal" / "checkpoints" / "last.ckpt")["state_dict"]
    assert one.keys() == ddp_state.keys()
    for key in one:
        torch.testing.assert_close(ddp_state[key], one[key], rtol=1e-4, atol=1e-6, msg=key)
    # The method keeps the banks identical on both ranks itself: nothing had to be broadcast.
    for bank in ("video_bank", "audio_bank"):
        assert torch.equal(two[0][bank], two[1][bank])
        torch.testing.assert_close(two[0][bank], one[f"criterion.{bank}.weight"], rtol=1e-4, atol=1e-6)


def test_memory_banks_are_not_broadcast_unless_asked(ddp):
    for name, broadcast in (("bcast_off", False), ("bcast_on", True)):
        r0, r1 = (torch.load(ddp / f"{name}_rank{r}.pt") for r in (0, 1))
        untouched = torch.ones(r0["video_bank"].shape[0], dtype=torch.bool)
        untouched[r0["touched"]] = False
        assert 0 < int(untouched.sum()) < untouched.numel()
        a, b = r0["video_bank"][untouched], r1["video_bank"][untouched]
        if broadcast:  # DDP sent rank 0's bank over rank 1's at the step's forward
            assert torch.equal(b, a), name
        else:  # rank 1's own rows survive the step
            assert torch.equal(b, -a), name


def test_avssl_extract_under_torchrun_writes_what_one_process_writes(ddp, tmp_path):
    from avssl.apps.cli import main

    assert main(["extract", str(ddp / "equal" / "config.yaml"), "data.test_clips=2", "eval.batch_size=5",
                 "--modality", "audio", "--output", str(tmp_path / "one.pt")]) == 0
    one, two = torch.load(tmp_path / "one.pt"), torch.load(ddp / "extract.pt")
    assert two["features"].shape == (48, one["features"].shape[1])  # 24 videos × 2 clips, each once
    for key in ("labels", "index", "view"):
        assert torch.equal(two[key], one[key]), key
    assert two["paths"] == one["paths"]
    torch.testing.assert_close(two["features"], one["features"], rtol=1e-5, atol=1e-6)
