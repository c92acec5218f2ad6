"""MFSC caption files (spec §12): the per-category record schema, its validator, the vocabularies derived
from a file, and the template generator for datasets without a caption file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from fsas_bench.errors import UserError
from fsas_bench.methods.text import class_name

SHIPPED_FILES = ("mvtec", "visa", "synthetic")
"""Caption files shipped as package data (``captions/<name>.json``)."""
PROVENANCE_PREFIXES = ("hand", "template", "mllm:")
_LIST_FIELDS = ("color", "texture", "shape", "direction", "defect_states")
_TEXT_FIELDS = ("category", "foreground", "background", "relation", "caption", "provenance")
_ENTITY_FIELDS = ("name", "number", "location", "caption")


@dataclass(frozen=True)
class Entity:
    """A Level-2/3 component: noun, count, location phrase and its one-sentence caption."""

    name: str
    number: str
    location: str
    caption: str


@dataclass(frozen=True)
class CaptionRecord:
    """One category's MFSC record (field meanings: spec §12.1)."""

    category: str
    foreground: str
    background: str
    entities: tuple[Entity, ...]
    relation: str
    color: tuple[str, ...]
    texture: tuple[str, ...]
    shape: tuple[str, ...]
    direction: tuple[str, ...]
    caption: str
    defect_states: tuple[str, ...]
    provenance: str
    source_image: str


@dataclass(frozen=True)
class Vocabularies:
    """Global negative vocabularies: the union of every record's values, in first-seen order."""

    colors: tuple[str, ...]
    textures: tuple[str, ...]
    shapes: tuple[str, ...]
    locations: tuple[str, ...]
    numbers: tuple[str, ...]


class CaptionSchemaError(UserError):
    """A caption record that breaks the MFSC schema; the message names the file, category and field."""


def validate_record(raw: Any, where: str) -> CaptionRecord:
    """Check one raw JSON record against the schema and return it typed.

    Raises:
        CaptionSchemaError: missing or mistyped fields, empty lists, or a required verbatim occurrence absent
            (foreground in caption; every entity name in relation; entity name and location in its caption;
            entity location in the global caption).
    """

    def fail(message: str) -> CaptionSchemaError:
        category = f" ({raw['category']})" if isinstance(raw, dict) and isinstance(raw.get("category"), str) else ""
        return CaptionSchemaError(f"caption record {where}{category}: {message}")

    if not isinstance(raw, dict):
        raise fail(f"expected an object, got {type(raw).__name__}")
    missing = [f for f in (*_TEXT_FIELDS, *_LIST_FIELDS, "entities", "source_image") if f not in raw]
    if missing:
        raise fail(f"missing field(s) {', '.join(missing)}")
    if not isinstance(raw["source_image"], str):
        raise fail("'source_image' must be a string (empty when no training image was described)")
    for name in _TEXT_FIELDS:
        if not isinstance(raw[name], str) or not raw[name].strip():
            raise fail(f"'{name}' must be a non-empty string")
    for name in _LIST_FIELDS:
        values = raw[name]
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
            raise fail(f"'{name}' must be a non-empty list of non-empty strings")
    if not any(raw["provenance"].startswith(p) for p in PROVENANCE_PREFIXES):
        raise fail(f"'provenance' is '{raw['provenance']}': use hand, template or mllm:<model>@<date>")
    if raw["foreground"] not in raw["caption"]:
        raise fail(f"the foreground '{raw['foreground']}' does not occur verbatim in 'caption'")
    bad_states = [s for s in raw["defect_states"] if not s.startswith("with ")]
    if bad_states:
        raise fail(f"defect_states must read 'with <defect>': {bad_states[0]!r}")
    entities = raw["entities"]
    if not isinstance(entities, list) or not entities:
        raise fail("'entities' must be a non-empty list")
    parsed = []
    for i, entity in enumerate(entities):
        if not isinstance(entity, dict) or any(not isinstance(entity.get(f), str) or not entity[f].strip()
                                               for f in _ENTITY_FIELDS):  # fmt: skip
            raise fail(f"entity {i} needs non-empty string fields {', '.join(_ENTITY_FIELDS)}")
        e = Entity(**{f: entity[f] for f in _ENTITY_FIELDS})
        if e.name not in raw["relation"]:
            raise fail(f"entity '{e.name}' does not occur verbatim in 'relation'")
        if e.name.lower() not in e.caption.lower() or e.location.lower() not in e.caption.lower():
            raise fail(f"the caption of entity '{e.name}' must contain its name and location '{e.location}'")
        if e.location not in raw["caption"]:
            raise fail(f"entity '{e.name}' location '{e.location}' does not occur verbatim in 'caption'")
        parsed.append(e)
    return CaptionRecord(
        category=raw["category"], foreground=raw["foreground"], background=raw["background"],
        entities=tuple(parsed), relation=raw["relation"], color=tuple(raw["color"]), texture=tuple(raw["texture"]),
        shape=tuple(raw["shape"]), direction=tuple(raw["direction"]), caption=raw["caption"],
        defect_states=tuple(raw["defect_states"]), provenance=raw["provenance"], source_image=raw["source_image"],
    )  # fmt: skip


def load_caption_file(source: str) -> dict[str, CaptionRecord]:
    """Category → record of a shipped file name (``mvtec``, ``visa``, ``synthetic``) or a JSON path.

    Raises:
        UserError: unreadable file, or a record that fails :func:`validate_record`.
    """
    if source in SHIPPED_FILES:
        text = resources.files(__package__).joinpath(f"captions/{source}.json").read_text(encoding="utf-8")
        where = f"captions/{source}.json"
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise UserError(f"caption file '{source}' does not exist: pass {', '.join(SHIPPED_FILES)} or a JSON path")
        text, where = path.read_text(encoding="utf-8"), str(path)
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise CaptionSchemaError(f"caption file {where} is not valid JSON ({err})") from None
    if not isinstance(raw, list):
        raise CaptionSchemaError(f"caption file {where} must hold a list of category records")
    records = [validate_record(r, f"{i} of {where}") for i, r in enumerate(raw)]
    by_category = {r.category: r for r in records}
    if len(by_category) != len(records):
        raise CaptionSchemaError(f"caption file {where} lists a category twice")
    return by_category


def vocabularies(records: dict[str, CaptionRecord]) -> Vocabularies:
    """The global vocabularies of a caption file (derived at load time, never stored)."""

    def union(values: list[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(values))

    rs = list(records.values())
    return Vocabularies(
        colors=union([c for r in rs for c in r.color]),
        textures=union([t for r in rs for t in r.texture]),
        shapes=union([s for r in rs for s in r.shape]),
        locations=union([e.location for r in rs for e in r.entities]),
        numbers=union([e.number for r in rs for e in r.entities]),
    )


PALETTE = {
    "black": (20, 20, 20), "white": (235, 235, 235), "gray": (128, 128, 128), "red": (200, 40, 40),
    "orange": (230, 130, 30), "yellow": (230, 210, 50), "green": (50, 150, 60), "blue": (40, 80, 200),
    "purple": (120, 60, 160), "brown": (120, 80, 40), "beige": (215, 195, 160), "silver": (190, 190, 200),
}  # fmt: skip
"""Named colours the template generator snaps measured colours to."""


def nearest_colour(rgb: np.ndarray) -> str:
    """The palette name nearest (Euclidean RGB) to a colour ``3``."""
    names = list(PALETTE)
    distances = [float(np.sum((np.asarray(PALETTE[n], float) - rgb) ** 2)) for n in names]
    return names[int(np.argmin(distances))]


def template_record(category: str, shots: list[np.ndarray]) -> CaptionRecord:
    """A single-entity MFSC record filled from templates (spec §12.2, way 2) for a category without captions.

    Level 1: the class noun (underscores → spaces) and the median border colour of the shots; Level 2: one
    entity, the noun, at the "center" ("1") of an object or "throughout" ("multiple") a surface — a surface
    when the central half of the shots has the border's colour; Level 3: the central colour, generic
    texture/shape words, template sentences.

    Args:
        category: the dataset category id.
        shots: the k reference images, RGB uint8 ``H × W × 3``.
    """
    noun = class_name(category)
    border = np.concatenate([np.concatenate([s[0], s[-1], s[:, 0], s[:, -1]]) for s in shots]).astype(float)
    centre = np.concatenate([s[s.shape[0] // 4 : s.shape[0] * 3 // 4, s.shape[1] // 4 : s.shape[1] * 3 // 4]
                             .reshape(-1, 3) for s in shots]).astype(float)  # fmt: skip
    background, colour = nearest_colour(np.median(border, 0)), nearest_colour(np.median(centre, 0))
    surface = background == colour
    number, location = ("multiple", "throughout") if surface else ("1", "center")
    where = "throughout the image" if surface else "at the center of the image"
    return CaptionRecord(
        category=category, foreground=noun, background=background,
        entities=(Entity(noun, number, location, f"The {noun} is seen {where}."),),
        relation=f"The {noun} lies on a {background} background.", color=(colour,), texture=("uniform",),
        shape=("flat",) if surface else ("regular",), direction=("upright",),
        caption=f"A {colour} {noun} is seen {where}, against a {background} background.",
        defect_states=("with damage", "with a defect"), provenance="template", source_image="",
    )  # fmt: skip
