"""AVID (cross / self / joint) and AVID-CMA objectives against loop-by-loop implementations of their formulas."""
from __future__ import annotations

import io
import math
from typing import List, Optional

import pytest
import torch

from avssl.losses import build_loss
from avssl.losses.audiovisual import AVIDLoss, CMALoss

T = 0.07


def _embeddings(b: int, d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g, dtype=torch.float64), torch.randn(b, d, generator=g, dtype=torch.float64)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm()


def _info_nce_ref(anchor, pos_rows: List[torch.Tensor], neg_rows: List[torch.Tensor], form: str = "separate"):
    """One anchor: InfoNCE over explicit lists of bank rows (float64, autograd through ``anchor``)."""
    sp = [torch.dot(anchor, r) / T for r in pos_rows]
    sn = [torch.dot(anchor, r) / T for r in neg_rows]
    neg_sum = sum(torch.exp(s) for s in sn)
    if form == "pooled":
        pos_sum = sum(torch.exp(s) for s in sp)
        return -torch.log(pos_sum / (pos_sum + neg_sum))
    return sum(-torch.log(torch.exp(s) / (torch.exp(s) + neg_sum)) for s in sp) / len(sp)


def _nce_ref(anchor, pos_rows, neg_rows, z: float, n: int):
    """One anchor: NCE with p = e^{s}/(Z·N), noise 1/N, K = len(neg_rows) noise samples."""
    k = len(neg_rows)
    p = lambda r: torch.exp(torch.dot(anchor, r) / T) / (z * n)  # noqa: E731
    pos = sum(-torch.log(p(r) / (p(r) + k / n)) for r in pos_rows) / len(pos_rows)
    return pos + sum(-torch.log((k / n) / (p(r) + k / n)) for r in neg_rows)


def _z_ref(anchors_and_banks, negs: List[List[int]]) -> float:
    """Mean of e^{s/T} over every (anchor, negative row) pair of the first forward."""
    vals = [math.exp(float(torch.dot(x[i], bank[j])) / T)
            for x, bank in anchors_and_banks for i in range(len(negs)) for j in negs[i]]
    return sum(vals) / len(vals)


# ----------------------------------------------------------------------------------------------------------
# AVID
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("objective", ["info_nce", "nce"])
@pytest.mark.parametrize("variant", ["cross", "self", "joint"])
def test_avid_matches_loop_reference(variant, objective):
    n, d, b, k = 40, 8, 5, 6
    loss = AVIDLoss(n, dim=d, variant=variant, num_negatives=k, objective=objective, seed=3)
    vbank, abank = loss.video_bank.weight.double().clone(), loss.audio_bank.weight.double().clone()
    v_raw, a_raw = _embeddings(b, d, seed=1)
    idx = torch.tensor([3, 17, 0, 39, 22])
    v_in, a_in = v_raw.float().requires_grad_(), a_raw.float().requires_grad_()
    out = loss(v_in, a_in, idx, generator=torch.Generator().manual_seed(0))
    negs = loss.last_negatives
    assert negs.shape == (b, k) and not (negs == idx.unsqueeze(1)).any()

    v_ref, a_ref = v_raw.clone().requires_grad_(), a_raw.clone().requires_grad_()
    v, a = [_unit(x) for x in v_ref], [_unit(x) for x in a_ref]
    pairs = {"v2a": (v, abank), "a2v": (a, vbank), "v2v": (v, vbank), "a2a": (a, abank)}
    used = {"cross": ["v2a", "a2v"], "self": ["v2v", "a2a"], "joint": ["v2a", "a2v", "v2v", "a2a"]}[variant]
    neg_lists = [negs[i].tolist() for i in range(b)]
    if objective == "nce":
        z = _z_ref([(torch.stack(pairs[t][0]).detach(), pairs[t][1]) for t in used], neg_lists)
        assert float(loss.nce_z) == pytest.approx(z, rel=1e-5)
    terms = {}
    for t in used:
        x, bank = pairs[t]
        per = []
        for i in range(b):
            pos_rows, neg_rows = [bank[idx[i]]], [bank[j] for j in neg_lists[i]]
            per.append(_info_nce_ref(x[i], pos_rows, neg_rows) if objective == "info_nce"
                       else _nce_ref(x[i], pos_rows, neg_rows, z, n))
        terms[t] = sum(per) / b
    xm = (terms["v2a"] + terms["a2v"]) / 2 if "v2a" in terms else None
    wm = (terms["v2v"] + terms["a2a"]) / 2 if "v2v" in terms else None
    expected = {"cross": xm, "self": wm, "joint": None if xm is None or wm is None else (xm + wm) / 2}[variant]
    torch.testing.assert_close(out.double(), expected.detach(), rtol=1e-5, atol=1e-5)
    for t in used:
        assert loss.last_terms[t] == pytest.approx(float(terms[t].detach()), rel=1e-5, abs=1e-5)

    # Gradients reach the embeddings (and match the reference's); the banks never take one.
    out.backward()
    expected.backward()
    torch.testing.assert_close(v_in.grad.double(), v_ref.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a_in.grad.double(), a_ref.grad, rtol=1e-4, atol=1e-5)
    assert float(v_in.grad.abs().sum()) > 0
    for bank in (loss.video_bank, loss.audio_bank):
        assert not bank.weight.requires_grad and bank.weight.grad is None

    # The banks were updated after the loss, with the embeddings of this batch.
    for bank_ref, bank, x in ((vbank, loss.video_bank, v), (abank, loss.audio_bank, a)):
        row = 0.5 * bank_ref[17] + 0.5 * x[1].detach()
        torch.testing.assert_close(bank.weight[17].double(), row / row.norm(), rtol=0, atol=1e-6)
        assert torch.equal(bank.weight[5].double(), bank_ref[5])


def test_avid_whole_bank_negatives():
    n, d = 12, 4
    loss = AVIDLoss(n, dim=d, variant="cross", num_negatives="all")
    vbank, abank = loss.video_bank.weight.double().clone(), loss.audio_bank.weight.double().clone()
    v_raw, a_raw = _embeddings(3, d, seed=2)
    idx = torch.tensor([0, 5, 11])
    out = loss(v_raw.float(), a_raw.float(), idx)
    assert loss.last_negatives is None
    total = 0
    for x_raw, bank in ((v_raw, abank), (a_raw, vbank)):
        for i in range(3):
            x = _unit(x_raw[i])
            others = [bank[j] for j in range(n) if j != int(idx[i])]
            total = total + _info_nce_ref(x, [bank[idx[i]]], others) / 6
    torch.testing.assert_close(out.double(), total, rtol=1e-5, atol=1e-5)
    nce = AVIDLoss(n, dim=d, variant="self", num_negatives=None, objective="nce")
    vb = nce.video_bank.weight.double().clone()
    ab = nce.audio_bank.weight.double().clone()
    out = nce(v_raw.float(), a_raw.float(), idx)
    negs = [[j for j in range(n) if j != int(i)] for i in idx]
    z = _z_ref([(torch.stack([_unit(x) for x in v_raw]), vb), (torch.stack([_unit(x) for x in a_raw]), ab)], negs)
    ref = sum(_nce_ref(_unit(x_raw[i]), [bank[idx[i]]], [bank[j] for j in negs[i]], z, n) / 6
              for x_raw, bank in ((v_raw, vb), (a_raw, ab)) for i in range(3))
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


def test_nce_constant_is_estimated_once_and_checkpointed():
    loss = AVIDLoss(30, dim=4, objective="nce", num_negatives=5)
    assert float(loss.nce_z) == -1.0
    v, a = _embeddings(4, 4, seed=0)
    loss(v.float(), a.float(), torch.arange(4))
    z = float(loss.nce_z)
    assert z > 0
    loss(v.float() * -1, a.float(), torch.arange(4, 8))
    assert float(loss.nce_z) == z
    fresh = AVIDLoss(30, dim=4, objective="nce", num_negatives=5, seed=7)
    fresh.load_state_dict(loss.state_dict())
    assert float(fresh.nce_z) == z and torch.equal(fresh.video_bank.weight, loss.video_bank.weight)
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    assert torch.equal(fresh(v.float(), a.float(), torch.arange(4), g()),
                       loss(v.float(), a.float(), torch.arange(4), g()))


def test_avid_builder_options_and_errors():
    loss = build_loss("avid", num_data=20, variant="joint", dim=4)
    assert isinstance(loss, AVIDLoss) and loss.variant == "joint"
    assert {"video_bank.weight", "audio_bank.weight", "nce_z"} <= set(loss.state_dict())
    assert not torch.equal(loss.video_bank.weight, loss.audio_bank.weight)
    with pytest.raises(ValueError, match="'cross', 'self', 'joint'"):
        AVIDLoss(20, variant="both")
    with pytest.raises(ValueError, match="'info_nce', 'nce'"):
        AVIDLoss(20, objective="nce2")
    with pytest.raises(ValueError, match="num_negatives"):
        AVIDLoss(20, num_negatives=0)
    with pytest.raises(ValueError, match="video_emb must be B×4"):
        loss(torch.randn(2, 5), torch.randn(2, 4), torch.tensor([0, 1]))


def test_avid_bf16_banks_and_autocast_compute_in_fp32():
    v, a = _embeddings(4, 8, seed=3)
    idx = torch.tensor([1, 2, 3, 4])
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    plain = AVIDLoss(16, dim=8, num_negatives=5)
    under = AVIDLoss(16, dim=8, num_negatives=5)
    ref = plain(v.float(), a.float(), idx, g())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = under(v.float(), a.float(), idx, g())
    assert out.dtype == torch.float32 and torch.equal(out, ref)
    half = AVIDLoss(16, dim=8, num_negatives=5, bank_dtype=torch.bfloat16)
    out = half(v.float(), a.float(), idx, g())
    assert out.dtype == torch.float32 and half.video_bank.weight.dtype == torch.bfloat16
    assert abs(float(out) - float(ref)) < 0.1  # same seeds, banks rounded to bf16


# ----------------------------------------------------------------------------------------------------------
# CMA
# ----------------------------------------------------------------------------------------------------------
def _cma_reference(loss: CMALoss, vbank, abank, pos_sets: Optional[torch.Tensor], v_raw, a_raw, idx, negs,
                   kx: int, kw: int, form: str = "separate", z: Optional[float] = None):
    n = loss.num_data
    v, a = [_unit(x) for x in v_raw], [_unit(x) for x in a_raw]

    def one(x, i, bank, pos_rows, neg_ids):
        neg_rows = [bank[j] for j in neg_ids]
        if loss.objective == "nce":
            return _nce_ref(x, pos_rows, neg_rows, z, n)
        return _info_nce_ref(x, pos_rows, neg_rows, form)

    b = len(idx)
    xm = sum(one(v[i], i, abank, [abank[idx[i]]], negs[i][:kx]) + one(a[i], i, vbank, [vbank[idx[i]]], negs[i][:kx])
             for i in range(b)) / (2 * b)
    if pos_sets is None:
        return xm
    wm = sum(one(v[i], i, vbank, [vbank[p] for p in pos_sets[i]], negs[i][:kw])
             + one(a[i], i, abank, [abank[p] for p in pos_sets[i]], negs[i][:kw]) for i in range(b)) / (2 * b)
    return loss.xmodal_weight * xm + loss.wmodal_weight * wm


@pytest.mark.parametrize("objective,form", [("info_nce", "separate"), ("info_nce", "pooled"), ("nce", "separate")])
def test_cma_matches_loop_reference(objective, form):
    n, d, b, k, kx, kw = 50, 8, 4, 5, 12, 6
    loss = CMALoss(n, dim=d, num_negatives=kx, num_positive_negatives=kw, k=k, objective=objective,
                   positive_form=form, xmodal_weight=0.3, wmodal_weight=0.7)
    v_raw, a_raw = _embeddings(b, d, seed=4)
    idx = torch.tensor([2, 9, 33, 49])

    # Before positive sets exist: Cross-AVID alone.
    assert not loss.has_positives
    vbank, abank = loss.video_bank.weight.double().clone(), loss.audio_bank.weight.double().clone()
    out = loss(v_raw.float(), a_raw.float(), idx, generator=torch.Generator().manual_seed(0))
    negs = loss.last_negatives.tolist()
    z = None
    if objective == "nce":
        z = _z_ref([(torch.stack([_unit(x) for x in v_raw]), abank), (torch.stack([_unit(x) for x in a_raw]), vbank)],
                   negs)
        assert float(loss.nce_z) == pytest.approx(z, rel=1e-5)
    ref = _cma_reference(loss, vbank, abank, None, v_raw, a_raw, idx, negs, kx, kw, form, z)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    assert set(loss.last_terms) == {"v2a", "a2v", "xmodal"}

    # With positive sets: + within-modal positive-set discrimination.
    pos = loss.update_positives(chunk_size=7)
    assert loss.has_positives and pos.shape == (n, k)
    vbank, abank = loss.video_bank.weight.double().clone(), loss.audio_bank.weight.double().clone()
    v_in = v_raw.float().requires_grad_()
    out = loss(v_in, a_raw.float(), idx, generator=torch.Generator().manual_seed(1))
    negs = loss.last_negatives.tolist()
    pos_sets = [pos[i].tolist() for i in idx]
    for i in range(b):
        assert not (set(negs[i]) & (set(pos_sets[i]) | {int(idx[i])}))
    ref = _cma_reference(loss, vbank, abank, pos_sets, v_raw, a_raw, idx, negs, kx, kw, form,
                         float(loss.nce_z) if objective == "nce" else None)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    assert set(loss.last_terms) == {"v2a", "a2v", "v2v", "a2a", "xmodal", "wmodal"}
    out.backward()
    assert float(v_in.grad.abs().sum()) > 0 and loss.video_bank.weight.grad is None


def test_cma_include_self_and_whole_bank_within_negatives():
    n, d = 16, 4
    loss = CMALoss(n, dim=d, num_negatives=4, num_positive_negatives="all", k=3, include_self=True)
    loss.update_positives()
    vbank, abank = loss.video_bank.weight.double().clone(), loss.audio_bank.weight.double().clone()
    v_raw, a_raw = _embeddings(2, d, seed=5)
    idx = torch.tensor([4, 10])
    out = loss(v_raw.float(), a_raw.float(), idx)
    negs = loss.last_negatives.tolist()
    pos = loss.positives
    total = 0
    for i in range(2):
        i_, p = int(idx[i]), pos[idx[i]].tolist()
        outside = [j for j in range(n) if j not in p and j != i_]
        v, a = _unit(v_raw[i]), _unit(a_raw[i])
        xm = (_info_nce_ref(v, [abank[i_]], [abank[j] for j in negs[i]])
              + _info_nce_ref(a, [vbank[i_]], [vbank[j] for j in negs[i]])) / 2
        wm = (_info_nce_ref(v, [vbank[j] for j in [i_] + p], [vbank[j] for j in outside])
              + _info_nce_ref(a, [abank[j] for j in [i_] + p], [abank[j] for j in outside])) / 2
        total = total + (0.5 * xm + 0.5 * wm) / 2
    torch.testing.assert_close(out.double(), total, rtol=1e-5, atol=1e-5)


def test_cma_checkpoint_round_trip():
    n, d = 40, 8
    loss = CMALoss(n, dim=d, num_negatives=10, num_positive_negatives=4, k=4, objective="nce")
    for step in range(3):
        v, a = _embeddings(5, d, seed=10 + step)
        loss(v.float(), a.float(), torch.arange(5 * step, 5 * step + 5))
    loss.update_positives(chunk_size=16)
    buf = io.BytesIO()
    torch.save(loss.state_dict(), buf)
    fresh = CMALoss(n, dim=d, num_negatives=10, num_positive_negatives=4, k=4, objective="nce", seed=5)
    assert not fresh.has_positives
    fresh.load_state_dict(torch.load(io.BytesIO(buf.getvalue())))
    for key in ("video_bank.weight", "audio_bank.weight", "nce_z", "positives"):
        assert torch.equal(fresh.state_dict()[key], loss.state_dict()[key]), key
    assert fresh.has_positives and float(fresh.nce_z) > 0
    v, a = _embeddings(3, d, seed=0)
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    assert torch.equal(fresh(v.float(), a.float(), torch.tensor([1, 2, 3]), g()),
                       loss(v.float(), a.float(), torch.tensor([1, 2, 3]), g()))


def test_cma_takes_banks_from_avid():
    avid = AVIDLoss(30, dim=4, objective="nce", num_negatives=5)
    v, a = _embeddings(6, 4, seed=1)
    avid(v.float(), a.float(), torch.arange(6))
    cma = build_loss("cma", num_data=30, dim=4, k=3, objective="nce", seed=9)
    cma.load_avid_state({"criterion." + key: val for key, val in avid.state_dict().items()})
    assert torch.equal(cma.video_bank.weight, avid.video_bank.weight)
    assert torch.equal(cma.audio_bank.weight, avid.audio_bank.weight)
    assert float(cma.nce_z) == float(avid.nce_z)
    with pytest.raises(KeyError, match="video_bank.weight"):
        cma.load_avid_state({"nce_z": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="k must"):
        CMALoss(10, k=9)
    with pytest.raises(ValueError, match="agreement"):
        CMALoss(10, k=2, agreement="mean")


def test_instance_nuisance_makes_a_low_temperature_punish_class_agreement():
    """Why the demo recipes use τ = 0.2, not the paper's 0.07: when each instance's target embedding is
    mostly its own nuisance (here 80% of the variance; the synthetic corpus's random audio features: 75–79%),
    a video embedding that knows the class exactly scores *worse* than a constant one at τ = 0.07, so
    Cross-AVID pushes the video towards collapse; at τ = 0.2 the same prediction is rewarded. With
    class-dominated targets both temperatures reward it."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    n, classes, d = 180, 10, 16
    labels = torch.arange(n) % classes
    centres = F.normalize(torch.randn(classes, d, generator=g), dim=1)
    noise = torch.randn(n, d, generator=g)
    chance = math.log(n)  # an embedding that tells nothing: every bank row scores the same

    def v2a(class_share: float, tau: float) -> float:
        targets = F.normalize(math.sqrt(class_share) * centres[labels] + math.sqrt((1 - class_share) / d) * noise,
                              dim=1)
        class_mean = F.normalize(torch.stack([targets[labels == c].mean(0) for c in range(classes)]), dim=1)
        loss = AVIDLoss(n, d, num_negatives=None, temperature=tau)
        loss.audio_bank.weight.copy_(targets)
        loss(class_mean[labels], torch.ones(n, d), torch.arange(n))
        return loss.last_terms["v2a"]

    assert v2a(0.2, 0.07) > chance > v2a(0.2, 0.2) + 1.0
    assert v2a(0.9, 0.07) < chance - 2.0 and v2a(0.9, 0.2) < chance - 2.0
