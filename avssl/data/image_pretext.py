"""Samplers of the spatial pretext tasks: rotations, 3×3 tiles with gaps and jitter, and jigsaw
permutation sets of maximal Hamming distance.

Everything acts on the last two dimensions, so images (B×C×H×W) and clips (B×C×T×H×W: the same
transform on every frame) are handled alike.
"""
from __future__ import annotations

import functools
import itertools
from typing import Optional, Tuple

import numpy as np
import torch

#: The 8 neighbours of the centre cell of a 3×3 grid as (row, column) offsets; label k is NEIGHBOURS[k].
NEIGHBOURS: Tuple[Tuple[int, int], ...] = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def centre_square(x: torch.Tensor) -> torch.Tensor:
    """Centre-crop the last two dims to a square (rotations by 90° keep the shape only for squares)."""
    h, w = x.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return x[..., top:top + s, left:left + s]


def rotate(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate each sample of x (B×…×S×S) by k[i]·90° counter-clockwise in the last two dims."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotate needs square inputs, got {tuple(x.shape[-2:])}; use centre_square first")
    out = torch.empty_like(x)
    for r in range(4):
        sel = (k == r).nonzero(as_tuple=True)[0].to(x.device)
        if sel.numel():
            out[sel] = torch.rot90(x[sel], r, dims=(-2, -1))
    return out


def grid_tiles(x: torch.Tensor, grid: int = 3, tile_fraction: float = 0.8, jitter: bool = True,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """x B×…×H×W -> B×grid²×…×h×w tiles in row-major cell order.

    Each cell of the grid gives a tile of ``tile_fraction`` of the cell's side, placed at a random offset
    inside its cell (per sample and cell, when ``jitter``) or centred. The gaps between tiles keep edges
    and lines continuing across tiles from giving the arrangement away (Noroozi & Favaro; Doersch et al.).
    """
    h, w = x.shape[-2:]
    ch, cw = h // grid, w // grid
    th, tw = max(1, int(ch * tile_fraction)), max(1, int(cw * tile_fraction))
    if ch < 1 or cw < 1:
        raise ValueError(f"inputs of {h}×{w} are too small for a {grid}×{grid} grid")
    b, n = x.shape[0], grid * grid
    if jitter:
        oy = (torch.rand(b, n, generator=generator) * (ch - th + 1)).long().clamp(max=ch - th)
        ox = (torch.rand(b, n, generator=generator) * (cw - tw + 1)).long().clamp(max=cw - tw)
    else:
        oy = torch.full((b, n), (ch - th) // 2, dtype=torch.long)
        ox = torch.full((b, n), (cw - tw) // 2, dtype=torch.long)
    cells = torch.arange(n)
    top = (cells // grid)[None, :] * ch + oy  # B×n
    left = (cells % grid)[None, :] * cw + ox
    rows = (top[:, :, None] + torch.arange(th)[None, None, :]).to(x.device)  # B×n×th
    cols = (left[:, :, None] + torch.arange(tw)[None, None, :]).to(x.device)  # B×n×tw
    lead = x.shape[1:-2]
    xf = x.reshape(b, -1, h, w)  # B×L×H×W
    bi = torch.arange(b, device=x.device)[:, None, None, None, None]
    li = torch.arange(xf.shape[1], device=x.device)[None, None, :, None, None]
    tiles = xf[bi, li, rows[:, :, None, :, None], cols[:, :, None, None, :]]  # B×n×L×th×tw
    return tiles.reshape(b, n, *lead, th, tw)


@functools.lru_cache(maxsize=8)
def _max_hamming_set(n: int, size: int, seed: int) -> np.ndarray:
    perms = np.array(list(itertools.permutations(range(size))), dtype=np.int8)
    if n > len(perms):
        raise ValueError(f"asked for {n} permutations of {size} items; there are only {len(perms)}")
    rng = np.random.default_rng(seed)
    # eq[k·size + v] marks the permutations with v at position k, so the Hamming distance to p is
    # size − Σ_k eq[k·size + p[k]]: nine row additions instead of a full comparison.
    eq = (perms.T[:, None, :] == np.arange(size, dtype=np.int8)[None, :, None]).reshape(size * size, -1)
    eq = eq.astype(np.int8)
    rows = np.arange(size) * size

    def dist(i: int) -> np.ndarray:
        return (size - eq[rows + perms[i]].sum(axis=0, dtype=np.int16)).astype(np.int16)

    chosen = [int(rng.integers(len(perms)))]
    min_dist = dist(chosen[0])
    for _ in range(n - 1):
        best = min_dist.max()
        # Among the candidates farthest from the set, one at random (the paper's greedy choice).
        cands = np.flatnonzero(min_dist == best)
        pick = int(cands[rng.integers(len(cands))])
        chosen.append(pick)
        np.minimum(min_dist, dist(pick), out=min_dist)
    out = perms[chosen].astype(np.int64)
    out.setflags(write=False)
    return out


def max_hamming_permutations(n: int = 1000, size: int = 9, seed: int = 0) -> torch.Tensor:
    """n permutations of range(size) chosen greedily for maximal Hamming distance (n×size LongTensor).

    Start from a random permutation; repeatedly add the permutation whose minimum Hamming distance to
    the chosen set is largest (ties broken at random), as Noroozi & Favaro chose their jigsaw classes.
    Deterministic for a given seed; a few ms per permutation for 9 tiles (cached per arguments).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return torch.from_numpy(_max_hamming_set(int(n), int(size), int(seed)).copy())


def min_hamming_distance(perms: torch.Tensor) -> int:
    """The smallest Hamming distance between two rows of a permutation set (n×size)."""
    d = (perms[:, None, :] != perms[None, :, :]).sum(-1)
    d.fill_diagonal_(perms.shape[1] + 1)
    return int(d.min())
