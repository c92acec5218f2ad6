"""DRAEM-style synthetic anomalies: a thresholded, rotated Perlin-noise mask filled with an augmented texture
(spec dictas.md §8.2 step 3)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from fsas_bench.data.formats import read_image_rgb
from fsas_bench.data.synthetic import procedural_texture
from fsas_bench.errors import UserError
from fsas_bench.methods.dictas.augment import BILINEAR, augment_texture

TextureSource = Callable[[np.random.Generator, int], np.ndarray]
"""``(rng, side)`` → a ``side × side × 3`` uint8 texture."""


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """2-D gradient noise: random unit gradients on a ``(cells_y + 1) × (cells_x + 1)`` lattice, dot products
    with the offsets to the four cell corners, quintic fade 6t⁵ − 15t⁴ + 10t³, bilinear blending, times √2.

    Returns:
        float64 ``shape`` array, roughly in [−1, 1].
    """
    angles = 2 * np.pi * rng.random((cells[0] + 1, cells[1] + 1))
    gradients = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    y = np.arange(shape[0]) * cells[0] / shape[0]
    x = np.arange(shape[1]) * cells[1] / shape[1]
    iy, ix = np.floor(y).astype(int)[:, None], np.floor(x).astype(int)[None, :]
    fy, fx = (y - np.floor(y))[:, None], (x - np.floor(x))[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        g = gradients[iy + dy, ix + dx]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    ty, tx = _fade(fy), _fade(fx)
    top = corner(0, 0) * (1 - tx) + corner(0, 1) * tx
    bottom = corner(1, 0) * (1 - tx) + corner(1, 1) * tx
    return np.sqrt(2) * (top * (1 - ty) + bottom * ty)


def perlin_mask(rng: np.random.Generator, side: int) -> np.ndarray:
    """Binary ``side × side`` mask: Perlin noise with 2 or 4 cells per axis (independently), rotated by
    U(−90°, 90°) with zero fill, thresholded at 0.5."""
    cells = (2 ** int(rng.integers(1, 3)), 2 ** int(rng.integers(1, 3)))
    noise = torch.from_numpy(perlin_noise(rng, (side, side), cells)).float()[None]
    rotated = TF.rotate(noise, float(rng.uniform(-90.0, 90.0)), interpolation=BILINEAR, fill=0.0)
    return (rotated[0] > 0.5).numpy()


def paste_anomaly(
    image: np.ndarray, texture: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Blend an augmented texture into ``image`` inside a Perlin mask m, with β ~ U(0, 0.8):
    out = img·(1 − m) + (1 − β)·tex·m + β·img·m.

    Args:
        image: ``S × S × 3`` uint8.
        texture: ``S × S × 3`` uint8 texture (before augmentation).

    Returns:
        ``(image uint8, mask bool)``.
    """
    tex = augment_texture(torch.from_numpy(np.ascontiguousarray(texture)).permute(2, 0, 1), rng)
    tex = tex.permute(1, 2, 0).numpy().astype(np.float64) / 255.0
    mask = perlin_mask(rng, image.shape[0])
    beta = rng.uniform(0.0, 0.8)
    img = image.astype(np.float64) / 255.0
    m = mask[..., None].astype(np.float64)
    out = img * (1 - m) + (1 - beta) * tex * m + beta * img * m
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8), mask


@dataclass(frozen=True)
class ProceduralTextures:
    """The project's procedural textures (a picklable :data:`TextureSource`, for DataLoader workers under any
    start method)."""

    def __call__(self, rng: np.random.Generator, side: int) -> np.ndarray:
        return procedural_texture(rng, side, side)


@dataclass(frozen=True)
class TextureFiles:
    """Texture images, one drawn uniformly per anomaly and resized to ``side × side`` (picklable)."""

    files: tuple[Path, ...]

    def __call__(self, rng: np.random.Generator, side: int) -> np.ndarray:
        image = Image.fromarray(read_image_rgb(self.files[int(rng.integers(len(self.files)))]))
        return np.asarray(image.resize((side, side), Image.Resampling.BILINEAR))


def texture_source(directory: str) -> TextureSource:
    """The anomaly texture source: the project's procedural textures (``""``), or the images of a DTD-style
    folder (``DIR/<class>/*.jpg``, sorted)."""
    if not directory:
        return ProceduralTextures()
    files = tuple(sorted(Path(directory).expanduser().glob("*/*.jpg")))
    if not files:
        raise UserError(
            f"anomaly texture folder '{directory}' has no '<class>/*.jpg' images: pass the DTD 'images' folder, "
            "or leave it empty for the procedural textures"
        )
    return TextureFiles(files)
