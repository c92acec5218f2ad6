"""High-resolution view of the shots for MLSA (spec §6.1): resize to f·S, cut f × f tiles of S px, encode
each tile's V-V tokens, stitch them into one (f·g) × (f·g) grid. Cached per (backbone, image, f, variant)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from fsas_bench.backbones import DEFAULT_PREPROCESS, ClipBackbone, Preprocess
from fsas_bench.backbones.vv_attention import vv_patch_tokens
from fsas_bench.data.formats import read_image_rgb

_CACHE: OrderedDict[tuple[str, str, int], Tensor] = OrderedDict()
CACHE_ENTRIES = 64


def tile_images(image: np.ndarray, size: int, factor: int) -> list[np.ndarray]:
    """RGB ``H × W × 3`` → ``factor²`` tiles (row-major) of ``size`` px of its bicubic resize to ``factor·size``."""
    big = np.asarray(Image.fromarray(image).resize((factor * size,) * 2, Image.Resampling.BICUBIC))
    return [big[r * size : (r + 1) * size, c * size : (c + 1) * size] for r in range(factor) for c in range(factor)]


def stitch(tiles: Tensor, factor: int) -> Tensor:
    """``f² × g² × D`` row-major tile tokens → ``(f·g)² × D`` tokens of the stitched grid (row-major)."""
    side = int(round(tiles.shape[1] ** 0.5))
    grid = tiles.view(factor, factor, side, side, -1).permute(0, 2, 1, 3, 4)
    return grid.reshape(factor * side * factor * side, -1)


def hires_vv_tokens(
    backbone: ClipBackbone, path: Path, sha: str, factor: int, variant: Preprocess = DEFAULT_PREPROCESS
) -> Tensor:
    """``(f·g)² × D`` float32 V-V tokens of the high-resolution tiled image (unnormalised), computed in the
    backbone's precision; ``variant``'s pre-resize and channel steps come first (the released code tiles the
    1024-px pre-resized shot)."""
    key = (backbone.variant_identity(variant), sha, factor)
    if key not in _CACHE:
        tiles = tile_images(variant.prepare(read_image_rgb(path)), backbone.image_size, factor)
        batch = torch.stack([backbone.preprocess(t) for t in tiles]).to(backbone.mean.device)
        with backbone.autocast():  # the run's --precision, as for every other backbone forward
            tokens = vv_patch_tokens(backbone.model.visual, batch)
        _CACHE[key] = stitch(tokens.float(), factor).cpu()
        while len(_CACHE) > CACHE_ENTRIES:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    return _CACHE[key]
