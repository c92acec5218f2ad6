"""Defects: each takes a normal `Scene` and returns the scene's image with one defect applied.

Surface defects (scratch, spot, crack, colour shift) are painted over the product surface; part defects
(missing part, displaced part) redraw the object's layout with one detachable part removed or moved. The
ground-truth mask is not produced here: it is whatever changed (see `render.render_sample`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from fsas_bench.data.synthetic.colours import STAINS, TINTS, gray_name, luminance, rgb
from fsas_bench.data.synthetic.geometry import coverage, polyline, rotate
from fsas_bench.data.synthetic.noise import value_noise
from fsas_bench.data.synthetic.scene import Scene, part_names


@dataclass(frozen=True)
class Defect:
    """A defective version of a scene's image and what a caption may say about it."""

    image: np.ndarray  # H×W×C, like `Scene.image`
    parts: tuple[str, ...]  # parts still visible
    part: str | None = None  # the missing or displaced part
    colour: str | None = None  # colour of a stain, or the tint of a colour shift


def scratch(rng: np.random.Generator, scene: Scene) -> Defect:
    """A thin curved line that lays bare the material under the surface (`Scene.exposed`)."""
    height, width = scene.surface.shape
    length = rng.uniform(0.3, 0.6) * min(height, width)
    centre = _anchor(rng, scene)
    heading = rng.uniform(0.0, np.pi)
    along = np.array([np.cos(heading), np.sin(heading)])
    bow = rng.uniform(-0.15, 0.15) * length * np.array([-along[1], along[0]])
    t = np.linspace(-0.5, 0.5, 17)[:, None]
    path = centre + t * length * along + (1.0 - 4.0 * t * t) * bow
    alpha = _stroke(scene, [path], rng.uniform(0.9, 2.2)) * rng.uniform(0.6, 0.9)
    return _painted(scene, alpha, scene.exposed)


def crack(rng: np.random.Generator, scene: Scene) -> Defect:
    """A jagged dark fissure with a side branch or two."""
    start = _anchor(rng, scene)
    heading = rng.uniform(0.0, 2.0 * np.pi)
    trunk = _walk(rng, start, heading, int(rng.integers(20, 50)))
    branches = [
        _walk(rng, trunk[int(rng.integers(2, len(trunk) - 2))], heading + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2),
              int(rng.integers(5, 14)))
        for _ in range(int(rng.integers(1, 3)))
    ]
    alpha = _stroke(scene, [trunk, *branches], rng.uniform(0.8, 1.5))
    return _painted(scene, alpha, 0.22 * scene.image)


def spot(rng: np.random.Generator, scene: Scene) -> Defect:
    """A stain with an irregular outline and uneven density, in a colour that stands out from the surface."""
    alpha = _blob(rng, scene, (0.004, 0.04)) * rng.uniform(0.6, 0.9)
    channels = scene.image.shape[2]
    under = float(luminance((scene.image * alpha[..., None]).sum(axis=(0, 1)) / alpha.sum()))
    # black or white always qualifies: their luminances are 0.05 and 0.93
    name = str(next(name for name in rng.permutation(sorted(STAINS)) if abs(luminance(STAINS[name]) - under) > 0.3))
    colour = rgb(STAINS[name], channels)
    mottled = 1.0 + 0.12 * value_noise(rng, *alpha.shape, (4.0, 4.0))
    image = scene.image + (colour * mottled[..., None] - scene.image) * alpha[..., None]
    return Defect(image, scene.parts, colour=name if channels == 3 else gray_name(float(colour[0])))


def colour_shift(rng: np.random.Generator, scene: Scene) -> Defect:
    """A discoloured patch: the surface keeps its shading but takes on a tint (colour images only)."""
    alpha = _blob(rng, scene, (0.008, 0.045)) * rng.uniform(0.65, 0.9)
    lum = luminance(scene.image)[..., None]
    for name in rng.permutation(sorted(TINTS)):  # the first tint that clearly changes the patch, else the last
        tinted = np.clip(lum * np.array(TINTS[name]), 0.0, 1.0)
        change = np.abs(tinted - scene.image).max(axis=2)
        if (change * alpha).sum() > 0.15 * alpha.sum():
            break
    return Defect(scene.image + (tinted - scene.image) * alpha[..., None], scene.parts, colour=str(name))


def missing_part(rng: np.random.Generator, scene: Scene) -> Defect:
    """One detachable part left out."""
    parts = scene.layout.parts
    index = _detachable(rng, scene)
    remaining = parts[:index] + parts[index + 1 :]
    image, _ = scene.layout.with_parts(remaining).render()
    return Defect(image, part_names(remaining), part=parts[index].name)


def displaced_part(rng: np.random.Generator, scene: Scene) -> Defect:
    """One detachable part shifted by 4 to 10 pixels and turned by up to 20 degrees."""
    parts = scene.layout.parts
    index = _detachable(rng, scene)
    shift = rng.uniform(4.0, 10.0)
    heading = rng.uniform(0.0, 2.0 * np.pi)
    moved = parts[index].moved(shift * np.cos(heading), shift * np.sin(heading), rng.uniform(-0.35, 0.35))
    image, _ = scene.layout.with_parts(parts[:index] + (moved,) + parts[index + 1 :]).render()
    return Defect(image, scene.parts, part=parts[index].name)


DEFECTS: dict[str, Callable[[np.random.Generator, Scene], Defect]] = {
    "scratch": scratch,
    "spot": spot,
    "crack": crack,
    "colour_shift": colour_shift,
    "missing_part": missing_part,
    "displaced_part": displaced_part,
}


def _anchor(rng: np.random.Generator, scene: Scene) -> np.ndarray:
    """A random point (x, y) on the product surface, at least an eighth of the image from its border."""
    height, width = scene.surface.shape
    margin = min(height, width) // 8
    inner = scene.surface[margin : height - margin, margin : width - margin] > 0.99
    ys, xs = np.nonzero(inner)
    index = int(rng.integers(ys.size))
    return np.array([xs[index] + margin, ys[index] + margin], np.float64)


def _walk(rng: np.random.Generator, start: np.ndarray, heading: float, steps: int) -> np.ndarray:
    """A wandering path of ``steps`` steps of 2.5 pixels: (steps + 1)×2 points (x, y)."""
    turns = heading + np.cumsum(rng.normal(0.0, 0.35, steps))
    offsets = 2.5 * np.stack([np.cos(turns), np.sin(turns)], axis=1)
    return start + np.vstack([np.zeros(2), np.cumsum(offsets, axis=0)])


def _stroke(scene: Scene, paths: list[np.ndarray], half_width: float) -> np.ndarray:
    """Coverage (H×W) of lines ``half_width`` pixels either side of ``paths``, on the product surface."""
    points = np.vstack(paths)
    low, high = points.min(axis=0) - half_width - 2.0, points.max(axis=0) + half_width + 2.0
    alpha = np.zeros(scene.surface.shape)
    window = _window(scene, low, high)
    if window is not None:
        ys, xs = np.mgrid[window].astype(np.float64)
        distance = np.min([polyline(xs, ys, path) for path in paths], axis=0)
        alpha[window] = coverage(distance - half_width)
    return alpha * scene.surface


def _blob(rng: np.random.Generator, scene: Scene, area: tuple[float, float]) -> np.ndarray:
    """Coverage (H×W) of an irregular patch whose area is a random fraction in ``area`` of the image,
    on the product surface."""
    height, width = scene.surface.shape
    size = float(np.sqrt(np.exp(rng.uniform(*np.log(area))) * height * width / np.pi))
    aspect = rng.uniform(0.6, 1.0)
    centre = _anchor(rng, scene)
    turn = rng.uniform(0.0, np.pi)
    window = _window(scene, centre - 1.5 * size - 2.0, centre + 1.5 * size + 2.0)
    ys, xs = np.mgrid[window].astype(np.float64)
    u, v = rotate(xs - centre[0], ys - centre[1], -turn)
    ellipse = np.sqrt((u / size) ** 2 + (v / (size * aspect)) ** 2) - 1.0
    ragged = ellipse + 0.3 * value_noise(rng, *xs.shape, (0.4 * size, 0.4 * size))
    alpha = np.zeros((height, width))
    alpha[window] = coverage(ragged * size * aspect, 1.5)
    return alpha * scene.surface


def _window(scene: Scene, low: np.ndarray, high: np.ndarray) -> tuple[slice, slice] | None:
    """Image slices covering the box from ``low`` to ``high`` (x, y), clipped; None if empty."""
    height, width = scene.surface.shape
    left, top = max(int(np.floor(low[0])), 0), max(int(np.floor(low[1])), 0)
    right, bottom = min(int(np.ceil(high[0])) + 1, width), min(int(np.ceil(high[1])) + 1, height)
    if right - left < 1 or bottom - top < 1:
        return None
    return slice(top, bottom), slice(left, right)


def _painted(scene: Scene, alpha: np.ndarray, target: np.ndarray) -> Defect:
    """The scene's image blended towards ``target`` (C, or H×W×C) by ``alpha`` (H×W)."""
    return Defect(scene.image + (target - scene.image) * alpha[..., None], scene.parts)


def _detachable(rng: np.random.Generator, scene: Scene) -> int:
    candidates = [index for index, part in enumerate(scene.layout.parts) if part.detachable]
    return candidates[int(rng.integers(len(candidates)))]
