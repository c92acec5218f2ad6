"""`render_sample`: one normal or defective image of a category, its exact mask and its attributes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fsas_bench.data.synthetic.camera import Camera
from fsas_bench.data.synthetic.categories import CATEGORIES, CategorySpec
from fsas_bench.data.synthetic.defects import DEFECTS, Defect

AREA_RANGE = (0.003, 0.05)  # defect size as a fraction of the image
_ATTEMPTS = 50
_VISIBLE_CHANGE = 1.5  # 8-bit levels; smaller changes are dropped so that masks have no speckle


@dataclass(frozen=True)
class RenderedSample:
    """image: uint8 H×W×3, or H×W for grayscale categories; mask: bool H×W, True exactly where the
    image differs from the same sample rendered without the defect; attributes: caption material."""

    image: np.ndarray
    mask: np.ndarray
    attributes: dict[str, Any]


def render_sample(category: str, rng: np.random.Generator, defect: str | None) -> RenderedSample:
    """Render one image of ``category`` (see `CATEGORIES`), normal when ``defect`` is None.

    The draws for the item, its pose and the camera come first, so the same generator state with and
    without a defect gives the same item; the defect is redrawn until its changed area lies in
    `AREA_RANGE`.
    """
    spec = CATEGORIES[category]
    if defect is not None and defect not in spec.defects:
        raise ValueError(f"category {category!r} has no defect {defect!r}; it has {', '.join(spec.defects)}")
    scene = spec.draw(rng, spec.height, spec.width)
    camera = Camera.draw(rng, spec.height, spec.width, scene.image.shape[2])
    exposed = camera.expose(scene.image)
    normal = camera.capture(exposed)
    if defect is None:
        mask = np.zeros((spec.height, spec.width), bool)
        return RenderedSample(_squeeze(normal), mask, _attributes(spec, Defect(scene.image, scene.parts), mask, "good"))
    for _ in range(_ATTEMPTS):
        result = DEFECTS[defect](rng, scene)
        changed = camera.expose(result.image)
        visible = (np.abs(changed - exposed) >= _VISIBLE_CHANGE).any(axis=2, keepdims=True)
        image = camera.capture(np.where(visible, changed, exposed))
        mask = (image != normal).any(axis=2)
        if AREA_RANGE[0] <= mask.mean() <= AREA_RANGE[1]:
            return RenderedSample(_squeeze(image), mask, _attributes(spec, result, mask, defect))
    raise RuntimeError(f"no {defect} of size {AREA_RANGE} on {category} after {_ATTEMPTS} attempts")


def location_words(mask: np.ndarray) -> str:
    """Where the mask's centre of mass lies on a 3×3 grid: "top left", "top", ..., "center", ..."""
    ys, xs = np.nonzero(mask)
    row = min(int(3 * ys.mean() / mask.shape[0]), 2)
    column = min(int(3 * xs.mean() / mask.shape[1]), 2)
    words = [("top", "", "bottom")[row], ("left", "", "right")[column]]
    return " ".join(word for word in words if word) or "center"


def bounding_box(mask: np.ndarray) -> list[int]:
    """[x_min, y_min, x_max, y_max] of the mask's pixels, inclusive."""
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def _attributes(spec: CategorySpec, result: Defect, mask: np.ndarray, defect: str) -> dict[str, Any]:
    anomalous = bool(mask.any())
    return {
        "category": spec.name,
        "noun": spec.noun,
        "kind": spec.kind,
        "colour": spec.colour,
        "material": spec.material,
        "grayscale": spec.grayscale,
        "height": spec.height,
        "width": spec.width,
        "parts": list(result.parts),
        "defect": defect,
        "defect_part": result.part,
        "defect_colour": result.colour,
        "defect_location": location_words(mask) if anomalous else None,
        "defect_bbox": bounding_box(mask) if anomalous else None,
        "defect_area": round(float(mask.mean()), 6),
    }


def _squeeze(image: np.ndarray) -> np.ndarray:
    return image[..., 0] if image.shape[2] == 1 else image
