"""The CMA positives figure: reference videos, their CMA positives, video-only and audio-only neighbours."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from avssl.eval.plots import cma_neighbour_table, plot_cma_positives


def test_table_tells_agreement_from_single_space_neighbours_and_the_png_is_written(tmp_path):
    g = torch.Generator().manual_seed(0)
    n, d = 12, 8
    v = F.normalize(torch.randn(n, d, generator=g), dim=1)
    a = F.normalize(torch.randn(n, d, generator=g), dim=1)
    # video 1 agrees with video 0 in both spaces; video 2 only in video space, video 3 only in audio space
    v[1], a[1] = v[0] + 0.05, a[0] + 0.05
    v[2], a[3] = v[0] + 0.01, a[0] + 0.01
    v, a = F.normalize(v, dim=1), F.normalize(a, dim=1)
    t = cma_neighbour_table(v, a, refs=[0], k=1)
    assert (int(t["cma"][0, 0]), int(t["video"][0, 0]), int(t["audio"][0, 0])) == (1, 2, 3)
    frames = [torch.full((8, 8, 3), 20 * i, dtype=torch.uint8) for i in range(n)]
    path = tmp_path / "cma.png"
    plot_cma_positives(frames, cma_neighbour_table(v, a, refs=[0, 5], k=3), [0, 5], path, labels=[i % 3 for i in range(n)])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figure_from_an_avid_cma_checkpoint(synth_corpus, tmp_path):
    from tiny import tiny_overrides

    from avssl.config import load_config
    from avssl.engine import fit
    from avssl.eval.plots import cma_figure

    cfg = load_config(overrides=tiny_overrides(synth_corpus, tmp_path, method="avid_cma", **{
        "data.audio": True, "method.proj_hidden": 16, "method.proj_dim": 8, "method.num_negatives": 8}))
    ckpt = fit(cfg, resume=False)
    table = cma_figure(cfg, ckpt, refs=[0, 7], path=str(tmp_path / "cma.png"), k=3)
    assert (tmp_path / "cma.png").exists()
    for kind in ("cma", "video", "audio"):
        assert len(table[kind]) == 2 and all(len(r) == 3 for r in table[kind])
        assert 0 not in table[kind][0] and 7 not in table[kind][1]  # never the reference itself

    # The same from the command line, with the config the run saved.
    from avssl.apps.cli import main

    out = tmp_path / "cli.png"
    assert main(["cma-figure", str(tmp_path / "config.yaml"), "--checkpoint", ckpt, "--refs", "2", "--k", "2",
                 "--out", str(out)]) == 0
    assert out.stat().st_size > 0
