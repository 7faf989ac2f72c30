"""Spatial pretext tasks: rotation, jigsaw, relative patch position, and PIRL; their samplers (rotations,
3×3 tiles with gaps and jitter, jigsaw permutation sets of maximal Hamming distance).

Each runs on images (B×C×H×W, ``method.modality: image`` with an image encoder) and on clips
(B×C×T×H×W, ``method.modality: video``): the samplers act on the last two dimensions, so the spatial
transform is applied to every frame alike, as in 3D RotNet, and the same task trains a video encoder.

* ``rotation`` (Gidaris et al. 2018): the input (centre-cropped to a square) rotated by 0/90/180/270°;
  a linear head names the rotation. Keys: ``all_rotations`` (True: the four copies of every sample, as
  the paper; False: one random rotation per sample), ``hidden`` (0: linear head).
* ``jigsaw`` (Noroozi & Favaro 2016): a 3×3 grid of tiles (``tile_fraction`` 0.8 of a cell at a random
  place inside it, so no edge continues across tiles) shuffled by one permutation of a fixed set chosen
  for maximal Hamming distance; each tile is encoded, the features concatenated in shuffled order, and a
  classifier names the permutation. Keys: ``num_permutations`` (1000), ``permutation_seed`` (0),
  ``tile_fraction`` (0.8), ``hidden`` (1024).
* ``relative_position`` (Doersch et al. 2015): the centre tile and one of its 8 neighbours (with the same
  gaps and jitter); a classifier over both features names the neighbour. Keys: ``tile_fraction``,
  ``hidden`` (512).
* ``pirl`` (Misra & van der Maaten 2020): the jigsaw transform as an invariance: the input's embedding
  f and the embedding g of its shuffled tiles (a head over their concatenated features) must match
  (InfoNCE, in-batch negatives: the ``pirl`` loss). Keys: ``transform`` (jigsaw | rotation), ``embed_dim``
  (128), ``temperature`` (0.07), ``tile_fraction``.
"""
from __future__ import annotations

import functools
import itertools
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from avssl.losses import build_loss
from avssl.models.heads import ItemsClassifier
from avssl.pretext.base import ITEMS_HEAD_LEGACY, PRETEXT_TASKS, ClassificationTask, PretextTask, encode_items

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


# -- the tasks --------------------------------------------------------------------------------------
@PRETEXT_TASKS.register("rotation")
class Rotation(ClassificationTask):
    """Rotation prediction (see the module docstring)."""

    name = "rotation"
    inputs = ("image", "video")
    legacy_keys = ITEMS_HEAD_LEGACY

    def __init__(self, feat_dim: int, all_rotations: bool = True, hidden: int = 0) -> None:
        super().__init__(feat_dim)
        self.all_rotations = bool(all_rotations)
        self.head = self.make_head(feat_dim, hidden)

    @staticmethod
    def make_head(feat_dim: int, hidden: int = 0) -> ItemsClassifier:
        """RotNet's head: features of an input rotated by k·90° -> k (linear by default, as in the paper)."""
        return ItemsClassifier(feat_dim, 1, 4, hidden)

    def sample(self, x: torch.Tensor, generator: Optional[torch.Generator] = None):
        """x -> (rotated inputs (4B or B)×…, labels k: rotation by k·90° counter-clockwise)."""
        self.check_input(x)
        x = centre_square(x)
        b = x.shape[0]
        if self.all_rotations:
            k = torch.arange(4).repeat_interleave(b)
            x = x.repeat(4, *([1] * (x.dim() - 1)))
        else:
            k = (torch.rand(b, generator=generator) * 4).long().clamp(max=3)
        return rotate(x, k), k.to(x.device)

    def sample_items(self, x: torch.Tensor, generator: Optional[torch.Generator] = None):
        inputs, k = self.sample(x, generator)
        return inputs[:, None], k


class _TileTask(PretextTask):
    """Base of the tile-based tasks: the 3×3 grid of jittered tiles of an image or of every frame of a clip."""

    inputs = ("image", "video")
    legacy_keys = ITEMS_HEAD_LEGACY

    def __init__(self, feat_dim: int, tile_fraction: float = 0.8) -> None:
        super().__init__(feat_dim)
        if not 0.0 < tile_fraction <= 1.0:
            raise ValueError(f"tile_fraction must be in (0, 1], got {tile_fraction}")
        self.tile_fraction = float(tile_fraction)

    def tiles(self, x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """x B×…×H×W -> B×9×…×h×w jittered tiles in row-major cell order."""
        self.check_input(x)
        return grid_tiles(x, 3, self.tile_fraction, jitter=True, generator=generator)


@PRETEXT_TASKS.register("jigsaw")
class Jigsaw(_TileTask, ClassificationTask):
    """Jigsaw puzzles (see the module docstring)."""

    name = "jigsaw"

    def __init__(self, feat_dim: int, num_permutations: int = 1000, permutation_seed: int = 0,
                 tile_fraction: float = 0.8, hidden: int = 1024) -> None:
        super().__init__(feat_dim, tile_fraction)
        self.register_buffer("perms", max_hamming_permutations(num_permutations, 9, permutation_seed),
                             persistent=False)
        self.head = self.make_head(feat_dim, num_permutations, hidden)

    @staticmethod
    def make_head(feat_dim: int, num_permutations: int = 1000, hidden: int = 1024) -> ItemsClassifier:
        """The context-free network's head: the 9 tiles' features in shuffled order -> which permutation."""
        return ItemsClassifier(feat_dim, 9, num_permutations, hidden)

    def sample(self, x: torch.Tensor, generator: Optional[torch.Generator] = None):
        """x -> (shuffled tiles B×9×…, labels B): slot j holds the tile of cell ``perms[label][j]``."""
        tiles = self.tiles(x, generator)
        b = tiles.shape[0]
        label = (torch.rand(b, generator=generator) * len(self.perms)).long().clamp(max=len(self.perms) - 1)
        order = self.perms.to(tiles.device)[label.to(tiles.device)]  # B×9
        shuffled = tiles[torch.arange(b, device=tiles.device)[:, None], order]
        return shuffled, label.to(x.device)

    def sample_items(self, x: torch.Tensor, generator: Optional[torch.Generator] = None):
        return self.sample(x, generator)


@PRETEXT_TASKS.register("relative_position")
class RelativePosition(_TileTask, ClassificationTask):
    """Relative patch position (see the module docstring)."""

    name = "relative_position"

    def __init__(self, feat_dim: int, tile_fraction: float = 0.8, hidden: int = 512) -> None:
        super().__init__(feat_dim, tile_fraction)
        self.head = self.make_head(feat_dim, hidden)
        cells = [(1 + dy) * 3 + (1 + dx) for dy, dx in NEIGHBOURS]
        self.register_buffer("neighbour_cell", torch.tensor(cells), persistent=False)

    @staticmethod
    def make_head(feat_dim: int, hidden: int = 512) -> ItemsClassifier:
        """Doersch et al.'s head: features of (centre tile, neighbour tile) -> which of the 8 neighbours."""
        return ItemsClassifier(feat_dim, 2, 8, hidden)

    def sample(self, x: torch.Tensor, generator: Optional[torch.Generator] = None):
        """x -> (pairs B×2×… (centre tile, neighbour tile), labels B: the neighbour's index in NEIGHBOURS)."""
        tiles = self.tiles(x, generator)
        b = tiles.shape[0]
        label = (torch.rand(b, generator=generator) * 8).long().clamp(max=7).to(tiles.device)
        rows = torch.arange(b, device=tiles.device)
        pair = torch.stack([tiles[:, 4], tiles[rows, self.neighbour_cell.to(tiles.device)[label]]], dim=1)
        return pair, label

    def sample_items(self, x: torch.Tensor, generator: Optional[torch.Generator] = None):
        return self.sample(x, generator)


@PRETEXT_TASKS.register("pirl")
class PIRL(_TileTask):
    """PIRL: invariance to the jigsaw (or rotation) transform, by contrast (see the module docstring)."""

    name = "pirl"
    legacy_keys = ()

    def __init__(self, feat_dim: int, transform: str = "jigsaw", embed_dim: int = 128, temperature: float = 0.07,
                 tile_fraction: float = 0.8) -> None:
        super().__init__(feat_dim, tile_fraction)
        if transform not in ("jigsaw", "rotation"):
            raise ValueError(f"pirl transform must be 'jigsaw' or 'rotation', got {transform!r}")
        self.transform = transform
        self.f_head = nn.Linear(feat_dim, embed_dim)
        self.g_head = nn.Linear(feat_dim * (9 if transform == "jigsaw" else 1), embed_dim)
        self.loss = build_loss("pirl", temperature=temperature)

    def forward(self, encoder: nn.Module, x: torch.Tensor,
                generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        self.check_input(x)
        f = self.f_head(encoder(x))
        b = x.shape[0]
        if self.transform == "jigsaw":
            tiles = self.tiles(x, generator)
            order = torch.rand(b, 9, generator=generator).argsort(dim=1).to(x.device)
            shuffled = tiles[torch.arange(b, device=x.device)[:, None], order]
            g = self.g_head(encode_items(encoder, shuffled).flatten(1))
        else:
            k = (torch.rand(b, generator=generator) * 4).long().clamp(max=3)
            g = self.g_head(encoder(rotate(centre_square(x), k)))
        loss = self.loss(f, g)
        with torch.no_grad():
            sim = F.normalize(g.float(), dim=1) @ F.normalize(f.float(), dim=1).T
            acc = (sim.argmax(1) == torch.arange(b, device=x.device)).float().mean()
        return {"loss": loss, "acc": acc}
