"""Map operations shared by methods: upsampling, Gaussian smoothing, patch nearest-neighbour distances."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def upsample_grid(grid_maps: Tensor, size: int) -> Tensor:
    """Bilinear (align_corners=False) upsampling of ``B × h × w`` maps to ``B × size × size``."""
    return F.interpolate(grid_maps.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False).squeeze(1)


def gaussian_blur(maps: Tensor, sigma: float, truncate: float = 4.0) -> Tensor:
    """Separable Gaussian smoothing of ``B × H × W`` maps, equal to ``scipy.ndimage.gaussian_filter``
    with ``mode='reflect'`` (edge-including symmetric padding) and the same ``truncate``; σ=0 is identity."""
    if sigma <= 0:
        return maps
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(maps.dtype).to(maps.device)
    out = maps
    for dim in (-1, -2):
        idx = _symmetric_indices(out.shape[dim], radius).to(maps.device)
        padded = out.index_select(dim, idx)
        windows = padded.unfold(dim, 2 * radius + 1, 1)
        out = (windows * kernel).sum(-1)
    return out


def _symmetric_indices(length: int, radius: int) -> Tensor:
    """Indices of a length-``length`` axis padded by ``radius`` on both sides with scipy's 'reflect' rule."""
    idx = torch.arange(-radius, length + radius)
    period = 2 * length
    idx = torch.remainder(idx, period)
    return torch.where(idx >= length, period - 1 - idx, idx)


def min_cosine_distance(queries: Tensor, memory: Tensor) -> Tensor:
    """Per query row, the minimum over memory rows of (1 − cos)/2.

    Args:
        queries: ``N × C`` features (any norm).
        memory: ``M × C`` features (any norm).

    Returns:
        ``N`` distances in [0, 1]; rounding that pushes cos past 1 gives +0.0 (never negative or -0.0,
        so that reciprocals in harmonic means stay +inf).
    """
    q = F.normalize(queries, dim=-1)
    m = F.normalize(memory, dim=-1)
    dist = ((1.0 - q @ m.T) / 2.0).amin(dim=1)
    return torch.where(dist > 0, dist, torch.zeros_like(dist))


def grid_side(num_tokens: int) -> int:
    """Side of the square patch grid holding ``num_tokens`` tokens."""
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"{num_tokens} patch tokens do not form a square grid")
    return side
