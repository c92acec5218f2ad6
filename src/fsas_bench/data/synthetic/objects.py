"""Object categories drawn as parts (see `scene.Layout`) on a backdrop, under a random pose and light.

Every function returns a `Scene` of the given size; sizes in pixels are for the category's native size.
"""

from __future__ import annotations

import numpy as np

from fsas_bench.data.synthetic import textures
from fsas_bench.data.synthetic.colours import rgb
from fsas_bench.data.synthetic.geometry import box, circle, direction, hexagon, ring, stadium
from fsas_bench.data.synthetic.glyphs import text_shape
from fsas_bench.data.synthetic.noise import fractal_noise, profile_noise, value_noise
from fsas_bench.data.synthetic.scene import Layout, Paint, PaintContext, Part, Scene, object_scene


def backdrop(rng: np.random.Generator, height: int, width: int, colour: np.ndarray, grain: float) -> np.ndarray:
    """A matte surface to put objects on: ``colour`` with soft blotches and fine grain. Returns H×W×C."""
    blotches = fractal_noise(rng, height, width, (64.0, 64.0), octaves=2)
    fine = value_noise(rng, height, width, (1.5, 1.5))
    return colour * (1.0 + 0.04 * blotches + grain * fine)[..., None]


def pose(
    rng: np.random.Generator, height: int, width: int, shift: float, turn: tuple[float, float]
) -> tuple[tuple[float, float], float]:
    """A centre near the middle of the image (± ``shift`` pixels) and an angle drawn from ``turn``."""
    centre = (0.5 * (width - 1) + rng.uniform(-shift, shift), 0.5 * (height - 1) + rng.uniform(-shift, shift))
    return centre, rng.uniform(*turn)


def shade(colour: np.ndarray, brightness: np.ndarray) -> np.ndarray:
    """``colour`` ((C,) or h×w×C) scaled per pixel by ``brightness`` (h×w): h×w×C."""
    return brightness[..., None] * colour


def radius(context: PaintContext) -> np.ndarray:
    """h×w distance from the part's centre in its own frame."""
    return np.sqrt(context.x * context.x + context.y * context.y)


def hole(wall: np.ndarray, depth: float) -> Paint:
    """A through hole: the backdrop in shadow, ringed by the inner wall (``depth`` pixels wide), which is
    lit on the side away from the light."""

    def paint(context: PaintContext) -> np.ndarray:
        near_wall = np.clip(1.0 + context.distance / depth, 0.0, 1.0)[..., None]
        walls = shade(wall, 0.4 - 0.3 * context.facing())
        return 0.5 * context.background * (1.0 - near_wall) + walls * near_wall

    return paint


def hex_nut(rng: np.random.Generator, height: int, width: int) -> Scene:
    """Grayscale steel hex nut seen from above: chamfered hexagonal body, countersink, threaded bore."""
    light = direction(rng.uniform(-2.6, -2.0))
    background = backdrop(rng, height, width, rgb((0.2,) * 3, 1), grain=0.06)
    centre, angle = pose(rng, height, width, 8.0, (0.0, np.pi / 3))
    size = 72.0 * rng.uniform(0.98, 1.02)  # circumradius
    inradius = size * np.sqrt(3.0) / 2.0
    steel = rgb((0.6,) * 3, 1)
    grain = value_noise(rng, height, width, (1.5, 1.5))
    lathe = profile_noise(rng, (0.0, size), 0.8)

    def face(context: PaintContext) -> np.ndarray:
        r = radius(context)
        chamfer = np.clip((r - 0.9 * inradius) / 2.0, 0.0, 1.0)
        flat = 1.0 + 0.05 * lathe(r) + 0.03 * grain[context.window]
        cone = 0.7 + context.radial_light(0.3) + 0.03 * grain[context.window]
        return shade(steel, flat + (cone - flat) * chamfer + context.edge_light(3.0, 0.25))

    def countersink(context: PaintContext) -> np.ndarray:
        return shade(steel, 0.72 + 0.05 * lathe(radius(context)) + context.radial_light(-0.3))

    def thread(context: PaintContext) -> np.ndarray:
        r = radius(context)
        turns = r / 3.2 + np.arctan2(context.y, context.x) / (2.0 * np.pi)
        return shade(steel, 0.38 + 0.16 * np.cos(2.0 * np.pi * turns) + context.radial_light(-0.15))

    parts = (
        Part("hexagonal body", lambda x, y: hexagon(x, y, inradius, corner=4.0), face, size + 2, shadow=(0.55, 5.0)),
        Part("countersink", lambda x, y: circle(x, y, 0.56 * size), countersink, 0.56 * size),
        Part("bore", lambda x, y: circle(x, y, 0.44 * size), hole(steel, 6.0), 0.44 * size, solid=False),
        Part("thread", lambda x, y: ring(x, y, 0.34 * size, 0.44 * size), thread, 0.44 * size, detachable=True),
    )
    return object_scene(Layout(background, parts, centre, angle, light), rgb((0.92,) * 3, 1))


def capsule(rng: np.random.Generator, height: int, width: int) -> Scene:
    """Two-piece capsule lying on a dark tray: white body with a printed code, red cap."""
    light = direction(rng.uniform(-2.0, -1.2))
    background = backdrop(rng, height, width, rgb((0.16, 0.17, 0.2), 3), grain=0.07)
    centre, angle = pose(rng, height, width, 8.0, (-0.07, 0.07))
    scale = rng.uniform(0.98, 1.02)
    half, thickness, seam = 52.0 * scale, 29.0 * scale, 6.0 * scale
    grain = value_noise(rng, height, width, (2.0, 2.0))

    def shell(colour: tuple[float, float, float], gloss: float) -> Paint:
        def paint(context: PaintContext) -> np.ndarray:
            across = np.clip(context.y / thickness, -1.0, 1.0)
            relief = np.sqrt(1.0 - across**2)
            highlight = gloss * np.exp(-(((across + 0.45) / 0.13) ** 2))
            brightness = 0.55 + 0.4 * relief - 0.12 * across + highlight + context.edge_light(2.5, 0.15)
            return shade(rgb(colour, 3), brightness + 0.015 * grain[context.window])

        return paint

    def ink(context: PaintContext) -> np.ndarray:
        return 0.2 * context.under + 0.8 * rgb((0.16, 0.16, 0.2), 3)

    parts = (
        Part("body", lambda x, y: stadium(x, y, half, thickness), shell((0.93, 0.92, 0.88), 0.22), half + thickness,
             shadow=(0.5, 5.0)),
        Part("cap", lambda x, y: np.maximum(stadium(x, y, half, thickness + 1.2), seam - x),
             shell((0.78, 0.1, 0.1), 0.3), half + thickness + 2),
        Part("imprint", text_shape("FS25", 13.0 * scale, 1.7 * scale), ink, 24.0 * scale,
             x=seam - 0.55 * (half + thickness + seam)),
    )
    return object_scene(Layout(background, parts, centre, angle, light), rgb((0.95, 0.93, 0.9), 3))


def bracket(rng: np.random.Generator, height: int, width: int) -> Scene:
    """Galvanised steel mounting bracket (portrait): plate bent near the bottom, two holes and a slot."""
    light = direction(rng.uniform(-2.6, -2.0))
    background = backdrop(rng, height, width, rgb((0.33, 0.38, 0.44), 3), grain=0.05)
    centre, angle = pose(rng, height, width, 6.0, (-0.06, 0.06))
    half_width, half_height, bend = 60.0, 104.0, 40.0
    steel = rgb((0.72, 0.73, 0.75), 3)
    spangle = fractal_noise(rng, height, width, (10.0, 10.0), octaves=2)
    brushing = profile_noise(rng, (-half_height - 8.0, half_height + 8.0), 1.1)

    def plate(context: PaintContext) -> np.ndarray:
        flange = np.clip((context.y - bend) / 6.0, 0.0, 1.0)
        crease = np.exp(-(((context.y - bend) / 3.0) ** 2))
        brightness = (0.92 - 0.22 * flange + 0.25 * crease + 0.03 * brushing(context.y)
                      + 0.02 * spangle[context.window] + context.edge_light(3.0, 0.3))
        return shade(steel, brightness)

    drilled = hole(steel, 4.0)
    parts = (
        Part("plate", lambda x, y: box(x, y, half_width, half_height, corner=16.0), plate,
             float(np.hypot(half_width, half_height)), shadow=(0.5, 6.0)),
        Part("upper hole", lambda x, y: circle(x, y, 10.0), drilled, 10.0, y=-68.0, solid=False, detachable=True),
        Part("lower hole", lambda x, y: circle(x, y, 10.0), drilled, 10.0, y=-8.0, solid=False, detachable=True),
        Part("slot", lambda x, y: stadium(x, y, 14.0, 7.0), drilled, 21.0, y=72.0, solid=False, detachable=True),
    )
    return object_scene(Layout(background, parts, centre, angle, light), rgb((0.95, 0.95, 0.96), 3))


def button(rng: np.random.Generator, height: int, width: int) -> Scene:
    """Red four-hole plastic sewing button on linen: raised rim, dished centre."""
    light = direction(rng.uniform(-2.6, -2.0))
    background = textures.woven(
        rng, height, width, period=5.0, fill=0.9, floats=1, warp=rgb((0.82, 0.78, 0.7), 3),
        weft=rgb((0.78, 0.74, 0.66), 3), gap=rgb((0.4, 0.38, 0.33), 3), angle=rng.uniform(-0.05, 0.05),
    )
    centre, angle = pose(rng, height, width, 10.0, (0.0, 2.0 * np.pi))
    size = 66.0 * rng.uniform(0.98, 1.02)
    plastic = rgb((0.72, 0.1, 0.1), 3)

    def rim(context: PaintContext) -> np.ndarray:
        gloss = np.exp(-((context.dx - 0.6 * size * light[0]) ** 2 + (context.dy - 0.6 * size * light[1]) ** 2)
                       / (0.2 * size) ** 2)
        return shade(plastic, 0.85 + context.edge_light(7.0, 0.35)) + 0.3 * gloss[..., None]

    def dish(context: PaintContext) -> np.ndarray:
        return shade(plastic, 0.72 + context.edge_light(6.0, -0.4) + 0.05 * np.cos(radius(context) / 3.0))

    holes = tuple(
        Part("thread hole", lambda x, y: circle(x, y, 0.13 * size), hole(plastic, 3.0), 0.13 * size,
             x=sx * 0.21 * size, y=sy * 0.21 * size, solid=False, detachable=True)
        for sx, sy in ((-1, -1), (1, -1), (-1, 1), (1, 1))
    )
    parts = (
        Part("rim", lambda x, y: circle(x, y, size), rim, size, shadow=(0.45, 4.0)),
        Part("dished centre", lambda x, y: circle(x, y, 0.72 * size), dish, 0.72 * size),
    ) + holes
    return object_scene(Layout(background, parts, centre, angle, light), rgb((0.9, 0.75, 0.72), 3))


def washer(rng: np.random.Generator, height: int, width: int) -> Scene:
    """Flat steel washer on a grey bench: turned ring around a round hole."""
    light = direction(rng.uniform(-2.6, -2.0))
    background = backdrop(rng, height, width, rgb((0.42, 0.42, 0.4), 3), grain=0.05)
    centre, angle = pose(rng, height, width, 10.0, (0.0, 2.0 * np.pi))
    size = 74.0 * rng.uniform(0.98, 1.02)
    steel = rgb((0.68, 0.69, 0.7), 3)
    lathe = profile_noise(rng, (0.0, size), 0.7)

    def face(context: PaintContext) -> np.ndarray:
        return shade(steel, 0.95 + 0.035 * lathe(radius(context)) + context.edge_light(2.5, 0.3)
                     + context.radial_light(0.05))

    parts = (
        Part("ring", lambda x, y: circle(x, y, size), face, size, shadow=(0.45, 3.0)),
        Part("hole", lambda x, y: circle(x, y, 0.45 * size), hole(steel, 2.5), 0.45 * size, solid=False),
    )
    return object_scene(Layout(background, parts, centre, angle, light), rgb((0.95, 0.95, 0.96), 3))
