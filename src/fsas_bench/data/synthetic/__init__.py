"""The embedded synthetic benchmark: seeded numpy renderings of textures and objects with exact defect masks.

`ensure_synthetic` writes a dataset of `SYNTHETIC_DATASETS` into a cache in MVTec AD layout; `render_sample`
renders single images in memory (e.g. for pretraining from other seeds); `procedural_texture` is a texture
source for pasted synthetic anomalies.
"""

from fsas_bench.data.synthetic.categories import CATEGORIES, EXTRA_CATEGORIES, CategorySpec
from fsas_bench.data.synthetic.generator import (
    GENERATOR_VERSION,
    SYNTHETIC_DATASETS,
    DatasetSpec,
    ensure_synthetic,
    image_rng,
    tree_digest,
    write_dataset,
)
from fsas_bench.data.synthetic.render import AREA_RANGE, RenderedSample, render_sample
from fsas_bench.data.synthetic.textures import procedural_texture

__all__ = [
    "AREA_RANGE",
    "CATEGORIES",
    "EXTRA_CATEGORIES",
    "GENERATOR_VERSION",
    "SYNTHETIC_DATASETS",
    "CategorySpec",
    "DatasetSpec",
    "RenderedSample",
    "ensure_synthetic",
    "image_rng",
    "procedural_texture",
    "render_sample",
    "tree_digest",
    "write_dataset",
]
