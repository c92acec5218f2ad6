"""Seeded smooth noise: the randomness behind every texture, surface and defect outline."""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage


def value_noise(rng: np.random.Generator, height: int, width: int, cell: tuple[float, float]) -> np.ndarray:
    """Lattice noise smoothed by cubic B-spline interpolation, with a random phase.

    Args:
        cell: lattice spacing in pixels ``(along y, along x)``; unequal values give streaks.

    Returns:
        float64 H×W, zero mean and unit standard deviation.
    """
    cell_y, cell_x = max(cell[0], 1.0), max(cell[1], 1.0)
    lattice = rng.standard_normal((int(height / cell_y) + 5, int(width / cell_x) + 5))
    rows = _spline(lattice, np.arange(height) / cell_y + rng.uniform(0.0, 1.0), axis=0)
    return _standardise(_spline(rows, np.arange(width) / cell_x + rng.uniform(0.0, 1.0), axis=1))


def _spline(values: np.ndarray, positions: np.ndarray, axis: int) -> np.ndarray:
    """Cubic B-spline interpolation of ``values`` along ``axis`` at ``positions`` (lattice units, ≥ 0)."""
    index = np.floor(positions).astype(int)
    t = positions - index
    weights = ((1 - t) ** 3 / 6, (3 * t**3 - 6 * t**2 + 4) / 6, (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6, t**3 / 6)
    shape = (-1, 1) if axis == 0 else (1, -1)
    return sum(w.reshape(shape) * np.take(values, index + k, axis=axis) for k, w in enumerate(weights))


def fractal_noise(
    rng: np.random.Generator,
    height: int,
    width: int,
    cell: tuple[float, float],
    octaves: int = 4,
    persistence: float = 0.5,
) -> np.ndarray:
    """Sum of ``octaves`` value-noise layers, each at half the cell size and ``persistence`` times the
    amplitude of the previous one. Returns float64 H×W, zero mean and unit standard deviation."""
    total = np.zeros((height, width), np.float64)
    for octave in range(octaves):
        scale = 0.5**octave
        total += persistence**octave * value_noise(rng, height, width, (cell[0] * scale, cell[1] * scale))
    return _standardise(total)


def profile_noise(
    rng: np.random.Generator, span: tuple[float, float], cell: float
) -> Callable[[np.ndarray], np.ndarray]:
    """One-dimensional smooth noise over ``span`` (pixels), as a function of a coordinate array: concentric
    lathe marks when fed a radius, brushing streaks when fed the position across the brushing direction.
    The noise is drawn now, so the function returns the same values on every call (float64, zero mean)."""
    knots = np.arange(span[0] - 3 * cell, span[1] + 3 * cell, cell)
    values = ndimage.gaussian_filter1d(rng.standard_normal(knots.size), 1.0)
    values = (values - values.mean()) / max(float(values.std()), 1e-6)
    return lambda coordinate: np.interp(coordinate, knots, values)


def _standardise(field: np.ndarray) -> np.ndarray:
    field = field - field.mean()
    return field / max(float(field.std()), 1e-6)
