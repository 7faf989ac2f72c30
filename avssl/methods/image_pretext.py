"""Spatial pretext tasks: rotation, jigsaw, relative patch position, and PIRL.

Each runs on images (B×C×H×W, ``method.modality: image`` with an image encoder) and on clips
(B×C×T×H×W, ``method.modality: video``): the spatial transform is applied to every frame alike, as in
3D RotNet, so the same task trains a video encoder.

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
  (InfoNCE, in-batch negatives). Keys: ``transform`` (jigsaw | rotation), ``embed_dim`` (128),
  ``temperature`` (0.07), ``tile_fraction``.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn

from avssl.data.image_pretext import NEIGHBOURS, centre_square, grid_tiles, max_hamming_permutations, rotate
from avssl.losses.pretext import jigsaw_loss, pirl_loss, relative_position_loss, rotation_loss
from avssl.methods.pretext import (PRETEXT_TASKS, ClassificationTask, PretextTask, encode_items,
                                   register_pretext_method)


def _check_input(x: torch.Tensor, task: str) -> None:
    if x.dim() not in (4, 5):
        raise ValueError(f"{task} needs images B×C×H×W or clips B×C×T×H×W, got shape {tuple(x.shape)}")


@PRETEXT_TASKS.register("rotation")
class Rotation(ClassificationTask):
    """Rotation prediction (see the module docstring)."""

    def __init__(self, feat_dim: int, all_rotations: bool = True, hidden: int = 0) -> None:
        super().__init__(feat_dim)
        self.all_rotations = bool(all_rotations)
        self.loss = rotation_loss(feat_dim, hidden)

    def sample(self, x: torch.Tensor, generator: Optional[torch.Generator] = None):
        """x -> (rotated inputs (4B or B)×…, labels k: rotation by k·90° counter-clockwise)."""
        _check_input(x, "rotation")
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


class _Tiles:
    """Mixin of the tile-based tasks: the 3×3 grid of jittered tiles."""

    tile_fraction: float

    def set_tile_fraction(self, tile_fraction: float) -> None:
        if not 0.0 < tile_fraction <= 1.0:
            raise ValueError(f"tile_fraction must be in (0, 1], got {tile_fraction}")
        self.tile_fraction = float(tile_fraction)

    def tiles(self, x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        _check_input(x, type(self).__name__.lower())
        return grid_tiles(x, 3, self.tile_fraction, jitter=True, generator=generator)


@PRETEXT_TASKS.register("jigsaw")
class Jigsaw(_Tiles, ClassificationTask):
    """Jigsaw puzzles (see the module docstring)."""

    def __init__(self, feat_dim: int, num_permutations: int = 1000, permutation_seed: int = 0,
                 tile_fraction: float = 0.8, hidden: int = 1024) -> None:
        super().__init__(feat_dim)
        self.set_tile_fraction(tile_fraction)
        self.register_buffer("perms", max_hamming_permutations(num_permutations, 9, permutation_seed),
                             persistent=False)
        self.loss = jigsaw_loss(feat_dim, num_permutations, hidden)

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
class RelativePosition(_Tiles, ClassificationTask):
    """Relative patch position (see the module docstring)."""

    def __init__(self, feat_dim: int, tile_fraction: float = 0.8, hidden: int = 512) -> None:
        super().__init__(feat_dim)
        self.set_tile_fraction(tile_fraction)
        self.loss = relative_position_loss(feat_dim, hidden)
        cells = [(1 + dy) * 3 + (1 + dx) for dy, dx in NEIGHBOURS]
        self.register_buffer("neighbour_cell", torch.tensor(cells), persistent=False)

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
class PIRL(_Tiles, PretextTask):
    """PIRL: invariance to the jigsaw (or rotation) transform, by contrast (see the module docstring)."""

    def __init__(self, feat_dim: int, transform: str = "jigsaw", embed_dim: int = 128, temperature: float = 0.07,
                 tile_fraction: float = 0.8) -> None:
        super().__init__(feat_dim)
        self.set_tile_fraction(tile_fraction)
        if transform not in ("jigsaw", "rotation"):
            raise ValueError(f"pirl transform must be 'jigsaw' or 'rotation', got {transform!r}")
        self.transform = transform
        self.f_head = nn.Linear(feat_dim, embed_dim)
        self.g_head = nn.Linear(feat_dim * (9 if transform == "jigsaw" else 1), embed_dim)
        self.loss = pirl_loss(temperature)

    def forward(self, encoder: nn.Module, x: torch.Tensor,
                generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        _check_input(x, "pirl")
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
            sim = torch.nn.functional.normalize(g.float(), dim=1) @ torch.nn.functional.normalize(f.float(), dim=1).T
            acc = (sim.argmax(1) == torch.arange(b, device=x.device)).float().mean()
        return {"loss": loss, "acc": acc}


for _name in ("rotation", "jigsaw", "relative_position", "pirl"):
    register_pretext_method(_name)
