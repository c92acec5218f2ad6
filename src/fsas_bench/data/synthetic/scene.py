"""What a category renders before the camera: a `Scene`, and for objects the `Layout` of parts behind it.

Objects are drawn part by part with signed distance functions, so that part defects (missing or displaced
part) can redraw the same object with one part changed and everything else bit-for-bit identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from fsas_bench.data.synthetic.geometry import coverage, rotate


@dataclass(frozen=True)
class PaintContext:
    """Where a part is being painted: arrays over the part's window of the image (h×w)."""

    x: np.ndarray  # part-local coordinates, pixels
    y: np.ndarray
    dx: np.ndarray  # image-axis offsets from the part's centre, pixels
    dy: np.ndarray
    distance: np.ndarray  # signed distance to the part's outline, pixels
    under: np.ndarray  # h×w×C: the image before this part
    background: np.ndarray  # h×w×C: the bare background (seen through holes)
    light: tuple[float, float]  # unit vector towards the light, image axes (x, y)
    window: tuple[slice, slice]  # where the arrays lie in the image, to index full-frame textures

    def facing(self) -> np.ndarray:
        """h×w cosine between the outline's outward normal and the light direction."""
        grad_y, grad_x = np.gradient(self.distance)
        return grad_x * self.light[0] + grad_y * self.light[1]

    def edge_light(self, width: float, strength: float) -> np.ndarray:
        """h×w shading of a bevel ``width`` pixels wide along the outline: positive where the bevel faces
        the light. A negative ``strength`` turns the bevel into the wall of a recess."""
        return strength * self.facing() * np.clip(1.0 + self.distance / width, 0.0, 1.0)

    def radial_light(self, strength: float) -> np.ndarray:
        """h×w shading of a cone around the part's centre (a chamfer): positive where it faces the light."""
        radius = np.maximum(np.sqrt(self.dx * self.dx + self.dy * self.dy), 1e-6)
        return strength * (self.dx * self.light[0] + self.dy * self.light[1]) / radius


Paint = Callable[[PaintContext], np.ndarray]  # returns h×w×C colours
Shape = Callable[[np.ndarray, np.ndarray], np.ndarray]  # local (x, y) -> signed distance


@dataclass(frozen=True)
class Part:
    """One drawable part of an object, placed in the object's frame (pixels, radians)."""

    name: str
    shape: Shape
    paint: Paint
    extent: float  # radius around (x, y) that contains the shape, pixels
    x: float = 0.0
    y: float = 0.0
    angle: float = 0.0
    solid: bool = True  # False for holes: not product surface
    shadow: tuple[float, float] = (0.0, 0.0)  # (opacity, distance in pixels) of its drop shadow
    detachable: bool = False  # a component that can go missing or be displaced

    def moved(self, dx: float, dy: float, dangle: float) -> Part:
        """This part shifted by (dx, dy) pixels and turned by ``dangle`` radians in the object's frame."""
        return replace(self, x=self.x + dx, y=self.y + dy, angle=self.angle + dangle)


@dataclass(frozen=True)
class Layout:
    """An object on a background: parts drawn in order under a pose (centre in pixels, angle)."""

    background: np.ndarray  # H×W×C
    parts: tuple[Part, ...]
    centre: tuple[float, float]  # (x, y)
    angle: float
    light: tuple[float, float]

    def with_parts(self, parts: tuple[Part, ...]) -> Layout:
        return replace(self, parts=parts)

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns the image (H×W×C) and the product surface (H×W in [0, 1])."""
        image = self.background.copy()
        surface = np.zeros(image.shape[:2])
        grid = np.mgrid[0 : image.shape[0], 0 : image.shape[1]].astype(np.float64)
        for part in self.parts:
            self._draw(part, image, surface, grid)
        return image, surface

    def _draw(self, part: Part, image: np.ndarray, surface: np.ndarray, grid: np.ndarray) -> None:
        offset_x, offset_y = rotate(np.float64(part.x), np.float64(part.y), self.angle)
        cx, cy = self.centre[0] + float(offset_x), self.centre[1] + float(offset_y)
        opacity, distance = part.shadow
        window = _window(cx, cy, part.extent + 2.0 + 2.0 * distance, image.shape[:2])
        if window is None:
            return
        dx, dy = grid[1][window] - cx, grid[0][window] - cy
        angle = self.angle + part.angle
        if opacity > 0.0:
            sx, sy = rotate(dx + self.light[0] * distance, dy + self.light[1] * distance, -angle)
            shade = opacity * coverage(part.shape(sx, sy), distance)
            image[window] *= 1.0 - shade[..., None]
        lx, ly = rotate(dx, dy, -angle)
        dist = part.shape(lx, ly)
        alpha = coverage(dist)
        if not alpha.any():
            return
        context = PaintContext(lx, ly, dx, dy, dist, image[window], self.background[window], self.light, window)
        colour = part.paint(context)
        image[window] += (colour - image[window]) * alpha[..., None]
        surface[window] += (float(part.solid) - surface[window]) * alpha


@dataclass(frozen=True)
class Scene:
    """A noise-free rendering of one item, before lighting and sensor noise, and what defects need."""

    image: np.ndarray  # float64 H×W×C, C = 1 (grayscale) or 3, values about [0, 1]
    surface: np.ndarray  # float64 H×W in [0, 1]: product surface where surface defects may appear
    exposed: np.ndarray  # (C,) colour of the material a scratch lays bare
    parts: tuple[str, ...]  # visible parts, for captions
    layout: Layout | None = None  # objects only: redrawn by part defects


def object_scene(layout: Layout, exposed: np.ndarray) -> Scene:
    """Render ``layout`` and describe it as a scene; parts are listed once each, in drawing order."""
    image, surface = layout.render()
    return Scene(image, surface, np.asarray(exposed, np.float64), part_names(layout.parts), layout)


def part_names(parts: tuple[Part, ...]) -> tuple[str, ...]:
    """Distinct part names in drawing order."""
    return tuple(dict.fromkeys(part.name for part in parts))


def _window(cx: float, cy: float, reach: float, shape: tuple[int, int]) -> tuple[slice, slice] | None:
    top, bottom = max(math.floor(cy - reach), 0), min(math.ceil(cy + reach) + 1, shape[0])
    left, right = max(math.floor(cx - reach), 0), min(math.ceil(cx + reach) + 1, shape[1])
    if bottom - top < 2 or right - left < 2:
        return None
    return slice(top, bottom), slice(left, right)
