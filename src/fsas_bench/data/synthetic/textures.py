"""Procedural texture families (float64 H×W×C images in about [0, 1]) and `procedural_texture`.

Every family takes its colours as (C,) arrays, so the same code renders colour and grayscale categories,
and draws its phase, orientation and small irregularities from the generator it is given.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from fsas_bench.data.synthetic.colours import random_colour
from fsas_bench.data.synthetic.geometry import box, coverage, rotate
from fsas_bench.data.synthetic.noise import fractal_noise, profile_noise, value_noise


def _frame(rng: np.random.Generator, height: int, width: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates turned by ``angle`` about a random point: the texture's own axes (H×W each)."""
    xs = np.arange(width, dtype=np.float64)[None, :] - rng.uniform(0, width)
    ys = np.arange(height, dtype=np.float64)[:, None] - rng.uniform(0, height)
    return rotate(xs, ys, -angle)


def _lerp(low: np.ndarray, high: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel mix of two colours (C,) or images (H×W×C) by ``t`` (H×W)."""
    return low + (high - low) * t[..., None]


def woven(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    period: float,
    fill: float,
    floats: int,
    warp: np.ndarray,
    weft: np.ndarray,
    gap: np.ndarray,
    angle: float,
) -> np.ndarray:
    """Woven threads ``period`` pixels apart, each covering ``fill`` of its cell: every warp thread passes
    over ``floats`` weft threads and under one (1: plain weave, 2: twill). A fill near 1 gives cloth, a
    small fill a wire mesh over ``gap``. Returns H×W×C."""
    u, v = _frame(rng, height, width, angle)
    u, v = u / period, v / period
    column, row = np.floor(u), np.floor(v)
    across_warp, across_weft = u - column - 0.5, v - row - 0.5  # in [-0.5, 0.5)
    half = 0.5 * fill
    warp_on_top = (column + row) % (floats + 1) != 0
    fibre_cells = (3.0 * period, 0.2 * period)
    warp_shade = _thread_shade(rng, across_warp / half, across_weft, warp_on_top, column, fibre_cells)
    weft_shade = _thread_shade(rng, across_weft / half, across_warp, ~warp_on_top, row, fibre_cells[::-1])
    warp_cover = coverage((np.abs(across_warp) - half) * period)
    weft_cover = coverage((np.abs(across_weft) - half) * period)
    on_top = warp_on_top[..., None]
    top_colour = np.where(on_top, warp, weft) * np.where(warp_on_top, warp_shade, weft_shade)[..., None]
    under_colour = 0.7 * np.where(on_top, weft, warp) * np.where(warp_on_top, weft_shade, warp_shade)[..., None]
    image = _lerp(gap, under_colour, np.where(warp_on_top, weft_cover, warp_cover))
    return _lerp(image, top_colour, np.where(warp_on_top, warp_cover, weft_cover))


def _thread_shade(
    rng: np.random.Generator,
    across: np.ndarray,
    along: np.ndarray,
    on_top: np.ndarray,
    thread: np.ndarray,
    fibre_cells: tuple[float, float],
) -> np.ndarray:
    """Brightness (H×W) of one family of threads: round across the thread, bulging where it lies on top,
    with a per-thread tone and fibres streaking along it."""
    roundness = np.sqrt(np.clip(1.0 - across**2, 0.0, 1.0))
    bulge = np.where(on_top, 0.6 + 0.4 * np.cos(np.pi * along), 0.6)
    tones = rng.normal(1.0, 0.05, 97)[thread.astype(int) % 97]
    fibres = value_noise(rng, *across.shape, fibre_cells)
    return (0.3 + 0.8 * roundness * bulge) * tones * (1.0 + 0.07 * fibres)


def tiles(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    size: float,
    grout_width: float,
    glaze: np.ndarray,
    grout: np.ndarray,
    angle: float,
    light: tuple[float, float],
) -> np.ndarray:
    """Square glazed tiles ``size`` pixels apart in a grout grid, each tile slightly different in tone,
    with rounded lit edges. Returns H×W×C."""
    u, v = _frame(rng, height, width, angle)
    column, row = np.floor(u / size), np.floor(v / size)
    local_u, local_v = u - (column + 0.5) * size, v - (row + 0.5) * size
    half = 0.5 * (size - grout_width)
    distance = box(local_u, local_v, half, half, corner=3.0)
    tone = rng.normal(1.0, 0.035, size=(31, 31))[column.astype(int) % 31, row.astype(int) % 31]
    cloud = fractal_noise(rng, height, width, (48.0, 48.0), octaves=3)
    grad_y, grad_x = np.gradient(distance)
    bevel = 0.25 * (grad_x * light[0] + grad_y * light[1]) * np.clip(1.0 + distance / 4.0, 0.0, 1.0)
    surface = glaze * (tone * (1.0 + 0.025 * cloud) + bevel)[..., None]
    sand = 1.0 + 0.12 * value_noise(rng, height, width, (1.2, 1.2))
    joints = grout * sand[..., None]
    return _lerp(joints, surface, coverage(distance))


def wood(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    spacing: float,
    early: np.ndarray,
    late: np.ndarray,
    angle: float,
) -> np.ndarray:
    """Plank of wood with growth rings ``spacing`` pixels apart running along x, wavy and with pores.
    Returns H×W×C."""
    _, v = _frame(rng, height, width, angle)
    warp = fractal_noise(rng, height, width, (48.0, 220.0), octaves=3)
    rings = (v + 0.35 * spacing * warp) / spacing
    phase = rings - np.floor(rings)
    latewood = np.clip((phase - 0.62) / 0.2, 0.0, 1.0) * np.clip((1.0 - phase) / 0.08, 0.0, 1.0)
    pores = value_noise(rng, height, width, (1.3, 18.0))
    tone = np.clip(0.85 * latewood + 0.12 * pores + 0.06 * warp, 0.0, 1.0)
    return _lerp(early, late, tone) * (1.0 + 0.04 * pores)[..., None]


def marble(rng: np.random.Generator, height: int, width: int, *, base: np.ndarray, vein: np.ndarray) -> np.ndarray:
    """Polished stone with thin turbulent veins. Returns H×W×C."""
    u, _ = _frame(rng, height, width, rng.uniform(0.0, np.pi))
    turbulence = fractal_noise(rng, height, width, (56.0, 56.0), octaves=4)
    veins = np.abs(np.sin(u / rng.uniform(24.0, 40.0) + 1.3 * turbulence)) ** 0.3
    clouds = fractal_noise(rng, height, width, (24.0, 24.0), octaves=3)
    return _lerp(vein, base, np.clip(veins + 0.05 * clouds, 0.0, 1.0))


def carpet(rng: np.random.Generator, height: int, width: int, *, pile: np.ndarray) -> np.ndarray:
    """Dense looped pile: fine grain over a faint large-scale unevenness. Returns H×W×C."""
    loops = value_noise(rng, height, width, (2.0, 2.0))
    tufts = fractal_noise(rng, height, width, (6.0, 6.0), octaves=2)
    unevenness = fractal_noise(rng, height, width, (64.0, 64.0), octaves=2)
    return pile * (1.0 + 0.14 * loops + 0.1 * tufts + 0.04 * unevenness)[..., None]


def brushed(rng: np.random.Generator, height: int, width: int, *, metal: np.ndarray, angle: float) -> np.ndarray:
    """Brushed sheet metal: fine streaks along ``angle`` and a soft sheen across them. Returns H×W×C."""
    u, v = _frame(rng, height, width, angle)
    streaks = profile_noise(rng, (float(v.min()), float(v.max())), 1.2)(v)
    grain = value_noise(rng, height, width, (3.0, 3.0))
    sheen = np.exp(-4.0 * (u / max(height, width)) ** 2)
    return metal * (0.82 + 0.05 * streaks + 0.02 * grain + 0.15 * sheen)[..., None]


def procedural_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random texture from one of the families above in random colours (e.g. the source of pasted
    synthetic anomalies). Returns uint8 H×W×3."""
    family = _RANDOM_FAMILIES[int(rng.integers(len(_RANDOM_FAMILIES)))]
    image = family(rng, height, width)
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _random_woven(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    warp, weft = random_colour(rng, (0.2, 0.8), (0.3, 0.9)), random_colour(rng, (0.1, 0.7), (0.3, 0.9))
    return woven(rng, height, width, period=rng.uniform(4.0, 16.0), fill=rng.uniform(0.4, 0.95),
                 floats=int(rng.integers(1, 4)), warp=warp,
                 weft=weft, gap=random_colour(rng, (0.0, 0.5), (0.05, 0.4)), angle=rng.uniform(0, np.pi))


def _random_tiles(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    light = rotate(np.float64(1.0), np.float64(0.0), rng.uniform(0, 2 * np.pi))
    return tiles(rng, height, width, size=rng.uniform(20.0, 90.0), grout_width=rng.uniform(2.0, 8.0),
                 glaze=random_colour(rng, (0.0, 0.8), (0.4, 0.95)), grout=random_colour(rng, (0.0, 0.3), (0.2, 0.8)),
                 angle=rng.uniform(0, np.pi), light=(float(light[0]), float(light[1])))


def _random_wood(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    early = random_colour(rng, (0.3, 0.7), (0.5, 0.9))
    return wood(rng, height, width, spacing=rng.uniform(8.0, 30.0), early=early, late=early * rng.uniform(0.4, 0.7),
                angle=rng.uniform(0, np.pi))


def _random_marble(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return marble(rng, height, width, base=random_colour(rng, (0.0, 0.4), (0.6, 0.95)),
                  vein=random_colour(rng, (0.0, 0.6), (0.1, 0.5)))


def _random_carpet(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return carpet(rng, height, width, pile=random_colour(rng, (0.2, 0.9), (0.2, 0.8)))


def _random_brushed(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    return brushed(rng, height, width, metal=random_colour(rng, (0.0, 0.25), (0.5, 0.9)), angle=rng.uniform(0, np.pi))


_RANDOM_FAMILIES: tuple[Callable[[np.random.Generator, int, int], np.ndarray], ...] = (
    _random_woven, _random_tiles, _random_wood, _random_marble, _random_carpet, _random_brushed,
)
