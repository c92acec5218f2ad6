"""Operations shared by methods: depth-scaled block taps, upsampling, Gaussian smoothing, patch nearest-neighbour
distances to a memory, the harmonic mean, mapping centre-crop maps back onto the whole image."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from fsas_bench.backbones.clip import crop_offsets, short_side_size


def scaled_taps(paper_taps: Sequence[int], paper_depth: int, depth: int) -> tuple[int, ...]:
    """0-based block taps of a ``depth``-block ViT from a method's published 1-indexed ``paper_taps`` of a
    ``paper_depth``-block ViT: block ⌈b · depth / paper_depth⌉ for each b (exact integer arithmetic), so the
    published taps come back unchanged at the published depth."""
    return tuple(-(-b * depth // paper_depth) - 1 for b in paper_taps)


def upsample_and_blur(grid_maps: Tensor, size: int, sigma: float) -> Tensor:
    """Bilinear upsampling (align_corners=False) of ``B × h × w`` grids to ``B × size × size``, then Gaussian
    smoothing equal to ``scipy.ndimage.gaussian_filter(mode='reflect', truncate=4)``; σ = 0 skips smoothing.

    Both steps are linear and separable, so the result is ``A_h · G · A_wᵀ`` with ``A = blur · upsample``
    (``size × h``), built once per shape: far cheaper than blurring at full size. Maps are processed one at
    a time (batch invariant).
    """
    return _separable(grid_maps, size, size, sigma)


def blur(maps: Tensor, sigma: float) -> Tensor:
    """Gaussian smoothing of ``B × H × W`` maps at their own size (scipy 'reflect', truncate 4), as
    :func:`upsample_and_blur` without the upsampling; σ = 0 returns the maps."""
    return maps if sigma <= 0 else _separable(maps, maps.shape[-2], maps.shape[-1], sigma)


def _separable(maps: Tensor, height: int, width: int, sigma: float) -> Tensor:
    """``A_h · g · A_wᵀ`` for each ``h × w`` map g, with the ``height × h`` and ``width × w`` matrices of
    :func:`_upsample_blur_matrix`."""
    a_rows = _upsample_blur_matrix(maps.shape[-2], height, sigma).to(maps)
    a_cols = _upsample_blur_matrix(maps.shape[-1], width, sigma).to(maps)
    return torch.stack([a_rows @ g @ a_cols.T for g in maps])


@lru_cache(maxsize=32)
def _upsample_blur_matrix(length: int, size: int, sigma: float) -> Tensor:
    """The ``size × length`` float64 matrix of 1-D linear upsampling (align_corners=False; the identity when
    ``size == length``) then blurring."""
    basis = torch.eye(length, dtype=torch.float64)[:, None]  # length signals of length `length`
    if size != length:
        basis = F.interpolate(basis, size=size, mode="linear", align_corners=False)
    return _blur_last_axis(basis, sigma)[:, 0].T


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
    """Per query row, the minimum over memory rows of (1 − cos)/2, batched.

    Args:
        queries: ``... × N × C`` features (any norm).
        memory: ``... × M × C`` features (any norm); leading dimensions broadcast against the queries' (a memory
            of its own per query, or one shared), never mixing batch items.

    Returns:
        ``... × N`` distances in [0, 1], computed as (1 − max cos)/2 (the same value: rounding of 1 − cos is
        monotone); rounding that pushes cos past 1 gives +0.0 (never negative or -0.0, so that reciprocals in
        harmonic means stay +inf).
    """
    cos = F.normalize(queries, dim=-1) @ F.normalize(memory, dim=-1).transpose(-1, -2)
    dist = (1.0 - cos.amax(dim=-1)) / 2.0
    return torch.where(dist > 0, dist, torch.zeros_like(dist))


def memory_distance_grid(taps: Sequence[Tensor], memory: Sequence[Tensor]) -> Tensor:
    """The visual-memory map of PatchKNN and PromptAD/FineGrainedAD: per patch, the mean over taps of its
    :func:`min_cosine_distance` to that tap's memory (``N × C`` query tokens and ``M × C`` memory per tap) as
    an ``h × w`` grid."""
    dist = torch.stack([min_cosine_distance(t, m.to(t)) for t, m in zip(taps, memory, strict=True)]).mean(0)
    side = grid_side(dist.shape[0])
    return dist.view(side, side)


def harmonic_mean(values: Tensor, eps: float = 0.0) -> Tensor:
    """Harmonic mean over the first axis: n / Σ 1/(v + eps). A zero value gives 0 (the limit), never NaN."""
    return values.shape[0] / (1.0 / (values + eps)).sum(0)


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
