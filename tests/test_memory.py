"""Memory banks (momentum update, sampling, checkpoints) and cross-modal agreement positive sets."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from avssl.memory import MemoryBank, cma_positives


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


# ----------------------------------------------------------------------------------------------------------
# MemoryBank
# ----------------------------------------------------------------------------------------------------------
def test_bank_init_normalised_seeded_and_sized():
    a, b, c = MemoryBank(70, 8, seed=3), MemoryBank(70, 8, seed=3), MemoryBank(70, 8, seed=4)
    torch.testing.assert_close(a.weight.norm(dim=1), torch.ones(70), rtol=0, atol=1e-6)
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)
    assert a.memory_bytes == 70 * 8 * 4
    assert MemoryBank(70, 8, dtype=torch.bfloat16).memory_bytes == 70 * 8 * 2
    assert "weight" in dict(a.named_buffers()) and not list(a.parameters())
    g = torch.Generator().manual_seed(11)
    same = MemoryBank(5, 4, generator=torch.Generator().manual_seed(11))
    assert torch.equal(MemoryBank(5, 4, generator=g).weight, same.weight)
    with pytest.raises(ValueError, match="momentum"):
        MemoryBank(10, 4, momentum=1.5)


def test_update_matches_formula_and_leaves_other_rows():
    bank = MemoryBank(20, 6, momentum=0.3, seed=0)
    old = bank.weight.clone()
    idx = torch.tensor([5, 2, 19])
    feats = torch.randn(3, 6, generator=torch.Generator().manual_seed(1)) * 4  # not normalised
    bank.update(idx, feats)
    expected = old.clone()
    for j, i in enumerate(idx.tolist()):
        f = feats[j] / feats[j].norm()
        row = 0.3 * old[i] + 0.7 * f
        expected[i] = row / row.norm()
    torch.testing.assert_close(bank.weight, expected, rtol=0, atol=1e-6)
    untouched = [i for i in range(20) if i not in idx.tolist()]
    assert torch.equal(bank.weight[untouched], old[untouched])


def test_update_duplicates_average_then_one_step():
    bank = MemoryBank(10, 5, momentum=0.5, seed=0)
    old = bank.weight.clone()
    idx = torch.tensor([4, 1, 4, 4])
    feats = torch.randn(4, 5, generator=torch.Generator().manual_seed(2))
    bank.update(idx, feats)
    nf = _unit(feats)
    mean4 = (nf[0] + nf[2] + nf[3]) / 3
    row4 = 0.5 * old[4] + 0.5 * mean4
    row1 = 0.5 * old[1] + 0.5 * nf[1]
    torch.testing.assert_close(bank.weight[4], row4 / row4.norm(), rtol=0, atol=1e-6)
    torch.testing.assert_close(bank.weight[1], row1 / row1.norm(), rtol=0, atol=1e-6)
    # The batch order of the copies does not matter (up to float rounding), and reruns are bit-identical.
    perm = torch.tensor([3, 1, 0, 2])
    other, again = MemoryBank(10, 5, momentum=0.5, seed=0), MemoryBank(10, 5, momentum=0.5, seed=0)
    other.update(idx[perm], feats[perm])
    again.update(idx, feats)
    torch.testing.assert_close(other.weight, bank.weight, rtol=0, atol=1e-6)
    assert torch.equal(again.weight, bank.weight)


def test_state_dict_round_trip_restores_bank():
    bank = MemoryBank(30, 4, seed=0)
    bank.update(torch.arange(10), torch.randn(10, 4))
    buf = io.BytesIO()
    torch.save(bank.state_dict(), buf)
    fresh = MemoryBank(30, 4, seed=99)
    assert not torch.equal(fresh.weight, bank.weight)
    fresh.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    assert torch.equal(fresh.weight, bank.weight)


def test_bf16_storage_math_in_fp32():
    bank = MemoryBank(12, 8, momentum=0.5, dtype=torch.bfloat16, seed=0)
    assert bank.weight.dtype == torch.bfloat16
    old = bank.weight.float().clone()
    feats = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    bank.update(torch.tensor([0, 7, 3]), feats)
    assert bank.weight.dtype == torch.bfloat16
    for j, i in enumerate([0, 7, 3]):
        row = 0.5 * old[i] + 0.5 * feats[j] / feats[j].norm()
        assert torch.equal(bank.weight[i], (row / row.norm()).to(torch.bfloat16))


def test_update_no_grad_into_bank():
    bank = MemoryBank(8, 3)
    feats = torch.randn(2, 3, requires_grad=True)
    bank.update(torch.tensor([1, 2]), feats * 2)
    assert not bank.weight.requires_grad and bank.weight.grad_fn is None


# ----------------------------------------------------------------------------------------------------------
# Negative sampling
# ----------------------------------------------------------------------------------------------------------
def test_sample_negatives_excludes_own_and_positives_in_range():
    bank = MemoryBank(15, 4)
    idx = torch.tensor([0, 14, 7, 7])
    exclude = torch.tensor([[1, 2, 3], [13, 13, -1], [0, 14, 8], [6, 8, 20]])  # repeats, -1 and 20 are ignored
    neg = bank.sample_negatives(idx, 500, generator=torch.Generator().manual_seed(0), exclude=exclude)
    assert neg.shape == (4, 500) and neg.dtype == torch.long
    assert int(neg.min()) >= 0 and int(neg.max()) < 15
    for r in range(4):
        banned = {int(idx[r])} | {int(e) for e in exclude[r]}
        drawn = set(neg[r].tolist())
        assert not drawn & banned
        assert drawn == set(range(15)) - banned  # 500 draws over <= 14 values: every allowed one appears
    plain = bank.sample_negatives(idx, 300, generator=torch.Generator().manual_seed(1))
    assert not (plain == idx.unsqueeze(1)).any()


def test_sample_negatives_deterministic_with_generator():
    bank = MemoryBank(50, 4)
    idx = torch.arange(6)
    a = bank.sample_negatives(idx, 20, generator=torch.Generator().manual_seed(5))
    b = bank.sample_negatives(idx, 20, generator=torch.Generator().manual_seed(5))
    c = bank.sample_negatives(idx, 20, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sample_negatives_roughly_uniform():
    bank = MemoryBank(10, 2)
    neg = bank.sample_negatives(torch.tensor([3]), 28000, generator=torch.Generator().manual_seed(0),
                                exclude=torch.tensor([[0, 7, 7]]))
    counts = torch.bincount(neg[0], minlength=10).float()
    assert counts[[0, 3, 7]].sum() == 0
    allowed = counts[[1, 2, 4, 5, 6, 8, 9]]
    expected = 28000 / 7  # 4000, sd ≈ 58
    assert float((allowed - expected).abs().max()) < 0.06 * expected


def test_sample_negatives_nothing_left_is_an_error():
    bank = MemoryBank(3, 2)
    with pytest.raises(ValueError, match="nothing left"):
        bank.sample_negatives(torch.tensor([0]), 2, exclude=torch.tensor([[1, 2]]))


# ----------------------------------------------------------------------------------------------------------
# Cross-modal agreement
# ----------------------------------------------------------------------------------------------------------
def _reference_positives(v: torch.Tensor, a: torch.Tensor, k: int, agreement: str) -> torch.Tensor:
    """Full N×N scores, diagonal masked, stable descending sort: ties go to the lower index."""
    v, a = F.normalize(v.float(), dim=1), F.normalize(a.float(), dim=1)
    sv, sa = v @ v.t(), a @ a.t()
    score = {"min": torch.minimum(sv, sa), "max": torch.maximum(sv, sa), "video": sv, "audio": sa}[agreement]
    score.fill_diagonal_(float("-inf"))
    return score.sort(dim=1, descending=True, stable=True).indices[:, :k], score


def _planted(seed: int = 0, dim: int = 64, groups: int = 5):
    """Groups of 4 members close in video AND audio (noise 0.3 around shared centres); per group 2 decoys
    that sit right on the video centre (audio random) and 2 right on the audio centre (video random);
    20 random background instances. Returns video, audio, member lists, video decoys, audio decoys."""
    g = torch.Generator().manual_seed(seed)
    unit = lambda n: _unit(torch.randn(n, dim, generator=g))  # noqa: E731
    noise = lambda n, s: s * unit(n)  # noqa: E731
    vs, aus, members, vdec, adec = [], [], [], [], []
    n = 0
    for _ in range(groups):
        cv, ca = unit(1), unit(1)
        vs += [cv + noise(4, 0.3), cv + noise(2, 0.05), unit(2)]
        aus += [ca + noise(4, 0.3), unit(2), ca + noise(2, 0.05)]
        members.append(list(range(n, n + 4)))
        vdec.append([n + 4, n + 5])
        adec.append([n + 6, n + 7])
        n += 8
    vs.append(unit(20))
    aus.append(unit(20))
    return torch.cat(vs), torch.cat(aus), members, vdec, adec


def test_cma_positives_planted_groups_and_decoys():
    v, a, members, vdec, adec = _planted()
    n = v.shape[0]
    pos_min = cma_positives(v, a, k=3, agreement="min", chunk_size=16)
    pos_video = cma_positives(v, a, k=2, agreement="video", chunk_size=16)
    pos_audio = cma_positives(v, a, k=2, agreement="audio", chunk_size=16)
    pos_max = cma_positives(v, a, k=4, agreement="max", chunk_size=16)
    for grp, vd, ad in zip(members, vdec, adec):
        for i in grp:
            others = set(grp) - {i}
            assert set(pos_min[i].tolist()) == others  # agreement in both spaces finds the group ...
            assert set(pos_video[i].tolist()) == set(vd)  # ... one space alone prefers its decoys
            assert set(pos_audio[i].tolist()) == set(ad)
            assert set(pos_max[i].tolist()) == set(vd) | set(ad)
    for pos in (pos_min, pos_video, pos_audio, pos_max):
        assert not (pos == torch.arange(n).unsqueeze(1)).any()
    assert torch.equal(cma_positives(v, a, k=4, agreement="union", chunk_size=16), pos_max)
    assert torch.equal(cma_positives(v, a, k=3, agreement="consensus", chunk_size=16), pos_min)


@pytest.mark.parametrize("agreement", ["min", "max", "video", "audio"])
def test_cma_chunked_equals_full_reference_with_ties(agreement):
    # ±1 vectors of 16 entries: normalised entries are ±1/4, every cosine is an exact multiple of 1/16, so
    # chunked and full computations give identical scores with very many ties: only the tie rule decides.
    g = torch.Generator().manual_seed(0)
    v = torch.randint(0, 2, (300, 16), generator=g).float() * 2 - 1
    a = torch.randint(0, 2, (300, 16), generator=g).float() * 2 - 1
    ref, _ = _reference_positives(v, a, 10, agreement)
    assert torch.equal(cma_positives(v, a, k=10, agreement=agreement, chunk_size=37), ref)
    # A query range computes just those rows.
    assert torch.equal(cma_positives(v, a, k=10, agreement=agreement, chunk_size=37, rows=(50, 133)), ref[50:133])


@pytest.mark.parametrize("agreement", ["min", "max", "video", "audio"])
def test_cma_chunked_equals_full_reference_continuous(agreement):
    g = torch.Generator().manual_seed(1)
    v, a = torch.randn(300, 24, generator=g), torch.randn(300, 20, generator=g)  # the two may differ in D
    ref, score = _reference_positives(v, a, 12, agreement)
    got = cma_positives(v, a, k=12, agreement=agreement, chunk_size=37)
    # Same selected scores (a matmul over a row chunk may round differently in the last bit, which could
    # only swap near-equal neighbours), and the same indices up to such swaps.
    torch.testing.assert_close(score.gather(1, got), score.gather(1, ref), rtol=0, atol=1e-6)
    assert (got == ref).float().mean() > 0.99


def test_cma_duplicate_rows_take_lowest_indices():
    # 20 identical instances: for each, the 19 others tie at cosine 1 — more than the top-k window holds.
    g = torch.Generator().manual_seed(2)
    v = torch.randn(60, 8, generator=g)
    a = torch.randn(60, 8, generator=g)
    v[10:30], a[10:30] = v[10], a[10]
    pos = cma_positives(v, a, k=5, agreement="min", chunk_size=7)
    assert pos[10].tolist() == [11, 12, 13, 14, 15]
    assert pos[12].tolist() == [10, 11, 13, 14, 15]
    assert pos[29].tolist() == [10, 11, 12, 13, 14]


def test_cma_accepts_banks_and_validates():
    vb, ab = MemoryBank(40, 8, seed=0), MemoryBank(40, 8, seed=1)
    ref, _ = _reference_positives(vb.weight, ab.weight, 6, "min")
    assert torch.equal(cma_positives(vb, ab, k=6, chunk_size=9), ref)
    with pytest.raises(ValueError, match="'min'.*'max'.*'video'.*'audio'"):
        cma_positives(vb, ab, k=6, agreement="both")
    with pytest.raises(ValueError, match="k must"):
        cma_positives(vb, ab, k=40)
    with pytest.raises(ValueError, match="rows"):
        cma_positives(vb, torch.randn(39, 8), k=3)
    bf = MemoryBank(40, 8, dtype=torch.bfloat16)
    assert cma_positives(bf, bf, k=3).shape == (40, 3)


# ----------------------------------------------------------------------------------------------------------
# Under torch.distributed (2 CPU processes, gloo)
# ----------------------------------------------------------------------------------------------------------
_DDP_IDX = ([1, 5, 7], [7, 9])  # rank 1's batch is shorter, and instance 7 is on both ranks


def _ddp_feats(rank: int) -> torch.Tensor:
    return torch.randn(len(_DDP_IDX[rank]), 4, generator=torch.Generator().manual_seed(100 + rank))


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from avssl.losses.audiovisual import CMALoss

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        bank = MemoryBank(20, 4, seed=0)
        bank.update(torch.tensor(_DDP_IDX[rank]), _ddp_feats(rank))
        loss = CMALoss(30, dim=4, k=3, num_negatives=5, objective="nce")
        g = torch.Generator().manual_seed(rank)
        loss(torch.randn(4, 4, generator=g), torch.randn(4, 4, generator=g), torch.arange(4) + 4 * rank)
        loss.update_positives(chunk_size=4)
        torch.save({k: v.clone() for k, v in [("bank", bank.weight), ("positives", loss.positives),
                                               ("video", loss.video_bank.weight), ("audio", loss.audio_bank.weight),
                                               ("z", loss.nce_z)]}, f"{out_dir}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_distributed_updates_keep_ranks_identical(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in range(2))
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
    # The same as one process updating with both ranks' batches (rank-major; 7 averaged over the two).
    single = MemoryBank(20, 4, seed=0)
    single.update(torch.tensor(_DDP_IDX[0] + _DDP_IDX[1]), torch.cat([_ddp_feats(0), _ddp_feats(1)]))
    assert torch.equal(r0["bank"], single.weight)
    # Positive sets computed in shares over the ranks equal the single-process result on the same banks.
    assert torch.equal(r0["positives"], cma_positives(r0["video"], r0["audio"], k=3))
    assert float(r0["z"]) > 0


def test_cma_bench_rows():
    from avssl.apps.bench.cma import CmaBenchmark, measure

    rows = measure(sizes=(300, 500), dim=16, k=5, chunk_size=64, device="cpu", naive_max_n=300,
                         measure_memory=False)
    assert [r["n"] for r in rows] == [300, 500]
    # Last-bit rounding differences between chunk and full matmuls could only reorder near-ties.
    assert isinstance(rows[0]["identical"], bool) and rows[0]["rows_matching"] >= 0.99 and rows[0]["naive_s"] > 0
    assert rows[1]["naive_s"] is None and rows[1]["naive_note"].startswith("skipped (N×N = ")
    # The reported rate is the search's 4·N²·dim matmul flops over its wall time.
    for r in rows:
        assert abs(r["chunked_gflops"] - 4.0 * r["n"] ** 2 * 16 / r["chunked_s"] / 1e9) < 1e-9
        assert r["matmul_gflops"] > 0 and abs(r["matmul_fraction"] - r["chunked_gflops"] / r["matmul_gflops"]) < 1e-12
    assert len(CmaBenchmark().table(rows).rows) == 2
