"""Patch-kNN settings and its block taps (PromptAD's memory taps, scaled by depth)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fsas_bench.methods.base import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE_INT, Limit, MethodConfig

PROMPTAD_TAPS = (3, 8)
"""The 1-indexed blocks of a 12-block ViT whose tokens PromptAD's (and FineGrainedAD's) memory bank holds."""


@dataclass(frozen=True)
class PatchKNNConfig(MethodConfig):
    """Patch-kNN settings (recorded in ``method_cfg_hash``).

    Attributes:
        blocks: 0-based block taps; empty = :data:`PROMPTAD_TAPS` scaled by depth ((2, 7) for a 12-block ViT).
        output_size: side of the output map in pixels.
        sigma: Gaussian σ at the output size.
        image_score: ``map_max`` or ``grid_max``.
    """

    blocks: tuple[int, ...] = ()
    output_size: int = 400
    sigma: float = 4.0
    image_score: str = "map_max"
    limits: ClassVar[dict[str, Limit]] = {
        "blocks": NON_NEGATIVE_INT.each(), "output_size": POSITIVE_INT, "sigma": NON_NEGATIVE,
    }  # fmt: skip
    choices: ClassVar[dict[str, tuple[str, ...]]] = {"image_score": ("map_max", "grid_max")}
    paper_taps: ClassVar[tuple[int, ...]] = PROMPTAD_TAPS
