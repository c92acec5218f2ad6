"""Map operations shared by methods: upsampling, Gaussian smoothing, patch nearest-neighbour distances,
mapping centre-crop maps back onto the whole image."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from fsas_bench.backbones.clip import crop_offsets, short_side_size


def upsample_and_blur(grid_maps: Tensor, size: int, sigma: float) -> Tensor:
    """Bilinear upsampling (align_corners=False) of ``B × h × w`` grids to ``B × size × size``, then Gaussian
    smoothing equal to ``scipy.ndimage.gaussian_filter(mode='reflect', truncate=4)``; σ = 0 skips smoothing.

    Both steps are linear and separable, so the result is ``A_h · G · A_wᵀ`` with ``A = blur · upsample``
    (``size × h``), built once per shape: far cheaper than blurring at full size. Maps are processed one at
    a time (batch invariant).
    """
    a_rows = _upsample_blur_matrix(grid_maps.shape[-2], size, sigma).to(grid_maps)
    a_cols = _upsample_blur_matrix(grid_maps.shape[-1], size, sigma).to(grid_maps)
    return torch.stack([a_rows @ g @ a_cols.T for g in grid_maps])


@lru_cache(maxsize=32)
def _upsample_blur_matrix(length: int, size: int, sigma: float) -> Tensor:
    """The ``size × length`` float64 matrix of 1-D linear upsampling (align_corners=False) then blurring."""
    basis = torch.eye(length, dtype=torch.float64)[:, None]  # length signals of length `length`
    upsampled = F.interpolate(basis, size=size, mode="linear", align_corners=False)
    return _blur_last_axis(upsampled, sigma)[:, 0].T


def _blur_last_axis(x: Tensor, sigma: float, truncate: float = 4.0) -> Tensor:
    """1-D Gaussian smoothing along the last axis of ``N × 1 × L`` signals (scipy 'reflect' boundary)."""
    if sigma <= 0:
        return x
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x.dtype).to(x.device)
    padded = x.index_select(-1, _symmetric_indices(x.shape[-1], radius).to(x.device))
    return F.conv1d(padded, kernel.view(1, 1, -1))


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


def uncrop_maps(maps: Tensor, image_sizes: Sequence[tuple[int, int]]) -> Tensor:
    """Maps of centre crops → maps of the whole images, for methods whose input is ``resize_centercrop``.

    Args:
        maps: ``B × S × S`` maps over the central crop of each image (shorter side resized to S, then the
            S × S centre, as :class:`~fsas_bench.backbones.Preprocess` ``resize_centercrop``).
        image_sizes: each image's original ``(W, H)``.

    Returns:
        ``B × S × S`` maps over each whole image squashed to S × S (the geometry of the evaluation layer's
        resize to the image frame): inside the crop, the map sampled bilinearly at each pixel centre; outside
        it, the map's minimum (pixels the method never saw). Square images are returned unchanged.
    """
    side = maps.shape[-1]
    out = []
    for grid, (width, height) in zip(maps, image_sizes, strict=True):
        if width == height:
            out.append(grid)
            continue
        resized_w, resized_h = short_side_size((width, height), side)
        left, top = crop_offsets((resized_w, resized_h), side)
        centres = (torch.arange(side, dtype=torch.float64) + 0.5) / side
        gx = 2 * (centres * resized_w - left) / side - 1
        gy = 2 * (centres * resized_h - top) / side - 1
        sample = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None].to(grid)
        sampled = F.grid_sample(grid[None, None], sample, mode="bilinear", padding_mode="border", align_corners=False)
        inside = (sample.abs() <= 1).all(dim=-1)[0]
        out.append(torch.where(inside, sampled[0, 0], grid.min()))
    return torch.stack(out)
