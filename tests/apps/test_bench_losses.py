"""``avssl bench losses``: the grid, agreement of avssl's losses with the references, the JSON output."""
import json

import pytest

from avssl.apps.bench import run
from avssl.apps.bench.losses import LOSSES, LossesBenchmark, grid, measure


def test_grid_sweeps_dims_for_barlow_only():
    cells = grid(["nt_xent", "barlow_twins"], [8, 16], [4, 32], other_dim=8)
    assert cells == [("nt_xent", 8, 8), ("nt_xent", 16, 8), ("barlow_twins", 8, 4), ("barlow_twins", 8, 32),
                     ("barlow_twins", 16, 4), ("barlow_twins", 16, 32)]
    with pytest.raises(KeyError, match="nope.*nt_xent"):
        grid(["nope"], [8], [8])


@pytest.mark.parametrize("use_lightly", [False, True])
def test_every_loss_agrees_with_its_reference(use_lightly):
    if use_lightly:
        pytest.importorskip("lightly.loss", reason="lightly is optional: pip install avssl[bench]")
    rows = measure(LOSSES, batch_sizes=[8, 16], dims=[16, 32], other_dim=16, device="cpu", repeats=1,
                   measure_memory=False, use_lightly=use_lightly, progress=False)
    assert len(rows) == 6 * 2 + 2 * 2
    for r in rows:
        assert r["agree"], (r["loss"], r["batch"], r["dim"], r["ours_value"], r["ref_value"])
        assert r["ours_ms"] > 0 and r["ref_ms"] > 0
        assert ("lightly" in r["ref"]) == (use_lightly and r["loss"] != "moco")
    assert len(LossesBenchmark().table(rows).rows) == len(rows)


def test_large_cpu_cells_are_skipped_and_json_written(tmp_path):
    rows = measure(["barlow_twins"], batch_sizes=[4096], dims=[8192], device="cpu", repeats=1,
                   measure_memory=False, progress=False)
    assert rows[0]["ours_ms"] is None and "skipped" in rows[0]["note"]
    out = tmp_path / "rows.json"
    got = run("losses", ["--losses", "byol", "--batch-sizes", "8", "--other-dim", "8", "--repeats", "1", "--no-memory",
                         "--out", str(out)])
    data = json.loads(out.read_text())
    assert data == got
    assert [(r["loss"], r["batch"], r["dim"], r["agree"]) for r in data] == [("byol", 8, 8, True)]
