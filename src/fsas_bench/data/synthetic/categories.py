"""The category registry: what each synthetic category is, how big, and which defects it can have."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

from fsas_bench.data.synthetic import objects, surfaces
from fsas_bench.data.synthetic.circuit_board import circuit_board
from fsas_bench.data.synthetic.scene import Scene


@dataclass(frozen=True)
class CategorySpec:
    """One category: ``draw(rng, height, width)`` renders a normal scene; the rest feeds captions."""

    name: str
    noun: str  # e.g. "hex nut"
    kind: Literal["texture", "object"]
    height: int
    width: int
    grayscale: bool
    colour: str
    material: str
    defects: tuple[str, ...]
    draw: Callable[[np.random.Generator, int, int], Scene]


_SPECS = (
    CategorySpec("fabric", "fabric", "texture", 224, 224, False, "blue", "cotton twill",
                 ("scratch", "spot", "colour_shift"), surfaces.fabric),
    CategorySpec("tile", "tile", "texture", 256, 256, False, "beige", "glazed ceramic",
                 ("crack", "spot", "colour_shift"), surfaces.tile),
    CategorySpec("hex_nut", "hex nut", "object", 224, 224, True, "gray", "steel",
                 ("scratch", "crack", "missing_part"), objects.hex_nut),
    CategorySpec("capsule", "capsule", "object", 192, 256, False, "red and white", "gelatin",
                 ("crack", "spot", "colour_shift"), objects.capsule),
    CategorySpec("circuit_board", "circuit board", "object", 256, 256, False, "green", "fibreglass",
                 ("scratch", "missing_part", "displaced_part"), circuit_board),
    CategorySpec("wood", "wood", "texture", 256, 256, False, "brown", "oak",
                 ("scratch", "crack", "spot"), surfaces.wood),
    CategorySpec("wire_mesh", "wire mesh", "texture", 224, 224, True, "gray", "steel wire",
                 ("scratch", "crack", "spot"), surfaces.wire_mesh),
    CategorySpec("bracket", "bracket", "object", 256, 192, False, "silver", "galvanised steel",
                 ("scratch", "missing_part", "displaced_part"), objects.bracket),
    CategorySpec("button", "button", "object", 224, 224, False, "red", "plastic",
                 ("crack", "colour_shift", "missing_part"), objects.button),
    CategorySpec("marble", "marble", "texture", 224, 224, False, "white", "marble",
                 ("crack", "spot", "colour_shift"), surfaces.marble),
    CategorySpec("carpet", "carpet", "texture", 224, 224, False, "green", "wool",
                 ("spot", "colour_shift", "scratch"), surfaces.carpet),
    CategorySpec("washer", "washer", "object", 224, 224, False, "silver", "steel",
                 ("scratch", "spot", "crack"), objects.washer),
)
CATEGORIES: dict[str, CategorySpec] = {spec.name: spec for spec in _SPECS}
EXTRA_CATEGORIES: tuple[str, ...] = ("marble", "carpet", "washer")  # renderable, in no dataset: pretraining variety
