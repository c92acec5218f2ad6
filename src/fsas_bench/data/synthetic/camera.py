"""Per-image lighting and sensor noise: the normal variation every image gets, defective or not."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    """A drawn exposure: a per-pixel gain (exposure, white balance, illumination gradient, vignetting)
    and a fixed sensor-noise field, both H×W×C in 8-bit intensity units."""

    gain: np.ndarray
    noise: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, height: int, width: int, channels: int) -> Camera:
        xs = np.linspace(-1.0, 1.0, width)[None, :]
        ys = np.linspace(-1.0, 1.0, height)[:, None]
        heading = rng.uniform(0.0, 2.0 * np.pi)
        gradient = 1.0 + rng.uniform(0.0, 0.08) * (np.cos(heading) * xs + np.sin(heading) * ys)
        vignette = 1.0 - rng.uniform(0.0, 0.08) * 0.5 * (xs * xs + ys * ys)
        white_balance = rng.normal(1.0, 0.015, channels) if channels == 3 else np.ones(1)
        exposure = 255.0 * rng.uniform(0.92, 1.08)
        gain = np.stack([exposure * balance * gradient * vignette for balance in white_balance], axis=-1)
        noise = rng.standard_normal((height, width, channels), dtype=np.float32) * rng.uniform(1.0, 2.2)
        return cls(gain, noise)

    def expose(self, image: np.ndarray) -> np.ndarray:
        """Scene radiance (H×W×C, about [0, 1]) to noise-free intensities (H×W×C, about [0, 255])."""
        return image * self.gain

    def capture(self, exposed: np.ndarray) -> np.ndarray:
        """Add the sensor noise and quantise: uint8 H×W×C."""
        values = exposed + self.noise
        np.rint(values, out=values)
        np.clip(values, 0, 255, out=values)
        return values.astype(np.uint8)
