"""Patch-kNN: nearest-neighbour distance of each query patch to the reference patches (baselines.md §2)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fsas_bench.methods.ops import memory_distance_grid, upsample_and_blur


class PatchKNNModel(nn.Module):
    """Memory of reference patch tokens per block; scores queries by min (1 − cos)/2.

    Args:
        blocks: backbone block indices whose tokens are compared.
        output_size: side of the output map.
        sigma: Gaussian smoothing σ in output pixels (0 disables).
        image_score: ``map_max`` (max of the final map) or ``grid_max`` (max of the patch-grid distances).
    """

    def __init__(self, blocks: tuple[int, ...], output_size: int, sigma: float, image_score: str) -> None:
        super().__init__()
        self.blocks = blocks
        self.output_size = output_size
        self.sigma = sigma
        self.image_score = image_score
        self.memory: list[Tensor] = []

    def set_memory(self, tokens: dict[int, Tensor]) -> None:
        """Store the reference memory: block → ``M × C`` tokens of all k references (kept in block order)."""
        self.memory = [tokens[b] for b in self.blocks]

    def forward(self, tokens: list[dict[int, Tensor]]) -> tuple[Tensor, Tensor]:
        """Maps ``B × S × S`` and image scores ``B`` for B queries (each block → ``N × C`` tokens).

        Queries are scored one at a time, so results do not depend on the batch composition.
        """
        grids = torch.stack([memory_distance_grid([t[b] for b in self.blocks], self.memory) for t in tokens])
        maps = upsample_and_blur(grids, self.output_size, self.sigma)
        source = maps if self.image_score == "map_max" else grids
        return maps, source.flatten(1).amax(dim=1)
