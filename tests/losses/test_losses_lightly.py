"""Cross-check of the self-supervised losses against the `lightly` library on the same inputs.

Convention mapping (lightly 1.6.0):
- NTXentLoss(temperature=τ) is SimCLR's NT-Xent over the 2N anchors: equal to "nt_xent" with the same τ.
  With memory_bank_size=(K, D) it is MoCo's InfoNCE with the bank as negatives: equal to "moco" with
  lightly's bank set to our queue (both K×D, unit rows); both enqueue the keys at the pointer.
- BarlowTwinsLoss(lambda_param=λ) standardises with BatchNorm statistics (biased variance, eps 1e-5
  inside the square root) and scales C by 1/N: equal to "barlow_twins" with lambd=λ, eps=1e-5.
- VICRegLoss(lambda_param, mu_param, nu_param, eps) = "vicreg"(sim_coeff, std_coeff, cov_coeff, eps):
  same unbiased variance, same ½-averaged variance term and summed covariance term.
- sinkhorn(out, iterations, epsilon) normalises prototype rows to 1 instead of 1/K; the column step
  that follows absorbs the constant, so its codes equal ours. SwaVLoss(high, low, queue) averages, for
  each of the two large crops' codes, the prediction terms over the other V-1 views, then over the two
  large crops: the same mean over 2·(V-1) terms as "swav".
- NegativeCosineSimilarity()(p, z) = mean -cos(p, z) without stop-gradient: "simsiam"(p, z) equals
  it on z.detach(), and "byol"(p, z) = 2 + 2·NegativeCosineSimilarity()(p, z).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

lightly_loss = pytest.importorskip("lightly.loss", reason="lightly is optional: pip install avssl[bench]")
from lightly.loss.swav_loss import sinkhorn as lightly_sinkhorn  # noqa: E402

from avssl.losses import build_loss  # noqa: E402
from avssl.losses.clustering import sinkhorn  # noqa: E402

D64 = torch.float64


def rand(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D64) * scale


def close(a, b, tol=1e-5):
    torch.testing.assert_close(a.reshape(()).to(D64), b.reshape(()).to(D64), rtol=tol, atol=tol)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_xent_matches_lightly(tau):
    a, b = rand(16, 8, seed=1), rand(16, 8, seed=2)
    ga, gb = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    la, lb = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    ours = build_loss("nt_xent", temperature=tau)(ga, gb)
    ref = lightly_loss.NTXentLoss(temperature=tau)(la, lb)
    close(ours, ref)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(ga.grad, la.grad, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(gb.grad, lb.grad, rtol=1e-5, atol=1e-8)


def test_moco_matches_lightly_memory_bank():
    k_size, dim = 32, 8
    ours = build_loss("moco", queue_size=k_size, dim=dim, temperature=0.2, seed=3)
    ref = lightly_loss.NTXentLoss(temperature=0.2, memory_bank_size=(k_size, dim))
    ref.memory_bank.bank.copy_(ours.queue)
    for step in range(3):  # 3 × 8 keys: no wrap (lightly drops the overflow instead of wrapping)
        q = rand(8, dim, seed=10 + step).float().requires_grad_(True)
        k = rand(8, dim, seed=20 + step).float()
        close(ours(q, k), ref(q, k))
        assert int(ours.queue_ptr) == int(ref.memory_bank.bank_ptr)
        torch.testing.assert_close(ours.queue, ref.memory_bank.bank, rtol=1e-6, atol=1e-7)


def test_barlow_twins_matches_lightly():
    a, b = rand(16, 10, seed=1, scale=3.0) + 1, rand(16, 10, seed=2)
    for lambd in (5.1e-3, 0.2):
        close(build_loss("barlow_twins", lambd=lambd, eps=1e-5)(a, b),
              lightly_loss.BarlowTwinsLoss(lambda_param=lambd)(a, b))


def test_vicreg_matches_lightly():
    a, b = rand(16, 10, seed=1, scale=0.6), rand(16, 10, seed=2, scale=1.5)
    close(build_loss("vicreg")(a, b), lightly_loss.VICRegLoss()(a, b))
    close(build_loss("vicreg", sim_coeff=1.0, std_coeff=2.0, cov_coeff=3.0, eps=1e-3)(a, b),
          lightly_loss.VICRegLoss(lambda_param=1.0, mu_param=2.0, nu_param=3.0, eps=1e-3)(a, b))


@pytest.mark.parametrize("iterations", [1, 3, 10])
def test_sinkhorn_matches_lightly(iterations):
    s = F.normalize(rand(20, 6, seed=4), dim=1) @ F.normalize(rand(7, 6, seed=5), dim=1).t()
    torch.testing.assert_close(sinkhorn(s, epsilon=0.05, iterations=iterations),
                               lightly_sinkhorn(s, iterations=iterations, epsilon=0.05), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("with_queue", [False, True])
def test_swav_matches_lightly(with_queue):
    high = [rand(12, 5, seed=i, scale=0.5) for i in range(2)]
    low = [rand(12, 5, seed=10 + i, scale=0.5) for i in range(3)]
    queue = [rand(24, 5, seed=20 + i, scale=0.5) for i in range(2)] if with_queue else None
    kw = {"queue_scores_a": queue[0], "queue_scores_b": queue[1]} if with_queue else {}
    ours = build_loss("swav", temperature=0.1, epsilon=0.05, sinkhorn_iterations=3)(*high, *low, **kw)
    ref = lightly_loss.SwaVLoss(temperature=0.1, sinkhorn_iterations=3, sinkhorn_epsilon=0.05)(
        high, low, queue_outputs=queue)
    close(ours, ref)


def test_simsiam_and_byol_match_lightly_negative_cosine():
    p, z = rand(10, 7, seed=1), rand(10, 7, seed=2)
    neg_cos = lightly_loss.NegativeCosineSimilarity()(p, z.detach())
    close(build_loss("simsiam")(p, z), neg_cos)
    close(build_loss("byol")(p, z), 2 + 2 * neg_cos)
