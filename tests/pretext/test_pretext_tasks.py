"""Pretext tasks: samplers' orders and labels (no shortcuts), permutation sets, the tracker against the
synthetic corpus's true trajectories, losses against direct formulas, learning, and training runs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from avssl.pretext.spatial import (NEIGHBOURS, grid_tiles, max_hamming_permutations, min_hamming_distance,
                                      rotate)
from avssl.pretext.temporal import frame_motion, gather_clips, inverse_permutation, order_tuples, permutations
from avssl.losses import build_loss
from avssl.pretext import build_pretext_task


# -- temporal order ------------------------------------------------------------------------------
def test_order_tuples_orders_and_labels():
    g = torch.Generator().manual_seed(0)
    motion = torch.rand(4000, 16, generator=g)
    idx, label = order_tuples(motion, positive_ratio=0.25, generator=g)
    mono = ((idx[:, 0] < idx[:, 1]) & (idx[:, 1] < idx[:, 2])) | ((idx[:, 0] > idx[:, 1]) & (idx[:, 1] > idx[:, 2]))
    assert torch.equal(mono, label.bool())  # positives are in order (either direction), negatives never
    assert abs(label.float().mean().item() - 0.25) < 0.03
    assert (idx >= 0).all() and (idx < 16).all()
    # Both directions occur among positives, and both kinds of negatives (middle before and after).
    pos, neg = idx[label == 1], idx[label == 0]
    assert (pos[:, 0] < pos[:, 2]).any() and (pos[:, 0] > pos[:, 2]).any()
    lo, hi = neg.min(1).values, neg.max(1).values
    assert (neg[:, 1] == lo).any() and (neg[:, 1] == hi).any()


def test_order_tuples_have_no_spacing_shortcut():
    g = torch.Generator().manual_seed(1)
    idx, label = order_tuples(torch.ones(20000, 16), positive_ratio=0.5, generator=g)
    outer = (idx[:, 2] - idx[:, 0]).abs()
    # The distance between the tuple's ends has the same distribution for both labels, and gaps vary.
    hp = torch.bincount(outer[label == 1], minlength=16).float()
    hn = torch.bincount(outer[label == 0], minlength=16).float()
    assert (hp / hp.sum() - hn / hn.sum()).abs().max() < 0.02
    assert len(outer.unique()) > 5


def test_order_tuples_come_from_the_high_motion_window():
    motion = torch.zeros(200, 30)
    motion[:, 10:18] = 1.0
    idx, _ = order_tuples(motion, window=8, generator=torch.Generator().manual_seed(0))
    assert (idx >= 10).all() and (idx < 18).all()
    x = torch.zeros(1, 1, 5, 2, 2)
    x[0, 0, 3] = 1.0
    assert torch.allclose(frame_motion(x)[0], torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0]))


def test_vcop_labels_undo_the_shuffle():
    task = build_pretext_task("vcop", 8, num_clips=3, clip_frames=2, gap=1)
    t = 12
    x = torch.arange(t).float().view(1, 1, t, 1, 1).expand(5, 3, t, 4, 4).contiguous()  # content = frame number
    clips, starts, label = task.sample(x, torch.Generator().manual_seed(0))
    assert clips.shape == (5, 3, 3, 2, 4, 4)
    first_frame = clips[:, :, 0, 0, 0, 0]  # B×N: the frame each slot starts at
    assert torch.equal(first_frame.long(), starts)
    restored = first_frame.gather(1, inverse_permutation(task.perms[label]))
    assert (restored.diff(dim=1) == 3).all()  # clip_frames + gap apart, in order again
    with pytest.raises(ValueError, match="data.num_frames"):
        task.sample(torch.zeros(1, 3, 7, 4, 4))  # needs 3·2 + 2·1 = 8 frames
    assert permutations(3).shape == (6, 3)


def test_temporal_order_learns_the_direction_of_motion():
    torch.manual_seed(0)
    task = build_pretext_task("temporal_order", 16, positive_ratio=0.5, hidden=32)

    class Tiny(nn.Module):  # one frame -> where the dot is
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(1, 16, (1, 3, 3), padding=(0, 1, 1))

        def forward(self, v):
            return self.conv(v).flatten(2).amax(2)

    enc = Tiny()
    opt = torch.optim.Adam([*enc.parameters(), *task.parameters()], lr=0.01)
    x = torch.zeros(32, 1, 8, 8, 8)
    for t in range(8):
        x[:, 0, t, 4, t] = 1.0  # a dot moving right, one column per frame
    g = torch.Generator().manual_seed(0)
    accs = []
    for _ in range(150):
        out = task(enc, x, g)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        accs.append(float(out["acc"]))
    assert np.mean(accs[-20:]) > 0.8


def test_vcop_learns_a_visible_clip_order():
    # A bar sweeping left to right from a random start: each sub-clip's position tells its place, so
    # sampler, labels and pairwise head must agree for the 6-way accuracy to leave chance (1/6).
    torch.manual_seed(0)
    task = build_pretext_task("vcop", 16, num_clips=3, clip_frames=2, gap=1, hidden=32)

    class Tiny(nn.Module):  # a short clip -> where the bar is (column profile of a 1×1 conv)
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(1, 2, 1)
            self.fc = nn.Linear(2 * 16, 16)

        def forward(self, v):
            return self.fc(self.conv(v).mean((2, 3)).flatten(1))

    enc = Tiny()
    opt = torch.optim.Adam([*enc.parameters(), *task.parameters()], lr=0.01)
    g = torch.Generator().manual_seed(0)
    accs = []
    for _ in range(150):
        x = torch.zeros(32, 1, 8, 4, 16)
        start = torch.randint(0, 8, (32,))
        for t in range(8):
            x[torch.arange(32), 0, t, :, start + t] = 1.0
        out = task(enc, x, g)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        accs.append(float(out["acc"]))
    assert np.mean(accs[:10]) < 0.4
    assert np.mean(accs[-20:]) > 0.9


# -- spatial tasks ----------------------------------------------------------------------------------
def test_permutation_set_size_uniqueness_and_distance():
    p = max_hamming_permutations(100, 9, seed=0)
    assert p.shape == (100, 9)
    assert all(sorted(r) == list(range(9)) for r in p.tolist())
    assert len({tuple(r) for r in p.tolist()}) == 100
    assert min_hamming_distance(p) >= 6
    assert torch.equal(p, max_hamming_permutations(100, 9, seed=0))
    assert not torch.equal(p, max_hamming_permutations(100, 9, seed=1))
    assert min_hamming_distance(max_hamming_permutations(4, 9, seed=0)) == 9  # derangements of each other
    with pytest.raises(ValueError, match="only 24"):
        max_hamming_permutations(30, 4)


def test_rotation_labels_rotate_back_to_the_input():
    task = build_pretext_task("rotation", 8)
    for x in (torch.randn(3, 3, 8, 8), torch.randn(2, 3, 4, 8, 8)):
        rotated, k = task.sample(x)
        assert rotated.shape[0] == 4 * x.shape[0]
        back = torch.stack([torch.rot90(r, -int(kk), dims=(-2, -1)) for r, kk in zip(rotated, k)])
        assert torch.equal(back, x.repeat(4, *([1] * (x.dim() - 1))))
    assert torch.equal(rotate(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]), torch.tensor([1]))[0, 0],
                       torch.tensor([[2.0, 4.0], [1.0, 3.0]]))  # 90° counter-clockwise


def _cell_image(b: int = 2, size: int = 30, frames: int = 0) -> torch.Tensor:
    cell = torch.arange(9).float().view(3, 3).repeat_interleave(size // 3, 0).repeat_interleave(size // 3, 1)
    x = cell.expand(b, 3, size, size).clone()
    return x if not frames else x[:, :, None].expand(b, 3, frames, size, size).contiguous()


def test_jigsaw_tiles_and_labels_reassemble():
    task = build_pretext_task("jigsaw", 8, num_permutations=24)
    for x in (_cell_image(), _cell_image(frames=2)):
        tiles, label = task.sample(x, torch.Generator().manual_seed(0))
        cell_of_slot = tiles.flatten(2).mean(2)  # each tile is filled with its cell's number
        assert torch.equal(cell_of_slot, task.perms[label].float())
        restored = cell_of_slot.gather(1, inverse_permutation(task.perms[label]))
        assert torch.equal(restored, torch.arange(9).float().expand(x.shape[0], 9))
    t = grid_tiles(torch.randn(2, 3, 30, 30), tile_fraction=0.8)
    assert t.shape == (2, 9, 3, 8, 8)


def test_relative_position_labels_name_the_neighbour():
    task = build_pretext_task("relative_position", 8)
    pair, label = task.sample(_cell_image(b=64), torch.Generator().manual_seed(0))
    centre, other = pair[:, 0].flatten(1).mean(1), pair[:, 1].flatten(1).mean(1)
    assert (centre == 4).all()
    expect = torch.tensor([(1 + dy) * 3 + 1 + dx for dy, dx in NEIGHBOURS]).float()[label]
    assert torch.equal(other, expect) and len(label.unique()) == 8


def test_classifier_tasks_give_the_cross_entropy_and_accuracy_of_their_heads():
    torch.manual_seed(0)
    for name, k, classes in (("temporal_order", 3, 2), ("rotation", 1, 4), ("relative_position", 2, 8)):
        task = build_pretext_task(name, 5)
        f = torch.randn(6, k, 5)
        y = torch.randint(0, classes, (6,))
        logits = task.head.mlp(f.flatten(1))
        direct = -torch.log_softmax(logits, 1)[torch.arange(6), y].mean()
        out = task.classify(f, y)
        assert torch.allclose(out["loss"], direct, atol=1e-6)
        assert float(out["acc"]) == float((logits.argmax(1) == y).float().mean())
    vcop = build_pretext_task("vcop", 4, num_clips=3, hidden=7)
    f, y = torch.randn(5, 3, 4), torch.randint(0, 6, (5,))
    pairs = [torch.relu(vcop.head.pair_mlp[0](torch.cat([f[:, i], f[:, j]], 1))) for i, j in ((0, 1), (0, 2), (1, 2))]
    logits = vcop.head.classifier(torch.cat(pairs, 1))
    assert logits.shape == (5, 6)
    assert torch.allclose(vcop.classify(f, y)["loss"], F.cross_entropy(logits, y), atol=1e-6)


def test_task_head_loss_names_are_deprecated_aliases_of_the_same_computation():
    torch.manual_seed(0)
    for name, kw, shape, classes in (("temporal_order", {}, (6, 3, 5), 2), ("jigsaw", {"num_permutations": 7},
                                                                            (6, 9, 5), 7),
                                     ("vcop", {"num_clips": 3, "hidden": 7}, (6, 3, 5), 6)):
        with pytest.warns(DeprecationWarning, match=f"build_pretext_task\\('{name}'"):
            loss = build_loss(name, feat_dim=5, **kw)
        f, y = torch.randn(*shape), torch.randint(0, classes, (6,))
        assert torch.allclose(loss(f, y), F.cross_entropy(loss.head(f), y), atol=1e-6)


def test_checkpoints_from_before_the_heads_moved_into_the_tasks_still_load():
    for name, kw, renames in (("rotation", {}, {"head.mlp.layers.0.": "loss.head."}),
                              ("jigsaw", {"num_permutations": 4, "hidden": 3}, {"head.mlp.layers.": "loss.head."}),
                              ("vcop", {"hidden": 3}, {"head.": "loss."}),
                              ("tracking_triplet", {"embed_dim": 3}, {"head.layers.": "head."})):
        task = build_pretext_task(name, 5, **kw)
        new = {k: torch.randn_like(v) for k, v in task.state_dict().items()}
        old = {}
        for k, v in new.items():
            prefix = next((p for p in renames if k.startswith(p)), None)
            old[(renames[prefix] + k[len(prefix):]) if prefix else k] = v
        assert set(old) != set(new)
        fresh = build_pretext_task(name, 5, **kw)
        fresh.load_state_dict(old, strict=True)
        assert all(torch.equal(fresh.state_dict()[k], v) for k, v in new.items())


def test_pirl_loss_direct_formula_and_known_values():
    torch.manual_seed(0)
    f, g = torch.randn(6, 8), torch.randn(6, 8)
    loss = build_loss("pirl", temperature=0.5)
    a, b = F.normalize(f, dim=1), F.normalize(g, dim=1)

    def nce(q, k):  # -mean_i log softmax_j(<q_i, k_j>/τ)[i]
        return -np.mean([math.log(math.exp(float(q[i] @ k[i]) / 0.5) /
                                  sum(math.exp(float(q[i] @ k[j]) / 0.5) for j in range(6))) for i in range(6)])

    assert abs(float(loss(f, g)) - 0.5 * (nce(b, a) + nce(a, b))) < 1e-5
    eye = torch.eye(6) * 10
    assert float(build_loss("pirl", temperature=0.07)(eye, eye)) < 1e-3 < float(build_loss("pirl")(f, g))


def test_pirl_task_runs_on_images_and_clips():
    from avssl.models import build_encoder

    img, vid = build_encoder("resnet18", base_channels=4), build_encoder("r3d_tiny", base_channels=4)
    for enc, x in ((img, torch.randn(3, 3, 30, 30)), (vid, torch.randn(3, 3, 2, 30, 30))):
        task = build_pretext_task("pirl", enc.out_dim)
        out = task(enc, x, torch.Generator().manual_seed(0))
        out["loss"].backward()
        assert out["loss"].dim() == 0 and 0 <= float(out["acc"]) <= 1


# -- tracking ----------------------------------------------------------------------------------------
def test_triplet_loss_against_a_loop_with_hard_mining():
    torch.manual_seed(0)
    a, p = torch.randn(5, 4), torch.randn(5, 4)
    loss_fn = build_loss("tracking_triplet", margin=0.5, num_negatives=4, hard_fraction=1.0)
    got = float(loss_fn(a, p))
    an, pn = F.normalize(a, dim=1), F.normalize(p, dim=1)
    cand = torch.cat([an, pn])
    total = 0.0
    for i in range(5):
        d = [(1 - float(an[i] @ cand[j]), j) for j in range(10) if j not in (i, i + 5)]
        hardest = sorted(d)[:4]
        d_pos = 1 - float(an[i] @ pn[i])
        total += sum(max(0.0, d_pos - dn + 0.5) for dn, _ in hardest)
    assert abs(got - total / 20) < 1e-6
    # With hard_fraction 0.5, the first half of the chosen negatives are the hardest.
    mixed = build_loss("tracking_triplet", num_negatives=4, hard_fraction=0.5)
    dist = torch.rand(3, 6)
    dist[torch.arange(3), torch.arange(3)] = float("inf")
    dist[torch.arange(3), torch.arange(3) + 3] = float("inf")
    sel = mixed.select_negatives(dist, torch.Generator().manual_seed(0))
    assert torch.equal(sel[:, :2], dist.argsort(1)[:, :2])
    assert all(len(set(r)) == 4 and not {i, i + 3} & set(r) for i, r in enumerate(sel.tolist()))


MOVING = ["bounce", "fall", "figure8", "orbit", "pendulum", "slide", "spiral", "zigzag"]


@pytest.mark.parametrize("name", MOVING)
def test_tracker_follows_the_synthetic_object(name):
    from avssl.apps.synthetic import plan_video, render_video
    from avssl.pretext.tracking import track_ncc

    entry = plan_video(name, 0, seconds=2.0, size=64, fps=16, seed=0)
    frames, _ = render_video(entry)
    f = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    tr = entry["trajectory"]
    ys, xs = np.array(tr["y"]), np.array(tr["x"])
    got = track_ncc(f, (int(round(ys[0])), int(round(xs[0]))), patch=16, search=10).numpy()
    err = np.hypot(got[:, 0] - ys, got[:, 1] - xs)
    assert len(err) == 32 and err.mean() <= 2.0 and err.max() <= 4.0


def test_saliency_finds_the_moving_square_and_fb_check_flags_nothing_on_a_clean_track():
    from avssl.pretext.tracking import forward_backward_error, ncc_map, salient_centres

    frames = torch.zeros(8, 3, 48, 48)
    frames[:, 1] = 0.3  # a static green background
    for t in range(8):
        frames[t, :, 20:28, 5 + 3 * t: 13 + 3 * t] = 1.0
    c = salient_centres(frames, patch=8, window=2)[0]
    assert abs(int(c[0]) - 24) <= 4 and 4 <= int(c[1]) <= 20
    track, err = forward_backward_error(frames, (24, 9), patch=12, search=6)  # the patch holds edges
    assert err <= 1.0 and abs(int(track[-1, 1]) - (9 + 21)) <= 1
    # NCC at one position equals the Pearson correlation of template and window.
    s, tpl = torch.randn(2, 9, 9), torch.randn(2, 4, 4)
    w = s[:, 2:6, 3:7]
    pearson = float(torch.corrcoef(torch.stack([w.flatten(), tpl.flatten()]))[0, 1])
    assert abs(float(ncc_map(s, tpl)[2, 3]) - pearson) < 1e-5


def test_tracking_task_pairs_come_from_one_track():
    from avssl.models import build_encoder

    task = build_pretext_task("tracking_triplet", 16, patch=8, patch_size=16, search=6, embed_dim=8)
    x = torch.zeros(3, 3, 6, 32, 32)
    for b in range(3):
        for t in range(6):
            x[b, b % 3, t, 4 + 8 * b: 10 + 8 * b, 2 + 3 * t: 8 + 3 * t] = 1.0
    anchors, positives, tracks, kept = task.sample(x)
    assert anchors.shape == (3, 3, 16, 16) and kept.all()
    # Each track moves right by 3 px per frame on its own row band.
    assert ((tracks[:, -1, 1] - tracks[:, 0, 1]) - 15).abs().max() <= 1
    assert (tracks[:, :, 0].float().std(1) < 1).all()
    enc = build_encoder("r3d_tiny", base_channels=4)
    task = build_pretext_task("tracking_triplet", enc.out_dim, patch=8, patch_size=16, search=6)
    out = task(enc, x)
    out["loss"].backward()
    assert out["loss"] >= 0 and float(out["kept"]) == 1.0


# -- training runs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name,task", [("temporal_order", "{}"), ("jigsaw", "{num_permutations: 12}")])
def test_task_trains_as_a_method(synth_corpus, tmp_path, name, task):
    from tiny import tiny_overrides

    from avssl.config import load_config
    from avssl.engine import fit, load_method
    from avssl.eval import encoder_from

    cfg = load_config(overrides=tiny_overrides(synth_corpus, tmp_path, method=name, **{
        "data.num_frames": 6, "method.modality": "video", "method.task": task}))
    ckpt = fit(cfg, resume=False)
    method = load_method(ckpt)
    assert type(method.task).__name__ in ("TemporalOrder", "Jigsaw")
    enc = encoder_from(cfg, ckpt, "video")
    assert enc(torch.randn(1, 3, 4, 32, 32)).shape == (1, enc.out_dim)


def test_avid_cma_with_temporal_order_as_extra_objective(synth_corpus, tmp_path):
    import csv

    from tiny import tiny_overrides

    from avssl.config import load_config
    from avssl.engine import fit

    cfg = load_config(overrides=tiny_overrides(synth_corpus, tmp_path, method="avid_cma", **{
        "data.audio": True, "data.num_frames": 6, "method.proj_hidden": 16, "method.proj_dim": 8,
        "method.num_negatives": 8, "method.extra_objectives": "{temporal_order: {weight: 0.5, hidden: 16}}"}))
    assert fit(cfg, resume=False)
    with open(tmp_path / "logs" / "version_0" / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert any(h.startswith("train/temporal_order/loss") for h in header)
