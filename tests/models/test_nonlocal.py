"""NonLocalBlock against a per-position loop of the non-local formula, plus its invariances."""
from __future__ import annotations

import itertools
import math
from typing import Dict, List, Tuple

import pytest
import torch

from avssl.models import NonLocalBlock

MODES = ["gaussian", "embedded_gaussian", "dot_product", "concatenation"]
SHAPES = {1: (5,), 2: (3, 3), 3: (2, 3, 3)}  # odd sizes exercise the border windows of the sub-sampling
POOL_K = {1: (2,), 2: (2, 2), 3: (1, 2, 2)}

Pos = Tuple[int, ...]


def _randomise(block: NonLocalBlock, seed: int = 0) -> NonLocalBlock:
    """Large random convs (so attention is far from uniform), a non-zero W_z BN (so the block is not the
    identity) with random running statistics; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        bn = block.bn
        bn.weight.copy_(torch.randn(bn.weight.shape, generator=g))
        bn.bias.copy_(torch.randn(bn.bias.shape, generator=g))
        bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g) * 0.1)
        bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)
    return block.eval()


def _lin(conv: torch.nn.Module, v: torch.Tensor) -> torch.Tensor:
    """A 1×1 conv applied to one position's channel vector."""
    w = conv.weight.detach().double().reshape(conv.out_channels, conv.in_channels)
    return w @ v + conv.bias.detach().double()


def _naive_pool(maps: Dict[Pos, torch.Tensor], size: Tuple[int, ...], k: Tuple[int, ...]) -> Dict[Pos, torch.Tensor]:
    """Max over each window of size k (stride k); a window clipped by the border still counts (ceil)."""
    out_size = [math.ceil(s / kk) for s, kk in zip(size, k)]
    out: Dict[Pos, torch.Tensor] = {}
    for o in itertools.product(*[range(n) for n in out_size]):
        ranges = [range(oi * kk, min((oi + 1) * kk, s)) for oi, kk, s in zip(o, k, size)]
        window = [maps[p] for p in itertools.product(*ranges)]
        out[o] = torch.stack(window).amax(dim=0)
    return out


def naive_nonlocal(block: NonLocalBlock, x: torch.Tensor) -> torch.Tensor:
    """z_i = BN(W_z · (1/C(x) Σ_j f(x_i, x_j) g(x_j))) + x_i, one position pair at a time (float64)."""
    x = x.detach().double()
    size = tuple(x.shape[2:])
    positions: List[Pos] = list(itertools.product(*[range(s) for s in size]))
    bn = block.bn
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        xs = {p: x[(b, slice(None)) + p] for p in positions}
        g = {p: _lin(block.g, xs[p]) for p in positions}
        if block.mode == "gaussian":
            th, ph = xs, dict(xs)
        else:
            th = {p: _lin(block.theta, xs[p]) for p in positions}
            ph = {p: _lin(block.phi, xs[p]) for p in positions}
        if block.sub_sample:
            ph = _naive_pool(ph, size, POOL_K[block.dim])
            g = _naive_pool(g, size, POOL_K[block.dim])
        js = list(ph)
        for i in positions:
            fs = []
            for j in js:
                if block.mode in ("gaussian", "embedded_gaussian"):
                    fs.append(torch.exp(th[i] @ ph[j]))
                elif block.mode == "dot_product":
                    fs.append(th[i] @ ph[j])
                else:
                    w = block.w_f.weight.detach().double()[0]
                    fs.append(torch.relu(w @ torch.cat([th[i], ph[j]])))
            norm = sum(fs) if block.mode in ("gaussian", "embedded_gaussian") else len(js)
            y = sum(f / norm * g[j] for f, j in zip(fs, js))
            z = _lin(block.w_z, y)
            z = (z - bn.running_mean.double()) / torch.sqrt(bn.running_var.double() + bn.eps)
            z = z * bn.weight.detach().double() + bn.bias.detach().double()
            out[(b, slice(None)) + i] = z + xs[i]
    return out


@pytest.mark.parametrize("sub_sample", [False, True])
@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("mode", MODES)
def test_matches_naive_formula(mode: str, dim: int, sub_sample: bool) -> None:
    torch.manual_seed(0)
    block = _randomise(NonLocalBlock(4, mode=mode, sub_sample=sub_sample, dim=dim))
    x = torch.randn(2, 4, *SHAPES[dim])
    with torch.no_grad():
        z = block(x)
    ref = naive_nonlocal(block, x)
    assert z.shape == x.shape
    torch.testing.assert_close(z.double(), ref, rtol=1e-5, atol=1e-5)
    # The block is far from the identity and its attention far from uniform: the comparison is not vacuous.
    assert (z - x).abs().max() > 1e-2
    with torch.no_grad():
        aff = block.affinity(x)
    assert (aff.amax(-1) - aff.amin(-1)).mean() > 1e-2 * aff.abs().mean()


@pytest.mark.parametrize("bn_layer", [True, False])
@pytest.mark.parametrize("mode", MODES)
def test_identity_at_init_and_trainable(mode: str, bn_layer: bool) -> None:
    torch.manual_seed(1)
    for dim in (1, 2, 3):
        block = NonLocalBlock(6, mode=mode, sub_sample=True, dim=dim, bn_layer=bn_layer).train()
        x = torch.randn(2, 6, *SHAPES[dim], requires_grad=True)
        z = block(x)
        assert torch.equal(z, x)
        # The zeroed affine map still receives gradient, so the block can move away from the identity.
        (z * torch.randn_like(z)).sum().backward()
        last = block.bn.weight if bn_layer else block.w_z.weight
        assert last.grad is not None and last.grad.abs().sum() > 0


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("mode", MODES)
def test_permutation_equivariance(mode: str, dim: int) -> None:
    torch.manual_seed(2)
    block = _randomise(NonLocalBlock(8, mode=mode, dim=dim), seed=3)
    size = (4, 5) if dim == 2 else (3, 4, 5)
    x = torch.randn(2, 8, *size)
    n = math.prod(size)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(4))

    def permute(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(2, 8, n)[:, :, perm].reshape(t.shape)

    with torch.no_grad():
        torch.testing.assert_close(block(permute(x)), permute(block(x)), rtol=1e-5, atol=1e-5)


def test_init_starts_near_uniform_attention() -> None:
    torch.manual_seed(8)
    block = NonLocalBlock(64, sub_sample=True)
    for conv in (block.g, block.theta, block.phi, block.w_z):
        assert conv.weight.std() < 0.02 and not conv.bias.any()
    aff = block.affinity(torch.randn(2, 64, 2, 6, 6))
    # Within 25 % of 1/M everywhere (a saturated softmax would put ~1 on one column).
    torch.testing.assert_close(aff, torch.full_like(aff, 1 / 18), rtol=0.25, atol=0)


def test_sub_sampling_shrinks_affinity_and_default_inter_channels() -> None:
    x = torch.randn(1, 8, 2, 6, 6)
    full = NonLocalBlock(8)
    sub = NonLocalBlock(8, sub_sample=True)
    assert full.inter_channels == 4 and NonLocalBlock(8, inter_channels=3).inter_channels == 3
    assert full.affinity(x).shape == (1, 72, 72)  # B×N×N, N = T·H·W
    assert sub.affinity(x).shape == (1, 72, 18)  # φ/g pooled 1×2×2
    # Each row of a softmax affinity sums to one.
    torch.testing.assert_close(full.affinity(x).sum(-1), torch.ones(1, 72))
    # 1-sized maps stay valid under sub-sampling (ceil-mode pooling).
    assert NonLocalBlock(8, sub_sample=True)(torch.randn(2, 8, 1, 1, 1)).shape == (2, 8, 1, 1, 1)


def test_concatenation_is_the_pairwise_linear_map() -> None:
    """The broadcast sum a_i + b_j equals w_fᵀ[θ_i, φ_j] built explicitly as B×N×M×2C'."""
    torch.manual_seed(5)
    block = NonLocalBlock(6, mode="concatenation", dim=2)
    x = torch.randn(2, 6, 3, 4)
    theta = block.theta(x).flatten(2).transpose(1, 2)  # B×N×C'
    phi = block.phi(x).flatten(2).transpose(1, 2)  # B×M×C'
    n, m = theta.shape[1], phi.shape[1]
    pairs = torch.cat([theta[:, :, None].expand(-1, -1, m, -1), phi[:, None].expand(-1, n, -1, -1)], dim=-1)
    ref = torch.relu(block.w_f(pairs).squeeze(-1)) / m
    torch.testing.assert_close(block.affinity(x), ref)


def test_channels_last_and_bf16_autocast() -> None:
    torch.manual_seed(6)
    block = _randomise(NonLocalBlock(8, sub_sample=True), seed=7)
    x = torch.randn(2, 8, 2, 4, 4)
    with torch.no_grad():
        ref = block(x)
        cl = block(x.to(memory_format=torch.channels_last_3d))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = block(x)
    torch.testing.assert_close(cl, ref, rtol=1e-5, atol=1e-5)
    assert cl.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.isfinite(low).all()
    assert (low.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="unknown mode 'softmax'.*embedded_gaussian"):
        NonLocalBlock(4, mode="softmax")
    with pytest.raises(ValueError, match="dim must be 1, 2 or 3"):
        NonLocalBlock(4, dim=4)
    with pytest.raises(ValueError, match=r"expects a B×4×T×H×W tensor, got shape \(1, 3, 2, 2, 2\)"):
        NonLocalBlock(4)(torch.randn(1, 3, 2, 2, 2))
