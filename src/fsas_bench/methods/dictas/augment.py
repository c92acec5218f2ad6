"""Image augmentations of DictAS training, on ``uint8`` ``3 × H × W`` tensors with torchvision's functional ops.

- :func:`strong_reference_augment`: the official albumentations 1.3.1 pipeline that turns the clean image
  into its reference (spec dictas.md §8.2 step 2).
- :func:`augment_texture`: three distinct ops of the official imgaug list applied to the anomaly texture
  (§8.2 step 3.2), as torchvision equivalents (a documented deviation: imgaug's brightness acts on luma only,
  and its hue/saturation units are mapped to torchvision's factors).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

BILINEAR = TF.InterpolationMode.BILINEAR
OFFICIAL_SIZE = 1024  # the side at which the official dropout hole sizes are given


def rotate_reflect(image: Tensor, angle: float) -> Tensor:
    """Rotation about the centre by ``angle`` degrees (counter-clockwise), bilinear, with the uncovered
    corners filled by reflection without repeating the edge (OpenCV BORDER_REFLECT_101, albumentations'
    default): reflect-pad enough for any angle, rotate, crop back to ``H × W``."""
    height, width = image.shape[-2:]
    pad = math.ceil((math.hypot(height, width) - min(height, width)) / 2) + 1
    padded = TF.pad(image, [pad, pad, pad, pad], padding_mode="reflect")
    return TF.center_crop(TF.rotate(padded, angle, interpolation=BILINEAR), [height, width])


def grid_dropout(image: Tensor, ratio: float = 0.3) -> Tensor:
    """albumentations 1.3.1 ``GridDropout(ratio)`` with its defaults: a grid of units of side max(2, side // 10)
    and, at each unit's top-left corner, a zero hole of ``ratio`` times the unit side."""
    out = image.clone()
    height, width = image.shape[-2:]
    unit_h, unit_w = max(2, height // 10), max(2, width // 10)
    hole_h = min(max(int(unit_h * ratio), 1), unit_h - 1)
    hole_w = min(max(int(unit_w * ratio), 1), unit_w - 1)
    for top in range(0, height, unit_h):
        for left in range(0, width, unit_w):
            out[..., top : top + hole_h, left : left + hole_w] = 0
    return out


def coarse_dropout(image: Tensor, rng: np.random.Generator, holes: int, side: int) -> Tensor:
    """albumentations 1.3.1 ``CoarseDropout(max_holes=holes, max_height=side, max_width=side)``: exactly
    ``holes`` zero squares of ``side`` pixels at uniform positions."""
    height, width = image.shape[-2:]
    for _ in range(holes):
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        image = TF.erase(image, top, left, side, side, torch.zeros((), dtype=image.dtype))
    return image


def strong_reference_augment(image: Tensor, rng: np.random.Generator) -> Tensor:
    """RandomRotate90 → Rotate(30°–270°, reflect-101) → HorizontalFlip(½) → VerticalFlip(½) →
    GridDropout(0.3, ½) → CoarseDropout(8 holes of 32 px at 1024², ½), on a square image."""
    image = torch.rot90(image, int(rng.integers(0, 4)), dims=(-2, -1))
    image = rotate_reflect(image, float(rng.uniform(30.0, 270.0)))
    if rng.random() < 0.5:
        image = TF.horizontal_flip(image)
    if rng.random() < 0.5:
        image = TF.vertical_flip(image)
    if rng.random() < 0.5:
        image = grid_dropout(image, 0.3)
    if rng.random() < 0.5:
        image = coarse_dropout(image, rng, 8, max(1, round(32 * image.shape[-1] / OFFICIAL_SIZE)))
    return image


def _gamma(image: Tensor, rng: np.random.Generator) -> Tensor:
    return torch.cat([TF.adjust_gamma(c, float(rng.uniform(0.5, 2.0))) for c in image.split(1)])


def _brightness(image: Tensor, rng: np.random.Generator) -> Tensor:
    shifted = image.float() * rng.uniform(0.8, 1.2) + rng.uniform(-30.0, 30.0)
    return shifted.round().clamp(0, 255).to(torch.uint8)


def _hue_saturation(image: Tensor, rng: np.random.Generator) -> Tensor:
    hue = TF.adjust_hue(image, float(rng.uniform(-50, 50)) / 255.0)
    return TF.adjust_saturation(hue, 1.0 + float(rng.uniform(-50, 50)) / 255.0)


def _solarize(image: Tensor, rng: np.random.Generator) -> Tensor:
    threshold = float(rng.uniform(32, 128))
    return TF.solarize(image, threshold) if rng.random() < 0.5 else image


TEXTURE_OPS = (
    _gamma,
    _brightness,
    lambda image, rng: TF.adjust_sharpness(image, float(rng.uniform(0.0, 2.0))),
    _hue_saturation,
    _solarize,
    lambda image, rng: TF.posterize(image, int(rng.integers(1, 9))),
    lambda image, rng: TF.invert(image),
    lambda image, rng: TF.autocontrast(image),
    lambda image, rng: TF.equalize(image),
    lambda image, rng: TF.rotate(image, float(rng.uniform(-45.0, 45.0)), interpolation=BILINEAR),
)
"""GammaContrast, MultiplyAndAddToBrightness, EnhanceSharpness, AddToHueAndSaturation, Solarize, Posterize,
Invert, Autocontrast, Equalize, Affine(rotate) — the official list, in its order."""


def augment_texture(texture: Tensor, rng: np.random.Generator) -> Tensor:
    """Three distinct ops of :data:`TEXTURE_OPS`, drawn without replacement, applied in draw order."""
    for index in rng.choice(len(TEXTURE_OPS), size=3, replace=False):
        texture = TEXTURE_OPS[int(index)](texture, rng)
    return texture
