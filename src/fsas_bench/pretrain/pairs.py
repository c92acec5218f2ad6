"""Pretraining images rendered in memory from generator seeds that no embedded benchmark image uses.

Each item of a category is rendered twice from the same generator key — once normal, once with a defect —
so the two images show the same item and differ only by the defect ("twins", stored next to each other).
"""

from __future__ import annotations

import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import numpy as np
from PIL import Image

from fsas_bench.data.synthetic import CATEGORIES, EXTRA_CATEGORIES, SYNTHETIC_DATASETS, render_sample

PRETRAIN_CATEGORIES: tuple[str, ...] = (
    *dict.fromkeys(c for spec in SYNTHETIC_DATASETS.values() for c in spec.categories),
    *EXTRA_CATEGORIES,
)
"""The benchmark's vocabulary (both embedded datasets) plus the categories no dataset uses."""

PRETRAIN_STREAM = 0x46534153_50524554  # leads every pretraining key; dataset keys lead with their dataset seed


@dataclass(frozen=True)
class PairSet:
    """Rendered pretraining images and their attributes.

    Attributes:
        images: ``N × S × S × 3`` uint8, plain-resized to the backbone's input size (grayscale → 3 channels);
            image ``2i`` is item i normal, ``2i + 1`` the same item with a defect.
        attributes: the generator's attributes of each image (caption material).
    """

    images: np.ndarray
    attributes: list[dict[str, Any]]


def pair_key(seed: int, category: str, index: int) -> list[int]:
    """Generator key of pretraining item ``index`` of ``category`` (cf. `image_rng`, which leads with a
    dataset seed that never equals `PRETRAIN_STREAM`)."""
    return [PRETRAIN_STREAM, seed, zlib.crc32(category.encode()), index]


def item_plan(items_per_category: int) -> list[tuple[str, int]]:
    """``(category, index)`` of every item, interleaving categories."""
    return [(category, index) for index in range(items_per_category) for category in PRETRAIN_CATEGORIES]


def render_twin(seed: int, category: str, index: int, size: int) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """One item normal and defective: two ``size × size × 3`` uint8 images and their attributes.

    The defect type cycles through the category's defects with ``index``.
    """
    defects = CATEGORIES[category].defects
    key = pair_key(seed, category, index)
    normal = render_sample(category, np.random.default_rng(key), None)
    damaged = render_sample(category, np.random.default_rng(key), defects[index % len(defects)])
    return _resized(normal.image, size), _resized(damaged.image, size), [normal.attributes, damaged.attributes]


def render_pairs(seed: int, items_per_category: int, size: int = 224, workers: int = 1) -> PairSet:
    """Render ``items_per_category`` twins of every `PRETRAIN_CATEGORIES` entry (same result for any
    ``workers``; more than one renders in parallel processes)."""
    plan = item_plan(items_per_category)
    args = ([seed] * len(plan), [c for c, _ in plan], [i for _, i in plan], [size] * len(plan))
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
            twins = list(pool.map(render_twin, *args, chunksize=16))
    else:
        twins = list(map(render_twin, *args))
    images = np.stack([image for normal, damaged, _ in twins for image in (normal, damaged)])
    return PairSet(images, [attributes for *_, both in twins for attributes in both])


def _resized(image: np.ndarray, size: int) -> np.ndarray:
    rgb = Image.fromarray(image).convert("RGB")
    return np.asarray(rgb.resize((size, size), Image.Resampling.BICUBIC))
