"""MLLP prompt families rendered from an MFSC record (spec §5) or from a class name (PromptAD, spec §11).

A family holds sentences; each becomes ``X×n_ctx [X×n_ctx_ab] <sentence>.`` whose placeholder tokens the
prompt learner replaces by its context vectors. Rendering is pure string work; the only randomness (entity
defect and location substitutions) comes from a ``random.Random`` seeded by the caller.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from fsas_bench.methods.finegrainedad.captions import CaptionRecord, Vocabularies

MFSC_LEVELS = ("none", "image", "image+entity", "full")
PLACEHOLDER = "X"
ATTRIBUTES = ("relation", "color", "texture", "shape")
PROMPTAD_ANOMALY_STATES = (
    "damaged {}", "flawed {}", "abnormal {}", "imperfect {}", "blemished {}",
    "{} with flaw", "{} with defect", "{} with damage",
)  # fmt: skip
"""The generic anomalous states of PromptAD's handle prompts (eight, as released), before the category's own."""


@dataclass(frozen=True)
class Family:
    """The sentences of one prompt family (image caption, one entity, or the background).

    Attributes:
        name: ``image``, ``entity:<noun>`` or ``background``.
        normal: sentences after the normal context (one per n_pro row).
        handle: abnormal "handle" (replacement) sentences after the normal context.
        learned: abnormal "learned" sentences after the normal and abnormal contexts (n_pro_ab · n_pro).
        attributes: image family only: attribute name → (normal sentence, handle candidates); each is summed
            position-wise (gated) onto the matching prompts; the learned prompts reuse the normal sentence.
    """

    name: str
    normal: tuple[str, ...]
    handle: tuple[str, ...]
    learned: tuple[str, ...]
    attributes: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)


def promptad_family(class_name: str, defect_states: tuple[str, ...], n_pro: int, n_pro_ab: int) -> Family:
    """PromptAD's sets: "ctx <name>.", "ctx <state>." for the generic and the category's defect states, and
    "ctx actx <name>." (spec §11)."""
    states = [s.format(class_name) for s in PROMPTAD_ANOMALY_STATES] + [f"{class_name} {d}" for d in defect_states]
    return Family(
        name="image",
        normal=(class_name,) * n_pro,
        handle=tuple(s for s in states for _ in range(n_pro)),
        learned=(class_name,) * (n_pro_ab * n_pro),
    )


def image_family(record: CaptionRecord, vocab: Vocabularies, n_pro: int, n_pro_ab: int) -> Family:
    """Family 1–3 of spec §5.2: caption; foreground replaced by "<foreground> <defect>"; gated attributes."""
    fg = record.foreground
    relation_handle = []
    for defect in record.defect_states:
        sentence = record.relation
        for entity in record.entities:
            sentence = sentence.replace(entity.name, f"{entity.name} {defect}")
        relation_handle.append(sentence)
    negatives = {
        "color": [c for c in vocab.colors if c not in record.color],
        "texture": [t for t in vocab.textures if t not in record.texture],
        "shape": [s for s in vocab.shapes if s not in record.shape],
    }
    attributes = {
        "relation": (record.relation, tuple(relation_handle)),
        **{name: (".".join(getattr(record, name)), tuple(negatives[name])) for name in ("color", "texture", "shape")},
    }
    return Family(
        name="image",
        normal=(record.caption,) * n_pro,
        handle=tuple(record.caption.replace(fg, f"{fg} {d}") for d in record.defect_states for _ in range(n_pro)),
        learned=(record.caption,) * (n_pro_ab * n_pro),
        attributes={k: (v[0], tuple(s for s in v[1] for _ in range(n_pro))) for k, v in attributes.items()},
    )


def entity_families(
    record: CaptionRecord, vocab: Vocabularies, rng: random.Random, n_pro: int, n_pro_ab: int
) -> list[Family]:
    """Family 4 per entity: its caption; the lower-cased caption with the noun (or its plural) given a random
    defect and the location replaced by a random *different* vocabulary location (both draws from ``rng``)."""
    families = []
    for entity in record.entities:
        text = entity.caption.lower()
        defect = rng.choice(record.defect_states)
        name = entity.name.lower()
        plural = name + "s"
        if not name.endswith("s") and plural in text:
            text = text.replace(plural, f"{plural} {defect}")
        else:
            text = text.replace(name, f"{name} {defect}")
        others = [loc for loc in vocab.locations if loc != entity.location]
        if others:  # a vocabulary of one location (a lone template record) leaves the location as it is
            location = rng.choice(others)
            targets = ("center", "centrally") if entity.location == "center" else (entity.location.lower(),)
            for target in targets:
                text = text.replace(target, location)
        families.append(Family(
            name=f"entity:{entity.name}",
            normal=(entity.caption,) * n_pro,
            handle=(text,) * n_pro,
            learned=(entity.caption,) * (n_pro_ab * n_pro),
        ))  # fmt: skip
    return families


def background_family(record: CaptionRecord, n_pro: int, n_pro_ab: int) -> Family:
    """Family 5: "<background> background", with each defect phrase appended for the handle prompts."""
    bg = f"{record.background} background"
    return Family(
        name="background",
        normal=(bg,) * n_pro,
        handle=tuple(f"{bg} {d}" for d in record.defect_states for _ in range(n_pro)),
        learned=(bg,) * (n_pro_ab * n_pro),
    )


def build_families(
    record: CaptionRecord, vocab: Vocabularies, levels: str, seed: int, n_pro: int = 1, n_pro_ab: int = 4
) -> list[Family]:
    """Every family ``levels`` uses: ``[image]`` for ``none``/``image``; ``[image, entities…, background]``
    otherwise. ``none`` is PromptAD with the record's foreground as the class name."""
    if levels not in MFSC_LEVELS:
        raise ValueError(f"mfsc_levels '{levels}' is unknown: use {', '.join(MFSC_LEVELS)}")
    if levels == "none":
        return [promptad_family(record.foreground, record.defect_states, n_pro, n_pro_ab)]
    image = image_family(record, vocab, n_pro, n_pro_ab)
    if levels == "image":
        return [image]
    rng = random.Random(seed)
    return [image, *entity_families(record, vocab, rng, n_pro, n_pro_ab), background_family(record, n_pro, n_pro_ab)]


def render(sentence: str, n_ctx: int, n_ctx_ab: int = 0) -> str:
    """The tokenised form of a prompt: placeholders for the context vectors, the sentence, one full stop (a
    sentence's own final full stop is not doubled)."""
    return " ".join([PLACEHOLDER] * (n_ctx + n_ctx_ab) + [sentence.removesuffix(".")]) + "."


def rendered_strings(families: list[Family], n_ctx: int, n_ctx_ab: int) -> dict[str, dict[str, list[str]]]:
    """Every fully rendered prompt string per family and role (what the run directory logs)."""
    out = {}
    for f in families:
        roles = {
            "normal": [render(s, n_ctx) for s in f.normal],
            "handle": [render(s, n_ctx) for s in f.handle],
            "learned": [render(s, n_ctx, n_ctx_ab) for s in f.learned],
        }
        for name, (normal, handle) in f.attributes.items():
            roles[f"{name}:normal"] = [render(normal, n_ctx)]
            roles[f"{name}:handle"] = [render(s, n_ctx) for s in handle]
            roles[f"{name}:learned"] = [render(normal, n_ctx, n_ctx_ab)]
        out[f.name] = roles
    return out
