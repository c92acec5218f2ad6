"""Signed distance functions in pixel units (negative inside), rotation and anti-aliased coverage."""

from __future__ import annotations

import numpy as np

_SQRT3 = np.sqrt(3.0)


def rotate(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate points by ``angle`` radians about the origin (clockwise on screen, where y points down)."""
    cos, sin = np.cos(angle), np.sin(angle)
    return x * cos - y * sin, x * sin + y * cos


def coverage(distance: np.ndarray, softness: float = 1.0) -> np.ndarray:
    """Fraction of each pixel inside a shape, from its signed distance: a ``softness``-pixel ramp."""
    return np.clip(0.5 - distance / softness, 0.0, 1.0)


def circle(x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    return np.sqrt(x * x + y * y) - radius


def ring(x: np.ndarray, y: np.ndarray, inner: float, outer: float) -> np.ndarray:
    """Annulus between radii ``inner`` and ``outer``."""
    return np.abs(np.sqrt(x * x + y * y) - 0.5 * (inner + outer)) - 0.5 * (outer - inner)


def box(x: np.ndarray, y: np.ndarray, half_width: float, half_height: float, corner: float = 0.0) -> np.ndarray:
    """Axis-aligned rectangle centred on the origin with rounded corners of radius ``corner``."""
    qx = np.abs(x) - half_width + corner
    qy = np.abs(y) - half_height + corner
    outside = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
    return outside + np.minimum(np.maximum(qx, qy), 0.0) - corner


def stadium(x: np.ndarray, y: np.ndarray, half_length: float, radius: float) -> np.ndarray:
    """Capsule outline along x: a segment of half-length ``half_length`` thickened by ``radius``."""
    return np.sqrt(np.maximum(np.abs(x) - half_length, 0.0) ** 2 + y * y) - radius


def hexagon(x: np.ndarray, y: np.ndarray, inradius: float, corner: float = 0.0) -> np.ndarray:
    """Regular hexagon with flat top and bottom, distance ``inradius`` from centre to each side."""
    ax, ay = np.abs(x), np.abs(y)
    fold = np.minimum(-0.5 * _SQRT3 * ax + 0.5 * ay, 0.0)
    px = ax + _SQRT3 * fold
    py = ay - fold
    limit = (inradius - corner) / _SQRT3
    px = px - np.clip(px, -limit, limit)
    py = py - (inradius - corner)
    return np.sqrt(px * px + py * py) * np.sign(py) - corner


def polyline(x: np.ndarray, y: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Unsigned distance to a chain of segments through ``points`` (N×2, columns x, y)."""
    best = np.full(np.shape(x), np.inf)
    for (ax, ay), (bx, by) in zip(points[:-1], points[1:]):
        dx, dy = bx - ax, by - ay
        length2 = max(dx * dx + dy * dy, 1e-12)
        t = np.clip(((x - ax) * dx + (y - ay) * dy) / length2, 0.0, 1.0)
        ex, ey = x - ax - t * dx, y - ay - t * dy
        best = np.minimum(best, ex * ex + ey * ey)
    return np.sqrt(best)


def direction(angle: float) -> tuple[float, float]:
    """Unit vector (x, y) at ``angle`` radians in image axes."""
    return float(np.cos(angle)), float(np.sin(angle))
