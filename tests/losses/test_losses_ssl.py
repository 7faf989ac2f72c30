"""Self-supervised losses against loop-based implementations of their papers' formulas, known values,
stop-gradients, the MoCo queue, Sinkhorn marginals and mixed precision."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from avssl.losses import available_losses, build_loss
from avssl.losses.clustering import dec_target, sinkhorn, student_t_log_assignment
from avssl.losses.contrastive import MoCoLoss

D64 = torch.float64


def rand(*shape, seed=0, dtype=D64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def leaf(x):
    return x.clone().requires_grad_(True)


def cos(u, v):
    return (u * v).sum() / (u.norm() * v.norm())


def hadamard(n):
    h = torch.ones(1, 1, dtype=D64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


# ------------------------------------------------------------------------------ loop references
def ref_nt_xent(a, b, tau):
    z = torch.cat([a, b])
    n2 = z.shape[0]
    total = 0.0
    for i in range(n2):
        pos = (i + n2 // 2) % n2
        den = sum(torch.exp(cos(z[i], z[j]) / tau) for j in range(n2) if j != i)
        total = total - torch.log(torch.exp(cos(z[i], z[pos]) / tau) / den)
    return total / n2


def ref_moco(q, k, queue, tau):
    total = 0.0
    for i in range(q.shape[0]):
        pos = torch.exp(cos(q[i], k[i]) / tau)
        neg = sum(torch.exp(cos(q[i], queue[j]) / tau) for j in range(queue.shape[0]))
        total = total - torch.log(pos / (pos + neg))
    return total / q.shape[0]


def ref_barlow(a, b, lambd, eps):
    n, d = a.shape

    def standardise(z):
        z = z.tolist()
        mu = [sum(z[r][c] for r in range(n)) / n for c in range(d)]
        var = [sum((z[r][c] - mu[c]) ** 2 for r in range(n)) / n for c in range(d)]
        return [[(z[r][c] - mu[c]) / math.sqrt(var[c] + eps) for c in range(d)] for r in range(n)]

    sa, sb = standardise(a), standardise(b)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(sa[r][i] * sb[r][j] for r in range(n)) / n
            loss = loss + ((1 - c) ** 2 if i == j else lambd * c ** 2)
    return loss


def ref_vicreg(a, b, sim, std, cov, eps):
    n, d = a.shape
    inv = sum(float((a[r, c] - b[r, c]) ** 2) for r in range(n) for c in range(d)) / (n * d)

    def terms(z):
        mu = [float(z[:, c].sum()) / n for c in range(d)]
        var = [sum((float(z[r, c]) - mu[c]) ** 2 for r in range(n)) / (n - 1) for c in range(d)]
        v = sum(max(0.0, 1 - math.sqrt(x + eps)) for x in var) / d
        cv = 0.0
        for i in range(d):
            for j in range(d):
                if i != j:
                    cij = sum((float(z[r, i]) - mu[i]) * (float(z[r, j]) - mu[j]) for r in range(n)) / (n - 1)
                    cv += cij ** 2
        return v, cv / d

    va, ca = terms(a)
    vb, cb = terms(b)
    return sim * inv + std * (va + vb) / 2 + cov * (ca + cb)


def ref_sinkhorn(scores, eps, iterations):
    """Matrix scaling form: P = exp(S/ε) (K×B), u = r / (P v), v = c / (Pᵀ u), codes = B·(diag(u) P diag(v))ᵀ."""
    p = torch.exp(scores.t() / eps)
    k, b = p.shape
    v = torch.ones(b, dtype=p.dtype)
    for _ in range(iterations):
        u = (1.0 / k) / (p @ v)
        v = (1.0 / b) / (p.t() @ u)
    return b * (u[:, None] * p * v[None, :]).t()


def ref_swav_term(code, scores, tau):
    b, k = scores.shape
    total = 0.0
    for i in range(b):
        norm = torch.logsumexp(scores[i] / tau, 0)
        total = total - sum(code[i, j] * (scores[i, j] / tau - norm) for j in range(k))
    return total / b


def ref_dec(z, mu, alpha):
    b, k = z.shape[0], mu.shape[0]
    q = [[(1 + float(((z[i] - mu[j]) ** 2).sum()) / alpha) ** (-(alpha + 1) / 2) for j in range(k)] for i in range(b)]
    q = [[x / sum(row) for x in row] for row in q]
    f = [sum(q[i][j] for i in range(b)) for j in range(k)]
    p = [[q[i][j] ** 2 / f[j] for j in range(k)] for i in range(b)]
    p = [[x / sum(row) for x in row] for row in p]
    return sum(p[i][j] * math.log(p[i][j] / q[i][j]) for i in range(b) for j in range(k)) / b


# ------------------------------------------------------------------------------------- registry
def test_registry_lists_every_loss_and_alias_builds_same_class():
    names = set(available_losses())
    assert {"nt_xent", "info_nce", "moco", "byol", "simsiam", "barlow_twins", "vicreg", "swav", "dec",
            "kmeans", "balanced_assignment", "locality_preserving", "group_sparsity"} <= names
    assert type(build_loss("info_nce")) is type(build_loss("nt_xent"))
    with pytest.raises(KeyError, match="nt_xent"):
        build_loss("nt_xnet")


# ---------------------------------------------------------------------------------- contrastive
def test_nt_xent_matches_loop_formula_values_and_gradients():
    a, b = leaf(rand(5, 7, seed=1)), leaf(rand(5, 7, seed=2))
    ra, rb = leaf(a.detach()), leaf(b.detach())
    loss = build_loss("nt_xent", temperature=0.3)(a, b)
    ref = ref_nt_xent(ra, rb, 0.3)
    assert loss.dtype == D64 and abs(loss.item() - ref.item()) < 1e-10
    loss.backward()
    ref.backward()
    torch.testing.assert_close(a.grad, ra.grad, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(b.grad, rb.grad, rtol=1e-8, atol=1e-10)


def test_nt_xent_default_temperature_and_collapsed_batch():
    a, b = rand(6, 4, seed=3), rand(6, 4, seed=4)
    assert abs(build_loss("nt_xent")(a, b).item() - ref_nt_xent(a, b, 0.1).item()) < 1e-9
    same = torch.ones(6, 4)
    # every similarity is 1: each anchor picks its positive among 2N-1 equal candidates
    assert abs(build_loss("nt_xent")(same, same).item() - math.log(2 * 6 - 1)) < 1e-5


def test_nt_xent_rejects_bad_shapes_and_temperature():
    with pytest.raises(ValueError, match="z_a and z_b"):
        build_loss("nt_xent")(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="temperature"):
        build_loss("nt_xent", temperature=0.0)


def test_moco_loss_uses_queue_before_enqueue_and_detaches_keys():
    loss_fn = MoCoLoss(queue_size=12, dim=6, temperature=0.2, seed=3)
    before = loss_fn.queue.clone()
    q, k = leaf(rand(4, 6, seed=5)), leaf(rand(4, 6, seed=6))
    rq = leaf(q.detach())
    loss = loss_fn(q, k)
    ref = ref_moco(rq, k.detach(), before.to(D64), 0.2)
    assert abs(loss.item() - ref.item()) < 1e-6
    loss.backward()
    ref.backward()
    assert k.grad is None
    torch.testing.assert_close(q.grad, rq.grad, rtol=1e-5, atol=1e-6)
    # the keys went in afterwards, unit-normalised, at rows 0..3
    torch.testing.assert_close(loss_fn.queue[:4], F.normalize(k.detach(), dim=1).float())
    torch.testing.assert_close(loss_fn.queue[4:], before[4:])


def test_moco_queue_is_a_ring_buffer():
    loss_fn = MoCoLoss(queue_size=10, dim=3, seed=0)
    assert loss_fn.queue.shape == (10, 3) and int(loss_fn.queue_ptr) == 0
    torch.testing.assert_close(loss_fn.queue.norm(dim=1), torch.ones(10))
    keys = [F.normalize(rand(4, 3, seed=10 + s, dtype=torch.float32), dim=1) for s in range(3)]
    expected = loss_fn.queue.clone()
    for step, (kk, ptr_after) in enumerate(zip(keys, [4, 8, 2])):
        loss_fn(rand(4, 3, seed=20 + step, dtype=torch.float32), kk)
        for j in range(4):  # key j of this step lands at (ptr + j) mod size, the oldest slot
            expected[(4 * step + j) % 10] = kk[j]
        assert int(loss_fn.queue_ptr) == ptr_after
        torch.testing.assert_close(loss_fn.queue, expected)
    # step 3 wrapped: rows 8, 9 then 0, 1 hold its keys; rows 2..7 still hold steps 1 and 2
    torch.testing.assert_close(loss_fn.queue[[8, 9, 0, 1]], keys[2])
    torch.testing.assert_close(loss_fn.queue[2:4], keys[0][2:])


def test_moco_batch_larger_than_queue_keeps_the_last_keys_and_eval_does_not_enqueue():
    loss_fn = MoCoLoss(queue_size=3, dim=2, seed=0)
    keys = F.normalize(rand(4, 2, seed=1, dtype=torch.float32), dim=1)
    loss_fn(rand(4, 2, dtype=torch.float32), keys)
    # written one by one at 0, 1, 2, 0: key 3 overwrote key 0
    torch.testing.assert_close(loss_fn.queue, keys[[3, 1, 2]])
    assert int(loss_fn.queue_ptr) == 1
    loss_fn.eval()
    before = loss_fn.queue.clone()
    loss_fn(rand(4, 2, dtype=torch.float32), rand(4, 2, seed=9, dtype=torch.float32))
    assert torch.equal(loss_fn.queue, before) and int(loss_fn.queue_ptr) == 1


def test_moco_queue_is_seeded_and_lives_in_the_state_dict():
    a, b = MoCoLoss(queue_size=8, dim=4, seed=7), MoCoLoss(queue_size=8, dim=4, seed=7)
    assert torch.equal(a.queue, b.queue)
    assert not torch.equal(a.queue, MoCoLoss(queue_size=8, dim=4, seed=8).queue)
    a(rand(4, 4, dtype=torch.float32), rand(4, 4, seed=1, dtype=torch.float32))
    state = a.state_dict()
    assert set(state) == {"queue", "queue_ptr"}
    c = MoCoLoss(queue_size=8, dim=4, seed=99)
    c.load_state_dict(state)
    assert torch.equal(c.queue, a.queue) and int(c.queue_ptr) == 4
    with pytest.raises(ValueError, match="dim=4"):
        a(torch.randn(2, 5), torch.randn(2, 5))


# --------------------------------------------------------------------------------- distillation
def test_byol_and_simsiam_match_cosine_formula_and_stop_gradient():
    p, z = leaf(rand(6, 5, seed=1)), leaf(rand(6, 5, seed=2))
    cosines = torch.stack([cos(p[i], z[i]) for i in range(6)]).detach()
    byol = build_loss("byol")(p, z)
    assert abs(byol.item() - (2 - 2 * cosines).mean().item()) < 1e-12
    byol.backward()
    assert z.grad is None and p.grad is not None and torch.isfinite(p.grad).all()
    p2, z2 = leaf(p.detach()), leaf(z.detach())
    simsiam = build_loss("simsiam")(p2, z2)
    assert abs(simsiam.item() + cosines.mean().item()) < 1e-12
    simsiam.backward()
    assert z2.grad is None and p2.grad is not None


def test_byol_and_simsiam_known_values():
    x = rand(4, 3)
    assert abs(build_loss("byol")(x, 2.5 * x).item()) < 1e-12
    assert abs(build_loss("byol")(x, -x).item() - 4.0) < 1e-12
    assert abs(build_loss("simsiam")(x, x).item() + 1.0) < 1e-12
    with pytest.raises(ValueError, match="p and z"):
        build_loss("byol")(x, x[:2])


# ----------------------------------------------------------------------------------- redundancy
def test_barlow_twins_matches_loop_formula():
    a, b = rand(6, 4, seed=1) * 3 + 1, rand(6, 4, seed=2)
    for lambd, eps in [(5.1e-3, 1e-5), (0.7, 0.0)]:
        got = build_loss("barlow_twins", lambd=lambd, eps=eps)(a, b).item()
        assert abs(got - ref_barlow(a, b, lambd, eps)) < 1e-9


def test_barlow_twins_known_values():
    x = rand(8, 5, seed=3) * 4 - 2
    # identical views: C_ii = var/(var+eps) = 1 with eps=0, so the invariance term vanishes
    c_only_inv = build_loss("barlow_twins", lambd=0.0, eps=0.0)(x, x).item()
    assert abs(c_only_inv) < 1e-12
    # orthogonal, standardised features (Hadamard columns): C = I, so the loss is 0 for any λ
    h = hadamard(8)[:, 1:] * 3 + 5
    assert abs(build_loss("barlow_twins", lambd=10.0, eps=0.0)(h, h).item()) < 1e-12
    # anti-correlated views: C = -I, each diagonal term (1 - (-1))² = 4
    hc = hadamard(8)[:, 1:]
    assert abs(build_loss("barlow_twins", lambd=1.0, eps=0.0)(hc, -hc).item() - 4 * 7) < 1e-10


def test_vicreg_matches_loop_formula():
    a, b = rand(7, 4, seed=1) * 0.5, rand(7, 4, seed=2) * 2
    got = build_loss("vicreg")(a, b).item()
    assert abs(got - ref_vicreg(a, b, 25.0, 25.0, 1.0, 1e-4)) < 1e-9
    got = build_loss("vicreg", sim_coeff=2.0, std_coeff=3.0, cov_coeff=0.5, eps=1e-2)(a, b).item()
    assert abs(got - ref_vicreg(a, b, 2.0, 3.0, 0.5, 1e-2)) < 1e-9


def test_vicreg_known_values():
    h = hadamard(8)[:, 1:]  # zero-mean orthogonal columns with unbiased variance 8/7 > 1
    assert abs(build_loss("vicreg")(h, h).item()) < 1e-12
    collapsed = torch.ones(8, 5, dtype=D64)  # zero variance, no covariance: 25 · (1 - sqrt(eps))
    assert abs(build_loss("vicreg")(collapsed, collapsed).item() - 25 * (1 - 1e-2)) < 1e-12


# ------------------------------------------------------------------------------------ Sinkhorn
def test_sinkhorn_matches_matrix_scaling_and_rows_sum_to_one():
    s = rand(12, 5, seed=1) * 0.3
    for iterations in (1, 3):
        q = sinkhorn(s, epsilon=0.05, iterations=iterations)
        torch.testing.assert_close(q, ref_sinkhorn(s, 0.05, iterations), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(q.sum(dim=1), torch.ones(12, dtype=D64), rtol=0, atol=1e-12)
        assert (q >= 0).all()


def test_sinkhorn_fixed_point_equipartitions_prototypes():
    s = F.normalize(rand(24, 6, seed=2), dim=1) @ F.normalize(rand(6, 6, seed=3), dim=1).t()
    q = sinkhorn(s, epsilon=0.05, iterations=200)
    torch.testing.assert_close(q.sum(dim=0), torch.full((6,), 24 / 6, dtype=D64), rtol=0, atol=1e-3)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(24, dtype=D64), rtol=0, atol=1e-12)
    # uniform scores are already at the fixed point: codes 1/K after any number of iterations
    flat = sinkhorn(torch.zeros(10, 4), iterations=3)
    torch.testing.assert_close(flat, torch.full((10, 4), 0.25))


def test_sinkhorn_is_stable_for_large_scores_and_has_no_gradient():
    s = leaf(rand(8, 4, seed=4) * 50 + 100)  # exp(scores/ε) alone would overflow even fp64
    q = sinkhorn(s.float(), epsilon=0.05, iterations=3)
    assert torch.isfinite(q).all() and not q.requires_grad
    torch.testing.assert_close(q.sum(dim=1), torch.ones(8), rtol=0, atol=1e-5)
    # a constant shift of every score cancels
    torch.testing.assert_close(q, sinkhorn(s.float() - 100, epsilon=0.05, iterations=3), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="iterations"):
        sinkhorn(s, iterations=0)


# ---------------------------------------------------------------------------------------- SwAV
def test_swav_matches_swapped_prediction_formula_with_small_crops_and_queue():
    b, k, tau, eps = 6, 5, 0.1, 0.05
    sa, sb, s1, s2 = (leaf(rand(b, k, seed=i) * 0.5) for i in range(4))
    qa, qb = rand(10, k, seed=10) * 0.5, rand(10, k, seed=11) * 0.5
    loss = build_loss("swav", temperature=tau, epsilon=eps, sinkhorn_iterations=3)(
        sa, sb, s1, s2, queue_scores_a=qa, queue_scores_b=qb)
    code_a = ref_sinkhorn(torch.cat([sa.detach(), qa]), eps, 3)[:b]
    code_b = ref_sinkhorn(torch.cat([sb.detach(), qb]), eps, 3)[:b]
    terms = [ref_swav_term(code_a, v, tau) for v in (sb, s1, s2)] + \
            [ref_swav_term(code_b, v, tau) for v in (sa, s1, s2)]
    ref = sum(terms) / 6
    assert abs(loss.item() - ref.item()) < 1e-9
    # gradients reach every view's scores only through the prediction side
    grads = torch.autograd.grad(loss, [sa, sb, s1, s2])
    ref_grads = torch.autograd.grad(ref, [sa, sb, s1, s2])
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-10)


def test_swav_two_views_uniform_scores_give_log_k():
    s = torch.zeros(8, 4, dtype=D64)
    assert abs(build_loss("swav")(s, s).item() - math.log(4)) < 1e-12
    with pytest.raises(ValueError, match="queue_scores_a and queue_scores_b"):
        build_loss("swav")(s, s, queue_scores_a=s)
    with pytest.raises(ValueError, match=r"small_scores\[0\]"):
        build_loss("swav")(s, s, s[:, :3])


# ------------------------------------------------------------------------------ DEC and k-means
def test_dec_matches_loop_formula_and_helpers():
    z, mu = rand(7, 3, seed=1), rand(4, 3, seed=2)
    for alpha in (1.0, 2.5):
        assert abs(build_loss("dec", alpha=alpha)(z, mu).item() - ref_dec(z, mu, alpha)) < 1e-10
    q = student_t_log_assignment(z, mu).exp()
    torch.testing.assert_close(q.sum(dim=1), torch.ones(7, dtype=D64))
    p = dec_target(q)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(7, dtype=D64))
    assert ((p.max(dim=1).values) >= (q.max(dim=1).values) - 1e-12).all()  # sharper than q
    # one cluster: p = q = 1, nothing to learn
    assert abs(build_loss("dec")(z, mu[:1]).item()) < 1e-12


def test_dec_target_is_detached_and_gradients_reach_z_and_centroids():
    z, mu = leaf(rand(5, 3, seed=3)), leaf(rand(3, 3, seed=4))
    loss = build_loss("dec")(z, mu)
    loss.backward()
    # reference: same formula with p treated as a constant
    z2, mu2 = leaf(z.detach()), leaf(mu.detach())
    log_q = student_t_log_assignment(z2, mu2)
    p = dec_target(log_q.detach().exp())
    ((p * (p.log() - log_q)).sum() / 5).backward()
    torch.testing.assert_close(z.grad, z2.grad)
    torch.testing.assert_close(mu.grad, mu2.grad)


def test_kmeans_hard_index_and_soft_assignments():
    z, mu = rand(6, 3, seed=1), rand(4, 3, seed=2)
    d = [[float(((z[i] - mu[k]) ** 2).sum()) for k in range(4)] for i in range(6)]
    hard = sum(min(row) for row in d) / 6
    assert abs(build_loss("kmeans")(z, mu).item() - hard) < 1e-10
    idx = torch.tensor([0, 1, 2, 3, 0, 1])
    assert abs(build_loss("kmeans")(z, mu, idx).item() - sum(d[i][int(idx[i])] for i in range(6)) / 6) < 1e-10
    s = torch.softmax(rand(6, 4, seed=3), dim=1)
    soft = sum(float(s[i, k]) * d[i][k] for i in range(6) for k in range(4))
    assert abs(build_loss("kmeans", reduction="sum")(z, mu, s).item() - soft) < 1e-10
    assert abs(build_loss("kmeans")(mu[[0, 2, 2]], mu).item()) < 1e-12  # points on centroids
    with pytest.raises(ValueError, match="assignments"):
        build_loss("kmeans")(z, mu, torch.ones(6, 3))


# ---------------------------------------------------------------------- clustering regularisers
def test_balanced_assignment_formula_and_known_values():
    probs = torch.softmax(rand(9, 4, seed=1), dim=1)
    mean = [float(probs[:, k].mean()) for k in range(4)]
    ref = sum(m * math.log(m * 4) for m in mean)
    assert abs(build_loss("balanced_assignment")(probs).item() - ref) < 1e-12
    assert abs(build_loss("balanced_assignment")(torch.full((5, 4), 0.25)).item()) < 1e-7
    one = torch.zeros(5, 4)
    one[:, 2] = 1
    assert abs(build_loss("balanced_assignment")(one).item() - math.log(4)) < 1e-6


def test_locality_preserving_matches_brute_force_neighbours():
    z, x = leaf(rand(9, 3, seed=1)), rand(9, 2, 2, seed=2)
    k, sigma = 3, 2.0
    xf, zd = x.reshape(9, -1), z.detach()
    ref = 0.0
    for i in range(9):
        dists = sorted((float(((xf[i] - xf[j]) ** 2).sum()), j) for j in range(9) if j != i)
        for dx, j in dists[:k]:
            ref += math.exp(-dx / sigma) * float(((zd[i] - zd[j]) ** 2).sum())
    loss_fn = build_loss("locality_preserving", k=k, sigma=sigma)
    assert abs(loss_fn(z, x).item() - ref) < 1e-10
    mean = build_loss("locality_preserving", k=k, sigma=sigma, reduction="mean")(z, x).item()
    assert abs(mean - ref / 9) < 1e-10
    # neighbours from z itself, unit weights
    ref_z = 0.0
    for i in range(9):
        dz = sorted(float(((zd[i] - zd[j]) ** 2).sum()) for j in range(9) if j != i)
        ref_z += sum(dz[:k])
    assert abs(build_loss("locality_preserving", k=k, sigma=None)(z).item() - ref_z) < 1e-10
    loss_fn(z, x).backward()
    assert torch.isfinite(z.grad).all()
    with pytest.raises(ValueError, match="k=3"):
        loss_fn(z[:3], x[:3])


def test_group_sparsity_matches_weighted_l21_norm():
    z = leaf(rand(4, 6, seed=1))
    z.data[1, 2:5] = 0  # a whole group at zero: subgradient 0, not NaN
    sizes, zd = [2, 3, 1], z.detach()
    ref, start = 0.0, 0
    for n in sizes:
        ref += sum(math.sqrt(n) * float(zd[i, start:start + n].norm()) for i in range(4))
        start += n
    loss_fn = build_loss("group_sparsity", lambd=0.5)
    assert abs(loss_fn(z, sizes).item() - 0.5 * ref) < 1e-10
    ids = torch.tensor([0, 0, 1, 1, 1, 2])
    assert abs(loss_fn(z, ids).item() - 0.5 * ref) < 1e-10
    loss_fn(z, sizes).backward()
    assert torch.isfinite(z.grad).all() and (z.grad[1, 2:5] == 0).all()
    equal = build_loss("group_sparsity", num_groups=3, reduction="mean")(z).item()
    ref_eq = sum(math.sqrt(2) * float(zd[i, 2 * g:2 * g + 2].norm()) for i in range(4) for g in range(3)) / 4
    assert abs(equal - ref_eq) < 1e-10
    with pytest.raises(ValueError, match="num_groups=4"):
        build_loss("group_sparsity", num_groups=4)(z)


# ------------------------------------------------------------------------------ mixed precision
CASES = {
    "nt_xent": (lambda h: (h[:, :8], h[:, 8:]), {}),
    "moco": (lambda h: (h[:, :8], h[:, 8:]), {"queue_size": 16, "dim": 8}),
    "byol": (lambda h: (h[:, :8], h[:, 8:]), {}),
    "simsiam": (lambda h: (h[:, :8], h[:, 8:]), {}),
    "barlow_twins": (lambda h: (h[:, :8], h[:, 8:]), {}),
    "vicreg": (lambda h: (h[:, :8], h[:, 8:]), {}),
    "swav": (lambda h: (h[:, :8], h[:, 8:]), {}),
    "dec": (lambda h: (h[:, :8], h[:4, 8:]), {}),
    "kmeans": (lambda h: (h[:, :8], h[:4, 8:]), {}),
    "balanced_assignment": (lambda h: (torch.softmax(h, dim=1),), {}),
    "locality_preserving": (lambda h: (h[:, :8], h[:, 8:]), {"k": 3}),
    "group_sparsity": (lambda h: (h, [4, 4, 8]), {}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_losses_are_fp32_and_finite_under_bf16_autocast(name):
    split, kw = CASES[name]
    torch.manual_seed(0)
    layer = torch.nn.Linear(12, 16)
    x = torch.randn(10, 12)
    loss_fn = build_loss(name, **kw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = layer(x)
        assert h.dtype == torch.bfloat16
        loss = loss_fn(*split(h))
    assert loss.dtype == torch.float32 and loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0
    # autocast is off inside: the same bf16 inputs outside autocast give the same fp32 value
    if name != "moco":  # MoCo's queue changed after the first call
        with torch.no_grad():
            again = loss_fn(*split(h.detach()))
        torch.testing.assert_close(loss.detach(), again, rtol=1e-6, atol=1e-6)
