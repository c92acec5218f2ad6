"""Texture categories: one texture family in the category's colours, seen head-on, as a `Scene`.

Normal variation comes from the family (phase, a small rotation, thread/tile/ring irregularities); the
camera adds lighting and noise later.
"""

from __future__ import annotations

import numpy as np

from fsas_bench.data.synthetic import textures
from fsas_bench.data.synthetic.colours import rgb
from fsas_bench.data.synthetic.geometry import direction
from fsas_bench.data.synthetic.scene import Scene


def _scene(image: np.ndarray, exposed: tuple[float, float, float], parts: tuple[str, ...]) -> Scene:
    return Scene(image, np.ones(image.shape[:2]), rgb(exposed, image.shape[2]), parts)


def fabric(rng: np.random.Generator, height: int, width: int) -> Scene:
    """Blue twill cotton (denim-like): navy warp over two pale weft threads."""
    image = textures.woven(
        rng, height, width, period=rng.uniform(7.9, 8.1), fill=0.95, floats=2, warp=rgb((0.14, 0.22, 0.46), 3),
        weft=rgb((0.5, 0.55, 0.66), 3), gap=rgb((0.04, 0.05, 0.09), 3), angle=rng.uniform(-0.03, 0.03),
    )
    return _scene(image, (0.78, 0.8, 0.86), ("warp threads", "weft threads"))


def tile(rng: np.random.Generator, height: int, width: int) -> Scene:
    """Beige glazed ceramic tiles in a grey grout grid."""
    image = textures.tiles(
        rng, height, width, size=rng.uniform(63.5, 64.5), grout_width=5.0, glaze=rgb((0.86, 0.8, 0.68), 3),
        grout=rgb((0.5, 0.49, 0.47), 3), angle=rng.uniform(-0.02, 0.02), light=direction(rng.uniform(-2.6, -2.0)),
    )
    return _scene(image, (0.8, 0.6, 0.48), ("tiles", "grout lines"))


def wood(rng: np.random.Generator, height: int, width: int) -> Scene:
    """Brown oak plank with horizontal growth rings."""
    image = textures.wood(
        rng, height, width, spacing=rng.uniform(13.0, 15.0), early=rgb((0.72, 0.5, 0.3), 3),
        late=rgb((0.45, 0.27, 0.14), 3), angle=rng.uniform(-0.04, 0.04),
    )
    return _scene(image, (0.92, 0.8, 0.62), ("growth rings", "wood grain"))


def wire_mesh(rng: np.random.Generator, height: int, width: int) -> Scene:
    """Grayscale plain-woven steel wire mesh at 45 degrees over a dark gap."""
    image = textures.woven(
        rng, height, width, period=rng.uniform(15.8, 16.2), fill=0.3, floats=1, warp=rgb((0.72,) * 3, 1),
        weft=rgb((0.66,) * 3, 1), gap=rgb((0.08,) * 3, 1), angle=np.pi / 4 + rng.uniform(-0.03, 0.03),
    )
    return _scene(image, (0.95,) * 3, ("wires", "openings"))


def marble(rng: np.random.Generator, height: int, width: int) -> Scene:
    """White polished marble with grey veins."""
    image = textures.marble(rng, height, width, base=rgb((0.9, 0.89, 0.86), 3), vein=rgb((0.35, 0.36, 0.4), 3))
    return _scene(image, (0.98, 0.98, 0.97), ("veins",))


def carpet(rng: np.random.Generator, height: int, width: int) -> Scene:
    """Green looped carpet pile."""
    image = textures.carpet(rng, height, width, pile=rgb((0.18, 0.42, 0.25), 3))
    return _scene(image, (0.6, 0.75, 0.6), ("pile loops",))
