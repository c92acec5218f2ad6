"""The official per-dataset inference choices (``official_overrides=on``, spec dictas.md §6.1, §9.3–§9.5).

Layers are given as positions in the four default taps (the ends of the depth quarters: blocks 6, 12, 18, 24
of ViT-L/14), so the table applies to any depth.
"""

from __future__ import annotations

from dataclasses import dataclass

from fsas_bench.errors import UserError

OFFICIAL_DATASETS = {
    name.lower(): name for name in ("mvtec", "visa", "BTAD", "MPDD", "mvtec3D", "BrasTS", "RESC", "other")
}
"""The released scripts' ``--dataset`` names; ``other`` = any other name (their generic branches)."""
ALPHA_ZERO_CATEGORIES = ("bracket_brown", "metal1", "metal2", "wood")
"""Categories whose transductive α is 0 outside MVTec AD and VisA: the released rule is by category name, with
BTAD's 01/02/03 renamed metal1/wood/metal2 in the released metadata."""
OFFICIAL_MODES = ("segmentation", "classification")
SCREW_ROTATIONS = tuple(range(-180, 181, 45))
"""Angles (degrees) of the rotated copies added to each MVTec ``screw`` reference when k ≤ 4."""


@dataclass(frozen=True)
class InferenceSettings:
    """What one category's inference uses.

    Attributes:
        blocks: 0-based backbone blocks whose tokens are looked up.
        scales: neighbourhood sides.
        sigma: Gaussian σ of the output map (0 = none).
        alpha: weight of the text probability in the official transductive image score.
        rotate_references: add the :data:`SCREW_ROTATIONS` copies of every reference.
    """

    blocks: tuple[int, ...]
    scales: tuple[int, ...]
    sigma: float
    alpha: float = 0.5
    rotate_references: bool = False


def canonical_dataset(name: str) -> str:
    """The official spelling of a dataset name (case-insensitive), or UserError."""
    try:
        return OFFICIAL_DATASETS[name.lower()]
    except KeyError:
        raise UserError(
            f"dictas official_dataset '{name}' is unknown: use one of {', '.join(OFFICIAL_DATASETS.values())}"
        ) from None


def official_dataset_for(dataset: str) -> str:
    """The released scripts' name of an fsas-bench dataset (``btad`` → ``BTAD``), ``other`` when they have none."""
    return OFFICIAL_DATASETS.get(dataset.lower(), "other")


def official_alpha(dataset: str, category: str) -> float:
    """α of the transductive fusion: 0.2 on MVTec AD and VisA; elsewhere 0 on BTAD and for the
    :data:`ALPHA_ZERO_CATEGORIES` (by name, on any dataset, as released), else 0.5."""
    if dataset in ("mvtec", "visa"):
        return 0.2
    if dataset == "BTAD" or category in ALPHA_ZERO_CATEGORIES:
        return 0.0
    return 0.5


def official_settings(taps: tuple[int, ...], dataset: str, category: str, k: int, mode: str) -> InferenceSettings:
    """The official layers, scales, σ, α and screw rotations for one category.

    Args:
        taps: the four default blocks.
        dataset: official dataset name (see :func:`canonical_dataset`).
        category: category name.
        k: number of references.
        mode: ``segmentation`` (the official default) or ``classification``.
    """
    two_layers = dataset in ("mvtec", "BTAD")
    if mode == "segmentation":
        two_layers = two_layers and not (category == "screw" and k > 4)
        scales, sigma = ((1,) if dataset in ("mvtec3D", "MPDD", "BTAD") else (1, 3)), 6.0
    else:
        scales = (1, 3) if dataset in ("mvtec", "visa") else (1,)
        sigma = 2.0 if dataset in ("mvtec", "mvtec3D") else 0.0
    return InferenceSettings(
        blocks=taps[:2] if two_layers else taps,
        scales=scales,
        sigma=sigma,
        alpha=official_alpha(dataset, category),
        rotate_references=dataset == "mvtec" and category == "screw" and k <= 4,
    )
