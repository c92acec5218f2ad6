"""Named colours (linear-ish RGB in [0, 1]) so that captions can say what an image shows."""

from __future__ import annotations

import colorsys

import numpy as np

STAINS: dict[str, tuple[float, float, float]] = {
    "black": (0.05, 0.05, 0.05),
    "dark brown": (0.24, 0.14, 0.07),
    "rust": (0.58, 0.27, 0.10),
    "yellow": (0.85, 0.72, 0.20),
    "white": (0.93, 0.93, 0.90),
}

TINTS: dict[str, tuple[float, float, float]] = {
    "yellowish": (1.25, 1.05, 0.35),
    "reddish": (1.30, 0.55, 0.45),
    "bluish": (0.55, 0.80, 1.35),
    "greenish": (0.70, 1.25, 0.60),
    "faded": (1.45, 1.45, 1.45),
}


def rgb(colour: tuple[float, float, float], channels: int) -> np.ndarray:
    """``colour`` as a (channels,) float64 array; one channel means its luminance."""
    values = np.asarray(colour, np.float64)
    return values if channels == 3 else luminance(values)[None]


def luminance(colour: np.ndarray) -> np.ndarray:
    """Rec. 601 luma over the last axis (RGB), or the value itself for one channel: shape without that axis."""
    colour = np.asarray(colour, np.float64)
    if colour.shape[-1] == 1:
        return colour[..., 0]
    return 0.299 * colour[..., 0] + 0.587 * colour[..., 1] + 0.114 * colour[..., 2]


def random_colour(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]) -> np.ndarray:
    """A colour with a uniform hue and saturation/value drawn from the given ranges, as a (3,) array."""
    hue = rng.uniform(0.0, 1.0)
    return np.array(colorsys.hsv_to_rgb(hue, rng.uniform(*saturation), rng.uniform(*value)))


def gray_name(level: float) -> str:
    """Words for a gray level in [0, 1]."""
    return "black" if level < 0.15 else "dark gray" if level < 0.4 else "gray" if level < 0.7 else "light gray"
