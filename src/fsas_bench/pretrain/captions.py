"""Captions of synthetic images: what the item is, its colour/material and parts, and whether and where it is
defective, in varied phrasings (including the state words zero-shot prompt ensembles use)."""

from __future__ import annotations

from typing import Any

import numpy as np

FRAMES = (
    "a photo of {}", "a close-up photo of {}", "a picture of {}", "an image of {}", "a cropped photo of {}",
    "a bright photo of {}", "a dark photo of {}", "an inspection photo of {}", "a product shot of {}",
    "a macro photograph of {}", "a top-down view of {}", "a factory photo of {}", "{}", "this is {}",
    "a photo of {} for quality control", "a photo of {} on the inspection line",
)  # fmt: skip
NORMAL_WORDS = ("flawless", "perfect", "unblemished", "intact", "pristine", "normal", "good", "defect-free")
NORMAL_TAILS = ("without flaw", "without defect", "without damage", "with no defects", "in perfect condition")
DAMAGED_WORDS = ("damaged", "defective", "flawed", "faulty")
DAMAGED_TAILS = ("with flaw", "with defect", "with damage", "with a defect", "with a flaw")
DEFECT_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # defect type -> (adjectives, noun phrases); {colour} is the stain colour or tint, {part} the affected part
    "scratch": (("scratched",), ("a scratch", "a scratch mark", "a scraped line")),
    "crack": (("cracked",), ("a crack", "a dark fissure", "a fracture")),
    "spot": (("stained", "spotted"), ("a {colour} stain", "a {colour} spot", "a {colour} blotch")),
    "colour_shift": (("discoloured",), ("a {colour} discoloured patch", "a {colour} discolouration")),
    "missing_part": (("incomplete",), ("a missing {part}", "no {part}")),
    "displaced_part": (("misassembled",), ("a displaced {part}", "a misplaced {part}", "a shifted {part}")),
}
LOCATION_PHRASES = ("at the {}", "near the {}", "in the {} area", "on the {}")
MIRRORED = {"left": "right", "right": "left"}


def caption(attributes: dict[str, Any], rng: np.random.Generator, mirrored: bool = False) -> str:
    """One caption of an image from its generator attributes (see `render_sample`).

    Args:
        attributes: the rendered sample's attributes (category noun, colour, material, parts, defect, ...).
        rng: draws the phrasing.
        mirrored: the image was flipped left–right (locations are mirrored too).
    """
    subject = _item(attributes, rng)
    if attributes["defect"] == "good":
        subject = _normal(subject, rng)
    else:
        subject = _defective(subject, attributes, rng, mirrored)
    text = _choice(rng, FRAMES).format(_article(subject, rng))
    if rng.random() < 0.25:
        text += ", showing the " + _listing(attributes["parts"], rng)
    return text + "." if rng.random() < 0.5 else text


def _item(attributes: dict[str, Any], rng: np.random.Generator) -> str:
    words = [attributes["colour"]] if rng.random() < 0.6 else []
    noun_words = set(attributes["noun"].split())
    if rng.random() < 0.4 and not noun_words & set(attributes["material"].split()):
        words.append(attributes["material"])
    return " ".join([*words, attributes["noun"]])


def _normal(subject: str, rng: np.random.Generator) -> str:
    draw = rng.random()
    if draw < 0.55:
        return f"{_choice(rng, NORMAL_WORDS)} {subject}"
    if draw < 0.85:
        return f"{subject} {_choice(rng, NORMAL_TAILS)}"
    return subject


def _defective(subject: str, attributes: dict[str, Any], rng: np.random.Generator, mirrored: bool) -> str:
    adjectives, nouns = DEFECT_WORDS[attributes["defect"]]
    detail = _choice(rng, nouns).format(colour=attributes["defect_colour"], part=attributes["defect_part"])
    where = _location(attributes["defect_location"], rng, mirrored)
    draw = rng.random()
    if draw < 0.3:
        return f"{_choice(rng, adjectives)} {subject} with a defect {where}"
    if draw < 0.55:
        return f"{subject} with {detail} {where}"
    if draw < 0.7:
        return f"{_choice(rng, DAMAGED_WORDS)} {subject} with {detail}"
    if draw < 0.85:
        return f"{_choice(rng, DAMAGED_WORDS)} {subject}"
    return f"{subject} {_choice(rng, DAMAGED_TAILS)}"


def _location(words: str, rng: np.random.Generator, mirrored: bool) -> str:
    if mirrored:
        words = " ".join(MIRRORED.get(word, word) for word in words.split())
    if words == "center":
        return "in the center"
    return _choice(rng, LOCATION_PHRASES).format(words)


def _listing(parts: list[str], rng: np.random.Generator) -> str:
    """Up to three of the visible parts, in their order (captions are cut at 32 tokens)."""
    chosen = [parts[i] for i in sorted(rng.choice(len(parts), min(len(parts), 3), replace=False))]
    return chosen[0] if len(chosen) == 1 else ", ".join(chosen[:-1]) + " and " + chosen[-1]


def _article(phrase: str, rng: np.random.Generator) -> str:
    if rng.random() < 0.25:
        return "the " + phrase
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _choice(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]
